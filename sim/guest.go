package sim

import (
	"fmt"
	"strings"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/guest"
	"github.com/hassproject/hass/lifecycle"
)

// The guest layers in the simulator: every host's agent process runs the same guest monitor
// (package guest) as hass agent does, over the simulated guests: their agent (guest-ping) and
// their address (a probe) answer from the simulator's ground truth. The faults: a guest that
// hangs silently (no watchdog: only the OS layer can see it), a guest whose network dies (until
// it restarts), transient network losses, the guest agent restarting inside the guest, and
// probes lost at random. The checker counts a reset or reboot hass orders for a guest layer
// while the guest is fine as a false recovery; a hung guest or a dead network not recovered
// within the deadline is a missed failure.

// guestPolicy is what the random workload's guest-layered VMs are protected with: both layers,
// probed every 5 s (the simulator pays for every probe).
func guestPolicy() engine.GuestPolicy {
	return engine.GuestPolicy{Heartbeat: true, HeartbeatInterval: 5 * time.Second, HeartbeatTimeout: time.Second,
		Probe: engine.ProbeICMP, ProbeInterval: 5 * time.Second, ProbeTimeout: time.Second, Recheck: 2 * time.Second}
}

// guestBoot is how long after a guest (re)starts its agent and its network answer.
const guestBoot = 3 * time.Second

// guestEnv is the world around one host's guest monitor.
type guestEnv struct {
	s *Sim
	h *host
}

var _ guest.Env = guestEnv{}

// answers says whether vm's guest on h would answer a layer now (net: its address, else its
// agent), and draws a random probe loss.
func (e guestEnv) answers(vm engine.VMID, net bool) bool {
	s, h := e.s, e.h
	d := h.doms[vm]
	if d == nil || !h.power || d.state != lifecycle.StateRunning || d.hung || s.now.Before(d.bootedAt.Add(guestBoot)) {
		return false
	}
	if net && d.netDown || !net && d.agentGone {
		return false
	}
	return s.cfg.ProbeLossProb <= 0 || s.grng().Float64() >= s.cfg.ProbeLossProb
}

// later calls done after d, in this agent process only (a probe's answer dies with it).
func (e guestEnv) later(d time.Duration, done func(time.Time, bool), ok bool) {
	s, h, ep, mon := e.s, e.h, e.h.epoch, e.h.mon
	s.after(d, func() {
		if h.epoch != ep || !h.agent || h.mon != mon {
			return
		}
		done(s.now, ok)
		s.guestWake(h)
	})
}

func (e guestEnv) Ping(vm engine.VMID, timeout time.Duration, done func(time.Time, bool)) {
	e.s.res.GuestProbes++
	if e.answers(vm, false) {
		e.later(5*time.Millisecond, done, true)
		return
	}
	e.later(timeout, done, false)
}

func (e guestEnv) Reach(vm engine.VMID, p engine.GuestPolicy, done func(time.Time, bool)) {
	e.s.res.GuestProbes++
	if e.answers(vm, true) {
		e.later(time.Millisecond, done, true)
		return
	}
	e.later(p.ProbeTimeout, done, false)
}

func (e guestEnv) Running(vm engine.VMID, done func(time.Time, bool)) {
	d := e.h.doms[vm]
	e.later(2*time.Millisecond, done, d != nil && e.h.libvirtd && d.state == lifecycle.StateRunning)
}

func (e guestEnv) Failed(vm engine.VMID, kind engine.SignalKind, at time.Time, why string) {
	e.s.res.GuestReports++
	e.s.trace("agent %s: guest layer: %s %s: %s", e.h.id, vm, kind, why)
	e.h.ag.GuestFailed(e.s.now, vm, kind)
}

func (e guestEnv) Log(format string, args ...any) {
	e.s.trace("agent %s: guest: %s", e.h.id, fmt.Sprintf(format, args...))
}

// grng is the random source of the guest layers' probe losses, apart from the workload's.
func (s *Sim) grng() interface{ Float64() float64 } { return s.frng }

// newMonitor starts the guest monitor of h's (new) agent process, watching every VM whose
// policy has a guest layer, as hass agent does from the store.
func (s *Sim) newMonitor(h *host) {
	h.mon = guest.New(guest.DefaultConfig(), guestEnv{s: s, h: h})
	h.guestAt = time.Time{}
	for _, id := range s.guestVMs {
		if t := s.vms[id]; t != nil && !t.gone {
			d := h.doms[id]
			if d != nil && d.state == lifecycle.StateRunning && (d.hung || d.netDown) && !t.faultAt.IsZero() && !t.ambiguous {
				// A known gap, not the checker's leniency: the new agent process's monitor
				// never saw this guest's layer answer (its predecessor did, and died with
				// what it knew), so by the rule that a layer counts only once it answered
				// since the guest started, nothing can find this failure now.
				t.ambiguous = true
				s.trace("truth: %s's guest layer failed before the agent on %s restarted: its new monitor never saw it answer", id, h.id)
			}
			h.mon.Watch(s.now, id, t.policy.Guest, d != nil && d.state == lifecycle.StateRunning)
		}
	}
	s.guestWake(h)
}

// watchGuest has every host's monitor watch a newly protected VM with guest layers.
func (s *Sim) watchGuest(id engine.VMID, p engine.GuestPolicy, on *host) {
	if !p.Enabled() {
		return
	}
	s.guestVMs = append(s.guestVMs, id)
	for _, h := range s.hosts {
		if h.mon == nil {
			continue
		}
		d := h.doms[id]
		h.mon.Watch(s.now, id, p, h == on && d != nil && d.state == lifecycle.StateRunning)
		s.guestWake(h)
	}
}

// guestWake makes sure h's monitor is ticked when it next has something to do.
func (s *Sim) guestWake(h *host) {
	if h.mon == nil {
		return
	}
	next := h.mon.Next()
	if next.IsZero() || (!h.guestAt.IsZero() && !h.guestAt.After(next)) {
		return
	}
	if next.Before(s.now) {
		next = s.now
	}
	h.guestAt = next
	mon, ep := h.mon, h.epoch
	s.at(next, func() {
		if h.guestAt.Equal(next) {
			h.guestAt = time.Time{}
		}
		if h.mon != mon || h.epoch != ep || !h.agent || !h.power {
			return
		}
		mon.Tick(s.now)
		s.guestWake(h)
	})
}

// guestTruth keeps the guest's ground truth across a libvirt event: a boot or a reboot brings
// its agent and its network up afresh.
func (s *Sim) guestTruth(h *host, id engine.VMID, ev lifecycle.Event) {
	d := h.doms[id]
	if d == nil {
		return
	}
	if (ev.Kind == lifecycle.KindLifecycle && ev.Type == lifecycle.EvStarted) || ev.Kind == lifecycle.KindReboot {
		was := d.netDown || d.hung
		d.bootedAt, d.netDown, d.agentGone = s.now, false, false
		if ev.Kind == lifecycle.KindReboot {
			d.hung = false // it rebooted: it runs its code again
		}
		if was && ev.Kind == lifecycle.KindReboot {
			s.afterChange(id) // a reboot inside the emulator changes no domain state
		}
	}
}

// guestEvent tells h's monitor what a libvirt event means for the guest layers (as node does).
func (s *Sim) guestEvent(h *host, id engine.VMID, ev lifecycle.Event) {
	if h.mon == nil {
		return
	}
	switch ev.Kind {
	case lifecycle.KindLifecycle:
		switch ev.Type {
		case lifecycle.EvStarted, lifecycle.EvResumed:
			h.mon.Started(s.now, id)
		case lifecycle.EvStopped, lifecycle.EvSuspended, lifecycle.EvCrashed, lifecycle.EvPMSuspended, lifecycle.EvShutdown:
			h.mon.Stopped(s.now, id)
		}
	case lifecycle.KindReboot:
		h.mon.Started(s.now, id)
	case lifecycle.KindAgentLifecycle:
		if ev.Detail == 2 {
			h.mon.AgentGone(s.now, id)
		}
	}
	s.guestWake(h)
}

// guestFault strikes a guest-layered VM: a silent hang, its network dying, a transient
// network loss, or its guest agent restarting.
func (s *Sim) guestFault(id engine.VMID, kind string) {
	h, d := s.hostOf(id)
	if h == nil || d == nil || d.state != lifecycle.StateRunning || d.hung || d.netDown {
		return
	}
	if s.now.Before(d.bootedAt.Add(guestBoot + 15*time.Second)) {
		// Still booting, or up for less than the monitor needs to see each layer answer
		// once (two probe intervals): a layer that never answered since the guest started
		// is not watched yet, by design (a guest without an agent, or whose network never
		// came up, is not a failure).
		return
	}
	switch kind {
	case "silent-hang":
		s.res.GuestFaults++
		s.trace("truth: guest %s hangs silently (no watchdog)", id)
		s.faultIfWanted(id, "guest hangs silently")
		d.hung = true
		s.afterChange(id)
	case "net-dies":
		s.res.GuestFaults++
		s.trace("truth: the network of guest %s dies", id)
		s.faultIfWanted(id, "guest network dies")
		d.netDown = true
		s.afterChange(id)
	case "net-blip":
		s.res.GuestFaults++
		loss := time.Second + time.Duration(s.frng.Int64N(int64(4*time.Second)))
		s.trace("truth: the network of guest %s is lost for %s (transient)", id, loss)
		d.netDown = true
		g := d.gen
		s.after(loss, func() {
			if d.gen == g && d.netDown {
				d.netDown = false
				s.trace("truth: the network of guest %s is back", id)
			}
		})
	case "agent-restart":
		s.res.GuestFaults++
		gone := 2*time.Second + time.Duration(s.frng.Int64N(int64(6*time.Second)))
		s.trace("truth: the guest agent of %s restarts inside the guest (%s)", id, gone)
		d.agentGone = true
		s.emit(h, id, lifecycle.Event{Kind: lifecycle.KindAgentLifecycle, Detail: 2})
		g := d.gen
		s.after(gone, func() {
			if d.gen == g && d.agentGone {
				d.agentGone = false
				s.emit(h, id, lifecycle.Event{Kind: lifecycle.KindAgentLifecycle, Detail: 1})
			}
		})
	}
}

// checkGuestRecovery is the checker's view of an order hass gives for a guest layer: resetting
// or rebooting a guest that neither hangs nor lost its network is a false recovery.
func (s *Sim) checkGuestRecovery(h *host, a engine.Action) {
	why, ok := strings.CutPrefix(a.Why, "recovery:")
	if !ok || (why != string(engine.FailGuestHang) && why != string(engine.FailGuestNetwork)) {
		return
	}
	d := h.doms[a.VM]
	if d == nil || d.state != lifecycle.StateRunning {
		return // down: the order fails, nothing is done
	}
	if d.hung || d.netDown {
		return // a real failure (a reset also brings a dead network back)
	}
	s.res.FalseRecoveries++
	s.trace("CHECK: false recovery: hass orders %s of %s for %s, but the guest is fine", a.Kind, a.VM, why)
}
