// Package benchmark measures hass's speed targets: decision-engine throughput and simulator
// speed. `hass bench` prints its numbers and `go test -bench` runs the same code. It measures
// and reports; it asserts nothing about wall-clock time.
//
// The engine is measured on a recorded workload (workload.go): a cluster's life on a
// virtual clock, with lease renewals, resyncs, crashes and their restarts answered by the
// agents, user operations, guest signals, and host losses with fencing and evacuation. One
// benchmark op replays the whole recording into a fresh engine; the figures are per input.
package benchmark

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/sim"
)

var (
	recMu      sync.Mutex
	recordings = map[Shape]*Recording{}
)

// Recorded returns s's workload with DefaultRates, recording it (on one core) on first use.
func Recorded(s Shape) (*Recording, error) {
	recMu.Lock()
	defer recMu.Unlock()
	if r := recordings[s]; r != nil {
		return r, nil
	}
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	r, err := Record(s, DefaultRates())
	if err != nil {
		return nil, err
	}
	recordings[s] = r
	return r, nil
}

// EngineMix measures the engine on s's workload, on one core: each op replays the
// recording's inputs into a fresh s.Cluster() (built, and the heap collected, off the
// clock). Its figures are in CPU time (the process's, garbage collection included), so
// other load on the machine does not count; ns/op is the testing package's wall time.
//
//	inputs/s, ns/input       the engine's throughput on the mix (Steps)
//	allocs/input, B/input    per Step
//	ns/poll                  one NextWake, timed apart on the final state; the daemon
//	                         calls it every 200 ms to know when to Tick
//	engine-ms/virtual-s      Steps and polls: the engine's CPU per second of the cluster's life
func EngineMix(b *testing.B, s Shape) {
	rec, err := Recorded(s)
	if err != nil {
		b.Fatal(err)
	}
	if bad := rec.Check(); bad != nil {
		b.Fatalf("%s: the workload did not exercise the engine: %s", s, strings.Join(bad, "; "))
	}
	prev := runtime.GOMAXPROCS(1) // the engine is single-threaded; its garbage collector shares its core here
	defer runtime.GOMAXPROCS(prev)
	var before, after runtime.MemStats
	var allocs, bytes uint64
	var cpu time.Duration
	var e *engine.Engine
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		e = s.Cluster()
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := processCPU()
		b.StartTimer()
		same := rec.Replay(e, false)
		b.StopTimer()
		cpu += processCPU() - c
		runtime.ReadMemStats(&after)
		allocs += after.Mallocs - before.Mallocs
		bytes += after.TotalAlloc - before.TotalAlloc
		if !same {
			b.Fatal("the replay ordered other actions than the recording: the engine is not deterministic, or the cluster differs")
		}
	}
	poll := pollCost(e)
	recMu.Lock()
	rec.stepsCPU, rec.pollCPU = cpu/time.Duration(b.N), poll
	recMu.Unlock()
	n := float64(rec.Inputs()) * float64(b.N)
	b.ReportMetric(n/cpu.Seconds(), "inputs/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "ns/input")
	b.ReportMetric(float64(allocs)/n, "allocs/input")
	b.ReportMetric(float64(bytes)/n, "B/input")
	b.ReportMetric(float64(poll.Nanoseconds()), "ns/poll")
	perRun := float64(cpu.Nanoseconds())/float64(b.N) + float64(poll.Nanoseconds())*float64(rec.Polls())
	b.ReportMetric(perRun/1e6/s.Window.Seconds(), "engine-ms/virtual-s")
}

// pollCost is the CPU time of one NextWake on e: the mean of a batch of calls lasting at
// least 20 ms.
func pollCost(e *engine.Engine) time.Duration {
	n, c := 0, processCPU()
	for n < 10 || processCPU()-c < 20*time.Millisecond {
		for range 10 {
			e.NextWake()
		}
		n += 10
	}
	return (processCPU() - c) / time.Duration(n)
}

// Simulation runs `hass sim` with 100 VMs on 8 hosts for 24 simulated hours.
func Simulation(b *testing.B) {
	cfg := sim.DefaultConfig()
	for i := range b.N {
		cfg.Seed = uint64(i + 1)
		if _, err := sim.Run(cfg); err != nil {
			b.Fatal(err)
		}
	}
	vmHours := float64(cfg.VMs) * cfg.Duration.Hours() * float64(b.N)
	b.ReportMetric(vmHours/b.Elapsed().Seconds(), "VM-h/s")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/run")
}

// Row is one line of `hass bench`.
type Row struct {
	Name, Value, Target string
}

// EngineRows measures the engine on s's workload and returns its rows.
func EngineRows(s Shape) ([]Row, *Recording, error) {
	rec, err := Recorded(s)
	if err != nil {
		return nil, nil, err
	}
	if bad := rec.Check(); bad != nil {
		return nil, nil, fmt.Errorf("%s: the workload did not exercise the engine: %s", s, strings.Join(bad, "; "))
	}
	res := testing.Benchmark(func(b *testing.B) { EngineMix(b, s) })
	if res.N == 0 {
		return nil, nil, fmt.Errorf("%s: the replay ordered other actions than the recording", s)
	}
	x := res.Extra
	what := fmt.Sprintf("%s VMs on %s hosts", commas(s.VMs), commas(s.Hosts))
	cpu := x["engine-ms/virtual-s"]
	ev, err := Evacuation(s, evacuations)
	if err != nil {
		return nil, nil, err
	}
	perHost := (ev.VMs + ev.Evacuations/2) / max(1, ev.Evacuations)
	return []Row{
		{"engine inputs per second (1 core, mixed workload, " + what + ")", commas(int(x["inputs/s"] + 0.5)), ">= 100,000"},
		{"engine time per input (" + what + ")", fmt.Sprintf("%s ns, %.0f B, %.1f allocs", commas(int(x["ns/input"]+0.5)), x["B/input"], x["allocs/input"]), ""},
		{"engine NextWake, polled every 200 ms (" + what + ")", nanosStr(int64(x["ns/poll"])) + " per call", ""},
		{"engine CPU per second of cluster life, inputs + polls (" + what + ")", fmt.Sprintf("%s (%s of a core)", durStr(time.Duration(cpu*1e6)), pct(cpu/1000)), ""},
		{fmt.Sprintf("engine evacuation plan: the Tick that fences a lost %d-VM host and places its VMs (%s)", perHost, what),
			fmt.Sprintf("%s mean, %s max (%d hosts)", durStr(ev.Mean), durStr(ev.Max), ev.Evacuations), "<= 50 ms"},
		{"engine memory per protected VM (heap in use after building " + what + ")", fmt.Sprintf("%s B", commas(int(ev.HeapPerVM+0.5))), "<= 2 KiB"},
	}, rec, nil
}

// evacuations is how many evacuation plans `hass bench` measures per shape.
const evacuations = 10

// SimRows measures the simulator and returns its rows.
func SimRows() []Row {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	simr := testing.Benchmark(Simulation)
	simSec := simr.T.Seconds() / float64(simr.N)
	return []Row{
		{"hass sim: 100 VMs x 24 h, 8 hosts (wall time)", fmt.Sprintf("%.2f s", simSec), "< 10 s"},
		{"hass sim speed", fmt.Sprintf("%.0f VM-hours/s", 2400/simSec), ">= 240"},
	}
}

// Run measures the engine on each shape, then (withSim) the simulator, and returns the
// rows and the recordings, whose Mix says what the engine was fed and what ran.
func Run(shapes []Shape, withSim bool) ([]Row, []*Recording, error) {
	var rows []Row
	var recs []*Recording
	for _, s := range shapes {
		r, rec, err := EngineRows(s)
		if err != nil {
			return nil, nil, err
		}
		rows = append(rows, r...)
		recs = append(recs, rec)
	}
	if withSim {
		rows = append(rows, SimRows()...)
	}
	return rows, recs, nil
}

// Profile writes a CPU profile of replays of s's workload, NextWake polls included, to w:
// as many replays as make at least a second of CPU time (one, if it takes longer), each into
// a fresh cluster. Building the clusters is in the profile too, labelled phase=build, and
// the replays phase=replay: `go tool pprof -tagfocus phase=replay` shows the replays alone.
// It returns the number of replays.
func Profile(s Shape, w io.Writer) (int, error) {
	rec, err := Recorded(s)
	if err != nil {
		return 0, err
	}
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	if err := pprof.StartCPUProfile(w); err != nil {
		return 0, err
	}
	defer pprof.StopCPUProfile()
	build := pprof.WithLabels(context.Background(), pprof.Labels("phase", "build"))
	replay := pprof.WithLabels(context.Background(), pprof.Labels("phase", "replay"))
	n, cpu := 0, time.Duration(0)
	for n == 0 || (cpu < time.Second && n < 100) {
		var e *engine.Engine
		pprof.SetGoroutineLabels(build)
		e = s.Cluster()
		runtime.GC()
		pprof.SetGoroutineLabels(replay)
		c := processCPU()
		same := rec.Replay(e, true)
		cpu += processCPU() - c
		pprof.SetGoroutineLabels(context.Background())
		if !same {
			return n, fmt.Errorf("%s: the replay diverged from the recording", s)
		}
		n++
	}
	return n, nil
}
