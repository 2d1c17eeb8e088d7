package benchmark

import (
	"fmt"
	"strings"
	"time"

	"github.com/hassproject/hass/engine"
)

// What the workload fed the engine, and what ran in the engine as a result.

// Kind is a class of engine call.
type Kind int

// Kinds of engine call. Poll is not an input: it is the driver asking NextWake.
const (
	KindObserve Kind = iota
	KindSnapshot
	KindLeaseRenewed
	KindLeaseExpired
	KindResult
	KindRequest
	KindSignal
	KindTick
	KindProtect
	KindOther
	KindPoll
	nKinds
)

var kindNames = [nKinds]string{"observe", "snapshot", "lease renewed", "lease expired", "action result",
	"request", "signal", "tick", "protect", "other", "NextWake poll"}

func (k Kind) String() string { return kindNames[k] }

func kindOf(in engine.Input) Kind {
	switch in := in.(type) {
	case engine.Observe:
		return KindObserve
	case engine.Snapshot:
		return KindSnapshot
	case engine.HostLease:
		if in.Alive {
			return KindLeaseRenewed
		}
		return KindLeaseExpired
	case engine.ActionResult:
		return KindResult
	case engine.Request:
		return KindRequest
	case engine.Signal:
		return KindSignal
	case engine.Tick:
		return KindTick
	case engine.Protect:
		return KindProtect
	}
	return KindOther
}

const (
	faultCrash = iota
	faultPanic
	faultHang
	faultGuestOff
	faultIOError
	nFaults
)

var faultNames = [nFaults]string{"emulator crash", "guest panic", "guest hang", "guest shutdown", "I/O error pause"}

// KindStats is what one kind of engine call did in the recording.
type KindStats struct {
	Calls   int
	Nanos   int64 // engine time, measured call by call while recording
	Actions int   // actions the engine ordered in answer
	Busy    int   // calls that ordered at least one action
}

// Mix is what the workload fed the engine and what ran in the engine as a result.
type Mix struct {
	Inputs  int // Steps; NextWake polls are counted apart
	Kinds   [nKinds]KindStats
	Actions [engine.ActFence + 1]int // actions the engine ordered, by kind
	Ops     [engine.OpResume + 1]int // requests, by operation
	Refused int                      // requests the engine refused (Output.Err)

	// Paths the engine took, read from its event log.
	Detected, Recovered, GaveUp    int
	OpsDone, OpsFailed, OpsExpired int
	Escal                          int // shutdowns the guest ignored, escalated to a destroy
	Inferred                       int // operations done behind hass's back (virsh, the guest)
	Relocations, MigratePlaced     int // placements: recovery elsewhere; migrations to a host the engine chose
	Fenced, HostsUp                int
	Stale, Alerts, Forgotten       int

	// What the workload did.
	Faults                  [nFaults]int
	Virsh, Created          int // virsh destroys; new VMs protected in place of deleted ones
	HostLosses, HostRepairs int

	// How the agents answered.
	Answered         int // actions answered with an ActionResult
	ActionErrors     int // of which with an error
	ActionsLost      int // actions lost with their host
	ActionsOvertaken int // actions the executor dropped: no longer current
	SplitBrain       int // starts while another copy ran (must stay 0)

	wakePolls, inputsWithAction, actionsOrdered int
}

func (m *Mix) count(k Kind, dt time.Duration, out engine.Output) {
	m.Inputs++
	ks := &m.Kinds[k]
	ks.Calls++
	ks.Nanos += dt.Nanoseconds()
	ks.Actions += len(out.Actions)
	if len(out.Actions) > 0 {
		ks.Busy++
		m.inputsWithAction++
	}
	m.actionsOrdered += len(out.Actions)
	for _, a := range out.Actions {
		m.Actions[a.Kind]++
	}
	for _, r := range out.Log {
		m.record(r)
	}
}

func (m *Mix) polled(dt time.Duration) {
	m.wakePolls++
	m.Kinds[KindPoll].Calls++
	m.Kinds[KindPoll].Nanos += dt.Nanoseconds()
}

func (m *Mix) record(r engine.Record) {
	switch r.Type {
	case engine.RecDetect:
		m.Detected++
	case engine.RecRecovered:
		m.Recovered++
	case engine.RecGaveUp:
		m.GaveUp++
	case engine.RecStale:
		m.Stale++
	case engine.RecAlert:
		m.Alerts++
	case engine.RecForget:
		m.Forgotten++
	case engine.RecHost:
		switch {
		case strings.HasPrefix(r.Msg, "fenced:"):
			m.Fenced++
		case strings.HasPrefix(r.Msg, "lease renewed"):
			m.HostsUp++
		}
	case engine.RecOp:
		switch {
		case strings.HasPrefix(r.Msg, "relocating to "):
			m.Relocations++
		case strings.Contains(r.Msg, " inferred "):
			m.Inferred++
		case strings.Contains(r.Msg, " accepted "):
			if strings.HasPrefix(r.Msg, "migrate ") {
				m.MigratePlaced++ // the workload never names a target
			}
		case strings.Contains(r.Msg, " done: "):
			m.OpsDone++
		case strings.Contains(r.Msg, " failed: "):
			m.OpsFailed++
		case strings.Contains(r.Msg, " expired: "):
			m.OpsExpired++
		case strings.Contains(r.Msg, "outlived its deadline"):
			m.Escal++
		}
	}
}

// Placements is how many times the engine chose a host: relocations and migrations.
func (m *Mix) Placements() int { return m.Relocations + m.MigratePlaced }

// ActionsPerInput is how many actions the engine ordered per input.
func (m *Mix) ActionsPerInput() float64 { return float64(m.actionsOrdered) / float64(max(m.Inputs, 1)) }

// ActiveShare is the share of inputs that made the engine order at least one action.
func (m *Mix) ActiveShare() float64 { return float64(m.inputsWithAction) / float64(max(m.Inputs, 1)) }

// Share is kind k's share of the inputs.
func (m *Mix) Share(k Kind) float64 { return float64(m.Kinds[k].Calls) / float64(max(m.Inputs, 1)) }

func commas(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
