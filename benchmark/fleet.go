package benchmark

// A fleet of simulated hosts talking to a real controller through a real etcd: each host
// runs the real agent core (package agent: stamps, the lifecycle translator, the fencing
// token check, agent.Carry) over an in-memory hypervisor, and speaks to the store exactly as
// `hass agent` (package node) does: its reports encoded by package wire, written in order
// into its inbox (a result deleting the order it answers), its lease renewed every
// RenewEvery, its orders followed by a watch and checked against the store (OrderToken)
// before they are carried out, a complete domain list and an inventory at every resync and
// when the leader asks for one, the domain XML of its VMs in defs/.
//
// Why not package node itself, a thousand times: each node reads every host record every
// 2 s (its peers), lists every protected VM and watches every VM record (to know which to
// self-fence), and keeps one stored definition per protected VM it has. A thousand of them
// in one process make a thousand times that: a million host records decoded every 2 s, and
// every VM record change delivered a thousand times. That is node's own scaling (see the
// README), not the controller's, so the fleet keeps the protocol and drops the per-host
// whole-cluster reads. All hosts share one etcd client (a real agent has its own
// connection); heartbeats between agents and the watchdog are left out.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor"
	"github.com/hassproject/hass/lifecycle"
	"github.com/hassproject/hass/store"
	"github.com/hassproject/hass/wire"
)

// fleet is the simulated hosts of one cluster.
type fleet struct {
	st         *store.Store
	log        *slog.Logger
	leaseTTL   time.Duration
	renewEvery time.Duration
	// resyncEvery, when set, makes every host list its domains that often (staggered), as
	// agents do (node's default: 30 s).
	resyncEvery time.Duration
	hosts       []*fhost
	byName      map[string]*fhost
	wg          sync.WaitGroup

	// Counters, for the figures.
	reports  atomic.Int64 // reports written into inboxes
	renewals atomic.Int64 // lease renewals that worked
	orders   atomic.Int64 // orders received
	failures atomic.Int64 // store calls that failed

	// onOrder, when set, is called with each order as it reaches its host (before the token
	// check), and the time it arrived.
	onOrder func(h *fhost, a store.Action, at time.Time)
	// onSnapshot, when set, is called after each snapshot report was written.
	onSnapshot func(h *fhost)
	// onWrite, when set, is called with how long each report's write took.
	onWrite func(d time.Duration)
}

// fhost is one simulated host: its agent, its hypervisor's domains, its store plumbing.
type fhost struct {
	f    *fleet
	name string
	// dead: the host lost its power; its agent does nothing more.
	dead atomic.Bool

	mu        sync.Mutex // guards everything below, and every call of the agent
	ag        *agent.Agent
	doms      map[string]*fdom
	lease     store.Lease
	leaseRev  int64
	renewedAt time.Time // when the lease was last renewed (the request sent)
	token     *store.Token
	exec      *fexec
	// resyncGate, when set, is waited on (without mu) before a resync's list is taken.
	resyncGate <-chan struct{}

	out     chan fitem
	vmLocks sync.Map
}

type fdom struct {
	state, reason int
	memKiB        uint64
}

type fexec struct {
	a    engine.Action
	done func(time.Time, agent.Outcome)
}

type fitem struct {
	seq   uint64
	data  []byte
	order uint64
	inv   *store.Inventory
	snap  bool
}

func newFleet(st *store.Store, log *slog.Logger) *fleet {
	return &fleet{st: st, log: log, leaseTTL: 5 * time.Second, renewEvery: time.Second, byName: map[string]*fhost{}}
}

// add creates a host with its domains (all running), not yet joined.
func (f *fleet) add(name string, vms []string, memKiB uint64) *fhost {
	h := &fhost{f: f, name: name, doms: map[string]*fdom{}, out: make(chan fitem, 4096)}
	for _, v := range vms {
		h.doms[v] = &fdom{state: lifecycle.StateRunning, reason: 1, memKiB: memKiB}
	}
	acfg := agent.DefaultConfig(engine.HostID(name))
	acfg.SelfFenceAfter = 3 * time.Second
	h.ag = agent.New(acfg, fenv{h}, time.Now(), nil) // a first start: nothing to resume
	f.hosts = append(f.hosts, h)
	f.byName[name] = h
	return h
}

// hostRecord is the record a host's agent writes when it starts: a watchdog, no power fence
// (so a lost host is fenced by its lease's expiry), and the memory of a benchmark host.
func hostRecord(name string) store.Host {
	return store.Host{Name: name, MemMiB: hostMemMiB, Watchdog: true, Started: time.Now().UTC(), Version: "bench"}
}

// join writes every host's record, then takes every lease, a few hosts at a time (as a
// cluster's agents start).
func (f *fleet) join(ctx context.Context) error {
	return parallel(ctx, f.hosts, 32, func(ctx context.Context, h *fhost) error {
		if err := f.st.PutHost(ctx, hostRecord(h.name)); err != nil {
			return err
		}
		return h.grant(ctx)
	})
}

// run starts every host's loops (lease renewal, reports sender, orders, resync requests),
// until ctx ends; wait waits for them.
func (f *fleet) run(ctx context.Context) {
	for i, h := range f.hosts {
		f.wg.Add(3)
		go h.renewLoop(ctx)
		go h.sender(ctx)
		go h.orderLoop(ctx)
		if f.resyncEvery > 0 {
			f.wg.Add(1)
			go h.resyncLoop(ctx, time.Duration(i+1)*f.resyncEvery/time.Duration(len(f.hosts)+1))
		}
	}
	f.wg.Add(1)
	go f.resyncLoop(ctx)
}

func (f *fleet) wait() { f.wg.Wait() }

// resyncLoop answers a leader's resync request: every host lists its domains. (Each real
// agent watches the key; the fleet watches it once for all.)
func (f *fleet) resyncLoop(ctx context.Context) {
	defer f.wg.Done()
	for ctx.Err() == nil {
		for range f.st.WatchResync(ctx) {
			for _, h := range f.hosts {
				go h.resync(ctx)
			}
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return
		}
	}
}

// resyncLoop lists the host's domains every resyncEvery, the first time after first.
func (h *fhost) resyncLoop(ctx context.Context, first time.Duration) {
	defer h.f.wg.Done()
	if !sleepCtx(ctx, first) {
		return
	}
	t := time.NewTicker(h.f.resyncEvery)
	defer t.Stop()
	for {
		h.resync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// grant takes a new lease with the host's liveness key; orders written before it are void.
func (h *fhost) grant(ctx context.Context) error {
	sent := time.Now()
	l, err := h.f.st.GrantAlive(ctx, h.name, h.f.leaseTTL, store.Alive{PID: 1, Since: sent.UTC(), Libvirt: "connected"})
	if err != nil {
		return err
	}
	_, rev, err := h.f.st.Orders(ctx, h.name)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.lease, h.leaseRev, h.renewedAt = l, rev, sent
	h.ag.LeaseRenewed(sent)
	h.mu.Unlock()
	return nil
}

func (h *fhost) renewLoop(ctx context.Context) {
	defer h.f.wg.Done()
	t := time.NewTicker(h.f.renewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if h.dead.Load() {
			continue
		}
		h.mu.Lock()
		l := h.lease
		h.mu.Unlock()
		sent := time.Now()
		err := h.f.st.KeepAlive(ctx, l)
		switch {
		case err == nil:
			h.f.renewals.Add(1)
			h.mu.Lock()
			h.ag.LeaseRenewed(sent)
			h.renewedAt = sent
			h.mu.Unlock()
		case errors.Is(err, store.ErrLeaseLost):
			if h.grant(ctx) == nil {
				go h.resync(ctx)
			}
		case ctx.Err() == nil:
			h.f.failures.Add(1)
		}
	}
}

// resync lists the host's domains and reports them (a snapshot and the inventory).
func (h *fhost) resync(ctx context.Context) {
	if h.dead.Load() {
		return
	}
	if h.resyncGate != nil {
		select {
		case <-h.resyncGate:
		case <-ctx.Done():
			return
		}
	}
	h.mu.Lock()
	seq := h.ag.Stamp(time.Now())
	names := make([]string, 0, len(h.doms))
	for n := range h.doms {
		names = append(names, n)
	}
	slices.Sort(names)
	rows := make([]agent.Row, 0, len(names))
	inv := store.Inventory{Host: h.name, Seq: seq, At: time.Now().UTC(), Libvirt: "connected", Domains: make([]store.DomainRow, 0, len(names))}
	for _, n := range names {
		d := h.doms[n]
		rows = append(rows, agent.Row{Name: n, State: d.state, Reason: d.reason})
		inv.Domains = append(inv.Domains, store.DomainRow{Name: n, State: d.state, Reason: d.reason, MemKiB: d.memKiB})
	}
	h.ag.Listed(time.Now(), seq, rows) // queues the snapshot (fenv.Report)
	h.queueItem(fitem{inv: &inv})
	h.mu.Unlock()
}

// queue encodes a report for the sender, as node does. Callers hold h.mu.
func (h *fhost) queue(v any, order uint64) {
	data, err := wire.Marshal(v)
	if err != nil {
		h.f.log.Error("cannot encode a report", "err", err)
		return
	}
	var seq uint64
	_, snap := v.(engine.Snapshot)
	switch r := v.(type) {
	case engine.Observe:
		seq = r.Seq
	case engine.Signal:
		seq = r.Seq
	case engine.Snapshot:
		seq = r.Seq
	case engine.ActionResult:
		seq = r.Seq
	}
	if seq == 0 {
		seq = h.ag.Stamp(time.Now())
	}
	h.queueItem(fitem{seq: seq, data: data, order: order, snap: snap})
}

func (h *fhost) queueItem(it fitem) {
	select {
	case h.out <- it:
	default:
		h.f.failures.Add(1)
	}
}

// sender writes the queued reports in order, retrying each until the store takes it.
func (h *fhost) sender(ctx context.Context) {
	defer h.f.wg.Done()
	for {
		var it fitem
		select {
		case <-ctx.Done():
			return
		case it = <-h.out:
		}
		for ctx.Err() == nil && !h.dead.Load() {
			var err error
			t := time.Now()
			if it.inv != nil {
				err = h.f.st.PutInventory(ctx, *it.inv)
			} else {
				err = h.f.st.PutReport(ctx, h.name, it.seq, it.data, it.order)
			}
			if err == nil {
				if it.inv == nil {
					h.f.reports.Add(1)
					if h.f.onWrite != nil {
						h.f.onWrite(time.Since(t))
					}
				}
				if it.snap && h.f.onSnapshot != nil {
					h.f.onSnapshot(h)
				}
				break
			}
			h.f.failures.Add(1)
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}
}

// orderLoop follows the host's orders, as node does.
func (h *fhost) orderLoop(ctx context.Context) {
	defer h.f.wg.Done()
	for ctx.Err() == nil {
		pending, rev, err := h.f.st.Orders(ctx, h.name)
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		for _, a := range pending {
			h.order(ctx, a)
		}
		for a := range h.f.st.WatchOrders(ctx, h.name, rev+1) {
			h.order(ctx, a)
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

func (h *fhost) order(ctx context.Context, o store.Action) {
	if h.dead.Load() {
		return
	}
	at := time.Now()
	h.f.orders.Add(1)
	if h.f.onOrder != nil {
		h.f.onOrder(h, o, at)
	}
	var kind engine.ActKind
	found := false
	for k := engine.ActStart; k <= engine.ActFence; k++ {
		if k.String() == o.Kind {
			kind, found = k, true
		}
	}
	h.mu.Lock()
	void := o.Rev != 0 && o.Rev <= h.leaseRev
	h.mu.Unlock()
	if !found || void {
		_ = h.f.st.DeleteOrder(ctx, h.name, o.ID)
		return
	}
	a := engine.Action{ID: o.ID, Kind: kind, VM: engine.VMID(o.VM), Host: engine.HostID(o.Host), Target: engine.HostID(o.Target),
		Gen: o.Gen, Why: o.Why, Term: uint64(o.Term)}
	h.f.wg.Add(1)
	go h.execute(ctx, a)
}

// execute checks the order's fencing token, has the agent decide, carries it out through
// agent.Carry over the in-memory hypervisor, and reports how it went.
func (h *fhost) execute(ctx context.Context, a engine.Action) {
	defer h.f.wg.Done()
	l, _ := h.vmLocks.LoadOrStore(a.VM, &sync.Mutex{})
	lock := l.(*sync.Mutex)
	lock.Lock()
	defer lock.Unlock()
	tok, err := h.f.st.OrderToken(ctx, string(a.VM))
	if err != nil {
		h.f.failures.Add(1)
		return
	}
	h.mu.Lock()
	h.token, h.exec = &tok, nil
	h.ag.Order(time.Now(), a)
	p := h.exec
	h.token, h.exec = nil, nil
	h.mu.Unlock()
	if p == nil {
		_ = h.f.st.DeleteOrder(ctx, h.name, a.ID)
		return
	}
	if strings.HasPrefix(a.Why, "recovery:") {
		h.mu.Lock()
		h.queue(wire.Called{Host: engine.HostID(h.name), ID: a.ID, VM: a.VM, At: time.Now()}, 0)
		h.mu.Unlock()
	}
	err = agent.Carry(ctx, memDriver{h}, a, fdefs{h.f.st})
	o := agent.Outcome{Err: err, Unreached: agent.Unreached(err), Absent: true}
	h.mu.Lock()
	if d := h.doms[string(a.VM)]; d != nil {
		o.Row, o.Absent = &agent.Row{Name: string(a.VM), State: d.state, Reason: d.reason}, false
	}
	p.done(time.Now(), o)
	h.mu.Unlock()
}

// set changes a domain's state as the hypervisor would, and hands the agent the event.
// Callers hold h.mu.
func (h *fhost) set(name string, state, reason int, ev lifecycle.Event) {
	d := h.doms[name]
	if d == nil {
		d = &fdom{memKiB: vmMemMiB * 1024}
		h.doms[name] = d
	}
	d.state, d.reason = state, reason
	ev.Domain = name
	h.ag.Event(time.Now(), ev)
}

// crash makes a running domain's emulator die, as libvirt reports it.
func (h *fhost) crash(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.doms[name]; d == nil || d.state != lifecycle.StateRunning {
		return false
	}
	h.set(name, lifecycle.StateShutoff, lifecycle.ShutoffFailed, lifecycle.Event{Kind: lifecycle.KindLifecycle, Type: lifecycle.EvStopped, Detail: lifecycle.StoppedFailed})
	return true
}

// fenv is a fleet host's agent.Env, as node's env: reports go to the sender, the token
// check uses what execute read, and there are no peers, heartbeats or watchdog.
type fenv struct{ h *fhost }

func (e fenv) Report(in engine.Input) {
	var order uint64
	if r, ok := in.(engine.ActionResult); ok {
		order = r.ID
	}
	e.h.queue(in, order)
}

func (e fenv) Current(a engine.Action) bool {
	t := e.h.token
	return t != nil && t.Protected && t.Gen == a.Gen && t.Term != 0 && uint64(t.Term) == a.Term
}

func (e fenv) Execute(a engine.Action, done func(time.Time, agent.Outcome)) {
	e.h.exec = &fexec{a: a, done: done}
}

func (e fenv) Protected() []engine.VMID { return nil }
func (e fenv) Destroy(engine.VMID) bool { return false }
func (e fenv) Members() []engine.HostID { return []engine.HostID{engine.HostID(e.h.name)} }
func (e fenv) Heard(engine.HostID) (agent.Heartbeat, time.Time, bool) {
	return agent.Heartbeat{}, time.Time{}, false
}
func (e fenv) PetWatchdog()                  {}
func (e fenv) SendHeartbeat(agent.Heartbeat) {}
func (e fenv) Remember(agent.Past)           {}
func (e fenv) Log(format string, args ...any) {
	e.h.f.log.Debug(fmt.Sprintf(format, args...), "host", e.h.name)
}
func (d fdefs) DomainXML(ctx context.Context, vm engine.VMID) (string, error) {
	return d.st.Definition(ctx, string(vm))
}

type fdefs struct{ st *store.Store }

// MigrationURI: the fleet's hosts take no live migrations (the benchmark's mix has none).
func (d fdefs) MigrationURI(ctx context.Context, host engine.HostID) (string, error) {
	return "", errors.New("the benchmark's fleet takes no live migrations")
}

// memDriver is a fleet host's hypervisor: its domains in memory, each call done at once,
// each change handed to the agent as libvirt's event.
type memDriver struct{ h *fhost }

var _ hypervisor.Driver = memDriver{}

func (m memDriver) Connect(context.Context) error                      { return nil }
func (m memDriver) Events() <-chan hypervisor.Event                    { return nil }
func (m memDriver) Close() error                                       { return nil }
func (m memDriver) XML(_ context.Context, name string) (string, error) { return domainXML(name), nil }

func (m memDriver) Migrate(context.Context, string, string) error {
	return errors.New("the benchmark's fleet takes no live migrations")
}

func (m memDriver) List(context.Context) ([]hypervisor.Domain, error) {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	out := make([]hypervisor.Domain, 0, len(m.h.doms))
	for n, d := range m.h.doms {
		out = append(out, hypervisor.Domain{Name: n, State: hypervisor.DomainState(d.state), Reason: d.reason, MemoryKiB: d.memKiB})
	}
	return out, nil
}

// change runs f on the named domain under h.mu, or says it is not defined.
func (m memDriver) change(name string, f func(d *fdom) error) error {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	d := m.h.doms[name]
	if d == nil {
		return &hypervisor.OpError{Op: "lookup", Domain: name, Err: hypervisor.ErrNotFound}
	}
	return f(d)
}

func lcEv(typ, detail int) lifecycle.Event {
	return lifecycle.Event{Kind: lifecycle.KindLifecycle, Type: typ, Detail: detail}
}

func invalid(op, name string) error {
	return &hypervisor.OpError{Op: op, Domain: name, Err: hypervisor.ErrInvalidState}
}

func (m memDriver) Start(_ context.Context, name string) error {
	return m.change(name, func(d *fdom) error {
		if d.state == lifecycle.StateRunning || d.state == lifecycle.StatePaused {
			return invalid("start", name)
		}
		m.h.set(name, lifecycle.StateRunning, 1, lcEv(lifecycle.EvStarted, lifecycle.StartedBooted))
		return nil
	})
}

func (m memDriver) Destroy(_ context.Context, name string) error {
	return m.change(name, func(d *fdom) error {
		if d.state != lifecycle.StateRunning && d.state != lifecycle.StatePaused {
			return invalid("destroy", name)
		}
		m.h.set(name, lifecycle.StateShutoff, lifecycle.ShutoffDestroyed, lcEv(lifecycle.EvStopped, lifecycle.StoppedDestroyed))
		return nil
	})
}

func (m memDriver) Shutdown(_ context.Context, name string) error {
	return m.change(name, func(d *fdom) error {
		if d.state != lifecycle.StateRunning {
			return invalid("shutdown", name)
		}
		// The guest acts on the request a little later, as guests do.
		time.AfterFunc(20*time.Millisecond, func() {
			m.h.mu.Lock()
			defer m.h.mu.Unlock()
			if d := m.h.doms[name]; d != nil && d.state == lifecycle.StateRunning {
				m.h.set(name, lifecycle.StateShutoff, lifecycle.ShutoffShutdown, lcEv(lifecycle.EvStopped, lifecycle.StoppedShutdown))
			}
		})
		return nil
	})
}

func (m memDriver) Reboot(_ context.Context, name string) error {
	return m.change(name, func(d *fdom) error {
		if d.state != lifecycle.StateRunning {
			return invalid("reboot", name)
		}
		ev := lifecycle.Event{Kind: lifecycle.KindReboot, Domain: name}
		m.h.ag.Event(time.Now(), ev)
		return nil
	})
}

func (m memDriver) Reset(_ context.Context, name string) error {
	return m.change(name, func(d *fdom) error {
		if d.state != lifecycle.StateRunning {
			return invalid("reset", name)
		}
		return nil
	})
}

func (m memDriver) Suspend(_ context.Context, name string) error {
	return m.change(name, func(d *fdom) error {
		if d.state != lifecycle.StateRunning {
			return invalid("suspend", name)
		}
		m.h.set(name, lifecycle.StatePaused, lifecycle.PausedUser, lcEv(lifecycle.EvSuspended, lifecycle.SuspendedPaused))
		return nil
	})
}

func (m memDriver) Resume(_ context.Context, name string) error {
	return m.change(name, func(d *fdom) error {
		if d.state != lifecycle.StatePaused {
			return invalid("resume", name)
		}
		m.h.set(name, lifecycle.StateRunning, 1, lcEv(lifecycle.EvResumed, lifecycle.ResumedUnpaused))
		return nil
	})
}

func (m memDriver) Define(_ context.Context, xml string) error {
	name := xmlName(xml)
	if name == "" {
		return fmt.Errorf("define: no name in the XML")
	}
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	if m.h.doms[name] == nil {
		m.h.doms[name] = &fdom{state: lifecycle.StateShutoff, reason: lifecycle.ShutoffUnknown, memKiB: vmMemMiB * 1024}
		m.h.ag.Event(time.Now(), lifecycle.Event{Kind: lifecycle.KindLifecycle, Type: lifecycle.EvDefined, Domain: name})
	}
	return nil
}

func (m memDriver) Undefine(_ context.Context, name string) error {
	return m.change(name, func(d *fdom) error {
		delete(m.h.doms, name)
		m.h.ag.Event(time.Now(), lifecycle.Event{Kind: lifecycle.KindLifecycle, Type: lifecycle.EvUndefined, Domain: name})
		return nil
	})
}

// domainXML is a VM's stored definition: 1 KiB (a real one is a few: hass's embedded etcd keeps a 256 MiB quota).
func domainXML(name string) string {
	return "<domain type='kvm'><name>" + name + "</name><memory unit='MiB'>1024</memory><vcpu>1</vcpu>" +
		"<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>" + strings.Repeat("<!-- device -->", 60) + "</devices></domain>"
}

func xmlName(xml string) string {
	_, rest, ok := strings.Cut(xml, "<name>")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "</name>")
	return name
}

// parallel runs f on every item, n at a time, and returns the first error.
func parallel[T any](ctx context.Context, items []T, n int, f func(context.Context, T) error) error {
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	next := make(chan T)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range next {
				if err := f(ctx, it); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, it := range items {
		next <- it
	}
	close(next)
	wg.Wait()
	return first
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
