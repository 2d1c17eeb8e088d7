package rig_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/test/rig"
)

// bmcPassword is the rig BMCs' password (test/rig/rig.sh: RIG_BMC_PASS).
const bmcPassword = "rigpass"

// startFencedCluster is hass on the rig with every host's BMC configured (hass host add
// --bmc), agents that come back when their host powers on, and a short power-on delay.
func startFencedCluster(t *testing.T, r *rig.Rig) *cluster {
	t.Helper()
	return startFencedClusterWith(t, r)
}

// startFencedClusterWith is startFencedCluster with more flags for every controller.
func startFencedClusterWith(t *testing.T, r *rig.Rig, ctlArgs ...string) *cluster {
	t.Helper()
	c := startClusterWith(t, r, clusterOpts{serviceAgents: true,
		ctlArgs: append([]string{"--power-on-after", "5s", "--bmc-poll", "1s"}, ctlArgs...)})
	pw := filepath.Join(c.dir, "bmc-password")
	must(t, os.WriteFile(pw, []byte(bmcPassword+"\n"), 0o600))
	for _, h := range r.Hosts() {
		out, err := c.cli("host", "add", h.String(), "--bmc", r.BMCAddr(h), "--bmc-user", "admin", "--bmc-password-file", pw)
		if err != nil {
			t.Fatalf("hass host add %s: %v", h, err)
		}
		if !strings.Contains(out, "IPMI fencing through "+r.BMCAddr(h)) {
			t.Fatalf("hass host add %s: %s", h, out)
		}
	}
	c.eventually(30*time.Second, "every BMC read (power on)", func() (bool, string) {
		hs, err := c.hostsJSON()
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, h := range hs {
			if h.Power == "on" && h.Fencing {
				n++
			}
		}
		return n == len(r.Hosts()), fmt.Sprintf("%+v", hs)
	})
	return c
}

type hostView struct {
	Name     string   `json:"name"`
	State    string   `json:"state"`
	Lease    string   `json:"lease"`
	Fencing  bool     `json:"fencing"`
	BMC      string   `json:"bmc"`
	Power    string   `json:"power"`
	Cluster  string   `json:"cluster"`
	Maintain bool     `json:"maintenance"`
	Members  int      `json:"members"`
	Hears    []string `json:"hears"`
}

func (c *cluster) hostsJSON() ([]hostView, error) {
	out, err := c.cli("host", "list", "-o", "json")
	if err != nil {
		return nil, err
	}
	var hs []hostView
	return hs, json.Unmarshal([]byte(out), &hs)
}

func (c *cluster) hostState(h rig.Host) hostView {
	c.t.Helper()
	hs, err := c.hostsJSON()
	must(c.t, err)
	for _, x := range hs {
		if x.Name == h.String() {
			return x
		}
	}
	c.t.Fatalf("%s is not in hass host list", h)
	return hostView{}
}

// noSecret fails if the BMC password shows anywhere hass writes: the API's answers, the
// event log, the controllers' and agents' output.
func (c *cluster) noSecret() {
	c.t.Helper()
	out, err := c.cli("host", "list", "-o", "json")
	must(c.t, err)
	texts := map[string]string{"hass host list -o json": out}
	ev, err := c.cli("events", "-o", "json", "--limit", "1000")
	must(c.t, err)
	texts["hass events -o json"] = ev
	for h, p := range c.ctl {
		texts["controller on "+h.String()] = p.Output()
	}
	for _, h := range c.r.Hosts() {
		b, _ := os.ReadFile(c.r.LogFile(h, "agent"))
		texts["agent on "+h.String()] = string(b)
	}
	for where, text := range texts {
		if strings.Contains(text, bmcPassword) {
			c.t.Errorf("the BMC password shows in %s", where)
		}
	}
}

// TestHassIPMIPowerLoss: a host loses power (its BMC says off). The power layer sees it
// within about a second and a recheck, so its VMs are started on the survivors without
// waiting for its lease to expire; then hass powers the host on again through its BMC, and
// its agent rejoins.
func TestHassIPMIPowerLoss(t *testing.T) {
	r := rig.Up(t)
	c := startFencedCluster(t, r)
	vms := c.protectOn(4, 2)
	lost := time.Now()
	must(t, r.PowerOff(4)) // and on again when the test ends (rig.PowerOff)
	c.watchExactlyOnce(vms, 4, lost, 60*time.Second)
	for vm, d := range c.recoveredAfter(vms, lost) {
		t.Logf("measured: host power lost (BMC power layer) -> %s running on a survivor after %s", vm, d.Round(time.Millisecond))
		if d > 10*time.Second {
			t.Errorf("%s took %s; the power layer should beat the lease's expiry", vm, d)
		}
	}
	// Powered on again by hass (after --power-on-after), and back in the cluster.
	c.eventually(60*time.Second, "h4 powered on again by hass", func() (bool, string) {
		on, err := r.Powered(4)
		return err == nil && on, fmt.Sprint(on, err)
	})
	c.eventually(90*time.Second, "h4 up again in hass", func() (bool, string) {
		h := c.hostState(4)
		return h.State == "up" && h.Lease == "held", fmt.Sprintf("%+v", h)
	})
	for _, vm := range vms {
		if on := c.running(vm); len(on) != 1 || on[0] == 4 {
			t.Errorf("after h4 came back, %s runs on %v", vm, on)
		}
	}
	found, noted := false, false
	for _, e := range c.events() {
		if e.Host == "h4" && strings.Contains(e.Msg, "powered on again") {
			found = true
		}
		// The engine takes note that a fenced host runs again (a VM may land there before
		// its agent starts): no proof that a VM runs nowhere counts it as empty meanwhile.
		if e.Host == "h4" && strings.Contains(e.Msg, "powered on (BMC) while fenced") {
			noted = true
		}
	}
	if !found {
		t.Error("no event says hass powered h4 on again")
	}
	if !noted {
		t.Error("no event says the engine knew h4 was powered on while fenced")
	}
	c.noSecret()
}

// TestHassIPMIFenceCutOff: a host cut off from the network (powered on, its BMC answers)
// fences itself and its VMs are started elsewhere once its lease expired; hass powers it
// off through its BMC all the same (confirmed off), then on again, and it rejoins.
func TestHassIPMIFenceCutOff(t *testing.T) {
	r := rig.Up(t)
	c := startFencedCluster(t, r)
	vms := c.protectOn(4, 1)
	cut := time.Now()
	must(t, r.NetCut(4))
	t.Cleanup(func() { _ = r.NetRestore(4) })
	ran := c.watchExactlyOnce(vms, 4, cut, 60*time.Second)
	for vm, d := range ran {
		t.Logf("measured: host cut off -> %s running elsewhere after %s", vm, d.Round(time.Millisecond))
	}
	// The power-off through its BMC, confirmed, is in the event log (the host may be on again
	// already: hass powers it on --power-on-after later).
	c.eventually(60*time.Second, "h4 powered off through its BMC", func() (bool, string) {
		for _, e := range c.events() {
			if e.Host == "h4" && strings.Contains(e.Msg, "powered off through its BMC (confirmed)") {
				t.Logf("measured: cut off -> powered off through its BMC at %s (cut at %s)", e.At.UTC().Format("15:04:05.000"), cut.UTC().Format("15:04:05.000"))
				return true, ""
			}
		}
		return false, "no event yet"
	})
	hook, err := os.ReadFile(filepath.Join(r.Dir, "bmc", "h4", "hook.log"))
	must(t, err)
	if !strings.Contains(string(hook), "set power 0") {
		t.Errorf("h4's BMC was never asked to power off:\n%s", tail(string(hook), 20))
	}
	must(t, r.NetRestore(4))
	c.eventually(60*time.Second, "h4 powered on again", func() (bool, string) {
		on, err := r.Powered(4)
		return err == nil && on, fmt.Sprint(on, err)
	})
	c.eventually(90*time.Second, "h4 up again", func() (bool, string) {
		h := c.hostState(4)
		return h.State == "up" && h.Lease == "held", fmt.Sprintf("%+v", h)
	})
	for _, vm := range vms {
		if on := c.running(vm); len(on) != 1 || on[0] == 4 {
			t.Errorf("after h4 came back, %s runs on %v", vm, on)
		}
	}
	c.noSecret()
}

// TestHassMaintenance: maintenance on migrates a host's protected VMs away (placed like an
// evacuation), the admin then powers the host off: no fence, no recovery, nothing started
// twice; the host comes back and leaves maintenance.
func TestHassMaintenance(t *testing.T) {
	r := rig.Up(t)
	c := startFencedCluster(t, r)
	vms := c.protectOn(4, 2)
	start := time.Now()
	out, err := c.cli("host", "maintenance", "on", "h4", "--wait", "120s")
	if err != nil {
		t.Fatalf("hass host maintenance on h4: %v", err)
	}
	t.Logf("measured: maintenance on h4 with %d VMs took %s:\n%s", len(vms), time.Since(start).Round(time.Millisecond), out)
	for _, vm := range vms {
		on := c.running(vm)
		if len(on) != 1 || on[0] == 4 {
			t.Fatalf("after maintenance on, %s runs on %v", vm, on)
		}
		c.settled(vm, on[0], 30*time.Second)
	}
	if h := c.hostState(4); !h.Maintain {
		t.Fatalf("h4 not in maintenance: %+v", h)
	}
	// The admin shuts the host down.
	down := time.Now()
	must(t, r.PowerOff(4))       // and on again when the test ends (rig.PowerOff)
	time.Sleep(15 * time.Second) // lease expiry, margin, power layer: nothing may happen
	h := c.hostState(4)
	if h.State == "fenced" {
		t.Errorf("h4 was fenced while in maintenance: %+v", h)
	}
	if on, _ := r.Powered(4); on {
		t.Error("hass powered h4 on while it is in maintenance")
	}
	c.noRecovery(vms, down)
	// Not fenced, but noted: the BMC's "off" of a host in maintenance reaches the engine (it
	// is what proves that a VM lost on its way off the host runs nowhere).
	c.eventually(30*time.Second, "hass notes h4 powered off in maintenance", func() (bool, string) {
		for _, e := range c.events() {
			if e.Host == "h4" && strings.Contains(e.Msg, "powered off (BMC) while in maintenance") {
				return true, ""
			}
		}
		return false, "no such event"
	})
	for _, e := range c.events() {
		if e.Host == "h4" && (strings.Contains(e.Msg, "fence") && e.Type == "action") {
			t.Errorf("a fence of h4 in maintenance: %s", e.Msg)
		}
	}
	// The admin powers it on again; maintenance off.
	must(t, r.PowerOn(4))
	c.eventually(90*time.Second, "h4's lease again", func() (bool, string) {
		h := c.hostState(4)
		return h.Lease == "held", fmt.Sprintf("%+v", h)
	})
	out, err = c.cli("host", "maintenance", "off", "h4")
	if err != nil {
		t.Fatalf("hass host maintenance off: %v", err)
	}
	c.eventually(30*time.Second, "h4 up, out of maintenance", func() (bool, string) {
		h := c.hostState(4)
		return h.State == "up" && !h.Maintain, fmt.Sprintf("%+v", h)
	})
	for _, vm := range vms {
		if on := c.running(vm); len(on) != 1 || on[0] == 4 {
			t.Errorf("after maintenance, %s runs on %v", vm, on)
		}
	}
}
