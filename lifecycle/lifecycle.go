// Package lifecycle translates libvirt's vocabulary (domain event types and details, domain
// states and state reasons, watchdog actions) into the engine's driver-neutral observations.
//
// The translation is stateful per host: libvirt reports a guest shutdown as a SHUTDOWN event
// (detail GUEST or HOST) followed by STOPPED/SHUTDOWN, and a watchdog power-off as a WATCHDOG
// event followed by STOPPED/DESTROYED. The Translator remembers the first half so the second
// half carries the whole meaning, and so a later resync row (which only has the state reason
// SHUTOFF/SHUTDOWN) still says who shut the guest down. It runs on the host, next to libvirt,
// so whatever reorders or delays observations later cannot split the two halves.
//
// It must never do I/O: the agent feeds it, the simulator feeds it the same way.
package lifecycle

import (
	"github.com/hassproject/hass/engine"
)

// Domain event types (virDomainEventType).
const (
	EvDefined = iota
	EvUndefined
	EvStarted
	EvSuspended
	EvResumed
	EvStopped
	EvShutdown
	EvPMSuspended
	EvCrashed
)

// Details of EvStarted.
const (
	StartedBooted = iota
	StartedMigrated
	StartedRestored
	StartedFromSnapshot
	StartedWakeup
)

// Details of EvSuspended.
const (
	SuspendedPaused = iota
	SuspendedMigrated
	SuspendedIOError
	SuspendedWatchdog
	SuspendedRestored
	SuspendedFromSnapshot
	SuspendedAPIError
)

// Details of EvResumed.
const (
	ResumedUnpaused = iota
	ResumedMigrated
	ResumedFromSnapshot
)

// Details of EvStopped.
const (
	StoppedShutdown = iota
	StoppedDestroyed
	StoppedCrashed
	StoppedMigrated
	StoppedSaved
	StoppedFailed
	StoppedFromSnapshot
)

// Details of EvShutdown.
const (
	ShutdownFinished = iota // old libvirt: initiator unknown
	ShutdownGuest
	ShutdownHost
)

// Details of EvCrashed.
const (
	CrashedPanicked = iota
	CrashedCrashLoaded
)

// Domain states (virDomainState).
const (
	StateNoState = iota
	StateRunning
	StateBlocked
	StatePaused
	StateShutdown
	StateShutoff
	StateCrashed
	StatePMSuspended
)

// Reasons for StatePaused (virDomainPausedReason), the ones that matter here.
const (
	PausedUnknown   = 0
	PausedUser      = 1
	PausedMigration = 2
	PausedIOError   = 5
	PausedWatchdog  = 6
)

// Reasons for StateShutoff (virDomainShutoffReason).
const (
	ShutoffUnknown = iota
	ShutoffShutdown
	ShutoffDestroyed
	ShutoffCrashed
	ShutoffMigrated
	ShutoffSaved
	ShutoffFailed
	ShutoffFromSnapshot
	ShutoffDaemon
)

// Reasons for StateCrashed.
const (
	CrashedReasonUnknown  = 0
	CrashedReasonPanicked = 1
)

// Kind says which libvirt callback an Event came from.
type Kind uint8

// Event kinds.
const (
	KindLifecycle Kind = iota
	KindReboot
	KindWatchdog
	KindIOError
	KindAgentLifecycle
)

// Event is one libvirt domain event, as the driver received it.
type Event struct {
	Kind     Kind
	Domain   string
	Type     int // lifecycle: event type
	Detail   int // lifecycle: detail; agent lifecycle: 1 connected, 2 disconnected
	Watchdog int // watchdog: action (virDomainEventWatchdogAction)
}

type memo struct {
	shutdown engine.Reason // ShutdownGuest/ShutdownHost once the SHUTDOWN half was seen
	watchdog bool          // a watchdog pause is under way: the SUSPENDED half is its doing
	wdStop   bool          // the watchdog powered the guest off: the STOPPED half and later rows are its doing
	fenced   bool          // the agent destroyed it to fence itself
	hung     bool          // the watchdog fired and nothing reset the guest yet
	ownStop  bool          // hass's executor is stopping it itself (a hard reboot)
	// stopSeq is the agent's stamp of the stop these fields describe (see Stopped), while
	// nothing else was heard of the domain since; 0 otherwise. A listing taken after that
	// stamp that shows the domain up proves it started since, its start event lost (a
	// libvirtd restart): what explained the stop no longer applies (see Listed).
	stopSeq uint64
}

// Translator turns the events and rows of one host into engine terms.
type Translator struct {
	memo map[string]memo
}

// NewTranslator returns a translator with no memory.
func NewTranslator() *Translator { return &Translator{memo: map[string]memo{}} }

// Result is what one event means: a state change, a signal, or nothing (Skip).
type Result struct {
	Skip   bool
	Signal bool
	State  engine.DomState
	Reason engine.Reason
	Sig    engine.SignalKind
	WD     engine.WatchdogAction
}

// Event translates one event.
func (t *Translator) Event(ev Event) Result {
	m := t.memo[ev.Domain]
	if m.stopSeq != 0 && !(ev.Kind == KindLifecycle && ev.Type == EvDefined) {
		m.stopSeq = 0 // heard of since its stop
		t.memo[ev.Domain] = m
	}
	switch ev.Kind {
	case KindReboot:
		if m.hung {
			m.hung = false
			t.memo[ev.Domain] = m
		}
		return Result{Signal: true, Sig: engine.SigReboot}
	case KindIOError:
		return Result{Signal: true, Sig: engine.SigIOError}
	case KindAgentLifecycle:
		if ev.Detail == 2 {
			return Result{Signal: true, Sig: engine.SigAgentDown}
		}
		return Result{Signal: true, Sig: engine.SigAgentUp}
	case KindWatchdog:
		wd := engine.WatchdogAction(ev.Watchdog)
		switch wd {
		case engine.WatchdogPause:
			m.watchdog = true
		case engine.WatchdogPoweroff, engine.WatchdogShutdown:
			m.wdStop = true
		case engine.WatchdogNone, engine.WatchdogDebug, engine.WatchdogInjectNMI:
			m.hung = true // remembered, so a resync still reports the hang
		}
		t.memo[ev.Domain] = m
		return Result{Signal: true, Sig: engine.SigWatchdog, WD: wd}
	}
	switch ev.Type {
	case EvDefined, EvPMSuspended:
		return Result{Skip: true}
	case EvUndefined:
		delete(t.memo, ev.Domain)
		return Result{State: engine.DomAbsent, Reason: engine.ReasonUndefined}
	case EvStarted:
		delete(t.memo, ev.Domain)
		r := engine.ReasonBooted
		switch ev.Detail {
		case StartedMigrated:
			// The destination of a live migration: libvirt starts the incoming copy paused
			// when the migration begins, and resumes it (RESUMED/MIGRATED) when it ends.
			return Result{State: engine.DomPaused, Reason: engine.ReasonMigrated}
		case StartedRestored, StartedFromSnapshot:
			r = engine.ReasonRestored
		}
		return Result{State: engine.DomRunning, Reason: r}
	case EvSuspended:
		r := engine.ReasonUser
		switch ev.Detail {
		case SuspendedMigrated:
			r = engine.ReasonMigrated
		case SuspendedIOError:
			r = engine.ReasonIOError
		case SuspendedWatchdog:
			r = engine.ReasonWatchdog
		case SuspendedAPIError:
			r = engine.ReasonUnknown
		}
		if m.watchdog {
			r = engine.ReasonWatchdog
			m.watchdog = false // it explained this pause; nothing after it
			t.memo[ev.Domain] = m
		}
		return Result{State: engine.DomPaused, Reason: r}
	case EvResumed:
		m.watchdog = false
		t.memo[ev.Domain] = m
		r := engine.ReasonResumed
		if ev.Detail == ResumedMigrated {
			r = engine.ReasonMigrated
		}
		return Result{State: engine.DomRunning, Reason: r}
	case EvShutdown:
		switch ev.Detail {
		case ShutdownGuest:
			m.shutdown = engine.ReasonShutdownGuest
		case ShutdownHost:
			m.shutdown = engine.ReasonShutdownHost
		}
		t.memo[ev.Domain] = m
		return Result{Skip: true} // the STOPPED half carries the state change
	case EvStopped:
		r := engine.ReasonUnknown
		switch ev.Detail {
		case StoppedShutdown:
			r = engine.ReasonShutdown
			if m.shutdown != 0 {
				r = m.shutdown
			}
		case StoppedDestroyed:
			r = engine.ReasonDestroyed
		case StoppedCrashed:
			r = engine.ReasonCrashed
		case StoppedMigrated:
			r = engine.ReasonMigrated
		case StoppedSaved:
			r = engine.ReasonDestroyed // saved to disk by request: stopped on purpose
		case StoppedFailed:
			r = engine.ReasonFailed
		case StoppedFromSnapshot:
			r = engine.ReasonRestored
		}
		if m.wdStop {
			r = engine.ReasonWatchdog
		}
		if m.fenced && ev.Detail == StoppedDestroyed {
			r = engine.ReasonFenced
		}
		if m.ownStop && ev.Detail == StoppedDestroyed {
			r = engine.ReasonOwnStop
		}
		// Keep who stopped it for later resync rows.
		t.memo[ev.Domain] = memo{shutdown: shutdownOf(r), fenced: r == engine.ReasonFenced,
			wdStop: r == engine.ReasonWatchdog, ownStop: r == engine.ReasonOwnStop}
		return Result{State: engine.DomShutoff, Reason: r}
	case EvCrashed:
		return Result{State: engine.DomCrashed, Reason: engine.ReasonPanicked}
	}
	return Result{Skip: true}
}

func shutdownOf(r engine.Reason) engine.Reason {
	if r == engine.ReasonShutdownGuest || r == engine.ReasonShutdownHost {
		return r
	}
	return 0
}

// Row translates one row of a domain listing (state and state reason).
func (t *Translator) Row(domain string, state, reason int) (engine.DomState, engine.Reason) {
	m := t.memo[domain]
	switch state {
	case StateRunning, StateBlocked, StateShutdown:
		if m.hung {
			return engine.DomRunning, engine.ReasonWatchdog
		}
		r := engine.ReasonBooted
		if state == StateRunning && reason == 2 {
			r = engine.ReasonMigrated
		}
		return engine.DomRunning, r
	case StatePaused, StatePMSuspended:
		switch reason {
		case PausedIOError:
			return engine.DomPaused, engine.ReasonIOError
		case PausedWatchdog:
			return engine.DomPaused, engine.ReasonWatchdog
		case PausedMigration:
			return engine.DomPaused, engine.ReasonMigrated
		case PausedUser:
			return engine.DomPaused, engine.ReasonUser
		}
		// Starting up, saving, dumping, snapshotting, shutting down: a passing state that
		// nobody asked for as such.
		return engine.DomPaused, engine.ReasonUnknown
	case StateShutoff:
		switch reason {
		case ShutoffShutdown:
			if m.shutdown != 0 {
				return engine.DomShutoff, m.shutdown
			}
			return engine.DomShutoff, engine.ReasonShutdown
		case ShutoffDestroyed, ShutoffSaved:
			if m.fenced {
				return engine.DomShutoff, engine.ReasonFenced
			}
			if m.wdStop {
				return engine.DomShutoff, engine.ReasonWatchdog
			}
			if m.ownStop {
				return engine.DomShutoff, engine.ReasonOwnStop
			}
			return engine.DomShutoff, engine.ReasonDestroyed
		case ShutoffCrashed:
			return engine.DomShutoff, engine.ReasonCrashed
		case ShutoffMigrated:
			return engine.DomShutoff, engine.ReasonMigrated
		case ShutoffFailed:
			return engine.DomShutoff, engine.ReasonFailed
		}
		return engine.DomShutoff, engine.ReasonUnknown
	case StateCrashed:
		return engine.DomCrashed, engine.ReasonPanicked
	}
	return engine.DomUnknown, engine.ReasonUnknown
}

// Stopped tells the translator the agent's stamp of the stop event it just translated for
// domain (a shutoff state), so that a later listing can tell whether it was taken after it.
func (t *Translator) Stopped(domain string, seq uint64) {
	if m, ok := t.memo[domain]; ok {
		m.stopSeq = seq
		t.memo[domain] = m
	}
}

// Listed translates one row of a listing taken after the agent's stamp seq (a resync). A
// row that shows the domain up although its last stop event was stamped before seq, with
// nothing heard since, means it was started and the start event was lost: the memory of
// that stop is dropped, as a start event drops it, so that the next stop is not read as the
// old one's doing (a user's virsh destroy as hass's own hard reboot, or a watchdog's).
func (t *Translator) Listed(domain string, state, reason int, seq uint64) (engine.DomState, engine.Reason) {
	if m, ok := t.memo[domain]; ok && m.stopSeq != 0 && m.stopSeq < seq {
		switch state {
		case StateRunning, StateBlocked, StateShutdown, StatePaused, StatePMSuspended:
			delete(t.memo, domain)
		}
	}
	return t.Row(domain, state, reason)
}

// Fencing tells the translator that the agent is about to destroy domain to fence itself,
// so the destroy is reported as a fence, not as a user's stop.
//
// It returns the undo, for a destroy that found the domain not running: a domain the fence
// did not stop keeps the reason it had (marked, a domain shut off long before would read
// destroyed by the fence, and a copy that only appeared there would look like one that ran).
func (t *Translator) Fencing(domain string) (undo func()) {
	m, had := t.memo[domain]
	n := m
	n.fenced, n.stopSeq = true, 0
	t.memo[domain] = n
	return func() {
		if had {
			t.memo[domain] = m
		} else {
			delete(t.memo, domain)
		}
	}
}

// KeptStop says whether a domain shut off for reason r was stopped by somebody libvirt's own
// shutoff reason does not name (the guest or the host's shutdown, the agent's fence, the
// watchdog, hass's executor): what an agent keeps for the next process (Stopper).
func KeptStop(r engine.Reason) bool {
	var m memo
	return m.stoppedBy(r)
}

// stoppedBy notes in m that r stopped the domain, if r is a stop an agent keeps (KeptStop).
func (m *memo) stoppedBy(r engine.Reason) bool {
	switch r {
	case engine.ReasonShutdownGuest, engine.ReasonShutdownHost:
		m.shutdown = r
	case engine.ReasonFenced:
		m.fenced = true
	case engine.ReasonWatchdog:
		m.wdStop = true
	case engine.ReasonOwnStop:
		m.ownStop = true
	default:
		return false
	}
	return true
}

// Stopper tells a new translator who stopped domain, as the agent process before it knew
// (KeptStop): its rows then read as that process's would, until a row or an event shows it
// up again (it was started since: the memory goes, as a start event drops it).
func (t *Translator) Stopper(domain string, r engine.Reason) {
	m := t.memo[domain]
	if !m.stoppedBy(r) {
		return
	}
	m.stopSeq = 1 // before anything this process stamps
	t.memo[domain] = m
}

// OwnStop tells the translator that hass's executor is about to destroy domain as one step
// of an operation (a hard reboot), so the stop is reported as hass's own, not a user's.
func (t *Translator) OwnStop(domain string) {
	m := t.memo[domain]
	m.ownStop, m.stopSeq = true, 0
	t.memo[domain] = m
}

// Forget drops what the translator remembers (the agent restarted: memory is gone).
func (t *Translator) Forget() { clear(t.memo) }
