// Package benchmark measures hass's speed targets: decision-engine throughput and simulator
// speed. `hass bench` prints its numbers and `go test -bench` runs the same code. It measures
// and reports; it asserts nothing about wall-clock time.
package benchmark

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/sim"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Cluster returns an engine protecting vms running VMs spread over hosts hosts.
func Cluster(hosts, vms int) *engine.Engine {
	e := engine.New(engine.DefaultConfig())
	for h := range hosts {
		e.Step(t0, engine.AddHost{Host: hostID(h), MemMiB: 1 << 20})
	}
	for v := range vms {
		e.Step(t0, engine.Protect{VM: vmID(v), Host: hostID(v % hosts), MemMiB: 512, Policy: engine.DefaultPolicy()})
		e.Step(t0, engine.Observe{Host: hostID(v % hosts), VM: vmID(v), Seq: 1, State: engine.DomRunning, Reason: engine.ReasonBooted})
	}
	return e
}

func hostID(i int) engine.HostID { return engine.HostID(fmt.Sprintf("h%03d", i)) }
func vmID(i int) engine.VMID     { return engine.VMID(fmt.Sprintf("vm%05d", i)) }

// Observations feeds b.N observations to a 1,000-VM engine: three in four say a VM still
// runs (the common case), one in four is a crash, whose restart is answered by the next
// observation, so the classification, recovery and bookkeeping paths all run.
func Observations(b *testing.B) {
	const hosts, vms = 8, 1000
	e := Cluster(hosts, vms)
	seq := uint64(2)
	now := t0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		v := i % vms
		h := hostID(v % hosts)
		now = now.Add(time.Millisecond)
		seq++
		st, r := engine.DomRunning, engine.ReasonBooted
		if (i/vms)%4 == 3 {
			st, r = engine.DomShutoff, engine.ReasonFailed
		}
		e.Step(now, engine.Observe{Host: h, VM: vmID(v), Seq: seq, State: st, Reason: r, At: now})
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "obs/s")
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

// Run measures everything on one core and returns the rows.
func Run() []Row {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	obs := testing.Benchmark(Observations)
	simr := testing.Benchmark(Simulation)
	perObs := float64(obs.T.Nanoseconds()) / float64(obs.N)
	simSec := simr.T.Seconds() / float64(simr.N)
	return []Row{
		{"engine observations per second (1 core, 1,000 VMs)", fmt.Sprintf("%.0f", 1e9/perObs), ">= 100,000"},
		{"engine time per observation", fmt.Sprintf("%.0f ns, %d B, %d allocs", perObs, obs.AllocedBytesPerOp(), obs.AllocsPerOp()), ""},
		{"hass sim: 100 VMs x 24 h, 8 hosts (wall time)", fmt.Sprintf("%.2f s", simSec), "< 10 s"},
		{"hass sim speed", fmt.Sprintf("%.0f VM-hours/s", 2400/simSec), ">= 240"},
	}
}
