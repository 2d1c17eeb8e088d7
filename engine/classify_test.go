package engine

import (
	"strings"
	"testing"
	"time"
)

const ms1 = time.Millisecond

func wantCurrent(k ActKind, vm VMID, want bool) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		a, ok := h.lastAct(k, vm)
		if !ok {
			t.Fatalf("no %s action issued", k)
		}
		if got := h.e.Current(a); got != want {
			t.Fatalf("Current(%s) = %t, want %t", a, got, want)
		}
	}
}

func wantFailure(k FailureKind) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		s := h.status("v1")
		if s.State != "recovering" || s.Failure != k {
			t.Fatalf("state %s failure %q, want recovering from %q", s.State, s.Failure, k)
		}
	}
}

func wantRecovered(k FailureKind) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		for _, r := range h.last.Log {
			if r.Type == RecRecovered {
				if r.Kind != k {
					t.Fatalf("recovered kind %q, want %q", r.Kind, k)
				}
				if r.RecoveredAt.Before(r.DetectAt) || r.DetectAt.Before(r.FaultAt) {
					t.Fatalf("recovered record times out of order: %+v", r)
				}
				return
			}
		}
		t.Fatalf("no recovered record in:\n%s", logText(h.last.Log))
	}
}

func wantWake(at time.Duration) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		if got, want := h.e.NextWake(), t0.Add(at); !got.Equal(want) {
			t.Fatalf("NextWake %s, want +%s", got.Sub(t0), at)
		}
	}
}

func wantNotRecovering(t *testing.T, h *harness) {
	t.Helper()
	if s := h.status("v1"); s.State == "recovering" || s.State == "error" || s.Failure != "" {
		t.Fatalf("state %s failure %q, want no recovery", s.State, s.Failure)
	}
}

func wantHostState(host HostID, s string) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		if got := h.e.HostState(host); got != s {
			t.Fatalf("HostState(%s) = %q, want %q", host, got, s)
		}
	}
}

func wantLogMsg(sub string) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		for _, r := range h.last.Log {
			if strings.Contains(r.Msg, sub) {
				return
			}
		}
		t.Fatalf("no log record mentions %q:\n%s", sub, logText(h.last.Log))
	}
}

func wantTarget(target HostID) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		if len(h.last.Actions) != 1 || h.last.Actions[0].Target != target {
			t.Fatalf("actions %v, want one with target %s", h.last.Actions, target)
		}
	}
}

// cluster3 is h1 (4 GiB), h2 (too small for v1) and h3 (2 GiB), h1 fenced by IPMI when
// fencing is set, v1 (1 GiB) running on h1.
func cluster3(fencing bool) []ev {
	return []ev{
		{in: AddHost{Host: "h1", MemMiB: 4096, Fencing: fencing}},
		{in: AddHost{Host: "h2", MemMiB: 512}},
		{in: AddHost{Host: "h3", MemMiB: 2048}},
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: DefaultPolicy()}},
		{in: obs(1, DomRunning, ReasonBooted)},
	}
}

func TestClassify(t *testing.T) {
	s := time.Second
	def := DefaultPolicy()
	restartGuest := policy(func(p *Policy) { p.OnGuestShutdown = GuestShutdownRestart })
	tests := []struct {
		name  string
		naive bool
		steps []ev
	}{
		{name: "kill -9 restarts on home", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1"), recs: recs(RecDetect, RecAction),
				check: wantFailure(FailVMCrash)},
			{at: 11 * s, in: result{kind: ActStart}, recs: recs(RecRecovered),
				check: all(wantState("healthy"), wantRecovered(FailVMCrash), wantDesired(WantRunning))},
		})},
		{name: "guest panic restarts", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomCrashed, ReasonPanicked), acts: acts("start@h1"), check: wantFailure(FailGuestPanic)},
		})},
		{name: "virsh destroy is a stop; a later virsh start protects again", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonDestroyed), recs: recs(RecOp), nrecs: recs(RecDetect),
				check: all(wantDesired(WantStopped), wantState("healthy"))},
			{at: 5 * time.Minute, in: Tick{}},
			{at: 6 * time.Minute, in: obs(3, DomRunning, ReasonBooted), recs: recs(RecOp), check: wantDesired(WantRunning)},
			{at: 7 * time.Minute, in: obs(4, DomShutoff, ReasonFailed), acts: acts("start@h1"), recs: recs(RecDetect)},
		})},
		{name: "api stop destroys and never restarts", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1"), recs: recs(RecOp),
				check: all(wantDesired(WantStopped), wantState("operation"))},
			{at: 11 * s, in: result{kind: ActDestroy, seq: 2, state: DomShutoff, reason: ReasonDestroyed},
				recs: recs(RecOp), nrecs: recs(RecDetect), check: wantState("healthy")},
			{at: 20 * s, in: Snapshot{Host: "h1", Seq: 3, Domains: []DomainStatus{{VM: "v1", State: DomShutoff, Reason: ReasonDestroyed}}},
				nrecs: recs(RecDetect)},
			{at: 30 * time.Minute, in: Tick{}, check: wantDesired(WantStopped)},
		})},
		{name: "naive detector restarts a vm the user stopped", naive: true, steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
			{at: 11 * s, in: obs(2, DomShutoff, ReasonDestroyed), acts: acts("start@h1"), recs: recs(RecDetect),
				check: wantFailure(FailVMDown)},
		})},
		{name: "operation-aware detector leaves the same stop alone", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
			{at: 11 * s, in: obs(2, DomShutoff, ReasonDestroyed), nrecs: recs(RecDetect), check: wantState("healthy")},
		})},
		{name: "guest shutdown honoured", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonShutdownGuest), recs: recs(RecOp), nrecs: recs(RecDetect, RecAlert),
				check: wantDesired(WantStopped)},
			{at: 30 * time.Minute, in: Tick{}},
		})},
		{name: "guest shutdown with policy restart is a failure", steps: cat(std(restartGuest), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonShutdownGuest), acts: acts("start@h1"), recs: recs(RecDetect),
				check: all(wantFailure(FailGuestShutdown), wantDesired(WantRunning))},
		})},
		{name: "host-requested shutdown is a stop", steps: cat(std(restartGuest), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonShutdownHost), recs: recs(RecOp), nrecs: recs(RecDetect),
				check: wantDesired(WantStopped)},
		})},
		{name: "shutdown of unknown initiator with policy restart alerts and does not restart", steps: cat(std(restartGuest), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonShutdown), recs: recs(RecAlert, RecOp), nrecs: recs(RecDetect),
				check: wantDesired(WantStopped)},
			{at: 30 * time.Minute, in: Tick{}},
		})},
		{name: "shutdown of unknown initiator with policy honour: no alert", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonShutdown), recs: recs(RecOp), nrecs: recs(RecDetect, RecAlert),
				check: wantDesired(WantStopped)},
		})},
		{name: "undefine forgets the vm", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomAbsent, ReasonUndefined), recs: recs(RecForget), nrecs: recs(RecDetect),
				check: wantProtected(false)},
			{at: 11 * s, in: obs(3, DomShutoff, ReasonFailed), check: wantProtected(false)},
		})},
		{name: "vanished without undefine: forgotten after the grace", steps: cat(std(def), []ev{
			{at: 10 * s, in: Snapshot{Host: "h1", Seq: 2}, recs: recs(RecExpected), check: wantWake(100 * s)},
			{at: 99 * s, in: Tick{}, check: wantProtected(true)},
			{at: 100 * s, in: Tick{}, recs: recs(RecAlert, RecForget), check: wantProtected(false)},
		})},
		{name: "reboot: down then up is no failure", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpReboot), acts: acts("reboot@h1"), recs: recs(RecOp)},
			{at: 11 * s, in: obs(2, DomShutoff, ReasonOwnStop), nrecs: recs(RecDetect),
				check: all(wantState("operation"), wantDesired(WantRunning))},
			{at: 13 * s, in: obs(3, DomRunning, ReasonBooted), recs: recs(RecOp), nrecs: recs(RecDetect),
				check: all(wantState("healthy"), wantDesired(WantRunning))},
			{at: 30 * time.Minute, in: Tick{}},
		})},
		{name: "reboot deadline passes with the vm down: failure and start", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpReboot), acts: acts("reboot@h1"), check: wantWake(130 * s)},
			{at: 11 * s, in: obs(2, DomShutoff, ReasonOwnStop), nrecs: recs(RecDetect)},
			{at: 130*s - ms1, in: Tick{}},
			{at: 130 * s, in: Tick{}, acts: acts("start@h1"), recs: recs(RecOp, RecDetect), check: wantFailure(FailOperation)},
		})},
		{name: "virsh destroy during a reboot is the user's stop, not the reboot's", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpReboot), acts: acts("reboot@h1")},
			{at: 11 * s, in: obs(2, DomShutoff, ReasonDestroyed), recs: recs(RecOp), nrecs: recs(RecDetect),
				check: wantDesired(WantStopped)},
			{at: 30 * time.Minute, in: Tick{}, nrecs: recs(RecDetect)},
		})},
		{name: "crash during a reboot is a failure", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpReboot), acts: acts("reboot@h1")},
			{at: 11 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1"), recs: recs(RecOp, RecDetect),
				check: wantFailure(FailVMCrash)},
		})},
		{name: "live migration moves home; the source's shutoff/migrated is no failure", steps: cat(std(def), []ev{
			{at: 10 * s, in: Request{Op: OpMigrate, VM: "v1", Target: "h2"}, acts: acts("migrate@h1"), check: wantTarget("h2")},
			{at: 14 * s, in: result{kind: ActMigrate}, recs: recs(RecExpected), check: all(wantHome("h2"), wantState("healthy"))},
			{at: 14*s + 10*ms1, in: obs(2, DomShutoff, ReasonMigrated), nrecs: recs(RecDetect, RecOp),
				check: all(wantHome("h2"), wantDesired(WantRunning))},
			{at: 14*s + 20*ms1, in: obsAt("h2", 1, DomRunning, ReasonMigrated), check: wantHome("h2")},
			{at: 20 * s, in: obsAt("h2", 2, DomShutoff, ReasonFailed), acts: acts("start@h2"), recs: recs(RecDetect)},
		})},
		{name: "migration with no target picks the other host", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpMigrate), acts: acts("migrate@h1"), check: wantTarget("h2")},
		})},
		{name: "failed migration: stays protected at the source", steps: cat(std(def), []ev{
			{at: 10 * s, in: Request{Op: OpMigrate, VM: "v1", Target: "h2"}, acts: acts("migrate@h1")},
			{at: 14 * s, in: result{kind: ActMigrate, err: "migration failed"}, recs: recs(RecOp), nrecs: recs(RecDetect),
				check: all(wantHome("h1"), wantState("healthy"), wantDesired(WantRunning))},
			{at: 20 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1"), recs: recs(RecDetect)},
		})},
		{name: "crash mid-migration restarts at the source", steps: cat(std(def), []ev{
			{at: 10 * s, in: Request{Op: OpMigrate, VM: "v1", Target: "h2"}, acts: acts("migrate@h1")},
			{at: 12 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1"), recs: recs(RecOp, RecDetect),
				check: wantHome("h1")},
			// The migration's late answer must not move the vm.
			{at: 14 * s, in: result{kind: ActMigrate}, check: wantHome("h1")},
		})},
		{name: "stale observation is dropped", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(5, DomRunning, ReasonResumed)},
			{at: 11 * s, in: obs(3, DomShutoff, ReasonFailed), recs: recs(RecStale), nrecs: recs(RecDetect),
				check: all(wantState("healthy"), wantDesired(WantRunning))},
			{at: 12 * s, in: Signal{Host: "h1", VM: "v1", Seq: 4, Kind: SigWatchdog, Watchdog: WatchdogNone},
				recs: recs(RecStale), nrecs: recs(RecDetect)},
		})},
		{name: "out of order: virsh destroy+start delivered start first", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(4, DomRunning, ReasonBooted), nrecs: recs(RecOp)},
			{at: 11 * s, in: obs(3, DomShutoff, ReasonDestroyed), recs: recs(RecStale), nrecs: recs(RecOp),
				check: wantDesired(WantRunning)},
			{at: 20 * s, in: obs(5, DomShutoff, ReasonFailed), acts: acts("start@h1")},
		})},
		{name: "out of order: an old running event after an api stop", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
			{at: 11 * s, in: obs(3, DomShutoff, ReasonDestroyed)},
			{at: 12 * s, in: obs(2, DomRunning, ReasonBooted), recs: recs(RecStale), check: wantDesired(WantStopped)},
			{at: 13 * s, in: Snapshot{Host: "h1", Seq: 4, Domains: []DomainStatus{{VM: "v1", State: DomShutoff}}},
				nrecs: recs(RecDetect, RecOp), check: wantDesired(WantStopped)},
			{at: 30 * time.Minute, in: Tick{}, check: wantDesired(WantStopped)},
		})},
		{name: "backoff delays the second restart in the window", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
			{at: 11 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
			{at: 20 * s, in: obs(3, DomShutoff, ReasonFailed), recs: recs(RecDetect), check: wantWake(25 * s)},
			{at: 25*s - ms1, in: Tick{}},
			{at: 25 * s, in: Tick{}, acts: acts("start@h1")},
			{at: 26 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
			// the third restart waits twice as long
			{at: 30 * s, in: obs(4, DomShutoff, ReasonFailed), check: wantWake(40 * s)},
			{at: 40*s - ms1, in: Tick{}},
			{at: 40 * s, in: Tick{}, acts: acts("start@h1"), check: func(t *testing.T, h *harness) {
				if n := h.status("v1").Restarts; n != 3 {
					t.Fatalf("restarts %d, want 3", n)
				}
			}},
		})},
		{name: "max restarts spent: gave up, no more starts until the user starts it",
			steps: cat(std(policy(func(p *Policy) { p.MaxRestarts, p.MaxRelocations = 2, 0 })), []ev{
				{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
				{at: 11 * s, in: result{kind: ActStart}},
				{at: 20 * s, in: obs(3, DomShutoff, ReasonFailed)},
				{at: 25 * s, in: Tick{}, acts: acts("start@h1")},
				{at: 26 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
				{at: 40 * s, in: obs(4, DomShutoff, ReasonFailed), recs: recs(RecDetect)},
				{at: 50 * s, in: Tick{}, recs: recs(RecGaveUp), nrecs: recs(RecAction), check: wantState("error")},
				{at: 60 * s, in: obs(5, DomShutoff, ReasonCrashed), nrecs: recs(RecDetect)},
				{at: 30 * time.Minute, in: Tick{}, check: wantState("error")},
				{at: 31 * time.Minute, in: req(OpStart), acts: acts("start@h1"), check: wantState("operation")},
			})},
		{name: "max restarts spent: relocation to the other host",
			steps: cat(std(policy(func(p *Policy) { p.MaxRestarts, p.MaxRelocations = 1, 1 })), []ev{
				{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
				{at: 11 * s, in: result{kind: ActStart}},
				{at: 20 * s, in: obs(3, DomShutoff, ReasonFailed)},
				{at: 25 * s, in: Tick{}, acts: acts("start@h2"), recs: recs(RecOp), check: wantHome("h2")},
				{at: 26 * s, in: result{kind: ActStart}, recs: recs(RecRecovered), check: func(t *testing.T, h *harness) {
					if n := h.status("v1").Relocations; n != 1 {
						t.Fatalf("relocations %d, want 1", n)
					}
				}},
			})},
		{name: "host lease lost: wait for the self-fence margin, then place where memory allows", steps: cat(cluster3(false), []ev{
			{at: 10 * s, in: HostLease{Host: "h1"}, recs: recs(RecHost), check: all(wantHostState("h1", "suspect"), wantWake(12*s))},
			// what a suspect host says about its vms is not acted on
			{at: 11 * s, in: obs(2, DomShutoff, ReasonFailed), nrecs: recs(RecDetect)},
			{at: 12*s - ms1, in: Tick{}, check: wantHostState("h1", "suspect")},
			{at: 12 * s, in: Tick{}, acts: acts("start@h3"), recs: recs(RecHost, RecDetect),
				check: all(wantHostState("h1", "fenced"), wantHome("h3"), wantFailure(FailHostDown))},
			{at: 13 * s, in: result{kind: ActStart}, recs: recs(RecRecovered), check: wantRecovered(FailHostDown)},
		})},
		{name: "host lease renewed before the margin: nothing happens", steps: cat(cluster3(false), []ev{
			{at: 10 * s, in: HostLease{Host: "h1"}},
			{at: 11 * s, in: HostLease{Host: "h1", Alive: true}, recs: recs(RecHost), check: wantHostState("h1", "up")},
			{at: 30 * s, in: Tick{}, check: all(wantHome("h1"), wantState("healthy"))},
		})},
		{name: "host with a fence: fence first, relocate as soon as it is confirmed", steps: cat(cluster3(true), []ev{
			{at: 10 * s, in: HostLease{Host: "h1"}, acts: acts("fence@h1"), check: wantCurrent(ActFence, "", true)},
			{at: 10*s + 500*ms1, in: FenceResult{Host: "h1", OK: true}, acts: acts("start@h3"), recs: recs(RecHost, RecDetect),
				check: all(wantCurrent(ActFence, "", false), wantHome("h3"))},
		})},
		{name: "fence failed: fall back to the self-fence margin", steps: cat(cluster3(true), []ev{
			{at: 10 * s, in: HostLease{Host: "h1"}, acts: acts("fence@h1")},
			{at: 11 * s, in: FenceResult{Host: "h1", Err: "bmc timeout"}, recs: recs(RecAlert)},
			{at: 12 * s, in: Tick{}, acts: acts("start@h3")},
		})},
		{name: "a recovery start overtaken by a user stop is no longer current", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1"), check: wantCurrent(ActStart, "v1", true)},
			{at: 10*s + 5*ms1, in: req(OpStop), acts: acts("destroy@h1"),
				check: all(wantCurrent(ActStart, "v1", false), wantCurrent(ActDestroy, "v1", true), wantDesired(WantStopped))},
		})},
		{name: "api stop while a recovery start is in flight cancels the recovery", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
			{at: 10*s + 5*ms1, in: req(OpStop), acts: acts("destroy@h1"), recs: recs(RecOp),
				check: all(wantLogMsg("cancelled"), wantNotRecovering)},
			// the start's timeout and any backoff pass: nothing is retried
			{at: 2 * time.Minute, in: Tick{}, check: wantDesired(WantStopped)},
			{at: 30 * time.Minute, in: Tick{}},
		})},
		{name: "shutdown ignored by the guest is escalated to destroy", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpShutdown), acts: acts("shutdown@h1"), check: wantWake(130 * s)},
			{at: 130*s - ms1, in: Tick{}},
			{at: 130 * s, in: Tick{}, acts: acts("destroy@h1"), recs: recs(RecOp)},
			{at: 131 * s, in: obs(2, DomShutoff, ReasonDestroyed), recs: recs(RecOp), nrecs: recs(RecDetect),
				check: all(wantState("healthy"), wantDesired(WantStopped))},
		})},
		{name: "watchdog with no action is a hang: reset", steps: cat(std(def), []ev{
			{at: 10 * s, in: Signal{Host: "h1", VM: "v1", Seq: 2, Kind: SigWatchdog, Watchdog: WatchdogNone},
				acts: acts("reset@h1"), recs: recs(RecDetect), check: wantFailure(FailGuestHang)},
			{at: 11 * s, in: result{kind: ActReset}, recs: recs(RecRecovered), check: wantState("healthy")},
		})},
		{name: "paused on an I/O error: no restart; resume by the user ends it", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomPaused, ReasonIOError), recs: recs(RecDetect), check: wantFailure(FailIOError)},
			{at: 30 * time.Minute, in: Tick{}},
			{at: 31 * time.Minute, in: req(OpResume), acts: acts("resume@h1")},
			{at: 31*time.Minute + s, in: obs(3, DomRunning, ReasonResumed), recs: recs(RecRecovered), check: wantState("healthy")},
		})},
		{name: "watchdog signal racing an api stop does not restart the stopped vm",
			steps: cat(std(def), []ev{
				{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
				{at: 10*s + 10*ms1, in: Signal{Host: "h1", VM: "v1", Seq: 2, Kind: SigWatchdog, Watchdog: WatchdogNone}},
				{at: 10*s + 20*ms1, in: result{kind: ActDestroy, seq: 3, state: DomShutoff, reason: ReasonDestroyed},
					check: wantDesired(WantStopped)},
				{at: 30 * time.Minute, in: Tick{}, check: wantDesired(WantStopped)},
			})},
		{name: "a watchdog-paused vm stopped by the user is not reset or restarted",
			steps: cat(std(def), []ev{
				{at: 10 * s, in: obs(2, DomPaused, ReasonWatchdog), acts: acts("reset@h1"), check: wantFailure(FailGuestHang)},
				{at: 12 * s, in: req(OpStop), acts: acts("destroy@h1"), check: all(wantNotRecovering, wantDesired(WantStopped))},
				{at: 72 * s, in: Tick{}, any: true, nacts: []ActKind{ActReset, ActStart}, nrecs: recs(RecDetect),
					check: wantNotRecovering},
				{at: 80 * s, in: Snapshot{Host: "h1", Seq: 5, Domains: []DomainStatus{{VM: "v1", State: DomShutoff, Reason: ReasonDestroyed}}},
					nrecs: recs(RecDetect)},
				{at: 30 * time.Minute, in: Tick{}, any: true, nacts: []ActKind{ActReset, ActStart}},
			})},
		{name: "failed migration after the destination reported its incoming copy",
			steps: cat(std(def), []ev{
				{at: 10 * s, in: Request{Op: OpMigrate, VM: "v1", Target: "h2"}, acts: acts("migrate@h1")},
				{at: 10*s + 100*ms1, in: obsAt("h2", 1, DomRunning, ReasonMigrated)},
				{at: 14 * s, in: result{kind: ActMigrate, err: "migration failed: connection reset"}},
				{at: 14*s + 10*ms1, in: obsAt("h2", 2, DomShutoff, ReasonFailed), nrecs: recs(RecDetect),
					check: wantHome("h1")},
				{at: 20 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
			})},
		{name: "a nova migration accepted during an api stop does not restart the stopped vm",
			steps: cat(std(def), []ev{
				{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
				{at: 10*s + 5*ms1, in: Request{Op: OpMigrate, VM: "v1", Target: "h2", Source: SrcOpenStack}},
				{at: 11 * s, in: obs(2, DomShutoff, ReasonDestroyed), check: wantDesired(WantStopped)},
				{at: 10*s + 5*ms1 + 300*s, in: Tick{}, nrecs: recs(RecDetect), check: wantDesired(WantStopped)},
			})},
		{name: "a nova migration that expires with the vm paused is no failure",
			steps: cat(std(def), []ev{
				{at: 10 * s, in: Request{Op: OpMigrate, VM: "v1", Source: SrcOpenStack}},
				{at: 11 * s, in: obs(2, DomPaused, ReasonUser)},
				{at: 310 * s, in: Tick{}, any: true, nacts: []ActKind{ActStart}, nrecs: recs(RecDetect, RecRecovered)},
			})},
		{name: "a request with an unknown operation is refused",
			steps: cat(std(def), []ev{
				{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
				{at: 11 * s, in: obs(2, DomShutoff, ReasonDestroyed)},
				{at: 12 * s, in: req(OpKind(42)), err: "op(42)", check: wantDesired(WantStopped)},
			})},
		{name: "a user start while a recovery start is in flight keeps that start current",
			steps: cat(std(def), []ev{
				{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
				{at: 10*s + 5*ms1, in: req(OpStart), check: wantCurrent(ActStart, "v1", true)},
			})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.PowerFenceDelay = 0 // the power fence's mechanics: ordered at the expiry (see TestPowerFenceWaits)
			cfg.Naive = tc.naive
			newHarness(t, cfg).run(tc.steps)
		})
	}
}

// TestNextWakeIOError: a vm paused on an I/O error waits for the user; the engine must not
// ask to be woken in the past for it.
func TestNextWakeIOError(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.run(cat(std(DefaultPolicy()), []ev{
		{at: 10 * time.Second, in: obs(2, DomPaused, ReasonIOError), recs: recs(RecDetect)},
		{at: 20 * time.Second, in: Tick{}},
	}))
	if w := h.e.NextWake(); !w.IsZero() && !w.After(t0.Add(20*time.Second)) {
		t.Fatalf("NextWake %s is not after the tick at +20s", w.Sub(t0))
	}
}

// TestNextWakeVanishedOnFencedHost: a vm missing from its host's list whose host is then
// fenced, with no room elsewhere, must not leave the vanish timer in the past.
func TestNextWakeVanishedOnFencedHost(t *testing.T) {
	s := time.Second
	h := newHarness(t, DefaultConfig())
	h.run([]ev{
		{in: AddHost{Host: "h1", MemMiB: 4096}},
		{in: AddHost{Host: "h2", MemMiB: 512}}, // no room for v1
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: DefaultPolicy()}},
		{in: obs(1, DomRunning, ReasonBooted)},
		{at: 10 * s, in: Snapshot{Host: "h1", Seq: 2}, recs: recs(RecExpected)}, // vanish timer: +100s
		{at: 20 * s, in: HostLease{Host: "h1"}},
		{at: 22 * s, in: Tick{}, recs: recs(RecDetect, RecAlert)}, // fenced; no host has room
		{at: 100 * s, in: Tick{}},
	})
	if w := h.e.NextWake(); !w.IsZero() && !w.After(t0.Add(100*s)) {
		t.Fatalf("after a Tick at +100s NextWake is +%s", w.Sub(t0))
	}
}

// TestNextWakeSuspectHost: a recovery start due to time out while its host is suspect must not
// make NextWake point into the past until the host is fenced.
func TestNextWakeSuspectHost(t *testing.T) {
	s := time.Second
	h := newHarness(t, DefaultConfig())
	h.run(cat(std(DefaultPolicy()), []ev{
		{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1"), check: wantWake(70 * s)},
		{at: 69 * s, in: HostLease{Host: "h1"}},
		{at: 70 * s, in: Tick{}, check: wantHostState("h1", "suspect")},
	}))
	if w := h.e.NextWake(); !w.IsZero() && !w.After(t0.Add(70*s)) {
		t.Fatalf("after a Tick at +70s NextWake is +%s", w.Sub(t0))
	}
	// The margin passes: the host is fenced and v1 is relocated.
	h.step(99, ev{at: 71 * s, in: Tick{}, acts: acts("start@h2"), check: wantHome("h2")})
}

// TestNextWakePausedWhileRecovering: a hang whose reset is in flight, then a user suspends the
// guest with virsh: the reset's deadline must not stay in NextWake once it has passed.
func TestNextWakePausedWhileRecovering(t *testing.T) {
	s := time.Second
	h := newHarness(t, DefaultConfig())
	h.run(cat(std(DefaultPolicy()), []ev{
		{at: 10 * s, in: Signal{Host: "h1", VM: "v1", Seq: 2, Kind: SigWatchdog, Watchdog: WatchdogNone},
			acts: acts("reset@h1"), check: wantWake(70 * s)},
		{at: 11 * s, in: obs(3, DomPaused, ReasonUser)},
		{at: 70 * s, in: Tick{}},
	}))
	if w := h.e.NextWake(); !w.IsZero() && !w.After(t0.Add(70*s)) {
		t.Fatalf("after a Tick at +70s NextWake is +%s", w.Sub(t0))
	}
}

// TestNextWakeErroredWithFailure: a user start rides along with a recovery that then gives up;
// when the start expires, opFailed() detects a new failure on the errored vm, and its timers
// must not get stuck.
func TestNextWakeErroredWithFailure(t *testing.T) {
	s := time.Second
	p := policy(func(p *Policy) { p.MaxRestarts, p.MaxRelocations = 0, 1 })
	h := newHarness(t, DefaultConfig())
	h.run([]ev{
		{in: AddHost{Host: "h1"}},
		{in: AddHost{Host: "h2"}},
		{in: AddHost{Host: "h3"}},
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: p}},
		{in: obs(1, DomRunning, ReasonBooted)},
		{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h2")},
		{at: 11 * s, in: result{kind: ActStart, err: "boom"}, recs: recs(RecAlert)},
		{at: 12 * s, in: req(OpStart)},
		{at: 16 * s, in: Tick{}, recs: recs(RecGaveUp), check: wantState("error")},
		{at: 20 * s, in: HostLease{Host: "h2"}},
		{at: 22 * s, in: Tick{}, check: wantHostState("h2", "fenced")},
		{at: 72 * s, in: Tick{}, any: true},
		{at: 132 * s, in: Tick{}, any: true},
	})
	if w := h.e.NextWake(); !w.IsZero() && !w.After(t0.Add(132*s)) {
		t.Fatalf("after a Tick at +132s NextWake is +%s (status %+v)", w.Sub(t0), h.status("v1"))
	}
}

// TestRequestRefusals: a refused request names the vm and the reason and changes nothing.
func TestRequestRefusals(t *testing.T) {
	s := time.Second
	crashed := []ev{{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")}}
	stopped := []ev{{at: 10 * s, in: obs(2, DomShutoff, ReasonDestroyed)}}
	tests := []struct {
		name  string
		setup []ev
		req   Request
		want  []string
	}{
		{"unknown vm", nil, Request{Op: OpStart, VM: "nope"}, []string{`"nope"`, "not protected", "start"}},
		{"reboot of a stopped vm", stopped, req(OpReboot), []string{"reboot v1", "shutoff", "not running"}},
		{"suspend of a stopped vm", stopped, req(OpSuspend), []string{"suspend v1", "not running"}},
		{"shutdown of a stopped vm", stopped, req(OpShutdown), []string{"shutdown v1", "not running"}},
		{"resume of a running vm", nil, req(OpResume), []string{"resume v1", "not paused"}},
		{"migrate to an unknown host", nil, Request{Op: OpMigrate, VM: "v1", Target: "h9"}, []string{"migrate v1", `unknown target host "h9"`}},
		{"migrate to its own host", nil, Request{Op: OpMigrate, VM: "v1", Target: "h1"}, []string{"migrate v1", "already runs on h1"}},
		{"reboot while recovering", crashed, req(OpReboot), []string{"reboot v1", "recovering", string(FailVMCrash)}},
		{"migrate while recovering", crashed, Request{Op: OpMigrate, VM: "v1", Target: "h2"}, []string{"migrate v1", "recovering"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, DefaultConfig())
			h.run(cat(std(DefaultPolicy()), tc.setup))
			before, wake := h.e.Status(), h.e.NextWake()
			var cur []bool
			for _, a := range h.acts {
				cur = append(cur, h.e.Current(a))
			}
			out := h.e.Step(t0.Add(15*s), tc.req)
			if out.Err == nil {
				t.Fatalf("request accepted; actions %v", out.Actions)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.Err.Error(), w) {
					t.Errorf("error %q does not contain %q", out.Err, w)
				}
			}
			if len(out.Actions) != 0 || len(out.Log) != 0 {
				t.Errorf("refused request produced actions %v, log:\n%s", out.Actions, logText(out.Log))
			}
			if after := h.e.Status(); !sameStatus(before, after) {
				t.Errorf("status changed:\nbefore %+v\nafter  %+v", before, after)
			}
			if w := h.e.NextWake(); !w.Equal(wake) {
				t.Errorf("NextWake changed from %s to %s", wake, w)
			}
			for i, a := range h.acts {
				if h.e.Current(a) != cur[i] {
					t.Errorf("Current(%s) changed", a)
				}
			}
		})
	}
}

// TestProtectRefusals: a bad Protect names the vm and the bad field and protects nothing.
func TestProtectRefusals(t *testing.T) {
	tests := []struct {
		name string
		in   Protect
		want []string
	}{
		{"negative max-restarts", Protect{VM: "v9", Host: "h1", Policy: policy(func(p *Policy) { p.MaxRestarts = -1 })},
			[]string{"v9", "max-restarts", "-1"}},
		{"zero window", Protect{VM: "v9", Host: "h1", Policy: policy(func(p *Policy) { p.Window = 0 })},
			[]string{"v9", "window"}},
		{"negative window", Protect{VM: "v9", Host: "h1", Policy: policy(func(p *Policy) { p.Window = -time.Second })},
			[]string{"v9", "window"}},
		{"negative max-relocations", Protect{VM: "v9", Host: "h1", Policy: policy(func(p *Policy) { p.MaxRelocations = -2 })},
			[]string{"v9", "max-relocations"}},
		{"unknown guest shutdown policy", Protect{VM: "v9", Host: "h1", Policy: policy(func(p *Policy) { p.OnGuestShutdown = 7 })},
			[]string{"v9", "on-guest-shutdown"}},
		{"desired absent", Protect{VM: "v9", Host: "h1", Policy: DefaultPolicy(), Desired: WantAbsent},
			[]string{"v9", "desired", "absent"}},
		{"unknown host", Protect{VM: "v9", Host: "h7", Policy: DefaultPolicy()}, []string{"v9", `unknown host "h7"`}},
		{"empty name", Protect{Host: "h1", Policy: DefaultPolicy()}, []string{"vm name is empty"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := New(DefaultConfig())
			e.Step(t0, AddHost{Host: "h1", MemMiB: 4096})
			out := e.Step(t0, tc.in)
			if out.Err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(out.Err.Error(), w) {
					t.Errorf("error %q does not contain %q", out.Err, w)
				}
			}
			if e.Protected(tc.in.VM) || len(e.Status()) != 0 || len(out.Log) != 0 {
				t.Errorf("refused protect left a trace: status %v log %v", e.Status(), out.Log)
			}
		})
	}
	// Updating a protected vm with a bad policy keeps the old one.
	h := newHarness(t, DefaultConfig())
	h.run(std(DefaultPolicy()))
	before := h.e.Status()
	out := h.e.Step(t0, Protect{VM: "v1", Host: "h1", Policy: policy(func(p *Policy) { p.MaxRestarts = -1 })})
	if out.Err == nil || !strings.Contains(out.Err.Error(), "max-restarts") {
		t.Fatalf("err %v, want one naming max-restarts", out.Err)
	}
	if !sameStatus(before, h.e.Status()) {
		t.Fatalf("status changed: %+v", h.e.Status())
	}
}

// TestUnprotect: an unprotected vm is forgotten and nothing issued for it stays current.
func TestUnprotect(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.run(cat(std(DefaultPolicy()), []ev{
		{at: 10 * time.Second, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
		{at: 11 * time.Second, in: Unprotect{VM: "v1"}, recs: recs(RecForget),
			check: all(wantProtected(false), wantCurrent(ActStart, "v1", false))},
		{at: 12 * time.Second, in: Unprotect{VM: "v1"}, err: `"v1" is not protected`},
		{at: 13 * time.Second, in: obs(3, DomShutoff, ReasonFailed)},
		{at: 30 * time.Minute, in: Tick{}},
	}))
	if !h.e.NextWake().IsZero() {
		t.Fatalf("NextWake %s after the only vm was forgotten", h.e.NextWake())
	}
}

// TestEvacuationIgnoresRestartBackoff: host loss is not the VM's fault. A VM that crashed (and
// was restarted) shortly before its host was lost is evacuated as soon as the host is fenced,
// like its neighbours, not after its in-place restart backoff; and one still waiting out that
// backoff when the host is fenced is evacuated at the fence too.
func TestEvacuationIgnoresRestartBackoff(t *testing.T) {
	s := time.Second
	t.Run("recovered crash, then host loss", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(cluster3(false), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
			{at: 11 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
			{at: 20 * s, in: obs(3, DomShutoff, ReasonFailed), acts: acts(), check: wantWake(25 * s)},
			{at: 21 * s, in: Tick{}},
			{at: 22 * s, in: Tick{}},
			{at: 25 * s, in: Tick{}, acts: acts("start@h1")},
			{at: 26 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
			{at: 30 * s, in: HostLease{Host: "h1", Since: t0.Add(28 * s)}},
			{at: 32 * s, in: Tick{}, acts: acts("start@h3"), recs: recs(RecHost, RecDetect),
				check: all(wantHome("h3"), wantFailure(FailHostDown))},
		}))
	})
	t.Run("host lost while a crash waits out its backoff", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.PowerFenceDelay = 0 // ordered at the expiry
		h := newHarness(t, cfg)
		h.run(cat(cluster3(true), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
			{at: 11 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
			{at: 20 * s, in: obs(3, DomShutoff, ReasonFailed), acts: acts(), check: wantWake(25 * s)},
			{at: 21 * s, in: HostLease{Host: "h1", Since: t0.Add(20 * s)}, acts: acts("fence@h1")},
			{at: 21*s + 500*ms1, in: FenceResult{Host: "h1", OK: true}, acts: acts("start@h3"),
				check: wantHome("h3")},
		}))
	})
}

// TestRelocationAvoidsHostsItFailedOn: a VM relocated after failing on h1 fails again on h2;
// its next relocation goes to h3, which it never failed on, though h1 has more free memory.
// Only when no such host has room does it go back to one it failed on.
func TestRelocationAvoidsHostsItFailedOn(t *testing.T) {
	s := time.Second
	p := policy(func(p *Policy) { p.MaxRestarts, p.MaxRelocations = 1, 3 })
	setup := []ev{
		{in: AddHost{Host: "h1", MemMiB: 8192}},
		{in: AddHost{Host: "h2", MemMiB: 4096}},
		{in: AddHost{Host: "h3", MemMiB: 2048}},
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: p}},
		{in: obs(1, DomRunning, ReasonBooted)},
		{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
		{at: 11 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
		{at: 20 * s, in: obs(3, DomShutoff, ReasonFailed), acts: acts(), check: wantWake(25 * s)},
		{at: 25 * s, in: Tick{}, acts: acts("start@h2"), check: wantHome("h2")},
		{at: 26 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
		{at: 30 * s, in: obsAt("h2", 1, DomShutoff, ReasonFailed), recs: recs(RecDetect), check: wantWake(35 * s)},
		{at: 35 * s, in: Tick{}, acts: acts("start@h3"), check: wantHome("h3")},
	}
	h := newHarness(t, DefaultConfig())
	h.run(setup)
	// It fails on h3 as well: every host has seen it fail, so the one with the most room wins.
	h.run([]ev{
		{at: 36 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
		{at: 50 * s, in: obsAt("h3", 1, DomShutoff, ReasonFailed), recs: recs(RecDetect), check: wantWake(55 * s)},
		{at: 55 * s, in: Tick{}, acts: acts("start@h1"), check: wantHome("h1")},
	})
	// Outside the window (10 minutes) the old failures no longer count.
	h2 := newHarness(t, DefaultConfig())
	h2.run(setup[:9])
	h2.run([]ev{
		{at: 26 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
		{at: 20 * time.Minute, in: obsAt("h2", 1, DomShutoff, ReasonFailed), acts: acts("start@h2")},
		{at: 20*time.Minute + s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
		{at: 20*time.Minute + 10*s, in: obsAt("h2", 2, DomShutoff, ReasonFailed), check: wantWake(20*time.Minute + 15*s)},
		{at: 20*time.Minute + 15*s, in: Tick{}, acts: acts("start@h1"), check: wantHome("h1")},
	})
}

func wantRestarts(restarts, relocations int) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		if s := h.status("v1"); s.Restarts != restarts || s.Relocations != relocations {
			t.Fatalf("restarts %d relocations %d, want %d and %d", s.Restarts, s.Relocations, restarts, relocations)
		}
	}
}

// TestUnreachedAttempts: an action whose executor could not reach the hypervisor was never
// carried out. A recovery attempt is refunded (attempt, restart stamp, relocation, move of
// home) and tried again as soon as the host reports, or after UnreachedRetry; a user
// operation keeps its operation and its action is issued again likewise.
func TestUnreachedAttempts(t *testing.T) {
	s := time.Second
	unreached := func(k ActKind) result {
		return result{kind: k, err: "cannot connect to libvirt", unreached: true}
	}
	snap := func(seq uint64, st DomState, r Reason) Snapshot {
		return Snapshot{Host: "h1", Seq: seq, Domains: []DomainStatus{{VM: "v1", State: st, Reason: r}}}
	}
	t.Run("restart in place: refunded, retried at the host's next report", func(t *testing.T) {
		p := policy(func(p *Policy) { p.MaxRestarts, p.MaxRelocations = 1, 0 })
		newHarness(t, DefaultConfig()).run(cat(std(p), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1"), check: wantRestarts(1, 0)},
			{at: 11 * s, in: unreached(ActStart), acts: acts(), recs: recs(RecAlert),
				check: all(wantRestarts(0, 0), wantFailure(FailVMCrash), wantWake(21*s))},
			{at: 15 * s, in: snap(3, DomShutoff, ReasonFailed), acts: acts("start@h1"), check: wantRestarts(1, 0)},
			{at: 16 * s, in: result{kind: ActStart}, recs: recs(RecRecovered), check: wantState("healthy")},
			// The budget is intact: the next crash is restarted, not given up on.
			{at: 20 * time.Minute, in: obs(4, DomShutoff, ReasonFailed), acts: acts("start@h1")},
		}))
	})
	t.Run("retried after UnreachedRetry when the host stays silent; one alert per outage", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h1")},
			{at: 11 * s, in: unreached(ActStart), recs: recs(RecAlert)},
			{at: 21*s - ms1, in: Tick{}, acts: acts()},
			{at: 21 * s, in: Tick{}, acts: acts("start@h1")},
			{at: 22 * s, in: unreached(ActStart), nrecs: recs(RecAlert), check: wantRestarts(0, 0)},
			{at: 32 * s, in: Tick{}, acts: acts("start@h1")},
			{at: 33 * s, in: result{kind: ActStart}, recs: recs(RecRecovered), check: wantRestarts(1, 0)},
		}))
	})
	t.Run("relocation: refunded, home back, another host preferred", func(t *testing.T) {
		p := policy(func(p *Policy) { p.MaxRestarts, p.MaxRelocations = 0, 1 })
		newHarness(t, DefaultConfig()).run([]ev{
			{in: AddHost{Host: "h1", MemMiB: 4096}},
			{in: AddHost{Host: "h2", MemMiB: 8192}},
			{in: AddHost{Host: "h3", MemMiB: 4096}},
			{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: p}},
			{in: obs(1, DomRunning, ReasonBooted)},
			{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h2"), check: all(wantHome("h2"), wantRestarts(0, 1))},
			{at: 11 * s, in: unreached(ActStart), acts: acts(), check: all(wantHome("h1"), wantRestarts(0, 0))},
			{at: 21 * s, in: Tick{}, acts: acts("start@h3"), check: all(wantHome("h3"), wantRestarts(0, 1))},
			{at: 22 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
		})
	})
	t.Run("a user's stop keeps its operation and goes again when the host reports", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
			{at: 11 * s, in: unreached(ActDestroy), acts: acts(), nrecs: recs(RecAlert),
				check: all(wantState("operation"), wantDesired(WantStopped), wantWake(21*s))},
			{at: 15 * s, in: snap(2, DomRunning, ReasonBooted), acts: acts("destroy@h1"), nrecs: recs(RecOp),
				check: wantDesired(WantStopped)},
			{at: 16 * s, in: result{kind: ActDestroy, seq: 3, state: DomShutoff, reason: ReasonDestroyed},
				recs: recs(RecOp), check: wantState("healthy")},
		}))
	})
	t.Run("a user's reboot goes again after UnreachedRetry", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: req(OpReboot), acts: acts("reboot@h1")},
			{at: 11 * s, in: unreached(ActReboot), acts: acts(), check: wantState("operation")},
			{at: 21 * s, in: Tick{}, acts: acts("reboot@h1")},
			{at: 22 * s, in: obs(2, DomShutoff, ReasonOwnStop), nrecs: recs(RecDetect)},
			{at: 24 * s, in: obs(3, DomRunning, ReasonBooted), recs: recs(RecOp), check: wantState("healthy")},
		}))
	})
}

// count returns how many records of type rt the story logged so far.
func (h *harness) count(rt RecordType) int {
	n := 0
	for _, r := range h.logs {
		if r.Type == rt {
			n++
		}
	}
	return n
}

// TestOperationsEnd: every user operation reaches an end. A stop whose domain will not die is
// tried a few times and then fails, leaving the VM in error with one alert; a stop or delete
// of a VM whose host is fenced is done, since the fence proves the VM down.
func TestOperationsEnd(t *testing.T) {
	s := time.Second
	m := time.Minute
	t.Run("a destroy that keeps failing: error, one alert, then quiet", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
			{at: 11 * s, in: result{kind: ActDestroy, err: "domain will not die", seq: 2, state: DomRunning, reason: ReasonBooted}},
			{at: 70 * s, in: Tick{}, acts: acts("destroy@h1")},
			{at: 71 * s, in: result{kind: ActDestroy, err: "domain will not die", seq: 3, state: DomRunning, reason: ReasonBooted}},
			{at: 130 * s, in: Tick{}, acts: acts("destroy@h1")},
			{at: 190 * s, in: Tick{}, acts: acts("destroy@h1")},
			{at: 250 * s, in: Tick{}, acts: acts(), recs: recs(RecAlert, RecOp),
				check: all(wantState("error"), wantDesired(WantStopped))},
		}))
		if n := h.count(RecAlert); n != 1 {
			t.Fatalf("%d alerts, want exactly 1:\n%s", n, logText(h.logs))
		}
		if w := h.e.NextWake(); !w.IsZero() {
			t.Fatalf("NextWake +%s for an operation that has ended", w.Sub(t0))
		}
		h.run([]ev{
			{at: 30 * m, in: Tick{}, acts: acts(), check: wantState("error")},
			{at: 31 * m, in: obs(4, DomRunning, ReasonBooted), acts: acts(), check: all(wantState("error"), wantDesired(WantStopped))},
			// Later it is seen down after all: what the user asked for holds, the error is over.
			{at: 32 * m, in: obs(5, DomShutoff, ReasonDestroyed), acts: acts(), nrecs: recs(RecDetect),
				check: all(wantState("healthy"), wantDesired(WantStopped))},
		})
	})
	t.Run("libvirtd gone for good: the stop's unreached retries end too", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		steps := cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
		})
		h.run(steps)
		for i := 0; i < 200 && !h.e.NextWake().IsZero(); i++ {
			if a, ok := h.lastAct(ActDestroy, "v1"); ok && len(h.last.Actions) > 0 {
				h.step(i, ev{at: h.e.now.Sub(t0) + 10*ms1, in: ActionResult{ID: a.ID, Host: "h1", Err: "cannot connect", Unreached: true}, any: true})
			}
			if w := h.e.NextWake(); !w.IsZero() {
				h.step(i, ev{at: w.Sub(t0), in: Tick{}, any: true})
			}
		}
		if st := h.status("v1"); st.State != "error" || h.e.now.Sub(t0) > 10*m {
			t.Fatalf("state %s at +%s, want error within 10 minutes", st.State, h.e.now.Sub(t0))
		}
		if n := h.count(RecAlert); n != 1 {
			t.Fatalf("%d alerts, want exactly 1:\n%s", n, logText(h.logs))
		}
	})
	t.Run("a stop of a vm whose host is fenced is done", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(cluster3(false), []ev{
			{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
			{at: 11 * s, in: HostLease{Host: "h1", Since: t0.Add(9 * s)}},
			{at: 13 * s, in: Tick{}, acts: acts(), nrecs: recs(RecDetect, RecAlert),
				check: all(wantState("healthy"), wantDesired(WantStopped), wantHostState("h1", "fenced"))},
			{at: 30 * m, in: Tick{}, acts: acts(), nrecs: recs(RecAlert)},
		}))
		if w := h.e.NextWake(); !w.IsZero() {
			t.Fatalf("NextWake +%s", w.Sub(t0))
		}
	})
	t.Run("a stop whose host is fenced later, while it is retried", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.PowerFenceDelay = 0 // ordered at the expiry
		h := newHarness(t, cfg)
		h.run(cat(cluster3(true), []ev{
			{at: 10 * s, in: req(OpShutdown), acts: acts("shutdown@h1")},
			{at: 130 * s, in: Tick{}, acts: acts("destroy@h1")},
			{at: 140 * s, in: HostLease{Host: "h1", Since: t0.Add(138 * s)}, acts: acts("fence@h1")},
			{at: 141 * s, in: FenceResult{Host: "h1", OK: true}, acts: acts(),
				check: all(wantState("healthy"), wantDesired(WantStopped))},
		}))
	})
	t.Run("a delete of a vm whose host is fenced forgets it", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(cluster3(false), []ev{
			{at: 10 * s, in: req(OpDelete), acts: acts("delete@h1")},
			{at: 11 * s, in: HostLease{Host: "h1", Since: t0.Add(9 * s)}},
			{at: 13 * s, in: Tick{}, acts: acts(), recs: recs(RecForget), check: wantProtected(false)},
		}))
	})
}

// TestTwoCopies: when hass sees the VM up on two live hosts, it keeps the copy that carries the
// guest's live state (one that arrived by live migration, else its home), pauses the other
// (nothing is lost), alerts once, and leaves the paused copy to the operator.
func TestTwoCopies(t *testing.T) {
	s := time.Second
	countAlerts := func(want int) func(*testing.T, *harness) {
		return func(t *testing.T, h *harness) {
			t.Helper()
			if n := h.count(RecAlert); n != want {
				t.Fatalf("%d alerts, want %d:\n%s", n, want, logText(h.logs))
			}
		}
	}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	t.Run("a copy booted on the source after a migration switched over: the migrated copy wins", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(std(DefaultPolicy()), []ev{
			// virsh migrate h1 -> h2: the incoming copy, then the source stops
			{at: 10 * s, in: Observe{Host: "h2", VM: "v1", Seq: 1, State: DomPaused, Reason: ReasonMigrated, At: at(10 * s)}},
			{at: 14 * s, in: Observe{Host: "h1", VM: "v1", Seq: 2, State: DomShutoff, Reason: ReasonMigrated, At: at(14 * s)}, recs: recs(RecOp)},
			// a copy is booted on h1 from disk, and only then does h2's resume arrive
			{at: 15 * s, in: Observe{Host: "h1", VM: "v1", Seq: 3, State: DomRunning, Reason: ReasonBooted, At: at(15 * s)}},
			{at: 16 * s, in: Observe{Host: "h2", VM: "v1", Seq: 2, State: DomRunning, Reason: ReasonMigrated, At: at(14 * s)},
				acts: acts("suspend@h1"), recs: recs(RecAlert), check: all(wantHome("h2"), countAlerts(1), wantLogMsg("keeping the one on h2"))},
			// the pause took; the resyncs of the paused copy say nothing new
			{at: 17 * s, in: Observe{Host: "h1", VM: "v1", Seq: 4, State: DomPaused, Reason: ReasonUser, At: at(17 * s)}, acts: acts()},
			{at: 47 * s, in: Snapshot{Host: "h1", Seq: 5, At: at(47 * s), Domains: []DomainStatus{{VM: "v1", State: DomPaused, Reason: ReasonUser}}},
				acts: acts(), check: all(countAlerts(1), wantHome("h2"), wantDesired(WantRunning))},
			// the operator destroys it: one copy again
			{at: 60 * s, in: Observe{Host: "h1", VM: "v1", Seq: 6, State: DomShutoff, Reason: ReasonDestroyed, At: at(60 * s)},
				acts: acts(), recs: recs(RecExpected), check: all(countAlerts(1), wantDesired(WantRunning), wantHome("h2"))},
			// and the VM is still protected where it runs
			{at: 90 * s, in: Observe{Host: "h2", VM: "v1", Seq: 3, State: DomShutoff, Reason: ReasonFailed, At: at(90 * s)}, acts: acts("start@h2")},
		}))
	})
	t.Run("a user's virsh migrate seen by a list while its incoming copy starts up: not two copies", func(t *testing.T) {
		// What real libvirt shows at the destination (the rig's TestIncomingCopyReason):
		// "paused (starting up)" for about a second, then the STARTED/MIGRATED event and
		// "paused (migrating)", then RESUMED/MIGRATED; the source stops after it.
		h := newHarness(t, DefaultConfig())
		h.run(cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: Snapshot{Host: "h2", Seq: 1, At: at(10 * s), Domains: []DomainStatus{{VM: "v1", State: DomPaused, Reason: ReasonUnknown}}},
				acts: acts(), nrecs: recs(RecAlert), check: wantHome("h1")},
			{at: 11 * s, in: Observe{Host: "h2", VM: "v1", Seq: 2, State: DomPaused, Reason: ReasonMigrated, At: at(11 * s)}, acts: acts(), nrecs: recs(RecAlert)},
			{at: 13 * s, in: Observe{Host: "h2", VM: "v1", Seq: 3, State: DomRunning, Reason: ReasonMigrated, At: at(13 * s)},
				acts: acts(), nrecs: recs(RecAlert), check: wantHome("h2")},
			{at: 14 * s, in: Observe{Host: "h1", VM: "v1", Seq: 2, State: DomShutoff, Reason: ReasonMigrated, At: at(14 * s)},
				acts: acts(), nrecs: recs(RecAlert), check: all(wantHome("h2"), countAlerts(0), wantDesired(WantRunning))},
		}))
	})
	t.Run("a copy started on another host passes through a pause, then runs: home kept, the other paused once", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: obsAt("h2", 1, DomPaused, ReasonUnknown), acts: acts(), nrecs: recs(RecAlert)},
			{at: 11 * s, in: obsAt("h2", 2, DomRunning, ReasonBooted), acts: acts("suspend@h2"), recs: recs(RecAlert),
				check: all(wantHome("h1"), countAlerts(1))},
		}))
	})
	t.Run("a copy appears on another host while home runs: home kept, the other paused once", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: obsAt("h2", 1, DomRunning, ReasonBooted), acts: acts("suspend@h2"), recs: recs(RecAlert),
				check: all(wantHome("h1"), wantLogMsg("hass cannot tell"))},
			// the pause did not take: it is issued again after StartTimeout, without an alert
			{at: 40 * s, in: Snapshot{Host: "h2", Seq: 2, At: at(40 * s), Domains: []DomainStatus{{VM: "v1", State: DomRunning, Reason: ReasonBooted}}},
				acts: acts()},
			{at: 70 * s, in: Snapshot{Host: "h2", Seq: 3, At: at(70 * s), Domains: []DomainStatus{{VM: "v1", State: DomRunning, Reason: ReasonBooted}}},
				acts: acts("suspend@h2"), nrecs: recs(RecAlert)},
			{at: 71 * s, in: obsAt("h2", 4, DomPaused, ReasonUser), acts: acts()},
			// the operator resumes it on purpose: hass leaves it alone
			{at: 100 * s, in: obsAt("h2", 5, DomRunning, ReasonResumed), acts: acts(), check: countAlerts(1)},
			{at: 200 * s, in: Snapshot{Host: "h2", Seq: 6, At: at(200 * s), Domains: []DomainStatus{{VM: "v1", State: DomRunning, Reason: ReasonResumed}}},
				acts: acts(), check: countAlerts(1)},
		}))
	})
	t.Run("a report of the source taken before the switch-over is no second copy", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: Observe{Host: "h2", VM: "v1", Seq: 1, State: DomPaused, Reason: ReasonMigrated, At: at(10 * s)}},
			{at: 14 * s, in: Observe{Host: "h2", VM: "v1", Seq: 2, State: DomRunning, Reason: ReasonMigrated, At: at(14 * s)},
				check: wantHome("h2")},
			// h1's resync taken a moment before the switch-over arrives late
			{at: 14*s + 20*ms1, in: Snapshot{Host: "h1", Seq: 2, At: at(14*s - 5*ms1), Domains: []DomainStatus{{VM: "v1", State: DomRunning, Reason: ReasonBooted}}},
				acts: acts(), nrecs: recs(RecAlert)},
			{at: 14*s + 30*ms1, in: Observe{Host: "h1", VM: "v1", Seq: 3, State: DomShutoff, Reason: ReasonMigrated, At: at(14 * s)},
				acts: acts(), nrecs: recs(RecAlert, RecDetect), check: all(wantHome("h2"), countAlerts(0))},
		}))
	})
}

// TestRebootEndedByGuestShutdown: the guest shuts itself down during a reboot and the reboot's
// failed result (carrying the domain's state) arrives before the shutdown event: the shutdown
// is honoured as the policy says, not restarted as a failed reboot.
func TestRebootEndedByGuestShutdown(t *testing.T) {
	s := time.Second
	down := result{kind: ActReboot, err: "domain went down during the reboot", seq: 3, state: DomShutoff, reason: ReasonShutdownGuest}
	t.Run("honour", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: req(OpReboot), acts: acts("reboot@h1")},
			{at: 14 * s, in: down, acts: acts(), nrecs: recs(RecDetect), check: wantDesired(WantStopped)},
			{at: 14*s + 10*ms1, in: obs(2, DomShutoff, ReasonShutdownGuest), acts: acts()},
			{at: 30 * time.Minute, in: Tick{}, acts: acts(), check: wantDesired(WantStopped)},
		}))
	})
	t.Run("restart", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(std(policy(func(p *Policy) { p.OnGuestShutdown = GuestShutdownRestart })), []ev{
			{at: 10 * s, in: req(OpReboot), acts: acts("reboot@h1")},
			{at: 14 * s, in: down, acts: acts("start@h1"), check: wantFailure(FailGuestShutdown)},
		}))
	})
}

// TestPowerFenceWaits: a host's power fence is ordered PowerFenceDelay after its lease
// expired, and not while the hosts without a lease are a majority (their agents hold back
// their fences); once they no longer are, it is, and a confirmed power-off needs no settle
// time, while a fence by lease expiry waits MajoritySettle.
func TestPowerFenceWaits(t *testing.T) {
	s, ms1 := time.Second, time.Millisecond
	t.Run("a host lost alone is fenced by its expiry, before its power fence is due", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(cluster3(true), []ev{
			{at: 10 * s, in: HostLease{Host: "h1"}, acts: acts(), check: wantWake(12 * s)},
			{at: 12 * s, in: Tick{}, acts: acts("start@h3"), recs: recs(RecHost, RecDetect), check: wantHostState("h1", "fenced")},
		}))
	})
	t.Run("a majority without a lease: nothing fenced, nothing powered off", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(cluster3(true), []ev{
			{at: 10 * s, in: HostLease{Host: "h1"}, acts: acts()},
			{at: 11 * s, in: HostLease{Host: "h2"}, acts: acts(), recs: recs(RecAlert)},
			{at: 13 * s, in: Tick{}, acts: acts(), check: wantHostState("h1", "suspect")},
			{at: 5 * time.Minute, in: Tick{}, acts: acts(), check: wantHostState("h2", "suspect")},
			// h2 is back: h1 alone is no majority; its power fence is ordered PowerFenceDelay
			// later, its fence by expiry waits the settle time.
			{at: 5*time.Minute + 100*ms1, in: HostLease{Host: "h2", Alive: true}, acts: acts(), recs: recs(RecAlert),
				check: wantWake(5*time.Minute + 3100*ms1)},
			{at: 5*time.Minute + 3100*ms1, in: Tick{}, acts: acts("fence@h1"), check: wantWake(5*time.Minute + 6100*ms1)},
			{at: 5*time.Minute + 3600*ms1, in: FenceResult{Host: "h1", OK: true}, acts: acts("start@h3"), check: wantHostState("h1", "fenced")},
		}))
		if h.e.NextWake().Before(t0.Add(5*time.Minute+s)) && !h.e.NextWake().IsZero() {
			t.Fatalf("NextWake +%s", h.e.NextWake().Sub(t0))
		}
	})
	t.Run("without a power fence, the settle time", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(cluster3(false), []ev{
			{at: 10 * s, in: HostLease{Host: "h1"}, acts: acts()},
			{at: 11 * s, in: HostLease{Host: "h2"}, acts: acts(), recs: recs(RecAlert)},
			{at: 60 * s, in: HostLease{Host: "h2", Alive: true}, acts: acts(), recs: recs(RecAlert), check: wantWake(66 * s)},
			{at: 66*s - ms1, in: Tick{}, acts: acts(), check: wantHostState("h1", "suspect")},
			{at: 66 * s, in: Tick{}, acts: acts("start@h3"), check: wantHostState("h1", "fenced")},
		}))
	})
}

// A home host that is suspect may still run the VM (a majority without a lease holds back
// its fences): a user's start is refused rather than run elsewhere. And a copy a user started
// elsewhere meanwhile, paused by hass as a possible second one, is resumed once the home copy
// is known down: it is the VM's one copy, and the user meant it to run.
func TestSuspectHome(t *testing.T) {
	s, ms1 := time.Second, time.Millisecond
	on := func(h HostID, seq uint64, st DomState, r Reason) Observe {
		return Observe{Host: h, VM: "v1", Seq: seq, State: st, Reason: r}
	}
	newHarness(t, DefaultConfig()).run(cat(cluster3(false), []ev{
		{at: 5 * s, in: req(OpStop), acts: acts("destroy@h1")},
		{at: 5*s + 10*ms1, in: obs(2, DomShutoff, ReasonDestroyed), check: wantDesired(WantStopped)},
		{at: 10 * s, in: HostLease{Host: "h1"}},
		{at: 11 * s, in: HostLease{Host: "h2"}, recs: recs(RecAlert)}, // a majority: h1 stays suspect
		{at: 20 * s, in: req(OpStart), err: "suspect", check: wantHostState("h1", "suspect")},
		// A user starts it on h3 behind hass's back: hass cannot tell whether h1 runs it.
		{at: 30 * s, in: on("h3", 1, DomRunning, ReasonBooted), acts: acts("suspend@h3"), recs: recs(RecAlert)},
		{at: 30*s + 10*ms1, in: on("h3", 2, DomPaused, ReasonUser)},
		// h1 is back and lists v1 down: the copy on h3 is the one, resumed, meant to run.
		{at: 60 * s, in: HostLease{Host: "h1", Alive: true}},
		{at: 60*s + 10*ms1, in: Snapshot{Host: "h1", Seq: 3, Domains: []DomainStatus{{VM: "v1", State: DomShutoff, Reason: ReasonDestroyed}}}},
		{at: 61 * s, in: Snapshot{Host: "h3", Seq: 3, Domains: []DomainStatus{{VM: "v1", State: DomPaused, Reason: ReasonUser}}},
			acts: acts("resume@h3"), check: all(wantHome("h3"), wantDesired(WantRunning))},
	}))
}

// TestFewMembersHoldBackTheExpiry: a host's agent that counts fewer members than the engine
// (it joined a moment before its other peers, or cannot read the host list) may hold back its
// self-fence where the engine's count says it fences: the engine declares it fenced by its
// lease's expiry only while the hosts without a lease are not a majority of its count, and
// only MajoritySettle after a host stopped being suspect (its agent may still hear that one
// without a lease). Without that, a host that knew only itself kept its VMs running while the
// cluster restarted them elsewhere.
func TestFewMembersHoldBackTheExpiry(t *testing.T) {
	s, ms1 := time.Second, time.Millisecond
	counts := func(h HostID, n int) ev { return ev{in: AddHost{Host: h, MemMiB: 4096, Members: n}} }
	t.Run("an agent that counts every member: fenced by its expiry as before", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(cluster3(false), []ev{
			counts("h1", 3),
			{at: 10 * s, in: HostLease{Host: "h1"}, acts: acts(), check: wantWake(12 * s)},
			{at: 12 * s, in: Tick{}, acts: acts("start@h3"), nrecs: recs(RecAlert), check: wantHostState("h1", "fenced")},
		}))
	})
	t.Run("an agent that counts only itself: never fenced by its expiry", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(cluster3(false), []ev{
			counts("h1", 1),
			{at: 10 * s, in: HostLease{Host: "h1"}, acts: acts(), recs: recs(RecAlert)},
			{at: 12 * s, in: Tick{}, acts: acts(), nrecs: recs(RecAlert), check: wantHostState("h1", "suspect")}, // said once
			{at: 10 * time.Minute, in: Tick{}, acts: acts(), check: wantHostState("h1", "suspect")},
			// It is back, and counts everyone now: lost again, it is fenced by its expiry.
			{at: 11 * time.Minute, in: HostLease{Host: "h1", Alive: true}, acts: acts(), check: wantHostState("h1", "up")},
			counts("h1", 3),
			{at: 12 * time.Minute, in: HostLease{Host: "h1"}, acts: acts()},
			{at: 12*time.Minute + 8*s, in: Tick{}, acts: acts("start@h3"), check: wantHostState("h1", "fenced")},
		}))
		if w := h.e.NextWake(); !w.IsZero() && w.Before(t0.Add(12*time.Minute)) {
			t.Fatalf("NextWake +%s", w.Sub(t0))
		}
	})
	t.Run("an agent that counts 2 of 4: held while 2 hosts have no lease, then the settle time", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(cluster3(false), []ev{
			{in: AddHost{Host: "h4", MemMiB: 4096}},
			counts("h1", 2),
			{at: 10 * s, in: HostLease{Host: "h1"}, acts: acts()},
			// 2 of 4: no majority for the engine, but for h1's count.
			{at: 10 * s, in: HostLease{Host: "h2"}, acts: acts(), recs: recs(RecAlert)},
			{at: 30 * s, in: Tick{}, acts: acts(), recs: recs(RecHost), nrecs: recs(RecAlert), check: wantHostState("h1", "suspect")},
			// h2 fenced by its expiry at 30 s; h1 is held until MajoritySettle after.
			{at: 36*s - ms1, in: Tick{}, acts: acts(), check: wantHostState("h1", "suspect")},
			{at: 36 * s, in: Tick{}, acts: acts("start@h4"), check: wantHostState("h1", "fenced")},
		}))
	})
}

// TestIncomingCopyListedAfterTheLoss: the source of a migration is lost while the incoming
// copy waits, paused, at the destination. hass waits for the destination's list taken after
// the loss; that list still shows it paused, so it never switched over: the VM is restarted
// at once on that list, not at the next placement retry (10 s later on the rig).
func TestIncomingCopyListedAfterTheLoss(t *testing.T) {
	s := time.Second
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	newHarness(t, DefaultConfig()).run(cat(cluster3(false), []ev{
		{at: 10 * s, in: Observe{Host: "h2", VM: "v1", Seq: 1, State: DomPaused, Reason: ReasonMigrated, At: at(10 * s)}},
		{at: 11 * s, in: HostLease{Host: "h1"}, acts: acts()},
		{at: 13 * s, in: Tick{}, acts: acts(), recs: recs(RecDetect, RecExpected), check: wantHostState("h1", "fenced")},
		// A list taken a moment after the loss, and delivered late: the switch-over may
		// still have come after it.
		{at: 13*s + 500*time.Millisecond, in: Snapshot{Host: "h2", Seq: 2, At: at(11*s + 500*time.Millisecond),
			Domains: []DomainStatus{{VM: "v1", State: DomPaused, Reason: ReasonMigrated}}}, acts: acts()},
		{at: 15 * s, in: Snapshot{Host: "h2", Seq: 3, At: at(15 * s), Domains: []DomainStatus{{VM: "v1", State: DomPaused, Reason: ReasonMigrated}}},
			acts: acts("start@h3")},
	}))
}
