package libvirt

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/hassproject/hass/hypervisor"
)

// TestLibvirtdRestart kills libvirtd (SIGKILL, i.e. a daemon crash), kills
// one guest while the daemon is down, restarts the daemon and checks that
//   - the events channel of a connected driver closes,
//   - hypervisor.Watch reconnects, resubscribes and signals Resync,
//   - List afterwards shows the truth (survivor running, victim shut off),
//   - events flow on the new subscription.
func TestLibvirtdRestart(t *testing.T) {
	requireLibvirt(t)
	ctx := t.Context()
	d := newDriver(t)
	rec := record(d.Events())

	a := defineGuest(t, d)
	b := defineGuest(t, d)
	for _, n := range []string{a, b} {
		m := rec.mark()
		if err := d.Start(ctx, n); err != nil {
			t.Fatal(err)
		}
		rec.mustLifecycle(t, m, n, hypervisor.EventStarted, hypervisor.StartedBooted, "Started/Booted")
	}

	w, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wrec := record(hypervisor.Watch(wctx, w, hypervisor.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second}, testLogger(t)))
	isResync := func(e hypervisor.Event) bool { return e.Kind == hypervisor.Resync }
	if _, err := wrec.waitFor(0, 10*time.Second, isResync); err != nil {
		t.Fatalf("no initial Resync: %v", err)
	}

	// Crash libvirtd. Make sure it is running again whatever happens.
	pid := libvirtdPID(t)
	t.Cleanup(func() {
		if !alive(libvirtdPID(t)) {
			startLibvirtd(t)
		}
	})
	wm := wrec.mark()
	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rec.done:
		t.Logf("events channel closed %s after killing libvirtd", time.Since(t0).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("events channel not closed 10s after libvirtd was killed")
	}
	if !waitGone(pid, 30*time.Second) {
		t.Fatal("libvirtd did not exit")
	}
	if _, err := d.List(ctx); !errors.Is(err, hypervisor.ErrNotConnected) {
		t.Errorf("List while libvirtd is down: %v, want ErrNotConnected", err)
	} else {
		t.Logf("List while down: %v", err)
	}
	if err := d.Connect(ctx); err == nil {
		t.Error("Connect succeeded while libvirtd is down")
	} else {
		t.Logf("Connect while down: %v", err)
	}

	// Guest b dies while nobody watches.
	bpid := qemuPID(t, b)
	if err := syscall.Kill(bpid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(bpid, 10*time.Second) {
		t.Fatal("qemu of b did not exit")
	}
	time.Sleep(1 * time.Second) // let Watch fail a few connect attempts

	t1 := time.Now()
	startLibvirtd(t)
	t.Logf("libvirtd answering %s after restart", time.Since(t1).Round(time.Millisecond))
	ev, err := wrec.waitFor(wm, 30*time.Second, isResync)
	if err != nil {
		t.Fatalf("no Resync after libvirtd restart: %v; got %v", err, wrec.since(wm))
	}
	t.Logf("Resync %s after libvirtd start; watch events while down/restarting: %v", ev.At.Sub(t1).Round(time.Millisecond), wrec.since(wm))

	// Resync => List shows the truth.
	doms, err := w.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]hypervisor.Domain{}
	for _, dom := range doms {
		got[dom.Name] = dom
	}
	t.Logf("after restart: %s state=%s reason=%d; %s state=%s reason=%d",
		a, got[a].State, got[a].Reason, b, got[b].State, got[b].Reason)
	if got[a].State != hypervisor.Running {
		t.Errorf("survivor %s: state %s, want running", a, got[a].State)
	}
	if got[b].State != hypervisor.Shutoff {
		t.Errorf("victim %s: state %s, want shutoff", b, got[b].State)
	}

	// The old driver can reconnect by hand too.
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	rec2 := record(d.Events())
	mustState(t, d, a, hypervisor.Running)

	// Events flow on the new subscriptions.
	wm = wrec.mark()
	if err := w.Destroy(ctx, a); err != nil {
		t.Fatal(err)
	}
	wrec.mustLifecycle(t, wm, a, hypervisor.EventStopped, hypervisor.StoppedDestroyed, "Stopped/Destroyed via Watch")
	rec2.mustLifecycle(t, 0, a, hypervisor.EventStopped, hypervisor.StoppedDestroyed, "Stopped/Destroyed after manual reconnect")
	mustState(t, d, a, hypervisor.Shutoff)
}
