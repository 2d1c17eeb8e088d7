// Package controller is `hass controller`: the decision engine, run by whichever controller
// leads. Controllers campaign in an etcd election (concurrency.Election); the leader builds
// its engine from the store (every protected VM's engine state, every host's state, the ID
// floor), reads everything the agents wrote (host records, liveness keys, inventories,
// reports waiting in their inboxes), then follows the agents' writes as they happen and
// decides.
//
// What a decision changes (event log, VM records, host states, the reports it consumed, the
// orders it gives) is written in one etcd transaction guarded by the leader's election key,
// before any agent can see an order: a deposed leader's write fails, and a failed write means
// no order. Orders go to the hosts' agents through etcd (orders/<host>/<id>), carrying the
// VM's intent generation and the leader's term, which the agent checks against the store
// before it acts. A leader that dies at any moment leaves everything the next one needs.
//
// It is wiring only: decisions stay in package engine, I/O in package store.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/openstack/nova"
	"github.com/hassproject/hass/store"
	"github.com/hassproject/hass/wire"
)

// Config configures a controller.
type Config struct {
	Name   string // this controller's name in the election (default: the host name)
	Store  *store.Store
	Engine engine.Config
	Logger *slog.Logger
	// API is the address of this controller's API, published with its leadership so that
	// operators and followers know where the leader answers.
	API        string
	TickEvery  time.Duration
	KeepEvents int
	// SessionTTL is the election session's lease: a leader that stops renewing it (dead,
	// or cut off from etcd) loses leadership after it, and another controller takes over.
	SessionTTL time.Duration
	// LeaseTTL is the agents' lease TTL (for a host found without a lease at takeover).
	LeaseTTL time.Duration
	// LocalHost is the host whose agent runs beside this controller (hass up), for Status.
	LocalHost string
	// The host power layer and fence (see fence.go): how often every BMC's chassis power is
	// read (0: only to fence), how long after an "off" it is read again before the host is
	// taken for off, how long one ipmitool run may take, how many times a fence's power-off
	// is tried, how long its confirmation is awaited each time, and how long after a
	// confirmed fence the host is powered on again (0: never).
	BMCPoll, PowerRecheck, BMCTimeout time.Duration
	FenceTries                        int
	FenceConfirm, PowerOnAfter        time.Duration
	// Nova, when set, is OpenStack's compute API: the orders for VMs that are Nova instances
	// are carried out through it (see novaexec.go). NovaPoll is how often an instance is read
	// while an order runs (default 500 ms).
	Nova     *nova.Client
	NovaPoll time.Duration
	// NovaAggregate, under OpenStack, protects every instance on a host of this host
	// aggregate (as well as those whose metadata says HA_Enabled=True).
	NovaAggregate string
}

// Leader is the value a leader publishes in the election.
type Leader struct {
	Name  string    `json:"name"`
	API   string    `json:"api,omitempty"`
	Since time.Time `json:"since"`
}

// Controller is one controller; it decides only while it leads.
type Controller struct {
	cfg     Config
	log     *slog.Logger
	st      *store.Store
	started time.Time
	tokens  *tokenCache // API tokens read from the store (see tokens.go)

	mu      sync.Mutex // guards everything below, and every engine step
	eng     *engine.Engine
	leading bool
	term    int64
	guard   *store.Guard
	// What is stored, as this leader last wrote or read it.
	persisted  map[engine.VMID]store.VM
	hostStates map[engine.HostID]store.HostState
	idFloor    uint64
	// What agents wrote.
	hosts map[engine.HostID]store.Host
	alive map[engine.HostID]store.Alive
	// aliveLease is the etcd lease of each host's alive key.
	aliveLease map[engine.HostID]int64
	libvirt    map[engine.HostID]string   // each host's libvirt connection, from its inventory
	hears      map[engine.HostID][]string // the peers each host's agent heard, from its inventory
	// firstCall is when the hypervisor was first asked to recover each VM being recovered
	// (agents report it): the recovered event's action time.
	firstCall map[engine.VMID]time.Time
	// dirty holds VMs whose last change could not be written yet.
	dirty  map[engine.VMID]bool
	optOut map[string]bool // unprotected by a user: --protect-all leaves them alone
	// deposed is closed when a guarded write failed: this controller no longer leads.
	deposed chan struct{}
	// stale is closed when a write failed otherwise (the store unreachable, or refusing
	// writes): the engine ran ahead of what is stored, so it is rebuilt from the store.
	stale chan struct{}
	// recordErr is why the last step's decisions could not be recorded (nil: they were).
	recordErr error
	// group, while set, gathers the steps' writes into one (see batch.go).
	group *group
	// ready is closed the first time this controller leads.
	ready     chan struct{}
	readyOnce sync.Once
	// What administrators configured.
	hostCfg    map[engine.HostID]store.HostConfig
	clusterCfg map[string]store.Cluster
	// pendingConfig and pendingNote are recorded with the next step, unless the engine
	// refuses it (see recordConfig).
	pendingConfig *store.ConfigChange
	pendingNote   *engine.Record
	// leadCtx ends when this term of leadership does: fences run under it.
	leadCtx context.Context
	// power is each host's chassis power as its BMC last said (on, off, unknown).
	powerMu sync.Mutex
	power   map[engine.HostID]string
	cycling map[engine.HostID]bool // hosts being fenced or power-cycled through their BMC
	// novaq holds this term's orders for Nova (nil when not under OpenStack).
	novaq *novaQueue
}

// IsLeading says whether this controller leads now.
func (c *Controller) IsLeading() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading
}

// LeaderAPI returns the API address the leading controller published ("" when none leads
// or it published none).
func (c *Controller) LeaderAPI(ctx context.Context) (string, error) {
	v, term, err := c.st.Leader(ctx)
	if err != nil || term == 0 {
		return "", err
	}
	var l Leader
	if err := json.Unmarshal([]byte(v), &l); err != nil {
		return "", fmt.Errorf("the leader's election value: %w", err)
	}
	return l.API, nil
}

// Leading is closed once this controller has led (taken over) for the first time.
func (c *Controller) Leading() <-chan struct{} { return c.ready }

// New returns a controller; Run makes it campaign.
func New(cfg Config) (*Controller, error) {
	if cfg.Store == nil {
		return nil, errors.New("controller: no store")
	}
	if cfg.Name == "" {
		return nil, errors.New("controller: no name")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TickEvery <= 0 {
		cfg.TickEvery = 100 * time.Millisecond
	}
	if cfg.KeepEvents <= 0 {
		cfg.KeepEvents = 100000
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 2 * time.Second
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Engine == (engine.Config{}) {
		cfg.Engine = engine.DefaultConfig()
	}
	if cfg.PowerRecheck <= 0 {
		cfg.PowerRecheck = 500 * time.Millisecond
	}
	if cfg.BMCTimeout <= 0 {
		cfg.BMCTimeout = 5 * time.Second
	}
	if cfg.FenceTries <= 0 {
		cfg.FenceTries = 3
	}
	if cfg.FenceConfirm <= 0 {
		cfg.FenceConfirm = 10 * time.Second
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("controller", cfg.Name), st: cfg.Store, started: time.Now(), tokens: newTokenCache(nil),
		ready: make(chan struct{}), power: map[engine.HostID]string{}, cycling: map[engine.HostID]bool{}}, nil
}

// DefaultLeaseTTL is the agents' lease TTL unless told otherwise: a lost host's VMs are
// started elsewhere at the earliest this long after its last renewal, plus the engine's
// self-fence margin.
const DefaultLeaseTTL = 5 * time.Second

// Run campaigns, leads while elected, and campaigns again when deposed, until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		err := c.campaign(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("not leading", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		case <-c.st.Done():
			return fmt.Errorf("controller: the state store failed: %w", c.st.Err())
		}
	}
	return nil
}

func (c *Controller) campaign(ctx context.Context) error {
	// The session's lease is kept alive by the controller (see session.go), not by the
	// session's own keepalive alone, which a takeover's writes could starve.
	ll, err := grantLease(ctx, c.st.Client(), c.cfg.SessionTTL, c.log)
	if err != nil {
		return fmt.Errorf("election session: grant its lease: %w", err)
	}
	kctx, stopKeep := context.WithCancel(ctx)
	defer stopKeep()
	go ll.keep(kctx)
	sess, err := concurrency.NewSession(c.st.Client(), concurrency.WithLease(ll.id), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("election session: %w", err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, store.ElectionPrefix)
	val, _ := json.Marshal(Leader{Name: c.cfg.Name, API: c.cfg.API, Since: time.Now().UTC()})
	c.log.Info("campaigning for leadership")
	wctx, stopWait := context.WithCancel(ctx)
	go c.sayWhyCampaignWaits(wctx, el)
	err = el.Campaign(ctx, string(val))
	stopWait()
	if err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-ll.Done():
			stop()
		case <-lctx.Done():
		}
	}()
	err = c.lead(lctx, el.Key(), el.Rev(), ll.renew)
	c.mu.Lock()
	c.leading, c.eng = false, nil
	c.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	_ = el.Resign(rctx)
	cancel()
	if err == nil {
		select {
		case <-ll.Done():
			err = errors.New("the election session expired (etcd unreachable for longer than its TTL)")
		default:
		}
	}
	return err
}

// sayWhyCampaignWaits logs, every 5 s until ctx ends, who leads while this controller's
// campaign waits.
func (c *Controller) sayWhyCampaignWaits(ctx context.Context, el *concurrency.Election) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := el.Leader(qctx)
			cancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				c.log.Info("campaign waiting: the leader cannot be read", "err", err)
			default:
				kv := resp.Kvs[0]
				c.log.Info("campaign waiting: another key leads", "key", string(kv.Key), "leader", string(kv.Value),
					"lease", fmt.Sprintf("%x", kv.Lease), "term", kv.CreateRevision)
			}
		}
	}
}

// errDeposed: a guarded write found another leader.
var errDeposed = errors.New("deposed: another controller leads")

// lead takes over and decides until deposed or ctx ends.
func (c *Controller) lead(ctx context.Context, key string, term int64, keep func(context.Context)) error {
	start := time.Now()
	c.mu.Lock()
	c.term, c.guard = term, &store.Guard{Key: key, Rev: term, Keep: keep}
	c.deposed, c.stale = make(chan struct{}), make(chan struct{})
	c.leadCtx = ctx
	c.novaq = nil
	if c.cfg.Nova != nil {
		c.novaq = newNovaQueue()
		c.runNova(ctx, c.novaq)
	}
	rev, err := c.takeOver(ctx)
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("take over: %w", err)
	}
	c.leading = true
	n := len(c.eng.Status())
	c.mu.Unlock()
	// Every agent lists its domains again: what was in flight under the last leader is
	// judged by those lists (an engine restored waits InFlightGrace for them).
	if err := c.st.RequestResync(ctx, term); err != nil {
		c.log.Warn("cannot ask the agents for a resync", "err", err)
	}
	c.readyOnce.Do(func() { close(c.ready) })
	go c.pollPower(ctx)
	c.resumePowerOns(ctx)
	if c.cfg.Nova != nil {
		go c.reconcileNova(ctx)
	}
	c.log.Info("leading", "term", term, "vms", len(c.persisted), "hosts", len(c.hosts), "takeover", time.Since(start).Round(time.Millisecond), "protected", n)

	watch := c.st.WatchAgents(ctx, rev+1)
	tick := time.NewTicker(c.cfg.TickEvery)
	defer tick.Stop()
	trim := time.NewTicker(10 * time.Minute)
	defer trim.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.deposed:
			return errDeposed
		case <-c.stale:
			// What the engine decided could not all be recorded: nothing of it was carried
			// out, and the engine is rebuilt from what the store holds.
			c.log.Warn("a decision could not be recorded: rebuilding the engine from the store")
			c.mu.Lock()
			c.leading = false
			c.stale = make(chan struct{})
			r, err := c.takeOver(ctx)
			if err == nil {
				c.leading = true
			}
			c.mu.Unlock()
			if err != nil {
				return fmt.Errorf("take over again: %w", err)
			}
			watch = c.st.WatchAgents(ctx, r+1)
		case ev, ok := <-watch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("the watch of the agents ended: taking over again")
			}
			c.mu.Lock()
			c.beginGroup()
			c.agentEvent(ctx, ev)
			c.drainWatch(ctx, watch)
			c.flushGroup(ctx)
			c.mu.Unlock()
		case <-tick.C:
			c.mu.Lock()
			if w := c.eng.NextWake(); !w.IsZero() && !w.After(time.Now()) {
				c.stepLocked(ctx, engine.Tick{})
			}
			c.mu.Unlock()
		case <-trim.C:
			if err := c.st.TrimEvents(ctx, c.cfg.KeepEvents); err != nil {
				c.log.Warn("trim the event log", "err", err)
			}
		}
	}
}

// takeOver builds the engine from the store and the agents' writes. It returns the store
// revision it read the agents' state at. Callers hold c.mu.
func (c *Controller) takeOver(ctx context.Context) (int64, error) {
	c.eng = engine.New(c.cfg.Engine)
	c.persisted, c.hostStates = map[engine.VMID]store.VM{}, map[engine.HostID]store.HostState{}
	c.hosts, c.alive, c.libvirt = map[engine.HostID]store.Host{}, map[engine.HostID]store.Alive{}, map[engine.HostID]string{}
	c.hears = map[engine.HostID][]string{}
	c.aliveLease = map[engine.HostID]int64{}
	c.firstCall, c.dirty = map[engine.VMID]time.Time{}, map[engine.VMID]bool{}
	c.beginGroup() // every step of the takeover is written at its end, grouped
	defer c.discardGroup()

	floor, err := c.st.IDFloor(ctx)
	if err != nil {
		return 0, fmt.Errorf("load the ID floor: %w", err)
	}
	clusters, badCfg, err := c.loadConfig(ctx)
	if err != nil {
		return 0, fmt.Errorf("load the configuration: %w", err)
	}
	c.idFloor = 0
	if err := c.reserveIDs(ctx, floor); err != nil {
		return 0, err
	}
	states, _, err := c.st.HostStates(ctx)
	if err != nil {
		return 0, err
	}
	for _, h := range states {
		c.hostStates[engine.HostID(h.Host)] = h
	}
	agents, rev, err := c.st.AgentState(ctx)
	if err != nil {
		return 0, err
	}
	var inbox []store.AgentEvent
	for _, ev := range agents {
		switch {
		case isHost(ev):
			h, err := store.DecodeHost(ev.Key, ev.Value)
			if err != nil {
				c.log.Error("a host record cannot be read: that host is not used", "key", ev.Key, "err", err)
				continue
			}
			c.hosts[engine.HostID(h.Name)] = h
		case isAlive(ev):
			name, _ := ev.IsAlive()
			var a store.Alive
			_ = json.Unmarshal(ev.Value, &a)
			c.alive[engine.HostID(name)] = a
			c.aliveLease[engine.HostID(name)] = ev.Lease
		case isInventory(ev):
			inv, err := store.DecodeInventory(ev.Key, ev.Value)
			if err == nil {
				c.libvirt[engine.HostID(inv.Host)] = inv.Libvirt
				c.hears[engine.HostID(inv.Host)] = inv.Hears
			}
		default:
			if _, ok := ev.IsInbox(); ok {
				inbox = append(inbox, ev)
			}
		}
	}
	// Hosts first (with the state the last leader recorded), then the VMs.
	names := make([]engine.HostID, 0, len(c.hosts))
	for h := range c.hosts {
		names = append(names, h)
	}
	slices.Sort(names)
	var hostStates []engine.HostState
	var addLater []engine.AddHost
	for _, h := range names {
		in := c.hostInput(h)
		if st, ok := c.hostStates[h]; ok {
			hs := fromStoreHost(st)
			hs.MemMiB, hs.VCPUs, hs.Fencing, hs.Cluster, hs.Reserved = in.MemMiB, in.VCPUs, in.Fencing, in.Cluster, in.Reserved
			if hs.Validate() == nil {
				hostStates = append(hostStates, hs)
				continue
			}
		}
		addLater = append(addLater, in)
	}
	vms, unreadable, err := c.st.LoadVMs(ctx)
	if err != nil {
		return 0, fmt.Errorf("load protected VMs: %w", err)
	}
	var restored []engine.VMState
	var bad []engine.Record
	for _, b := range unreadable {
		bad = append(bad, c.badRecord(strings.TrimPrefix(b.Key, "/hass/v1/vms/"), b.Err))
	}
	for _, r := range vms {
		s, err := FromRecord(r)
		if err != nil {
			bad = append(bad, c.badRecord(r.Name, err))
			continue
		}
		restored = append(restored, s)
		c.persisted[engine.VMID(r.Name)] = r
	}
	// Hosts with no stored state yet are added before the VMs, which may be homed there.
	if len(addLater) > 0 {
		c.eng.Step(time.Now(), engine.Restore{Clusters: clusters})
		clusters = nil
		for _, in := range addLater {
			c.eng.Step(time.Now(), in)
		}
	}
	if out := c.stepLocked(ctx, engine.Restore{NextID: floor, VMs: restored, Hosts: hostStates, Clusters: clusters}); out.Err != nil {
		return 0, fmt.Errorf("restore protected VMs: %w", out.Err)
	}
	bad = append(bad, badCfg...)
	if len(bad) > 0 {
		c.appendEvents(ctx, bad)
	}
	if c.optOut, err = c.st.OptOuts(ctx); err != nil {
		return 0, fmt.Errorf("load opt-outs: %w", err)
	}
	// Orders of earlier terms are void (agents drop them: their term is not current).
	if pending, _, err := c.st.LoadPendingActions(ctx); err == nil {
		for _, a := range pending {
			if a.Term < c.term {
				c.log.Info("an order of an earlier term was not carried out: the engine decides again", "id", a.ID, "kind", a.Kind, "vm", a.VM, "host", a.Host)
				_ = c.st.DeleteOrder(ctx, a.Host, a.ID)
			}
		}
	}
	// Leases: a host without one is lost (since its last known renewal).
	for _, h := range names {
		if _, ok := c.alive[h]; !ok && c.hosts[h].Left {
			continue // its agent stopped cleanly: nothing to recover
		}
		if _, ok := c.alive[h]; !ok && !c.fenceable(h) {
			c.unfenceable(ctx, h)
			continue
		}
		if _, ok := c.alive[h]; ok {
			c.stepLocked(ctx, engine.HostLease{Host: h, Alive: true, Lease: c.aliveLease[h]})
			continue
		}
		since := time.Now().Add(-c.cfg.LeaseTTL)
		if st, ok := c.hostStates[h]; ok && st.State != "up" && !st.LostAt.IsZero() {
			since = st.LostAt.Add(-c.cfg.LeaseTTL)
		}
		c.stepLocked(ctx, engine.HostLease{Host: h, Alive: false, Since: since})
	}
	for _, ev := range inbox {
		c.agentEvent(ctx, ev)
	}
	c.flushGroup(ctx)
	return rev, nil
}

func isHost(ev store.AgentEvent) bool      { _, ok := ev.IsHost(); return ok }
func isAlive(ev store.AgentEvent) bool     { _, ok := ev.IsAlive(); return ok }
func isInventory(ev store.AgentEvent) bool { _, ok := ev.IsInventory(); return ok }

// agentEvent handles one write of an agent. Callers hold c.mu.
func (c *Controller) agentEvent(ctx context.Context, ev store.AgentEvent) {
	if name, ok := ev.IsHost(); ok {
		if ev.Delete {
			return // a host leaves by `hass host remove` (not yet): a deleted record changes nothing
		}
		h, err := store.DecodeHost(ev.Key, ev.Value)
		if err != nil {
			c.log.Error("a host record cannot be read: ignored", "key", ev.Key, "err", err)
			return
		}
		hid := engine.HostID(name)
		old, known := c.hosts[hid]
		before := c.hostInput(hid)
		c.hosts[hid] = h
		if in := c.hostInput(hid); !known || in != before {
			c.stepLocked(ctx, in)
			// A record written again (its agent restarted, or it counts more members now)
			// warns again only when what it says of the host's fences changed.
			if known && in.Fencing == before.Fencing && h.Watchdog == old.Watchdog {
				return
			}
			switch {
			case !c.fenceable(hid):
				c.log.Warn("host joined with no way to be fenced (no BMC, no watchdog): if it is lost, its VMs are not started elsewhere automatically", "host", name)
			case !in.Fencing:
				c.log.Warn("host joined without a power fence (no BMC: hass host add --bmc): if it is lost, its VMs are started elsewhere only after its lease expired and its agent had time to fence itself", "host", name)
			}
		}
		return
	}
	if name, ok := ev.IsAlive(); ok {
		h := engine.HostID(name)
		if ev.Delete {
			delete(c.alive, h)
			delete(c.aliveLease, h)
			if c.hosts[h].Left {
				c.left(ctx, h)
				return
			}
			if !c.fenceable(h) {
				c.unfenceable(ctx, h)
				return
			}
			c.log.Warn("host lease expired", "host", name)
			c.stepLocked(ctx, engine.HostLease{Host: h, Alive: false, Since: time.Now().Add(-c.cfg.LeaseTTL)})
			if hc, ok := c.hostCfg[h]; ok && hc.BMC != nil && c.leadCtx != nil {
				go c.diagnose(c.leadCtx, h)
			}
			return
		}
		var a store.Alive
		_ = json.Unmarshal(ev.Value, &a)
		_, had := c.alive[h]
		c.alive[h] = a
		c.aliveLease[h] = ev.Lease
		if !had {
			if _, known := c.hosts[h]; !known {
				return // its host record comes first; a lease before it is odd but harmless
			}
			c.stepLocked(ctx, engine.HostLease{Host: h, Alive: true, Lease: ev.Lease})
		}
		return
	}
	if _, ok := ev.IsInventory(); ok {
		if inv, err := store.DecodeInventory(ev.Key, ev.Value); err == nil {
			c.libvirt[engine.HostID(inv.Host)] = inv.Libvirt
			c.hears[engine.HostID(inv.Host)] = inv.Hears
		}
		return
	}
	host, ok := ev.IsInbox()
	if !ok || ev.Delete {
		return
	}
	v, err := wire.Unmarshal(ev.Value, host)
	if err != nil {
		c.log.Error("a report cannot be read: dropped, nothing changed", "key", ev.Key, "err", err)
		c.consume(ctx, ev.Key)
		return
	}
	if _, known := c.hosts[engine.HostID(host)]; !known {
		c.log.Warn("a report from a host without a host record: dropped", "host", host, "key", ev.Key)
		c.consume(ctx, ev.Key)
		return
	}
	switch r := v.(type) {
	case wire.Called:
		if _, ok := c.firstCall[r.VM]; !ok {
			c.firstCall[r.VM] = r.At
		}
		c.consume(ctx, ev.Key)
	case wire.Protect:
		if c.optOut[string(r.Protect.VM)] || c.eng.Protected(r.Protect.VM) {
			c.consume(ctx, ev.Key)
			return
		}
		if out := c.stepLocked(ctx, r.Protect, ev.Key); out.Err != nil {
			c.log.Warn("protect-all: cannot protect", "vm", r.Protect.VM, "err", out.Err)
			return
		}
		c.stepLocked(ctx, r.Observe)
	case engine.Input:
		c.stepLocked(ctx, r, ev.Key)
	}
}

// left notes that a host's agent stopped cleanly: the host is not lost, so nothing is fenced
// or started elsewhere; its VMs are not watched until it returns. Callers hold c.mu.
func (c *Controller) left(ctx context.Context, h engine.HostID) {
	n := 0
	for _, v := range c.eng.Status() {
		if v.Home == h {
			n++
		}
	}
	msg := fmt.Sprintf("the agent of %s stopped cleanly: its %d protected VMs are not watched until it runs again (stop agents for good with maintenance, not by stopping them)", h, n)
	c.log.Warn(msg, "host", h)
	c.appendEvents(ctx, []engine.Record{{At: time.Now(), Type: engine.RecAlert, Host: h, Msg: msg}})
}

// fenceable says whether a host that lost its lease is known to have stopped its VMs: it
// has a power fence, or its agent pets a watchdog (so either the agent fenced the host, or
// the watchdog reset it). A cluster of one has nowhere else to start anything anyway.

// unfenceable reports a lost host that nothing can fence: its VMs are not started elsewhere
// (they may still run there), and they read unknown. Callers hold c.mu.
func (c *Controller) unfenceable(ctx context.Context, h engine.HostID) {
	c.libvirt[h] = "lost, and it has no fence"
	if len(c.hosts) == 1 {
		// A cluster of one (hass up): there is nowhere else to start anything; its agent
		// takes a new lease when it runs again.
		c.log.Info("the host's lease expired: waiting for its agent", "host", h)
		return
	}
	msg := fmt.Sprintf("host %s lost its lease, and it has no way to be fenced (no power fence, no watchdog): its VMs are NOT started elsewhere, since they may still run there; check the host, and power it off or bring its agent back", h)
	c.log.Error(msg, "host", h)
	c.appendEvents(ctx, []engine.Record{{At: time.Now(), Type: engine.RecAlert, Host: h, Msg: msg}})
}

// consume deletes a report that changes nothing.
func (c *Controller) consume(ctx context.Context, key string) {
	if c.group != nil {
		c.group.deletes = append(c.group.deletes, key)
		return
	}
	if _, err := c.st.Record(ctx, store.Batch{DeleteKeys: []string{key}, Guard: c.guard}); err != nil {
		c.recordError(err)
	}
}

func (c *Controller) recordError(err error) {
	ch := c.stale
	if errors.Is(err, store.ErrNotLeader) {
		ch = c.deposed
	}
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// badRecord reports a stored VM record that cannot be read.
func (c *Controller) badRecord(name string, err error) engine.Record {
	c.log.Error("a stored vm record cannot be read: that vm is not protected; the others are", "vm", name, "err", err)
	return engine.Record{At: time.Now(), Type: engine.RecAlert, VM: engine.VMID(name),
		Msg: fmt.Sprintf("stored record unreadable (%v): not protected until it is fixed or the vm is protected again", err)}
}

// idBlock is how many IDs are reserved in the store at a time.
const idBlock = 1000

// reserveIDs makes sure the store's ID floor is above last. Callers hold c.mu.
func (c *Controller) reserveIDs(ctx context.Context, last uint64) error {
	if last < c.idFloor && c.idFloor != 0 {
		return nil
	}
	n := last + idBlock
	if err := c.st.SetIDFloor(ctx, n); err != nil {
		return fmt.Errorf("reserve IDs: %w", err)
	}
	c.idFloor = n
	return nil
}

// step runs one engine step while leading.
func (c *Controller) step(ctx context.Context, in engine.Input) (engine.Output, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return engine.Output{}, errNotLeading
	}
	return c.stepLocked(ctx, in), nil
}

var errNotLeading = errors.New("this controller does not lead")

// stepLocked steps the engine, and records what it decided in one guarded transaction with
// the reports it consumed: the orders among it reach the agents only if that write
// succeeds. Callers hold c.mu.
func (c *Controller) stepLocked(ctx context.Context, in engine.Input, consumed ...string) engine.Output {
	arrived := time.Now()
	out := c.eng.Step(arrived, in)
	decided := time.Now()
	res := engine.Output{Actions: slices.Clone(out.Actions), Log: slices.Clone(out.Log), Err: out.Err, Touched: slices.Clone(out.Touched)}
	b := store.Batch{Guard: c.guard, DeleteKeys: consumed}
	if c.pendingConfig != nil && out.Err == nil {
		b.Config = []store.ConfigChange{*c.pendingConfig}
		if c.pendingNote != nil {
			res.Log = append([]engine.Record{*c.pendingNote}, res.Log...)
		}
	}
	hostsChanged := map[engine.HostID]bool{}
	for i, r := range res.Log {
		c.log.Info(r.String(), "type", string(r.Type))
		if r.VM != "" {
			switch r.Type {
			case engine.RecRecovered:
				// Acted: when libvirt was asked to restart it, not when the engine decided.
				if t, ok := c.firstCall[r.VM]; ok && !r.ActionAt.IsZero() && !t.Before(r.ActionAt) && !t.After(r.RecoveredAt) {
					res.Log[i].ActionAt = t
				}
				delete(c.firstCall, r.VM)
			case engine.RecGaveUp, engine.RecForget, engine.RecDetect:
				delete(c.firstCall, r.VM)
			}
		}
		if r.Type == engine.RecHost && r.Host != "" {
			hostsChanged[r.Host] = true
		}
		b.Events = append(b.Events, toStoreEvent(res.Log[i]))
	}
	if _, ok := in.(engine.HostLease); ok {
		hostsChanged[in.(engine.HostLease).Host] = true
	}
	switch x := in.(type) {
	case engine.AddHost:
		hostsChanged[x.Host] = true
	case engine.Maintenance:
		hostsChanged[x.Host] = true
	case engine.HostPower:
		hostsChanged[x.Host] = true
	case engine.FenceResult:
		hostsChanged[x.Host] = true
	}
	for h := range hostsChanged {
		if s, ok := c.hostState(h); ok && s != c.hostStates[h] {
			b.PutHostStates = append(b.PutHostStates, s)
		}
	}
	changed := c.changedVMs(res)
	for _, ch := range changed {
		if ch.gone {
			b.DeleteVMs = append(b.DeleteVMs, ch.name)
		} else {
			b.PutVMs = append(b.PutVMs, ch.rec)
		}
		var old *store.VM
		if o, ok := c.persisted[engine.VMID(ch.name)]; ok {
			old = &o
		}
		if p, ok := probeChange(old, ch); ok {
			b.Probes = append(b.Probes, p)
		}
	}
	if last := c.eng.LastID(); last >= c.idFloor {
		b.IDFloor = last + idBlock
	}
	var fences []engine.Action
	var novaJobs []novaJob
	for i, a := range res.Actions {
		res.Actions[i].Term = uint64(c.term)
		if a.Kind == engine.ActFence {
			fences = append(fences, res.Actions[i]) // carried out here (fence.go), not by an agent
			continue
		}
		if j, ok := c.novaOf(res.Actions[i]); ok && c.novaq != nil {
			novaJobs = append(novaJobs, j) // through Nova (novaexec.go)
			continue
		}
		b.Actions = append(b.Actions, store.Action{ID: a.ID, Kind: a.Kind.String(), VM: string(a.VM), Host: string(a.Host),
			Target: string(a.Target), Why: a.Why, Gen: a.Gen, Term: c.term, At: decided})
	}
	// What is done once the step's record is written: fences through BMCs, and the power
	// cycle of a host declared fenced otherwise (it has a BMC: it is powered off through it
	// all the same, and on again later).
	var after []func()
	for _, s := range b.PutHostStates {
		h := engine.HostID(s.Host)
		was := c.hostStates[h]
		if s.State == "fenced" && was.State != "fenced" && len(fences) == 0 && !s.Maintenance {
			if hc, ok := c.hostCfg[h]; ok && hc.BMC != nil && !c.fenceInFlight(h, in) {
				off := s.PowerOff
				after = append(after, func() { go c.powerCycle(c.leadCtx, h, off) })
			}
		}
	}
	for _, a := range fences {
		after = append(after, func() { go c.fence(c.leadCtx, a) })
	}
	if c.cfg.Nova != nil {
		for _, s := range b.PutHostStates {
			h, was := engine.HostID(s.Host), c.hostStates[engine.HostID(s.Host)].State
			switch {
			case s.State == "fenced" && was != "fenced":
				after = append(after, func() { go c.novaForceDown(c.leadCtx, h, true) })
			case s.State == "up" && was == "fenced":
				after = append(after, func() { go c.novaForceDown(c.leadCtx, h, false) })
			}
		}
	}
	if q := c.novaq; q != nil {
		for _, j := range novaJobs {
			after = append(after, func() { q.push(j) })
		}
	}
	if c.group != nil {
		c.addToGroup(b, changed) // written by flushGroup
		c.group.after = append(c.group.after, after...)
		if len(res.Actions) > 0 {
			c.group.decide += decided.Sub(arrived)
		}
		return res
	}
	if _, err := c.st.Record(ctx, b); err != nil {
		c.log.Error("what the engine decided could not be recorded: nothing of it is carried out", "err", err,
			"events", len(b.Events), "vms", len(b.PutVMs)+len(b.DeleteVMs), "actions", len(b.Actions))
		c.recordError(err)
		c.recordErr = err
		for _, ch := range changed {
			c.dirty[engine.VMID(ch.name)] = true // written with the next step that succeeds
		}
		return res
	}
	c.recordErr = nil
	clear(c.dirty)
	if b.IDFloor != 0 {
		c.idFloor = b.IDFloor
	}
	for _, s := range b.PutHostStates {
		c.hostStates[engine.HostID(s.Host)] = s
	}
	for _, ch := range changed {
		if ch.gone {
			delete(c.persisted, engine.VMID(ch.name))
		} else {
			c.persisted[engine.VMID(ch.name)] = ch.rec
		}
	}
	for _, fn := range after {
		fn()
	}
	if len(res.Actions) > 0 {
		c.log.Info("orders recorded", "n", len(res.Actions), "decide", decided.Sub(arrived), "record", time.Since(decided))
	}
	return res
}

// hostState is the engine's view of a host, as stored.
func (c *Controller) hostState(h engine.HostID) (store.HostState, bool) {
	hs, ok := c.eng.Host(h)
	if !ok {
		return store.HostState{}, false
	}
	return store.HostState{Host: string(hs.Host), MemMiB: hs.MemMiB, VCPUs: hs.VCPUs, Fencing: hs.Fencing, Cluster: hs.Cluster,
		Reserved: hs.Reserved, State: hs.State, LostAt: hs.LostAt.UTC(), LastSeen: hs.LastSeen.UTC(),
		Maintenance: hs.Maintenance, MaintenanceMigrate: hs.MaintenanceMigrate, PowerOff: hs.PowerOff,
		PoweredOn: hs.PoweredOn, Lease: hs.Lease, FencedLease: hs.FencedLease}, true
}

// fromStoreHost is the engine's host state as stored.
func fromStoreHost(st store.HostState) engine.HostState {
	return engine.HostState{Host: engine.HostID(st.Host), MemMiB: st.MemMiB, VCPUs: st.VCPUs, Fencing: st.Fencing,
		Cluster: st.Cluster, Reserved: st.Reserved, State: st.State, LostAt: st.LostAt, LastSeen: st.LastSeen,
		Maintenance: st.Maintenance, MaintenanceMigrate: st.MaintenanceMigrate, PowerOff: st.PowerOff,
		PoweredOn: st.PoweredOn, Lease: st.Lease, FencedLease: st.FencedLease}
}

// appendEvents writes records to the event log.
func (c *Controller) appendEvents(ctx context.Context, recs []engine.Record) {
	evs := make([]store.Event, 0, len(recs))
	for _, r := range recs {
		evs = append(evs, toStoreEvent(r))
	}
	if _, err := c.st.AppendEvents(ctx, evs); err != nil {
		c.log.Error("event log write failed", "err", err)
	}
}

// vmChange is a VM record to write (or, gone, to delete).
// probeChange is the change of the guest layers the agents watch for a VM (its probes/ key)
// that a record change brings, if any: its guest policy changed, or it was forgotten.
func probeChange(old *store.VM, ch vmChange) (store.ProbeChange, bool) {
	var was, now *store.GuestPolicy
	if old != nil {
		was = old.Policy.Guest
	}
	if !ch.gone {
		now = ch.rec.Policy.Guest
	}
	if (was == nil && now == nil) || (was != nil && now != nil && *was == *now) {
		return store.ProbeChange{}, false
	}
	return store.ProbeChange{VM: ch.name, Guest: now}, true
}

type vmChange struct {
	name string
	rec  store.VM
	gone bool
}

// changedVMs returns the stored records that differ from the engine state of the VMs the
// step may have changed (the engine names them: Output.Touched, a superset) and of those an
// earlier step could not write.
func (c *Controller) changedVMs(out engine.Output) []vmChange {
	ids := slices.Clone(out.Touched)
	for id := range c.dirty {
		ids = append(ids, id)
	}
	var changes []vmChange
	seen := map[engine.VMID]bool{}
	for _, id := range ids {
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		s, protected := c.eng.State(id)
		if !protected {
			if _, had := c.persisted[id]; had {
				changes = append(changes, vmChange{name: string(id), gone: true})
			}
			continue
		}
		rec := ToRecord(s)
		if old, had := c.persisted[id]; had && sameRecord(old, rec) {
			continue
		}
		if err := rec.Validate(); err != nil {
			c.log.Error("the engine state of a vm cannot be stored: it is kept in memory only", "vm", id, "err", err)
			continue
		}
		changes = append(changes, vmChange{name: string(id), rec: rec})
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].name < changes[j].name })
	return changes
}
