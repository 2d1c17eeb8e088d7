package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRecoveryLatency kills a protected guest's emulator 20 times and measures, from hass's
// event log, its log and the moment of each kill:
//
//	event -> restart call   hass's own reaction to libvirt's "stopped failed" event, until
//	                        virDomainCreate is called (the etcd writes that must precede it
//	                        included); then split into the engine's decision, the
//	                        record-before-act writes and the dispatch to the call
//	kill  -> restart call   including how long libvirt takes to report the death
//	kill  -> running again  as hass observed it
//
// It asserts that every crash was recovered; the numbers are printed, not asserted.
func TestRecoveryLatency(t *testing.T) {
	const crashes = 20
	d := startHass(t, "")
	name := guest(t)
	// A one-second window: each crash is the first in its window, so no backoff is added.
	d.hass("vm", "protect", name, "--max-restarts", "1000", "--window", "1s")
	var evToAct, killToAct, killToRun []time.Duration
	seen := 0
	for i := 0; i < crashes; i++ {
		time.Sleep(1500 * time.Millisecond)
		pid, at := killQemu(t, name)
		waitRunning(t, name, pid, recoverWithin)
		var rec *struct{ fault, action, recovered time.Time }
		waitFor(t, recoverWithin, "the recovered event", func() (bool, string) {
			n := 0
			for _, e := range d.events() {
				if e.VM != name || e.Type != "recovered" {
					continue
				}
				n++
				if n == seen+1 && e.FaultAt != nil && e.ActionAt != nil && e.RecoveredAt != nil {
					rec = &struct{ fault, action, recovered time.Time }{*e.FaultAt, *e.ActionAt, *e.RecoveredAt}
				}
			}
			return rec != nil, fmt.Sprintf("%d recovered events", n)
		})
		seen++
		evToAct = append(evToAct, rec.action.Sub(rec.fault))
		killToAct = append(killToAct, rec.action.Sub(at))
		killToRun = append(killToRun, rec.recovered.Sub(at))
	}
	row := func(what string, ds []time.Duration) {
		t.Logf("bench: %-28s p50 %8s  p99 %8s  max %8s  (n=%d)", what,
			percentile(ds, 0.5).Round(time.Microsecond), percentile(ds, 0.99).Round(time.Microsecond),
			percentile(ds, 1).Round(time.Microsecond), len(ds))
	}
	row("libvirt event -> restart call", evToAct)
	row("kill -9 -> restart call", killToAct)
	row("kill -9 -> running again", killToRun)
	// hass's own share, stage by stage: the controller's decision and its record-before-act
	// write (its log of the orders), then the way from the decision to the libvirt call
	// (the record, the order's way to the agent through etcd, the agent's token check).
	stages := map[string][]time.Duration{}
	for _, line := range strings.Split(d.logBuf.String(), "\n") {
		switch {
		case strings.Contains(line, `msg="orders recorded"`):
			for _, f := range []string{"decide", "record"} {
				if v, ok := logField(line, f); ok {
					stages[f] = append(stages[f], v)
				}
			}
		case strings.Contains(line, `msg="action carried out"`) && strings.Contains(line, "recovery:vm-crash"):
			for _, f := range []string{"since_decision", "check"} {
				if v, ok := logField(line, f); ok {
					stages[f] = append(stages[f], v)
				}
			}
		}
	}
	row("  engine decision", stages["decide"])
	row("  record-before-act (etcd)", stages["record"])
	row("  decision -> libvirt call", stages["since_decision"])
	row("    of which token check", stages["check"])
	if len(stages["decide"]) == 0 || len(stages["record"]) == 0 {
		t.Errorf("the controller logged no decision or record times with its orders (%d, %d)", len(stages["decide"]), len(stages["record"]))
	}
	if len(stages["since_decision"]) != crashes {
		t.Errorf("%d restart calls logged with their timings, want %d", len(stages["since_decision"]), crashes)
	}
	if n := d.countEvents(name, "recovered"); n != crashes {
		t.Fatalf("%d recoveries for %d crashes", n, crashes)
	}
}

// TestDaemonFootprint protects 20 guests and measures the daemon's memory and CPU while it
// watches them (one resync every 2 s in these tests, 15 times more often than the default).
func TestDaemonFootprint(t *testing.T) {
	const n = 20
	d := startHass(t, "")
	for _, name := range guests(t, n) {
		d.hass("vm", "protect", name)
	}
	vms := d.hass("vm", "list")
	if got := strings.Count(vms, "healthy"); got != n {
		t.Fatalf("%d of %d guests healthy:\n%s", got, n, vms)
	}
	pid := d.cmd.Process.Pid
	time.Sleep(3 * time.Second)
	cpu0, wall0 := cpuTime(t, pid), time.Now()
	time.Sleep(15 * time.Second) // 7 resyncs of 20 domains
	cpu1, wall1 := cpuTime(t, pid), time.Now()
	rss := rssKiB(t, pid)
	share := float64(cpu1-cpu0) / float64(wall1.Sub(wall0)) * 100
	t.Logf("bench: daemon with %d protected VMs: RSS %.1f MiB, CPU %.2f%% of one core over %s (resync every 2s)",
		n, float64(rss)/1024, share, wall1.Sub(wall0).Round(time.Second))
}

func rssKiB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// cpuTime is the process's user+system CPU time.
func cpuTime(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100 // clock ticks: 100 per second on Linux
}

// logField reads a duration field (name=1.5ms) from a log line of slog's text handler.
func logField(line, name string) (time.Duration, bool) {
	i := strings.Index(line, " "+name+"=")
	if i < 0 {
		return 0, false
	}
	v := line[i+len(name)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	d, err := time.ParseDuration(v)
	return d, err == nil
}
