package rig_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/test/rig"
)

func TestMain(m *testing.M) {
	// the test binary doubles as a small service that tests run inside a host
	if h := os.Getenv("RIG_TEST_HELPER"); h != "" {
		helper(h)
		return
	}
	// Four hosts: hass's tests run its controllers (and etcd's three members) on h1-h3 and
	// agents on all four, so that a host without a controller can be lost while a leader
	// is killed (a three-member etcd survives one member lost, not two).
	if os.Getenv("RIG_HOSTS") == "" {
		os.Setenv("RIG_HOSTS", "4")
	}
	rig.Main(m)
}

// rigHosts is the number of hosts the rig is asked for.
func rigHosts() int {
	n, err := strconv.Atoi(os.Getenv("RIG_HOSTS"))
	if err != nil {
		return 3
	}
	return n
}

// helper "http:ADDR" serves "hello from <hostname>" on ADDR until killed.
func helper(spec string) {
	addr, ok := strings.CutPrefix(spec, "http:")
	if !ok {
		fmt.Fprintln(os.Stderr, "unknown helper", spec)
		os.Exit(2)
	}
	name, _ := os.Hostname()
	err := http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "hello from %s", name)
	}))
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func guestName(t *testing.T) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "rig-" + strings.ToLower(t.Name()[4:min(len(t.Name()), 16)]) + "-" + hex.EncodeToString(b)
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < limit {
		ok, detail := cond()
		if ok {
			return time.Since(start)
		}
		last = detail
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last: %s)", limit, what, last)
	return 0
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// machineLibvirtd is the PID in the pidfile of the libvirtd at the default paths, if any.
// The rig must never touch it: tests only read it.
func machineLibvirtd() string {
	b, err := os.ReadFile("/var/run/libvirtd.pid")
	if err != nil {
		return "none"
	}
	return strings.TrimSpace(string(b))
}

func capCache(r *rig.Rig) string {
	if c := os.Getenv("RIG_CAPCACHE"); c != "" {
		return c
	}
	return filepath.Join(r.Dir, "capcache")
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestUpColdWarm(t *testing.T) {
	// cold: no QEMU capability cache (h1 probes QEMU alone, the others get its cache)
	cache := os.Getenv("RIG_CAPCACHE")
	if cache == "" {
		dir := os.Getenv("RIG_DIR")
		if dir == "" {
			dir = "/var/tmp/hass-rig"
		}
		cache = filepath.Join(dir, "capcache")
	}
	// Other tests of this package may have brought the rig up already: cold means down first.
	must(t, rig.Down())
	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := rig.Up(t)
	t.Logf("bench: rig up cold (no QEMU capability cache): %.2fs", time.Since(start).Seconds())
	if _, err := os.Stat(cache); err != nil {
		t.Errorf("no capability cache after a cold up: %v", err)
	}

	start = time.Now()
	must(t, rig.Down())
	t.Logf("bench: rig down: %.2fs", time.Since(start).Seconds())
	start = time.Now()
	r = rig.Up(t)
	t.Logf("bench: rig up warm (capability cache kept): %.2fs", time.Since(start).Seconds())

	start = time.Now()
	if out, err := r.Run("up"); err != nil {
		t.Fatalf("up again: %v\n%s", err, out)
	}
	t.Logf("bench: rig up when already up: %.2fs", time.Since(start).Seconds())
	t.Logf("status:\n%s", r.Status())
}

func TestHostsIsolated(t *testing.T) {
	r := rig.Up(t)
	machineBefore := machineLibvirtd()
	if got, want := len(r.Hosts()), rigHosts(); got != want {
		t.Fatalf("%d hosts, want %d (RIG_HOSTS)", got, want)
	}
	for _, h := range r.Hosts() {
		out, err := r.Exec(h, "hostname")
		must(t, err)
		if strings.TrimSpace(out) != h.String() {
			t.Errorf("hostname on %s: %q", h, out)
		}
		out, err = r.Exec(h, "ip", "-o", "-4", "addr", "show")
		must(t, err)
		if !strings.Contains(out, " "+r.Addr(h)+"/24") || strings.Count(out, " inet ") != 2 {
			t.Errorf("addresses on %s: want lo and %s/24 only:\n%s", h, r.Addr(h), out)
		}
		out, err = r.Exec(h, "ip", "route", "show", "default")
		must(t, err)
		if strings.TrimSpace(out) != "" {
			t.Errorf("%s has a default route: %s", h, out)
		}
		_, err = r.Virsh(h, "version")
		must(t, err)
	}

	name := guestName(t)
	must(t, r.DefineGuest(1, name))
	for _, h := range r.Hosts() {
		out, err := r.Virsh(h, "list", "--all", "--name")
		must(t, err)
		has := slices.Contains(strings.Fields(out), name)
		if has != (h == 1) {
			t.Errorf("%s lists %q: %v (want only h1 to)", h, name, has)
		}
	}
	// the same through the plain URI inside h1's namespaces
	out, err := r.Exec(1, "virsh", "-c", "qemu:///system", "list", "--all", "--name")
	must(t, err)
	if !slices.Contains(strings.Fields(out), name) {
		t.Errorf("qemu:///system inside h1 does not list %s:\n%s", name, out)
	}
	// the machine's own libvirtd (if any) sees none of it and was not touched
	if _, err := os.Stat("/var/run/libvirt/libvirt-sock"); err == nil {
		b, _ := run("virsh", "-c", "qemu:///system", "list", "--all", "--name")
		if strings.Contains(b, name) {
			t.Errorf("the machine's libvirtd lists %s", name)
		}
	}
	if m := machineLibvirtd(); m != machineBefore {
		t.Errorf("the machine's libvirtd pid changed: %s -> %s", machineBefore, m)
	}
}

func TestGuestStartAndMigrate(t *testing.T) {
	r := rig.Up(t)
	name := guestName(t)
	must(t, r.DefineGuest(1, name))
	start := time.Now()
	_, err := r.Virsh(1, "start", name)
	must(t, err)
	t.Logf("bench: guest start on h1: %.2fs", time.Since(start).Seconds())
	pid := r.QemuPID(1, name)
	pids, err := r.Pids(1)
	must(t, err)
	if pid == 0 || pids[pid] == "" {
		t.Fatalf("QEMU of %s (pid %d) is not among h1's processes %v", name, pid, pids)
	}

	start = time.Now()
	must(t, r.Migrate(name, 1, 2))
	t.Logf("bench: live migration h1->h2: %.2fs", time.Since(start).Seconds())
	st, err := r.DomState(2, name)
	must(t, err)
	if st != "running" {
		t.Errorf("%s on h2: %s", name, st)
	}
	out, err := r.Virsh(1, "list", "--all", "--name")
	must(t, err)
	if slices.Contains(strings.Fields(out), name) {
		t.Errorf("%s still defined on h1 after migration", name)
	}
	pid2 := r.QemuPID(2, name)
	pids, err = r.Pids(2)
	must(t, err)
	if pid2 == 0 || pids[pid2] == "" {
		t.Errorf("QEMU of %s (pid %d) is not among h2's processes %v", name, pid2, pids)
	}
	if alive(pid) {
		t.Errorf("the source QEMU (pid %d) still runs", pid)
	}
	if info, err := r.Virsh(2, "domjobinfo", "--completed", name); err == nil {
		for _, l := range strings.Split(info, "\n") {
			if strings.HasPrefix(l, "Time elapsed:") || strings.HasPrefix(l, "Total downtime:") {
				t.Logf("migration job: %s", strings.Join(strings.Fields(l), " "))
			}
		}
	}
}

func TestPowerOffKillsEverything(t *testing.T) {
	r := rig.Up(t)
	name := guestName(t)
	must(t, r.DefineGuest(2, name))
	_, err := r.Virsh(2, "start", name)
	must(t, err)
	proc, err := r.Start(2, "sleep", "3600")
	must(t, err)
	svc, err := r.Service(2, "svc", "sleep", "3600")
	must(t, err)
	before, err := r.Pids(2)
	must(t, err)
	var kinds []string
	for _, c := range before {
		kinds = append(kinds, c)
	}
	slices.Sort(kinds)
	t.Logf("h2 before power-off: %v", kinds)
	for _, want := range []string{"libvirtd", "virtlogd", "qemu-system-x86", "sleep"} {
		if !slices.Contains(kinds, want) {
			t.Fatalf("no %s among h2's processes %v", want, kinds)
		}
	}

	// fence h2 as a peer would: ipmitool from h1 against h2's BMC
	ipmi := func(from rig.Host, args ...string) (string, error) {
		return r.Exec(from, append([]string{"ipmitool", "-I", "lanplus", "-C", "3", "-H", r.BMCAddr(2),
			"-U", "admin", "-P", "rigpass"}, args...)...)
	}
	hookLog := filepath.Join(r.Dir, "bmc/h2/hook.log")
	hookBefore, _ := os.ReadFile(hookLog)
	start := time.Now()
	out, err := ipmi(1, "chassis", "power", "off")
	if err != nil {
		t.Fatalf("ipmi power off from h1: %v: %s", err, out)
	}
	ipmiDone := time.Since(start)
	t.Cleanup(func() {
		if on, _ := r.Powered(2); !on {
			_, _ = r.Run("power-on", "2")
		}
	})
	if err := proc.Wait(30 * time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("the process started with Start on h2 ended with %v, want killed", err)
	}
	waitFor(t, time.Minute, "every process of h2 to die", func() (bool, string) {
		var left []string
		for pid, c := range before {
			if alive(pid) {
				left = append(left, fmt.Sprintf("%d %s", pid, c))
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
	t.Logf("bench: IPMI power-off from h1 until everything in h2 is dead: %.2fs (the Start process was killed after %.2fs; ipmitool returned after %.2fs)",
		time.Since(start).Seconds(), proc.Ended().Sub(start).Seconds(), ipmiDone.Seconds())
	if b, err := os.ReadFile(hookLog); err == nil && len(b) > len(hookBefore) {
		for _, l := range strings.Split(string(b[len(hookBefore):]), "\n") {
			if strings.Contains(l, "h2 off:") || strings.Contains(l, "hook h2 set") {
				t.Logf("BMC hook: %s", strings.TrimSpace(l))
			}
		}
	}
	if pids, err := r.Pids(2); err != nil || len(pids) != 0 {
		t.Errorf("h2 still has processes after power-off: %v %v", pids, err)
	}
	if st, err := ipmi(1, "chassis", "power", "status"); err != nil || !strings.Contains(st, "is off") {
		t.Errorf("power status from h1: %q %v", st, err)
	}
	if _, err := r.Exec(1, "ping", "-c1", "-W1", r.Addr(2)); err == nil {
		t.Errorf("h2 answers ping while powered off")
	}
	if _, err := r.Exec(2, "true"); err == nil {
		t.Errorf("Exec on a powered-off host succeeded")
	}

	start = time.Now()
	must(t, r.PowerOn(2))
	t.Logf("bench: IPMI power-on until h2's libvirtd answers: %.2fs", time.Since(start).Seconds())
	st, err := r.DomState(2, name)
	must(t, err)
	if st != "shut off" {
		t.Errorf("%s after h2's power loss: %q, want shut off", name, st)
	}
	waitFor(t, time.Minute, "the boot service to run again on h2", func() (bool, string) {
		p := r.BgPid(2, "svc")
		return p != 0 && p != svc, strconv.Itoa(p)
	})
	_, err = r.Virsh(2, "start", name)
	must(t, err)

	// and the API's own path: PowerOff/PowerOn from the rig namespace
	start = time.Now()
	must(t, r.PowerOff(2))
	t.Logf("bench: PowerOff (IPMI from the rig namespace) until nothing of h2 runs: %.2fs", time.Since(start).Seconds())
	must(t, r.PowerOn(2))
}

func TestNetCut(t *testing.T) {
	r := rig.Up(t)
	_, err := r.Exec(1, "ping", "-c1", "-W2", r.Addr(3))
	must(t, err)
	_, err = r.Exec(1, "virsh", "-c", r.TCPURI(3), "version")
	must(t, err)
	// an open connection from h1 to h3's libvirtd (virsh's keepalive: 5 s interval, 6 probes)
	events, err := r.Start(1, "virsh", "-c", r.TCPURI(3), "event", "--loop", "--all")
	must(t, err)
	waitFor(t, 30*time.Second, "h1's event connection to h3", func() (bool, string) {
		out, _ := r.Exec(1, "ss", "-Htn", "state", "established", "dst", r.Addr(3))
		return strings.Contains(out, r.Addr(3)+":16509"), out
	})

	must(t, r.NetCut(3))
	cut := time.Now()
	// a new connection, while h1 still has h3's MAC address cached
	dial, err := r.Start(1, "virsh", "-c", r.TCPURI(3), "version")
	must(t, err)
	start := time.Now()
	if out, err := r.Exec(1, "ping", "-c1", "-W1", r.Addr(3)); err == nil {
		t.Errorf("h1 still reaches h3 after the cut: %s", out)
	}
	t.Logf("bench: net-cut seen from a peer: h1's first ping (1 s timeout) fails after %.2fs", time.Since(start).Seconds())
	// h3 itself keeps running and is still manageable through its unix socket
	_, err = r.Virsh(3, "version")
	must(t, err)
	if pids, err := r.Pids(3); err != nil || len(pids) == 0 {
		t.Errorf("h3 has no processes after a net cut: %v", err)
	}
	if err := dial.Wait(4 * time.Minute); err == nil {
		t.Errorf("a new connection from h1 to h3 succeeded after the cut: %s", dial.Output())
	}
	t.Logf("bench: net-cut seen from a peer: a new connection from h1 to h3 fails after %.2fs (%s)",
		dial.Ended().Sub(cut).Seconds(), lastLine(dial.Output()))
	if err := events.Wait(4 * time.Minute); err != nil && !strings.Contains(err.Error(), "exit status") {
		t.Errorf("h1's open connection: %v", err)
	}
	t.Logf("bench: net-cut seen from a peer: h1's open connection to h3 dies after %.2fs (%s)",
		events.Ended().Sub(cut).Seconds(), lastLine(events.Output()))

	must(t, r.NetRestore(3))
	back := waitFor(t, time.Minute, "h3 reachable from h1 again", func() (bool, string) {
		out, err := r.Exec(1, "ping", "-c1", "-W1", r.Addr(3))
		return err == nil, out
	})
	t.Logf("bench: net-restore: h1 reaches h3 again after %.2fs", back.Seconds())
	_, err = r.Exec(1, "virsh", "-c", r.TCPURI(3), "version")
	must(t, err)
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(l[len(l)-1])
}

func TestRootNamespaceGuard(t *testing.T) {
	r := rig.Up(t)
	must(t, r.CheckGuard())
	w, err := r.WatchLeaks()
	must(t, err)
	defer w.Stop()

	// link off: every address of the subnet fails at once from the root namespace
	for addr, res := range r.ProbeSubnet(16509, 2*time.Second) {
		if res != "unreachable" {
			t.Errorf("root namespace -> %s:16509 without the root link: %s, want unreachable", addr, res)
		}
	}
	if out, err := run("virsh", "-c", r.TCPURI(1), "version"); err == nil || !strings.Contains(out, "No route to host") {
		t.Errorf("qemu+tcp:// from the root namespace without the root link: %v %s", err, out)
	}

	// link on: the hosts' addresses (only those) are reachable, both ways
	root, err := r.RootLink()
	must(t, err)
	must(t, r.CheckGuard())
	// the same capture on the root link's veth must see the rig traffic below: it works
	control, err := r.Watch(r.Prefix + "-r")
	must(t, err)
	defer control.Stop()
	exe, err := os.Executable()
	must(t, err)
	_, err = r.Start(1, "env", "RIG_TEST_HELPER=http:"+r.Addr(1)+":8080", exe)
	must(t, err)
	var body string
	waitFor(t, time.Minute, "the HTTP service in h1 from the root namespace", func() (bool, string) {
		// never through a proxy: the request would leave the machine
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
		resp, err := c.Get("http://" + r.Addr(1) + ":8080/")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return true, ""
	})
	if body != "hello from h1" {
		t.Errorf("root namespace -> h1: %q", body)
	}
	l, err := net.Listen("tcp", root+":0")
	must(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello from the root namespace") })}
	go srv.Serve(l)
	defer srv.Close()
	for _, h := range r.Hosts() {
		out, err := r.Exec(h, "curl", "--noproxy", "*", "-sS", "-m", "10", "http://"+l.Addr().String()+"/")
		if err != nil || out != "hello from the root namespace" {
			t.Errorf("%s -> root namespace (%s): %q %v", h, l.Addr(), out, err)
		}
	}
	if out, err := run("virsh", "-c", r.TCPURI(2), "hostname"); err != nil || strings.TrimSpace(out) != "h2" {
		t.Errorf("qemu+tcp:// to h2 from the root namespace over the root link: %q %v", out, err)
	}
	for addr, res := range r.ProbeSubnet(16509, 2*time.Second) {
		want := "unreachable"
		switch {
		case addr == root:
			if res == "connected" { // something of the machine's listens on *:16509
				res = "refused"
			}
			want = "refused"
		case slices.ContainsFunc(r.Hosts(), func(h rig.Host) bool { return r.Addr(h) == addr }):
			want = "connected"
		}
		if res != want {
			t.Errorf("root namespace -> %s:16509 with the root link: %s, want %s", addr, res, want)
		}
	}

	seen, _ := control.Stop()
	if len(seen) == 0 {
		t.Errorf("the capture saw no rig traffic on the root link's veth: it does not work")
	}

	// link off again: back to unreachable
	must(t, r.RootLinkOff())
	must(t, r.CheckGuard())
	for addr, res := range r.ProbeSubnet(16509, 2*time.Second) {
		if res != "unreachable" {
			t.Errorf("root namespace -> %s:16509 after the root link: %s, want unreachable", addr, res)
		}
	}

	leaks, frames := w.Stop()
	t.Logf("watched %v: %d frames, %d with a rig address (and %d rig frames on the root link's veth)", w.Devices(), frames, len(leaks), len(seen))
	for _, l := range leaks {
		t.Errorf("rig traffic on a default-route interface: %s", l)
	}
}

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// TestCheckGuardCatchesLeaks runs rig.sh check-guard in a scratch network namespace that
// stands in for a root namespace (its own "eth0" with a default route to a scratch gateway):
// the check must fail without the unreachable route and with a route that leaks one address,
// and pass with the guard. Nothing here touches the machine's own routes.
func TestCheckGuardCatchesLeaks(t *testing.T) {
	r := rig.Up(t)
	root, gw := r.Prefix+"-gt-root", r.Prefix+"-gt-gw"
	ip := func(args ...string) {
		t.Helper()
		if out, err := run("ip", args...); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		_, _ = run("ip", "netns", "del", root)
		_, _ = run("ip", "netns", "del", gw)
	})
	ip("netns", "add", root)
	ip("netns", "add", gw)
	ip("-n", root, "link", "add", "eth0", "type", "veth", "peer", "name", "gw0", "netns", gw)
	ip("-n", gw, "addr", "add", "192.0.2.1/24", "dev", "gw0")
	ip("-n", gw, "link", "set", "gw0", "up")
	ip("-n", root, "addr", "add", "192.0.2.2/24", "dev", "eth0")
	ip("-n", root, "link", "set", "eth0", "up")
	ip("-n", root, "route", "add", "default", "via", "192.0.2.1")
	check := func() (string, error) {
		cmd := exec.Command("ip", "netns", "exec", root, r.Script(), "check-guard")
		cmd.Env = append(os.Environ(), "RIG_NET="+r.Net, "RIG_PREFIX="+r.Prefix+"x", "RIG_DIR="+r.Dir+"-gt")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := check(); err == nil || !strings.Contains(out, "routes "+r.Net+".1:") {
		t.Errorf("check-guard without the unreachable route: %v\n%s", err, out)
	}
	ip("-n", root, "route", "add", "unreachable", r.Net+".0/24")
	if out, err := check(); err != nil {
		t.Errorf("check-guard with the unreachable route: %v\n%s", err, out)
	}
	ip("netns", "exec", root, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	ip("-n", root, "route", "add", r.Net+".5/32", "via", "192.0.2.1")
	out, err := check()
	if err == nil || !strings.Contains(out, "routes "+r.Net+".5:") || !strings.Contains(out, "forwards "+r.Net+".5 from eth0") {
		t.Errorf("check-guard with a leaking /32: %v\n%s", err, out)
	}
	if strings.Contains(out, r.Net+".6") {
		t.Errorf("check-guard reports addresses that do not leak:\n%s", out)
	}
}
