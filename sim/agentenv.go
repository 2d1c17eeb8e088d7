package sim

import (
	"context"
	"fmt"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/lifecycle"
)

// agentEnv is the simulated world around one host's agent: the same agent.Agent the daemon
// runs, over the simulated hypervisor, bus and store (in the manner of pve-ha-manager's
// Env.pm, each method is a one-line delegation).
type agentEnv struct {
	s *Sim
	h *host
}

var _ agent.Env = agentEnv{}

// Report puts the agent's report on the bus to the controller (and in the store).
func (e agentEnv) Report(in engine.Input) { e.s.send(e.h, in) }

// Current reads the order's fencing token against the store: the VM's intent generation as
// the controller last recorded it.
func (e agentEnv) Current(a engine.Action) bool { return e.s.storeCurrent(a) }

// Execute carries the order out with agent.Carry, the daemon's executor, over the host's
// simulated hypervisor (simDriver), the domain definitions coming from the simulated store.
func (e agentEnv) Execute(a engine.Action, done func(time.Time, agent.Outcome)) {
	reply := func(err error) {
		if e.h.lose[a.VM] > 0 && e.h.reachable() {
			e.h.lose[a.VM]--
			e.s.trace("bus: lost result of action %d", a.ID)
			return
		}
		done(e.s.now, e.s.outcome(e.h, a.VM, err))
	}
	e.s.checkGuestRecovery(e.h, a)
	drv := &simDriver{s: e.s, h: e.h, current: func() bool { return e.s.storeCurrent(a) }}
	err := agent.Carry(context.Background(), drv, a, simDefs{e.s})
	if err == nil && drv.later != nil {
		drv.later(reply) // the call goes on in virtual time
		return
	}
	reply(err)
	for _, fn := range drv.then {
		fn()
	}
}

// Protected lists the protected VMs that have a domain on this host.
func (e agentEnv) Protected() []engine.VMID {
	var out []engine.VMID
	for _, id := range e.s.domIDs(e.h) {
		if e.h.doms[id] != nil {
			out = append(out, id)
		}
	}
	return out
}

// Destroy kills a domain at once (a self-fence).
func (e agentEnv) Destroy(id engine.VMID) bool {
	d := e.h.doms[id]
	if d == nil || !up(d.state) {
		return false // libvirt: not running, or no such domain
	}
	e.s.faultIfWanted(id, "self-fence on "+string(e.h.id))
	if e.h.partitioned || e.h.storeCut {
		e.s.lostWithHost(id, e.h) // fenced because its host was cut off
	}
	e.s.res.FenceKills++
	if t := e.s.vms[id]; t != nil {
		t.fencedOn = e.h.id
	}
	e.s.setDom(e.h, id, d, lifecycle.StateShutoff, lifecycle.ShutoffDestroyed, lc(lifecycle.EvStopped, lifecycle.StoppedDestroyed))
	return true
}

// Members lists the simulated cluster's hosts.
func (e agentEnv) Members() []engine.HostID {
	if e.h.knows != nil {
		return e.h.knows
	}
	return e.s.hostIDs
}

// Heard is the last heartbeat from peer that reached this host over the hosts' network.
func (e agentEnv) Heard(peer engine.HostID) (agent.Heartbeat, time.Time, bool) {
	if e.h.partitioned {
		return agent.Heartbeat{}, time.Time{}, false // cut off: it hears nobody
	}
	hb, ok := e.s.beats[peer]
	return hb, hb.At, ok
}

// PetWatchdog pets the host's hardware watchdog.
func (e agentEnv) PetWatchdog() { e.h.lastPet = e.s.now }

// SendHeartbeat tells the peers, over the hosts' own network, that this agent is alive.
func (e agentEnv) SendHeartbeat(hb agent.Heartbeat) {
	if !e.h.partitioned {
		e.s.beats[e.h.id] = hb
	}
}

// Log writes an agent line into the story.
func (e agentEnv) Log(format string, args ...any) {
	e.s.trace("agent %s: %s", e.h.id, fmt.Sprintf(format, args...))
}

// outcome is how an order left the domain, as the executor lists it after the call.
func (s *Sim) outcome(h *host, id engine.VMID, err error) agent.Outcome {
	o := agent.Outcome{Err: err, Unreached: agent.Unreached(err)}
	switch d := h.doms[id]; {
	case !h.libvirtd: // the listing after the call failed too
	case d != nil:
		o.Row = &agent.Row{Name: string(id), State: d.state, Reason: d.reason}
	default:
		o.Absent = true
	}
	return o
}

// Remember keeps what the agent process must leave to the next one on the host's disk.
func (e agentEnv) Remember(p agent.Past) { e.h.past = p }
