package api

import (
	"time"

	"github.com/hassproject/hass/engine"
)

// ViewPolicy is the API view of an engine policy.
func ViewPolicy(p engine.Policy) PolicyView {
	return PolicyView{
		MaxRestarts:      p.MaxRestarts,
		Window:           p.Window.String(),
		MaxRelocations:   p.MaxRelocations,
		OnGuestShutdown:  p.OnGuestShutdown.String(),
		Priority:         p.Priority,
		AntiAffinity:     p.AntiAffinity,
		AntiAffinityHard: p.AntiAffinityHard,
		Guest:            ViewGuest(p.Guest),
		NovaInstance:     p.Instance,
		NovaScheduler:    p.NovaScheduler,
	}
}

// ViewGuest is the API view of a guest policy, defaults filled in; nil when no layer is on.
func ViewGuest(g engine.GuestPolicy) *GuestPolicy {
	if !g.Enabled() {
		return nil
	}
	g = g.WithDefaults()
	d := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	return &GuestPolicy{Heartbeat: g.Heartbeat, HeartbeatInterval: d(g.HeartbeatInterval), HeartbeatTimeout: d(g.HeartbeatTimeout),
		HeartbeatMisses: g.HeartbeatMisses, Probe: g.Probe, Port: g.Port, Address: g.Address,
		ProbeInterval: d(g.ProbeInterval), ProbeTimeout: d(g.ProbeTimeout), ProbeMisses: g.ProbeMisses, Recheck: d(g.Recheck)}
}

// FromOperation is the API view of an engine operation.
func FromOperation(o engine.Operation) Operation {
	return Operation{
		ID:       o.ID,
		VM:       string(o.VM),
		Op:       o.Kind.String(),
		Source:   o.Source.String(),
		Phase:    o.Phase.String(),
		Started:  o.Started,
		Deadline: o.Deadline,
		Target:   string(o.Target),
	}
}

// FromStatus is the API view of one engine VMStatus.
func FromStatus(s engine.VMStatus) VM {
	vm := VM{
		Name:        string(s.VM),
		Host:        string(s.Home),
		Desired:     s.Desired.String(),
		Observed:    s.Observed.String(),
		Reason:      s.Reason.String(),
		State:       s.State,
		Failure:     string(s.Failure),
		Restarts:    s.Restarts,
		Relocations: s.Relocations,
		Policy:      ViewPolicy(s.Policy),
		Cluster:     s.Cluster,
		VCPUs:       s.VCPUs,
		MemMiB:      s.MemMiB,
		Waiting:     s.Waiting,
	}
	if s.Op != nil {
		op := FromOperation(*s.Op)
		vm.Operation = &op
	}
	return vm
}

// FromRecord is the API view of one event log record; seq is its position in the log.
func FromRecord(seq uint64, r engine.Record) Event {
	return Event{
		Seq:         seq,
		At:          r.At,
		Type:        string(r.Type),
		VM:          string(r.VM),
		Host:        string(r.Host),
		Kind:        string(r.Kind),
		Msg:         r.Msg,
		FaultAt:     timePtr(r.FaultAt),
		DetectAt:    timePtr(r.DetectAt),
		ActionAt:    timePtr(r.ActionAt),
		RecoveredAt: timePtr(r.RecoveredAt),
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
