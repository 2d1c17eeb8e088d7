package rig_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/test/rig"
)

// TestHassFigures measures, on the rig, what the README's multi-host table shows: host loss
// -> every protected VM running on a survivor (10 losses, hosts taken in turn, each powered
// on and rejoining before the next); leader failover; the agents' and controllers' memory
// and CPU. It asserts that every loss was recovered exactly once; the numbers are printed.
func TestHassFigures(t *testing.T) {
	r := rig.Up(t)
	c := startCluster(t, r)
	members := c.members()
	vms := append(c.protectOn(1, 2), c.protectOn(2, 2)...)

	// Footprint, with 4 protected VMs and a resync every 5 s.
	time.Sleep(2 * time.Second)
	type sample struct {
		cpu time.Duration
		at  time.Time
	}
	before := map[int]sample{}
	var pids []int
	for _, h := range ctlHosts {
		pids = append(pids, c.ctl[h].Pid, c.agents[h].Pid)
	}
	for _, p := range pids {
		before[p] = sample{procCPU(t, p), time.Now()}
	}
	time.Sleep(15 * time.Second)
	for i, p := range pids {
		role := "controller"
		if i%2 == 1 {
			role = "agent"
		}
		share := float64(procCPU(t, p)-before[p].cpu) / float64(time.Since(before[p].at)) * 100
		t.Logf("bench: %s on h%d: RSS %.1f MiB, CPU %.2f%% of one core (4 VMs protected in the cluster)",
			role, i/2+1, float64(procRSS(t, p))/1024, share)
	}

	// Host losses.
	losses := c.lossRounds(vms, 10, members, false)
	t.Logf("bench: host lost -> VM running on a survivor  p50 %s  p99 %s  max %s  (n=%d VMs, 10 losses)",
		percentileOf(losses, 0.5), percentileOf(losses, 0.99), percentileOf(losses, 1), len(losses))

	// Leader failover: the leading controller killed, until another leads.
	var failovers []time.Duration
	for range 5 {
		l := c.leader()
		seen := map[rig.Host]int{}
		for _, h := range ctlHosts {
			seen[h] = strings.Count(c.ctl[h].Output(), "msg=leading")
		}
		killed := time.Now()
		c.ctl[l].Kill()
		var took time.Duration
		c.eventually(60*time.Second, "a new leader", func() (bool, string) {
			for _, h := range ctlHosts {
				if h != l && strings.Count(c.ctl[h].Output(), "msg=leading") > seen[h] {
					took = time.Since(killed)
					return true, ""
				}
			}
			return false, ""
		})
		failovers = append(failovers, took)
		c.startController(l, members)
		time.Sleep(3 * time.Second) // its etcd member back in the cluster
	}
	t.Logf("bench: leader killed -> another leads          p50 %s  p99 %s  max %s  (n=%d)",
		percentileOf(failovers, 0.5), percentileOf(failovers, 0.99), percentileOf(failovers, 1), len(failovers))
}

// lossRounds loses, n times, the host that runs the most of vms (power off through its BMC),
// waits until each of its VMs runs exactly once on a survivor, and returns how long each took
// (the recovered event's time). The lost host comes back before the next round: powered on by
// the test, or (byHass) by hass itself through its BMC, its agent a boot service.
func (c *cluster) lossRounds(vms []string, n int, members string, byHass bool) []time.Duration {
	t, r := c.t, c.r
	t.Helper()
	var losses []time.Duration
	for i := range n {
		// lose the host that runs the most protected VMs
		count := map[rig.Host]int{}
		for _, vm := range vms {
			for _, h := range c.running(vm) {
				count[h]++
			}
		}
		victim := rig.Host(1)
		for _, h := range r.Hosts() {
			if count[h] > count[victim] {
				victim = h
			}
		}
		var on []string
		for _, vm := range vms {
			if slices.Contains(c.running(vm), victim) {
				on = append(on, vm)
			}
		}
		lost := time.Now()
		must(t, r.PowerOff(victim))
		c.watchExactlyOnce(on, victim, lost, 90*time.Second)
		var worst time.Duration
		for _, d := range c.recoveredAfter(on, lost) {
			losses = append(losses, d)
			worst = max(worst, d)
		}
		t.Logf("loss %d: %s with %d VMs lost at %s: all running elsewhere after %s", i+1, victim, len(on),
			lost.UTC().Format("15:04:05.000"), worst.Round(time.Millisecond))
		for _, h := range ctlHosts {
			for _, line := range strings.Split(c.ctl[h].Output(), "\n") {
				if strings.Contains(line, "host="+victim.String()) && (strings.Contains(line, "lease expired:") || strings.Contains(line, "fenced:")) ||
					strings.Contains(line, "msg=leading") || strings.Contains(line, `msg="not leading"`) || strings.Contains(line, "could not be recorded") {
					if ts, ok := strings.CutPrefix(line, "time="); ok && ts > lost.UTC().Format(time.RFC3339) {
						t.Logf("  c%d: %s", int(h), line)
					}
				}
			}
		}
		if byHass {
			c.eventually(120*time.Second, victim.String()+" powered on again by hass", func() (bool, string) {
				on, err := r.Powered(victim)
				return err == nil && on, fmt.Sprint(on, err)
			})
			must(t, r.WaitLibvirtd(victim, 60*time.Second))
		} else {
			must(t, r.PowerOn(victim))
		}
		if slices.Contains(ctlHosts, victim) {
			c.startController(victim, members)
		}
		if !byHass {
			c.startAgent(victim)
		}
		c.eventually(90*time.Second, "every host up again", func() (bool, string) {
			out, err := c.cli("host", "list")
			return err == nil && strings.Count(out, " up ") == len(r.Hosts()), fmt.Sprint(out, err)
		})
	}
	return losses
}

// TestHassFiguresIPMI measures host loss -> VMs running on survivors with every host's BMC
// configured: the power layer sees the loss and the host is fenced by its BMC's "off", and
// hass powers it on again. 10 losses, as TestHassFigures.
func TestHassFiguresIPMI(t *testing.T) {
	r := rig.Up(t)
	c := startFencedCluster(t, r)
	vms := append(c.protectOn(1, 2), c.protectOn(2, 2)...)
	losses := c.lossRounds(vms, 10, c.members(), true)
	t.Logf("bench: host lost (BMC configured) -> VM running on a survivor  p50 %s  p99 %s  max %s  (n=%d VMs, 10 losses)",
		percentileOf(losses, 0.5), percentileOf(losses, 0.99), percentileOf(losses, 1), len(losses))
}

func percentileOf(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i].Round(time.Millisecond)
}

func procRSS(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return 0
}

// procCPU is a process's user+system CPU time (clock ticks of 10 ms).
func procCPU(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b)[strings.LastIndex(string(b), ")")+2:])
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return time.Duration(u+s) * 10 * time.Millisecond
}
