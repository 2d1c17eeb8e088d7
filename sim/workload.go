package sim

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/lifecycle"
)

// Run simulates a random workload on a standard cluster and scores the engine.
func Run(cfg Config) (Result, error) {
	return RunTraced(cfg, nil)
}

// RunTraced is Run, writing the story of the run to trace.
func RunTraced(cfg Config, trace interface{ Write([]byte) (int, error) }) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	s := newSim(cfg, nil)
	if trace != nil {
		s.out = trace
	}
	return runRandom(s), nil
}

// runRandom runs the random workload on a new simulator.
func runRandom(s *Sim) Result {
	cfg := s.cfg
	s.random = true
	l := s.drawLayout()
	s.setUp(l)
	regular := s.regular()
	for i := range cfg.VMs {
		p := engine.DefaultPolicy()
		p.Priority = s.rng.IntN(3)
		if s.rng.IntN(10) < 3 {
			p.OnGuestShutdown = engine.GuestShutdownRestart
		}
		if i%10 == 0 {
			p.AntiAffinity = fmt.Sprintf("g%d", i/40)
		}
		if l.hard && (i%25 == 3 || i%25 == 4) {
			p.AntiAffinity, p.AntiAffinityHard = fmt.Sprintf("pair%d", i/25), true
		}
		if i < cfg.GuestVMs {
			p.Guest = guestPolicy()
		}
		id := engine.VMID(fmt.Sprintf("vm%04d", i+1))
		h := regular[i%len(regular)]
		if !s.addVM(id, h, cfg.VMMemMiB, p, true) {
			s.res.AdmissionRefused++
			continue
		}
		if d := h.doms[id]; s.rng.IntN(20) == 0 {
			d.ignoreACPI = true
		}
	}
	perVM := func(rate float64, fn func(id engine.VMID)) {
		if rate <= 0 {
			return
		}
		for _, id := range s.vmIDs {
			s.poisson(rate, func() { fn(id) })
		}
	}
	perHost := func(rate float64, fn func(h *host)) {
		if rate <= 0 {
			return
		}
		for _, h := range s.hosts {
			s.poisson(rate, func() { fn(h) })
		}
	}
	perVM(cfg.OpsPerVMHour, s.randomOp)
	perVM(cfg.CrashPerVMHour, func(id engine.VMID) { s.vmFault(id, "crash") })
	perVM(cfg.PanicPerVMHour, func(id engine.VMID) { s.vmFault(id, "panic") })
	perVM(cfg.GuestOffPerVMHr, func(id engine.VMID) { s.vmFault(id, "guest-shutdown") })
	perVM(cfg.HangPerVMHour, func(id engine.VMID) { s.vmFault(id, "hang") })
	for _, id := range s.guestVMs {
		for _, f := range []struct {
			rate float64
			kind string
		}{{cfg.SilentHangPerVMHr, "silent-hang"}, {cfg.NetDiesPerVMHr, "net-dies"}, {cfg.NetBlipPerVMHr, "net-blip"}, {cfg.AgentRestartPerVMHr, "agent-restart"}} {
			if f.rate > 0 {
				s.poissonF(f.rate, func() { s.guestFault(id, f.kind) })
			}
		}
	}
	if l.tolerate > 0 && cfg.CreatePerHr > 0 {
		// New VMs ask for protection; admission control takes them while the cluster can
		// lose its tolerance in hosts. Each accepted one lives as the others do.
		procs := func(id engine.VMID) {
			for _, pf := range []struct {
				rate float64
				fn   func()
			}{
				{cfg.OpsPerVMHour, func() { s.randomOp(id) }},
				{cfg.CrashPerVMHour, func() { s.vmFault(id, "crash") }},
				{cfg.HangPerVMHour, func() { s.vmFault(id, "hang") }},
			} {
				if pf.rate > 0 {
					s.poisson(pf.rate, pf.fn)
				}
			}
		}
		s.poisson(cfg.CreatePerHr, func() { s.createVM(procs) })
	}
	perHost(cfg.MaintPerHostHr, s.maintenanceCycle)
	perHost(cfg.PowerPerHostHr, func(h *host) {
		s.res.Faults++
		s.powerOff(h, "power loss")
		s.after(s.dur(4*time.Minute), func() { s.powerOn(h) })
	})
	perHost(cfg.PartPerHostHr, func(h *host) {
		s.res.Faults++
		s.partition(h)
		s.after(s.dur(40*time.Second), func() { s.heal(h) })
	})
	perHost(cfg.AgentPerHostHr, func(h *host) {
		s.res.Faults++
		s.agentCrash(h)
		ep := h.epoch
		s.after(s.dur(8*time.Second), func() {
			if h.epoch == ep {
				s.agentStart(h)
			}
		})
	})
	perHost(cfg.LibvirtPerHostHr, func(h *host) {
		s.res.Faults++
		s.libvirtdStop(h)
		s.after(s.dur(15*time.Second), func() { s.libvirtdStart(h) })
	})
	if cfg.ControllerCrashPerHr > 0 {
		s.poissonF(cfg.ControllerCrashPerHr, func() {
			s.res.Faults++
			if s.frng.IntN(2) == 0 {
				s.ctl.crashArmed = true // in its next step that orders something
				return
			}
			s.controllerCrash("")
		})
	}
	if cfg.EtcdLossPerHr > 0 {
		s.poissonF(cfg.EtcdLossPerHr, func() {
			s.res.Faults++
			i := s.frng.IntN(etcdMembers)
			s.etcdLose(i)
			s.after(30*time.Second+time.Duration(s.frng.Int64N(int64(270*time.Second))), func() { s.etcdBack(i) })
			if s.frng.IntN(4) == 0 {
				j := (i + 1 + s.frng.IntN(etcdMembers-1)) % etcdMembers
				s.after(time.Duration(s.frng.Int64N(int64(20*time.Second))), func() {
					s.etcdLose(j)
					s.after(5*time.Second+time.Duration(s.frng.Int64N(int64(55*time.Second))), func() { s.etcdBack(j) })
				})
			}
		})
	}
	if cfg.ControlPlaneLostPerHr > 0 {
		s.poissonF(cfg.ControlPlaneLostPerHr, func() {
			s.res.Faults++
			s.controlPlaneLost(cpLostEverywhere)
			s.after(5*time.Second+time.Duration(s.frng.Int64N(int64(295*time.Second))), func() { s.controlPlaneBack(cpLostEverywhere) })
		})
	}
	if cfg.StoreCutPerHr > 0 && cfg.Hosts > 1 {
		s.poissonF(cfg.StoreCutPerHr, func() {
			s.res.Faults++
			k := 1 + s.frng.IntN(cfg.Hosts-1)
			perm := s.frng.Perm(cfg.Hosts)[:k]
			slices.Sort(perm)
			d := 20*time.Second + time.Duration(s.frng.Int64N(int64(160*time.Second)))
			for _, i := range perm {
				h := s.hosts[i]
				if h.storeCut || !h.power || h.partitioned {
					continue
				}
				s.res.StoreCuts++
				s.cutStore(h)
				s.after(d, func() { s.healStore(h) })
			}
		})
	}
	s.run()
	return s.res
}

// poissonF is poisson for the control-plane faults, drawn from their own random source.
func (s *Sim) poissonF(perHour float64, fn func()) {
	delay := func() time.Duration {
		return time.Duration(-math.Log(1-s.frng.Float64()) / perHour * float64(time.Hour))
	}
	var next func()
	next = func() {
		fn()
		s.after(delay(), next)
	}
	s.after(delay(), next)
}

// poisson calls fn at exponentially spaced times with the given rate per hour, forever.
func (s *Sim) poisson(perHour float64, fn func()) {
	var next func()
	next = func() {
		fn()
		s.after(s.expDelay(perHour), next)
	}
	s.after(s.expDelay(perHour), next)
}

func (s *Sim) expDelay(perHour float64) time.Duration {
	u := s.rng.Float64()
	h := -math.Log(1-u) / perHour
	return time.Duration(h * float64(time.Hour))
}

// hostOf finds where the VM's domain is up, or where it is defined.
func (s *Sim) hostOf(id engine.VMID) (*host, *dom) {
	var defined *host
	for _, h := range s.hostsOf(id) {
		if d := h.doms[id]; d != nil && h.power {
			if d.state == lifecycle.StatePaused && d.reason == lifecycle.PausedMigration {
				continue // the incoming copy of a migration is not where the VM is
			}
			if up(d.state) {
				return h, d
			}
			if defined == nil {
				defined = h
			}
		}
	}
	if defined != nil {
		return defined, defined.doms[id]
	}
	return nil, nil
}

// vmFault strikes the VM's guest or emulator.
func (s *Sim) vmFault(id engine.VMID, kind string) {
	h, d := s.hostOf(id)
	if h == nil || !up(d.state) {
		return
	}
	if kind != "crash" && d.state != lifecycle.StateRunning {
		return // a paused guest runs no code: it cannot panic, hang or shut itself down
	}
	switch kind {
	case "crash":
		s.faultIfWanted(id, "qemu killed")
		s.setDom(h, id, d, lifecycle.StateShutoff, lifecycle.ShutoffFailed, lc(lifecycle.EvStopped, lifecycle.StoppedFailed))
	case "panic":
		s.faultIfWanted(id, "guest panic")
		s.setDom(h, id, d, lifecycle.StateCrashed, lifecycle.CrashedReasonPanicked, lc(lifecycle.EvCrashed, lifecycle.CrashedPanicked))
	case "guest-shutdown":
		t := s.vms[id]
		if t != nil && t.policy.OnGuestShutdown == engine.GuestShutdownHonour {
			s.res.Faults++
			s.trace("truth: guest %s shuts itself down; policy honours it", id)
			if !(h.listening() && h.reachable()) {
				// As a user's virsh act there: no agent can see or store it (its host is
				// cut off, or its agent down), so nobody could know the VM is meant to
				// stay down (a fence then restarts it elsewhere: ambiguous, not false).
				s.setUnseen(t, h.id)
			}
			s.userWants(id, engine.WantStopped)
		} else {
			s.faultIfWanted(id, "guest shut itself down; policy says restart")
			if t != nil && !t.faultAt.IsZero() && !h.listening() {
				t.ambiguous = true
			}
		}
		s.setDom(h, id, d, lifecycle.StateShutoff, lifecycle.ShutoffShutdown,
			lc(lifecycle.EvShutdown, lifecycle.ShutdownGuest), lc(lifecycle.EvStopped, lifecycle.StoppedShutdown))
	case "hang":
		// The guest hangs; its watchdog fires with action none, so only hass can reset it.
		s.trace("truth: guest %s hangs; its watchdog fires", id)
		s.faultIfWanted(id, "guest hangs")
		if t := s.vms[id]; t != nil && !t.faultAt.IsZero() && !h.listening() {
			t.ambiguous = true // its watchdog event is all that shows it, and nobody listens
		}
		d.hung = true
		s.emit(h, id, lifecycle.Event{Kind: lifecycle.KindWatchdog, Watchdog: int(engine.WatchdogNone)})
	}
}

// randomOp has a user do something to a VM, through hass or behind its back with virsh.
func (s *Sim) randomOp(id engine.VMID) {
	t := s.vms[id]
	if t == nil || t.gone {
		return
	}
	virsh := s.rng.IntN(10) < 3
	var op engine.OpKind
	switch t.wants {
	case engine.WantStopped:
		op = pick(s, []engine.OpKind{engine.OpStart, engine.OpStart, engine.OpStart, engine.OpStart, engine.OpDelete})
	case engine.WantPaused:
		op = pick(s, []engine.OpKind{engine.OpResume, engine.OpResume, engine.OpStop})
	default:
		op = pick(s, []engine.OpKind{engine.OpShutdown, engine.OpStop, engine.OpReboot, engine.OpReboot,
			engine.OpMigrate, engine.OpMigrate, engine.OpSuspend})
	}
	s.res.Operations++
	target := engine.HostID("")
	if op == engine.OpMigrate {
		target = s.hosts[s.rng.IntN(len(s.hosts))].id
		if h := s.hostByID[target]; virsh && h.cluster != t.cluster {
			// Behind hass's back users keep a VM in its cluster (through hass, another
			// cluster is refused).
			var same []*host
			for _, o := range s.hosts {
				if o.cluster == t.cluster {
					same = append(same, o)
				}
			}
			target = same[s.rng.IntN(len(same))].id
		}
	}
	if op == engine.OpMigrate && s.rng.Float64() < s.cfg.MigFaultProb {
		// Aim a fault at the migration's switch-over; a third of the time, two of them.
		k := s.rng.IntN(len(migFaultKinds))
		fs := []MigFault{{Kind: migFaultKinds[k], When: pick(s, migFaultWhens)}}
		if s.rng.IntN(3) == 0 {
			k2 := (k + 1 + s.rng.IntN(len(migFaultKinds)-1)) % len(migFaultKinds)
			fs = append(fs, MigFault{Kind: migFaultKinds[k2], When: pick(s, migFaultWhens)})
		}
		s.migFaults[id] = fs
	}
	var ok bool
	if virsh {
		ok = s.virsh(op, id, target)
	} else {
		ok = s.api(op, id, target)
	}
	if !ok {
		delete(s.migFaults, id)
		s.res.Refused++
		return
	}
	if (op == engine.OpReboot || op == engine.OpMigrate) && s.rng.Float64() < s.cfg.DuringOpProb {
		kind := pick(s, []string{"crash", "crash", "panic"})
		s.after(time.Duration(s.rng.Int64N(int64(4*time.Second))), func() { s.vmFault(id, kind) })
	}
	if op == engine.OpReboot && s.rng.Float64() < s.cfg.DuringOpProb/4 {
		if h, d := s.hostOf(id); h != nil {
			d.rebootHang = true
		}
	}
}

func pick[T any](s *Sim, xs []T) T { return xs[s.rng.IntN(len(xs))] }

// api is a user operation through hass.
func (s *Sim) api(op engine.OpKind, id engine.VMID, target engine.HostID) bool {
	s.trace("user: hass vm %s %s %s", op, id, target)
	// The intent counts from the moment the user asks; if hass refuses, nothing changed: the
	// refusal restores every field userWants sets (an open fault stays as it was, its verdict
	// still owed, ambiguous or not).
	t := s.vms[id]
	prev := *t
	switch op {
	case engine.OpStart, engine.OpResume:
		s.userWants(id, engine.WantRunning)
	case engine.OpStop, engine.OpShutdown:
		s.userWants(id, engine.WantStopped)
	case engine.OpDelete:
		s.userWants(id, engine.WantAbsent)
	case engine.OpSuspend:
		s.userWants(id, engine.WantPaused)
	}
	out := s.step(engine.Request{Op: op, VM: id, Target: target, Source: engine.SrcAPI})
	if out.Err != nil {
		s.trace("user: refused: %v", out.Err)
		t.wants, t.gone, t.pending, t.unseenStop = prev.wants, prev.gone, prev.pending, prev.unseenStop
		t.faultAt, t.counted, t.ambiguous = prev.faultAt, prev.counted, prev.ambiguous
		return false
	}
	return true
}

// virsh is a user operation behind hass's back, straight on the hypervisor.
func (s *Sim) virsh(op engine.OpKind, id engine.VMID, target engine.HostID) bool {
	h, d := s.hostOf(id)
	if h == nil || !h.libvirtd {
		return false
	}
	verb := map[engine.OpKind]string{engine.OpStop: "destroy", engine.OpDelete: "undefine"}[op]
	if verb == "" {
		verb = op.String()
	}
	s.trace("user: virsh %s %s on %s %s", verb, id, h.id, target)
	if t := s.vms[id]; t != nil && !(h.listening() && h.reachable()) {
		s.setUnseen(t, h.id) // its agent is not there to see it
	}
	switch op {
	case engine.OpStart:
		if up(d.state) {
			return false
		}
		s.userWants(id, engine.WantRunning)
		s.setDom(h, id, d, lifecycle.StateRunning, 1, lc(lifecycle.EvStarted, lifecycle.StartedBooted))
	case engine.OpStop:
		if !up(d.state) {
			return false
		}
		s.userWants(id, engine.WantStopped)
		s.setDom(h, id, d, lifecycle.StateShutoff, lifecycle.ShutoffDestroyed, lc(lifecycle.EvStopped, lifecycle.StoppedDestroyed))
	case engine.OpShutdown:
		if d.state != lifecycle.StateRunning || d.ignoreACPI {
			return false
		}
		s.userWants(id, engine.WantStopped)
		if t := s.vms[id]; t != nil {
			t.pending = true // an ACPI request: no event until the guest acts on it
		}
		g := d.gen
		s.after(s.dur(5*time.Second), func() {
			if t := s.vms[id]; t != nil && d.gen == g {
				t.pending = false
			}
			if d.gen == g && h.power && d.state == lifecycle.StateRunning {
				if t := s.vms[id]; t != nil && !(h.listening() && h.reachable()) {
					s.setUnseen(t, h.id) // the guest went down while no agent could see it
				}
				s.setDom(h, id, d, lifecycle.StateShutoff, lifecycle.ShutoffShutdown,
					lc(lifecycle.EvShutdown, lifecycle.ShutdownHost), lc(lifecycle.EvStopped, lifecycle.StoppedShutdown))
			}
		})
	case engine.OpDelete:
		if up(d.state) {
			return false
		}
		s.userWants(id, engine.WantAbsent)
		s.undefine(h, id)
	case engine.OpReboot:
		s.reboot(h, id, d, false, nil, func(string) {}) // virsh reboot: inside the guest
	case engine.OpSuspend:
		if d.state != lifecycle.StateRunning {
			return false
		}
		s.userWants(id, engine.WantPaused)
		s.setDom(h, id, d, lifecycle.StatePaused, lifecycle.PausedUser, lc(lifecycle.EvSuspended, lifecycle.SuspendedPaused))
	case engine.OpResume:
		if d.state != lifecycle.StatePaused {
			return false
		}
		s.userWants(id, engine.WantRunning)
		s.setDom(h, id, d, lifecycle.StateRunning, 5, lc(lifecycle.EvResumed, lifecycle.ResumedUnpaused))
	case engine.OpMigrate:
		dst := s.hostByID[target]
		if dst == nil || dst == h {
			return false
		}
		s.migrate(h, id, d, dst, func(string) {})
	}
	return true
}
