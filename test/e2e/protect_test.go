package e2e

import (
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Generous bounds: TCG guests on a loaded 2-core machine, and libvirt only reports a killed
// emulator once it is reaped.
const recoverWithin = 45 * time.Second

func TestKillNineIsRestarted(t *testing.T) {
	d := startHass(t, "")
	name := guest(t)
	d.hass("vm", "protect", name)
	pid, _ := killQemu(t, name)
	waitRunning(t, name, pid, recoverWithin)
	vm := waitVM(t, d, name, recoverWithin, "healthy again", func(v VM) bool { return v.State == "healthy" && v.Observed == "running" })
	if vm.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", vm.Restarts)
	}
	if n := d.countEvents(name, "recovered"); n != 1 {
		t.Errorf("%d recovered events, want 1", n)
	}
}

func TestVirshDestroyStaysStoppedAndStartProtectsAgain(t *testing.T) {
	d := startHass(t, "")
	name := guest(t)
	d.hass("vm", "protect", name)
	virsh(t, "destroy", name)
	waitVM(t, d, name, recoverWithin, "desired stopped", func(v VM) bool { return v.Desired == "stopped" })
	stays(t, name, "shut off", 6*time.Second)

	virsh(t, "start", name)
	waitVM(t, d, name, recoverWithin, "desired running again", func(v VM) bool { return v.Desired == "running" && v.Observed == "running" })
	pid, _ := killQemu(t, name)
	waitRunning(t, name, pid, recoverWithin)
}

func TestHassStopStaysStoppedAndStartProtectsAgain(t *testing.T) {
	d := startHass(t, "")
	name := guest(t)
	d.hass("vm", "protect", name)
	d.hass("vm", "stop", name)
	waitFor(t, recoverWithin, name+" shut off", func() (bool, string) { s := domState(t, name); return s == "shut off", s })
	stays(t, name, "shut off", 6*time.Second)
	if vm, _ := d.vm(name); vm.Desired != "stopped" {
		t.Fatalf("desired %q after hass vm stop", vm.Desired)
	}

	d.hass("vm", "start", name)
	waitVM(t, d, name, recoverWithin, "running", func(v VM) bool { return v.Observed == "running" && v.State == "healthy" })
	pid, _ := killQemu(t, name)
	waitRunning(t, name, pid, recoverWithin)
}

func TestUndefineAndDeleteAreForgotten(t *testing.T) {
	d := startHass(t, "")
	a, b := guest(t), guest(t)
	d.hass("vm", "protect", a)
	d.hass("vm", "protect", b)

	virsh(t, "destroy", a)
	virsh(t, "undefine", a)
	waitFor(t, recoverWithin, a+" forgotten", func() (bool, string) { _, ok := d.vm(a); return !ok, "" })

	d.hass("vm", "delete", b)
	waitFor(t, recoverWithin, b+" forgotten", func() (bool, string) { _, ok := d.vm(b); return !ok, "" })
	if s := domState(t, b); s != "absent" {
		t.Fatalf("%s after hass vm delete: %q, want it undefined", b, s)
	}
	time.Sleep(5 * time.Second) // two resyncs: nothing comes back
	for _, n := range []string{a, b} {
		if s := domState(t, n); s != "absent" {
			t.Errorf("%s came back: %q", n, s)
		}
		if _, ok := d.vm(n); ok {
			t.Errorf("%s is protected again", n)
		}
	}
}

func TestShutdownThroughHassEscalates(t *testing.T) {
	d := startHass(t, "", "--shutdown-timeout", "4s")
	name := guest(t)
	d.hass("vm", "protect", name)
	// A guest without an OS ignores ACPI: the shutdown is escalated to a destroy at its
	// deadline, and the VM stays off.
	d.hass("vm", "shutdown", name)
	if vm, _ := d.vm(name); vm.Desired != "stopped" {
		t.Fatalf("after hass vm shutdown: %+v", vm)
	}
	waitFor(t, recoverWithin, name+" shut off", func() (bool, string) { s := domState(t, name); return s == "shut off", s })
	stays(t, name, "shut off", 5*time.Second)
}

func TestLibvirtdRestart(t *testing.T) {
	d := startHass(t, "")
	quiet := guest(t)
	victim := guest(t)
	d.hass("vm", "protect", quiet)
	d.hass("vm", "protect", victim)
	quietPID := qemuPID(t, quiet)

	stopLibvirtd(t)
	waitFor(t, 30*time.Second, "hass to notice", func() (bool, string) {
		out, _ := d.hassErr("status")
		return !strings.Contains(out, "libvirt connected"), out
	})
	// With libvirtd down, protecting a VM fails with a clear error and changes nothing.
	before := d.hass("vm", "list", "-o", "json")
	if out, err := d.hassErr("vm", "protect", "anything"); err == nil || !strings.Contains(out, "cannot list the domains") {
		t.Errorf("protect with libvirtd down: %v %s", err, out)
	}
	if after := d.hass("vm", "list", "-o", "json"); after != before {
		t.Errorf("a failed protect changed the state")
	}
	// A crash while libvirtd is down: nobody sees it happen.
	victimPID, _ := killQemu(t, victim)
	time.Sleep(2 * time.Second)
	startLibvirtd(t)

	waitRunning(t, victim, victimPID, 90*time.Second)
	if p := qemuPID(t, quiet); p != quietPID {
		t.Errorf("%s was restarted (pid %d -> %d) though it never stopped: a false recovery", quiet, quietPID, p)
	}
	if n := d.countEvents(quiet, "detect"); n != 0 {
		t.Errorf("%d detections for %s, which ran all along", n, quiet)
	}
}

func TestMaxRestartsGivesUp(t *testing.T) {
	d := startHass(t, "")
	name := guest(t)
	d.hass("vm", "protect", name, "--max-restarts", "1", "--window", "10m", "--max-relocations", "0")
	pid, _ := killQemu(t, name)
	waitRunning(t, name, pid, recoverWithin)
	waitVM(t, d, name, recoverWithin, "healthy", func(v VM) bool { return v.State == "healthy" && v.Observed == "running" })
	killQemu(t, name)
	waitVM(t, d, name, recoverWithin, "in error", func(v VM) bool { return v.State == "error" })
	stays(t, name, "shut off", 5*time.Second)
	if d.countEvents(name, "gave-up") != 1 || d.countEvents(name, "alert") < 1 {
		t.Fatalf("want one gave-up and an alert event, got %+v", d.events())
	}
	// A user's start revives it, with a fresh budget.
	d.hass("vm", "start", name)
	waitVM(t, d, name, recoverWithin, "healthy after a start", func(v VM) bool { return v.State == "healthy" && v.Observed == "running" })
}

func TestStateSurvivesRestart(t *testing.T) {
	data := t.TempDir()
	d := startHass(t, data)
	name := guest(t)
	d.hass("vm", "protect", name, "--max-restarts", "7", "--on-guest-shutdown", "restart")
	d.hass("vm", "stop", name)
	waitVM(t, d, name, recoverWithin, "stopped", func(v VM) bool { return v.Observed == "shutoff" })
	d.stop()

	d2 := startHass(t, data)
	vm, ok := d2.vm(name)
	if !ok || vm.Desired != "stopped" || vm.Policy.MaxRestarts != 7 || vm.Policy.OnGuestShutdown != "restart" {
		t.Fatalf("after a restart of hass: %+v (found %v)", vm, ok)
	}
	stays(t, name, "shut off", 4*time.Second)
	if evs := d2.events(); len(evs) < 3 {
		t.Fatalf("event log lost: %d events", len(evs))
	}
}

func TestBadInput(t *testing.T) {
	d := startHass(t, "")
	name := guest(t)
	d.hass("vm", "protect", name)
	before := d.hass("vm", "list", "-o", "json")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "protect", "no-such-vm"}, `no domain "no-such-vm"`},
		{[]string{"vm", "start", "no-such-vm"}, "not protected"},
		{[]string{"vm", "protect", name, "--window", "10x"}, "window"},
		{[]string{"vm", "protect", name, "--max-restarts", "-1"}, "max_restarts"},
		{[]string{"vm", "protect", name, "--on-guest-shutdown", "maybe"}, "on_guest_shutdown"},
		{[]string{"vm", "reboot", name, "-o", "yaml"}, "--output"},
		{[]string{"vm", "migrate", name, "nowhere"}, "nowhere"},
	} {
		out, err := d.hassErr(tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("hass %s: err %v, output %q; want an error naming %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
	if after := d.hass("vm", "list", "-o", "json"); after != before {
		t.Errorf("failed requests changed the state:\nbefore %s\nafter  %s", before, after)
	}
	// No daemon at all (with a token, so that what fails is reaching it).
	noDaemon := exec.Command(hassBin, "vm", "list", "--server", "http://127.0.0.1:1", "--token-file", d.tokenFile())
	out, err := noDaemon.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cannot reach the hass daemon") {
		t.Errorf("against no daemon: %v %s", err, out)
	}
}

// ---- libvirtd control ---------------------------------------------------------------------

func stopLibvirtd(t *testing.T) {
	t.Helper()
	// Only this machine's libvirtd (its pidfile): a multi-host rig's libvirtds, in their own
	// namespaces, are not ours to stop.
	pid := rootLibvirtdPID()
	if pid == 0 {
		t.Fatal("no libvirtd pidfile at /var/run/libvirtd.pid")
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	waitFor(t, 30*time.Second, "libvirtd to stop", func() (bool, string) {
		_, err := os.Stat(socket)
		return syscall.Kill(pid, 0) != nil, errString(err)
	})
}

func rootLibvirtdPID() int {
	b, err := os.ReadFile("/var/run/libvirtd.pid")
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func startLibvirtd(t *testing.T) {
	t.Helper()
	cmd := exec.Command("bash", "../../scripts/install-libvirt.sh")
	cmd.Env = append(os.Environ(), "HASS_LIBVIRT_WAIT=60")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restart libvirtd: %v\n%s", err, out)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// percentile of sorted durations.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

func TestProtectAll(t *testing.T) {
	before := guest(t)
	virsh(t, "destroy", before) // a stopped domain is protected as stopped
	data := t.TempDir()
	d := startHass(t, data, "--protect-all")
	waitVM(t, d, before, recoverWithin, "protected as stopped", func(v VM) bool { return v.Desired == "stopped" })
	later := guest(t) // defined while hass runs: protected at the next resync
	waitVM(t, d, later, recoverWithin, "protected as running", func(v VM) bool { return v.Desired == "running" && v.Observed == "running" })
	pid, _ := killQemu(t, later)
	waitRunning(t, later, pid, recoverWithin)
	stays(t, before, "shut off", 3*time.Second)

	// A user's unprotect sticks, even across a restart of hass with --protect-all.
	d.hass("vm", "unprotect", later)
	d.stop()
	d2 := startHass(t, data, "--protect-all")
	time.Sleep(5 * time.Second) // two resyncs
	if _, ok := d2.vm(later); ok {
		t.Fatalf("%s is protected again after the user unprotected it", later)
	}
	if _, ok := d2.vm(before); !ok {
		t.Fatalf("%s lost its protection across the restart", before)
	}
}
