package rig_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/auth"
	"github.com/hassproject/hass/test/rig"
)

// hassBin is the hass binary, built once per test process.
var (
	hassOnce sync.Once
	hassPath string
	hassErr  error
)

func hassBinary(t *testing.T) string {
	t.Helper()
	hassOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hass-rig-bin-")
		if err != nil {
			hassErr = err
			return
		}
		hassPath = filepath.Join(dir, "hass")
		out, err := exec.Command("go", "build", "-o", hassPath, "github.com/hassproject/hass/cmd/hass").CombinedOutput()
		if err != nil {
			hassErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if hassErr != nil {
		t.Fatal(hassErr)
	}
	return hassPath
}

// cluster is hass on the rig: on every host a controller (with its embedded etcd member:
// three members) and an agent.
type cluster struct {
	t      *testing.T
	r      *rig.Rig
	bin    string
	ctl    map[rig.Host]*rig.Proc
	agents map[rig.Host]*rig.Proc
	dir    string
	opts   clusterOpts
	// tokenFile holds the admin token every controller is started with
	// (--admin-token-file): whichever controller creates the first token stores this one,
	// so the test knows it whoever wins.
	tokenFile string
	pki       string // the CA and the hosts' certificates, when the cluster runs TLS
}

// clusterOpts vary how a test's cluster runs.
type clusterOpts struct {
	ctlArgs []string // more flags for every controller
	// serviceAgents runs each agent as a boot service of its host (started again when the
	// host powers on), its output in the host's log file.
	serviceAgents bool
	// tls runs everything that crosses the rig's network over TLS: etcd's client and peer
	// traffic (mutual), and the API (https), with certificates from hass certs init.
	tls bool
}

// scheme is http, or https when the cluster runs TLS.
func (c *cluster) scheme() string {
	if c.opts.tls {
		return "https"
	}
	return "http"
}

// certs makes the CA and every host's certificate (named and addressed as on the rig).
func (c *cluster) certs() {
	c.pki = filepath.Join(c.dir, "pki")
	for _, h := range c.r.Hosts() {
		out, err := exec.Command(c.bin, "certs", "init", "--dir", c.pki, "--hosts", h.String(), "--ip", c.r.Addr(h)).CombinedOutput()
		if err != nil {
			c.t.Fatalf("hass certs init: %v: %s", err, out)
		}
	}
}

// tlsArgs are a host's flags of etcd's TLS (and, for a controller, the API's).
func (c *cluster) tlsArgs(h rig.Host, api bool) []string {
	if !c.opts.tls {
		return nil
	}
	crt, key, ca := filepath.Join(c.pki, h.String()+".crt"), filepath.Join(c.pki, h.String()+".key"), filepath.Join(c.pki, "ca.crt")
	args := []string{"--etcd-cert", crt, "--etcd-key", key, "--etcd-ca", ca}
	if api {
		args = append(args, "--tls-cert", crt, "--tls-key", key, "--tls-ca", ca)
	}
	return args
}

// clientArgs are what the CLI needs to reach a controller's API at via.
func (c *cluster) clientArgs(via rig.Host) []string {
	a := []string{"--server", fmt.Sprintf("%s://%s:%d", c.scheme(), c.r.Addr(via), apiPort), "--token-file", c.tokenFile}
	if c.opts.tls {
		a = append(a, "--ca", filepath.Join(c.pki, "ca.crt"))
	}
	return a
}

// ctlHosts run the controllers, each with one of etcd's three members; every host runs an
// agent.
var ctlHosts = []rig.Host{1, 2, 3}

// members is etcd's initial cluster.
func (c *cluster) members() string {
	var m []string
	for _, h := range ctlHosts {
		m = append(m, fmt.Sprintf("c%d=%s://%s:%d", int(h), c.scheme(), c.r.Addr(h), peerPort))
	}
	return strings.Join(m, ",")
}

const (
	apiPort  = 8080
	peerPort = 2380
	cliPort  = 2379
	hbPort   = 7946
)

func startCluster(t *testing.T, r *rig.Rig) *cluster {
	t.Helper()
	return startClusterWith(t, r, clusterOpts{})
}

func startClusterWith(t *testing.T, r *rig.Rig, o clusterOpts) *cluster {
	t.Helper()
	c := &cluster{t: t, r: r, bin: hassBinary(t), ctl: map[rig.Host]*rig.Proc{}, agents: map[rig.Host]*rig.Proc{}, opts: o}
	var err error
	c.dir, err = os.MkdirTemp(r.Dir, "hass-")
	must(t, err)
	tok, err := auth.New("rig")
	must(t, err)
	c.tokenFile = filepath.Join(c.dir, "admin.token")
	must(t, auth.WriteNewFile(c.tokenFile, tok))
	if o.tls {
		c.certs()
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range r.Hosts() {
				if p := c.ctl[h]; p != nil {
					t.Logf("controller on %s:\n%s", h, tail(p.Output(), 60))
				}
				if p := c.agents[h]; p != nil {
					t.Logf("agent on %s:\n%s", h, tail(p.Output(), 60))
				}
				if c.opts.serviceAgents {
					b, _ := os.ReadFile(r.LogFile(h, "agent"))
					t.Logf("agent on %s:\n%s", h, tail(string(b), 60))
				}
			}
		}
		for _, p := range c.agents {
			p.Kill()
		}
		for _, p := range c.ctl {
			p.Kill()
		}
		os.RemoveAll(c.dir)
	})
	for _, h := range ctlHosts {
		c.startController(h, c.members())
	}
	for _, h := range r.Hosts() {
		c.startAgent(h)
	}
	c.eventually(90*time.Second, "every host up in hass host list", func() (bool, string) {
		out, err := c.cli("host", "list")
		if err != nil {
			return false, err.Error()
		}
		return strings.Count(out, " up ") == len(r.Hosts()), out
	})
	// Every agent counts every host and hears every other: before that, a control plane
	// lost leaves an agent without the majority it can hear, and it fences its host (as it
	// must: a peer it cannot hear may hold its lease).
	c.eventually(30*time.Second, "every agent counting every host and hearing every other", func() (bool, string) {
		hs, err := c.hostsJSON()
		if err != nil {
			return false, err.Error()
		}
		n := len(r.Hosts())
		ok := len(hs) == n
		for _, h := range hs {
			ok = ok && h.Members == n && len(h.Hears) == n-1
		}
		return ok, fmt.Sprintf("%+v", hs)
	})
	return c
}

func (c *cluster) startController(h rig.Host, members string) {
	args := []string{c.bin, "controller", "--name", fmt.Sprintf("c%d", int(h)),
		"--data-dir", filepath.Join(c.dir, fmt.Sprintf("c%d", int(h))), "--store-min-free", "0",
		"--etcd-name", fmt.Sprintf("c%d", int(h)),
		"--etcd-peer-url", fmt.Sprintf("%s://%s:%d", c.scheme(), c.r.Addr(h), peerPort),
		"--etcd-client-url", fmt.Sprintf("%s://%s:%d", c.scheme(), c.r.Addr(h), cliPort),
		"--etcd-initial-cluster", members, "--etcd-token", "rig",
		"--listen", fmt.Sprintf("%s:%d", c.r.Addr(h), apiPort), "--log-level", "info",
		"--admin-token-file", c.tokenFile}
	args = append(args, c.tlsArgs(h, true)...)
	p, err := c.r.Start(h, append(args, c.opts.ctlArgs...)...)
	must(c.t, err)
	c.ctl[h] = p
}

func (c *cluster) etcdEndpoints() string {
	var eps []string
	for _, h := range ctlHosts {
		eps = append(eps, fmt.Sprintf("%s://%s:%d", c.scheme(), c.r.Addr(h), cliPort))
	}
	return strings.Join(eps, ",")
}

func (c *cluster) startAgent(h rig.Host) {
	// The watchdog: a file outside the host's reach to stop, which the stand-in (a
	// goroutine of the test, outside every host) watches.
	wd := filepath.Join(c.dir, h.String()+".watchdog")
	must(c.t, os.WriteFile(wd, nil, 0o600))
	args := []string{c.bin, "agent", "--host-name", h.String(), "--etcd", c.etcdEndpoints(),
		"--heartbeat", fmt.Sprintf("%s:%d", c.r.Addr(h), hbPort), "--resync", "5s", "--mem-mib", "4096",
		"--watchdog", wd, "--migrate-uri", c.r.TCPURI(h),
		// The host's own state directory, for this cluster: a state file an earlier test's
		// cluster left names a lease this store never had, and an agent that finds the
		// lease it resumes from gone fences its host (vacuously here, but it says so).
		"--state-dir", filepath.Join(c.dir, h.String()+"-state")}
	args = append(args, c.tlsArgs(h, false)...)
	if c.opts.serviceAgents {
		_, err := c.r.Service(h, "agent", args...)
		must(c.t, err)
		return
	}
	p, err := c.r.Start(h, args...)
	must(c.t, err)
	c.agents[h] = p
}

// protectOn defines and starts n guests on h and protects them; it returns their names
// once they are healthy and their definitions are stored.
func (c *cluster) protectOn(h rig.Host, n int) []string {
	c.t.Helper()
	var vms []string
	for range n {
		vm := guestName(c.t)
		must(c.t, c.r.DefineGuest(h, vm))
		_, err := c.r.Virsh(h, "start", vm)
		must(c.t, err)
		vms = append(vms, vm)
	}
	for _, vm := range vms {
		c.eventually(30*time.Second, vm+" protected", func() (bool, string) {
			out, err := c.cli("vm", "protect", vm)
			return err == nil, fmt.Sprint(out, err)
		})
	}
	c.eventually(30*time.Second, "all healthy", func() (bool, string) {
		out, err := c.cli("vm", "list")
		return err == nil && strings.Count(out, "healthy") >= len(vms), fmt.Sprint(out, err)
	})
	return vms
}

// leader is the host whose controller leads.
func (c *cluster) leader() rig.Host {
	c.t.Helper()
	var l rig.Host
	c.eventually(60*time.Second, "a leader", func() (bool, string) {
		out, err := c.cli("status", "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		var st struct {
			Leader string `json:"leader"`
		}
		if json.Unmarshal([]byte(out), &st) != nil || st.Leader == "" {
			return false, out
		}
		_, err = fmt.Sscanf(st.Leader, "c%d", (*int)(&l))
		return err == nil, out
	})
	return l
}

// watchExactlyOnce polls until every vm runs on exactly one host other than gone (or
// limit passes), failing at once if one ever runs on two hosts. It returns when each first
// ran elsewhere, after since.
func (c *cluster) watchExactlyOnce(vms []string, gone rig.Host, since time.Time, limit time.Duration) map[string]time.Duration {
	c.t.Helper()
	ran := map[string]time.Duration{}
	c.eventually(limit, "every VM running on a survivor", func() (bool, string) {
		var state []string
		for _, vm := range vms {
			on := c.running(vm)
			if len(on) > 1 {
				c.t.Fatalf("%s runs on %v at once: split brain", vm, on)
			}
			if len(on) == 1 && on[0] != gone {
				if _, ok := ran[vm]; !ok {
					ran[vm] = time.Since(since)
				}
			}
			state = append(state, fmt.Sprintf("%s on %v", vm, on))
		}
		return len(ran) == len(vms), strings.Join(state, "; ")
	})
	time.Sleep(5 * time.Second) // and it stays so
	for _, vm := range vms {
		if on := c.running(vm); len(on) != 1 {
			c.t.Errorf("%s runs on %v", vm, on)
		}
	}
	return ran
}

// cli runs the hass CLI inside a live host against each controller in turn until one
// answers (only the leader serves; the others say who leads).
func (c *cluster) cli(args ...string) (string, error) {
	var last error
	for _, h := range c.r.Hosts() {
		if on, _ := c.r.Powered(h); !on {
			continue
		}
		for _, via := range ctlHosts {
			a := append(slices.Clone(args), c.clientArgs(via)...)
			out, err := c.r.Exec(h, append([]string{c.bin}, a...)...)
			if err == nil {
				return out, nil
			}
			last = fmt.Errorf("%v: %s", err, out)
		}
		break
	}
	return "", last
}

func (c *cluster) eventually(d time.Duration, what string, cond func() (bool, string)) {
	c.t.Helper()
	end := time.Now().Add(d)
	var last string
	for time.Now().Before(end) {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Errorf("timed out after %s waiting for %s; last: %s", d, what, last)
	c.lastWords()
	c.t.FailNow()
}

// running lists the hosts on which vm runs.
func (c *cluster) running(vm string) []rig.Host {
	var on []rig.Host
	for _, h := range c.r.Hosts() {
		if p, _ := c.r.Powered(h); !p {
			continue
		}
		if st, err := c.r.DomState(h, vm); err == nil && strings.TrimSpace(st) == "running" {
			on = append(on, h)
		}
	}
	return on
}

type event struct {
	Seq         uint64     `json:"seq"`
	At          time.Time  `json:"at"`
	Type        string     `json:"type"`
	VM          string     `json:"vm"`
	Host        string     `json:"host"`
	Msg         string     `json:"msg"`
	RecoveredAt *time.Time `json:"recovered_at"`
	ActionAt    *time.Time `json:"action_at"`
}

// recoveredAfter returns, for each vm, how long after since hass saw it running again (the
// recovered event's time, as the agent observed the start: more exact than polling virsh).
func (c *cluster) recoveredAfter(vms []string, since time.Time) map[string]time.Duration {
	c.t.Helper()
	out := map[string]time.Duration{}
	c.eventually(60*time.Second, "the recovered events", func() (bool, string) {
		for _, e := range c.events() {
			if e.Type == "recovered" && e.RecoveredAt != nil && e.RecoveredAt.After(since) && slices.Contains(vms, e.VM) {
				if _, ok := out[e.VM]; !ok {
					out[e.VM] = e.RecoveredAt.Sub(since)
				}
			}
		}
		return len(out) == len(vms), fmt.Sprint(out)
	})
	return out
}

func (c *cluster) events() []event {
	var all []event
	var after uint64
	for {
		out, err := c.cli("events", "-o", "json", "--limit", "1000", "--after", fmt.Sprint(after))
		if err != nil {
			c.t.Fatalf("hass events: %v", err)
		}
		var evs []event
		if err := json.Unmarshal([]byte(out), &evs); err != nil {
			c.t.Fatalf("hass events -o json: %v: %s", err, out)
		}
		all = append(all, evs...)
		if len(evs) < 1000 {
			return all
		}
		after = evs[len(evs)-1].Seq
	}
}

// lastWords logs, for a test that timed out, each host's domains and the newest events of hass's
// log, one line each: what a CI report that keeps only the test's own lines still shows.
func (c *cluster) lastWords() {
	for _, h := range c.r.Hosts() {
		out, err := c.r.Virsh(h, "list", "--all", "--name")
		if err != nil {
			c.t.Logf("last words: %s: virsh list: %v", h, err)
			continue
		}
		var doms []string
		for _, d := range strings.Fields(out) {
			st, _ := c.r.DomState(h, d)
			doms = append(doms, d+"="+strings.TrimSpace(st))
		}
		c.t.Logf("last words: %s runs %v", h, doms)
	}
	out, err := c.cli("events", "-o", "json", "--limit", "1000")
	var evs []event
	if err == nil {
		err = json.Unmarshal([]byte(out), &evs)
	}
	if err != nil {
		c.t.Logf("last words: hass events: %v", err)
		return
	}
	for _, e := range evs[max(0, len(evs)-30):] {
		c.t.Logf("last words: event %s %s %s %s %s", e.At.Format("15:04:05.000"), e.Type, e.VM, e.Host, e.Msg)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// A host's power is lost (every process of it killed at once: its agent, its controller and
// etcd member, its guests): its protected VMs run again on the survivors, exactly once.
func TestHassHostPowerLoss(t *testing.T) {
	r := rig.Up(t)
	c := startCluster(t, r)
	vms := c.protectOn(2, 2)
	lost := time.Now()
	must(t, r.PowerOff(2)) // and on again when the test ends (rig.PowerOff)
	c.watchExactlyOnce(vms, 2, lost, 90*time.Second)
	for vm, d := range c.recoveredAfter(vms, lost) {
		t.Logf("measured: host power lost -> %s running on a survivor after %s", vm, d.Round(time.Millisecond))
	}
	out, err := c.cli("host", "list")
	must(t, err)
	t.Logf("hass host list after the loss:\n%s", out)
	// Any live controller answers: a follower forwards to the leader.
	l := c.leader()
	for _, h := range ctlHosts {
		if h == l || h == 2 {
			continue
		}
		if out, err := c.r.Exec(1, append([]string{c.bin, "status"}, c.clientArgs(h)...)...); err != nil ||
			!strings.Contains(out, fmt.Sprintf("answered by c%d", int(l))) {
			t.Errorf("hass status through follower c%d: %v\n%s", int(h), err, out)
		}
	}
	if !strings.Contains(out, "h2") || strings.Contains(strings.SplitN(out[strings.Index(out, "h2"):], "\n", 2)[0], " up ") {
		t.Errorf("h2 is not shown lost:\n%s", out)
	}
}

// A host cut off from the network fences itself (its agent cannot renew its lease while
// its peers hold theirs): its VMs are destroyed there before they run elsewhere, exactly
// once; when the network returns, they are not started on it again.
func TestHassNetCut(t *testing.T) {
	r := rig.Up(t)
	c := startCluster(t, r)
	vms := c.protectOn(2, 2)
	cut := time.Now()
	must(t, r.NetCut(2))
	ran := c.watchExactlyOnce(vms, 2, cut, 90*time.Second)
	for vm, d := range ran {
		t.Logf("measured: host cut off -> %s running on a survivor after %s", vm, d.Round(time.Millisecond))
	}
	if out := c.agents[2].Output(); !strings.Contains(out, "fencing this host") {
		t.Errorf("h2's agent did not fence itself:\n%s", tail(out, 40))
	}
	must(t, r.NetRestore(2))
	c.eventually(60*time.Second, "h2 back up", func() (bool, string) {
		out, err := c.cli("host", "list")
		return err == nil && strings.Count(out, " up ") == len(r.Hosts()), fmt.Sprint(out, err)
	})
	time.Sleep(8 * time.Second) // a resync of h2 (every 5 s) has been seen
	for _, vm := range vms {
		if on := c.running(vm); len(on) != 1 || on[0] == 2 {
			t.Errorf("after h2 returned, %s runs on %v", vm, on)
		}
	}
}

// An agent killed on a live host: the watchdog (a stand-in outside the host, as a hardware
// watchdog is outside the OS) resets the host before its VMs are started elsewhere.
func TestHassAgentKilledWatchdog(t *testing.T) {
	r := rig.Up(t)
	c := startCluster(t, r)
	vms := c.protectOn(2, 1)
	wd := filepath.Join(c.dir, "h2.watchdog")
	fired := make(chan time.Time, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the stand-in: no pet for 2 s and it powers the host off
		last, lastSize := time.Now(), int64(-1)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if fi, err := os.Stat(wd); err == nil && fi.Size() != lastSize {
				last, lastSize = time.Now(), fi.Size()
			}
			if time.Since(last) > 2*time.Second {
				fired <- time.Now()
				_ = r.PowerOff(2)
				return
			}
		}
	}()
	t.Cleanup(func() {
		if on, _ := r.Powered(2); !on {
			_ = r.PowerOn(2)
		}
	})
	killed := time.Now()
	c.agents[2].Kill()
	ran := c.watchExactlyOnce(vms, 2, killed, 90*time.Second)
	var at time.Time
	select {
	case at = <-fired:
	default:
		t.Fatal("the watchdog never fired")
	}
	for vm, d := range ran {
		t.Logf("measured: agent killed -> watchdog reset after %s -> %s running elsewhere after %s",
			at.Sub(killed).Round(time.Millisecond), vm, d.Round(time.Millisecond))
		if killed.Add(d).Before(at) {
			t.Errorf("%s ran elsewhere before the watchdog reset its host", vm)
		}
	}
}

// The leading controller (and its etcd member) is killed right after a host was lost, while
// it evacuates: the next leader finishes the evacuation from what was recorded, and nothing
// runs twice.
func TestHassLeaderKilledMidEvacuation(t *testing.T) {
	r := rig.Up(t)
	c := startCluster(t, r)
	l := c.leader()
	victim := rig.Host(4) // no controller there: losing it and the leader leaves etcd a quorum
	vms := c.protectOn(victim, 3)
	lost := time.Now()
	must(t, r.PowerOff(victim)) // and on again when the test ends (rig.PowerOff)
	// Kill the leader as soon as it has ordered the first start elsewhere.
	c.eventually(60*time.Second, "the leader ordering the evacuation", func() (bool, string) {
		return strings.Contains(c.ctl[l].Output(), "recovery:host-down"), ""
	})
	c.ctl[l].Kill()
	t.Logf("leader c%d killed %s after %s was lost", int(l), time.Since(lost).Round(time.Millisecond), victim)
	c.watchExactlyOnce(vms, victim, lost, 120*time.Second)
	for vm, d := range c.recoveredAfter(vms, lost) {
		t.Logf("measured: host lost, leader killed mid-evacuation -> %s running after %s", vm, d.Round(time.Millisecond))
	}
	nl := c.leader()
	if nl == l {
		t.Errorf("c%d still leads after it was killed", int(l))
	}
	t.Logf("new leader: c%d", int(nl))
	// Nothing was started twice: across both leaders, each VM's QEMU was started once on the
	// survivors (libvirt's log of the domain says "starting up" at each start). A second
	// start order for a VM that runs already is carried out as the no-op it is.
	for _, vm := range vms {
		n := 0
		for _, h := range r.Hosts() {
			if h == victim {
				continue
			}
			b, err := os.ReadFile(filepath.Join(r.HostDir(h), "log", "libvirt", "qemu", vm+".log"))
			if err == nil {
				n += strings.Count(string(b), "starting up")
			}
		}
		if n != 1 {
			t.Errorf("%s: its QEMU was started %d times on the survivors, want 1", vm, n)
		}
	}
}

// The control plane is lost everywhere (every controller and etcd member killed) while the
// hosts still see each other: no host fences itself and no VM is killed; when it returns,
// protection resumes without a recovery.
func TestHassControlPlaneLost(t *testing.T) {
	r := rig.Up(t)
	c := startCluster(t, r)
	vms := append(c.protectOn(1, 1), c.protectOn(2, 1)...)
	pids := map[string]int{}
	for _, vm := range vms {
		on := c.running(vm)
		if len(on) != 1 {
			t.Fatalf("%s runs on %v", vm, on)
		}
		pids[vm] = r.QemuPID(on[0], vm)
	}
	for _, h := range ctlHosts {
		c.ctl[h].Kill()
	}
	time.Sleep(15 * time.Second) // three times the lease's TTL
	for _, vm := range vms {
		on := c.running(vm)
		if len(on) != 1 || r.QemuPID(on[0], vm) != pids[vm] {
			t.Errorf("with the control plane lost, %s runs on %v (was pid %d)", vm, on, pids[vm])
		}
	}
	for _, h := range r.Hosts() {
		if out := c.agents[h].Output(); strings.Contains(out, "fencing this host") {
			t.Errorf("%s fenced itself with the control plane lost:\n%s", h, tail(out, 30))
		}
	}
	for _, h := range ctlHosts {
		c.startController(h, c.members())
	}
	c.eventually(90*time.Second, "every host up again", func() (bool, string) {
		out, err := c.cli("host", "list")
		return err == nil && strings.Count(out, " up ") == len(r.Hosts()), fmt.Sprint(out, err)
	})
	c.eventually(30*time.Second, "both healthy again", func() (bool, string) {
		out, err := c.cli("vm", "list")
		return err == nil && strings.Count(out, "healthy") == 2, fmt.Sprint(out, err)
	})
	for _, vm := range vms {
		on := c.running(vm)
		if len(on) != 1 || r.QemuPID(on[0], vm) != pids[vm] {
			t.Errorf("after the control plane returned, %s runs on %v (was pid %d)", vm, on, pids[vm])
		}
	}
	for _, e := range c.events() {
		if e.Type == "detect" || e.Type == "action" {
			t.Errorf("a recovery with the control plane lost and back: %+v", e)
		}
	}
}

// libvirtd restarted on one host: its agent loses libvirt and finds it again; nothing ran
// or stopped meanwhile, so nothing is recovered (no false recovery), and while it is down
// hass says the VMs' state is unknown, not healthy.
func TestHassLibvirtdRestart(t *testing.T) {
	r := rig.Up(t)
	c := startCluster(t, r)
	vms := c.protectOn(1, 2)
	pids := map[string]int{}
	for _, vm := range vms {
		pids[vm] = r.QemuPID(1, vm)
		if pids[vm] == 0 {
			t.Fatalf("%s has no qemu on h1", vm)
		}
	}
	pid, err := r.Exec(1, "cat", "/run/libvirt/libvirtd.pid")
	must(t, err)
	_, err = r.Exec(1, "kill", strings.TrimSpace(pid))
	must(t, err)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_, _ = r.Exec(1, "libvirtd", "-d", "-l", "-p", "/run/libvirt/libvirtd.pid")
		}
	})
	c.eventually(60*time.Second, "hass to see h1's libvirt gone", func() (bool, string) {
		out, err := c.cli("vm", "list")
		return err == nil && strings.Count(out, "unknown") >= 2, fmt.Sprint(out, err)
	})
	time.Sleep(3 * time.Second)
	_, err = r.Exec(1, "libvirtd", "-d", "-l", "-p", "/run/libvirt/libvirtd.pid")
	must(t, err)
	restarted = true
	must(t, r.WaitLibvirtd(1, time.Minute))
	c.eventually(60*time.Second, "both healthy again", func() (bool, string) {
		out, err := c.cli("vm", "list")
		return err == nil && strings.Count(out, "healthy") == 2, fmt.Sprint(out, err)
	})
	time.Sleep(6 * time.Second) // a resync of h1 (every 5 s) has been seen
	for _, vm := range vms {
		if p := r.QemuPID(1, vm); p != pids[vm] {
			t.Errorf("%s: qemu pid %d -> %d: it was restarted", vm, pids[vm], p)
		}
	}
	for _, e := range c.events() {
		if slices.Contains(vms, e.VM) && (e.Type == "detect" || e.Type == "action") {
			t.Errorf("a false recovery around a libvirtd restart: %+v", e)
		}
	}
}
