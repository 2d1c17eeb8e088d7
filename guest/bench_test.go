package guest

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
)

// BenchmarkHangToReport measures, in the monitor's virtual time, how long after a guest hangs
// its failure is reported (the engine orders the reset at once: see the e2e test for the time
// to the libvirt call on a real guest), for several heartbeat intervals and miss counts, the
// hang striking at a random phase of the heartbeat. It reports the mean and the worst over
// the runs, and the bound (misses+1) x interval + 2 x timeout + recheck + 2 x timeout they are
// meant to stay under.
func BenchmarkHangToReport(b *testing.B) {
	for _, c := range []struct {
		interval, timeout time.Duration
		misses            int
	}{
		{time.Second, time.Second, 3},
		{2 * time.Second, time.Second, 3},
		{5 * time.Second, time.Second, 3},
		{2 * time.Second, time.Second, 5},
	} {
		pol := engine.GuestPolicy{Heartbeat: true, HeartbeatInterval: c.interval, HeartbeatTimeout: c.timeout, HeartbeatMisses: c.misses, Recheck: 2 * time.Second}
		b.Run(fmt.Sprintf("interval=%s/misses=%d", c.interval, c.misses), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			var sum, worst time.Duration
			for range b.N {
				w := &world{now: t0, running: true, agent: true, net: true, quiet: true}
				m := New(DefaultConfig(), w)
				m.Watch(w.now, "v1", pol, true)
				hang := 10*time.Second + time.Duration(rng.Int64N(int64(c.interval)))
				w.run(m, hang)
				w.agent = false
				start := w.now
				w.run(m, hang+time.Minute)
				if len(w.failed) == 0 {
					b.Fatal("the hang was not reported")
				}
				d := t0.Add(w.failed[0].at).Sub(start)
				sum += d
				worst = max(worst, d)
			}
			// the hang's phase and the misses, the check's two pings, the recheck's wait and two pings
			bound := time.Duration(c.misses+1)*c.interval + 2*c.timeout + pol.Recheck + 2*c.timeout
			b.ReportMetric((sum / time.Duration(b.N)).Seconds(), "s-mean")
			b.ReportMetric(worst.Seconds(), "s-worst")
			b.ReportMetric(bound.Seconds(), "s-bound")
			if worst > bound+time.Second { // the test world ticks every 100 ms
				b.Errorf("worst %s over the bound %s", worst, bound)
			}
		})
	}
}

// BenchmarkFalseAlarmsUnderProbeLoss runs healthy guests with both layers on (the defaults: 2
// s, 3 misses, recheck 2 s) for a long virtual time while each probe's answer is lost at
// random with the given chance, and reports the false alarms per 1,000 VM-days: it must be
// zero.
func BenchmarkFalseAlarmsUnderProbeLoss(b *testing.B) {
	for _, loss := range []float64{0.01, 0.05} {
		b.Run(fmt.Sprintf("loss=%g", loss), func(b *testing.B) {
			const days = 10 // per iteration, one VM
			alarms, checks := 0, 0
			for i := range b.N {
				w := &world{now: t0, running: true, agent: true, net: true, quiet: true, loss: loss, rng: rand.New(rand.NewPCG(uint64(i), 7))}
				m := New(DefaultConfig(), w)
				m.Watch(w.now, "v1", engine.GuestPolicy{Heartbeat: true, Probe: engine.ProbeICMP}, true)
				w.run(m, days*24*time.Hour)
				alarms += len(w.failed)
				checks += w.pings + w.reaches
			}
			vmDays := float64(b.N * days)
			b.ReportMetric(float64(alarms)/vmDays*1000, "false-alarms/1000VM-days")
			b.ReportMetric(float64(checks)/vmDays, "probes/VM-day")
			if alarms != 0 {
				b.Errorf("%d false alarms in %.0f VM-days at %g probe loss", alarms, vmDays, loss)
			}
		})
	}
}
