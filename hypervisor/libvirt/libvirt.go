// Package libvirt implements hypervisor.Driver on top of
// github.com/digitalocean/go-libvirt, a pure Go (no cgo) client of the
// libvirt RPC protocol, talking to libvirtd over its unix socket.
package libvirt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/hassproject/hass/hypervisor"
)

// DefaultURI is the libvirt URI used when Config.URI is empty.
const DefaultURI = "qemu:///system"

// DefaultSystemSocket is the socket of the system-mode libvirtd.
const DefaultSystemSocket = "/var/run/libvirt/libvirt-sock"

// Config configures a Driver.
type Config struct {
	// URI is the libvirt connection URI sent to the daemon; default
	// qemu:///system. Only local (unix socket) URIs are supported.
	URI string
	// Socket overrides the unix socket path. When empty it is derived from
	// URI: a "socket" query parameter wins, ":///system" maps to
	// /var/run/libvirt/libvirt-sock and ":///session" to
	// $XDG_RUNTIME_DIR/libvirt/libvirt-sock.
	Socket string
	// DialTimeout bounds the socket dial; default 5s.
	DialTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Driver is a hypervisor.Driver for libvirt. Create it with New.
type Driver struct {
	uri    string
	socket string
	dialTO time.Duration
	log    *slog.Logger

	mu     sync.Mutex
	conn   *golibvirt.Libvirt // nil when not connected
	events chan hypervisor.Event
	cancel context.CancelFunc // stops the event forwarders of conn
	closed bool
}

var _ hypervisor.Driver = (*Driver)(nil)

// New returns an unconnected Driver; call Connect (or hypervisor.Watch).
func New(cfg Config) (*Driver, error) {
	uri := cfg.URI
	if uri == "" {
		uri = DefaultURI
	}
	sock := cfg.Socket
	if sock == "" {
		var err error
		sock, err = SocketForURI(uri)
		if err != nil {
			return nil, err
		}
	}
	to := cfg.DialTimeout
	if to <= 0 {
		to = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	closedCh := make(chan hypervisor.Event)
	close(closedCh)
	return &Driver{
		uri:    daemonURI(uri),
		socket: sock,
		dialTO: to,
		log:    log.With("component", "hypervisor/libvirt", "uri", uri),
		events: closedCh,
	}, nil
}

// SocketForURI maps a local libvirt URI to the daemon's unix socket path.
func SocketForURI(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("invalid libvirt URI %q: %w", uri, err)
	}
	if s := u.Query().Get("socket"); s != "" {
		return s, nil
	}
	if u.Host != "" || (strings.Contains(u.Scheme, "+") && !strings.HasSuffix(u.Scheme, "+unix")) {
		return "", fmt.Errorf("libvirt URI %q: only local unix-socket URIs are supported", uri)
	}
	switch u.Path {
	case "/system":
		return DefaultSystemSocket, nil
	case "/session":
		dir := os.Getenv("XDG_RUNTIME_DIR")
		if dir == "" {
			return "", fmt.Errorf("libvirt URI %q: XDG_RUNTIME_DIR not set, cannot locate session socket", uri)
		}
		return filepath.Join(dir, "libvirt", "libvirt-sock"), nil
	}
	return "", fmt.Errorf("libvirt URI %q: cannot derive socket path; set Config.Socket", uri)
}

// daemonURI strips what only the client side uses (the "+unix" transport
// and query parameters such as socket=) before the URI is sent to libvirtd,
// as libvirt's own remote driver does.
func daemonURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return uri
	}
	if i := strings.IndexByte(u.Scheme, '+'); i >= 0 {
		u.Scheme = u.Scheme[:i]
	}
	u.RawQuery = ""
	return u.String()
}

// Socket returns the unix socket path the driver dials.
func (d *Driver) Socket() string { return d.socket }

// eventIDs are the libvirt event IDs subscribed on every connection.
// IoErrorReason is a superset of IoError (adds the reason string); libvirt
// emits both for every IO error, so subscribing to both would duplicate.
var eventIDs = []golibvirt.DomainEventID{
	golibvirt.DomainEventIDLifecycle,
	golibvirt.DomainEventIDReboot,
	golibvirt.DomainEventIDWatchdog,
	golibvirt.DomainEventIDIoErrorReason,
	golibvirt.DomainEventIDAgentLifecycle,
}

// Connect dials libvirtd, opens the URI and subscribes to events. See
// hypervisor.Driver.
func (d *Driver) Connect(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return &hypervisor.OpError{Op: "connect", Err: hypervisor.ErrClosed}
	}
	old := d.conn
	oldCancel := d.cancel
	d.conn, d.cancel = nil, nil
	d.mu.Unlock()
	if old != nil {
		oldCancel()
		_ = old.Disconnect()
	}

	l := golibvirt.NewWithDialer(dialers.NewLocal(
		dialers.WithSocket(d.socket),
		dialers.WithLocalTimeout(d.dialTO),
	))
	if _, err := call(ctx, func() (struct{}, error) {
		return struct{}{}, l.ConnectToURI(golibvirt.ConnectURI(d.uri))
	}); err != nil {
		// Disconnect is a no-op if never connected; if ctx fired while
		// ConnectToURI is still running, clean up once it returns.
		go func() { _ = l.Disconnect() }()
		return &hypervisor.OpError{Op: "connect", Err: fmt.Errorf("cannot connect to libvirt at %s: %w", d.socket, err)}
	}

	evCtx, cancel := context.WithCancel(ctx)
	subs := make([]<-chan any, 0, len(eventIDs))
	for _, id := range eventIDs {
		ch, err := l.SubscribeEvents(evCtx, id, nil)
		if err != nil {
			cancel()
			_ = l.Disconnect()
			return &hypervisor.OpError{Op: "connect", Err: fmt.Errorf("subscribe to libvirt event %d: %w", id, err)}
		}
		subs = append(subs, ch)
	}

	out := make(chan hypervisor.Event, 64)
	var wg sync.WaitGroup
	for _, ch := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.forward(evCtx, ch, out)
		}()
	}
	disconnected := l.Disconnected()
	go func() {
		wg.Wait()
		close(out)
		select {
		case <-disconnected:
			d.log.Warn("libvirt connection lost")
		default:
		}
	}()

	d.mu.Lock()
	if d.closed { // Close raced with us
		d.mu.Unlock()
		cancel()
		_ = l.Disconnect()
		return &hypervisor.OpError{Op: "connect", Err: hypervisor.ErrClosed}
	}
	d.conn, d.cancel, d.events = l, cancel, out
	d.mu.Unlock()
	d.log.Info("connected to libvirt", "socket", d.socket)
	return nil
}

// forward converts go-libvirt event messages and sends them to out until
// in is closed (unsubscribe / disconnect) or ctx ends.
func (d *Driver) forward(ctx context.Context, in <-chan any, out chan<- hypervisor.Event) {
	for {
		select {
		case raw, ok := <-in:
			if !ok {
				return
			}
			ev, ok := convertEvent(raw, time.Now())
			if !ok {
				d.log.Debug("ignoring unknown libvirt event", "type", fmt.Sprintf("%T", raw))
				continue
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		case <-ctx.Done():
			// go-libvirt closes in after unsubscribing; drain so its
			// goroutine is not stuck on a send.
			for range in {
			}
			return
		}
	}
}

func convertEvent(raw any, at time.Time) (hypervisor.Event, bool) {
	switch m := raw.(type) {
	case *golibvirt.DomainEventCallbackLifecycleMsg:
		return hypervisor.Event{Kind: hypervisor.Lifecycle, Domain: m.Msg.Dom.Name, UUID: uuidString(m.Msg.Dom.UUID),
			Lifecycle: int(m.Msg.Event), Detail: int(m.Msg.Detail), At: at}, true
	case *golibvirt.DomainEventCallbackRebootMsg:
		return hypervisor.Event{Kind: hypervisor.Reboot, Domain: m.Msg.Dom.Name, UUID: uuidString(m.Msg.Dom.UUID), At: at}, true
	case *golibvirt.DomainEventCallbackWatchdogMsg:
		return hypervisor.Event{Kind: hypervisor.Watchdog, Domain: m.Msg.Dom.Name, UUID: uuidString(m.Msg.Dom.UUID),
			Action: int(m.Msg.Action), At: at}, true
	case *golibvirt.DomainEventCallbackIOErrorReasonMsg:
		return hypervisor.Event{Kind: hypervisor.IOError, Domain: m.Msg.Dom.Name, UUID: uuidString(m.Msg.Dom.UUID),
			Action: int(m.Msg.Action), SrcPath: m.Msg.SrcPath, DevAlias: m.Msg.DevAlias, IOReason: m.Msg.Reason, At: at}, true
	case *golibvirt.DomainEventCallbackIOErrorMsg:
		return hypervisor.Event{Kind: hypervisor.IOError, Domain: m.Msg.Dom.Name, UUID: uuidString(m.Msg.Dom.UUID),
			Action: int(m.Msg.Action), SrcPath: m.Msg.SrcPath, DevAlias: m.Msg.DevAlias, At: at}, true
	case *golibvirt.DomainEventCallbackAgentLifecycleMsg:
		return hypervisor.Event{Kind: hypervisor.AgentLifecycle, Domain: m.Dom.Name, UUID: uuidString(m.Dom.UUID),
			AgentState: int(m.State), AgentReason: int(m.Reason), At: at}, true
	}
	return hypervisor.Event{}, false
}

func uuidString(u golibvirt.UUID) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Events implements hypervisor.Driver.
func (d *Driver) Events() <-chan hypervisor.Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.events
}

// Close implements hypervisor.Driver.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	l, cancel := d.conn, d.cancel
	d.conn, d.cancel = nil, nil
	d.mu.Unlock()
	if l == nil {
		return nil
	}
	cancel()
	if err := l.Disconnect(); err != nil && l.IsConnected() {
		return &hypervisor.OpError{Op: "close", Err: err}
	}
	return nil
}

func (d *Driver) client() (*golibvirt.Libvirt, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, hypervisor.ErrClosed
	}
	if d.conn == nil || !d.conn.IsConnected() {
		return nil, hypervisor.ErrNotConnected
	}
	return d.conn, nil
}

// call runs f, returning early with ctx.Err() if ctx ends first. go-libvirt
// RPCs take no context; an abandoned call finishes in the background (it
// is bounded by the connection: a disconnect fails all pending calls).
func call[T any](ctx context.Context, f func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// classify wraps libvirt errors with the matching hypervisor sentinel.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var le golibvirt.Error
	if errors.As(err, &le) {
		switch golibvirt.ErrorNumber(le.Code) {
		case golibvirt.ErrNoDomain:
			return fmt.Errorf("%w: %w", hypervisor.ErrNotFound, err)
		case golibvirt.ErrOperationInvalid:
			return fmt.Errorf("%w: %w", hypervisor.ErrInvalidState, err)
		}
	}
	if errors.Is(err, golibvirt.ErrInterrupted) {
		return fmt.Errorf("%w: %w", hypervisor.ErrNotConnected, err)
	}
	return err
}

// domainOp looks the domain up by name and runs op on it.
func (d *Driver) domainOp(ctx context.Context, opName, name string, op func(*golibvirt.Libvirt, golibvirt.Domain) error) error {
	_, err := domainCall(ctx, d, opName, name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) (struct{}, error) {
		return struct{}{}, op(l, dom)
	})
	return err
}

// domainCall looks the domain up by name and runs f on it, returning its
// result. Errors are *hypervisor.OpError.
func domainCall[T any](ctx context.Context, d *Driver, opName, name string, f func(*golibvirt.Libvirt, golibvirt.Domain) (T, error)) (T, error) {
	var zero T
	l, err := d.client()
	if err != nil {
		return zero, &hypervisor.OpError{Op: opName, Domain: name, Err: err}
	}
	v, err := call(ctx, func() (T, error) {
		dom, err := l.DomainLookupByName(name)
		if err != nil {
			return zero, err
		}
		return f(l, dom)
	})
	if err != nil {
		return zero, &hypervisor.OpError{Op: opName, Domain: name, Err: classify(err)}
	}
	d.log.Debug("domain operation done", "op", opName, "domain", name)
	return v, nil
}

// List implements hypervisor.Driver. Domains that disappear while listing
// are skipped.
func (d *Driver) List(ctx context.Context) ([]hypervisor.Domain, error) {
	l, err := d.client()
	if err != nil {
		return nil, &hypervisor.OpError{Op: "list", Err: err}
	}
	out, err := call(ctx, func() ([]hypervisor.Domain, error) {
		doms, _, err := l.ConnectListAllDomains(1, golibvirt.ConnectListDomainsActive|golibvirt.ConnectListDomainsInactive)
		if err != nil {
			return nil, err
		}
		res := make([]hypervisor.Domain, 0, len(doms))
		for _, dom := range doms {
			state, reason, err := l.DomainGetState(dom, 0)
			if golibvirt.IsNotFound(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("get state of %q: %w", dom.Name, err)
			}
			_, maxMem, _, nrCPU, _, err := l.DomainGetInfo(dom)
			if golibvirt.IsNotFound(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("get info of %q: %w", dom.Name, err)
			}
			res = append(res, hypervisor.Domain{
				Name:      dom.Name,
				UUID:      uuidString(dom.UUID),
				State:     hypervisor.DomainState(state),
				Reason:    int(reason),
				MemoryKiB: maxMem,
				VCPUs:     int(nrCPU),
			})
		}
		return res, nil
	})
	if err != nil {
		return nil, &hypervisor.OpError{Op: "list", Err: classify(err)}
	}
	return out, nil
}

// Start implements hypervisor.Driver.
func (d *Driver) Start(ctx context.Context, name string) error {
	return d.domainOp(ctx, "start", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
		return l.DomainCreate(dom)
	})
}

// Destroy implements hypervisor.Driver.
func (d *Driver) Destroy(ctx context.Context, name string) error {
	return d.domainOp(ctx, "destroy", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
		return l.DomainDestroyFlags(dom, golibvirt.DomainDestroyDefault)
	})
}

// Shutdown implements hypervisor.Driver (ACPI power button only).
func (d *Driver) Shutdown(ctx context.Context, name string) error {
	return d.domainOp(ctx, "shutdown", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
		return l.DomainShutdownFlags(dom, golibvirt.DomainShutdownAcpiPowerBtn)
	})
}

// Reboot implements hypervisor.Driver (ACPI power button only).
func (d *Driver) Reboot(ctx context.Context, name string) error {
	return d.domainOp(ctx, "reboot", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
		return l.DomainReboot(dom, golibvirt.DomainRebootAcpiPowerBtn)
	})
}

// Reset implements hypervisor.Driver.
func (d *Driver) Reset(ctx context.Context, name string) error {
	return d.domainOp(ctx, "reset", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
		return l.DomainReset(dom, 0)
	})
}

// Suspend implements hypervisor.Driver.
func (d *Driver) Suspend(ctx context.Context, name string) error {
	return d.domainOp(ctx, "suspend", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
		return l.DomainSuspend(dom)
	})
}

// Resume implements hypervisor.Driver.
func (d *Driver) Resume(ctx context.Context, name string) error {
	return d.domainOp(ctx, "resume", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
		return l.DomainResume(dom)
	})
}

// Undefine implements hypervisor.Driver. Managed-save images, snapshot and
// checkpoint metadata are removed too (otherwise libvirt refuses); NVRAM
// files are kept.
func (d *Driver) Undefine(ctx context.Context, name string) error {
	return d.domainOp(ctx, "undefine", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
		return l.DomainUndefineFlags(dom, golibvirt.DomainUndefineManagedSave|
			golibvirt.DomainUndefineSnapshotsMetadata|golibvirt.DomainUndefineCheckpointsMetadata|
			golibvirt.DomainUndefineKeepNvram)
	})
}

// Define implements hypervisor.Driver.
func (d *Driver) Define(ctx context.Context, xml string) error {
	l, err := d.client()
	if err != nil {
		return &hypervisor.OpError{Op: "define", Err: err}
	}
	dom, err := call(ctx, func() (golibvirt.Domain, error) {
		return l.DomainDefineXMLFlags(xml, golibvirt.DomainDefineValidate)
	})
	if err != nil {
		return &hypervisor.OpError{Op: "define", Err: classify(err)}
	}
	d.log.Debug("domain defined", "domain", dom.Name)
	return nil
}

// XML implements hypervisor.Driver.
func (d *Driver) XML(ctx context.Context, name string) (string, error) {
	return domainCall(ctx, d, "get xml of", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) (string, error) {
		return l.DomainGetXMLDesc(dom, golibvirt.DomainXMLInactive|golibvirt.DomainXMLSecure)
	})
}

// Migrate implements hypervisor.Driver: a live, peer-to-peer migration (virsh migrate
// --live --p2p --persistent --undefinesource), which libvirt aborts itself on an I/O error
// of the source. The call blocks until the migration ends; if ctx ends first the migration
// job is aborted, so that no migration goes on that nobody waits for.
func (d *Driver) Migrate(ctx context.Context, name, destURI string) error {
	const flags = golibvirt.MigrateLive | golibvirt.MigratePeer2peer | golibvirt.MigratePersistDest |
		golibvirt.MigrateUndefineSource | golibvirt.MigrateAbortOnError
	if destURI == "" {
		return &hypervisor.OpError{Op: "migrate", Domain: name, Err: errors.New("no destination URI")}
	}
	err := d.domainOp(ctx, "migrate", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
		_, err := l.DomainMigratePerform3Params(dom, golibvirt.OptString{destURI}, nil, nil, flags)
		return err
	})
	if err != nil && ctx.Err() != nil {
		if l, cerr := d.client(); cerr == nil {
			if dom, lerr := l.DomainLookupByName(name); lerr == nil {
				if aerr := l.DomainAbortJob(dom); aerr != nil {
					d.log.Warn("abort an abandoned migration", "domain", name, "err", aerr)
				}
			}
		}
	}
	return err
}

var _ hypervisor.GuestAgent = (*Driver)(nil)

// GuestPing implements hypervisor.GuestAgent: guest-ping through libvirt's
// qemu-agent-command, with libvirt's timeout in whole seconds (at least 1) and ctx's bound
// at timeout.
func (d *Driver) GuestPing(ctx context.Context, name string, timeout time.Duration) error {
	secs := int32((timeout + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := domainCall(ctx, d, "guest-ping", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) (golibvirt.OptString, error) {
		return l.QEMUDomainAgentCommand(dom, `{"execute":"guest-ping"}`, secs, 0)
	})
	return err
}

// GuestAddresses implements hypervisor.GuestAgent.
func (d *Driver) GuestAddresses(ctx context.Context, name string) ([]string, error) {
	ifaces, err := domainCall(ctx, d, "guest-addresses", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) ([]golibvirt.DomainInterface, error) {
		return l.DomainInterfaceAddresses(dom, uint32(golibvirt.DomainInterfaceAddressesSrcAgent), 0)
	})
	if err != nil {
		return nil, err
	}
	var v4, v6 []string
	for _, ifc := range ifaces {
		for _, a := range ifc.Addrs {
			ip := net.ParseIP(a.Addr)
			if ip == nil || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
				continue
			}
			if ip.To4() != nil {
				v4 = append(v4, a.Addr)
			} else {
				v6 = append(v6, a.Addr)
			}
		}
	}
	return append(v4, v6...), nil
}

// State implements hypervisor.GuestAgent.
func (d *Driver) State(ctx context.Context, name string) (hypervisor.DomainState, int, error) {
	type st struct{ s, r int32 }
	v, err := domainCall(ctx, d, "state", name, func(l *golibvirt.Libvirt, dom golibvirt.Domain) (st, error) {
		s, r, err := l.DomainGetState(dom, 0)
		return st{s, r}, err
	})
	return hypervisor.DomainState(v.s), int(v.r), err
}
