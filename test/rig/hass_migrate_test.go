package rig_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/test/rig"
)

// vmView is what hass vm show -o json says of a VM, as far as these tests look.
type vmView struct {
	Host     string `json:"host"`
	State    string `json:"state"`
	Observed string `json:"observed"`
	Desired  string `json:"desired"`
	Policy   struct {
		NovaInstance  string `json:"nova_instance"`
		NovaScheduler bool   `json:"nova_scheduler"`
	} `json:"policy"`
	Operation *struct {
		ID    uint64 `json:"id"`
		Phase string `json:"phase"`
	} `json:"operation"`
}

func (c *cluster) show(vm string) (vmView, error) {
	var v vmView
	out, err := c.cli("vm", "show", vm, "-o", "json")
	if err != nil {
		return v, err
	}
	var vs []vmView // hass vm show -o json prints a list of one
	if err := json.Unmarshal([]byte(out), &vs); err != nil || len(vs) != 1 {
		return v, fmt.Errorf("hass vm show %s -o json: %v: %s", vm, err, out)
	}
	return vs[0], nil
}

// settled waits until hass says vm is healthy, running, at home on h, with no operation.
func (c *cluster) settled(vm string, h rig.Host, limit time.Duration) {
	c.t.Helper()
	c.eventually(limit, fmt.Sprintf("%s healthy on %s in hass", vm, h), func() (bool, string) {
		v, err := c.show(vm)
		return err == nil && v.Host == h.String() && v.State == "healthy" && v.Observed == "running" && v.Operation == nil,
			fmt.Sprintf("%+v %v", v, err)
	})
}

// noRecovery fails if hass detected a failure of, or recovered, any of vms after since.
func (c *cluster) noRecovery(vms []string, since time.Time) {
	c.t.Helper()
	for _, e := range c.events() {
		if e.RecoveredAt != nil && e.RecoveredAt.Before(since) {
			continue
		}
		for _, vm := range vms {
			if e.VM == vm && (e.Type == "detect" || e.Type == "recovered") {
				c.t.Errorf("a migration was taken for a failure: %s %s %s", e.Type, e.VM, e.Msg)
			}
		}
	}
}

// slowMigrations caps vm's migration bandwidth on h so that a migration lasts long enough
// to lose a host in the middle of it (the 32 MiB guest at 1 MiB/s: about half a minute).
func (c *cluster) slowMigrations(h rig.Host, vm string) {
	c.t.Helper()
	_, err := c.r.Virsh(h, "migrate-setspeed", vm, "1")
	must(c.t, err)
}

// incoming waits until vm's incoming copy exists on h (the destination of a migration
// in progress), paused.
func (c *cluster) incoming(vm string, h rig.Host, limit time.Duration) {
	c.t.Helper()
	c.eventually(limit, vm+" arriving on "+h.String(), func() (bool, string) {
		st, err := c.r.DomState(h, vm)
		return err == nil && strings.HasPrefix(st, "paused"), fmt.Sprint(st, err)
	})
}

// TestHassLiveMigration: hass vm migrate moves a protected VM between two hosts' libvirtds
// (a real live migration, peer to peer over the rig network), and so does virsh behind
// hass's back; neither is taken for a failure, and the VM stays protected where it lands.
func TestHassLiveMigration(t *testing.T) {
	r := rig.Up(t)
	c := startCluster(t, r)
	vms := c.protectOn(1, 1)
	vm := vms[0]
	start := time.Now()
	pid := r.QemuPID(1, vm)

	if out, err := c.cli("vm", "migrate", vm, "--to", "h9"); err == nil || !strings.Contains(err.Error(), "h9") {
		t.Errorf("a migration to a host hass does not know: %v %s; want a refusal naming h9", err, out)
	}
	took := time.Now()
	out, err := c.cli("vm", "migrate", vm, "--to", "h2", "--wait", "90s")
	if err != nil {
		t.Fatalf("hass vm migrate --to h2: %v", err)
	}
	t.Logf("measured: hass vm migrate %s h1 -> h2 took %s:\n%s", vm, time.Since(took).Round(time.Millisecond), out)
	if on := c.running(vm); len(on) != 1 || on[0] != 2 {
		t.Fatalf("after the migration %s runs on %v, want h2 only", vm, on)
	}
	if r.QemuPID(1, vm) != 0 || pid == 0 {
		t.Errorf("the source's QEMU (pid %d) is still there", pid)
	}
	c.settled(vm, 2, 30*time.Second)

	// --auto: hass places it (h1, h3 or h4; never where it is).
	out, err = c.cli("vm", "migrate", vm, "--auto", "--wait", "90s")
	if err != nil {
		t.Fatalf("hass vm migrate --auto: %v", err)
	}
	on := c.running(vm)
	if len(on) != 1 || on[0] == 2 {
		t.Fatalf("after migrate --auto %s runs on %v", vm, on)
	}
	c.settled(vm, on[0], 30*time.Second)

	// virsh behind hass's back: hass follows the VM to its new home.
	to := rig.Host(1)
	if on[0] == 1 {
		to = 3
	}
	must(t, r.Migrate(vm, on[0], to))
	c.settled(vm, to, 30*time.Second)
	time.Sleep(6 * time.Second) // a resync of every host has been seen
	if on := c.running(vm); len(on) != 1 || on[0] != to {
		t.Fatalf("after virsh migrate %s runs on %v, want %s", vm, on, to)
	}
	c.noRecovery(vms, start)
}

// TestHassMigrationSourceLost: the source host loses power in the middle of a migration
// hass ordered. The VM must end running exactly once, on a survivor, and never twice.
func TestHassMigrationSourceLost(t *testing.T) {
	r := rig.Up(t)
	c := startCluster(t, r)
	vm := c.protectOn(4, 1)[0]
	c.slowMigrations(4, vm)
	out, err := c.cli("vm", "migrate", vm, "--to", "h3")
	must(t, err)
	t.Log(out)
	c.incoming(vm, 3, 30*time.Second)
	lost := time.Now()
	must(t, r.PowerOff(4)) // and on again when the test ends (rig.PowerOff)
	ran := c.watchExactlyOnce([]string{vm}, 4, lost, 120*time.Second)
	t.Logf("measured: source lost mid-migration -> %s running on a survivor after %s", vm, ran[vm].Round(time.Millisecond))
	on := c.running(vm)
	c.settled(vm, on[0], 60*time.Second)
}

// TestHassMigrationDestinationLost: the destination loses power in the middle of the
// migration. The migration fails; the VM goes on running where it was, untouched (the same
// QEMU), protected, and is not restarted.
func TestHassMigrationDestinationLost(t *testing.T) {
	r := rig.Up(t)
	c := startCluster(t, r)
	vm := c.protectOn(4, 1)[0]
	pid := r.QemuPID(4, vm)
	c.slowMigrations(4, vm)
	start := time.Now()
	out, err := c.cli("vm", "migrate", vm, "--to", "h3")
	must(t, err)
	t.Log(out)
	c.incoming(vm, 3, 30*time.Second)
	must(t, r.PowerOff(3)) // and on again when the test ends (rig.PowerOff)
	c.eventually(150*time.Second, "the migration over", func() (bool, string) {
		v, err := c.show(vm)
		if on := c.running(vm); len(on) != 1 || on[0] != 4 {
			t.Fatalf("%s runs on %v while its migration's destination died; want h4 only", vm, on)
		}
		return err == nil && v.Operation == nil, fmt.Sprintf("%+v %v", v, err)
	})
	c.settled(vm, 4, 60*time.Second)
	if got := r.QemuPID(4, vm); got != pid {
		t.Errorf("%s's QEMU on h4 changed (pid %d, then %d): it was restarted", vm, pid, got)
	}
	c.noRecovery([]string{vm}, start)
}
