package sim

import (
	"strings"

	"github.com/hassproject/hass/engine"
)

// ---- the placement and maintenance invariants, checked on hass's own orders ------------

// homesBefore is where the store had the VMs of acts before the step that ordered them.
func (s *Sim) homesBefore(acts []engine.Action) map[engine.VMID]engine.HostID {
	if len(acts) == 0 {
		return nil
	}
	m := map[engine.VMID]engine.HostID{}
	for _, a := range acts {
		if st, ok := s.st.vms[a.VM]; ok && a.VM != "" {
			m[a.VM] = st.Home
		}
	}
	return m
}

// checkPlacements checks the orders of one step: no fence of a host in maintenance, no
// restart elsewhere of a VM whose host is in maintenance, and every start on a new host and
// every migration inside the VM's cluster, apart from its hard anti-affinity group, and on
// a spare only by recovery.
func (s *Sim) checkPlacements(acts []engine.Action, prev map[engine.VMID]engine.HostID) {
	for _, a := range acts {
		switch a.Kind {
		case engine.ActFence:
			if h := s.hostByID[a.Host]; h != nil && h.maint {
				s.res.MaintenanceViolations++
				s.trace("CHECK: maintenance: hass fences %s, which is in maintenance", a.Host)
			}
		case engine.ActStart:
			from, known := prev[a.VM]
			if !known || from == a.Host {
				continue // a start in place is no placement
			}
			recovery := strings.HasPrefix(a.Why, "recovery:")
			if h := s.hostByID[from]; recovery && h != nil && h.maint {
				s.res.MaintenanceViolations++
				s.trace("CHECK: maintenance: hass restarts %s on %s, away from %s, which is in maintenance", a.VM, a.Host, from)
			}
			s.checkTarget(a.VM, a.Host, recovery)
		case engine.ActMigrate:
			s.checkTarget(a.VM, a.Target, false)
		}
	}
}

func (s *Sim) checkTarget(id engine.VMID, target engine.HostID, recovery bool) {
	t, h := s.vms[id], s.hostByID[target]
	if t == nil || h == nil {
		return
	}
	if h.cluster != t.cluster {
		s.res.ClusterViolations++
		s.trace("CHECK: cluster: hass places %s (cluster %s) on %s (cluster %s)", id, t.cluster, target, h.cluster)
	}
	if h.reserved && !recovery {
		s.res.ReservedViolations++
		s.trace("CHECK: reserved: hass places %s on the spare %s, and not to recover it", id, target)
	}
	g := t.policy.AntiAffinity
	if !t.policy.AntiAffinityHard || g == "" {
		return
	}
	for _, o := range s.vmIDs {
		ot := s.vms[o]
		if o == id || ot.policy.AntiAffinity != g {
			continue
		}
		s.flushVM(o) // the store's copy is taken when read
		if st, ok := s.st.vms[o]; ok && st.Home == target && (st.Desired == engine.WantRunning || st.Desired == engine.WantPaused) {
			s.res.AntiAffinityViolations++
			s.trace("CHECK: anti-affinity: hass places %s on %s beside %s (group %s, hard)", id, target, o, g)
		}
	}
}

// noteMove counts the migrations hass ordered to empty a host in maintenance.
func (s *Sim) noteMove(r engine.Record) {
	if r.Type == engine.RecOp && strings.HasPrefix(r.Msg, "migrate accepted") && strings.Contains(r.Msg, "source=maintenance") {
		s.res.MaintenanceMoves++
	}
}
