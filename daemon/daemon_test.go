package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/auth"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor"
	"github.com/hassproject/hass/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// These tests run the real daemon (engine, store on a real embedded etcd, API over HTTP)
// against fakeDriver, to test what must survive a restart of hass.

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type running struct {
	t      *testing.T
	cli    *api.Client
	addr   string // the API's address
	cancel context.CancelFunc
	done   chan error
	log    *lockedBuf
	token  string // the admin token the daemon bootstrapped
}

// start runs a daemon on dir (its embedded etcd) with drv until stop or the test's end.
func start(t *testing.T, drv *fakeDriver, dir string, edit func(*Config)) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, cancel: cancel, done: make(chan error, 1), log: &lockedBuf{}}
	ready := make(chan string, 1)
	cfg := Config{HostName: "h1", DataDir: dir, Listen: "127.0.0.1:0", Driver: drv,
		ResyncEvery: time.Second, TickEvery: 20 * time.Millisecond, Engine: engine.DefaultConfig(),
		Logger: slog.New(slog.NewTextHandler(r.log, nil)), Ready: func(a string) { ready <- a }}
	cfg.Engine.BackoffBase = 100 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	go func() { r.done <- Run(ctx, cfg) }()
	select {
	case addr := <-ready:
		path := cfg.AdminTokenFile
		if path == "" {
			path = filepath.Join(cfg.DataDir, AdminTokenFile)
		}
		tok, err := auth.ReadFile(path)
		if err != nil {
			t.Fatalf("the admin token hass bootstrapped: %v", err)
		}
		r.token = tok.String()
		r.cli, r.addr = api.NewClient("http://"+addr, nil).WithToken(r.token), addr
	case err := <-r.done:
		t.Fatalf("daemon did not start: %v\n%s", err, r.log)
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon not ready in 60 s\n%s", r.log)
	}
	// Ready means the API listens; the hypervisor connects just after. Tests start once it
	// has (a request before that is refused as unavailable, which a test does not mean).
	eventually(t, 30*time.Second, "the hypervisor connected", func() (bool, string) {
		st, err := r.cli.Status(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return st.Libvirt == "connected", st.Libvirt
	})
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", r.log)
		}
	})
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		r.t.Fatal("daemon did not stop in 30 s")
	}
}

func eventually(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	end := time.Now().Add(limit)
	var last string
	for time.Now().Before(end) {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last: %s)", limit, what, last)
}

func (r *running) events(vm string) []api.Event {
	r.t.Helper()
	evs, err := r.cli.Events(context.Background(), 0, 1000)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []api.Event
	for _, e := range evs {
		if e.VM == vm || vm == "" {
			out = append(out, e)
		}
	}
	return out
}

func (r *running) vm(name string) api.VM {
	r.t.Helper()
	v, err := r.cli.VM(context.Background(), name)
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

func hasEvent(evs []api.Event, typ, msgPart string) bool {
	for _, e := range evs {
		if e.Type == typ && strings.Contains(e.Msg, msgPart) {
			return true
		}
	}
	return false
}

// A graceful shutdown in flight survives a restart of hass with its deadline: the guest
// ignores ACPI, hass dies before the deadline, and the new hass escalates to a destroy
// instead of reading the still-running guest as a user's start. IDs keep growing.
func TestShutdownInFlightSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	drv := newFakeDriver()
	drv.add("vm1", true)
	shortShutdown := func(c *Config) { c.Engine.ShutdownTimeout = 3 * time.Second }
	r := start(t, drv, dir, shortShutdown)
	ctx := context.Background()
	if _, err := r.cli.Protect(ctx, "vm1", api.ProtectRequest{}); err != nil {
		t.Fatal(err)
	}
	op1, err := r.cli.Operate(ctx, "vm1", api.OperationRequest{Op: "shutdown"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the shutdown request", func() (bool, string) {
		return drv.callsOf("shutdown vm1") == 1, fmt.Sprint(drv.calls)
	})
	r.stop() // before the 3 s deadline

	r = start(t, drv, dir, shortShutdown)
	eventually(t, 20*time.Second, "the escalation to destroy", func() (bool, string) {
		return drv.callsOf("destroy vm1") >= 1 && drv.state("vm1") == hypervisor.Shutoff, fmt.Sprint(drv.calls)
	})
	eventually(t, 10*time.Second, "vm1 stopped, as the user asked", func() (bool, string) {
		v := r.vm("vm1")
		return v.Desired == "stopped" && v.Observed == "shutoff" && v.State == "healthy", fmt.Sprintf("%+v", v)
	})
	evs := r.events("vm1")
	if hasEvent(evs, "op", "start inferred") {
		t.Fatalf("the restart read the running guest as a user's start:\n%v", evs)
	}
	if drv.callsOf("start vm1") != 0 {
		t.Fatalf("hass started vm1: %v", drv.calls)
	}
	op2, err := r.cli.Operate(ctx, "vm1", api.OperationRequest{Op: "start"})
	if err != nil {
		t.Fatal(err)
	}
	if op2.ID <= op1.ID {
		t.Fatalf("operation ids repeat across restarts: %d before, %d after", op1.ID, op2.ID)
	}
}

// A stop whose action was recorded but whose hass died before carrying it out is carried
// out by the next hass.
func TestUnansweredStopIsIssuedAgainAfterRestart(t *testing.T) {
	dir := t.TempDir()
	r, drv := startProtected(t, dir)
	ctx := context.Background()
	drv.setDown(true) // the destroy cannot be carried out
	if _, err := r.cli.Operate(ctx, "vm1", api.OperationRequest{Op: "stop"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	r.stop()
	drv.setDown(false)
	r = start(t, drv, dir, nil)
	eventually(t, 20*time.Second, "the stop carried out", func() (bool, string) {
		return drv.state("vm1") == hypervisor.Shutoff, fmt.Sprint(drv.calls)
	})
	eventually(t, 10*time.Second, "vm1 stopped", func() (bool, string) {
		v := r.vm("vm1")
		return v.Desired == "stopped" && v.State == "healthy", fmt.Sprintf("%+v", v)
	})
}

// startProtected runs a daemon on dir with one running domain, vm1, protected.
func startProtected(t *testing.T, dir string) (*running, *fakeDriver) {
	t.Helper()
	drv := newFakeDriver()
	drv.add("vm1", true)
	r := start(t, drv, dir, nil)
	if _, err := r.cli.Protect(context.Background(), "vm1", api.ProtectRequest{}); err != nil {
		t.Fatal(err)
	}
	return r, drv
}

// crashGated runs a daemon on dir protecting vm1, then crashes vm1 with the fake driver's
// Start held at a gate (closing it lets the restart through).
func crashGated(t *testing.T, dir string) (*running, *fakeDriver, chan struct{}) {
	t.Helper()
	r, drv := startProtected(t, dir)
	gate := make(chan struct{})
	drv.mu.Lock()
	drv.startGate = gate
	drv.mu.Unlock()
	drv.crash("vm1")
	return r, drv, gate
}

// hass killed between issuing a restart and seeing the VM run again: the next hass still
// logs the recovery, with its fault time.
func TestRecoveryAcrossRestartIsLogged(t *testing.T) {
	dir := t.TempDir()
	r, drv, gate := crashGated(t, dir)
	eventually(t, 10*time.Second, "the restart issued", func() (bool, string) {
		evs := r.events("vm1")
		return hasEvent(evs, "action", "start vm1"), fmt.Sprint(evs)
	})
	r.stop() // the start never returns to this hass
	// libvirt finished the start on its own.
	drv.mu.Lock()
	drv.startGate = nil
	drv.doms["vm1"].state, drv.doms["vm1"].reason = hypervisor.Running, hypervisor.RunningBooted
	drv.mu.Unlock()
	close(gate)

	r = start(t, drv, dir, nil)
	eventually(t, 20*time.Second, "the recovered event", func() (bool, string) {
		for _, e := range r.events("vm1") {
			if e.Type == "recovered" && e.FaultAt != nil && e.RecoveredAt != nil && e.RecoveredAt.After(*e.FaultAt) {
				return true, ""
			}
		}
		return false, fmt.Sprint(r.events("vm1"))
	})
	if n := drv.callsOf("start vm1"); n != 0 {
		t.Fatalf("the running vm was started again: %v", drv.calls)
	}
}

// While libvirt cannot be reached, nothing is shown healthy without evidence.
func TestUnknownWhileLibvirtIsDown(t *testing.T) {
	r, drv := startProtected(t, t.TempDir())
	ctx := context.Background()
	if v := r.vm("vm1"); v.State != "healthy" {
		t.Fatalf("vm1 is %q, want healthy", v.State)
	}
	drv.setDown(true)
	eventually(t, 10*time.Second, "vm1 unknown", func() (bool, string) {
		s, err := r.cli.Status(ctx)
		if err != nil {
			return false, err.Error()
		}
		v := r.vm("vm1")
		return v.State == "unknown" && s.Healthy == 0 && s.Unknown == 1, fmt.Sprintf("%+v %+v", v, s)
	})
	drv.setDown(false)
	eventually(t, 20*time.Second, "vm1 healthy again", func() (bool, string) {
		v := r.vm("vm1")
		return v.State == "healthy", fmt.Sprintf("%+v", v)
	})
}

// With --protect-all a domain is protected the moment libvirt reports it started, not at
// the next resync: a crash a moment later is recovered.
func TestProtectAllOnStartEvent(t *testing.T) {
	drv := newFakeDriver()
	r := start(t, drv, t.TempDir(), func(c *Config) { c.ProtectAll, c.ResyncEvery = true, time.Hour })
	time.Sleep(100 * time.Millisecond)
	drv.mu.Lock()
	drv.doms["demo1"] = &fakeDom{state: hypervisor.Shutoff}
	drv.emit("demo1", hypervisor.EventDefined, hypervisor.DefinedAdded)
	drv.doms["demo1"].state, drv.doms["demo1"].reason = hypervisor.Running, hypervisor.RunningBooted
	drv.emit("demo1", hypervisor.EventStarted, hypervisor.StartedBooted)
	drv.mu.Unlock()
	eventually(t, 5*time.Second, "demo1 protected as running", func() (bool, string) {
		v, err := r.cli.VM(context.Background(), "demo1")
		return err == nil && v.Desired == "running", fmt.Sprintf("%+v %v", v, err)
	})
	drv.crash("demo1")
	eventually(t, 10*time.Second, "demo1 restarted", func() (bool, string) {
		return drv.state("demo1") == hypervisor.Running && drv.callsOf("start demo1") == 1, fmt.Sprint(drv.calls)
	})
	var nf *api.Error
	if _, err := r.cli.VM(context.Background(), "nope"); !errors.As(err, &nf) {
		t.Fatalf("unknown vm: %v", err)
	}
}

// A protect racing with an unprotect never leaves a VM protected without evidence: if it
// ends protected, its state is what libvirt reported, not unknown.
func TestProtectUnprotectRace(t *testing.T) {
	drv := newFakeDriver()
	drv.add("vm1", true)
	r := start(t, drv, t.TempDir(), func(c *Config) { c.ResyncEvery = time.Hour })
	ctx := context.Background()
	if _, err := r.cli.Protect(ctx, "vm1", api.ProtectRequest{}); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = r.cli.Unprotect(ctx, "vm1") }()
		go func() { defer wg.Done(); _, _ = r.cli.Protect(ctx, "vm1", api.ProtectRequest{}) }()
		wg.Wait()
		v, err := r.cli.VM(ctx, "vm1")
		if err != nil {
			if _, err := r.cli.Protect(ctx, "vm1", api.ProtectRequest{}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if v.Observed != "running" || v.State != "healthy" {
			t.Fatalf("round %d: protected with observed %q, state %q", i, v.Observed, v.State)
		}
	}
}

// One damaged record never unprotects the other VMs: it is reported, and the rest load.
func TestBadRecordLeavesTheOthersProtected(t *testing.T) {
	dir := t.TempDir()
	drv := newFakeDriver()
	drv.add("vm1", true)
	drv.add("vm2", true)
	r := start(t, drv, dir, nil)
	ctx := context.Background()
	for _, n := range []string{"vm1", "vm2"} {
		if _, err := r.cli.Protect(ctx, n, api.ProtectRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	r.stop()

	// Somebody writes a malformed record for vm2 straight into etcd.
	st, err := store.OpenEmbedded(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: st.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/hass/v1/vms/vm2", `{"name":"vm2","host":"h1","desired":"running","policy":{"window":"forever"}}`); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	st.Close()

	r = start(t, drv, dir, nil)
	if v := r.vm("vm1"); v.Desired != "running" {
		t.Fatalf("vm1 after the restart: %+v", v)
	}
	if _, err := r.cli.VM(ctx, "vm2"); err == nil {
		t.Fatal("vm2 protected from an unreadable record")
	}
	evs := r.events("vm2")
	if !hasEvent(evs, "alert", "stored record unreadable") || !hasEvent(evs, "alert", "policy.window") {
		t.Fatalf("no alert naming the bad field: %+v", evs)
	}
	drv.crash("vm1")
	eventually(t, 10*time.Second, "vm1 still protected: restarted", func() (bool, string) {
		return drv.state("vm1") == hypervisor.Running, fmt.Sprint(drv.calls)
	})
	// Protecting vm2 again writes a good record over the bad one.
	if _, err := r.cli.Protect(ctx, "vm2", api.ProtectRequest{}); err != nil {
		t.Fatal(err)
	}
}

// A recovery's action time is when the agent asked the hypervisor to start the VM (it
// reports that moment), not when the controller decided: the figures measure the path to
// the libvirt call.
func TestRecoveredActionTimeIsTheCall(t *testing.T) {
	r, drv, gate := crashGated(t, t.TempDir())
	eventually(t, 10*time.Second, "the restart call", func() (bool, string) { return len(drv.startCalls()) > 0, "" })
	called := drv.startCalls()[0]
	time.Sleep(300 * time.Millisecond) // the call waits at the gate
	close(gate)
	var rec api.Event
	eventually(t, 10*time.Second, "the recovered event", func() (bool, string) {
		for _, e := range r.events("vm1") {
			if e.Type == "recovered" {
				rec = e
				return true, ""
			}
		}
		return false, ""
	})
	if rec.ActionAt == nil || rec.DetectAt == nil || rec.ActionAt.After(called) || called.Sub(*rec.ActionAt) > 50*time.Millisecond {
		t.Errorf("action at %v, detected at %v: the start call was made at %v", rec.ActionAt, rec.DetectAt, called)
	}
}

// An order whose fencing token is not current is never carried out: one given in an earlier
// leader's term, and one for an older intent generation. (Agents read the token from the
// store; a deposed leader cannot write orders at all: store.TestGuardedRecord.)
func TestStaleOrdersAreDropped(t *testing.T) {
	dir := t.TempDir()
	r, drv := startProtected(t, dir)
	ctx := context.Background()
	st, err := store.Connect(ctx, []string{"unix://" + dir + "/client.sock"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := st.VM(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	_, term, err := st.Leader(ctx)
	if err != nil || term == 0 {
		t.Fatalf("leader term %d: %v", term, err)
	}
	for i, a := range []store.Action{
		{ID: 900001, Kind: "destroy", VM: "vm1", Host: "h1", Gen: rec.Gen, Term: term - 1, Why: "a deposed leader's"},
		{ID: 900002, Kind: "destroy", VM: "vm1", Host: "h1", Gen: rec.Gen - 1, Term: term, Why: "an older intent's"},
	} {
		if err := st.PutAction(ctx, a); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the order dropped", func() (bool, string) {
			orders, _, err := st.Orders(ctx, "h1")
			return err == nil && len(orders) == 0, fmt.Sprint(orders, err)
		})
		if n := drv.callsOf("destroy"); n != 0 || drv.state("vm1") != hypervisor.Running {
			t.Fatalf("order %d (%s) was carried out: %d destroys, vm1 %v", i, a.Why, n, drv.state("vm1"))
		}
	}
	if !strings.Contains(r.log.String(), "dropped: overtaken by a newer intent") {
		t.Errorf("the agent did not say why it dropped them:\n%s", r.log)
	}
}
