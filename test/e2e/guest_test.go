package e2e

// The guest OS and guest network layers, on the real tiny guest (scripts/build-guest-image.sh:
// a Debian kernel and an initramfs with busybox and qemu-guest-agent): a hung guest, a panic,
// the watchdog, the guest's network cut, reboots and shutdowns from outside and inside, a
// transient network loss.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hassproject/hass/api"
	hguest "github.com/hassproject/hass/guest"
)

var image struct {
	once                    sync.Once
	kernel, initrd, cmdline string
	err                     error
}

// guestImage builds the tiny guest (cached between runs) once per test binary.
func guestImage(t *testing.T) (kernel, initrd, cmdline string) {
	t.Helper()
	image.once.Do(func() {
		start := time.Now()
		out, err := exec.Command("bash", "../../scripts/build-guest-image.sh").Output()
		if err != nil {
			msg := err.Error()
			if ee, ok := err.(*exec.ExitError); ok {
				msg += ": " + string(ee.Stderr)
			}
			image.err = fmt.Errorf("build-guest-image.sh: %s", msg)
			return
		}
		for _, l := range strings.Split(string(out), "\n") {
			k, v, _ := strings.Cut(l, "=")
			switch k {
			case "kernel":
				image.kernel = v
			case "initrd":
				image.initrd = v
			case "cmdline":
				image.cmdline = v
			}
		}
		if image.kernel == "" || image.initrd == "" {
			image.err = fmt.Errorf("build-guest-image.sh printed no kernel or initrd:\n%s", out)
		}
		fmt.Printf("e2e: the tiny guest is ready (%s)\n", time.Since(start).Round(time.Millisecond))
	})
	if image.err != nil {
		t.Fatal(image.err)
	}
	return image.kernel, image.initrd, image.cmdline
}

var tapSeq atomic.Int32

// guestAccel is the tiny guest's domain type: kvm where KVM boots it to its agent, else qemu
// (TCG). /dev/kvm and libvirt's KVM capability are not enough: on a machine whose KVM is PVM
// (a nested-less KVM, as on some cloud sandboxes) the firmware-only guests run, but the
// tiny guest's kernel stops in an internal error of the hypervisor, and its agent never
// answers.
var guestAccel struct {
	once sync.Once
	typ  string
}

// tinyGuestType probes, once per test binary, whether KVM boots the tiny guest.
func tinyGuestType(t *testing.T, xmlFor func(name, typ string) string) string {
	t.Helper()
	guestAccel.once.Do(func() {
		guestAccel.typ = "qemu"
		if domType != "kvm" {
			return
		}
		start := time.Now()
		name := definedName() + "-probe"
		f := filepath.Join(t.TempDir(), name+".xml")
		if err := os.WriteFile(f, []byte(xmlFor(name, "kvm")), 0o644); err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = virshErr("destroy", name) }()
		if _, err := virshErr("create", f); err != nil {
			fmt.Printf("e2e: KVM cannot start the tiny guest (%v): it runs under TCG\n", err)
			return
		}
		for time.Since(start) < 45*time.Second {
			if agentAnswers(name) {
				guestAccel.typ = "kvm"
				fmt.Printf("e2e: the tiny guest runs under KVM (its agent answered %s after the start)\n", time.Since(start).Round(time.Millisecond))
				return
			}
			if st, _ := virshErr("domstate", name); !strings.HasPrefix(strings.TrimSpace(st), "running") {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		fmt.Printf("e2e: KVM does not boot the tiny guest to its agent here (%s): it runs under TCG\n", time.Since(start).Round(time.Millisecond))
	})
	return guestAccel.typ
}

// realGuest defines and starts the tiny guest with its network on a tap device of this host
// (10.213.N.1/30 here, 10.213.N.2 in the guest: nothing routes it off the machine) and its
// watchdog timeout wdt seconds; it returns the domain's name and the guest's address once its
// guest agent answers. Removed when the test ends.
func realGuest(t *testing.T, wdt int) (name, addr string) {
	t.Helper()
	return realGuestWith(t, wdt, "")
}

// realGuestWith is realGuest with more devices in its domain XML.
func realGuestWith(t *testing.T, wdt int, devices string) (name, addr string) {
	t.Helper()
	kernel, initrd, cmdline := guestImage(t)
	n := int(tapSeq.Add(1))
	tap := fmt.Sprintf("hassg%d", n)
	hostIP, guestIP := fmt.Sprintf("10.213.%d.1", n), fmt.Sprintf("10.213.%d.2", n)
	_ = exec.Command("ip", "link", "del", tap).Run()
	for _, args := range [][]string{{"tuntap", "add", "dev", tap, "mode", "tap"}, {"addr", "add", hostIP + "/30", "dev", tap}, {"link", "set", tap, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", tap).Run() })

	tmpl, err := os.ReadFile("../../scripts/guest-domain.xml.in")
	if err != nil {
		t.Fatal(err)
	}
	domain := func(name, typ, iface, cmd string) string {
		xml := string(tmpl)
		xml = xml[strings.Index(xml, "<domain"):]
		xml = strings.NewReplacer("@NAME@", name, "@TYPE@", typ, "@KERNEL@", kernel, "@INITRD@", initrd, "@CMDLINE@", cmd).Replace(xml)
		return regexp.MustCompile(`(?s)<interface type='network'>.*?</interface>`).ReplaceAllString(xml, iface)
	}
	typ := tinyGuestType(t, func(name, typ string) string { return domain(name, typ, "", cmdline) })
	name = definedName()
	xml := domain(name, typ,
		fmt.Sprintf("<interface type='ethernet'><target dev='%s' managed='no'/><model type='virtio'/></interface>%s", tap, devices),
		fmt.Sprintf("%s hass.ip=%s/30 hass.wdt=%d", cmdline, guestIP, wdt))
	defineXML(t, name, xml)
	virsh(t, "start", name)
	waitAgent(t, name, 90*time.Second)
	return name, guestIP
}

func definedName() string {
	return fmt.Sprintf("hass-e2e-g%d-%d", os.Getpid()%1000, time.Now().UnixNano()%1000000)
}

// agentAnswers reports whether the guest agent answers a guest-ping within a second.
func agentAnswers(name string) bool {
	_, err := virshErr("qemu-agent-command", name, `{"execute":"guest-ping"}`, "--timeout", "1")
	return err == nil
}

func waitAgent(t *testing.T, name string, limit time.Duration) {
	t.Helper()
	waitFor(t, limit, name+"'s guest agent answering", func() (bool, string) { return agentAnswers(name), "" })
}

// guestRun runs a shell command inside the guest through its agent (guest-exec), without
// waiting for it.
func guestRun(t *testing.T, name, script string) {
	t.Helper()
	cmd, _ := json.Marshal(map[string]any{"execute": "guest-exec", "arguments": map[string]any{"path": "/bin/sh", "arg": []string{"-c", script}}})
	virsh(t, "qemu-agent-command", name, string(cmd))
}

// pingable reports whether addr answers an ICMP echo within a second (hass's own probe).
func pingable(addr string) bool {
	return hguest.NewPinger().Ping(context.Background(), addr, time.Second) == nil
}

// watched waits until hass's monitor of the guest layers says it watches what is named:
// "guest agent answers" or "its address answers".
func (d *daemon) watched(name, what string) {
	d.t.Helper()
	waitFor(d.t, 60*time.Second, name+": "+what, func() (bool, string) {
		return strings.Contains(d.logBuf.String(), name+": "+what), ""
	})
}

func (d *daemon) eventsOf(name string) []api.Event {
	var out []api.Event
	for _, e := range d.events() {
		if e.VM == name {
			out = append(out, e)
		}
	}
	return out
}

// noFailure checks that no failure was detected for name and nothing recovered.
func (d *daemon) noFailure(name string) {
	d.t.Helper()
	for _, e := range d.eventsOf(name) {
		if e.Type == "detect" || e.Type == "recovered" || e.Type == "gave-up" || (e.Type == "action" && strings.Contains(e.Msg, "recovery")) {
			d.t.Errorf("unexpected %s event: %s %s", e.Type, e.Kind, e.Msg)
		}
	}
}

func (d *daemon) waitRecovered(name, kind string, limit time.Duration) api.Event {
	d.t.Helper()
	var got api.Event
	waitFor(d.t, limit, name+" recovered from "+kind, func() (bool, string) {
		for _, e := range d.eventsOf(name) {
			if e.Type == "recovered" && e.Kind == kind {
				got = e
				return true, ""
			}
		}
		return false, ""
	})
	return got
}

const guestFlags = "--guest-heartbeat --guest-heartbeat-interval 1s --guest-heartbeat-timeout 1s --guest-heartbeat-misses 3 --guest-recheck 2s"

func TestGuestHangIsReset(t *testing.T) {
	d := startHass(t, "")
	name, _ := realGuest(t, 0)
	d.hass(append([]string{"vm", "protect", name}, strings.Fields(guestFlags)...)...)
	d.watched(name, "guest agent answers")
	pid := qemuPID(t, name)
	frozen := time.Now()
	guestRun(t, name, "kill -STOP $(pidof qemu-ga)") // the agent hangs: it never answers again on its own
	e := d.waitRecovered(name, "guest-hang", 60*time.Second)
	if e.ActionAt == nil {
		t.Fatalf("recovered without an action: %+v", e)
	}
	t.Logf("measured: guest hang -> reset issued %s, detected %s (heartbeat 1s x 3 misses, 1s timeout, recheck 2s)",
		e.ActionAt.Sub(frozen).Round(time.Millisecond), e.DetectAt.Sub(frozen).Round(time.Millisecond))
	if p := qemuPID(t, name); p != pid {
		t.Errorf("qemu pid %d -> %d: a hang is reset, not restarted", pid, p)
	}
	waitAgent(t, name, 90*time.Second) // the reset guest boots and its agent answers again
	vm := waitVM(t, d, name, 30*time.Second, "healthy", func(v VM) bool { return v.State == "healthy" && v.Observed == "running" })
	if vm.Restarts != 1 {
		t.Errorf("restarts %d, want 1 (the reset)", vm.Restarts)
	}
	if vm.Policy.Guest == nil || !vm.Policy.Guest.Heartbeat || vm.Policy.Guest.HeartbeatMisses != 3 {
		t.Errorf("policy.guest %+v", vm.Policy.Guest)
	}
}

func TestGuestPanicIsRestarted(t *testing.T) {
	d := startHass(t, "")
	name, _ := realGuest(t, 0)
	d.hass(append([]string{"vm", "protect", name}, strings.Fields(guestFlags)...)...)
	d.watched(name, "guest agent answers")
	pid := qemuPID(t, name)
	guestRun(t, name, "echo c > /proc/sysrq-trigger")
	waitRunning(t, name, pid, 60*time.Second)
	e := d.waitRecovered(name, "guest-panic", 60*time.Second)
	t.Logf("measured: guest panic -> running again %s after the panic was reported", e.RecoveredAt.Sub(*e.DetectAt).Round(time.Millisecond))
	waitAgent(t, name, 90*time.Second)
}

func TestGuestWatchdogResetIsHandledByItsAction(t *testing.T) {
	d := startHass(t, "")
	name, _ := realGuest(t, 4) // the guest's watchdog: 4 s, action reset (the domain XML)
	d.hass(append([]string{"vm", "protect", name}, strings.Fields(guestFlags)...)...)
	d.watched(name, "guest agent answers")
	pid := qemuPID(t, name)
	guestRun(t, name, "kill -9 $(pidof watchdog)") // nobody pets it: it fires
	waitFor(t, 60*time.Second, "the watchdog's detect event", func() (bool, string) {
		for _, e := range d.eventsOf(name) {
			if e.Type == "detect" && strings.Contains(e.Msg, "watchdog fired and the hypervisor reset the guest") {
				return true, ""
			}
		}
		return false, ""
	})
	waitAgent(t, name, 90*time.Second) // reset by the hypervisor as the action says, and back
	if p := qemuPID(t, name); p != pid {
		t.Errorf("qemu pid %d -> %d: the watchdog's reset is the recovery, hass restarts nothing", pid, p)
	}
	time.Sleep(5 * time.Second) // hass's own layers must not add a recovery of their own
	for _, e := range d.eventsOf(name) {
		if e.Type == "action" {
			t.Errorf("hass acted after the watchdog's reset: %s", e.Msg)
		}
	}
}

func TestGuestNetworkCutIsRecovered(t *testing.T) {
	d := startHass(t, "")
	name, addr := realGuest(t, 0)
	d.hass("vm", "protect", name, "--guest-heartbeat", "--guest-probe", "icmp", "--guest-address", addr,
		"--guest-probe-interval", "1s", "--guest-probe-timeout", "1s", "--guest-probe-misses", "3", "--guest-recheck", "2s")
	d.watched(name, "its address answers")
	cut := time.Now()
	guestRun(t, name, "ip link set eth0 down")
	e := d.waitRecovered(name, "guest-network", 60*time.Second)
	t.Logf("measured: guest network cut -> reboot issued %s, detected %s (probe 1s x 3 misses, 1s timeout, recheck 2s)",
		e.ActionAt.Sub(cut).Round(time.Millisecond), e.DetectAt.Sub(cut).Round(time.Millisecond))
	waitFor(t, 90*time.Second, addr+" answering again after the reboot", func() (bool, string) { return pingable(addr), "" })
	var detect string
	for _, ev := range d.eventsOf(name) {
		if ev.Type == "detect" {
			detect = ev.Msg
		}
	}
	if !strings.Contains(detect, "network") {
		t.Errorf("detect event %q does not name the network layer", detect)
	}
}

func TestGuestTransientNetworkLossIsNoFailure(t *testing.T) {
	d := startHass(t, "")
	name, addr := realGuest(t, 0)
	// The tcp probe of the guest's web server (port 80), at the address its guest agent
	// reports (no --guest-address).
	d.hass("vm", "protect", name, "--guest-heartbeat", "--guest-probe", "tcp:80",
		"--guest-probe-interval", "1s", "--guest-probe-timeout", "1s", "--guest-probe-misses", "2", "--guest-recheck", "4s")
	d.watched(name, "its address answers")
	if !strings.Contains(d.logBuf.String(), "address="+addr) {
		t.Errorf("the probed address is not the one the guest agent reports (%s)", addr)
	}
	guestRun(t, name, "ip link set eth0 down; sleep 3; ip link set eth0 up") // long enough to start a check
	waitFor(t, 30*time.Second, "a check of the layers", func() (bool, string) {
		return strings.Contains(d.logBuf.String(), name+": guest network layer:"), ""
	})
	waitFor(t, 30*time.Second, "the check's verdict", func() (bool, string) {
		return strings.Contains(d.logBuf.String(), "a transient fault, not a failure"), ""
	})
	time.Sleep(5 * time.Second)
	d.noFailure(name)
	if !pingable(addr) {
		t.Errorf("%s does not answer after the loss", addr)
	}
}

// Reboots and a shutdown, from outside and inside the guest, with both layers watched: none is
// a failure; the shut-down VM stays down.
func TestGuestOperationsAreNotFailures(t *testing.T) {
	d := startHass(t, "")
	name, addr := realGuest(t, 0)
	d.hass("vm", "protect", name, "--guest-heartbeat", "--guest-heartbeat-interval", "1s", "--guest-heartbeat-misses", "2",
		"--guest-probe", "icmp", "--guest-address", addr, "--guest-probe-interval", "1s", "--guest-probe-misses", "2", "--guest-recheck", "1s")
	d.watched(name, "guest agent answers")
	pid := qemuPID(t, name)

	virsh(t, "reboot", name) // through the guest agent (libvirt's default while it is connected)
	time.Sleep(2 * time.Second)
	waitAgent(t, name, 90*time.Second)
	d.watched(name, "its address answers")
	time.Sleep(8 * time.Second)

	guestRun(t, name, "reboot") // from inside
	time.Sleep(2 * time.Second)
	waitAgent(t, name, 90*time.Second)
	time.Sleep(8 * time.Second)

	d.hass("vm", "reboot", name) // through hass
	time.Sleep(2 * time.Second)
	waitAgent(t, name, 90*time.Second)
	time.Sleep(8 * time.Second)
	if p := qemuPID(t, name); p != pid {
		t.Errorf("qemu pid %d -> %d across reboots: something restarted the VM", pid, p)
	}

	virsh(t, "shutdown", name)
	waitFor(t, 60*time.Second, name+" shut off", func() (bool, string) { s := domState(t, name); return s == "shut off", s })
	stays(t, name, "shut off", 10*time.Second)
	d.noFailure(name)
	vm := waitVM(t, d, name, 10*time.Second, "stopped", func(v VM) bool { return v.Desired == "stopped" })
	if vm.State != "healthy" {
		t.Errorf("state %s after a user's shutdown", vm.State)
	}
}

// A cluster whose guest layers are turned off: the hang of a guest whose own policy watches
// its OS layer is not acted on (its host no longer watches it).
func TestGuestLayersOffInTheCluster(t *testing.T) {
	d := startHass(t, "")
	name, _ := realGuest(t, 0)
	d.hass(append([]string{"vm", "protect", name}, strings.Fields(guestFlags)...)...)
	d.watched(name, "guest agent answers")
	out := d.hass("cluster", "create", "default", "--guest-layers", "none")
	if !strings.Contains(out, "guest layers none") {
		t.Fatalf("hass cluster create default --guest-layers none: %s", out)
	}
	waitFor(t, 30*time.Second, "the agent applying the cluster's guest layers", func() (bool, string) {
		return strings.Contains(d.logBuf.String(), "guest layers active on this host's cluster") &&
			strings.Contains(d.logBuf.String(), "layers=none"), ""
	})
	guestRun(t, name, "kill -STOP $(pidof qemu-ga)")
	time.Sleep(20 * time.Second) // twice what detection takes with these settings
	d.noFailure(name)
	if list := d.hass("cluster", "list"); !strings.Contains(list, "none") {
		t.Errorf("hass cluster list does not show the guest layers:\n%s", list)
	}
}

// A disk I/O error: the guest's disk is a qcow2 image on a 4 MiB tmpfs that its writes fill
// (ENOSPC); QEMU pauses the guest (error_policy='stop') and libvirt reports the I/O error.
// hass says so and restarts nothing (a restart would not fix the storage); once the storage is
// fixed and the user resumes the VM, it is recovered.
func TestGuestIOErrorPausesAndWaitsForTheUser(t *testing.T) {
	d := startHass(t, "")
	dir, err := os.MkdirTemp("/var/tmp", "hass-e2e-io-") // QEMU runs as libvirt-qemu: no private parent dirs
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4M,mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("umount", "-l", dir).Run()
		_ = os.Remove(dir)
	})
	img := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-f", "qcow2", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	disk := fmt.Sprintf("<disk type='file' device='disk'><driver name='qemu' type='qcow2' error_policy='stop'/><source file='%s'/><target dev='vda' bus='virtio'/></disk>", img)
	name, _ := realGuestWith(t, 0, disk)
	d.hass("vm", "protect", name)
	pid := qemuPID(t, name)
	guestRun(t, name, "dd if=/dev/urandom of=/dev/vda bs=64k count=256 conv=fsync")
	vm := waitVM(t, d, name, 60*time.Second, "paused on its I/O error", func(v VM) bool { return v.Observed == "paused" && v.Failure == "io-error" })
	if vm.State == "healthy" {
		t.Errorf("state %s while paused on an I/O error", vm.State)
	}
	stays(t, name, "paused", 5*time.Second) // nothing restarts it
	if p := qemuPID(t, name); p != pid {
		t.Errorf("qemu pid %d -> %d: restarted on an I/O error", pid, p)
	}
	var alerted bool
	for _, e := range d.eventsOf(name) {
		alerted = alerted || (e.Type == "detect" && strings.Contains(e.Msg, "I/O error"))
	}
	if !alerted {
		t.Errorf("no detect event names the I/O error: %+v", d.eventsOf(name))
	}
	// The storage is fixed; the user resumes it.
	if out, err := exec.Command("mount", "-o", "remount,size=128M", dir).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v: %s", err, out)
	}
	d.hass("vm", "resume", name)
	d.waitRecovered(name, "io-error", 60*time.Second)
	waitFor(t, 30*time.Second, name+" running", func() (bool, string) { s := domState(t, name); return s == "running", s })
}
