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
}

const (
	apiPort  = 8080
	peerPort = 2380
	cliPort  = 2379
	hbPort   = 7946
)

func startCluster(t *testing.T, r *rig.Rig) *cluster {
	t.Helper()
	c := &cluster{t: t, r: r, bin: hassBinary(t), ctl: map[rig.Host]*rig.Proc{}, agents: map[rig.Host]*rig.Proc{}}
	var err error
	c.dir, err = os.MkdirTemp(r.Dir, "hass-")
	must(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range r.Hosts() {
				if p := c.ctl[h]; p != nil {
					t.Logf("controller on %s:\n%s", h, tail(p.Output(), 60))
				}
				if p := c.agents[h]; p != nil {
					t.Logf("agent on %s:\n%s", h, tail(p.Output(), 60))
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
	var members []string
	for _, h := range r.Hosts() {
		members = append(members, fmt.Sprintf("c%d=http://%s:%d", int(h), r.Addr(h), peerPort))
	}
	for _, h := range r.Hosts() {
		c.startController(h, strings.Join(members, ","))
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
	return c
}

func (c *cluster) startController(h rig.Host, members string) {
	p, err := c.r.Start(h, c.bin, "controller", "--name", fmt.Sprintf("c%d", int(h)),
		"--data-dir", filepath.Join(c.dir, fmt.Sprintf("c%d", int(h))), "--store-min-free", "0",
		"--etcd-name", fmt.Sprintf("c%d", int(h)),
		"--etcd-peer-url", fmt.Sprintf("http://%s:%d", c.r.Addr(h), peerPort),
		"--etcd-client-url", fmt.Sprintf("http://%s:%d", c.r.Addr(h), cliPort),
		"--etcd-initial-cluster", members, "--etcd-token", "rig",
		"--listen", fmt.Sprintf("%s:%d", c.r.Addr(h), apiPort), "--log-level", "info")
	must(c.t, err)
	c.ctl[h] = p
}

func (c *cluster) etcdEndpoints() string {
	var eps []string
	for _, h := range c.r.Hosts() {
		eps = append(eps, fmt.Sprintf("http://%s:%d", c.r.Addr(h), cliPort))
	}
	return strings.Join(eps, ",")
}

func (c *cluster) startAgent(h rig.Host) {
	p, err := c.r.Start(h, c.bin, "agent", "--host-name", h.String(), "--etcd", c.etcdEndpoints(),
		"--heartbeat", fmt.Sprintf("%s:%d", c.r.Addr(h), hbPort), "--resync", "5s", "--mem-mib", "4096")
	must(c.t, err)
	c.agents[h] = p
}

// cli runs the hass CLI inside a live host against each controller in turn until one
// answers (only the leader serves; the others say who leads).
func (c *cluster) cli(args ...string) (string, error) {
	var last error
	for _, h := range c.r.Hosts() {
		if on, _ := c.r.Powered(h); !on {
			continue
		}
		for _, via := range c.r.Hosts() {
			a := append(slices.Clone(args), "--server", fmt.Sprintf("http://%s:%d", c.r.Addr(via), apiPort))
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
	c.t.Fatalf("timed out after %s waiting for %s; last: %s", d, what, last)
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
	Type string `json:"type"`
	VM   string `json:"vm"`
	Host string `json:"host"`
	Msg  string `json:"msg"`
}

func (c *cluster) events() []event {
	out, err := c.cli("events", "-o", "json")
	if err != nil {
		c.t.Fatalf("hass events: %v", err)
	}
	var evs []event
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		c.t.Fatalf("hass events -o json: %v: %s", err, out)
	}
	return evs
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
	vms := []string{guestName(t), guestName(t)}
	for _, vm := range vms {
		must(t, r.DefineGuest(2, vm))
		_, err := r.Virsh(2, "start", vm)
		must(t, err)
	}
	for _, vm := range vms {
		c.eventually(30*time.Second, vm+" protected", func() (bool, string) {
			out, err := c.cli("vm", "protect", vm)
			return err == nil, fmt.Sprint(out, err)
		})
	}
	c.eventually(30*time.Second, "both healthy", func() (bool, string) {
		out, err := c.cli("vm", "list")
		return err == nil && strings.Count(out, "healthy") == 2, fmt.Sprint(out, err)
	})
	// The definitions reach the store with the inventory (at the protect or the next resync).
	time.Sleep(6 * time.Second)

	lost := time.Now()
	must(t, r.PowerOff(2))
	t.Cleanup(func() {
		if on, _ := r.Powered(2); !on {
			_ = r.PowerOn(2)
		}
	})
	ran := map[string]time.Duration{}
	c.eventually(90*time.Second, "both VMs running on the survivors", func() (bool, string) {
		var state []string
		for _, vm := range vms {
			on := c.running(vm)
			if len(on) > 1 {
				t.Fatalf("%s runs on %v at once", vm, on)
			}
			if len(on) == 1 && on[0] != 2 {
				if _, ok := ran[vm]; !ok {
					ran[vm] = time.Since(lost)
				}
			}
			state = append(state, fmt.Sprintf("%s on %v", vm, on))
		}
		return len(ran) == len(vms), strings.Join(state, "; ")
	})
	for vm, d := range ran {
		t.Logf("measured: host power lost -> %s running on a survivor after %s", vm, d.Round(time.Millisecond))
	}
	// Exactly once, and it stays so.
	time.Sleep(5 * time.Second)
	for _, vm := range vms {
		if on := c.running(vm); len(on) != 1 {
			t.Errorf("%s runs on %v", vm, on)
		}
	}
	out, err := c.cli("host", "list")
	must(t, err)
	t.Logf("hass host list after the loss:\n%s", out)
	if !strings.Contains(out, "h2") || strings.Contains(strings.SplitN(out[strings.Index(out, "h2"):], "\n", 2)[0], " up ") {
		t.Errorf("h2 is not shown lost:\n%s", out)
	}
}
