package lifecycle

import (
	"fmt"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
)

// step is one thing fed to a translator: an event, a row, or a call.
type step struct {
	ev      *Event
	row     *[3]int // domain index (0 "a", 1 "b"), state, reason
	forget  bool
	fencing string
}

func lc(typ, detail int) step {
	return step{ev: &Event{Kind: KindLifecycle, Domain: "a", Type: typ, Detail: detail}}
}

func lcOn(dom string, typ, detail int) step {
	return step{ev: &Event{Kind: KindLifecycle, Domain: dom, Type: typ, Detail: detail}}
}

func wd(action engine.WatchdogAction) step {
	return step{ev: &Event{Kind: KindWatchdog, Domain: "a", Watchdog: int(action)}}
}

func row(state, reason int) step { return step{row: &[3]int{0, state, reason}} }

var doms = [...]string{"a", "b"}

// feed runs steps and returns what the last one gave: for an event its Result, for a row a
// Result with State and Reason set.
func feed(t *Translator, steps []step) Result {
	var last Result
	for _, s := range steps {
		switch {
		case s.ev != nil:
			last = t.Event(*s.ev)
		case s.row != nil:
			st, r := t.Row(doms[s.row[0]], s.row[1], s.row[2])
			last = Result{State: st, Reason: r}
		case s.forget:
			t.Forget()
		case s.fencing != "":
			t.Fencing(s.fencing)
		}
	}
	return last
}

func TestEventSequences(t *testing.T) {
	state := func(st engine.DomState, r engine.Reason) Result { return Result{State: st, Reason: r} }
	tests := []struct {
		name  string
		steps []step
		want  Result
	}{
		{"guest shutdown, first half is skipped", []step{lc(EvShutdown, ShutdownGuest)}, Result{Skip: true}},
		{"guest shutdown, both halves",
			[]step{lc(EvShutdown, ShutdownGuest), lc(EvStopped, StoppedShutdown)},
			state(engine.DomShutoff, engine.ReasonShutdownGuest)},
		{"host (acpi) shutdown, both halves",
			[]step{lc(EvShutdown, ShutdownHost), lc(EvStopped, StoppedShutdown)},
			state(engine.DomShutoff, engine.ReasonShutdownHost)},
		{"old libvirt: shutdown finished, initiator unknown",
			[]step{lc(EvShutdown, ShutdownFinished), lc(EvStopped, StoppedShutdown)},
			state(engine.DomShutoff, engine.ReasonShutdown)},
		{"stopped/shutdown with the first half lost",
			[]step{lc(EvStopped, StoppedShutdown)},
			state(engine.DomShutoff, engine.ReasonShutdown)},
		{"virsh destroy: shutdown/host then stopped/destroyed is a destroy",
			[]step{lc(EvShutdown, ShutdownHost), lc(EvStopped, StoppedDestroyed)},
			state(engine.DomShutoff, engine.ReasonDestroyed)},
		{"watchdog poweroff then stopped/destroyed",
			[]step{wd(engine.WatchdogPoweroff), lc(EvStopped, StoppedDestroyed)},
			state(engine.DomShutoff, engine.ReasonWatchdog)},
		{"watchdog shutdown then stopped/shutdown",
			[]step{wd(engine.WatchdogShutdown), lc(EvShutdown, ShutdownHost), lc(EvStopped, StoppedShutdown)},
			state(engine.DomShutoff, engine.ReasonWatchdog)},
		{"watchdog pause then suspended/paused",
			[]step{wd(engine.WatchdogPause), lc(EvSuspended, SuspendedPaused)},
			state(engine.DomPaused, engine.ReasonWatchdog)},
		{"a resume ends the watchdog memory",
			[]step{wd(engine.WatchdogPause), lc(EvSuspended, SuspendedWatchdog), lc(EvResumed, ResumedUnpaused), lc(EvSuspended, SuspendedPaused)},
			state(engine.DomPaused, engine.ReasonUser)},
		{"a stop ends the watchdog memory",
			[]step{wd(engine.WatchdogPoweroff), lc(EvStopped, StoppedDestroyed), lc(EvStarted, StartedBooted), lc(EvStopped, StoppedDestroyed)},
			state(engine.DomShutoff, engine.ReasonDestroyed)},
		{"watchdog reset leaves no memory",
			[]step{wd(engine.WatchdogReset), lc(EvStopped, StoppedDestroyed)},
			state(engine.DomShutoff, engine.ReasonDestroyed)},
		{"watchdog event is a signal with its action",
			[]step{wd(engine.WatchdogInjectNMI)},
			Result{Signal: true, Sig: engine.SigWatchdog, WD: engine.WatchdogInjectNMI}},
		{"self-fence destroy",
			[]step{{fencing: "a"}, lc(EvStopped, StoppedDestroyed)},
			state(engine.DomShutoff, engine.ReasonFenced)},
		{"fencing another domain does not mark this one",
			[]step{{fencing: "b"}, lc(EvStopped, StoppedDestroyed)},
			state(engine.DomShutoff, engine.ReasonDestroyed)},
		{"kill -9: stopped/failed",
			[]step{lc(EvStopped, StoppedFailed)},
			state(engine.DomShutoff, engine.ReasonFailed)},
		{"stopped/crashed", []step{lc(EvStopped, StoppedCrashed)}, state(engine.DomShutoff, engine.ReasonCrashed)},
		{"stopped/migrated", []step{lc(EvStopped, StoppedMigrated)}, state(engine.DomShutoff, engine.ReasonMigrated)},
		{"stopped/saved is on purpose", []step{lc(EvStopped, StoppedSaved)}, state(engine.DomShutoff, engine.ReasonDestroyed)},
		{"stopped/from-snapshot", []step{lc(EvStopped, StoppedFromSnapshot)}, state(engine.DomShutoff, engine.ReasonRestored)},
		{"started/booted", []step{lc(EvStarted, StartedBooted)}, state(engine.DomRunning, engine.ReasonBooted)},
		{"started/migrated: the paused incoming copy", []step{lc(EvStarted, StartedMigrated)}, state(engine.DomPaused, engine.ReasonMigrated)},
		{"started/restored", []step{lc(EvStarted, StartedRestored)}, state(engine.DomRunning, engine.ReasonRestored)},
		{"started/from-snapshot", []step{lc(EvStarted, StartedFromSnapshot)}, state(engine.DomRunning, engine.ReasonRestored)},
		{"suspended/paused", []step{lc(EvSuspended, SuspendedPaused)}, state(engine.DomPaused, engine.ReasonUser)},
		{"suspended/io-error", []step{lc(EvSuspended, SuspendedIOError)}, state(engine.DomPaused, engine.ReasonIOError)},
		{"suspended/migrated", []step{lc(EvSuspended, SuspendedMigrated)}, state(engine.DomPaused, engine.ReasonMigrated)},
		{"suspended/watchdog", []step{lc(EvSuspended, SuspendedWatchdog)}, state(engine.DomPaused, engine.ReasonWatchdog)},
		{"suspended/api-error", []step{lc(EvSuspended, SuspendedAPIError)}, state(engine.DomPaused, engine.ReasonUnknown)},
		{"resumed/unpaused", []step{lc(EvResumed, ResumedUnpaused)}, state(engine.DomRunning, engine.ReasonResumed)},
		{"resumed/migrated", []step{lc(EvResumed, ResumedMigrated)}, state(engine.DomRunning, engine.ReasonMigrated)},
		{"crashed/panicked", []step{lc(EvCrashed, CrashedPanicked)}, state(engine.DomCrashed, engine.ReasonPanicked)},
		{"undefined", []step{lc(EvUndefined, 0)}, state(engine.DomAbsent, engine.ReasonUndefined)},
		{"defined is no state change", []step{lc(EvDefined, 0)}, Result{Skip: true}},
		{"pm-suspended is no state change", []step{lc(EvPMSuspended, 0)}, Result{Skip: true}},
		{"unknown event type", []step{lc(42, 0)}, Result{Skip: true}},
		{"reboot", []step{{ev: &Event{Kind: KindReboot, Domain: "a"}}}, Result{Signal: true, Sig: engine.SigReboot}},
		{"io error", []step{{ev: &Event{Kind: KindIOError, Domain: "a"}}}, Result{Signal: true, Sig: engine.SigIOError}},
		{"agent gone", []step{{ev: &Event{Kind: KindAgentLifecycle, Domain: "a", Detail: 2}}}, Result{Signal: true, Sig: engine.SigAgentDown}},
		{"agent back", []step{{ev: &Event{Kind: KindAgentLifecycle, Domain: "a", Detail: 1}}}, Result{Signal: true, Sig: engine.SigAgentUp}},
		{"the first half is remembered per domain",
			[]step{lcOn("b", EvShutdown, ShutdownGuest), lc(EvStopped, StoppedShutdown)},
			state(engine.DomShutoff, engine.ReasonShutdown)},
		{"a start forgets an old shutdown half",
			[]step{lc(EvShutdown, ShutdownGuest), lc(EvStarted, StartedBooted), lc(EvStopped, StoppedShutdown)},
			state(engine.DomShutoff, engine.ReasonShutdown)},
		{"Forget drops the first half",
			[]step{lc(EvShutdown, ShutdownGuest), {forget: true}, lc(EvStopped, StoppedShutdown)},
			state(engine.DomShutoff, engine.ReasonShutdown)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := feed(NewTranslator(), tc.steps); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRows(t *testing.T) {
	tests := []struct {
		state, reason int
		st            engine.DomState
		r             engine.Reason
	}{
		{StateRunning, 1, engine.DomRunning, engine.ReasonBooted},
		{StateRunning, 2, engine.DomRunning, engine.ReasonMigrated},
		{StateBlocked, 0, engine.DomRunning, engine.ReasonBooted},
		{StateShutdown, 1, engine.DomRunning, engine.ReasonBooted}, // still shutting down: up
		{StatePaused, PausedUser, engine.DomPaused, engine.ReasonUser},
		{StatePaused, PausedUnknown, engine.DomPaused, engine.ReasonUnknown}, // passing: not a user's suspend
		{StatePaused, PausedMigration, engine.DomPaused, engine.ReasonMigrated},
		{StatePaused, PausedIOError, engine.DomPaused, engine.ReasonIOError},
		{StatePaused, PausedWatchdog, engine.DomPaused, engine.ReasonWatchdog},
		{StatePMSuspended, 0, engine.DomPaused, engine.ReasonUnknown},
		{StateShutoff, ShutoffUnknown, engine.DomShutoff, engine.ReasonUnknown},
		{StateShutoff, ShutoffShutdown, engine.DomShutoff, engine.ReasonShutdown},
		{StateShutoff, ShutoffDestroyed, engine.DomShutoff, engine.ReasonDestroyed},
		{StateShutoff, ShutoffCrashed, engine.DomShutoff, engine.ReasonCrashed},
		{StateShutoff, ShutoffMigrated, engine.DomShutoff, engine.ReasonMigrated},
		{StateShutoff, ShutoffSaved, engine.DomShutoff, engine.ReasonDestroyed},
		{StateShutoff, ShutoffFailed, engine.DomShutoff, engine.ReasonFailed},
		{StateShutoff, ShutoffDaemon, engine.DomShutoff, engine.ReasonUnknown},
		{StateShutoff, 99, engine.DomShutoff, engine.ReasonUnknown},
		{StateCrashed, CrashedReasonPanicked, engine.DomCrashed, engine.ReasonPanicked},
		{StateCrashed, CrashedReasonUnknown, engine.DomCrashed, engine.ReasonPanicked},
		{StateNoState, 0, engine.DomUnknown, engine.ReasonUnknown},
		{99, 0, engine.DomUnknown, engine.ReasonUnknown},
		{-1, -1, engine.DomUnknown, engine.ReasonUnknown},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("state%d/reason%d", tc.state, tc.reason), func(t *testing.T) {
			st, r := NewTranslator().Row("a", tc.state, tc.reason)
			if st != tc.st || r != tc.r {
				t.Fatalf("Row(%d, %d) = %s/%s, want %s/%s", tc.state, tc.reason, st, r, tc.st, tc.r)
			}
		})
	}
}

// TestRowMemory: a resync row after an event sequence says what the events said.
func TestRowMemory(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		want  engine.Reason
	}{
		{"row after a guest shutdown remembers the initiator",
			[]step{lc(EvShutdown, ShutdownGuest), lc(EvStopped, StoppedShutdown), row(StateShutoff, ShutoffShutdown)},
			engine.ReasonShutdownGuest},
		{"row after a host shutdown remembers the initiator",
			[]step{lc(EvShutdown, ShutdownHost), lc(EvStopped, StoppedShutdown), row(StateShutoff, ShutoffShutdown)},
			engine.ReasonShutdownHost},
		{"two rows in a row still remember",
			[]step{lc(EvShutdown, ShutdownGuest), lc(EvStopped, StoppedShutdown), row(StateShutoff, ShutoffShutdown), row(StateShutoff, ShutoffShutdown)},
			engine.ReasonShutdownGuest},
		{"Forget clears it",
			[]step{lc(EvShutdown, ShutdownGuest), lc(EvStopped, StoppedShutdown), {forget: true}, row(StateShutoff, ShutoffShutdown)},
			engine.ReasonShutdown},
		{"a later start clears it",
			[]step{lc(EvShutdown, ShutdownGuest), lc(EvStopped, StoppedShutdown), lc(EvStarted, StartedBooted), row(StateShutoff, ShutoffShutdown)},
			engine.ReasonShutdown},
		{"an undefine clears it",
			[]step{lc(EvShutdown, ShutdownGuest), lc(EvStopped, StoppedShutdown), lc(EvUndefined, 0), row(StateShutoff, ShutoffShutdown)},
			engine.ReasonShutdown},
		{"row after a self-fence destroy is a fence",
			[]step{{fencing: "a"}, lc(EvStopped, StoppedDestroyed), row(StateShutoff, ShutoffDestroyed)},
			engine.ReasonFenced},
		{"row after a fence, before its stopped event",
			[]step{{fencing: "a"}, row(StateShutoff, ShutoffDestroyed)},
			engine.ReasonFenced},
		{"Forget clears a fence",
			[]step{{fencing: "a"}, lc(EvStopped, StoppedDestroyed), {forget: true}, row(StateShutoff, ShutoffDestroyed)},
			engine.ReasonDestroyed},
		{"the memory of one domain does not leak to another",
			[]step{lc(EvShutdown, ShutdownGuest), lc(EvStopped, StoppedShutdown), {row: &[3]int{1, StateShutoff, ShutoffShutdown}}},
			engine.ReasonShutdown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := feed(NewTranslator(), tc.steps)
			if got.Reason != tc.want {
				t.Fatalf("row reason %s, want %s", got.Reason, tc.want)
			}
		})
	}
}

// TestKillNine: kill -9 of qemu gives a STOPPED/FAILED event, but the domain's state reason
// afterwards is SHUTOFF/CRASHED. A resync that only has the row must still read as a crash,
// and the engine must restart the vm from either.
func TestKillNine(t *testing.T) {
	tr := NewTranslator()
	ev := tr.Event(Event{Kind: KindLifecycle, Domain: "a", Type: EvStopped, Detail: StoppedFailed})
	st, r := tr.Row("a", StateShutoff, ShutoffCrashed)
	fresh, freshR := NewTranslator().Row("a", StateShutoff, ShutoffCrashed)
	for _, c := range []struct {
		name string
		st   engine.DomState
		r    engine.Reason
	}{{"event", ev.State, ev.Reason}, {"row after the event", st, r}, {"row alone", fresh, freshR}} {
		t.Run(c.name, func(t *testing.T) {
			if c.st != engine.DomShutoff {
				t.Fatalf("state %s, want shutoff", c.st)
			}
			switch c.r {
			case engine.ReasonFailed, engine.ReasonCrashed, engine.ReasonPanicked:
			default:
				t.Fatalf("reason %s is not a crash reason", c.r)
			}
			// And the engine agrees it is a crash to recover from.
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			e := engine.New(engine.DefaultConfig())
			e.Step(t0, engine.AddHost{Host: "h1"})
			e.Step(t0, engine.Protect{VM: "a", Host: "h1", Policy: engine.DefaultPolicy()})
			e.Step(t0, engine.Observe{Host: "h1", VM: "a", Seq: 1, State: engine.DomRunning, Reason: engine.ReasonBooted})
			out := e.Step(t0.Add(time.Second), engine.Observe{Host: "h1", VM: "a", Seq: 2, State: c.st, Reason: c.r})
			if len(out.Actions) != 1 || out.Actions[0].Kind != engine.ActStart {
				t.Fatalf("engine actions %v, want one start", out.Actions)
			}
		})
	}
}

// validResult checks what any translation may return.
func validResult(t *testing.T, ev Event, res Result) {
	t.Helper()
	if res.State > engine.DomAbsent || res.Reason > engine.ReasonOwnStop || res.Sig > engine.SigGuestPanic {
		t.Fatalf("Event(%+v) = %+v: out of range", ev, res)
	}
	if res.Skip && res.Signal {
		t.Fatalf("Event(%+v) = %+v: both skip and signal", ev, res)
	}
	if ev.Kind != KindLifecycle {
		if !res.Signal {
			t.Fatalf("Event(%+v) = %+v: a %d event must be a signal", ev, res, ev.Kind)
		}
		return
	}
	if res.Signal {
		t.Fatalf("Event(%+v) = %+v: a lifecycle event is never a signal", ev, res)
	}
	want := map[int]engine.DomState{EvUndefined: engine.DomAbsent, EvStarted: engine.DomRunning,
		EvSuspended: engine.DomPaused, EvResumed: engine.DomRunning, EvStopped: engine.DomShutoff,
		EvCrashed: engine.DomCrashed}
	if ev.Type == EvStarted && ev.Detail == StartedMigrated {
		want[EvStarted] = engine.DomPaused // a migration's incoming copy is paused until it ends
	}
	if ws, ok := want[ev.Type]; ok {
		if res.Skip || res.State != ws {
			t.Fatalf("Event(%+v) = %+v: want state %s", ev, res, ws)
		}
	} else if !res.Skip {
		t.Fatalf("Event(%+v) = %+v: want skip", ev, res)
	}
}

func validRow(t *testing.T, state, reason int, st engine.DomState, r engine.Reason) {
	t.Helper()
	if st > engine.DomAbsent || r > engine.ReasonOwnStop {
		t.Fatalf("Row(%d, %d) = %d/%d: out of range", state, reason, st, r)
	}
	var want engine.DomState
	switch state {
	case StateRunning, StateBlocked, StateShutdown:
		want = engine.DomRunning
	case StatePaused, StatePMSuspended:
		want = engine.DomPaused
	case StateShutoff:
		want = engine.DomShutoff
	case StateCrashed:
		want = engine.DomCrashed
	default:
		want = engine.DomUnknown
	}
	if st != want {
		t.Fatalf("Row(%d, %d) = %s, want %s", state, reason, st, want)
	}
	if st == engine.DomAbsent || r == engine.ReasonUndefined {
		t.Fatalf("Row(%d, %d) = %s/%s: a listed domain is defined", state, reason, st, r)
	}
}

func FuzzTranslator(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 6, 1, 0, 0, 0, 5, 0, 1, 0, 5, 1})
	f.Add([]byte{2, 0, 3, 0, 0, 5, 1, 1, 0, 5, 1, 3, 0})
	f.Add([]byte{4, 0, 0, 0, 0, 5, 1, 1, 0, 5, 2, 5})
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := NewTranslator()
		b := func(i int) int {
			if i < len(data) {
				return int(data[i])
			}
			return 0
		}
		for i := 0; i < len(data); i += 5 {
			dom := doms[b(i+1)&1]
			switch b(i) % 6 {
			case 0, 1, 2:
				ev := Event{Kind: Kind(b(i+2) % 6), Domain: dom, Type: b(i+3)%12 - 1, Detail: b(i+4)%10 - 1,
					Watchdog: b(i+4) % 9}
				if b(i)%6 == 0 {
					ev.Kind = KindLifecycle
				}
				if ev.Kind > KindAgentLifecycle {
					ev.Kind = Kind(b(i + 2)) // garbage kinds fall back to lifecycle handling
				}
				res := tr.Event(ev)
				if ev.Kind <= KindAgentLifecycle {
					validResult(t, ev, res)
				} else if res.State > engine.DomAbsent || res.Reason > engine.ReasonOwnStop {
					t.Fatalf("Event(%+v) = %+v: out of range", ev, res)
				}
			case 3, 4:
				state, reason := b(i+2)%10-1, b(i+3)%10-1
				if b(i+4) == 255 {
					state, reason = b(i+2)*1000, -b(i+3)*1000
				}
				st, r := tr.Row(dom, state, reason)
				validRow(t, state, reason, st, r)
			default:
				if b(i+2)&1 == 0 {
					tr.Forget()
				} else {
					tr.Fencing(dom)
				}
			}
		}
	})
}

// TestDestroyOfWatchdogPausedDomain: the watchdog paused the guest, then a user destroys it
// with virsh. That stop is the user's, not the watchdog's.
func TestDestroyOfWatchdogPausedDomain(t *testing.T) {
	got := feed(NewTranslator(), []step{wd(engine.WatchdogPause), lc(EvSuspended, SuspendedWatchdog), lc(EvStopped, StoppedDestroyed)})
	if got.Reason != engine.ReasonDestroyed {
		t.Fatalf("reason %s, want destroyed", got.Reason)
	}
}

// TestRowAfterWatchdogPoweroff: a resync row after a watchdog power-off must still read as the
// watchdog's doing, as a row after a guest shutdown or a self-fence does; otherwise a lost
// event turns a failure into what looks like a user's virsh destroy.
func TestRowAfterWatchdogPoweroff(t *testing.T) {
	got := feed(NewTranslator(), []step{wd(engine.WatchdogPoweroff), lc(EvStopped, StoppedDestroyed), row(StateShutoff, ShutoffDestroyed)})
	if got.Reason != engine.ReasonWatchdog {
		t.Fatalf("row reason %s, want watchdog", got.Reason)
	}
}

// TestListedAfterLostStart: hass's hard reboot destroys the domain (own-stop), its start
// event is lost (libvirtd restarts), and a resync lists it running. A user's virsh destroy
// afterwards is the user's, not hass's own stop again (seed 67: hass restarted a VM the user
// had stopped); the same holds for a watchdog's power-off. A listing taken before the stop
// was stamped proves nothing, and a fence or hard reboot under way is kept.
func TestListedAfterLostStart(t *testing.T) {
	destroyed := Event{Kind: KindLifecycle, Domain: "a", Type: EvStopped, Detail: StoppedDestroyed}
	tests := []struct {
		name    string
		before  func(*Translator)
		listSeq uint64
		between func(*Translator)
		want    engine.Reason
	}{
		{"own stop, listed running after it", func(tr *Translator) { tr.OwnStop("a") }, 20, nil, engine.ReasonDestroyed},
		{"own stop, listing older than the stop", func(tr *Translator) { tr.OwnStop("a") }, 5, nil, engine.ReasonOwnStop},
		{"watchdog power-off, listed running after it",
			func(tr *Translator) {
				tr.Event(Event{Kind: KindWatchdog, Domain: "a", Watchdog: int(engine.WatchdogPoweroff)})
			},
			20, nil, engine.ReasonDestroyed},
		{"a fence under way survives a listing",
			nil, 20, func(tr *Translator) { tr.Fencing("a") }, engine.ReasonFenced},
		{"an own stop under way survives a listing",
			nil, 20, func(tr *Translator) { tr.OwnStop("a") }, engine.ReasonOwnStop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTranslator()
			if tc.before != nil {
				tc.before(tr)
			}
			tr.Event(destroyed)
			tr.Stopped("a", 10)
			if tc.between != nil {
				tc.between(tr)
			}
			tr.Listed("a", StateRunning, 1, tc.listSeq)
			if got := tr.Event(destroyed); got.Reason != tc.want {
				t.Fatalf("destroy after the listing reads %s, want %s", got.Reason, tc.want)
			}
		})
	}
}

// TestFencingUndone: a fence that found a domain not running undoes its mark, so the domain
// keeps the reason it had (a domain a user destroyed long before reads destroyed, not
// destroyed by the fence); one it stopped reads fenced.
func TestFencingUndone(t *testing.T) {
	tr := NewTranslator()
	undo := tr.Fencing("a")
	undo()
	if st, r := tr.Row("a", StateShutoff, ShutoffDestroyed); st != engine.DomShutoff || r != engine.ReasonDestroyed {
		t.Fatalf("a domain the fence did not stop reads %v/%v, want shutoff/destroyed", st, r)
	}
	tr.OwnStop("b")
	tr.Fencing("b")()
	if _, r := tr.Row("b", StateShutoff, ShutoffDestroyed); r != engine.ReasonOwnStop {
		t.Fatalf("undo lost what the translator knew before: %v, want own-stop", r)
	}
	tr.Fencing("c")
	if _, r := tr.Row("c", StateShutoff, ShutoffDestroyed); r != engine.ReasonFenced {
		t.Fatalf("a domain the fence stopped reads %v, want fenced", r)
	}
}
