package benchmark

import (
	"testing"

	"github.com/hassproject/hass/engine"
)

func BenchmarkEngineObservations(b *testing.B) { Observations(b) }
func BenchmarkSimulation(b *testing.B)         { Simulation(b) }

// TestClusterBaseline guards the benchmark's premise: a cluster built by Cluster is healthy,
// and a crash observation makes the engine order a restart.
func TestClusterBaseline(t *testing.T) {
	e := Cluster(2, 10)
	for _, s := range e.Status() {
		if s.State != "healthy" || s.Observed != engine.DomRunning {
			t.Fatalf("%s: %s/%s, want healthy and running", s.VM, s.State, s.Observed)
		}
	}
	out := e.Step(t0.Add(1), engine.Observe{Host: hostID(0), VM: vmID(0), Seq: 5, State: engine.DomShutoff, Reason: engine.ReasonFailed})
	if len(out.Actions) != 1 || out.Actions[0].Kind != engine.ActStart {
		t.Fatalf("crash gave %v, want one start", out.Actions)
	}
}
