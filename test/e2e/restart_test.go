package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/api"
)

// kill9 kills hass as a crash would: no shutdown path runs.
func (d *daemon) kill9() {
	d.t.Helper()
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	_ = d.cmd.Wait()
	d.cmd = nil
}

// A graceful shutdown that the guest ignores, then kill -9 of hass before its timeout: the
// next hass finishes the user's shutdown (escalating it to a destroy at the original
// deadline) instead of reading the running guest as a user's start.
func TestShutdownSurvivesHassCrash(t *testing.T) {
	data := t.TempDir()
	d := startHass(t, data, "--shutdown-timeout", "8s")
	name := guest(t)
	d.hass("vm", "protect", name)
	d.hass("vm", "shutdown", name)
	time.Sleep(time.Second)
	d.kill9()
	if s := domState(t, name); s != "running" {
		t.Fatalf("%s is %q: the guest was meant to ignore the ACPI shutdown", name, s)
	}

	restarted := time.Now()
	d2 := startHass(t, data, "--shutdown-timeout", "8s")
	waitFor(t, recoverWithin, name+" shut off by the escalated shutdown", func() (bool, string) {
		s := domState(t, name)
		return s == "shut off", s
	})
	stays(t, name, "shut off", 4*time.Second)
	vm, _ := d2.vm(name)
	if vm.Desired != "stopped" {
		t.Fatalf("after the restart: %+v", vm)
	}
	for _, e := range d2.events() {
		// Only the restarted hass's reading counts: the first one may have protected the
		// guest from a domain list taken just before the guest started, and then seen it
		// start (an inferred start, harmless, before the shutdown was asked for).
		if e.VM == name && e.Type == "op" && strings.Contains(e.Msg, "inferred") && e.At.After(restarted) {
			t.Fatalf("the restarted hass misread the running guest: %s", e.Msg)
		}
	}
}

// kill -9 of hass between issuing a restart and seeing the VM run again: the next hass
// still records the recovery, and operation ids never repeat across the restart.
func TestRecoveryLoggedAcrossHassCrash(t *testing.T) {
	data := t.TempDir()
	d := startHass(t, data)
	name := guest(t)
	d.hass("vm", "protect", name)
	d.hass("vm", "stop", name)
	waitVM(t, d, name, recoverWithin, "stopped", func(v VM) bool { return v.Observed == "shutoff" && v.State == "healthy" })
	d.hass("vm", "start", name)
	waitVM(t, d, name, recoverWithin, "running", func(v VM) bool { return v.Observed == "running" && v.State == "healthy" })
	firstOp := opIDs(d.events())
	pid, _ := killQemu(t, name)
	waitFor(t, recoverWithin, "the restart issued", func() (bool, string) {
		log := d.logBuf.String()
		return strings.Contains(log, "action vm="+name) && strings.Contains(log, "recovery:vm-crash"), ""
	})
	d.kill9()

	d2 := startHass(t, data)
	waitRunning(t, name, pid, recoverWithin)
	waitFor(t, recoverWithin, "the recovered event", func() (bool, string) {
		return d2.countEvents(name, "recovered") == 1, fmt.Sprint(d2.countEvents(name, "recovered"))
	})
	waitVM(t, d2, name, recoverWithin, "healthy", func(v VM) bool { return v.Observed == "running" && v.State == "healthy" })
	d2.hass("vm", "stop", name)
	after := opIDs(d2.events())
	seen := map[int]bool{}
	for _, id := range after {
		if seen[id] {
			t.Fatalf("operation id %d used twice: %v (before the crash: %v)", id, after, firstOp)
		}
		seen[id] = true
	}
	if len(after) != len(firstOp)+1 {
		t.Fatalf("operations before %v, after %v: want one more", firstOp, after)
	}
}

// opIDs lists the ids of accepted operations in the event log.
func opIDs(evs []api.Event) []int {
	var ids []int
	for _, e := range evs {
		if e.Type != "op" {
			continue
		}
		if i := strings.Index(e.Msg, "accepted id="); i >= 0 {
			var id int
			fmt.Sscanf(e.Msg[i:], "accepted id=%d", &id)
			ids = append(ids, id)
		}
	}
	return ids
}
