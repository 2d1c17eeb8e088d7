package benchmark

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
)

var printed sync.Map

// BenchmarkEngineMix measures the engine on the default shapes' workloads, and prints each
// workload's mix once, after its figures (the testing package cuts benchmark logs short).
func BenchmarkEngineMix(b *testing.B) {
	for _, s := range []Shape{Small, Large} {
		b.Run(fmt.Sprintf("vms=%d/hosts=%d", s.VMs, s.Hosts), func(b *testing.B) { EngineMix(b, s) })
		recMu.Lock()
		rec := recordings[s]
		recMu.Unlock()
		if _, done := printed.LoadOrStore(s, true); rec != nil && !done {
			fmt.Fprint(os.Stdout, rec.Report())
		}
	}
}

func BenchmarkSimulation(b *testing.B) { Simulation(b) }

// BenchmarkEvacuation measures the evacuation plan of a lost host and the engine's memory
// per VM on the default shapes' clusters.
func BenchmarkEvacuation(b *testing.B) {
	for _, s := range []Shape{Small, Large} {
		b.Run(fmt.Sprintf("vms=%d/hosts=%d", s.VMs, s.Hosts), func(b *testing.B) { EvacuationBench(b, s) })
	}
}

// TestEvacuation: losing hosts one after another, each Tick that fences one orders every VM
// it held started elsewhere, also when the measure needs a second cluster.
func TestEvacuation(t *testing.T) {
	s := Shape{VMs: 1000, Hosts: 40, Window: time.Minute, Seed: 1}
	st, err := Evacuation(s, 2*newEvacuator(s).perClust+1)
	if err != nil {
		t.Fatal(err)
	}
	if st.VMs != st.Evacuations*25 || st.Mean <= 0 || st.Max < st.Mean || st.HeapPerVM <= 0 {
		t.Fatalf("%+v: want %d VMs placed (25 per host), times and a heap size", st, st.Evacuations*25)
	}
}

// TestClusterBaseline guards the workload's starting point: a cluster built by Cluster is
// healthy, and a crash observation makes the engine order a restart.
func TestClusterBaseline(t *testing.T) {
	s := Shape{VMs: 10, Hosts: 2, Window: time.Minute}
	e := s.Cluster()
	for _, st := range e.Status() {
		if st.State != "healthy" || st.Observed != engine.DomRunning {
			t.Fatalf("%s: %s/%s, want healthy and running", st.VM, st.State, st.Observed)
		}
	}
	out := e.Step(t0.Add(1), engine.Observe{Host: hostID(0), VM: vmID(0), Seq: 5, State: engine.DomShutoff, Reason: engine.ReasonFailed})
	if len(out.Actions) != 1 || out.Actions[0].Kind != engine.ActStart {
		t.Fatalf("crash gave %v, want one start", out.Actions)
	}
}

// TestSmallMixExercisesEveryPath guards the premise of the 1,000-VM engine benchmark: its
// workload makes every costly path of the engine run, many times. A workload that drifts
// back to mostly cheap observations (the old benchmark: 0.2% of its inputs caused an
// action, and no result, resync, lease or placement code ran) fails here.
func TestSmallMixExercisesEveryPath(t *testing.T) {
	rec, err := Recorded(Small)
	if err != nil {
		t.Fatal(err)
	}
	m := &rec.Mix
	if bad := rec.Check(); bad != nil {
		t.Errorf("Check: %s", strings.Join(bad, "; "))
	}
	atLeast := func(what string, got, want int) {
		t.Helper()
		if got < want {
			t.Errorf("%s: %d, want at least %d", what, got, want)
		}
	}
	atLeast("snapshots", m.Kinds[KindSnapshot].Calls, 4500)
	atLeast("action results", m.Kinds[KindResult].Calls, 500)
	atLeast("action results with an error", m.ActionErrors, 5)
	atLeast("requests", m.Kinds[KindRequest].Calls, 500)
	for op, n := range m.Ops {
		atLeast("requests to "+engine.OpKind(op).String(), n, 10)
	}
	atLeast("operations completed", m.OpsDone, 400)
	atLeast("failures detected", m.Detected, 75)
	atLeast("failures recovered", m.Recovered, 75)
	atLeast("guest hangs reset", m.Actions[engine.ActReset], 3)
	atLeast("operations inferred (virsh, guest shutdowns)", m.Inferred, 30)
	atLeast("shutdowns escalated to destroy", m.Escal, 1)
	atLeast("signals", m.Kinds[KindSignal].Calls, 100)
	atLeast("VMs deleted and forgotten", m.Forgotten, 10)
	atLeast("VMs created and protected", m.Kinds[KindProtect].Calls, 10)
	atLeast("host losses", m.HostLosses, 2)
	atLeast("lease expiries", m.Kinds[KindLeaseExpired].Calls, 2)
	atLeast("hosts fenced", m.Fenced, 2)
	atLeast("hosts back up", m.HostsUp, 2)
	atLeast("relocations (placement after a host loss)", m.Relocations, 50)
	atLeast("migrations placed by the engine", m.MigratePlaced, 50)
	atLeast("ticks", m.Kinds[KindTick].Calls, 3)
	if m.GaveUp > 0 || m.SplitBrain > 0 {
		t.Errorf("gave up on %d VMs, %d split brains: the workload or the engine is broken", m.GaveUp, m.SplitBrain)
	}
	// The kinds of input that cost: each a real share of the inputs, not a rounding error.
	for _, k := range []Kind{KindSnapshot, KindResult, KindRequest, KindObserve} {
		if m.Share(k) < 0.005 {
			t.Errorf("%s: %s of the inputs, want at least 0.5%%", k, pct(m.Share(k)))
		}
	}
	answered := float64(m.Answered+m.ActionsLost+m.ActionsOvertaken) / float64(m.actionsOrdered)
	if answered < 0.99 {
		t.Errorf("only %s of the engine's actions were answered (or lost with their host)", pct(answered))
	}
	if testing.Verbose() {
		t.Log("\n" + rec.Report())
	}
}

// TestLargeShapeWindow guards the 50,000-VM benchmark's short window on a cluster of the same
// proportions (50 VMs per host, the same window): every host resyncs, a host is lost, fenced
// and evacuated, and crashes and operations are answered, all within it.
func TestLargeShapeWindow(t *testing.T) {
	s := Large
	s.VMs, s.Hosts = 10000, 200
	rec, err := Record(s, DefaultRates())
	if err != nil {
		t.Fatal(err)
	}
	if bad := rec.Check(); bad != nil {
		t.Errorf("Check: %s", strings.Join(bad, "; "))
	}
	if n := rec.Mix.Relocations; n < s.VMs/s.Hosts/2 {
		t.Errorf("%d relocations, want most of a lost host's %d VMs", n, s.VMs/s.Hosts)
	}
}

// TestCheckCatchesDegenerateMixes shows Check failing workloads that leave paths cold.
func TestCheckCatchesDegenerateMixes(t *testing.T) {
	s := Shape{VMs: 1000, Hosts: 20, Window: 10 * time.Minute, Seed: 3}
	cases := map[string]func(*Rates){
		"no faults, operations or host losses": func(r *Rates) { r.FaultsPerVMHour, r.OpsPerVMHour, r.HostLossPerHour = 0, 0, 0 },
		"no host losses":                       func(r *Rates) { r.HostLossPerHour = 0 },
		"no resyncs":                           func(r *Rates) { r.ResyncEvery = 24 * time.Hour },
	}
	for name, change := range cases {
		r := DefaultRates()
		change(&r)
		rec, err := Record(s, r)
		if err != nil {
			t.Fatal(err)
		}
		if bad := rec.Check(); bad == nil {
			t.Errorf("%s: Check passed", name)
		}
	}
	rec, err := Record(s, DefaultRates())
	if err != nil {
		t.Fatal(err)
	}
	if bad := rec.Check(); bad != nil {
		t.Errorf("default rates: %s", strings.Join(bad, "; "))
	}
}

// TestReplayDoesWhatTheRecordingDid: the benchmark times a replay, so a replay into a fresh
// cluster must make the engine order exactly the recorded actions; and the same seed makes
// the same recording.
func TestReplayDoesWhatTheRecordingDid(t *testing.T) {
	s := Shape{VMs: 500, Hosts: 10, Window: 30 * time.Minute, Seed: 7}
	a, err := Record(s, DefaultRates())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Record(s, DefaultRates())
	if err != nil {
		t.Fatal(err)
	}
	if a.digest != b.digest || a.actions != b.actions || a.Inputs() != b.Inputs() {
		t.Fatalf("the same seed gave %d inputs and %d actions, then %d and %d", a.Inputs(), a.actions, b.Inputs(), b.actions)
	}
	if a.actions < 50 {
		t.Fatalf("only %d actions recorded", a.actions)
	}
	if !a.Replay(s.Cluster(), true) || !a.Replay(s.Cluster(), false) {
		t.Fatal("a replay ordered other actions than the recording")
	}
	other := s
	other.Hosts++ // the same VMs, on other homes
	if a.Replay(other.Cluster(), false) {
		t.Fatal("a replay into another cluster matched: the check is blind")
	}
}
