package sim

import (
	"testing"
	"time"

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
	s.res.Violations = nil
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
	if s.res.MaintenanceViolations != r.MaintenanceViolations || s.res.ClusterViolations != r.ClusterViolations ||
		s.res.AntiAffinityViolations != r.AntiAffinityViolations || s.res.ReservedViolations != r.ReservedViolations ||
		len(s.res.Violations) != len(r.Violations) {
		t.Fatalf("a legitimate order was counted: %+v", s.res)
	}
	if len(r.Violations) != 5 || r.Violations[1].Kind != "maintenance" || r.Violations[1].VM != "a" {
		t.Fatalf("violations named: %+v", r.Violations)
	}
}

// TestRestartInPlaceAfterMaintenanceMove: a VM that a maintenance migration moved off h1
// and that then crashes is restarted in place, on h2: no placement away from h1, which is
// in maintenance. (The checker used to read the VM's home before the step from the store,
// whose copy is taken only when the store is read: it still named h1, and the run counted a
// maintenance violation, in the random workload at 200 hosts and more.)
func TestRestartInPlaceAfterMaintenanceMove(t *testing.T) {
	cfg := ScenarioConfig()
	cfg.Duration = 3 * time.Minute
	s := newSim(cfg, nil) // as the random workload runs: the store's copies taken when read
	s.addHost("h1", 8192, false)
	s.addHost("h2", 8192, false)
	if !s.addVM("a", s.hostByID["h1"], 1024, engine.DefaultPolicy(), true) {
		t.Fatal("protect refused")
	}
	s.at(s.start.Add(10*time.Second), func() { s.command([]string{"host", "h1", "maintenance-on"}) })
	s.at(s.start.Add(time.Minute), func() { s.command([]string{"vm", "a", "crash"}) })
	s.run()
	if s.res.MaintenanceMoves != 1 || s.res.Recoveries != 1 {
		t.Fatalf("want one maintenance move and one recovery: %+v", s.res)
	}
	if h, _ := s.hostOf("a"); h == nil || h.id != "h2" {
		t.Fatalf("a is not on h2: %v", h)
	}
	if s.res.MaintenanceViolations != 0 || len(s.res.Violations) != 0 {
		t.Fatalf("a restart in place counted as a placement away from h1: %+v", s.res.Violations)
	}
}

// TestHomesBefore: the step's log says where a VM was moved from.
func TestHomesBefore(t *testing.T) {
	acts := []engine.Action{{Kind: engine.ActStart, VM: "a", Host: "h2"}, {Kind: engine.ActStart, VM: "b", Host: "h3"}}
	recs := []engine.Record{
		{Type: engine.RecDetect, VM: "a", Host: "h9", Msg: "vm-crash"},
		{Type: engine.RecOp, VM: "a", Host: "h1", Msg: "relocating to h2"},
		{Type: engine.RecOp, VM: "b", Host: "h3", Msg: "reboot accepted id=4 source=api"},
		{Type: engine.RecOp, VM: "c", Host: "h4", Msg: "start accepted id=5 source=api"},
	}
	got := homesBefore(acts, recs)
	if len(got) != 2 || got["a"] != "h1" || got["c"] != "h4" {
		t.Fatalf("homesBefore = %v", got)
	}
	if homesBefore(nil, recs) != nil {
		t.Fatal("no orders, yet homes")
	}
}
