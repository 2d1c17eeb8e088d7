package benchmark

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
)

// This file measures two more of the engine's targets on a shape's cluster (Shape.Cluster):
// how long it takes to plan a lost host's evacuation, and how much memory a protected VM
// costs it.

// EvacStats is what Evacuation measured.
type EvacStats struct {
	Evacuations int           // hosts lost, fenced and evacuated
	VMs         int           // VMs placed elsewhere, in all
	Mean, Max   time.Duration // CPU time of the Tick that fenced a host and placed its VMs
	// HeapPerVM is the heap in use after building the first cluster (the garbage collected),
	// less the heap in use before, divided by the number of VMs: the engine's memory per
	// protected VM, host records included.
	HeapPerVM float64
}

// PerVM is the mean planning time per VM placed.
func (s EvacStats) PerVM() time.Duration {
	if s.VMs == 0 {
		return 0
	}
	return s.Mean * time.Duration(s.Evacuations) / time.Duration(s.VMs)
}

// evacuator loses the hosts of a cluster one after another, from the last by name, and times
// the Tick that fences each one and orders its VMs started elsewhere: the evacuation plan.
// Placement fills the emptiest hosts first, ties by name, so the lost hosts hold only their
// own VMs as long as k lost hosts' VMs fit on the hosts before them; after that many a new
// cluster is built (off the clock).
type evacuator struct {
	s         Shape
	e         *engine.Engine
	now       time.Time
	lost      int // hosts of e lost so far
	perClust  int // hosts a cluster may lose
	heapPerVM float64
}

func newEvacuator(s Shape) *evacuator {
	per := (s.VMs + s.Hosts - 1) / s.Hosts
	return &evacuator{s: s, perClust: max(1, s.Hosts/(per+1))}
}

func (ev *evacuator) build() {
	ev.e = nil
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ev.e = ev.s.Cluster()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if ev.heapPerVM == 0 {
		ev.heapPerVM = (float64(after.HeapInuse) - float64(before.HeapInuse)) / float64(ev.s.VMs)
	}
	ev.now, ev.lost = t0, 0
}

// next loses one more host and returns the CPU time of the Tick that planned its
// evacuation, and the number of VMs it placed. Only the Tick is timed.
func (ev *evacuator) next() (time.Duration, int, error) {
	if ev.e == nil || ev.lost >= ev.perClust {
		ev.build()
	}
	victim := hostID(ev.s.Hosts - 1 - ev.lost)
	ev.lost++
	want := 0
	for _, st := range ev.e.Status() {
		if st.Home == victim {
			want++
		}
	}
	ev.now = ev.now.Add(time.Second)
	ev.e.Step(ev.now, engine.HostLease{Host: victim, Alive: false, Since: ev.now.Add(-time.Second)})
	ev.now = ev.now.Add(engine.DefaultConfig().SelfFenceMargin)
	runtime.GC()
	c := processCPU()
	out := ev.e.Step(ev.now, engine.Tick{})
	cpu := processCPU() - c
	starts := 0
	for _, a := range out.Actions {
		if a.Kind == engine.ActStart && a.Host != victim {
			starts++
		}
	}
	if ev.e.HostState(victim) != "fenced" || starts != want {
		return cpu, starts, fmt.Errorf("%s: losing %s (%d VMs) fenced it: %s, and ordered %d starts elsewhere", ev.s, victim, want, ev.e.HostState(victim), starts)
	}
	return cpu, starts, nil
}

// Evacuation measures n evacuation plans on s's cluster, on one core (see evacuator), and
// the engine's memory per protected VM.
func Evacuation(s Shape, n int) (EvacStats, error) {
	if err := s.Validate(); err != nil {
		return EvacStats{}, err
	}
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	ev := newEvacuator(s)
	var st EvacStats
	var total time.Duration
	for range n {
		cpu, vms, err := ev.next()
		if err != nil {
			return st, err
		}
		st.Evacuations++
		st.VMs += vms
		total += cpu
		st.Max = max(st.Max, cpu)
	}
	st.Mean = total / time.Duration(max(1, st.Evacuations))
	st.HeapPerVM = ev.heapPerVM
	return st, nil
}

// EvacuationBench is Evacuation as a Go benchmark: one op is one evacuation plan; building
// clusters is off the clock. Its figures are in CPU time.
//
//	cpu-ns/evacuation   the Tick that fences a lost host and places its VMs
//	cpu-ns/vm           the same, per VM placed
//	heap-B/vm           the engine's memory per protected VM (see EvacStats.HeapPerVM)
func EvacuationBench(b *testing.B, s Shape) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	ev := newEvacuator(s)
	var cpu time.Duration
	vms := 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if ev.e == nil || ev.lost >= ev.perClust {
			ev.build()
		}
		b.StartTimer()
		c, n, err := ev.next()
		if err != nil {
			b.Fatal(err)
		}
		cpu += c
		vms += n
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/evacuation")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(max(1, vms)), "cpu-ns/vm")
	b.ReportMetric(ev.heapPerVM, "heap-B/vm")
}
