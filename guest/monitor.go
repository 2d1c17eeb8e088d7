// Package guest watches the layers inside a VM that the hypervisor cannot see: the guest OS
// (heartbeats through the QEMU guest agent) and the guest network (reachability of the
// guest's address, by ICMP or a TCP port), per VM policy (engine.GuestPolicy).
//
// As HASS does it, a layer's failure is verified before it is reported: when a layer misses
// its answers Misses times in a row, the layers beneath it are checked to find the lowest one
// that really failed (the guest network is down: does the guest agent answer? does the
// emulator run?), and all of them again after Recheck. Only a failure that is still there is
// reported (engine.SigGuestHung for the OS layer, engine.SigGuestNetDown for the network);
// a transient fault never is. A layer counts misses only once it has answered since the VM
// last started, rebooted or resumed (a guest that never ran its agent is not a failure), and
// never while the VM does not run (paused by a user, shut down, migrating away). The agent
// restarting inside the guest (its channel closing) is not a failure either. Operations the
// monitor cannot see (a reboot or shutdown still under way inside the guest, a migration's
// last phase) are the engine's to explain: it drops a report that an operation explains.
//
// Like packages agent and engine, the monitor decides and does no I/O: probes go through its
// Env and come back through callbacks, so the real agent (package node, over libvirt and the
// network) and the simulator run the same monitor. It is not safe for concurrent use: its
// runner serialises calls, callbacks included.
package guest

import (
	"fmt"
	"slices"
	"time"

	"github.com/hassproject/hass/engine"
)

// Env is the world around a monitor. Each probe calls done exactly once, in the monitor's
// runner, with the time it finished.
type Env interface {
	// Ping sends a guest-ping to the VM's guest agent; ok is whether it answered in time.
	Ping(vm engine.VMID, timeout time.Duration, done func(now time.Time, ok bool))
	// Reach probes the guest's network address as the policy says (ICMP echo, or a TCP
	// connection to its port); ok is whether the guest answered in time.
	Reach(vm engine.VMID, p engine.GuestPolicy, done func(now time.Time, ok bool))
	// Running asks the hypervisor whether the VM's emulator runs here with the guest running
	// (not paused): the process layer.
	Running(vm engine.VMID, done func(now time.Time, running bool))
	// Failed reports a verified failure of a guest layer to the controller (through the
	// host's agent, which stamps it): kind is engine.SigGuestHung or engine.SigGuestNetDown.
	Failed(vm engine.VMID, kind engine.SignalKind, at time.Time, why string)
	// Log writes a line of the agent's log.
	Log(format string, args ...any)
}

// Config tunes a monitor.
type Config struct {
	// Quiet is how long a VM whose failure was reported is left alone (no probes) unless it
	// starts, reboots or resumes before: the recovery (a reset, a reboot) restarts the
	// guest, and the engine may have dropped the report (an operation explained it).
	Quiet time.Duration
}

// DefaultConfig is what the agent runs with.
func DefaultConfig() Config { return Config{Quiet: 30 * time.Second} }

// Monitor watches the guest layers of the VMs of one host.
type Monitor struct {
	cfg Config
	env Env
	vms map[engine.VMID]*watch
}

// New returns a monitor watching nothing.
func New(cfg Config, env Env) *Monitor {
	return &Monitor{cfg: cfg, env: env, vms: map[engine.VMID]*watch{}}
}

type layer uint8

const (
	layerNone layer = iota
	layerOS
	layerNet
)

func (l layer) String() string {
	switch l {
	case layerOS:
		return "guest OS"
	case layerNet:
		return "guest network"
	}
	return "none"
}

type watch struct {
	pol engine.GuestPolicy // with defaults
	up  bool               // the guest runs (as last told): probed only then
	// epoch changes whenever the VM starts, stops or its policy changes: an answer to a probe
	// sent in an earlier epoch is dropped.
	epoch     uint64
	agentSeen bool // the guest agent answered since the guest last started
	netSeen   bool // the guest's address answered since the guest last started
	hbMiss    int
	netMiss   int
	nextHB    time.Time
	nextNet   time.Time
	hbBusy    bool
	netBusy   bool
	quiet     time.Time // no probes before this (after a report)
	v         *verification
}

// verification is one check of every layer, bottom up: the first (stage 0) finds the lowest
// layer that fails, the recheck (stage 1) after Recheck confirms it.
type verification struct {
	first   layer     // the layer whose misses started it
	found   layer     // the lowest layer stage 0 found failing
	osFail  bool      // stage 0: the guest agent did not answer
	netFail bool      // stage 0: the address did not answer
	stage   int       // 0 or 1
	due     time.Time // stage 1: when it runs
	running bool      // a stage's checks are in flight
	pending int
	procOK  bool
	osOK    bool // the guest agent answered (true when it is not checked)
	netOK   bool // the address answered (true when it is not checked)
	osAsked bool
}

// Watch starts watching vm's guest layers under p, or updates its policy; a policy with no
// layer on stops watching it. running says whether the guest runs now: a running guest is
// treated as just started (each layer must answer once before it can miss).
func (m *Monitor) Watch(now time.Time, vm engine.VMID, p engine.GuestPolicy, running bool) {
	if !p.Enabled() {
		m.Forget(vm)
		return
	}
	p = p.WithDefaults()
	w := m.vms[vm]
	if w != nil && w.pol == p {
		m.Running(now, vm, running)
		return
	}
	if w == nil {
		w = &watch{}
		m.vms[vm] = w
	}
	w.pol = p
	m.reset(now, w, running)
}

// Forget stops watching vm.
func (m *Monitor) Forget(vm engine.VMID) { delete(m.vms, vm) }

// Watching lists the VMs watched, sorted.
func (m *Monitor) Watching() []engine.VMID {
	out := make([]engine.VMID, 0, len(m.vms))
	for vm := range m.vms {
		out = append(out, vm)
	}
	slices.Sort(out)
	return out
}

func (m *Monitor) reset(now time.Time, w *watch, running bool) {
	w.epoch++
	w.up = running
	w.agentSeen, w.netSeen = false, false
	w.hbMiss, w.netMiss = 0, 0
	w.hbBusy, w.netBusy = false, false
	w.nextHB, w.nextNet = now, now
	w.quiet = time.Time{}
	w.v = nil
}

// Started tells the monitor that vm's guest (re)started here: booted, rebooted (inside its
// emulator, by itself or by a reset), resumed, or arrived by migration. Each layer must
// answer once again before it can miss.
func (m *Monitor) Started(now time.Time, vm engine.VMID) {
	if w := m.vms[vm]; w != nil {
		m.reset(now, w, true)
	}
}

// Stopped tells the monitor that vm's guest no longer runs here: shut off, crashed, paused,
// or migrated away. Nothing is probed until it starts again.
func (m *Monitor) Stopped(now time.Time, vm engine.VMID) {
	if w := m.vms[vm]; w != nil {
		m.reset(now, w, false)
	}
}

// Running tells the monitor whether vm runs, as a complete domain list says; only a change
// counts (as Started or Stopped).
func (m *Monitor) Running(now time.Time, vm engine.VMID, running bool) {
	w := m.vms[vm]
	if w == nil || w.up == running {
		return
	}
	m.reset(now, w, running)
}

// AgentGone tells the monitor that vm's guest agent closed its channel (it stopped or
// restarts inside the guest; a hung guest keeps it open): it is not counted until it answers
// again.
func (m *Monitor) AgentGone(now time.Time, vm engine.VMID) {
	w := m.vms[vm]
	if w == nil || !w.agentSeen {
		return
	}
	m.env.Log("%s: its guest agent closed its channel: not counted until it answers again", vm)
	w.agentSeen = false
	// Counting starts afresh (a check under way ends); an answer on its way from before the
	// channel closed does not count as seen again.
	m.settle(now, w)
}

// Next is when Tick has something to do next (the zero time when nothing is watched).
func (m *Monitor) Next() time.Time {
	var next time.Time
	earlier := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, w := range m.vms {
		if !w.up {
			continue
		}
		if w.v != nil {
			if !w.v.running {
				earlier(w.v.due)
			}
			continue
		}
		at := func(t time.Time) time.Time {
			if t.Before(w.quiet) {
				return w.quiet
			}
			return t
		}
		if w.pol.Heartbeat && !w.hbBusy {
			earlier(at(w.nextHB))
		}
		if w.pol.Probe != "" && !w.netBusy {
			earlier(at(w.nextNet))
		}
	}
	return next
}

// Tick sends the probes that are due and runs the rechecks that are due. Call it at least as
// often as the shortest interval (every 100-200 ms is fine; Next tells when).
func (m *Monitor) Tick(now time.Time) {
	for _, vm := range m.Watching() { // in name order: the same run twice asks the same
		w := m.vms[vm]
		if !w.up {
			continue
		}
		if w.v != nil {
			if !w.v.running && !now.Before(w.v.due) {
				m.check(now, vm, w)
			}
			continue
		}
		if now.Before(w.quiet) {
			continue
		}
		if w.pol.Heartbeat && !w.hbBusy && !now.Before(w.nextHB) {
			m.heartbeat(now, vm, w)
		}
		if w.pol.Probe != "" && !w.netBusy && !now.Before(w.nextNet) {
			m.reach(now, vm, w)
		}
	}
}

func (m *Monitor) heartbeat(now time.Time, vm engine.VMID, w *watch) {
	w.hbBusy = true
	w.nextHB = now.Add(w.pol.HeartbeatInterval)
	epoch := w.epoch
	m.env.Ping(vm, w.pol.HeartbeatTimeout, func(now time.Time, ok bool) {
		if m.vms[vm] != w || w.epoch != epoch {
			return
		}
		w.hbBusy = false
		switch {
		case ok:
			if !w.agentSeen {
				m.env.Log("%s: guest agent answers: the guest OS layer is watched", vm)
			}
			w.agentSeen, w.hbMiss = true, 0
		case w.agentSeen && w.v == nil:
			w.hbMiss++
			if w.hbMiss >= w.pol.HeartbeatMisses {
				m.verify(now, vm, w, layerOS, fmt.Sprintf("%d guest-pings in a row unanswered", w.hbMiss))
			}
		}
	})
}

func (m *Monitor) reach(now time.Time, vm engine.VMID, w *watch) {
	w.netBusy = true
	w.nextNet = now.Add(w.pol.ProbeInterval)
	epoch := w.epoch
	m.env.Reach(vm, w.pol, func(now time.Time, ok bool) {
		if m.vms[vm] != w || w.epoch != epoch {
			return
		}
		w.netBusy = false
		switch {
		case ok:
			if !w.netSeen {
				m.env.Log("%s: its address answers (%s): the guest network layer is watched", vm, w.pol.Probe)
			}
			w.netSeen, w.netMiss = true, 0
		case w.netSeen && w.v == nil:
			w.netMiss++
			if w.netMiss >= w.pol.ProbeMisses {
				m.verify(now, vm, w, layerNet, fmt.Sprintf("%d %s probes in a row unanswered", w.netMiss, w.pol.Probe))
			}
		}
	})
}

// verify starts a verification: every layer beneath (and including) the one that missed is
// checked now, and again after Recheck.
func (m *Monitor) verify(now time.Time, vm engine.VMID, w *watch, l layer, why string) {
	m.env.Log("%s: %s layer: %s; checking the layers beneath", vm, l, why)
	w.v = &verification{first: l}
	m.check(now, vm, w)
}

// check runs one stage of a verification: the process, the guest agent (if it answered
// since the guest started: the OS layer), the address (if the network layer is on); a layer
// that does not answer is asked once more.
func (m *Monitor) check(now time.Time, vm engine.VMID, w *watch) {
	v := w.v
	v.running = true
	v.procOK, v.osOK, v.netOK = false, true, true
	v.osAsked = w.agentSeen
	v.pending = 1
	if v.osAsked {
		v.pending++
	}
	if w.pol.Probe != "" {
		v.pending++
	}
	epoch := w.epoch
	stage := v.stage
	current := func() bool { return m.vms[vm] == w && w.epoch == epoch && w.v == v && v.stage == stage }
	m.env.Running(vm, func(now time.Time, running bool) {
		if current() {
			v.procOK = running
			m.checked(now, vm, w)
		}
	})
	// A layer fails a check only if it does not answer twice in a row: one lost answer is
	// not a verdict.
	twice := func(probe func(done func(time.Time, bool)), set func(bool)) {
		probe(func(now time.Time, ok bool) {
			if !current() {
				return
			}
			if ok {
				set(true)
				m.checked(now, vm, w)
				return
			}
			probe(func(now time.Time, ok bool) {
				if current() {
					set(ok)
					m.checked(now, vm, w)
				}
			})
		})
	}
	if v.osAsked {
		twice(func(done func(time.Time, bool)) { m.env.Ping(vm, pingTimeout(w.pol), done) }, func(ok bool) { v.osOK = ok })
	}
	if w.pol.Probe != "" {
		twice(func(done func(time.Time, bool)) { m.env.Reach(vm, w.pol, done) }, func(ok bool) { v.netOK = ok })
	}
}

// checked takes one check's answer; when the stage has all of them, it decides.
func (m *Monitor) checked(now time.Time, vm engine.VMID, w *watch) {
	v := w.v
	if v.pending--; v.pending > 0 {
		return
	}
	v.running = false
	lowest := layerNone
	switch {
	case !v.procOK:
		// The emulator does not run the guest (it died, or is paused): the process layer's
		// news reaches the engine through the hypervisor's events, not through here.
		m.env.Log("%s: its emulator does not run the guest: left to the process layer", vm)
		m.settle(now, w)
		return
	case !v.osOK:
		lowest = layerOS
	case !v.netOK:
		lowest = layerNet
	}
	if v.stage == 0 {
		if lowest == layerNone {
			m.env.Log("%s: every layer answers at the check: a transient fault, not a failure", vm)
			m.settle(now, w)
			return
		}
		v.found, v.stage, v.due = lowest, 1, now.Add(w.pol.Recheck)
		v.osFail, v.netFail = !v.osOK, !v.netOK
		if lowest != v.first {
			m.env.Log("%s: the %s layer fails beneath the %s layer; rechecking in %s", vm, lowest, v.first, w.pol.Recheck)
		} else {
			m.env.Log("%s: the %s layer fails; rechecking in %s", vm, lowest, w.pol.Recheck)
		}
		return
	}
	// What is reported is the lowest layer that failed at the check and at the recheck
	// alike: one lost answer at either does not move the blame to another layer.
	switch {
	case v.osFail && !v.osOK:
		lowest = layerOS
	case v.netFail && !v.netOK:
		lowest = layerNet
	default:
		lowest = layerNone
	}
	if lowest == layerNone {
		m.env.Log("%s: no layer failed at both the check and the recheck: a transient fault, not a failure", vm)
		m.settle(now, w)
		return
	}
	kind, why := engine.SigGuestHung, "the guest agent does not answer while its emulator runs"
	if lowest == layerNet {
		kind = engine.SigGuestNetDown
		why = fmt.Sprintf("its address does not answer (%s) while its emulator runs", w.pol.Probe)
		if v.osAsked {
			why += " and its guest agent answers"
		}
	}
	why += fmt.Sprintf(", at the check and at the recheck %s later", w.pol.Recheck)
	m.env.Log("%s: %s layer failed: %s: reporting it", vm, lowest, why)
	m.env.Failed(vm, kind, now, why)
	m.settle(now, w)
	w.quiet = now.Add(m.cfg.Quiet)
}

// settle ends a verification: the layers start counting afresh.
func (m *Monitor) settle(now time.Time, w *watch) {
	w.v = nil
	w.hbMiss, w.netMiss = 0, 0
	w.hbBusy, w.netBusy = false, false
	w.epoch++ // probes sent before the verification no longer count
	w.nextHB, w.nextNet = now, now
}

// pingTimeout is how long a check waits for the guest agent: the heartbeat's timeout, or,
// where only the network layer is on, the probe's.
func pingTimeout(p engine.GuestPolicy) time.Duration {
	if p.HeartbeatTimeout > 0 {
		return p.HeartbeatTimeout
	}
	if p.ProbeTimeout > 0 {
		return p.ProbeTimeout
	}
	return time.Second
}
