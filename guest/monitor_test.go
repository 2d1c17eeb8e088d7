package guest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
)

// world is a guest and its host as the monitor's Env sees them: probes answer after a few
// milliseconds, or after their timeout when the guest does not answer. Time is virtual.
type world struct {
	t       *testing.T
	now     time.Time
	running bool // the emulator runs the guest
	agent   bool // the guest agent answers
	net     bool // the guest's address answers
	queue   []pending
	failed  []report
	pings   int
	reaches int
	logs    []string
	// loss is the chance any one probe's answer is lost (drawn from rng).
	loss  float64
	rng   *rand.Rand
	quiet bool // keep no log
}

func (w *world) lost() bool { return w.loss > 0 && w.rng.Float64() < w.loss }

type pending struct {
	at time.Time
	f  func(time.Time)
}

type report struct {
	kind engine.SignalKind
	at   time.Duration // since the start
	why  string
}

var t0 = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

func (w *world) later(d time.Duration, f func(time.Time)) {
	w.queue = append(w.queue, pending{at: w.now.Add(d), f: f})
}

func (w *world) Ping(vm engine.VMID, timeout time.Duration, done func(time.Time, bool)) {
	w.pings++
	if w.running && w.agent && !w.lost() {
		w.later(5*time.Millisecond, func(now time.Time) { done(now, true) })
		return
	}
	w.later(timeout, func(now time.Time) { done(now, false) })
}

func (w *world) Reach(vm engine.VMID, p engine.GuestPolicy, done func(time.Time, bool)) {
	w.reaches++
	if w.running && w.net && !w.lost() {
		w.later(time.Millisecond, func(now time.Time) { done(now, true) })
		return
	}
	w.later(p.ProbeTimeout, func(now time.Time) { done(now, false) })
}

func (w *world) Running(vm engine.VMID, done func(time.Time, bool)) {
	r := w.running
	w.later(2*time.Millisecond, func(now time.Time) { done(now, r) })
}

func (w *world) Failed(vm engine.VMID, kind engine.SignalKind, at time.Time, why string) {
	w.failed = append(w.failed, report{kind: kind, at: at.Sub(t0), why: why})
}

func (w *world) Log(format string, args ...any) {
	if !w.quiet {
		w.logs = append(w.logs, fmt.Sprintf(format, args...))
	}
}

// run advances virtual time to until, ticking the monitor every 100 ms and delivering
// answers when due.
func (w *world) run(m *Monitor, until time.Duration) {
	end := t0.Add(until)
	for !w.now.After(end) {
		for {
			i := slices.IndexFunc(w.queue, func(p pending) bool { return !p.at.After(w.now) })
			if i < 0 {
				break
			}
			p := w.queue[i]
			w.queue = slices.Delete(w.queue, i, i+1)
			p.f(w.now)
		}
		m.Tick(w.now)
		w.now = w.now.Add(100 * time.Millisecond)
	}
}

func newWorld(t *testing.T) (*world, *Monitor) {
	w := &world{t: t, now: t0, running: true, agent: true, net: true}
	return w, New(DefaultConfig(), w)
}

var (
	hbOnly  = engine.GuestPolicy{Heartbeat: true} // 2 s, 1 s, 3 misses, recheck 2 s
	netOnly = engine.GuestPolicy{Probe: engine.ProbeICMP}
	both    = engine.GuestPolicy{Heartbeat: true, Probe: engine.ProbeTCP, Port: 22}
)

func (w *world) wantReports(kinds ...engine.SignalKind) {
	w.t.Helper()
	var got []engine.SignalKind
	for _, r := range w.failed {
		got = append(got, r.kind)
	}
	if !slices.Equal(got, kinds) {
		w.t.Fatalf("reports %v, want %v; log:\n%s", w.failed, kinds, strings.Join(w.logs, "\n"))
	}
}

func TestHungGuestIsReportedAfterMissesAndRecheck(t *testing.T) {
	w, m := newWorld(t)
	m.Watch(w.now, "v1", hbOnly, true)
	w.run(m, 10*time.Second)
	w.agent = false // hangs at +10 s
	w.run(m, 40*time.Second)
	w.wantReports(engine.SigGuestHung)
	// 3 misses (the pings of +10 s, +12 s and +14 s, each unanswered after 1 s: +15 s), the
	// check's two pings (+17 s), the recheck 2 s later and its two pings (+21 s), each a tick
	// (100 ms) late at most.
	if at := w.failed[0].at; at < 15*time.Second || at > 24*time.Second {
		t.Fatalf("reported at +%s, want between +15 s and +24 s", at)
	}
	if !strings.Contains(w.failed[0].why, "recheck") {
		t.Fatalf("why %q does not say it was rechecked", w.failed[0].why)
	}
}

func TestAgentNeverSeenIsNotAFailure(t *testing.T) {
	w, m := newWorld(t)
	w.agent = false
	m.Watch(w.now, "v1", hbOnly, true)
	w.run(m, 5*time.Minute)
	w.wantReports()
	if w.pings == 0 {
		t.Fatal("never pinged: the agent would never have been seen")
	}
}

func TestTransientLossIsNotReported(t *testing.T) {
	for _, c := range []struct {
		name string
		pol  engine.GuestPolicy
		cut  func(w *world, on bool)
	}{
		{"network", netOnly, func(w *world, on bool) { w.net = on }},
		{"agent", hbOnly, func(w *world, on bool) { w.agent = on }},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, m := newWorld(t)
			m.Watch(w.now, "v1", c.pol, true)
			w.run(m, 10*time.Second)
			c.cut(w, false) // gone for 7 s: enough misses to start a check, back before the recheck
			w.run(m, 17*time.Second)
			c.cut(w, true)
			w.run(m, 2*time.Minute)
			w.wantReports()
			if !slices.ContainsFunc(w.logs, func(s string) bool { return strings.Contains(s, "transient") }) {
				t.Fatalf("no verification ran (the loss was meant to outlast the misses); log:\n%s", strings.Join(w.logs, "\n"))
			}
		})
	}
}

func TestNetworkDownWithTheAgentAnsweringIsANetworkFailure(t *testing.T) {
	w, m := newWorld(t)
	m.Watch(w.now, "v1", both, true)
	w.run(m, 10*time.Second)
	w.net = false
	w.run(m, 40*time.Second)
	w.wantReports(engine.SigGuestNetDown)
}

func TestNetworkProbeFailingOverAHungAgentIsAnOSFailure(t *testing.T) {
	w, m := newWorld(t)
	m.Watch(w.now, "v1", netOnly, true) // the OS layer is not watched, but the agent was seen
	m.vms["v1"].agentSeen = true
	w.run(m, 10*time.Second)
	w.net, w.agent = false, false // the whole guest hangs
	w.run(m, 40*time.Second)
	w.wantReports(engine.SigGuestHung)
}

func TestStoppedOrPausedGuestIsNotProbed(t *testing.T) {
	w, m := newWorld(t)
	m.Watch(w.now, "v1", both, true)
	w.run(m, 10*time.Second)
	m.Stopped(w.now, "v1") // paused by its user
	w.running = false
	pings, reaches := w.pings, w.reaches
	w.run(m, 2*time.Minute)
	w.wantReports()
	if w.pings != pings || w.reaches != reaches {
		t.Fatalf("probed a paused guest: %d pings, %d reaches", w.pings-pings, w.reaches-reaches)
	}
}

func TestProcessDownAtTheCheckIsLeftToTheProcessLayer(t *testing.T) {
	w, m := newWorld(t)
	m.Watch(w.now, "v1", hbOnly, true)
	w.run(m, 10*time.Second)
	w.running = false // the emulator died; its event has not arrived (it never does here)
	w.run(m, 2*time.Minute)
	w.wantReports()
}

func TestRebootDuringMissesStartsAfresh(t *testing.T) {
	w, m := newWorld(t)
	m.Watch(w.now, "v1", hbOnly, true)
	w.run(m, 10*time.Second)
	w.agent = false // the guest reboots: its agent is gone for 30 s
	w.run(m, 13*time.Second)
	m.Started(w.now, "v1") // the reboot event
	w.run(m, 40*time.Second)
	w.agent = true
	w.run(m, 2*time.Minute)
	w.wantReports()
}

func TestAgentRestartingInsideTheGuestIsNotAFailure(t *testing.T) {
	w, m := newWorld(t)
	m.Watch(w.now, "v1", hbOnly, true)
	w.run(m, 10*time.Second)
	w.agent = false
	m.AgentGone(w.now, "v1") // its channel closed: qemu-ga restarts (for 20 s)
	w.run(m, 30*time.Second)
	w.agent = true
	w.run(m, 2*time.Minute)
	w.wantReports()
	// and once it answers again, it is watched again
	w.agent = false
	w.run(m, 2*time.Minute+15*time.Second)
	w.wantReports(engine.SigGuestHung)
}

func TestQuietAfterAReport(t *testing.T) {
	w, m := newWorld(t)
	m.Watch(w.now, "v1", hbOnly, true)
	w.run(m, 10*time.Second)
	w.agent = false
	w.run(m, 40*time.Second) // reported once, then quiet for 30 s
	w.wantReports(engine.SigGuestHung)
	w.run(m, 2*time.Minute) // still hung, nobody recovered it: reported again after the quiet
	if len(w.failed) < 2 {
		t.Fatalf("reported %d times in 2 minutes of a hang nobody recovered", len(w.failed))
	}
	if gap := w.failed[1].at - w.failed[0].at; gap < 30*time.Second {
		t.Fatalf("reported again %s after the first report, within the quiet time", gap)
	}
}

func TestPolicyChangeAndForget(t *testing.T) {
	w, m := newWorld(t)
	m.Watch(w.now, "v1", hbOnly, true)
	m.Watch(w.now, "v2", netOnly, true)
	if got := m.Watching(); !slices.Equal(got, []engine.VMID{"v1", "v2"}) {
		t.Fatalf("watching %v", got)
	}
	m.Watch(w.now, "v2", engine.GuestPolicy{}, true) // every layer off
	m.Forget("v1")
	if got := m.Watching(); len(got) != 0 {
		t.Fatalf("watching %v after both were turned off", got)
	}
	w.agent = false
	w.run(m, time.Minute)
	w.wantReports()
	if !m.Next().IsZero() {
		t.Fatalf("Next %v with nothing watched", m.Next())
	}
}
