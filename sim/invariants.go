package sim

import (
	"strings"

	"github.com/hassproject/hass/engine"
)

// ---- the placement and maintenance invariants, checked on hass's own orders ------------

// homesBefore is, for the VMs of acts that this step moved to another host, the host the
// VM was homed on when the step moved it: a recovery's relocation ("relocating to", logged
// with the old home) or a user's start with a target ("start accepted", logged with the home
// before the request). It is read from the step's log, not from the store: the store's copy
// of a VM is taken when the store is read (flushVM), so between reads it may name a home
// the VM left long ago (a maintenance migration since), and a restart in place looked like a
// placement away from that old home; and a home that follows a copy already running
// elsewhere (a migration that landed) is not hass's placement.
func homesBefore(acts []engine.Action, recs []engine.Record) map[engine.VMID]engine.HostID {
	if len(acts) == 0 {
		return nil
	}
	var m map[engine.VMID]engine.HostID
	for _, r := range recs {
		if r.Type != engine.RecOp || r.VM == "" || r.Host == "" {
			continue
		}
		if !strings.HasPrefix(r.Msg, "relocating to ") && !strings.HasPrefix(r.Msg, "start accepted ") {
			continue
		}
		if m == nil {
			m = map[engine.VMID]engine.HostID{}
		}
		if _, ok := m[r.VM]; !ok {
			m[r.VM] = r.Host
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
				s.violation("maintenance", "", a.Host)
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
				s.violation("maintenance", a.VM, from, a.Host)
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
		s.violation("cluster", id, target)
		s.trace("CHECK: cluster: hass places %s (cluster %s) on %s (cluster %s)", id, t.cluster, target, h.cluster)
	}
	if h.reserved && !recovery {
		s.res.ReservedViolations++
		s.violation("reserved", id, target)
		s.trace("CHECK: reserved: hass places %s on the spare %s, and not to recover it", id, target)
	}
	g := t.policy.AntiAffinity
	if !t.policy.AntiAffinityHard || g == "" {
		return
	}
	for _, o := range s.groups[g] { // the group's VMs, in name order
		if o == id {
			continue
		}
		s.flushVM(o) // the store's copy is taken when read
		if st, ok := s.st.vms[o]; ok && st.Home == target && (st.Desired == engine.WantRunning || st.Desired == engine.WantPaused) {
			s.res.AntiAffinityViolations++
			s.violation("anti_affinity", id, target)
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
