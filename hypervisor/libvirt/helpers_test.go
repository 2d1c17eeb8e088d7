package libvirt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hassproject/hass/hypervisor"
)

// requireLibvirt skips the test when libvirtd's socket is absent, unless
// HASS_REQUIRE_LIBVIRT is set, in which case it fails.
func requireLibvirt(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(DefaultSystemSocket); err == nil {
		return
	}
	if os.Getenv("HASS_REQUIRE_LIBVIRT") != "" {
		t.Fatalf("libvirt socket %s absent and HASS_REQUIRE_LIBVIRT is set: run scripts/install-libvirt.sh", DefaultSystemSocket)
	}
	t.Skipf("SKIP: libvirt socket %s absent (run scripts/install-libvirt.sh; set HASS_REQUIRE_LIBVIRT=1 to make this a failure)", DefaultSystemSocket)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newDriver returns a connected driver, closed at test end.
func newDriver(t *testing.T) *Driver {
	t.Helper()
	d, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func uniqueName(t *testing.T) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	n := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(n) > 30 {
		n = n[:30]
	}
	return "hass-t-" + n + "-" + hex.EncodeToString(b)
}

// guestXML is a tiny diskless TCG guest: boots into SeaBIOS, finds nothing,
// and idles. It ignores ACPI.
func guestXML(name string) string { return guestXMLDevices(name, "") }

func guestXMLDevices(name, devices string) string {
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><memballoon model='none'/>%s</devices>
</domain>`, name, devices)
}

// defineGuest defines a guest and registers cleanup (destroy+undefine over
// a fresh connection, so it works even after libvirtd restarts).
func defineGuest(t *testing.T, d *Driver) string {
	t.Helper()
	name := uniqueName(t)
	if err := d.Define(t.Context(), guestXML(name)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupDomain(t, name) })
	return name
}

func cleanupDomain(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Errorf("cleanup %s: %v", name, err)
		return
	}
	defer d.Close()
	if err := waitConnect(ctx, d); err != nil {
		t.Errorf("cleanup %s: %v", name, err)
		return
	}
	if err := d.Destroy(ctx, name); err != nil && !errors.Is(err, hypervisor.ErrInvalidState) && !errors.Is(err, hypervisor.ErrNotFound) {
		t.Errorf("cleanup: %v", err)
	}
	if err := d.Undefine(ctx, name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
		t.Errorf("cleanup: %v", err)
	}
}

func waitConnect(ctx context.Context, d *Driver) error {
	for {
		err := d.Connect(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func findDomain(t *testing.T, d *Driver, name string) (hypervisor.Domain, bool) {
	t.Helper()
	doms, err := d.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, dom := range doms {
		if dom.Name == name {
			return dom, true
		}
	}
	return hypervisor.Domain{}, false
}

func mustState(t *testing.T, d *Driver, name string, want hypervisor.DomainState) hypervisor.Domain {
	t.Helper()
	dom, ok := findDomain(t, d, name)
	if !ok {
		t.Fatalf("List: domain %s missing", name)
	}
	if dom.State != want {
		t.Fatalf("List: domain %s state %s reason %d, want %s", name, dom.State, dom.Reason, want)
	}
	return dom
}

// recorder collects events from a channel so tests can wait for them.
type recorder struct {
	mu     sync.Mutex
	evs    []hypervisor.Event
	notify chan struct{}
	closed bool
	done   chan struct{}
}

func record(ch <-chan hypervisor.Event) *recorder {
	r := &recorder{notify: make(chan struct{}), done: make(chan struct{})}
	go func() {
		for ev := range ch {
			r.mu.Lock()
			r.evs = append(r.evs, ev)
			close(r.notify)
			r.notify = make(chan struct{})
			r.mu.Unlock()
		}
		r.mu.Lock()
		r.closed = true
		close(r.notify)
		r.mu.Unlock()
		close(r.done)
	}()
	return r
}

func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.evs)
}

// since returns the events recorded from index from on.
func (r *recorder) since(from int) []hypervisor.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hypervisor.Event(nil), r.evs[from:]...)
}

// waitFor waits for the first event at index >= from matching pred.
func (r *recorder) waitFor(from int, timeout time.Duration, pred func(hypervisor.Event) bool) (hypervisor.Event, error) {
	deadline := time.After(timeout)
	for i := from; ; {
		r.mu.Lock()
		for ; i < len(r.evs); i++ {
			if pred(r.evs[i]) {
				ev := r.evs[i]
				r.mu.Unlock()
				return ev, nil
			}
		}
		closed, notify := r.closed, r.notify
		r.mu.Unlock()
		if closed {
			return hypervisor.Event{}, errors.New("event channel closed")
		}
		select {
		case <-notify:
		case <-deadline:
			return hypervisor.Event{}, fmt.Errorf("timeout after %s", timeout)
		}
	}
}

func lifecycle(name string, typ, detail int) func(hypervisor.Event) bool {
	return func(e hypervisor.Event) bool {
		return e.Kind == hypervisor.Lifecycle && e.Domain == name && e.Lifecycle == typ && e.Detail == detail
	}
}

func (r *recorder) mustLifecycle(t *testing.T, from int, name string, typ, detail int, what string) hypervisor.Event {
	t.Helper()
	ev, err := r.waitFor(from, 15*time.Second, lifecycle(name, typ, detail))
	if err != nil {
		t.Fatalf("waiting for %s event (type %d detail %d) of %s: %v; got %v", what, typ, detail, name, err, r.since(from))
	}
	return ev
}

// qemuPID reads the pid of a running guest's qemu process.
func qemuPID(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/var/run/libvirt/qemu/" + name + ".pid")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func libvirtdPID(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/var/run/libvirtd.pid")
	if err != nil {
		t.Fatalf("libvirtd pidfile: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func libvirtdBinary() string {
	if p, err := exec.LookPath("libvirtd"); err == nil {
		return p
	}
	return "/usr/sbin/libvirtd"
}

// startLibvirtd starts libvirtd -d (as scripts/install-libvirt.sh does) and
// waits until it accepts connections.
func startLibvirtd(t *testing.T) {
	t.Helper()
	if tini, err := exec.LookPath("tini"); err == nil && os.Getenv("HASS_LIBVIRTD_SUBREAPER") == "1" {
		// Same as scripts/install-libvirt.sh with HASS_LIBVIRTD_SUBREAPER=1.
		cmd := exec.Command(tini, "-s", "--", libvirtdBinary())
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatalf("tini -s -- libvirtd: %v", err)
		}
		go func() { _ = cmd.Wait() }()
	} else {
		out, err := exec.Command(libvirtdBinary(), "-d").CombinedOutput()
		if err != nil {
			t.Fatalf("libvirtd -d: %v: %s", err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for {
		if err := d.Connect(ctx); err == nil {
			if _, err := d.List(ctx); err == nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("libvirtd did not come back within 60s")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type stats []time.Duration

func (s stats) String() string {
	if len(s) == 0 {
		return "n=0"
	}
	lo, hi, sum := s[0], s[0], time.Duration(0)
	for _, d := range s {
		lo, hi, sum = min(lo, d), max(hi, d), sum+d
	}
	return fmt.Sprintf("n=%d min=%s avg=%s max=%s", len(s), lo.Round(time.Microsecond*100),
		(sum / time.Duration(len(s))).Round(time.Microsecond*100), hi.Round(time.Microsecond*100))
}
