package rig_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hassproject/hass/test/rig"
)

// hass under OpenStack, against a real Nova (Debian 12's Zed packages) on the rig: the
// control plane (RabbitMQ, placement, glance, nova-api, conductor, scheduler) runs in h1, a
// nova-compute on h3 and on h4, each against its host's own libvirtd (nova/aio.sh). hass's
// controllers follow Nova's notifications and operate instances through Nova's API.

// novaHost runs Nova's control plane; novaComputes run nova-compute.
const novaHost rig.Host = 1

var novaComputes = []rig.Host{3, 4}

// novaRig is Nova on the rig.
type novaRig struct {
	t      *testing.T
	r      *rig.Rig
	script string
	dir    string // AIO_DIR
	api    string // the compute endpoint
	clouds string // a clouds.yaml naming the cloud "rig" (hass's, user admin)
	image  string
}

func (n *novaRig) env() []string {
	return []string{"env", "AIO_DIR=" + n.dir, "NOVA_IP=" + n.r.Addr(novaHost)}
}

// novaUp brings up a fresh Nova on the rig and returns it; it is stopped when the test ends.
func novaUp(t *testing.T, r *rig.Rig, dir string) *novaRig {
	t.Helper()
	script, err := filepath.Abs("nova/aio.sh")
	must(t, err)
	n := &novaRig{t: t, r: r, script: script, dir: "/var/tmp/hass-nova", api: fmt.Sprintf("http://%s:8774/v2.1", r.Addr(novaHost))}
	if _, err := r.RootLink(); err != nil { // the test talks to Nova's API from the root namespace
		t.Fatal(err)
	}
	start := time.Now()
	// A fresh cloud every run: no instance or service of an earlier run.
	for _, d := range []string{"state", "logs", "run", "rabbitmq"} {
		must(t, os.RemoveAll(filepath.Join(n.dir, d)))
	}
	for _, step := range []string{"install", "configure"} {
		cmd := append(n.env(), "bash", script, step)
		if out, err := runCmd(cmd...); err != nil {
			t.Fatalf("nova/aio.sh %s: %v\n%s", step, err, tail(out, 40))
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"nova-api.log", "nova-conductor.log", "nova-scheduler.log", "h3.log", "h4.log"} {
				b, _ := os.ReadFile(filepath.Join(n.dir, "logs", f))
				t.Logf("nova %s:\n%s", f, tail(grepLines(string(b), "ERROR", "WARNING"), 30))
			}
		}
		n.deleteAll()
		_, _ = r.Exec(novaHost, append(n.env(), "bash", script, "stop")...)
	})
	if out, err := r.Exec(novaHost, append(n.env(), "bash", script, "start-control")...); err != nil {
		t.Fatalf("nova/aio.sh start-control: %v\n%s", err, tail(out, 40))
	}
	for _, h := range novaComputes {
		_, err := r.Service(h, "nova-compute", append(n.env(), "bash", script, "compute", h.String(), r.Addr(h))...)
		must(t, err)
	}
	for _, step := range [][]string{{"wait-computes", fmt.Sprint(len(novaComputes))}, {"seed"}} {
		if out, err := r.Exec(novaHost, append(append(n.env(), "bash", script), step...)...); err != nil {
			t.Fatalf("nova/aio.sh %s: %v\n%s", step[0], err, tail(out, 40))
		}
	}
	b, err := os.ReadFile(filepath.Join(n.dir, "state", "image_id"))
	must(t, err)
	n.image = strings.TrimSpace(string(b))
	n.clouds = filepath.Join(dir, "clouds.yaml")
	must(t, os.WriteFile(n.clouds, fmt.Appendf(nil, "clouds:\n  rig:\n    auth_type: admin_token\n    auth:\n      endpoint: %s\n      token: admin:admin\n", n.api), 0o600))
	t.Logf("nova: up in %s (control plane on %s, computes on %v)", time.Since(start).Round(time.Second), novaHost, novaComputes)
	return n
}

func runCmd(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// call is one request to Nova's API as user ("admin" is admin; any other user acts as an
// ordinary member of project admin, as an OpenStack user would).
func (n *novaRig) call(user, method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, n.api+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-Auth-Token", user+":admin")
	req.Header.Set("X-OpenStack-Nova-API-Version", "2.60")
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s as %s: %s: %s", method, path, user, resp.Status, b)
	}
	if out != nil && len(b) > 0 {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

type novaServer struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Status     string            `json:"status"`
	TaskState  *string           `json:"OS-EXT-STS:task_state"`
	PowerState int               `json:"OS-EXT-STS:power_state"`
	Host       string            `json:"OS-EXT-SRV-ATTR:host"`
	Domain     string            `json:"OS-EXT-SRV-ATTR:instance_name"`
	Metadata   map[string]string `json:"metadata"`
}

func (s novaServer) settled() bool { return s.TaskState == nil || *s.TaskState == "" }

func (s novaServer) String() string {
	task := ""
	if s.TaskState != nil {
		task = *s.TaskState
	}
	return fmt.Sprintf("%s %s task=%q power=%d host=%s", s.ID, s.Status, task, s.PowerState, s.Host)
}

func (n *novaRig) server(id string) (novaServer, error) {
	var r struct {
		Server novaServer `json:"server"`
	}
	code, err := n.call("admin", "GET", "/servers/"+id, nil, &r)
	if code == http.StatusNotFound {
		return novaServer{}, errNovaGone
	}
	return r.Server, err
}

var errNovaGone = fmt.Errorf("no such instance")

// boot creates an instance on host (an admin's forced host), with HA_Enabled=True, and waits
// until it is ACTIVE. A build that fails (this Nova keeps its databases in SQLite, which now
// and then answers "database is locked" under load) is deleted and tried again, twice.
func (n *novaRig) boot(name string, host rig.Host) novaServer {
	n.t.Helper()
	for try := 1; ; try++ {
		var r struct {
			Server novaServer `json:"server"`
		}
		_, err := n.call("admin", "POST", "/servers", map[string]any{"server": map[string]any{
			"name": name, "imageRef": n.image, "flavorRef": "tiny", "networks": "none",
			"availability_zone": "nova:" + host.String(), "metadata": map[string]string{"HA_Enabled": "True"}}}, &r)
		must(n.t, err)
		var s novaServer
		end := time.Now().Add(120 * time.Second)
		for time.Now().Before(end) {
			if s, err = n.server(r.Server.ID); err == nil && s.Status == "ACTIVE" && s.settled() && s.PowerState == 1 && s.Host == host.String() {
				return s
			}
			if err == nil && s.Status == "ERROR" {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if try == 3 {
			n.t.Fatalf("boot %s on %s: not ACTIVE after 3 tries (last %s %v)", name, host, s, err)
		}
		n.t.Logf("boot %s on %s: not ACTIVE (%s %v): deleted, booted again", name, host, s, err)
		_, _ = n.call("admin", "DELETE", "/servers/"+r.Server.ID, nil, nil)
	}
}

func (n *novaRig) waitServer(id string, limit time.Duration, what string, ok func(novaServer) bool) novaServer {
	n.t.Helper()
	var s novaServer
	waitFor(n.t, limit, id+" "+what, func() (bool, string) {
		var err error
		s, err = n.server(id)
		if err != nil {
			return false, err.Error()
		}
		return ok(s), s.String()
	})
	return s
}

// runningAgain waits until Nova shows s ACTIVE and running, and h runs its domain with a QEMU
// other than pid (the one killed).
func (n *novaRig) runningAgain(r *rig.Rig, s novaServer, h rig.Host, pid int, limit time.Duration) novaServer {
	n.t.Helper()
	return n.waitServer(s.ID, limit, "ACTIVE and running again on "+h.String(), func(cur novaServer) bool {
		p := r.QemuPID(h, s.Domain)
		return cur.Status == "ACTIVE" && cur.settled() && cur.PowerState == 1 && p != 0 && p != pid
	})
}

func (n *novaRig) action(user, id string, body any) {
	n.t.Helper()
	if _, err := n.call(user, "POST", "/servers/"+id+"/action", body, nil); err != nil {
		n.t.Fatal(err)
	}
}

type novaService struct {
	ID         string `json:"id"`
	Host       string `json:"host"`
	State      string `json:"state"`
	Status     string `json:"status"`
	ForcedDown bool   `json:"forced_down"`
}

func (n *novaRig) service(h rig.Host) (novaService, error) {
	var r struct {
		Services []novaService `json:"services"`
	}
	if _, err := n.call("admin", "GET", "/os-services?binary=nova-compute&host="+h.String(), nil, &r); err != nil {
		return novaService{}, err
	}
	if len(r.Services) != 1 {
		return novaService{}, fmt.Errorf("%d compute services on %s", len(r.Services), h)
	}
	return r.Services[0], nil
}

// deleteAll deletes every instance, and removes whatever domain Nova left on the computes.
func (n *novaRig) deleteAll() {
	var r struct {
		Servers []novaServer `json:"servers"`
	}
	if _, err := n.call("admin", "GET", "/servers/detail?all_tenants=1", nil, &r); err == nil {
		for _, s := range r.Servers {
			_, _ = n.call("admin", "DELETE", "/servers/"+s.ID, nil, nil)
		}
	}
	for _, h := range novaComputes {
		if on, _ := n.r.Powered(h); !on {
			continue
		}
		out, _ := n.r.Virsh(h, "list", "--all", "--name")
		for _, d := range strings.Fields(out) {
			if strings.HasPrefix(d, "instance-") {
				_, _ = n.r.Virsh(h, "destroy", d)
				_, _ = n.r.Virsh(h, "undefine", d)
			}
		}
	}
}

// novaCluster is hass on the rig under OpenStack: every BMC configured, agents as boot
// services, the controllers following Nova's notifications and operating through Nova.
func novaCluster(t *testing.T, r *rig.Rig) (*cluster, *novaRig) {
	dir, err := os.MkdirTemp(r.Dir, "nova-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := novaUp(t, r, dir)
	return hassOnNova(t, r, n), n
}

// hassOnNova starts hass on the rig under OpenStack, on Nova n.
func hassOnNova(t *testing.T, r *rig.Rig, n *novaRig) *cluster {
	c := startFencedClusterWith(t, r, "--openstack-cloud", "rig", "--openstack-config", n.clouds,
		"--nova-notifications", fmt.Sprintf("amqp://guest:guest@%s:5672/", r.Addr(novaHost)))
	// The compute hosts are a cluster of their own: their instances are recovered among them
	// (the other hosts run no nova-compute).
	if out, err := c.cli("cluster", "create", "compute"); err != nil {
		t.Fatalf("hass cluster create: %v: %s", err, out)
	}
	for _, h := range novaComputes {
		if out, err := c.cli("host", "add", h.String(), "--cluster", "compute"); err != nil {
			t.Fatalf("hass host add %s --cluster compute: %v: %s", h, err, out)
		}
	}
	return c
}

// healthyIn waits until hass protects the instance (by its domain), healthy and running on h.
func (c *cluster) healthyIn(s novaServer, h rig.Host, limit time.Duration) vmView {
	c.t.Helper()
	var v vmView
	c.eventually(limit, fmt.Sprintf("%s (%s) protected and healthy on %s", s.Domain, s.ID, h), func() (bool, string) {
		var err error
		v, err = c.show(s.Domain)
		return err == nil && v.Host == h.String() && v.State == "healthy" && v.Observed == "running", fmt.Sprintf("%+v %v", v, err)
	})
	return v
}

// recoveries counts hass's detections and recoveries of vm after since.
func (c *cluster) recoveries(vm string, since time.Time) (detects, recovered int) {
	for _, e := range c.events() {
		if e.VM != vm || e.At.Before(since) {
			continue
		}
		switch e.Type {
		case "detect":
			detects++
		case "recovered":
			recovered++
		}
	}
	return detects, recovered
}

// actedAfter is how long after since hass made its first call to recover vm (the recovered
// event's action time), or "?" when no such event is there yet.
func (c *cluster) actedAfter(vm string, since time.Time) string {
	for _, e := range c.events() {
		if e.VM == vm && e.Type == "recovered" && e.ActionAt != nil && e.ActionAt.After(since) {
			return e.ActionAt.Sub(since).Round(time.Millisecond).String()
		}
	}
	return "?"
}

func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// TestHassNova: hass under OpenStack on a real Nova. A user's operations through Nova are
// intent (no recovery of a stop, a reboot; a delete forgotten); a crashed instance is
// recovered through Nova (and Nova's own power-state sync does not undo it); a lost compute
// host is fenced, its nova-compute service forced down, and its instance evacuated through
// Nova to the other compute, ACTIVE there.
func TestHassNova(t *testing.T) {
	r := rig.Up(t)
	c, n := novaCluster(t, r)

	// Protection as OpenStack users ask for it: the HA_Enabled metadata key.
	s := n.boot("user-ops", 4)
	v := c.healthyIn(s, 4, 60*time.Second)
	if v.Policy.NovaInstance != s.ID {
		t.Fatalf("hass protects %s, but not as Nova's instance %s: %+v", s.Domain, s.ID, v.Policy)
	}

	t.Run("UserStopStartReboot", func(t *testing.T) {
		since := time.Now()
		n.action("alice", s.ID, map[string]any{"os-stop": nil})
		n.waitServer(s.ID, 60*time.Second, "SHUTOFF", func(s novaServer) bool { return s.Status == "SHUTOFF" && s.settled() })
		c.eventually(30*time.Second, "hass: stopped by its user", func() (bool, string) {
			v, err := c.show(s.Domain)
			return err == nil && v.Desired == "stopped" && v.Operation == nil, fmt.Sprintf("%+v %v", v, err)
		})
		time.Sleep(20 * time.Second) // longer than Nova's delayed lifecycle event and hass's detection
		if got, _ := n.server(s.ID); got.Status != "SHUTOFF" {
			t.Errorf("a user's stop through Nova was undone: %s", got)
		}
		n.action("alice", s.ID, map[string]any{"os-start": nil})
		n.waitServer(s.ID, 120*time.Second, "ACTIVE again", func(s novaServer) bool { return s.Status == "ACTIVE" && s.settled() && s.PowerState == 1 })
		c.healthyIn(s, 4, 60*time.Second)
		n.action("alice", s.ID, map[string]any{"reboot": map[string]string{"type": "HARD"}})
		n.waitServer(s.ID, 120*time.Second, "ACTIVE after a hard reboot", func(s novaServer) bool { return s.Status == "ACTIVE" && s.settled() && s.PowerState == 1 })
		c.healthyIn(s, 4, 60*time.Second)
		time.Sleep(5 * time.Second)
		if d, rec := c.recoveries(s.Domain, since); d+rec > 0 {
			t.Errorf("a user's stop, start or reboot through Nova was taken for a failure: %d detections, %d recoveries", d, rec)
		}
	})

	t.Run("CrashRecoveredThroughNova", func(t *testing.T) {
		// Five crashes in a row, each within a minute of the last (Masakari drops a second
		// crash within 3 minutes as a duplicate): every one is recovered through Nova.
		// Each crash is measured as a first one: restarts older than the window do not count
		// (a crash loop backs off: 5 s before the second restart in the window, then twice
		// as long each time).
		_, err := c.cli("vm", "protect", s.Domain, "--max-restarts", "20", "--window", "15s")
		must(t, err)
		var took []time.Duration
		for i := range 5 {
			pid := r.QemuPID(4, s.Domain)
			if pid == 0 {
				t.Fatalf("no QEMU for %s on h4", s.Domain)
			}
			since := time.Now()
			must(t, syscall.Kill(pid, syscall.SIGKILL))
			got := n.runningAgain(r, s, 4, pid, 120*time.Second)
			d := time.Since(since)
			took = append(took, d)
			t.Logf("measured: crash %d (kill -9 of QEMU) -> ACTIVE and running through Nova after %s (hass's call to Nova %s after the kill)", i+1, d.Round(time.Millisecond), c.actedAfter(s.Domain, since))
			// Nova's own power-state sync (its lifecycle event is delayed 15 s) does not
			// stop it again.
			newPid := r.QemuPID(4, s.Domain)
			time.Sleep(20 * time.Second)
			if now, _ := n.server(s.ID); now.Status != "ACTIVE" || now.PowerState != 1 || r.QemuPID(4, s.Domain) != newPid {
				t.Fatalf("crash %d: after its recovery through Nova, the instance changed again: %s (QEMU %d, then %d)", i+1, now, newPid, r.QemuPID(4, s.Domain))
			}
			if got.Host != "h4" {
				t.Errorf("crash %d: recovered on %s, want in place on h4", i+1, got.Host)
			}
		}
		t.Logf("measured: crash -> ACTIVE through Nova, p50 %s over %d crashes (%v)", p50(took).Round(time.Millisecond), len(took), took)
		// Through Nova, never behind its back: hass's own requests are in Nova's log of the
		// instance's actions, made by hass's user.
		var acts struct {
			Actions []struct {
				Action string `json:"action"`
				UserID string `json:"user_id"`
			} `json:"instanceActions"`
		}
		_, err = n.call("admin", "GET", "/servers/"+s.ID+"/os-instance-actions", nil, &acts)
		must(t, err)
		hassActs := 0
		for _, a := range acts.Actions {
			if a.UserID == "admin" && (a.Action == "reboot" || a.Action == "start") {
				hassActs++
			}
		}
		if hassActs < 5 {
			t.Errorf("Nova lists %d starts or reboots by hass's user for 5 recoveries: %+v", hassActs, acts.Actions)
		}
	})

	t.Run("CrashWhileLeaderRestarts", func(t *testing.T) {
		// The leading controller is killed, the instance crashes a second later, and the
		// controller is started again 5 s after that: the new leader recovers the instance
		// through Nova (Nova's own power-state sync stops it meanwhile).
		l := c.leader()
		c.ctl[l].Kill()
		time.Sleep(time.Second)
		pid := r.QemuPID(4, s.Domain)
		if pid == 0 {
			t.Fatalf("no QEMU for %s on h4", s.Domain)
		}
		since := time.Now()
		must(t, syscall.Kill(pid, syscall.SIGKILL))
		time.Sleep(5 * time.Second)
		c.startController(l, c.members())
		n.runningAgain(r, s, 4, pid, 120*time.Second)
		t.Logf("measured: crash while the leading controller restarts -> ACTIVE and running through Nova after %s", time.Since(since).Round(time.Millisecond))
		c.healthyIn(s, 4, 60*time.Second)
	})

	t.Run("CrashLoopRelocationStaysOnItsHost", func(t *testing.T) {
		// Restarts in place spent, the policy relocates the instance. hass never forces a
		// healthy compute down to move an instance (an evacuation needs that, and a cold
		// migration copies disks host to host over SSH): it starts it again where it is,
		// through Nova, and follows it there.
		_, err := c.cli("vm", "protect", s.Domain, "--max-restarts", "0", "--max-relocations", "1")
		must(t, err)
		pid := r.QemuPID(4, s.Domain)
		since := time.Now()
		must(t, syscall.Kill(pid, syscall.SIGKILL))
		got := n.runningAgain(r, s, 4, pid, 120*time.Second)
		if got.Host != "h4" {
			t.Errorf("recovered on %s, want on h4", got.Host)
		}
		t.Logf("measured: crash with restarts spent (a relocation) -> ACTIVE and running on its own host through Nova after %s", time.Since(since).Round(time.Millisecond))
		c.healthyIn(s, 4, 60*time.Second)
		if svc, err := n.service(4); err != nil || svc.ForcedDown {
			t.Errorf("h4's nova-compute: %+v %v: a healthy compute was forced down", svc, err)
		}
		_, err = c.cli("vm", "protect", s.Domain, "--max-restarts", "20", "--window", "15s")
		must(t, err)
	})

	t.Run("OperatorLiveMigration", func(t *testing.T) {
		// An operator (an admin who is not hass) live-migrates the instance to the other
		// compute through Nova: an operation, not a failure. hass follows it to its new
		// host, and recovers a crash there in place, through Nova.
		since := time.Now()
		n.action("operator", s.ID, map[string]any{"os-migrateLive": map[string]any{"host": "h3", "block_migration": "auto"}})
		n.waitServer(s.ID, 240*time.Second, "ACTIVE on h3 after the live migration", func(s novaServer) bool {
			return s.Host == "h3" && s.Status == "ACTIVE" && s.settled() && s.PowerState == 1
		})
		t.Logf("measured: an operator's live migration through Nova h4 -> h3 took %s", time.Since(since).Round(time.Millisecond))
		c.healthyIn(s, 3, 60*time.Second)
		time.Sleep(10 * time.Second)
		if d, rec := c.recoveries(s.Domain, since); d+rec > 0 {
			t.Errorf("an operator's live migration through Nova was taken for a failure: %d detections, %d recoveries", d, rec)
		}
		if on := c.running(s.Domain); len(on) != 1 || on[0] != 3 {
			t.Fatalf("after the live migration, %s runs on %v", s.Domain, on)
		}
		pid := r.QemuPID(3, s.Domain)
		since = time.Now()
		must(t, syscall.Kill(pid, syscall.SIGKILL))
		got := n.runningAgain(r, s, 3, pid, 120*time.Second)
		if got.Host != "h3" {
			t.Errorf("after the live migration, a crash was recovered on %s, want in place on h3", got.Host)
		}
		t.Logf("measured: crash on the host an operator migrated it to -> ACTIVE and running through Nova after %s", time.Since(since).Round(time.Millisecond))
	})

	t.Run("UserDelete", func(t *testing.T) {
		_, err := n.call("alice", "DELETE", "/servers/"+s.ID, nil, nil)
		must(t, err)
		c.eventually(60*time.Second, "hass forgets the deleted instance", func() (bool, string) {
			_, err := c.show(s.Domain)
			return err != nil && strings.Contains(err.Error(), "not protected"), fmt.Sprint(err)
		})
	})

	t.Run("ComputeHostLost", func(t *testing.T) {
		// The instance's host loses power (IPMI), five times, alternating between the two
		// computes: fenced, its nova-compute forced down, the instance evacuated through Nova
		// to the other compute and ACTIVE there; the host powered on again, its service's
		// forced_down mark cleared.
		s := n.boot("evac", 4)
		c.healthyIn(s, 4, 60*time.Second)
		var took []time.Duration
		from, to := rig.Host(4), rig.Host(3)
		for i := range 5 {
			if i == 4 {
				// The last loss: the target is left to Nova's scheduler (evacuated with no
				// host named; with two computes it can only choose the other one).
				_, err := c.cli("vm", "protect", s.Domain, "--nova-scheduler")
				must(t, err)
				if v, err := c.show(s.Domain); err != nil || !v.Policy.NovaScheduler {
					t.Fatalf("hass vm protect --nova-scheduler: %+v %v", v.Policy, err)
				}
			}
			since := time.Now()
			must(t, r.PowerOff(from))
			got := n.waitServer(s.ID, 240*time.Second, "ACTIVE on "+to.String(), func(s novaServer) bool {
				return s.Host == to.String() && s.Status == "ACTIVE" && s.settled() && s.PowerState == 1
			})
			if st, _ := r.DomState(to, got.Domain); strings.TrimSpace(st) != "running" {
				t.Fatalf("round %d: Nova says ACTIVE on %s, libvirt there says %q", i+1, to, st)
			}
			d := time.Since(since)
			took = append(took, d)
			c.healthyIn(s, to, 60*time.Second)
			t.Logf("measured: compute host %s lost -> instance ACTIVE on %s through Nova after %s (hass's evacuation call %s after the loss)", from, to, d.Round(time.Millisecond), c.actedAfter(s.Domain, since))
			// hass powers the host on again; its service is no longer forced down, and up.
			c.eventually(180*time.Second, from.String()+"'s nova-compute back up, not forced down", func() (bool, string) {
				svc, err := n.service(from)
				return err == nil && svc.State == "up" && !svc.ForcedDown && svc.Status == "enabled", fmt.Sprintf("%+v %v", svc, err)
			})
			c.eventually(90*time.Second, from.String()+" up again in hass", func() (bool, string) {
				h := c.hostState(from)
				return h.State == "up" && h.Lease == "held", fmt.Sprintf("%+v", h)
			})
			if on := c.running(s.Domain); len(on) != 1 || on[0] != to {
				t.Fatalf("round %d: after %s came back, %s runs on %v", i+1, from, s.Domain, on)
			}
			from, to = to, from
		}
		t.Logf("measured: compute host lost -> ACTIVE on the other compute through Nova, p50 %s over %d losses (%v)", p50(took).Round(time.Millisecond), len(took), took)
		found := false
		for _, e := range c.events() {
			if strings.Contains(e.Msg, "forced its nova-compute service down") {
				found = true
			}
		}
		if !found {
			t.Error("no event says hass forced a nova-compute service down")
		}
	})
}
