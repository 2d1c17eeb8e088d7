// Package rig is the Go side of test/rig/rig.sh: simulated hypervisor hosts on one Linux
// machine for hass's multi-host tests. Each host is a network, mount and UTS namespace (plus
// a cgroup) with its own virtlogd and libvirtd; the hosts share a bridge; each has an IPMI
// BMC (ipmi_sim) whose chassis power-off kills every process of the host at once.
//
// A test package uses it like this:
//
//	func TestMain(m *testing.M) { rig.Main(m) } // one rig for the package, down at the end
//
//	func TestFailover(t *testing.T) {
//		r := rig.Up(t) // skips when the machine cannot run the rig
//		r.DefineGuest(1, "vm-a") ...
//		r.PowerOff(2) ...
//	}
//
// Up skips the test when not root or when the kernel lacks namespaces, unless
// HASS_REQUIRE_RIG=1, when it fails instead. It installs missing Debian packages (rig.sh
// install). Only one process at a time drives a rig (a lock per RIG_PREFIX): a second test
// process waits for it. The RIG_* variables of rig.sh (RIG_DIR, RIG_PREFIX, RIG_NET,
// RIG_HOSTS, ...) are passed through.
//
// Everything a test changes through a *Rig (guests, processes, power, network cuts, the
// root link) is put back when the test ends, so that tests can share one rig.
//
// No rig traffic leaves the machine: the root namespace has an unreachable route for the
// rig's subnet; use URI (a unix socket) from the root namespace and run TCP clients inside a
// host (Exec, Start) or turn the root link on (RootLink).
package rig

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

//go:embed rig.sh
var script []byte

// Host is a rig host, numbered from 1; it prints as h1, h2, ...
type Host int

func (h Host) String() string { return "h" + strconv.Itoa(int(h)) }

// Rig is a handle on the rig for one test: what the test changes through it is undone when
// the test ends.
type Rig struct {
	t testing.TB
	// Dir is the rig's runtime directory (RIG_DIR), Prefix its namespace prefix
	// (RIG_PREFIX), Net the first three octets of its /24 (RIG_NET), N the number of hosts.
	Dir, Prefix, Net string
	N                int
	script           string
}

// package state: one rig per test process
var (
	mu       sync.Mutex
	cfg      *Rig // configuration, script written
	isUp     bool
	managed  bool // Main drives Up/Down
	lockFile *os.File
	before   string // root namespace's routes and rules for the subnet before the first Up
)

// Timeouts: generous, for a loaded 2-core machine.
const (
	upTimeout    = 5 * time.Minute
	cmdTimeout   = 3 * time.Minute
	powerTimeout = 2 * time.Minute
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func required() bool { return os.Getenv("HASS_REQUIRE_RIG") == "1" }

// skipOrFail skips the test (or fails it with HASS_REQUIRE_RIG=1).
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf("rig: "+format, args...)
	if required() {
		t.Fatalf("%s (HASS_REQUIRE_RIG=1)", msg)
	}
	t.Skipf("%s (HASS_REQUIRE_RIG=1 makes this a failure)", msg)
}

// Usable reports why this machine cannot run the rig, or "" when it can.
func Usable() string {
	if os.Geteuid() != 0 {
		return "needs root (network, mount and UTS namespaces, bridges, cgroups)"
	}
	for _, ns := range []string{"net", "mnt", "uts"} {
		if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
			return "the kernel lacks " + ns + " namespaces"
		}
	}
	if out, err := exec.Command("unshare", "--net", "--mount", "--uts", "true").CombinedOutput(); err != nil {
		return fmt.Sprintf("cannot create namespaces (unshare --net --mount --uts: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	return ""
}

// setup checks the machine, takes the rig lock and writes the script; once per process.
func setup(t testing.TB) *Rig {
	t.Helper()
	if cfg != nil {
		return cfg
	}
	if why := Usable(); why != "" {
		skipOrFail(t, "%s", why)
	}
	r := &Rig{
		Dir:    env("RIG_DIR", "/var/tmp/hass-rig"),
		Prefix: env("RIG_PREFIX", "hassrig"),
		Net:    env("RIG_NET", "10.77.0"),
	}
	n, err := strconv.Atoi(env("RIG_HOSTS", "3"))
	if err != nil || n < 1 || n > 99 {
		t.Fatalf("rig: RIG_HOSTS=%q: want 1..99", os.Getenv("RIG_HOSTS"))
	}
	r.N = n
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		t.Fatalf("rig: %v", err)
	}
	// one test process per rig: wait for another one to finish with it
	lock := filepath.Join("/run/lock", "hass-rig-"+r.Prefix+".lock")
	f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(lock)
		t.Logf("rig: %s is in use by pid %s; waiting for it (up to 15 min)", r.Prefix, strings.TrimSpace(string(holder)))
		done := make(chan error, 1)
		go func() { done <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("rig: lock %s: %v", lock, err)
			}
		case <-time.After(15 * time.Minute):
			t.Fatalf("rig: %s still in use after 15 min (set RIG_PREFIX, RIG_DIR and RIG_NET to run another rig)", r.Prefix)
		}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	lockFile = f
	// the script lives in the rig's directory: ipmi_sim calls it back for as long as the rig runs
	r.script = filepath.Join(r.Dir, "rig.sh")
	tmp := r.script + ".tmp"
	if err := os.WriteFile(tmp, script, 0o755); err != nil {
		t.Fatalf("rig: %v", err)
	}
	if err := os.Rename(tmp, r.script); err != nil {
		t.Fatalf("rig: %v", err)
	}
	cfg = r
	return r
}

// Up brings the rig up (once per process; later calls only hand out a new handle) and returns
// a handle bound to t. It skips t when the machine cannot run the rig (fails with
// HASS_REQUIRE_RIG=1). Without Main, the rig goes down when t ends.
func Up(t testing.TB) *Rig {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	c := setup(t)
	r := &Rig{t: t, Dir: c.Dir, Prefix: c.Prefix, Net: c.Net, N: c.N, script: c.script}
	if isUp {
		// Up again (idempotent, 2-3 s): a host an earlier test left powered off or without
		// its libvirtd (hass's own IPMI fence, say, after that test's cleanup) is powered on
		// and ready before this test begins.
		if out, err := r.runTimeout(upTimeout, "up"); err != nil {
			st, _ := r.Run("status")
			t.Fatalf("rig: up again: %v\n%s\n%s", err, out, st)
		}
		return r
	}
	if before == "" {
		if _, err := os.Stat("/run/netns/" + r.Prefix + "-br"); err == nil {
			// we hold the lock: this is what a crashed run (or a hand-made rig) left behind
			t.Logf("rig: %s is up from an earlier run; taking it down first", r.Prefix)
			if out, err := r.Run("down"); err != nil {
				t.Fatalf("rig: down: %v\n%s", err, out)
			}
		}
		before = r.rootNetState()
	}
	if missing, _ := r.Run("install-check"); strings.TrimSpace(missing) != "" {
		if out, err := r.Run("install"); err != nil {
			skipOrFail(t, "cannot install what the rig needs (%s): %v\n%s", strings.TrimSpace(missing), err, out)
		}
	}
	start := time.Now()
	out, err := r.runTimeout(upTimeout, "up")
	if err != nil {
		st, _ := r.Run("status")
		_, _ = r.Run("down")
		t.Fatalf("rig: up: %v\n%s\n%s", err, out, st)
	}
	isUp = true
	t.Logf("rig: up in %.1fs (%d hosts, %s.0/24, %s)", time.Since(start).Seconds(), r.N, r.Net, r.Dir)
	if !managed {
		t.Cleanup(func() {
			if err := Down(); err != nil {
				t.Error(err)
			}
		})
	}
	return r
}

// Down takes the rig down (idempotent) and checks that the root namespace's routes and rules
// for the rig's subnet are back as they were before the first Up.
func Down() error {
	mu.Lock()
	defer mu.Unlock()
	if cfg == nil {
		return nil
	}
	out, err := cfg.runTimeout(upTimeout, "down")
	isUp = false
	if err != nil {
		return fmt.Errorf("rig: down: %v\n%s", err, out)
	}
	if now := cfg.rootNetState(); before != "" && now != before {
		return fmt.Errorf("rig: the root namespace's routes for %s.0/24 differ after down:\nbefore:\n%s\nafter:\n%s", cfg.Net, before, now)
	}
	return nil
}

// Main runs the package's tests with one rig for all of them and takes it down at the end:
// call it from TestMain.
func Main(m *testing.M) {
	managed = true
	code := m.Run()
	mu.Lock()
	wasUsed := cfg != nil
	mu.Unlock()
	if wasUsed {
		if err := Down(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		} else {
			fmt.Printf("rig: down; root namespace routes and rules for %s.0/24 as before\n", cfg.Net)
		}
	}
	os.Exit(code)
}

// rootNetState is what the root namespace routes for the subnet (every table) and its
// policy rules naming the subnet or the root link.
func (r *Rig) rootNetState() string {
	var b strings.Builder
	routes, _ := exec.Command("ip", "-o", "route", "show", "table", "all").Output()
	for _, l := range strings.Split(string(routes), "\n") {
		if strings.Contains(l, r.Net+".") || strings.Contains(l, r.Prefix+"-r") {
			b.WriteString("route: " + strings.TrimSpace(l) + "\n")
		}
	}
	rules, _ := exec.Command("ip", "rule", "show").Output()
	for _, l := range strings.Split(string(rules), "\n") {
		if strings.Contains(l, r.Net+".") || strings.Contains(l, r.Prefix+"-r") || strings.Contains(l, "1860") {
			b.WriteString("rule: " + strings.TrimSpace(l) + "\n")
		}
	}
	if b.Len() == 0 {
		return "(none)\n"
	}
	return b.String()
}

// Run runs rig.sh with args (the escape hatch for everything else it can do) and returns its
// combined output.
func (r *Rig) Run(args ...string) (string, error) { return r.runTimeout(cmdTimeout, args...) }

// output runs rig.sh with args and returns its standard output; its standard error goes
// into the error.
func (r *Rig) output(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.script, args...)
	cmd.Env = r.env()
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s", cmdTimeout)
	}
	if err != nil {
		return string(out), fmt.Errorf("rig.sh %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func (r *Rig) runTimeout(d time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.script, args...)
	cmd.Env = r.env()
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("rig.sh %s: timed out after %s", strings.Join(args, " "), d)
	}
	return string(out), err
}

func (r *Rig) env() []string {
	return append(os.Environ(), "RIG_DIR="+r.Dir, "RIG_PREFIX="+r.Prefix, "RIG_NET="+r.Net,
		"RIG_HOSTS="+strconv.Itoa(r.N))
}

func (r *Rig) logf(format string, args ...any) {
	if r.t != nil {
		r.t.Helper()
		r.t.Logf(format, args...)
	}
}

func (r *Rig) cleanup(f func()) {
	if r.t != nil {
		r.t.Cleanup(f)
	}
}

func (r *Rig) check(h Host) error {
	if h < 1 || int(h) > r.N {
		return fmt.Errorf("rig: no host %d (1..%d)", int(h), r.N)
	}
	return nil
}

// Hosts lists the rig's hosts.
func (r *Rig) Hosts() []Host {
	hs := make([]Host, r.N)
	for i := range hs {
		hs[i] = Host(i + 1)
	}
	return hs
}

// Addr is h's address in the rig (eth0 inside h; libvirtd listens there on 16509).
func (r *Rig) Addr(h Host) string { return fmt.Sprintf("%s.%d", r.Net, int(h)) }

// BMCAddr is the address of h's BMC (IPMI over LAN, UDP 623, in the rig namespace).
func (r *Rig) BMCAddr(h Host) string { return fmt.Sprintf("%s.%d", r.Net, 100+int(h)) }

// RootAddr is the root namespace's address in the rig while the root link is on.
func (r *Rig) RootAddr() string { return r.Net + ".254" }

// URI is h's libvirt URI for use from the root namespace (unix socket).
func (r *Rig) URI(h Host) string {
	return "qemu:///system?socket=" + filepath.Join(r.HostDir(h), "run/libvirt/libvirt-sock")
}

// TCPURI is h's libvirt URI for use inside a host (Exec, Start) or over the root link.
func (r *Rig) TCPURI(h Host) string { return "qemu+tcp://" + r.Addr(h) + "/system" }

// HostDir is h's directory. It is visible at the same path in the root namespace and inside
// every host. A process started with StartBg or Service on h keeps its state in
// HostDir(h)/state/NAME (its working directory) and logs to HostDir(h)/log/NAME.log; both
// survive power-off and power-on (only /run/libvirt is wiped, as a tmpfs would be).
func (r *Rig) HostDir(h Host) string { return filepath.Join(r.Dir, h.String()) }

// StateDir is HostDir(h)/state/name, created if missing.
func (r *Rig) StateDir(h Host, name string) string {
	d := filepath.Join(r.HostDir(h), "state", name)
	_ = os.MkdirAll(d, 0o755)
	return d
}

// LogFile is where StartBg/Service write name's output.
func (r *Rig) LogFile(h Host, name string) string {
	return filepath.Join(r.HostDir(h), "log", name+".log")
}

// Exec runs a command on h (its namespaces and cgroup) and returns its combined output. It
// fails when h is powered off.
func (r *Rig) Exec(h Host, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return r.ExecContext(ctx, h, args...)
}

// ExecContext is Exec with a context.
func (r *Rig) ExecContext(ctx context.Context, h Host, args ...string) (string, error) {
	if err := r.check(h); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, r.script, append([]string{"exec", strconv.Itoa(int(h))}, args...)...)
	cmd.Env = r.env()
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Virsh runs virsh against h's libvirtd from the root namespace (unix socket).
func (r *Rig) Virsh(h Host, args ...string) (string, error) {
	if err := r.check(h); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "virsh", append([]string{"-c", r.URI(h)}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("virsh %s on %s: %v: %s", strings.Join(args, " "), h, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// Proc is a process started with Start inside a host.
type Proc struct {
	Host  Host
	Pid   int
	cmd   *exec.Cmd
	out   *syncBuffer
	done  chan struct{}
	err   error
	ended time.Time
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Start starts a long-lived process on h, a child of the test process (stdout and stderr
// are kept: Output). It runs in h's namespaces and cgroup, so h's power-off kills it with
// everything else on h. It is killed when the test ends.
func (r *Rig) Start(h Host, args ...string) (*Proc, error) {
	if err := r.check(h); err != nil {
		return nil, err
	}
	if len(args) == 0 {
		return nil, errors.New("rig: Start: no command")
	}
	p := &Proc{Host: h, out: &syncBuffer{}, done: make(chan struct{})}
	// rig.sh exec joins h's cgroup and namespaces and execs the command: same PID
	p.cmd = exec.Command(r.script, append([]string{"exec", strconv.Itoa(int(h))}, args...)...)
	p.cmd.Env = r.env()
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	p.Pid = p.cmd.Process.Pid
	go func() { p.err = p.cmd.Wait(); p.ended = time.Now(); close(p.done) }()
	// it is in h once its network namespace is h's (or it has already ended)
	nsIno := nsInode("/run/netns/" + r.Prefix + "-" + h.String())
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if ino := nsInode(fmt.Sprintf("/proc/%d/ns/net", p.Pid)); ino != 0 && ino == nsIno {
			break
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("rig: %s on %s ended at once: %v: %s", args[0], h, p.err, p.out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	r.cleanup(func() { p.Kill() })
	return p, nil
}

func nsInode(path string) uint64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits up to d for the process to end and returns how it ended (an *exec.ExitError,
// e.g. "signal: killed" after a power-off).
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("rig: pid %d on %s still runs after %s", p.Pid, p.Host, d)
	}
}

// Err is how the process ended (nil while it runs or when it exited with 0).
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Ended is when the process ended (zero while it runs).
func (p *Proc) Ended() time.Time {
	select {
	case <-p.done:
		return p.ended
	default:
		return time.Time{}
	}
}

// Output is what the process wrote so far (stdout and stderr).
func (p *Proc) Output() string { return p.out.String() }

// Kill kills the process (SIGKILL) and waits for it.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	_ = p.Wait(30 * time.Second)
}

// StartBg starts a detached process on h through rig.sh exec-bg (it outlives the test
// process, but not h's power-off): working directory StateDir(h, name), output to
// LogFile(h, name). It returns the PID. It is stopped when the test ends.
func (r *Rig) StartBg(h Host, name string, args ...string) (int, error) {
	return r.startBg("exec-bg", h, name, args...)
}

// Service is StartBg plus: rig.sh starts it again every time h powers on (like a boot
// service; the hass agent will be one). It is removed and stopped when the test ends.
func (r *Rig) Service(h Host, name string, args ...string) (int, error) {
	return r.startBg("service", h, name, args...)
}

func (r *Rig) startBg(how string, h Host, name string, args ...string) (int, error) {
	if err := r.check(h); err != nil {
		return 0, err
	}
	out, err := r.output(append([]string{how, strconv.Itoa(int(h)), name}, args...)...)
	if err != nil {
		return 0, fmt.Errorf("rig: %s %s on %s: %v", how, name, h, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return 0, fmt.Errorf("rig: %s %s on %s: no pid in %q", how, name, h, out)
	}
	r.cleanup(func() {
		if how == "service" {
			_, _ = r.Run("service-rm", strconv.Itoa(int(h)), name)
		} else {
			_, _ = r.Run("bg-stop", strconv.Itoa(int(h)), name, "KILL")
		}
	})
	return pid, nil
}

// BgPid is the PID of h's exec-bg process or service name, 0 when it does not run.
func (r *Rig) BgPid(h Host, name string) int {
	out, err := r.output("bg-pid", strconv.Itoa(int(h)), name)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(out))
	return pid
}

// Pids lists every process of h (its namespaces and cgroup), PID to command name.
func (r *Rig) Pids(h Host) (map[int]string, error) {
	if err := r.check(h); err != nil {
		return nil, err
	}
	out, err := r.output("pids", strconv.Itoa(int(h)))
	if err != nil {
		return nil, fmt.Errorf("rig: pids %s: %v", h, err)
	}
	m := map[int]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("rig: pids %s: %q", h, l)
		}
		m[pid] = strings.Join(f[1:], " ")
	}
	return m, nil
}

// IPMI runs ipmitool -I lanplus against h's BMC from the rig namespace (as a fencing agent
// on another host would reach it) and returns its output.
func (r *Rig) IPMI(h Host, args ...string) (string, error) {
	if err := r.check(h); err != nil {
		return "", err
	}
	out, err := r.Run(append([]string{"ipmi", strconv.Itoa(int(h))}, args...)...)
	if err != nil {
		return out, fmt.Errorf("ipmitool %s against %s's BMC: %v: %s", strings.Join(args, " "), h, err, strings.TrimSpace(out))
	}
	return strings.TrimSpace(out), nil
}

// Powered reports h's chassis power as its BMC sees it.
func (r *Rig) Powered(h Host) (bool, error) {
	b, err := os.ReadFile(filepath.Join(r.HostDir(h), "power"))
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "on", nil
}

// PowerOff pulls h's plug through its BMC (IPMI chassis power off) and returns once no
// process of h is left. h is powered on again when the test ends.
func (r *Rig) PowerOff(h Host) error {
	if _, err := r.IPMI(h, "chassis", "power", "off"); err != nil {
		return err
	}
	r.cleanup(func() {
		if on, _ := r.Powered(h); !on {
			if out, err := r.Run("power-on", strconv.Itoa(int(h))); err != nil {
				r.logf("rig: power-on %s at cleanup: %v: %s", h, err, out)
			}
		}
	})
	return r.waitDead(h, powerTimeout)
}

func (r *Rig) waitDead(h Host, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		pids, err := r.Pids(h)
		if err == nil && len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rig: %s still has processes %v %s after power-off", h, pids, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PowerOn powers h on through its BMC and returns once its libvirtd answers.
func (r *Rig) PowerOn(h Host) error {
	if _, err := r.IPMI(h, "chassis", "power", "on"); err != nil {
		return err
	}
	return r.WaitLibvirtd(h, powerTimeout)
}

// WaitLibvirtd waits up to d until h's libvirtd answers.
func (r *Rig) WaitLibvirtd(h Host, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := r.Virsh(h, "version"); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("rig: %s's libvirtd does not answer after %s: %v", h, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// NetCut takes h's switch port down: h keeps running but reaches no one and no one reaches
// it. It is restored when the test ends.
func (r *Rig) NetCut(h Host) error {
	if err := r.check(h); err != nil {
		return err
	}
	if out, err := r.Run("net-cut", strconv.Itoa(int(h))); err != nil {
		return fmt.Errorf("rig: net-cut %s: %v: %s", h, err, out)
	}
	r.cleanup(func() { _ = r.NetRestore(h) })
	return nil
}

// NetRestore brings h's switch port up again (if h is powered).
func (r *Rig) NetRestore(h Host) error {
	if err := r.check(h); err != nil {
		return err
	}
	if out, err := r.Run("net-restore", strconv.Itoa(int(h))); err != nil {
		return fmt.Errorf("rig: net-restore %s: %v: %s", h, err, out)
	}
	return nil
}

// GuestXML is the domain XML of DefineGuest: a 32 MiB diskless guest without devices, like
// test/e2e's. It runs under TCG (type 'qemu'): rig hosts hide /dev/kvm.
func GuestXML(name string) string {
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices><memballoon model='none'/></devices>
</domain>`, name)
}

// DefineGuest defines (does not start) a small diskless guest on h. When the test ends it
// is destroyed and undefined on every host (it may have moved).
func (r *Rig) DefineGuest(h Host, name string) error {
	if err := r.check(h); err != nil {
		return err
	}
	f, err := os.CreateTemp("", "rig-guest-*.xml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(GuestXML(name)); err != nil {
		return err
	}
	f.Close()
	if _, err := r.Virsh(h, "define", f.Name()); err != nil {
		return err
	}
	r.cleanup(func() {
		for _, x := range r.Hosts() {
			if on, _ := r.Powered(x); on {
				_, _ = r.Virsh(x, "destroy", name)
				_, _ = r.Virsh(x, "undefine", name)
			}
		}
	})
	return nil
}

// Migrate live-migrates vm from one host to another (peer to peer over the rig network,
// --persistent --undefinesource: the definition moves with it).
func (r *Rig) Migrate(vm string, from, to Host) error {
	if err := r.check(to); err != nil {
		return err
	}
	_, err := r.Virsh(from, "migrate", "--live", "--p2p", "--persistent", "--undefinesource", vm, r.TCPURI(to))
	return err
}

// DomState is vm's state on h as virsh domstate prints it ("running", "shut off", ...).
func (r *Rig) DomState(h Host, vm string) (string, error) { return r.Virsh(h, "domstate", vm) }

// QemuPID is the PID of vm's QEMU on h, 0 when it has none.
func (r *Rig) QemuPID(h Host, vm string) int {
	b, err := os.ReadFile(filepath.Join(r.HostDir(h), "run/libvirt/qemu", vm+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid == 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// RootLink turns the root link on: the root namespace gets RootAddr() on a veth into the
// rig's bridge and can reach the hosts' addresses (and they it); everything else in the
// subnet stays unreachable and nothing is forwarded. It returns RootAddr(). The link goes
// off again when the test ends, if it was off before.
func (r *Rig) RootLink() (string, error) {
	wasOn := r.rootLinkOn()
	if out, err := r.Run("root-link", "on"); err != nil {
		return "", fmt.Errorf("rig: root-link on: %v: %s", err, out)
	}
	if !wasOn {
		r.cleanup(func() { _ = r.RootLinkOff() })
	}
	return r.RootAddr(), nil
}

func (r *Rig) rootLinkOn() bool {
	_, err := os.Stat("/sys/class/net/" + r.Prefix + "-r")
	return err == nil
}

// RootLinkOff turns the root link off: the whole subnet is unreachable from the root
// namespace again.
func (r *Rig) RootLinkOff() error {
	if out, err := r.Run("root-link", "off"); err != nil {
		return fmt.Errorf("rig: root-link off: %v: %s", err, out)
	}
	return nil
}

// CheckGuard verifies the root namespace's routing decisions for every address of the rig's
// subnet (rig.sh check-guard): nothing is routed out of the machine.
func (r *Rig) CheckGuard() error {
	if out, err := r.Run("check-guard"); err != nil {
		return fmt.Errorf("rig: %v: %s", err, out)
	}
	return nil
}

// Script is the path of the rig.sh that this rig runs.
func (r *Rig) Script() string { return r.script }

// Status is rig.sh status.
func (r *Rig) Status() string {
	out, _ := r.Run("status")
	return out
}
