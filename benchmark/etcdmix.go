package benchmark

// The controller driving a fleet of simulated agents through a real etcd, in three
// processes so that each one's CPU is its own: etcd (the store hass embeds, in a child
// process), the agents (the fleet, in a second child), and the controller (this process).
// The agents renew their leases every second and list their domains every 30 s; VMs crash
// and are restarted; users operate VMs through the controller's API service; one host loses
// its power a few seconds in and its VMs are started elsewhere. The figures: inputs per
// second through the store, a crash's way to its restart order (through etcd twice), each
// process's share of the CPU, the controller's memory per VM.
//
// The child processes are this same executable, told their role by the environment:
// `hass` (cmd/hass calls Child first) and the benchmark's test binary (TestMain does).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/controller"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/store"
)

// EtcdShape is the cluster and the load of EtcdMix.
type EtcdShape struct {
	Hosts, VMs    int
	Window        time.Duration // how long the load runs (wall time)
	CrashesPerSec float64       // VMs crashing (each restarted by the controller)
	OpsPerSec     float64       // users' operations (stop, start, reboot) through the API service
	LoseHostAfter time.Duration // one host loses its power this long into the window
}

// The shapes `go test -bench` and `hass bench --store` measure.
var (
	SmallEtcd = EtcdShape{Hosts: 20, VMs: 1000, Window: 30 * time.Second, CrashesPerSec: 2, OpsPerSec: 4, LoseHostAfter: 3 * time.Second}
	LargeEtcd = EtcdShape{Hosts: 1000, VMs: 50000, Window: 30 * time.Second, CrashesPerSec: 2, OpsPerSec: 4, LoseHostAfter: 3 * time.Second}
)

func (s EtcdShape) String() string {
	return fmt.Sprintf("%s hosts, %s VMs, %s", commas(s.Hosts), commas(s.VMs), s.Window)
}

// EtcdStats is what EtcdMix measured.
type EtcdStats struct {
	Shape EtcdShape
	// The agents' side, over the window.
	Reports, Renewals, Orders, Failures int64
	Crashes, Restarted                  int
	// Crash: from a VM's crash (the hypervisor's event reaching its agent) to the order to
	// restart it reaching that agent: the agent's report written to etcd, read by the
	// controller's watch, decided, recorded in etcd, read by the agent's watch.
	CrashP50, CrashP99, CrashMax time.Duration
	WriteP50, WriteP99           time.Duration // an agent's report written into its inbox
	// The lost host: its VMs, those ordered started elsewhere within the window, and when
	// the last of them was, from the host's last lease renewal.
	LostVMs, Evacuated int
	EvacuatedAfter     time.Duration
	// The controller's side.
	Ops, Refused         int
	RecordP50, RecordP99 time.Duration // a decision with orders recorded in etcd
	// CPU of each process over the window, and the controller's heap per protected VM
	// (its Go heap in use after taking over, less before).
	EtcdCPU, AgentsCPU, ControllerCPU time.Duration
	HeapPerVM                         float64
}

// agentsReport is what the agents' process sends back.
type agentsReport struct {
	Reports, Renewals, Orders, Failures int64
	Crashes, Restarted                  int
	CrashNs, WriteNs                    []int64
	LostVMs, Evacuated                  int
	EvacuatedAfterNs                    int64
}

const (
	childEnv    = "HASS_BENCH_CHILD"
	childDirEnv = "HASS_BENCH_DIR"
	childArgEnv = "HASS_BENCH_ARG"
)

// Child runs this process as one of EtcdMix's child processes when the environment says so,
// and then exits; it returns false at once otherwise. Call it first thing in main (and in
// a test binary's TestMain).
func Child() bool {
	role := os.Getenv(childEnv)
	if role == "" {
		return false
	}
	var err error
	switch role {
	case "etcd":
		err = etcdChild(os.Getenv(childDirEnv))
	case "agents":
		err = agentsChild(os.Getenv(childDirEnv), os.Getenv(childArgEnv))
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchmark child %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// etcdChild serves an embedded etcd in dir until its stdin closes.
func etcdChild(dir string) error {
	ctx := context.Background()
	st, err := store.OpenEmbeddedConfig(ctx, store.EmbeddedConfig{Dir: dir, MinFree: -1})
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Printf("ready %s\n", st.Endpoints()[0])
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// child is a running child process, with its stdin and stdout.
type child struct {
	role string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
}

func startChild(role, dir, arg string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+role, childDirEnv+"="+dir, childArgEnv+"="+arg)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the %s process: %w", role, err)
	}
	return &child{role: role, cmd: cmd, in: in, out: bufio.NewReader(out)}, nil
}

// line reads the child's next line of output.
func (c *child) line() (string, error) {
	s, err := c.out.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("the %s process: %w", c.role, err)
	}
	return strings.TrimSpace(s), nil
}

func (c *child) stop() {
	c.in.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// EtcdMix runs the controller, a fleet of s.Hosts simulated agents and an etcd in three
// processes (the store in a temporary directory) under s's load, and measures it.
func EtcdMix(ctx context.Context, s EtcdShape) (EtcdStats, error) {
	stats := EtcdStats{Shape: s}
	dir, err := TempDir()
	if err != nil {
		return stats, err
	}
	defer os.RemoveAll(dir)
	etcd, err := startChild("etcd", dir, "")
	if err != nil {
		return stats, err
	}
	defer etcd.stop()
	ready, err := etcd.line()
	if err != nil {
		return stats, err
	}
	endpoint, ok := strings.CutPrefix(ready, "ready ")
	if !ok {
		return stats, fmt.Errorf("the etcd process said %q", ready)
	}
	arg, _ := json.Marshal(s)
	agents, err := startChild("agents", endpoint, string(arg))
	if err != nil {
		return stats, err
	}
	defer agents.stop()
	if l, err := agents.line(); err != nil || l != "ready" {
		return stats, fmt.Errorf("the agents' process: %q, %v", l, err)
	}

	st, err := store.Connect(ctx, []string{endpoint}, slog.New(slog.DiscardHandler))
	if err != nil {
		return stats, err
	}
	defer st.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	logs := &logTap{}
	c, err := controller.New(controller.Config{Name: "bench", Store: st, Logger: slog.New(logs)})
	if err != nil {
		return stats, err
	}
	cctx, stopCtl := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	defer func() { stopCtl(); <-done }()
	if err := settle(ctx, st, c); err != nil {
		return stats, fmt.Errorf("%w (%s)", err, logs.errors())
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	stats.HeapPerVM = (float64(after.HeapInuse) - float64(before.HeapInuse)) / float64(s.VMs)

	cpu0 := [3]time.Duration{processCPU()}
	cpu0[1], _ = procCPU(etcd.cmd.Process.Pid)
	cpu0[2], _ = procCPU(agents.cmd.Process.Pid)
	logs.keepRecords()
	if _, err := io.WriteString(agents.in, "go\n"); err != nil {
		return stats, err
	}
	stats.Ops, stats.Refused = userOps(ctx, c, s)
	stats.ControllerCPU = processCPU() - cpu0[0]
	e1, err1 := procCPU(etcd.cmd.Process.Pid)
	a1, err2 := procCPU(agents.cmd.Process.Pid)
	if err := errors.Join(err1, err2); err != nil {
		return stats, err
	}
	stats.EtcdCPU, stats.AgentsCPU = e1-cpu0[1], a1-cpu0[2]
	l, err := agents.line()
	if err != nil {
		return stats, err
	}
	var rep agentsReport
	if err := json.Unmarshal([]byte(l), &rep); err != nil {
		return stats, fmt.Errorf("the agents' report %q: %w", l, err)
	}
	stats.Reports, stats.Renewals, stats.Orders, stats.Failures = rep.Reports, rep.Renewals, rep.Orders, rep.Failures
	stats.Crashes, stats.Restarted = rep.Crashes, rep.Restarted
	stats.CrashP50, stats.CrashP99, stats.CrashMax = pcts(rep.CrashNs)
	stats.WriteP50, stats.WriteP99, _ = pcts(rep.WriteNs)
	stats.LostVMs, stats.Evacuated, stats.EvacuatedAfter = rep.LostVMs, rep.Evacuated, time.Duration(rep.EvacuatedAfterNs)
	stats.RecordP50, stats.RecordP99, _ = pcts(logs.recorded())
	return stats, nil
}

// settle waits until the controller leads and has consumed what the agents wrote at its
// takeover (their answers to its resync).
func settle(ctx context.Context, st *store.Store, c *controller.Controller) error {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if c.IsLeading() {
			r, err := st.Client().Get(ctx, store.AgentsPrefix+"inbox/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err == nil && r.Count == 0 {
				return nil
			}
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
	return errors.New("the controller did not take over and consume the agents' lists within 3 minutes")
}

// userOps operates random VMs through the controller's API service for the window: stops
// (a stopped VM is started again by the next operation on it) and reboots. The lost host's
// VMs are left alone.
func userOps(ctx context.Context, c *controller.Controller, s EtcdShape) (ops, refused int) {
	rng := rand.New(rand.NewPCG(2, 3))
	stopped := map[int]bool{}
	every := time.Duration(float64(time.Second) / s.OpsPerSec)
	t := time.NewTicker(every)
	defer t.Stop()
	end := time.After(s.Window)
	for {
		select {
		case <-ctx.Done():
			return
		case <-end:
			return
		case <-t.C:
		}
		v := rng.IntN(s.VMs)
		if v%s.Hosts == lostHost {
			continue
		}
		op := "reboot"
		switch {
		case stopped[v]:
			op = "start"
			delete(stopped, v)
		case rng.IntN(2) == 0:
			op = "stop"
			stopped[v] = true
		}
		ops++
		if _, err := c.Operate(ctx, string(vmID(v)), api.OperationRequest{Op: op}); err != nil {
			refused++
		}
	}
}

// lostHost is the index of the host that loses its power.
const lostHost = 1

// agentsChild runs the fleet against the etcd at endpoint under the load arg (an
// EtcdShape, JSON): it fills the store, says "ready", waits for "go", runs the load for the
// window and writes its agentsReport.
func agentsChild(endpoint, arg string) error {
	var s EtcdShape
	if err := json.Unmarshal([]byte(arg), &s); err != nil {
		return fmt.Errorf("shape %q: %w", arg, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Connect(ctx, []string{endpoint}, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer st.Close()
	var (
		mu      sync.Mutex
		writes  []int64
		crashAt = map[string]time.Time{}
		crashNs []int64
		lost    = map[string]bool{}
		lostAt  time.Time
		evac    int
		evacAt  time.Time
	)
	f, _, err := fillCluster(ctx, st, s.Hosts, s.VMs, slog.New(slog.DiscardHandler), func(f *fleet) {
		f.resyncEvery = 30 * time.Second
		f.onWrite = func(d time.Duration) {
			mu.Lock()
			writes = append(writes, int64(d))
			mu.Unlock()
		}
		f.onOrder = func(h *fhost, a store.Action, at time.Time) {
			if a.Kind != engine.ActStart.String() {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if t, ok := crashAt[a.VM]; ok && a.Host == h.name {
				crashNs = append(crashNs, int64(at.Sub(t)))
				delete(crashAt, a.VM)
			}
			if lost[a.VM] && a.Host != string(hostID(lostHost)) {
				delete(lost, a.VM)
				evac++
				evacAt = at
			}
		}
	})
	if err != nil {
		return err
	}
	defer func() { cancel(); f.wait() }()
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if l, err := in.ReadString('\n'); err != nil || strings.TrimSpace(l) != "go" {
		return fmt.Errorf("waiting for go: %q, %v", l, err)
	}
	r0, n0, o0, f0 := f.reports.Load(), f.renewals.Load(), f.orders.Load(), f.failures.Load()
	mu.Lock()
	writes = writes[:0]
	mu.Unlock()

	rng := rand.New(rand.NewPCG(4, 5))
	crash := time.NewTicker(time.Duration(float64(time.Second) / s.CrashesPerSec))
	defer crash.Stop()
	lose := time.After(s.LoseHostAfter)
	end := time.After(s.Window)
	crashes, crashed := 0, map[string]bool{}
loop:
	for {
		select {
		case <-end:
			break loop
		case <-lose:
			h := f.hosts[lostHost]
			h.mu.Lock()
			mu.Lock()
			for n := range h.doms {
				lost[n] = true
			}
			h.dead.Store(true)
			lostAt = h.renewedAt
			mu.Unlock()
			h.mu.Unlock()
		case <-crash.C:
			hi := rng.IntN(len(f.hosts))
			if hi == lostHost {
				continue
			}
			h := f.hosts[hi]
			h.mu.Lock()
			names := make([]string, 0, len(h.doms))
			for n := range h.doms {
				names = append(names, n)
			}
			h.mu.Unlock()
			if len(names) == 0 {
				continue
			}
			slices.Sort(names)
			n := names[rng.IntN(len(names))]
			if crashed[n] {
				continue // a second crash is restarted after the policy's backoff, not at once
			}
			now := time.Now()
			if h.crash(n) {
				crashes++
				crashed[n] = true
				mu.Lock()
				crashAt[n] = now
				mu.Unlock()
			}
		}
	}
	mu.Lock()
	rep := agentsReport{Reports: f.reports.Load() - r0, Renewals: f.renewals.Load() - n0, Orders: f.orders.Load() - o0,
		Failures: f.failures.Load() - f0, Crashes: crashes, Restarted: len(crashNs), CrashNs: crashNs, WriteNs: writes,
		LostVMs: len(lost) + evac, Evacuated: evac}
	if evac > 0 && !lostAt.IsZero() {
		rep.EvacuatedAfterNs = int64(evacAt.Sub(lostAt))
	}
	mu.Unlock()
	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
	_, _ = io.Copy(io.Discard, in)
	return nil
}

// pcts returns the median, the 99th percentile and the largest of ns.
func pcts(ns []int64) (p50, p99, top time.Duration) {
	if len(ns) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ns)
	at := func(p float64) time.Duration {
		return time.Duration(ns[max(0, min(len(ns)-1, int(p*float64(len(ns))+0.5)-1))])
	}
	return at(0.5), at(0.99), time.Duration(ns[len(ns)-1])
}

// EtcdRows measures s with EtcdMix and returns its rows.
func EtcdRows(ctx context.Context, s EtcdShape) ([]Row, error) {
	st, err := EtcdMix(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("controller and agents through etcd (%s): %w", s, err)
	}
	return st.Rows(), nil
}

// Rows are the figures of st as `hass bench` prints them.
func (st EtcdStats) Rows() []Row {
	s := st.Shape
	secs := s.Window.Seconds()
	what := fmt.Sprintf("%s hosts, %s VMs", commas(s.Hosts), commas(s.VMs))
	total := st.EtcdCPU + st.AgentsCPU + st.ControllerCPU
	share := func(d time.Duration) string { return pct(d.Seconds() / max(total.Seconds(), 1e-9)) }
	return []Row{
		{"controller + " + commas(s.Hosts) + " agents through a real etcd (" + what + ", " + s.Window.String() + "): reports into the store per second",
			fmt.Sprintf("%.0f (+ %.0f lease renewals/s, %.0f orders/s; %.1f crashes/s, %.1f user ops/s)", float64(st.Reports)/secs,
				float64(st.Renewals)/secs, float64(st.Orders)/secs, s.CrashesPerSec, s.OpsPerSec), ""},
		{"… crash event → restart order at the agent, through etcd twice, p50 / p99 / max",
			fmt.Sprintf("%s / %s / %s (%d of %d crashes)", durStr(st.CrashP50), durStr(st.CrashP99), durStr(st.CrashMax), st.Restarted, st.Crashes), ""},
		{"… of which etcd writes: an agent's report, p50 / p99; a decision with orders, p50 / p99",
			fmt.Sprintf("%s / %s; %s / %s", durStr(st.WriteP50), durStr(st.WriteP99), durStr(st.RecordP50), durStr(st.RecordP99)), ""},
		{"… CPU: etcd / agents / controller (share of the three processes' CPU)",
			fmt.Sprintf("%s / %s / %s of a core (%s / %s / %s)", pct(st.EtcdCPU.Seconds()/secs), pct(st.AgentsCPU.Seconds()/secs),
				pct(st.ControllerCPU.Seconds()/secs), share(st.EtcdCPU), share(st.AgentsCPU), share(st.ControllerCPU)), ""},
		{"… controller CPU per protected VM (per second), memory per protected VM (heap after its takeover)",
			fmt.Sprintf("%s, %s B", durStr(time.Duration(float64(st.ControllerCPU)/secs/float64(s.VMs))), commas(int(st.HeapPerVM+0.5))), ""},
		{"… host lost: its VMs ordered started elsewhere, from its last renewal",
			fmt.Sprintf("%d of %d, the last after %s", st.Evacuated, st.LostVMs, durStr(st.EvacuatedAfter)), ""},
	}
}
