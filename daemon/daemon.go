// Package daemon is `hass up`: everything for one host in one process — the decision
// engine, the libvirt driver and its event stream, the executor of the engine's actions, the
// state in etcd, and the HTTP API. It is wiring only: decisions stay in package engine, the
// translation of libvirt's vocabulary in package lifecycle, I/O in the driver and the store.
//
// Every engine step runs under one mutex, and what a step decides is written to the store
// (event log, VM records, the actions about to be carried out) before the step's actions are
// carried out. An action is carried out only while Engine.Current says it still is wanted.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor"
	"github.com/hassproject/hass/lifecycle"
	"github.com/hassproject/hass/store"
)

// Config configures a daemon.
type Config struct {
	HostName    string   // this host's name in hass; default: the OS host name
	DataDir     string   // embedded etcd's data directory
	Etcd        []string // an external etcd cluster instead of the embedded one
	Listen      string   // the API's address, unix:///path or host:port; default DefaultListen
	ResyncEvery time.Duration
	TickEvery   time.Duration
	Engine      engine.Config
	Logger      *slog.Logger
	// Driver talks to the hypervisor; the caller builds it (libvirt in production).
	Driver hypervisor.Driver
	// Ready, if set, is called once the API listens, with its address.
	Ready func(addr string)
	// ProtectAll protects, with the default policy, every domain of this host that is not
	// protected yet when the daemon first sees it (at start, and when one is defined later).
	ProtectAll bool
	// KeepEvents bounds the event log; older entries are trimmed every ten minutes.
	KeepEvents int
	// SocketGroup is the group let into the API's unix socket; "" means DefaultSocketGroup
	// if it exists (else only the socket's owner can use it).
	SocketGroup string
	// StoreMinFree is the free space (bytes) the embedded store keeps on its data dir's
	// filesystem, refusing writes below it; 0 means store.DefaultMinFree, < 0 none.
	StoreMinFree int64
}

// Daemon is one running `hass up`.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	drv     hypervisor.Driver
	st      *store.Store
	started time.Time

	mu        sync.Mutex // guards everything below, and every engine step
	eng       *engine.Engine
	tr        *lifecycle.Translator
	lastSeq   uint64
	libvirt   string // "connected" or why not
	persisted map[engine.VMID]store.VM
	// unfinished holds the user operations a previous run ordered but did not see done;
	// they are ordered again after the first resync, once the engine knows the domains.
	unfinished []engine.Request
	seen       map[string]bool // domains already offered to ProtectAll, or unprotected by a user

	vmLocks sync.Map // engine.VMID -> *sync.Mutex: one action at a time per VM
	wg      sync.WaitGroup
	ctx     context.Context
}

// Run starts the daemon and blocks until ctx ends or it cannot go on.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Driver == nil {
		return errors.New("daemon: no hypervisor driver")
	}
	if cfg.HostName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("daemon: host name: %w", err)
		}
		cfg.HostName = h
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.ResyncEvery <= 0 {
		cfg.ResyncEvery = 30 * time.Second
	}
	if cfg.TickEvery <= 0 {
		cfg.TickEvery = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.KeepEvents <= 0 {
		cfg.KeepEvents = 100000
	}
	if cfg.Engine == (engine.Config{}) {
		cfg.Engine = engine.DefaultConfig()
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, drv: cfg.Driver, started: time.Now(), ctx: ctx,
		eng: engine.New(cfg.Engine), tr: lifecycle.NewTranslator(), libvirt: "connecting",
		persisted: map[engine.VMID]store.VM{}}

	ln, err := listenAPI(cfg.Listen, cfg.SocketGroup, d.log)
	if err != nil {
		return fmt.Errorf("daemon: listen on %s: %w", cfg.Listen, err)
	}
	defer ln.Close()

	if len(cfg.Etcd) > 0 {
		d.st, err = store.Connect(ctx, cfg.Etcd, d.log)
	} else {
		if cfg.DataDir == "" {
			return errors.New("daemon: no data directory for the embedded etcd")
		}
		d.st, err = store.OpenEmbeddedConfig(ctx, store.EmbeddedConfig{Dir: cfg.DataDir, Logger: d.log, MinFree: cfg.StoreMinFree})
	}
	if err != nil {
		return fmt.Errorf("daemon: state store: %w", err)
	}
	defer d.st.Close()

	if err := d.restore(ctx); err != nil {
		return err
	}

	srv := &http.Server{Handler: api.NewServer(d, d.log), ReadHeaderTimeout: 10 * time.Second}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	d.log.Info("hass is up", "host", cfg.HostName, "api", ln.addr, "vms", len(d.eng.Status()))
	if cfg.Ready != nil {
		cfg.Ready(ln.addr)
	}

	loopCtx, stop := context.WithCancel(ctx)
	defer stop()
	d.wg.Add(2)
	go d.watch(loopCtx)
	go d.clock(loopCtx)

	select {
	case <-ctx.Done():
	case err = <-srvErr:
		err = fmt.Errorf("daemon: API server: %w", err)
	case <-d.st.Done(): // nothing can be recorded any more, so nothing may be done
		err = fmt.Errorf("daemon: the state store failed: %w", d.st.Err())
	}
	stop()
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	_ = d.drv.Close()
	d.wg.Wait()
	if err != nil {
		d.log.Error("hass is down", "err", err)
	} else {
		d.log.Info("hass is down")
	}
	return err
}

// restore rebuilds the engine from the store: this host, every protected VM with its
// desired state, and the user operations a previous run had ordered but not finished
// (they are ordered again; recoveries are not repeated, the engine re-derives them).
func (d *Daemon) restore(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.eng.Step(time.Now(), engine.AddHost{Host: engine.HostID(d.cfg.HostName)})
	vms, err := d.st.VMs(ctx)
	if err != nil {
		return fmt.Errorf("daemon: load protected VMs: %w", err)
	}
	for _, r := range vms {
		p, desired, err := fromRecord(r)
		if err != nil {
			return fmt.Errorf("daemon: stored vm %q: %w", r.Name, err)
		}
		out := d.eng.Step(time.Now(), engine.Protect{VM: engine.VMID(r.Name), Host: engine.HostID(d.cfg.HostName),
			MemMiB: r.MemMiB, Policy: p, Desired: desired})
		if out.Err != nil {
			return fmt.Errorf("daemon: stored vm %q: %w", r.Name, out.Err)
		}
		d.persisted[engine.VMID(r.Name)] = r
	}
	if d.seen, err = d.st.OptOuts(ctx); err != nil {
		return fmt.Errorf("daemon: load opt-outs: %w", err)
	}
	pending, err := d.st.PendingActions(ctx)
	if err != nil {
		return fmt.Errorf("daemon: load pending actions: %w", err)
	}
	for _, a := range pending {
		op, ok := opOfAction(a)
		if ok && d.eng.Protected(engine.VMID(a.VM)) {
			d.log.Info("an operation the last run ordered will be finished", "vm", a.VM, "op", op)
			d.unfinished = append(d.unfinished, engine.Request{Op: op, VM: engine.VMID(a.VM), Source: engine.SrcAPI})
		}
		if err := d.st.DeleteAction(ctx, a.ID); err != nil {
			return fmt.Errorf("daemon: clear pending action %d: %w", a.ID, err)
		}
	}
	return nil
}

// opOfAction maps an unfinished action of a user operation back to the operation. Reboots
// and migrations are not repeated; recoveries are re-derived by the engine.
func opOfAction(a store.Action) (engine.OpKind, bool) {
	if len(a.Why) < 3 || a.Why[:3] != "op:" {
		return 0, false
	}
	switch a.Kind {
	case engine.ActStart.String():
		return engine.OpStart, true
	case engine.ActDestroy.String():
		return engine.OpStop, true
	case engine.ActShutdown.String():
		return engine.OpShutdown, true
	case engine.ActDelete.String():
		return engine.OpDelete, true
	case engine.ActSuspend.String():
		return engine.OpSuspend, true
	case engine.ActResume.String():
		return engine.OpResume, true
	}
	return 0, false
}

// stamp returns this host's next observation stamp: its clock, strictly increasing.
// Callers hold d.mu.
func (d *Daemon) stamp() uint64 {
	n := uint64(time.Now().UnixNano())
	if n <= d.lastSeq {
		n = d.lastSeq + 1
	}
	d.lastSeq = n
	return n
}

// step runs one engine step and everything that follows from it.
func (d *Daemon) step(ctx context.Context, in engine.Input) engine.Output {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stepLocked(ctx, in)
}

// stepLocked steps the engine, records what it decided, then starts its actions.
func (d *Daemon) stepLocked(ctx context.Context, in engine.Input) engine.Output {
	out := d.eng.Step(time.Now(), in)
	res := engine.Output{Actions: slices.Clone(out.Actions), Log: slices.Clone(out.Log), Err: out.Err}
	if len(res.Log) > 0 {
		evs := make([]store.Event, 0, len(res.Log))
		for _, r := range res.Log {
			d.log.Info(r.String(), "type", string(r.Type))
			evs = append(evs, toStoreEvent(r))
		}
		if _, err := d.st.AppendEvents(ctx, evs); err != nil {
			d.log.Error("event log write failed", "err", err)
		}
	}
	d.persistVMs(ctx, res.Log)
	for _, a := range res.Actions {
		rec := store.Action{ID: a.ID, Kind: a.Kind.String(), VM: string(a.VM), Host: string(a.Host),
			Target: string(a.Target), Why: a.Why, Gen: a.Gen, At: time.Now()}
		if err := d.st.PutAction(ctx, rec); err != nil {
			// Not recorded, so not carried out: the engine's timeout retries it.
			d.log.Error("action not recorded, not carrying it out", "action", a.String(), "err", err)
			continue
		}
		d.wg.Add(1)
		go d.execute(a)
	}
	return res
}

// persistVMs writes the VM records the step may have changed.
func (d *Daemon) persistVMs(ctx context.Context, recs []engine.Record) {
	seen := map[engine.VMID]bool{}
	for _, r := range recs {
		if r.VM == "" || seen[r.VM] {
			continue
		}
		seen[r.VM] = true
		s, ok := d.eng.Get(r.VM)
		if !ok {
			if _, had := d.persisted[r.VM]; had {
				if err := d.st.DeleteVM(ctx, string(r.VM)); err != nil && !errors.Is(err, store.ErrNotFound) {
					d.log.Error("forget vm in the store", "vm", r.VM, "err", err)
					continue
				}
				delete(d.persisted, r.VM)
			}
			continue
		}
		rec := toRecord(s)
		if old, had := d.persisted[r.VM]; had && sameRecord(old, rec) {
			continue
		}
		if err := d.st.PutVM(ctx, rec); err != nil {
			d.log.Error("write vm to the store", "vm", r.VM, "err", err)
			continue
		}
		d.persisted[r.VM] = rec
	}
}

// watch follows the hypervisor's events, resyncing after every (re)connect.
func (d *Daemon) watch(ctx context.Context) {
	defer d.wg.Done()
	for ev := range hypervisor.Watch(ctx, d.drv, hypervisor.Backoff{}, d.log) {
		if ev.Kind == hypervisor.Resync {
			d.setLibvirt("connected")
			d.resync(ctx)
			d.mu.Lock()
			for _, r := range d.unfinished {
				if out := d.stepLocked(ctx, r); out.Err != nil {
					d.log.Warn("could not finish an operation of the last run", "vm", r.VM, "op", r.Op, "err", out.Err)
				}
			}
			d.unfinished = nil
			d.mu.Unlock()
			continue
		}
		d.onEvent(ctx, ev)
	}
}

func (d *Daemon) setLibvirt(s string) {
	d.mu.Lock()
	d.libvirt = s
	d.mu.Unlock()
}

// onEvent translates one hypervisor event and steps the engine with it.
func (d *Daemon) onEvent(ctx context.Context, ev hypervisor.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.tr.Event(toLifecycle(ev))
	if r.Skip {
		return
	}
	host, vm, at, seq := engine.HostID(d.cfg.HostName), engine.VMID(ev.Domain), ev.At, d.stamp()
	if r.Signal {
		d.stepLocked(ctx, engine.Signal{Host: host, VM: vm, Seq: seq, Kind: r.Sig, Watchdog: r.WD, At: at})
		return
	}
	d.stepLocked(ctx, engine.Observe{Host: host, VM: vm, Seq: seq, State: r.State, Reason: r.Reason, At: at})
}

func toLifecycle(ev hypervisor.Event) lifecycle.Event {
	le := lifecycle.Event{Domain: ev.Domain, Type: ev.Lifecycle, Detail: ev.Detail}
	switch ev.Kind {
	case hypervisor.Reboot:
		le.Kind = lifecycle.KindReboot
	case hypervisor.Watchdog:
		le.Kind, le.Watchdog = lifecycle.KindWatchdog, ev.Action
	case hypervisor.IOError:
		le.Kind = lifecycle.KindIOError
	case hypervisor.AgentLifecycle:
		le.Kind, le.Detail = lifecycle.KindAgentLifecycle, ev.AgentState
	default:
		le.Kind = lifecycle.KindLifecycle
	}
	return le
}

// resync lists every domain and gives the engine the complete picture.
func (d *Daemon) resync(ctx context.Context) {
	d.mu.Lock()
	seq := d.stamp() // before the list: any event after it is newer than the list
	d.mu.Unlock()
	doms, err := d.drv.List(ctx)
	if err != nil {
		d.setLibvirt(err.Error())
		d.log.Warn("resync failed", "err", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.libvirt = "connected"
	if d.cfg.ProtectAll {
		d.protectNew(ctx, doms, seq)
	}
	snap := engine.Snapshot{Host: engine.HostID(d.cfg.HostName), Seq: seq, At: time.Now()}
	for _, dom := range doms {
		st, r := d.tr.Row(dom.Name, int(dom.State), dom.Reason)
		snap.Domains = append(snap.Domains, engine.DomainStatus{VM: engine.VMID(dom.Name), State: st, Reason: r})
	}
	d.stepLocked(ctx, snap)
}

// protectNew protects the domains this daemon has not seen before (ProtectAll). A domain
// seen once and then unprotected by a user stays unprotected for the rest of this run.
// Callers hold d.mu.
func (d *Daemon) protectNew(ctx context.Context, doms []hypervisor.Domain, seq uint64) {
	if d.seen == nil {
		d.seen = map[string]bool{}
	}
	for _, dom := range doms {
		if d.seen[dom.Name] {
			continue
		}
		d.seen[dom.Name] = true
		if d.eng.Protected(engine.VMID(dom.Name)) {
			continue
		}
		st, r := d.tr.Row(dom.Name, int(dom.State), dom.Reason)
		in := engine.Protect{VM: engine.VMID(dom.Name), Host: engine.HostID(d.cfg.HostName),
			MemMiB: int(dom.MemoryKiB / 1024), Policy: engine.DefaultPolicy(), Desired: desiredOf(st)}
		if out := d.stepLocked(ctx, in); out.Err != nil {
			d.log.Warn("protect-all: cannot protect", "vm", dom.Name, "err", out.Err)
			continue
		}
		d.stepLocked(ctx, engine.Observe{Host: in.Host, VM: in.VM, Seq: seq, State: st, Reason: r, At: time.Now()})
	}
}

// desiredOf is what protecting a domain found in state st keeps it as: running or
// suspended if it is up, stopped otherwise.
func desiredOf(st engine.DomState) engine.Desired {
	switch st {
	case engine.DomRunning:
		return engine.WantRunning
	case engine.DomPaused:
		return engine.WantPaused
	}
	return engine.WantStopped
}

// clock ticks the engine and resyncs periodically.
func (d *Daemon) clock(ctx context.Context) {
	defer d.wg.Done()
	tick := time.NewTicker(d.cfg.TickEvery)
	defer tick.Stop()
	resync := time.NewTicker(d.cfg.ResyncEvery)
	defer resync.Stop()
	trim := time.NewTicker(10 * time.Minute)
	defer trim.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-trim.C:
			if err := d.st.TrimEvents(ctx, d.cfg.KeepEvents); err != nil {
				d.log.Warn("trim the event log", "err", err)
			}
		case <-tick.C:
			d.mu.Lock()
			if w := d.eng.NextWake(); !w.IsZero() && !w.After(time.Now()) {
				d.stepLocked(ctx, engine.Tick{})
			}
			d.mu.Unlock()
		case <-resync.C:
			d.resync(ctx)
		}
	}
}

// execute carries out one action, unless a newer intent overtook it, and reports back.
func (d *Daemon) execute(a engine.Action) {
	defer d.wg.Done()
	ctx := d.ctx
	l, _ := d.vmLocks.LoadOrStore(a.VM, &sync.Mutex{})
	lock := l.(*sync.Mutex)
	lock.Lock()
	defer lock.Unlock()
	defer func() {
		if err := d.st.DeleteAction(context.WithoutCancel(ctx), a.ID); err != nil {
			d.log.Warn("clear action record", "id", a.ID, "err", err)
		}
	}()
	d.mu.Lock()
	current := d.eng.Current(a)
	d.mu.Unlock()
	if !current {
		d.log.Info("action overtaken by a newer intent: dropped", "action", a.String())
		return
	}
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err := d.carryOut(actx, a)
	cancel()
	d.log.Info("action carried out", "action", a.String(), "took", time.Since(start), "err", err)
	d.mu.Lock()
	seq := d.stamp()
	d.mu.Unlock()
	res := engine.ActionResult{ID: a.ID, Host: a.Host, Seq: seq}
	if err != nil {
		res.Err = err.Error()
	}
	if doms, lerr := d.drv.List(ctx); lerr == nil {
		res.State = engine.DomAbsent
		for _, dom := range doms {
			if dom.Name == string(a.VM) {
				d.mu.Lock()
				res.State, res.Reason = d.tr.Row(dom.Name, int(dom.State), dom.Reason)
				d.mu.Unlock()
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	d.step(ctx, res)
}

// carryOut maps an action onto the driver. Starting a running domain or destroying a
// stopped one succeeds: actions are idempotent.
func (d *Daemon) carryOut(ctx context.Context, a engine.Action) error {
	name := string(a.VM)
	ignore := func(err error, allowed ...error) error {
		for _, e := range allowed {
			if errors.Is(err, e) {
				return nil
			}
		}
		return err
	}
	switch a.Kind {
	case engine.ActStart:
		return ignore(d.drv.Start(ctx, name), hypervisor.ErrInvalidState)
	case engine.ActDestroy:
		return ignore(d.drv.Destroy(ctx, name), hypervisor.ErrInvalidState)
	case engine.ActShutdown:
		return d.drv.Shutdown(ctx, name)
	case engine.ActReboot:
		return d.drv.Reboot(ctx, name)
	case engine.ActReset:
		return d.drv.Reset(ctx, name)
	case engine.ActSuspend:
		return d.drv.Suspend(ctx, name)
	case engine.ActResume:
		return d.drv.Resume(ctx, name)
	case engine.ActDelete:
		if err := ignore(d.drv.Destroy(ctx, name), hypervisor.ErrInvalidState, hypervisor.ErrNotFound); err != nil {
			return err
		}
		return ignore(d.drv.Undefine(ctx, name), hypervisor.ErrNotFound)
	case engine.ActMigrate:
		return fmt.Errorf("live migration to %s needs hass running there too: single-host mode", a.Target)
	case engine.ActFence:
		return errors.New("no fence device configured")
	}
	return fmt.Errorf("unknown action %s", a.Kind)
}
