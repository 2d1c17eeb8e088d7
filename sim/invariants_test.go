package sim

import (
	"testing"

	"github.com/hassproject/hass/engine"
)

// TestPlacementChecksCatchViolations: the invariant checker counts each kind of violation
// when hass's orders commit one (the orders are made up here; the engine never gives them).
func TestPlacementChecksCatchViolations(t *testing.T) {
	s := newSim(ScenarioConfig(), nil)
	s.step(engine.SetCluster{Name: "c1"})
	s.step(engine.SetCluster{Name: "c2"})
	s.addHostIn(hostSpec{id: "h1", mem: 8192, cluster: "c1"})
	s.addHostIn(hostSpec{id: "h2", mem: 8192, cluster: "c1", reserved: true})
	s.addHostIn(hostSpec{id: "h3", mem: 8192, cluster: "c2"})
	s.addHostIn(hostSpec{id: "h4", mem: 8192, cluster: "c1"})
	hard := engine.DefaultPolicy()
	hard.AntiAffinity, hard.AntiAffinityHard = "db", true
	for _, v := range []struct {
		id engine.VMID
		h  string
	}{{"a", "h1"}, {"b", "h4"}} {
		if !s.addVM(v.id, s.hostByID[engine.HostID(v.h)], 1024, hard, true) {
			t.Fatalf("protect %s refused", v.id)
		}
	}
	prev := map[engine.VMID]engine.HostID{"a": "h1"}
	s.hostByID["h1"].maint = true
	for _, tc := range []struct {
		act  engine.Action
		want *int
	}{
		{engine.Action{Kind: engine.ActFence, Host: "h1"}, &s.res.MaintenanceViolations},
		{engine.Action{Kind: engine.ActStart, VM: "a", Host: "h2", Why: "recovery:host-down"}, &s.res.MaintenanceViolations},
		{engine.Action{Kind: engine.ActMigrate, VM: "a", Host: "h1", Target: "h3"}, &s.res.ClusterViolations},
		{engine.Action{Kind: engine.ActMigrate, VM: "a", Host: "h1", Target: "h2"}, &s.res.ReservedViolations},
		{engine.Action{Kind: engine.ActMigrate, VM: "a", Host: "h1", Target: "h4"}, &s.res.AntiAffinityViolations},
	} {
		before := *tc.want
		s.checkPlacements([]engine.Action{tc.act}, prev)
		if *tc.want != before+1 {
			t.Errorf("%s: not counted", tc.act)
		}
	}
	// A recovery onto the spare, and a restart in place, are fine.
	s.hostByID["h1"].maint = false
	r := s.res
	s.checkPlacements([]engine.Action{{Kind: engine.ActStart, VM: "a", Host: "h2", Why: "recovery:host-down"},
		{Kind: engine.ActStart, VM: "a", Host: "h1", Why: "op:3"}}, prev)
	if s.res != r {
		t.Fatalf("a legitimate order was counted: %+v", s.res)
	}
}
