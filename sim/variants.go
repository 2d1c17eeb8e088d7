package sim

import (
	"fmt"
	"time"

	"github.com/hassproject/hass/engine"
)

// ---- the random workload's cluster layouts, new VMs, maintenance and the BMC -----------

// layout is how a random run's hosts are organised (see Config.Variants).
type layout struct {
	clusters int  // 1: every host in "default"; 2: the first half in c1, the rest in c2
	reserved bool // the last host of each cluster is a spare
	tolerate int  // each cluster's TolerateHostFailures; new VMs ask to be protected
	hard     bool // pairs of VMs in hard anti-affinity groups
	mem      int  // each host's memory
}

func (s *Sim) drawLayout() layout {
	cfg := s.cfg
	l := layout{clusters: 1, mem: cfg.HostMemMiB}
	if !cfg.Variants || cfg.Hosts < 4 {
		return l
	}
	seed := cfg.Seed
	if seed%3 == 0 {
		// Recovery stays inside a cluster of half the hosts: each host holds what its
		// whole cluster runs, so that losing all but one of them loses no VM for good.
		l.clusters, l.mem = 2, 2*cfg.HostMemMiB
	}
	l.reserved = seed%4 == 1
	if seed%5 == 2 && l.clusters == 1 {
		// As many losses as the majority rule lets hass fence at once.
		l.tolerate = cfg.Hosts / 2
	}
	l.hard = l.clusters == 1 && seed%2 == 1
	return l
}

// hostSpecOf is host i of the layout.
func (l layout) hostSpecOf(i, n int, fencing bool) hostSpec {
	sp := hostSpec{id: engine.HostID(fmt.Sprintf("h%02d", i+1)), mem: l.mem, fencing: fencing}
	if l.clusters == 2 {
		half := n / 2
		sp.cluster = "c1"
		last := i == half-1
		if i >= half {
			sp.cluster, last = "c2", i == n-1
		}
		sp.reserved = l.reserved && last
		return sp
	}
	sp.reserved = l.reserved && i == n-1
	return sp
}

// setUp registers the layout's clusters and hosts.
func (s *Sim) setUp(l layout) {
	cfg := s.cfg
	s.res.Clusters, s.res.TolerateHostFailures = l.clusters, l.tolerate
	switch {
	case l.clusters == 2:
		s.step(engine.SetCluster{Name: "c1", TolerateHostFailures: l.tolerate})
		s.step(engine.SetCluster{Name: "c2", TolerateHostFailures: l.tolerate})
	case l.tolerate > 0:
		s.step(engine.SetCluster{Name: engine.DefaultCluster, TolerateHostFailures: l.tolerate})
	}
	for i := range cfg.Hosts {
		sp := l.hostSpecOf(i, cfg.Hosts, i%2 == 0)
		if sp.reserved {
			s.res.Reserved++
		}
		s.addHostIn(sp)
	}
}

// regular lists the hosts that are not spares, where users create VMs.
func (s *Sim) regular() []*host {
	var out []*host
	for _, h := range s.hosts {
		if !h.reserved {
			out = append(out, h)
		}
	}
	return out
}

// createVM has a user create a VM and ask hass to protect it (admission runs).
func (s *Sim) createVM(procs func(engine.VMID)) {
	hs := s.regular()
	h := hs[s.rng.IntN(len(hs))]
	mem := pick(s, []int{2048, 4096, 8192})
	s.created++
	id := engine.VMID(fmt.Sprintf("vn%04d", s.created))
	if !h.power || !h.libvirtd {
		return
	}
	s.trace("user: creates %s (%d MiB) on %s and asks hass to protect it", id, mem, h.id)
	if !s.addVM(id, h, mem, engine.DefaultPolicy(), true) {
		s.res.AdmissionRefused++
		return
	}
	s.res.Created++
	procs(id)
}

// ---- maintenance -----------------------------------------------------------------------

// adminShutdown is the reason of an admin's power-off of a host in maintenance.
const adminShutdown = "admin shutdown during maintenance"

// maintenanceCycle has an admin put h in maintenance (one host at a time), maybe shut it
// down and power it on again, and take it out of maintenance.
func (s *Sim) maintenanceCycle(h *host) {
	for _, o := range s.hosts {
		if o.maint {
			return
		}
	}
	if !h.power || !h.agent || s.eng == nil || s.eng.HostState(h.id) != "up" {
		return
	}
	migrate := s.rng.IntN(5) != 0
	flag := ""
	if !migrate {
		flag = " --no-migrate"
	}
	s.trace("admin: hass host maintenance on %s%s", h.id, flag)
	if out := s.step(engine.Maintenance{Host: h.id, On: true, Migrate: migrate}); out.Err != nil {
		s.trace("admin: refused: %v", out.Err)
		return
	}
	h.maint = true
	h.maintEpoch++
	ep := h.maintEpoch
	s.res.Maintenance++
	if s.rng.IntN(5) >= 3 {
		s.after(s.dur(5*time.Minute), func() { s.maintenanceOff(h, ep) })
		return
	}
	s.after(s.dur(3*time.Minute), func() {
		if h.maintEpoch != ep || !h.power {
			return
		}
		s.res.AdminShutdowns++
		s.powerOff(h, adminShutdown)
		s.after(s.dur(3*time.Minute), func() {
			s.powerOn(h)
			s.after(s.cfg.AgentBoot+20*time.Second, func() { s.maintenanceOff(h, ep) })
		})
	})
}

// maintenanceOff takes h out of maintenance; a VM meant to run that is down with it is owed
// again from now.
func (s *Sim) maintenanceOff(h *host, ep int) {
	if h.maintEpoch != ep || !h.maint {
		return
	}
	s.trace("admin: hass host maintenance off %s", h.id)
	h.maint = false
	if out := s.step(engine.Maintenance{Host: h.id}); out.Err != nil {
		h.maint = true
		s.trace("admin: refused: %v", out.Err)
		s.after(30*time.Second, func() { s.maintenanceOff(h, ep) })
		return
	}
	for _, id := range s.vmIDs {
		if t := s.vms[id]; t.maintDown == h.id {
			t.maintDown = ""
			if n, _ := s.upCopies(id); n == 0 {
				s.faultIfWanted(id, "down on "+string(h.id)+" as its maintenance ended")
			}
		}
	}
}

// held says whether nobody may restart the VM now by design: its home is in maintenance
// (recovery waits for it to end), or no host of its cluster is usable.
func (s *Sim) held(id engine.VMID) bool {
	t := s.vms[id]
	if t == nil {
		return false
	}
	s.flushVM(id) // the store's copy is taken when read
	if st, ok := s.st.vms[id]; ok {
		if h := s.hostByID[st.Home]; h != nil && h.maint {
			return true
		}
	}
	for _, h := range s.hosts {
		if h.cluster == t.cluster && !h.maint && h.power && h.agent && h.libvirtd && !h.partitioned && !h.storeCut {
			return false
		}
	}
	return true
}

// ---- the BMC ---------------------------------------------------------------------------

// powerPoller reads every fenced-capable host's power status every PowerPoll.
func (s *Sim) powerPoller() {
	s.pollPower()
	if s.now.Before(s.end) {
		s.after(s.cfg.PowerPoll, s.powerPoller)
	}
}

// pollPower is one reading: a host with a BMC that is off, and that the engine does not
// know as fenced (or as off while in maintenance), is reported off.
func (s *Sim) pollPower() {
	if s.cfg.PowerPoll <= 0 {
		return
	}
	for _, h := range s.hosts {
		if s.eng == nil || s.cpDown || s.ctl.down {
			return
		}
		if !h.fencing {
			continue
		}
		if h.power {
			// On again: the engine hears it of a host it was told was off while in
			// maintenance, and may still take for off, and of a host it holds fenced (a
			// VM may land there before its agent starts).
			if h.offTold {
				h.offTold = false
				if hs, ok := s.eng.Host(h.id); ok && hs.Maintenance && hs.PowerOff && hs.State != "fenced" {
					s.step(engine.HostPower{Host: h.id})
				}
			}
			if hs, ok := s.eng.Host(h.id); ok && hs.State == "fenced" && !hs.PoweredOn {
				s.step(engine.HostPower{Host: h.id})
			}
			continue
		}
		hs, ok := s.eng.Host(h.id)
		if ok && hs.State == "fenced" && hs.PoweredOn {
			s.step(engine.HostPower{Host: h.id, Off: true}) // off again: no proof waits for it
			continue
		}
		if !ok || hs.State == "fenced" || (hs.Maintenance && hs.PowerOff) {
			continue
		}
		h.offTold = true
		s.step(engine.HostPower{Host: h.id, Off: true})
		if s.eng != nil && s.eng.HostState(h.id) == "fenced" {
			s.res.PowerOffSeen++
		}
	}
}
