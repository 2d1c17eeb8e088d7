//go:build sidebyside

package rig_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hassproject/hass/test/rig"
)

// TestSideBySide runs the same cases against hass and against Masakari (OpenStack's own VM
// HA service, Debian 12's Zed packages) on the same real Nova on the rig, and prints one
// table. It is a benchmark, not part of the test command: scripts/bench-masakari.sh runs it.
//
// Masakari runs as its packages and defaults have it (wait_period_after_service_update 180 s,
// duplicate_notification_detection_interval 180 s), with a masakari-instancemonitor on each
// compute host. Its host monitor needs pacemaker or consul, which the rig has not: the
// benchmark tells Masakari of a lost host itself, the moment it cuts the power (an ideal host
// monitor: every figure of Masakari's host recovery is a lower bound).
func TestSideBySide(t *testing.T) {
	r := rig.Up(t)
	dir, err := os.MkdirTemp(r.Dir, "sbs-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := novaUp(t, r, dir)
	cases := []string{
		"instance crash -> ACTIVE and running",
		"the same instance crashes again within 3 min",
		"a user's stop (openstack server stop)",
		"a user's hard reboot",
		"a crash while the host's HA monitor restarts (down 3 s)",
		"a crash while the central HA service restarts (down 6 s)",
		"compute host lost -> ACTIVE on the other compute",
	}
	got := map[string]map[string]string{}
	// One system at a time: each is started only once the other is stopped.
	for _, start := range []func(*testing.T, *rig.Rig, *novaRig) haSystem{hassSystem, masakariSystem} {
		sys := start(t, r, n)
		res := runCases(t, r, n, sys)
		for i, c := range cases {
			if got[c] == nil {
				got[c] = map[string]string{}
			}
			got[c][sys.name] = res[i]
		}
		sys.stop()
		n.deleteAll()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| case | hass | Masakari |\n| --- | --- | --- |\n")
	for _, c := range cases {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", c, got[c]["hass"], got[c]["Masakari"])
	}
	t.Logf("measured on %s (nova 26.2.2 Zed, masakari 14.0.2, masakari-monitors 14.0.0, Debian 12 packages; rig guests under TCG):%s", time.Now().UTC().Format("2006-01-02"), b.String())
}

// haSystem is one HA service under measurement.
type haSystem struct {
	name string
	// ready waits until the system protects the instance.
	ready func(s novaServer)
	// monitorDown stops the host's monitor (hass's agent, masakari-instancemonitor) and
	// returns a function that starts it again.
	monitorDown func(h rig.Host) func()
	// centralDown stops the central service (hass's leading controller, masakari-engine)
	// and returns a function that starts it again.
	centralDown func() func()
	// hostLost is called the moment a host's power is cut.
	hostLost func(h rig.Host)
	// afterHostLoss brings the lost host back as the system leaves it.
	afterHostLoss func(h rig.Host)
	stop          func()
}

func hassSystem(t *testing.T, r *rig.Rig, n *novaRig) haSystem {
	c := hassOnNova(t, r, n)
	return haSystem{
		name:  "hass",
		ready: func(s novaServer) { c.healthyIn(s, rig.Host(hostNum(s.Host)), 90*time.Second) },
		monitorDown: func(h rig.Host) func() {
			_, _ = r.Run("service-rm", strconv.Itoa(int(h)), "agent") // kills it
			return func() { c.startAgentService(h) }
		},
		centralDown: func() func() {
			l := c.leader()
			c.ctl[l].Kill()
			return func() { c.startController(l, c.members()) }
		},
		hostLost: func(rig.Host) {},
		afterHostLoss: func(h rig.Host) {
			// hass powers the host on again and clears its service's forced_down mark.
			c.eventually(180*time.Second, h.String()+"'s nova-compute back", func() (bool, string) {
				svc, err := n.service(h)
				return err == nil && svc.State == "up" && !svc.ForcedDown, fmt.Sprintf("%+v %v", svc, err)
			})
		},
		stop: func() {
			for _, h := range r.Hosts() {
				_, _ = r.Run("service-rm", strconv.Itoa(int(h)), "agent")
			}
			for _, p := range c.ctl {
				p.Kill()
			}
		},
	}
}

// startAgentService starts h's agent again as its boot service.
func (c *cluster) startAgentService(h rig.Host) {
	saved := c.opts.serviceAgents
	c.opts.serviceAgents = true
	c.startAgent(h)
	c.opts.serviceAgents = saved
}

func hostNum(name string) int {
	v, _ := strconv.Atoi(strings.TrimPrefix(name, "h"))
	return v
}

func masakariSystem(t *testing.T, r *rig.Rig, n *novaRig) haSystem {
	script, err := filepath.Abs("nova/masakari.sh")
	must(t, err)
	env := []string{"env", "MK_DIR=/var/tmp/hass-masakari", "NOVA_IP=" + r.Addr(novaHost)}
	if out, err := runCmd(append(env, "bash", script, "install")...); err != nil {
		t.Fatalf("masakari.sh install: %v\n%s", err, out)
	}
	if out, err := runCmd(append(env, "bash", script, "configure")...); err != nil {
		t.Fatalf("masakari.sh configure: %v\n%s", err, out)
	}
	if out, err := r.Exec(novaHost, append(env, "bash", script, "start-control")...); err != nil {
		t.Fatalf("masakari.sh start-control: %v\n%s", err, out)
	}
	startMonitor := func(h rig.Host) {
		_, err := r.Service(h, "masakari-monitor", append(env, "bash", script, "monitor", h.String())...)
		must(t, err)
		time.Sleep(3 * time.Second) // it registers its libvirt callbacks about a second after it starts
	}
	for _, h := range novaComputes {
		startMonitor(h)
	}
	args := append(append(env, "bash", script, "segment"), hostNames(novaComputes)...)
	if out, err := r.Exec(novaHost, args...); err != nil {
		t.Fatalf("masakari.sh segment: %v\n%s", err, out)
	}
	mapi := fmt.Sprintf("http://%s:15868/v1", r.Addr(novaHost))
	return haSystem{
		name:  "Masakari",
		ready: func(novaServer) {},
		monitorDown: func(h rig.Host) func() {
			_, _ = r.Run("service-rm", strconv.Itoa(int(h)), "masakari-monitor")
			return func() { startMonitor(h) }
		},
		centralDown: func() func() {
			if out, err := r.Exec(novaHost, append(env, "bash", script, "stop-engine")...); err != nil {
				t.Errorf("masakari.sh stop-engine: %v: %s", err, out)
			}
			return func() {
				if out, err := r.Exec(novaHost, append(env, "bash", script, "start-control")...); err != nil {
					t.Errorf("masakari.sh start-control: %v: %s", err, out)
				}
			}
		},
		hostLost: func(h rig.Host) {
			body := fmt.Sprintf(`{"notification":{"type":"COMPUTE_HOST","hostname":"%s","generated_time":"%s","payload":{"event":"STOPPED","host_status":"NORMAL","cluster_status":"OFFLINE"}}}`,
				h, time.Now().UTC().Format("2006-01-02T15:04:05.000000"))
			out, err := runCmd("curl", "-sS", "-f", "-X", "POST", "-H", "X-Auth-Token: admin:admin", "-H", "Content-Type: application/json",
				"-H", "OpenStack-API-Version: instance-ha 1.2", mapi+"/notifications", "-d", body)
			if err != nil {
				t.Errorf("masakari notification: %v: %s", err, out)
			}
		},
		afterHostLoss: func(h rig.Host) {
			// Masakari leaves the host in maintenance and its service disabled: undone here.
			must(t, r.PowerOn(h))
			svc, _ := n.service(h)
			_, _ = n.call("admin", "PUT", "/os-services/"+svc.ID, map[string]any{"status": "enabled", "forced_down": false}, nil)
		},
		stop: func() {
			for _, h := range novaComputes {
				_, _ = r.Run("service-rm", strconv.Itoa(int(h)), "masakari-monitor")
			}
			_, _ = r.Exec(novaHost, append(env, "bash", script, "stop")...)
		},
	}
}

func hostNames(hs []rig.Host) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.String())
	}
	return out
}

// recoveredIn waits up to limit for the instance to be ACTIVE and running on host with a
// QEMU other than old, and says how long after since, or that it was not.
func recoveredIn(n *novaRig, r *rig.Rig, s novaServer, host rig.Host, old int, since time.Time, limit time.Duration) (time.Duration, bool) {
	end := since.Add(limit)
	for time.Now().Before(end) {
		cur, err := n.server(s.ID)
		if pid := r.QemuPID(host, s.Domain); err == nil && cur.Host == host.String() && cur.Status == "ACTIVE" && cur.settled() && cur.PowerState == 1 && pid != 0 && pid != old {
			return time.Since(since), true
		}
		time.Sleep(250 * time.Millisecond)
	}
	cur, _ := n.server(s.ID)
	n.t.Logf("not recovered within %s: %s", limit, cur)
	return limit, false
}

// crashResult says how long after since the crashed instance s (QEMU pid) ran again on h4,
// or that it did not; an instance left down is started by hand for the next case.
func crashResult(n *novaRig, r *rig.Rig, s novaServer, pid int, since time.Time) string {
	d, ok := recoveredIn(n, r, s, 4, pid, since, 150*time.Second)
	if ok {
		return secs(d)
	}
	cur, _ := n.server(s.ID)
	n.action("alice", s.ID, map[string]any{"os-start": nil}) // a user's start: hass protects it again
	n.waitServer(s.ID, 120*time.Second, "ACTIVE", func(s novaServer) bool { return s.Status == "ACTIVE" && s.settled() })
	return fmt.Sprintf("not recovered (%s after %s)", cur.Status, secs(d))
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// runCases runs every case against sys and returns one result each, in order.
func runCases(t *testing.T, r *rig.Rig, n *novaRig, sys haSystem) []string {
	var res []string
	log := func(s string) { t.Logf("%s: %s", sys.name, s); res = append(res, s) }
	s := n.boot("sbs-"+strings.ToLower(sys.name), 4)
	sys.ready(s)
	time.Sleep(5 * time.Second)

	// 1, 2: a crash, and the same instance again 30 s after it was recovered.
	for i := range 2 {
		pid := r.QemuPID(4, s.Domain)
		since := time.Now()
		must(t, syscall.Kill(pid, syscall.SIGKILL))
		log(crashResult(n, r, s, pid, since))
		if i == 0 {
			time.Sleep(30 * time.Second)
		}
	}

	// 3: a user's stop stays a stop.
	n.action("alice", s.ID, map[string]any{"os-stop": nil})
	n.waitServer(s.ID, 60*time.Second, "SHUTOFF", func(s novaServer) bool { return s.Status == "SHUTOFF" && s.settled() })
	time.Sleep(40 * time.Second)
	if cur, _ := n.server(s.ID); cur.Status == "SHUTOFF" {
		log("stays SHUTOFF (40 s)")
	} else {
		log("restarted: a false recovery")
	}
	n.action("alice", s.ID, map[string]any{"os-start": nil})
	n.waitServer(s.ID, 120*time.Second, "ACTIVE", func(s novaServer) bool { return s.Status == "ACTIVE" && s.settled() && s.PowerState == 1 })
	sys.ready(s)

	// 4: a user's hard reboot is no failure: one new QEMU, then nothing more for 40 s.
	n.action("alice", s.ID, map[string]any{"reboot": map[string]string{"type": "HARD"}})
	n.waitServer(s.ID, 120*time.Second, "ACTIVE", func(s novaServer) bool { return s.Status == "ACTIVE" && s.settled() && s.PowerState == 1 })
	pid := r.QemuPID(4, s.Domain)
	time.Sleep(40 * time.Second)
	if cur, _ := n.server(s.ID); cur.Status == "ACTIVE" && r.QemuPID(4, s.Domain) == pid {
		log("no false recovery (40 s)")
	} else {
		log(fmt.Sprintf("restarted again: a false recovery (%s)", cur.Status))
	}
	sys.ready(s)

	// 5: the host's monitor is down when the instance crashes (for hass, its agent: back
	// within its lease, or the host is taken for lost); 6: the central service is.
	for _, down := range []func() func(){func() func() { return sys.monitorDown(4) }, sys.centralDown} {
		up := down()
		time.Sleep(time.Second)
		pid = r.QemuPID(4, s.Domain)
		since := time.Now()
		must(t, syscall.Kill(pid, syscall.SIGKILL))
		if len(res) == 4 {
			time.Sleep(2 * time.Second)
		} else {
			time.Sleep(5 * time.Second)
		}
		up()
		log(crashResult(n, r, s, pid, since))
		sys.ready(s)
		time.Sleep(5 * time.Second)
	}
	var since time.Time

	// 7: the compute host is lost.
	since = time.Now()
	must(t, r.PowerOff(4))
	sys.hostLost(4)
	if d, ok := recoveredIn(n, r, s, 3, 0, since, 360*time.Second); ok {
		log(secs(d))
	} else {
		log(fmt.Sprintf("not recovered after %s", secs(d)))
	}
	sys.afterHostLoss(4)
	return res
}
