package benchmark

// A new leader's takeover through a real etcd: the store is filled as a running cluster has
// it, then a real controller campaigns, takes over (loads its state, restores its engine,
// reads the agents' keys, asks every agent for a resync), the fleet's agents answer with
// their complete lists, and the clock stops when the controller has decided its first
// order: the restart of a VM that crashed while nobody led, which only the last host's list
// shows.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hassproject/hass/controller"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/store"
)

// TakeoverStats is what Takeover measured. Every duration but Fill is wall time.
type TakeoverStats struct {
	Hosts, VMs int
	// Fill is how long filling the store took (not part of the figure); StoreKeys how many
	// keys it then held.
	Fill      time.Duration
	StoreKeys int
	// Elected: from the controller's start to its election; Takeover: the controller's
	// takeover as it logs it (load its state, restore the engine, read the agents' keys,
	// step every host's lease and the waiting reports); Resync: from the resync request to
	// the last host's list written; Decision: from then to the order decided.
	Elected, Takeover, Resync, Decision time.Duration
	// FirstDecision: from the controller's start to its first order decided (the figure);
	// AtAgent: to the order reaching its host's agent.
	FirstDecision, AtAgent time.Duration
	// Load and Restore are the takeover's two big parts measured apart, after it, the way
	// it does them: the store reads (ID floor, host states, the agents' keys, the VM
	// records, opt-outs, pending orders) and the engine's restore from the records.
	Load, Restore time.Duration
}

// Takeover fills a store in dir with a running cluster of hosts and vms (50 VMs per host
// as in the engine benchmarks) and measures a new leader's takeover of it; see TakeoverStats.
func Takeover(ctx context.Context, dir string, hosts, vms int) (TakeoverStats, error) {
	ts := TakeoverStats{Hosts: hosts, VMs: vms}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := store.OpenEmbeddedConfig(ctx, store.EmbeddedConfig{Dir: dir, MinFree: -1})
	if err != nil {
		return ts, err
	}
	defer st.Close()
	quiet := slog.New(slog.DiscardHandler)
	fillStart := time.Now()
	runCtx, stopFleet := context.WithCancel(ctx)
	f, crashed, err := fillCluster(runCtx, st, hosts, vms, quiet, nil)
	defer func() { stopFleet(); f.wait() }()
	if err != nil {
		return ts, fmt.Errorf("fill the store: %w", err)
	}
	ts.Fill = time.Since(fillStart)
	if ts.StoreKeys, err = countKeys(ctx, st); err != nil {
		return ts, err
	}

	// The last host answers the resync once every other host's list is written.
	last := f.byName[string(crashed.host)]
	gate := make(chan struct{})
	last.resyncGate = gate
	var written atomic.Int64
	var lastOthers atomic.Int64 // when the others' lists were all written (unix nanos)
	var gateOnce sync.Once
	f.onSnapshot = func(h *fhost) {
		if h != last && written.Add(1) == int64(hosts-1) {
			lastOthers.Store(time.Now().UnixNano())
			gateOnce.Do(func() { close(gate) })
		}
	}
	if hosts == 1 {
		close(gate)
	}
	type decided struct{ at, decided time.Time }
	first := make(chan decided, 1)
	f.onOrder = func(h *fhost, a store.Action, at time.Time) {
		if engine.VMID(a.VM) == crashed.vm && a.Kind == engine.ActStart.String() {
			select {
			case first <- decided{at: at, decided: a.At}:
			default:
			}
		}
	}

	logs := &logTap{}
	c, err := controller.New(controller.Config{Name: "bench", Store: st, Logger: slog.New(logs), LeaseTTL: f.leaseTTL})
	if err != nil {
		return ts, err
	}
	start := time.Now()
	cctx, stopCtl := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	defer func() { stopCtl(); <-done }()
	var d decided
	select {
	case d = <-first:
	case err := <-done:
		return ts, fmt.Errorf("the controller stopped: %w", err)
	case <-time.After(2 * time.Minute):
		return ts, fmt.Errorf("no decision 2 minutes after the start (leading: %v, %d of %d lists written): %s",
			c.IsLeading(), written.Load(), hosts-1, logs.errors())
	case <-ctx.Done():
		return ts, ctx.Err()
	}
	ts.FirstDecision, ts.AtAgent = d.decided.Sub(start), d.at.Sub(start)
	elected, leading, takeover := logs.times()
	ts.Elected, ts.Takeover = elected.Sub(start), takeover
	if n := lastOthers.Load(); n != 0 && !leading.IsZero() {
		ts.Resync = time.Unix(0, n).Sub(leading)
		ts.Decision = d.decided.Sub(time.Unix(0, n))
	}
	stopCtl()
	<-done
	done <- nil // for the deferred receive

	if ts.Load, ts.Restore, err = loadAndRestore(ctx, st); err != nil {
		return ts, err
	}
	return ts, nil
}

// crashedVM is the VM whose crash the takeover must find.
type crashedVM struct {
	vm   engine.VMID
	host engine.HostID
}

// fillCluster writes what a running cluster of hosts and vms keeps in etcd: every host's
// record, lease (with its liveness key), inventory and stored state, every VM's record and
// domain XML, the ID floor. The hosts' agents run from the moment they joined (until ctx
// ends): they renew their leases, and answer orders and resync requests. One VM is down (it crashed while no
// controller led, and its agent's report of it was lost): only a resync shows it.
//
// setup, if not nil, is called with the fleet before its agents join.
func fillCluster(ctx context.Context, st *store.Store, hosts, vms int, log *slog.Logger, setup func(*fleet)) (*fleet, crashedVM, error) {
	s := Shape{VMs: vms, Hosts: hosts, Window: time.Minute}
	e := s.Cluster()
	f := newFleet(st, log)
	names := make([][]string, hosts)
	for v := range vms {
		names[v%hosts] = append(names[v%hosts], string(vmID(v)))
	}
	for h := range hosts {
		f.add(string(hostID(h)), names[h], vmMemMiB*1024)
	}
	crashed := crashedVM{vm: vmID(hosts - 1), host: hostID(hosts - 1)}
	d := f.byName[string(crashed.host)].doms[string(crashed.vm)]
	d.state, d.reason = 5, 6 // shutoff, failed (libvirt's numbers)
	if setup != nil {
		setup(f)
	}

	if err := f.join(ctx); err != nil {
		return f, crashed, err
	}
	f.run(ctx)
	var b store.Batch
	for v := range vms {
		st, _ := e.State(vmID(v))
		b.PutVMs = append(b.PutVMs, controller.ToRecord(st))
	}
	for _, h := range e.Hosts() {
		b.PutHostStates = append(b.PutHostStates, store.HostState{Host: string(h.Host), MemMiB: h.MemMiB, Fencing: h.Fencing,
			State: h.State, LostAt: h.LostAt.UTC(), LastSeen: h.LastSeen.UTC()})
	}
	b.IDFloor = e.LastID() + 1000
	// In parts: each store call has its own timeout (15 s), which a busy machine could
	// exceed for 50,000 records at once.
	for len(b.PutVMs) > 0 {
		n := min(len(b.PutVMs), 1000)
		part := b
		part.PutVMs, b.PutVMs, b.PutHostStates, b.IDFloor = b.PutVMs[:n], b.PutVMs[n:], nil, 0
		if _, err := st.Record(ctx, part); err != nil {
			return f, crashed, err
		}
	}
	if err := parallel(ctx, f.hosts, 32, func(ctx context.Context, h *fhost) error {
		inv := store.Inventory{Host: h.name, Seq: 1, At: time.Now().UTC(), Libvirt: "connected"}
		for _, n := range names[hostIndex(h.name)] {
			d := h.doms[n]
			inv.Domains = append(inv.Domains, store.DomainRow{Name: n, State: d.state, Reason: d.reason, MemKiB: d.memKiB})
		}
		return st.PutInventory(ctx, inv)
	}); err != nil {
		return f, crashed, err
	}
	all := make([]string, 0, vms)
	for v := range vms {
		all = append(all, string(vmID(v)))
	}
	if err := parallel(ctx, all, 64, func(ctx context.Context, vm string) error {
		return st.PutDefinition(ctx, vm, domainXML(vm))
	}); err != nil {
		return f, crashed, err
	}
	return f, crashed, nil
}

func hostIndex(name string) int {
	var i int
	fmt.Sscanf(name, "h%d", &i)
	return i
}

// countKeys counts the keys under /hass/v1/.
func countKeys(ctx context.Context, st *store.Store) (int, error) {
	r, err := st.Client().Get(ctx, "/hass/v1/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("count the store's keys: %w", err)
	}
	return int(r.Count), nil
}

// loadAndRestore does the takeover's two big parts again, apart, and times them.
func loadAndRestore(ctx context.Context, st *store.Store) (load, restore time.Duration, err error) {
	t := time.Now()
	floor, err := st.IDFloor(ctx)
	if err != nil {
		return 0, 0, err
	}
	states, _, err := st.HostStates(ctx)
	if err != nil {
		return 0, 0, err
	}
	agents, _, err := st.AgentState(ctx)
	if err != nil {
		return 0, 0, err
	}
	hosts := map[string]store.Host{}
	for _, ev := range agents {
		if _, ok := ev.IsHost(); ok {
			h, err := store.DecodeHost(ev.Key, ev.Value)
			if err == nil {
				hosts[h.Name] = h
			}
		}
	}
	recs, _, err := st.LoadVMs(ctx)
	if err != nil {
		return 0, 0, err
	}
	if _, err := st.OptOuts(ctx); err != nil {
		return 0, 0, err
	}
	if _, _, err := st.LoadPendingActions(ctx); err != nil {
		return 0, 0, err
	}
	load = time.Since(t)

	t = time.Now()
	in := engine.Restore{NextID: floor}
	for _, h := range states {
		in.Hosts = append(in.Hosts, engine.HostState{Host: engine.HostID(h.Host), MemMiB: hosts[h.Host].MemMiB,
			State: h.State, LostAt: h.LostAt, LastSeen: h.LastSeen})
	}
	for _, r := range recs {
		s, err := controller.FromRecord(r)
		if err != nil {
			return 0, 0, fmt.Errorf("restore %s: %w", r.Name, err)
		}
		in.VMs = append(in.VMs, s)
	}
	e := engine.New(engine.DefaultConfig())
	if out := e.Step(time.Now(), in); out.Err != nil {
		return 0, 0, fmt.Errorf("restore: %w", out.Err)
	}
	restore = time.Since(t)
	return load, restore, nil
}

// logTap is a slog.Handler that keeps the controller's log lines the benchmark reads: when
// it was elected and led, and how long its takeover took by its own account. It also keeps
// the last errors, to say why a run failed.
type logTap struct {
	mu               sync.Mutex
	elected, leading time.Time
	takeover         time.Duration
	errs             []string
	// records: how long each decision with orders took to record, once keepRecords was
	// called.
	keep    bool
	records []int64
}

func (l *logTap) keepRecords() {
	l.mu.Lock()
	l.keep, l.records = true, nil
	l.mu.Unlock()
}

func (l *logTap) recorded() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.records)
}

func (l *logTap) Enabled(context.Context, slog.Level) bool { return true }
func (l *logTap) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logTap) WithGroup(string) slog.Handler            { return l }

func (l *logTap) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case r.Message == "leading":
		l.leading = r.Time
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "takeover" {
				l.takeover = a.Value.Duration()
				l.elected = r.Time.Add(-l.takeover)
			}
			return true
		})
	case r.Message == "orders recorded" && l.keep:
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "record" {
				l.records = append(l.records, int64(a.Value.Duration()))
			}
			return true
		})
	case r.Level >= slog.LevelWarn:
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
		l.errs = append(l.errs, b.String())
		if len(l.errs) > 5 {
			l.errs = l.errs[1:]
		}
	}
	return nil
}

func (l *logTap) times() (elected, leading time.Time, takeover time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.elected, l.leading, l.takeover
}

func (l *logTap) errors() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return "nothing logged at warning level or above"
	}
	return strings.Join(l.errs, "; ")
}

// TempDir makes a directory for a benchmark's store, short enough for etcd's unix sockets.
func TempDir() (string, error) { return os.MkdirTemp("", "hass-bench-") }

// TakeoverRows measures a new leader's takeover of hosts and vms through a real etcd (in a
// temporary directory) and returns its rows.
func TakeoverRows(ctx context.Context, hosts, vms int) ([]Row, error) {
	dir, err := TempDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ts, err := Takeover(ctx, dir, hosts, vms)
	if err != nil {
		return nil, fmt.Errorf("takeover of %d hosts and %d VMs: %w", hosts, vms, err)
	}
	what := fmt.Sprintf("%s hosts, %s VMs, real etcd", commas(hosts), commas(vms))
	return []Row{
		{"leader takeover to its first decision (" + what + ")", durStr(ts.FirstDecision), "<= 5 s"},
		{"… of which: elected / takeover (load, restore, leases, waiting reports, written) / every host's list / the decision",
			fmt.Sprintf("%s / %s / %s / %s", durStr(ts.Elected), durStr(ts.Takeover), durStr(ts.Resync), durStr(ts.Decision)), ""},
		{"… the takeover's store reads / engine restore, measured apart", fmt.Sprintf("%s / %s", durStr(ts.Load), durStr(ts.Restore)), ""},
		{"… the store it took over", fmt.Sprintf("%s keys (filled in %s)", commas(ts.StoreKeys), durStr(ts.Fill)), ""},
	}, nil
}
