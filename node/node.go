// Package node is `hass agent`: one hypervisor host's agent process. It runs package agent
// (the same code every simulated host runs) over this host's libvirt, the cluster's etcd and
// the system clock:
//
//   - libvirt's events and periodic domain lists go through the agent's translator and are
//     written, stamped, into this host's inbox in etcd (one key per report, in order);
//   - the host's liveness is a key attached to an etcd lease, renewed every RenewEvery; a
//     renewal that fails is the agent's cue to fence itself (agent.Tick decides when);
//   - orders of the leading controller arrive by watching orders/<host>/; each is checked
//     against the store (the VM's intent generation and the leader's term) and against this
//     host's lease (an order older than the lease is void), then carried out by agent.Carry;
//   - heartbeats go to the other hosts over UDP on their own network, and the watchdog (a
//     device such as /dev/watchdog, or a stand-in outside the host) is petted every tick;
//   - what the controller needs to start this host's VMs elsewhere is kept in the store: the
//     domain XML of every protected VM defined here, and the host's inventory (its domains
//     with their memory, and whether libvirt answers).
//
// Reports are queued and written by one sender in order, so a slow or lost store never
// holds up the agent's tick (and so its self-fence).
package node

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/guest"
	"github.com/hassproject/hass/hypervisor"
	"github.com/hassproject/hass/lifecycle"
	"github.com/hassproject/hass/store"
	"github.com/hassproject/hass/vmname"
	"github.com/hassproject/hass/wire"
)

// Config configures one host's agent.
type Config struct {
	Host   string
	Store  *store.Store
	Driver hypervisor.Driver
	Logger *slog.Logger
	// MemMiB is the memory the host offers to VMs (0: this machine's, from /proc/meminfo).
	MemMiB int
	// Fencing says the host has a power fence (IPMI) the controller can use.
	Fencing bool
	// VCPUs is how many vCPUs the host offers to VMs (0: this machine's CPUs).
	VCPUs int
	// MigrateURI is the libvirt URI at which the other hosts' libvirtds reach this host's
	// for live migrations ("": this host takes none).
	MigrateURI string
	// LeaseTTL is the lease's time to live; RenewEvery how often it is renewed. The agent
	// fences itself SelfFenceAfter after its last renewal (it must be shorter than LeaseTTL
	// by more than a fence takes).
	LeaseTTL, RenewEvery, SelfFenceAfter time.Duration
	ResyncEvery                          time.Duration
	TickEvery                            time.Duration
	// Heartbeat is the UDP address this host's agent listens on for its peers' heartbeats
	// and publishes in its host record ("" for none: a cluster of one). HeartbeatAdvertise,
	// if set, is the address peers send to (Heartbeat may be a wildcard).
	Heartbeat, HeartbeatAdvertise string
	// Watchdog is a device petted every tick (/dev/watchdog, or a file a stand-in watches).
	Watchdog string
	// ProtectAll offers every domain of this host that nobody unprotected for protection.
	ProtectAll bool
	// StateDir is where the agent keeps its state file (agent-HOST.state: see state.go), for
	// the agent process that runs here next ("": none, and a restarted agent knows nothing
	// of the last one's lease renewals or fence).
	StateDir string
}

// Defaults for a cluster's agents.
const (
	DefaultLeaseTTL       = 5 * time.Second
	DefaultRenewEvery     = time.Second
	DefaultSelfFenceAfter = 3 * time.Second
)

// Node is a running agent.
type Node struct {
	cfg Config
	log *slog.Logger
	st  *store.Store
	drv hypervisor.Driver

	mu      sync.Mutex // guards the agent and everything below
	ag      *agent.Agent
	libvirt string
	members []engine.HostID
	peers   map[engine.HostID]string // heartbeat addresses
	heard   map[engine.HostID]heard
	// peerTimeout: a peer heard longer ago is not heard (the agent's PeerTimeout).
	peerTimeout time.Duration
	// recMembers: the member count the host record last written says (rec.Members).
	recMembers int
	// hearsChanged: the peers heard changed (tickLoop); an inventory says so (watchHypervisor).
	hearsChanged chan struct{}
	prot         map[engine.VMID]bool // protected VMs, as last read from the store
	offered      map[string]bool      // domains offered for protection already (ProtectAll)
	optOut       map[string]bool
	defs         map[string][32]byte // hash of the XML last stored per VM
	lease        store.Lease
	// oldLease: the lease the last agent process held, until the store has said whether it
	// is alive (askLease); kept in the state file meanwhile.
	oldLease store.LeaseID
	leaseRev int64 // the store revision when the current lease's key was written
	token    *store.Token
	exec     *pendingExec

	// The guest layers: the monitor (guarded by mu), the driver's guest agent side, the
	// addresses the guest agents reported (by VM, guarded by mu).
	mon       *guest.Monitor
	ga        hypervisor.GuestAgent
	pinger    *guest.Pinger
	guestAddr map[engine.VMID]string
	guestPol  map[engine.VMID]engine.GuestPolicy // each VM's guest policy, as stored (before the cluster's mask)
	running   map[engine.VMID]bool               // what the last list or event said of each guest-watched VM
	layers    string                             // the guest layers this host's cluster leaves active ("": all)
	ctx       context.Context                    // Run's: the probes' goroutines end with it

	// The state file (state.go): its path ("": none), what the agent last asked to keep, and
	// the keeper's wake-up.
	statePath string
	past      agent.Past
	keep      chan struct{}

	rec     store.Host   // this host's record, as registered
	out     chan outItem // reports to write, in order
	udp     *net.UDPConn
	wd      *os.File
	started time.Time
	vmLocks sync.Map
	wg      sync.WaitGroup
}

type heard struct {
	hb agent.Heartbeat
	at time.Time
}

type pendingExec struct {
	a    engine.Action
	done func(time.Time, agent.Outcome)
}

// outItem is one write for the sender: a report (with the order it answers), or an
// inventory.
type outItem struct {
	seq   uint64
	data  []byte
	order uint64
	inv   *store.Inventory
}

// Run runs the agent until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Store == nil || cfg.Driver == nil {
		return errors.New("agent: no store or no hypervisor driver")
	}
	if err := vmname.CheckHost(cfg.Host); err != nil {
		return fmt.Errorf("agent: host name: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.RenewEvery <= 0 {
		cfg.RenewEvery = DefaultRenewEvery
	}
	if cfg.SelfFenceAfter <= 0 {
		cfg.SelfFenceAfter = DefaultSelfFenceAfter
	}
	if cfg.SelfFenceAfter >= cfg.LeaseTTL {
		return fmt.Errorf("agent: self-fence-after %s must be shorter than the lease TTL %s", cfg.SelfFenceAfter, cfg.LeaseTTL)
	}
	if cfg.ResyncEvery <= 0 {
		cfg.ResyncEvery = 30 * time.Second
	}
	if cfg.TickEvery <= 0 {
		cfg.TickEvery = 250 * time.Millisecond // a self-fence is due at most this late
	}
	if cfg.VCPUs == 0 {
		cfg.VCPUs = runtime.NumCPU()
	}
	if cfg.MemMiB == 0 {
		cfg.MemMiB = hostMemMiB()
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("agent", cfg.Host), st: cfg.Store, drv: cfg.Driver, libvirt: "connecting",
		heard: map[engine.HostID]heard{}, prot: map[engine.VMID]bool{}, offered: map[string]bool{}, optOut: map[string]bool{},
		defs: map[string][32]byte{}, peers: map[engine.HostID]string{}, out: make(chan outItem, 4096), started: time.Now(),
		hearsChanged: make(chan struct{}, 1)}
	acfg := agent.DefaultConfig(engine.HostID(cfg.Host))
	acfg.SelfFenceAfter = cfg.SelfFenceAfter
	// Heartbeats go every tick: a peer missing six of them is not heard from. The
	// controllers' majority settle time must exceed this plus a tick plus a fence.
	acfg.PeerTimeout = 6 * cfg.TickEvery
	// Three ticks of lease tries when the control plane returns (agent.Config.ReleaseGrace):
	// the majority settle time (4 s by default) covers the peer timeout, a tick, these and
	// a fence.
	acfg.ReleaseGrace = 3 * cfg.TickEvery
	n.peerTimeout = acfg.PeerTimeout
	n.members = []engine.HostID{engine.HostID(cfg.Host)}
	n.keep = make(chan struct{}, 1)
	now := time.Now()
	n.past = agent.Past{Renewed: now}
	past := n.resume()
	if past != nil {
		n.past = *past
	}
	n.ag = agent.New(acfg, env{n}, now, past)
	n.ctx = ctx
	n.guestAddr = map[engine.VMID]string{}
	n.guestPol, n.running = map[engine.VMID]engine.GuestPolicy{}, map[engine.VMID]bool{}
	n.pinger = guest.NewPinger()
	n.mon = guest.New(guest.DefaultConfig(), guestEnv{n})
	n.ga, _ = cfg.Driver.(hypervisor.GuestAgent)

	if cfg.Heartbeat != "" {
		addr, err := net.ResolveUDPAddr("udp", cfg.Heartbeat)
		if err != nil {
			return fmt.Errorf("agent: heartbeat address %q: %w", cfg.Heartbeat, err)
		}
		if n.udp, err = net.ListenUDP("udp", addr); err != nil {
			return fmt.Errorf("agent: listen for heartbeats on %s: %w", cfg.Heartbeat, err)
		}
		defer n.udp.Close()
	}
	if cfg.Watchdog != "" {
		f, err := os.OpenFile(cfg.Watchdog, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("agent: open the watchdog %s: %w", cfg.Watchdog, err)
		}
		n.wd = f
		defer f.Close()
	}

	// A restarted agent asks the store about the lease its predecessor held (the state file)
	// before its first Tick: alive, it adopts it; expired or unknown, it fences at once; no
	// answer, its first Tick applies the timing rule to the predecessor's last renewal, and
	// join asks again before anything else (see "A restarted agent" in package agent). It
	// goes on ticking while it joins (fence, watchdog, heartbeats): a host whose lease
	// expired must have destroyed its protected domains before it reports itself up again,
	// however long the store takes to answer.
	resuming := past != nil && !n.askLease(ctx, cfg.RenewEvery)
	n.mu.Lock()
	n.ag.Tick(time.Now())
	n.mu.Unlock()
	n.wg.Add(2)
	go n.keeper(ctx)
	go n.tickLoop(ctx)
	if n.udp != nil {
		n.wg.Add(1)
		go n.receive(ctx)
	}
	if !n.join(ctx, resuming) {
		n.stopLoops()
		return nil
	}

	n.wg.Add(5)
	go n.protectedLoop(ctx)
	go n.sender(ctx)
	go n.watchHypervisor(ctx)
	go n.renewLoop(ctx)
	go n.orderLoop(ctx)
	if n.ga != nil {
		n.wg.Add(1)
		go n.guestLoop(ctx)
	} else {
		n.log.Warn("this hypervisor driver cannot reach guest agents: the guest OS and guest network layers are not watched on this host")
	}
	<-ctx.Done()
	n.stopLoops()
	// A clean stop gives the lease back: the host left, it is not lost. Its VMs keep
	// running; they are not protected until an agent runs here again.
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n.mu.Lock()
	l := n.lease
	n.mu.Unlock()
	n.rec.Left = true
	if err := n.st.PutHost(rctx, n.rec); err != nil {
		n.log.Warn("cannot record that this host leaves: its lease expires instead, and the controller will treat the host as lost", "err", err)
	} else {
		_ = n.st.Revoke(rctx, l)
		// The host left: the next agent starts afresh, as on a first start (a fence due
		// from this one's renewals would only kill VMs nobody restarts elsewhere).
		if n.statePath != "" {
			if err := os.Remove(n.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
				n.log.Warn("cannot remove the agent's state file", "file", n.statePath, "err", err)
			}
		}
	}
	n.log.Info("agent is down")
	return nil
}

// stopLoops waits for the goroutines to end once ctx has.
func (n *Node) stopLoops() {
	if n.udp != nil {
		n.udp.Close()
	}
	n.wg.Wait()
}

// resume reads what the last agent process on this host left in the state file (nil: a
// first start), with the lease it held (n.oldLease), and takes its members and protected
// VMs as known until the store says more.
func (n *Node) resume() *agent.Past {
	if n.cfg.StateDir == "" {
		n.log.Warn("no state directory: an agent process that restarts will not know when this one last renewed its lease or whether it fenced this host")
		return nil
	}
	if err := os.MkdirAll(n.cfg.StateDir, 0o700); err != nil {
		n.log.Error("cannot make the state directory", "dir", n.cfg.StateDir, "err", err)
	}
	n.statePath = stateFile(n.cfg.StateDir, n.cfg.Host)
	past, st, err := readState(n.statePath)
	if err != nil {
		n.log.Error(err.Error()+": the last lease renewal and the lease are unknown (the agent fences once the store answers, or at once while it does not unless the majority rule holds it back)", "file", n.statePath)
	}
	if past == nil {
		return nil
	}
	for _, m := range st.Members {
		if vmname.CheckHost(string(m)) == nil && !slices.Contains(n.members, m) {
			n.members = append(n.members, m)
		}
	}
	for _, v := range st.Protected {
		n.prot[v] = true
	}
	n.log.Info("resuming from the last agent process", "file", n.statePath, "last_renewal", past.Renewed, "fenced", past.Fenced, "lease", fmt.Sprintf("%x", st.Lease))
	n.oldLease = store.LeaseID(st.Lease)
	return past
}

// askLease asks the store, within timeout, whether the lease the last agent process held
// (n.oldLease, 0: unknown) is alive, renewing it if so, and tells the agent (agent.Resumed): alive,
// this process holds it from now on and no fence is due; expired or unknown, the agent
// fences. It returns false when the store did not answer: the agent has been told the
// renewal failed, its timing rule applies, and the question must be asked again before
// this process takes a lease.
func (n *Node) askLease(ctx context.Context, timeout time.Duration) (answered bool) {
	n.mu.Lock()
	id := n.oldLease
	n.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sent := time.Now()
	var err error
	if id == 0 {
		_, err = n.st.AliveHosts(rctx) // nothing to renew: does the store answer?
		if err == nil {
			err = store.ErrLeaseLost
		}
	} else {
		err = n.st.KeepAlive(rctx, store.Lease{ID: id})
	}
	switch {
	case err == nil:
		secs := (n.cfg.LeaseTTL + time.Second - 1) / time.Second
		n.mu.Lock()
		n.lease, n.oldLease = store.Lease{ID: id, TTL: secs * time.Second}, 0
		n.ag.Resumed(sent, true)
		n.mu.Unlock()
		// Orders given before this process are void, as after a grant (nobody carries
		// out what its predecessor may have been doing).
		_, rev, err := n.st.Orders(ctx, n.cfg.Host)
		if err != nil {
			rev = 0
		}
		n.mu.Lock()
		n.leaseRev = rev
		n.mu.Unlock()
		n.log.Info("the lease of the last agent process is alive: this one keeps it (no fence)", "lease", fmt.Sprintf("%x", id))
		return true
	case errors.Is(err, store.ErrLeaseLost):
		n.mu.Lock()
		n.oldLease = 0
		n.ag.Resumed(time.Now(), false)
		n.mu.Unlock()
		return true
	default:
		n.log.Warn("cannot ask the store about the last agent process's lease", "err", err)
		n.mu.Lock()
		n.ag.LeaseFailed(time.Now())
		n.mu.Unlock()
		return false
	}
}

// join registers the host, then takes a lease, unless it kept its predecessor's; all
// retried until the store answers. resuming: the store has not said yet whether the lease
// the last agent process held is alive; join asks first (askLease). It returns false if
// ctx ended first.
func (n *Node) join(ctx context.Context, resuming bool) bool {
	cfg := n.cfg
	for resuming && !n.askLease(ctx, cfg.RenewEvery) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
	adv := cfg.HeartbeatAdvertise
	if adv == "" && n.udp != nil {
		adv = n.udp.LocalAddr().String()
	}
	n.mu.Lock()
	n.rec = store.Host{Name: cfg.Host, MemMiB: cfg.MemMiB, Fencing: cfg.Fencing, Watchdog: cfg.Watchdog != "",
		Heartbeat: adv, VCPUs: cfg.VCPUs, MigrateURI: cfg.MigrateURI, Started: n.started.UTC(), Version: "0.2.0",
		Members: len(n.members)}
	rec := n.rec
	n.mu.Unlock()
	for {
		err := n.st.PutHost(ctx, rec)
		if err == nil {
			n.mu.Lock()
			n.recMembers = rec.Members
			n.mu.Unlock()
			break
		}
		n.log.Warn("cannot register this host yet", "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
	switch {
	case !cfg.Fencing && cfg.Watchdog == "":
		n.log.Warn("this host has no way to be fenced (no power fence, no watchdog): if it is lost, its VMs are NOT started elsewhere automatically (its agent might have died with the VMs still running); give it --watchdog, or a power fence")
	case !cfg.Fencing:
		n.log.Warn("this host has no power fence: if it is lost, its VMs are started elsewhere only once its lease expired and this agent had time to fence itself (it destroys its protected VMs when it cannot renew the lease; the watchdog resets the host if the agent dies)")
	}
	n.refreshCluster(ctx)
	n.mu.Lock()
	kept := n.lease.ID != 0
	n.mu.Unlock()
	for !kept {
		if err := n.grant(ctx); err == nil {
			break
		} else {
			n.log.Warn("cannot take a lease yet", "err", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
	n.log.Info("agent is up", "lease_ttl", cfg.LeaseTTL, "self_fence_after", cfg.SelfFenceAfter, "heartbeat", adv, "watchdog", cfg.Watchdog)
	return true
}

// grant takes a new lease with this host's liveness key. Orders written before it are void.
func (n *Node) grant(ctx context.Context) error {
	n.mu.Lock()
	a := store.Alive{PID: os.Getpid(), Since: time.Now().UTC(), Libvirt: n.libvirt}
	n.mu.Unlock()
	sent := time.Now()
	l, err := n.st.GrantAlive(ctx, n.cfg.Host, n.cfg.LeaseTTL, a)
	if err != nil {
		return err
	}
	_, rev, err := n.st.Orders(ctx, n.cfg.Host)
	if err != nil {
		rev = 0
	}
	n.mu.Lock()
	n.lease, n.leaseRev = l, rev
	n.ag.LeaseRenewed(sent)
	n.mu.Unlock()
	return nil
}

// renewLoop renews the lease every RenewEvery; a lease that expired is replaced.
func (n *Node) renewLoop(ctx context.Context) {
	defer n.wg.Done()
	every(ctx, n.cfg.RenewEvery, func() {
		// Twice within the period: a request that went to a member that just died fails
		// fast enough for the second to reach a live one.
		err := n.renew(ctx, n.cfg.RenewEvery/2)
		if err != nil && !errors.Is(err, store.ErrLeaseLost) {
			err = n.renew(ctx, n.cfg.RenewEvery/2)
		}
		switch {
		case err == nil:
		case errors.Is(err, store.ErrLeaseLost):
			n.log.Warn("the lease expired: taking a new one (orders given before are void)")
			gctx, cancel := context.WithTimeout(ctx, n.cfg.RenewEvery)
			if err := n.grant(gctx); err != nil {
				n.mu.Lock()
				n.ag.LeaseFailed(time.Now())
				n.mu.Unlock()
			} else {
				n.resync(ctx)
			}
			cancel()
		default:
			if ctx.Err() == nil {
				n.log.Warn("lease renewal failed", "err", err)
			}
			n.mu.Lock()
			n.ag.LeaseFailed(time.Now())
			n.mu.Unlock()
		}
	})
}

// renew renews the lease once, within timeout, and tells the agent when it worked (as of
// the moment the request was sent: the lease runs from no earlier than that).
func (n *Node) renew(ctx context.Context, timeout time.Duration) error {
	n.mu.Lock()
	l := n.lease
	n.mu.Unlock()
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	err := n.st.KeepAlive(rctx, l)
	cancel()
	if err == nil {
		n.mu.Lock()
		n.ag.LeaseRenewed(sent)
		n.mu.Unlock()
	}
	return err
}

// tickLoop runs the agent's tick (self-fence, watchdog, heartbeats) and, less often,
// refreshes what the agent knows of the cluster.
func (n *Node) tickLoop(ctx context.Context) {
	defer n.wg.Done()
	// The cluster's membership is read in a goroutine of its own: a store that does not
	// answer must never hold up the tick (the self-fence, the heartbeats, the watchdog).
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		every(ctx, 2*time.Second, func() { n.refreshCluster(ctx) })
	}()
	var hears []string
	var told time.Time
	every(ctx, n.cfg.TickEvery, func() {
		n.mu.Lock()
		holding := n.ag.Holding()
		now := n.hearsNow(time.Now())
		n.mu.Unlock()
		// The peers heard changed: a new inventory says so (at most once a second), so that
		// hass host list shows a heartbeat network that misses a host without waiting for
		// the next resync.
		if !slices.Equal(now, hears) && time.Since(told) >= time.Second {
			hears, told = now, time.Now()
			select {
			case n.hearsChanged <- struct{}{}:
			default:
			}
		}
		if holding {
			// Holding back a fence because the control plane is lost: try the lease right
			// before deciding, so that an agent whose peers got the store back first renews
			// rather than fences (the renewal loop may be between tries).
			_ = n.renew(ctx, n.cfg.TickEvery*4/5)
		}
		n.mu.Lock()
		n.ag.Tick(time.Now())
		n.mu.Unlock()
	})
}

// every runs f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// refreshCluster reads the members, their heartbeat addresses, the protected VMs and the
// opt-outs. When the store cannot be read, the last known ones stay.
func (n *Node) refreshCluster(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	hosts, _, err := n.st.Hosts(rctx)
	if err != nil {
		return
	}
	if layers, err := n.st.GuestLayersOf(rctx, n.cfg.Host); err == nil {
		n.mu.Lock()
		n.setLayers(time.Now(), layers)
		n.mu.Unlock()
	} else {
		n.log.Warn("cannot read which guest layers this host's cluster leaves active: keeping the last known", "err", err)
	}
	opt, err := n.st.OptOuts(rctx)
	n.mu.Lock()
	// Members only ever grow: the agent's majority must be counted over at least every
	// host the controller counts (a host leaves the cluster by an operator's act, which
	// restarts its peers' agents).
	for _, h := range hosts {
		if !slices.Contains(n.members, engine.HostID(h.Name)) {
			n.members = append(n.members, engine.HostID(h.Name))
			n.kick() // kept for the next agent process (state.go)
		}
		if h.Name != n.cfg.Host && h.Heartbeat != "" {
			n.peers[engine.HostID(h.Name)] = h.Heartbeat
		}
	}
	if err == nil {
		n.optOut = opt
	}
	// The host record says how many members this agent counts: the controller declares
	// this host fenced by its lease's expiry only while the hosts without a lease are not
	// a majority of that count either (engine.AddHost.Members). Before the record says
	// more, the controller counts with the smaller number, which only holds it back.
	var rec store.Host
	grown := n.rec.Name != "" && !n.rec.Left && n.recMembers < len(n.members)
	if grown {
		n.rec.Members = len(n.members)
		rec = n.rec
	}
	n.mu.Unlock()
	if grown {
		if err := n.st.PutHost(rctx, rec); err == nil {
			n.mu.Lock()
			n.recMembers = max(n.recMembers, rec.Members)
			n.mu.Unlock()
		} else {
			n.log.Warn("cannot record how many members this agent counts: the controller goes on counting with the last it recorded", "members", rec.Members, "err", err)
		}
	}
}

// protectedLoop keeps the set of protected VMs current, and stores the definition of each
// newly protected VM defined here at once: its host may be lost any moment after.
func (n *Node) protectedLoop(ctx context.Context) {
	defer n.wg.Done()
	for ctx.Err() == nil {
		names, rev, err := n.st.ProtectedNames(ctx)
		if err != nil {
			if !pause(ctx, time.Second) {
				return
			}
			continue
		}
		n.mu.Lock()
		clear(n.prot)
		for _, v := range names {
			n.prot[engine.VMID(v)] = true
		}
		n.kick() // kept for the next agent process (state.go)
		n.mu.Unlock()
		for _, v := range names {
			n.storeDefinition(ctx, v)
		}
		for ch := range n.st.WatchVMs(ctx, rev+1) {
			n.mu.Lock()
			had := n.prot[engine.VMID(ch.Name)]
			if ch.Deleted {
				delete(n.prot, engine.VMID(ch.Name))
			} else {
				n.prot[engine.VMID(ch.Name)] = true
			}
			if had == ch.Deleted {
				n.kick()
			}
			n.mu.Unlock()
			if !ch.Deleted && !had {
				n.storeDefinition(ctx, ch.Name)
			}
		}
		if !pause(ctx, 200*time.Millisecond) {
			return
		}
	}
}

// watchHypervisor follows libvirt's events, resyncing after every (re)connect.
func (n *Node) watchHypervisor(ctx context.Context) {
	defer n.wg.Done()
	resync := time.NewTicker(n.cfg.ResyncEvery)
	defer resync.Stop()
	evs := hypervisor.Watch(ctx, n.drv, hypervisor.Backoff{}, n.log)
	asked := n.st.WatchResync(ctx)
	var rewatch <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-asked:
			if !ok {
				asked, rewatch = nil, time.After(time.Second) // the watch ended (store lost)
				continue
			}
			n.resync(ctx) // a new leader asks for a complete list
		case <-rewatch:
			asked, rewatch = n.st.WatchResync(ctx), nil
		case <-resync.C:
			n.resync(ctx)
		case <-n.hearsChanged:
			n.inventory(ctx)
		case ev, ok := <-evs:
			if !ok {
				return
			}
			if ev.Kind == hypervisor.Resync {
				n.resync(ctx)
				continue
			}
			n.onEvent(ctx, ev)
		}
	}
}

func (n *Node) onEvent(ctx context.Context, ev hypervisor.Event) {
	if ev.Kind == hypervisor.Lifecycle && (ev.Lifecycle == hypervisor.EventDefined || ev.Lifecycle == hypervisor.EventStarted) {
		// A domain defined or started just now: its inventory row and definition are
		// stored at once, not at the next resync (it may be protected, or evacuated, soon).
		defer n.inventory(ctx)
	}
	n.mu.Lock()
	n.ag.Event(ev.At, toLifecycle(ev))
	n.guestEvent(ev)
	n.mu.Unlock()
}

func toLifecycle(ev hypervisor.Event) lifecycle.Event {
	le := lifecycle.Event{Domain: ev.Domain, Type: ev.Lifecycle, Detail: ev.Detail}
	switch ev.Kind {
	case hypervisor.Reboot:
		le.Kind = lifecycle.KindReboot
	case hypervisor.Watchdog:
		le.Kind, le.Watchdog = lifecycle.KindWatchdog, ev.Action
	case hypervisor.IOError:
		le.Kind = lifecycle.KindIOError
	case hypervisor.AgentLifecycle:
		le.Kind, le.Detail = lifecycle.KindAgentLifecycle, ev.AgentState
	default:
		le.Kind = lifecycle.KindLifecycle
	}
	return le
}

// resync lists every domain and reports the complete picture (and the inventory).
func (n *Node) resync(ctx context.Context) {
	n.mu.Lock()
	seq := n.ag.Stamp(time.Now()) // before the list: any event after it is newer than the list
	n.mu.Unlock()
	doms, err := n.drv.List(ctx)
	if err != nil {
		n.setLibvirt(ctx, err.Error())
		n.log.Warn("resync failed", "err", err)
		return
	}
	rows := make([]agent.Row, 0, len(doms))
	for _, d := range doms {
		rows = append(rows, agent.Row{Name: d.Name, State: int(d.State), Reason: d.Reason})
	}
	n.mu.Lock()
	n.libvirt = "connected"
	now := time.Now()
	n.ag.Listed(now, seq, rows)
	// The guest layers follow what the list says runs (an event missed while libvirt was
	// away); a monitor that thinks a guest runs when it does not finds out at its check.
	running := make(map[engine.VMID]bool, len(doms))
	for _, d := range doms {
		running[engine.VMID(d.Name)] = d.State == hypervisor.Running
	}
	for vm := range n.guestPol {
		n.running[vm] = running[vm]
		n.mon.Running(now, vm, running[vm])
	}
	n.mu.Unlock()
	n.publish(ctx, seq, doms)
}

func (n *Node) setLibvirt(ctx context.Context, s string) {
	n.mu.Lock()
	changed := n.libvirt != s
	n.libvirt = s
	n.mu.Unlock()
	if changed {
		n.queueInventory(store.Inventory{Host: n.cfg.Host, At: time.Now().UTC(), Libvirt: s, Domains: []store.DomainRow{}})
	}
}

// inventory lists the domains and publishes them.
func (n *Node) inventory(ctx context.Context) {
	n.mu.Lock()
	seq := n.ag.Stamp(time.Now())
	n.mu.Unlock()
	doms, err := n.drv.List(ctx)
	if err != nil {
		return
	}
	n.publish(ctx, seq, doms)
}

// publish writes the inventory, stores the definitions of protected domains that changed,
// and (ProtectAll) offers new domains for protection.
func (n *Node) publish(ctx context.Context, seq uint64, doms []hypervisor.Domain) {
	inv := store.Inventory{Host: n.cfg.Host, Seq: seq, At: time.Now().UTC(), Libvirt: "connected", Domains: []store.DomainRow{}}
	for _, d := range doms {
		inv.Domains = append(inv.Domains, store.DomainRow{Name: d.Name, UUID: d.UUID, State: int(d.State), Reason: d.Reason, MemKiB: d.MemoryKiB, VCPUs: d.VCPUs})
	}
	n.queueInventory(inv)
	n.mu.Lock()
	prot := make(map[string]bool, len(n.prot))
	for v := range n.prot {
		prot[string(v)] = true
	}
	n.mu.Unlock()
	for _, d := range doms {
		if n.cfg.ProtectAll || prot[d.Name] {
			n.storeDefinition(ctx, d.Name)
		}
	}
	if !n.cfg.ProtectAll {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, d := range doms {
		if n.offered[d.Name] || prot[d.Name] || n.optOut[d.Name] {
			continue
		}
		n.offered[d.Name] = true
		if err := vmname.Check(d.Name); err != nil {
			n.log.Warn("protect-all: a domain whose name hass cannot take is left unprotected", "vm", d.Name, "err", err)
			continue
		}
		st, why := n.ag.Row(agent.Row{Name: d.Name, State: int(d.State), Reason: d.Reason})
		h := engine.HostID(n.cfg.Host)
		p := wire.Protect{
			Protect: engine.Protect{VM: engine.VMID(d.Name), Host: h, MemMiB: int(d.MemoryKiB / 1024), VCPUs: d.VCPUs, Policy: engine.DefaultPolicy(), Desired: wire.DesiredOf(st)},
			Observe: engine.Observe{Host: h, VM: engine.VMID(d.Name), Seq: seq, State: st, Reason: why, At: time.Now()},
		}
		n.queue(p, 0)
	}
}

// storeDefinition keeps a domain's XML in the store, for starting it on another host.
func (n *Node) storeDefinition(ctx context.Context, name string) {
	xml, err := n.drv.XML(ctx, name)
	if err != nil {
		return
	}
	sum := sha256.Sum256([]byte(xml))
	n.mu.Lock()
	same := n.defs[name] == sum
	n.mu.Unlock()
	if same {
		return
	}
	if err := n.st.PutDefinition(ctx, name, xml); err != nil {
		n.log.Warn("cannot store the domain definition", "vm", name, "err", err)
		return
	}
	n.mu.Lock()
	n.defs[name] = sum
	n.mu.Unlock()
}

// queue puts a report in the sender's queue. Callers hold n.mu (order is kept).
func (n *Node) queue(v any, order uint64) {
	data, err := wire.Marshal(v)
	if err != nil {
		n.log.Error("cannot encode a report", "err", err)
		return
	}
	var seq uint64
	switch r := v.(type) {
	case engine.Observe:
		seq = r.Seq
	case engine.Signal:
		seq = r.Seq
	case engine.Snapshot:
		seq = r.Seq
	case engine.ActionResult:
		seq = r.Seq
	case wire.Protect:
		seq = r.Observe.Seq
	}
	if seq == 0 {
		seq = n.ag.Stamp(time.Now())
	}
	select {
	case n.out <- outItem{seq: seq, data: data, order: order}:
	default:
		n.log.Error("the report queue is full (the store has been unreachable for long): a report is dropped; a resync follows once the store answers")
	}
}

func (n *Node) queueInventory(inv store.Inventory) {
	n.mu.Lock()
	inv.Hears = n.hearsNow(time.Now())
	n.mu.Unlock()
	select {
	case n.out <- outItem{inv: &inv}:
	default:
	}
}

// hearsNow names the members heard within the peer timeout, sorted. Callers hold n.mu.
// Every tick calls it: it walks the peers heard once (receive records members only, and
// members never go, so there is no membership to check again).
func (n *Node) hearsNow(now time.Time) []string {
	var out []string
	for h, hd := range n.heard {
		if now.Sub(hd.at) <= n.peerTimeout {
			out = append(out, string(h))
		}
	}
	slices.Sort(out)
	return out
}

// sender writes queued reports in order, retrying each until the store takes it.
func (n *Node) sender(ctx context.Context) {
	defer n.wg.Done()
	for {
		var it outItem
		select {
		case <-ctx.Done():
			return
		case it = <-n.out:
		}
		for attempt := 0; ; attempt++ {
			var err error
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if it.inv != nil {
				err = n.st.PutInventory(wctx, *it.inv)
			} else {
				err = n.st.PutReport(wctx, n.cfg.Host, it.seq, it.data, it.order)
			}
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			if attempt == 0 {
				n.log.Warn("cannot write a report: retrying until the store answers", "err", err)
			}
			if it.inv != nil && len(n.out) > 0 {
				break // a newer inventory may follow; this one is not worth waiting for
			}
			if !pause(ctx, 200*time.Millisecond) {
				return
			}
		}
	}
}

// orderLoop follows this host's orders.
func (n *Node) orderLoop(ctx context.Context) {
	defer n.wg.Done()
	for ctx.Err() == nil {
		pending, rev, err := n.st.Orders(ctx, n.cfg.Host)
		if err != nil {
			if !pause(ctx, time.Second) {
				return
			}
			continue
		}
		for _, a := range pending {
			n.order(ctx, a)
		}
		for a := range n.st.WatchOrders(ctx, n.cfg.Host, rev+1) {
			n.order(ctx, a)
		}
		if !pause(ctx, 200*time.Millisecond) {
			return
		}
	}
}

// order starts carrying out one order, unless it is void: older than this host's lease, or
// no longer current (checked against the store).
func (n *Node) order(ctx context.Context, o store.Action) {
	kind, ok := actKind(o.Kind)
	if !ok {
		n.log.Error("an order of an unknown kind: dropped", "id", o.ID, "kind", o.Kind)
		_ = n.st.DeleteOrder(ctx, n.cfg.Host, o.ID)
		return
	}
	a := engine.Action{ID: o.ID, Kind: kind, VM: engine.VMID(o.VM), Host: engine.HostID(o.Host), Target: engine.HostID(o.Target),
		Gen: o.Gen, Why: o.Why, Term: uint64(o.Term)}
	n.mu.Lock()
	void := o.Rev != 0 && o.Rev <= n.leaseRev
	n.mu.Unlock()
	if void {
		n.log.Info("an order older than this host's lease: dropped", "id", o.ID, "action", a.String())
		_ = n.st.DeleteOrder(ctx, n.cfg.Host, o.ID)
		return
	}
	n.wg.Add(1)
	go n.execute(ctx, a, o.At)
}

// execute checks the order's fencing token, has the agent decide, carries the order out,
// and reports how it went.
func (n *Node) execute(ctx context.Context, a engine.Action, decided time.Time) {
	defer n.wg.Done()
	l, _ := n.vmLocks.LoadOrStore(a.VM, &sync.Mutex{})
	lock := l.(*sync.Mutex)
	lock.Lock()
	defer lock.Unlock()
	received := time.Now()
	var tok store.Token
	var err error
	for try := 0; try < 3; try++ {
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		tok, err = n.st.OrderToken(tctx, string(a.VM))
		cancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		n.log.Warn("cannot check an order against the store: not carried out", "id", a.ID, "err", err)
		return // the order stays; the engine's timers issue it again if it is still wanted
	}
	n.mu.Lock()
	n.token, n.exec = &tok, nil
	n.ag.Order(time.Now(), a) // checks the token, then asks env.Execute
	p := n.exec
	n.token, n.exec = nil, nil
	n.mu.Unlock()
	if p == nil {
		_ = n.st.DeleteOrder(ctx, n.cfg.Host, a.ID)
		return // dropped: the agent said why
	}
	issued := time.Now()
	if strings.HasPrefix(a.Why, "recovery:") {
		n.mu.Lock()
		n.queue(wire.Called{Host: engine.HostID(n.cfg.Host), ID: a.ID, VM: a.VM, At: issued}, 0)
		n.mu.Unlock()
	}
	limit := 60 * time.Second
	if a.Kind == engine.ActMigrate {
		limit = 5 * time.Minute // the engine's migration deadline; the driver aborts the job past it
	}
	actx, cancel := context.WithTimeout(ctx, limit)
	err = agent.Carry(actx, n.drv, a, defs{n.st})
	cancel()
	// since_decision: from the controller's decision to this call (its record-before-act
	// write, the order's way here, the token check); check: the token check alone.
	n.log.Info("action carried out", "action", a.String(), "id", a.ID, "since_decision", issued.Sub(decided),
		"check", issued.Sub(received), "call", time.Since(issued), "err", err)
	o := agent.Outcome{Err: err, Unreached: agent.Unreached(err)}
	if doms, lerr := n.drv.List(ctx); lerr == nil {
		o.Absent = true
		for _, d := range doms {
			if d.Name == string(a.VM) {
				r := agent.Row{Name: d.Name, State: int(d.State), Reason: d.Reason}
				o.Row, o.Absent = &r, false
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	n.mu.Lock()
	p.done(time.Now(), o)
	n.mu.Unlock()
	if a.Kind == engine.ActStart && err == nil {
		n.storeDefinition(ctx, string(a.VM))
	}
}

// actKind parses an action kind's name.
func actKind(s string) (engine.ActKind, bool) {
	for k := engine.ActStart; k <= engine.ActFence; k++ {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

// defs reads stored domain definitions for agent.Carry.
type defs struct{ st *store.Store }

func (d defs) DomainXML(ctx context.Context, vm engine.VMID) (string, error) {
	return d.st.Definition(ctx, string(vm))
}

// MigrationURI reads where the target host's libvirtd takes migrations, from its record.
func (d defs) MigrationURI(ctx context.Context, host engine.HostID) (string, error) {
	h, ok, err := d.st.Host(ctx, string(host))
	switch {
	case err != nil:
		return "", err
	case !ok:
		return "", fmt.Errorf("host %s has no record: its agent never ran", host)
	case h.MigrateURI == "":
		return "", fmt.Errorf("host %s takes no live migrations (its agent runs without --migrate-uri)", host)
	}
	return h.MigrateURI, nil
}

// ---- heartbeats between agents ----------------------------------------------------------

type wireHeartbeat struct {
	From    string    `json:"from"`
	At      time.Time `json:"at"`
	LeaseOK bool      `json:"lease_ok"`
	Fenced  bool      `json:"fenced"`
}

func (n *Node) receive(ctx context.Context) {
	defer n.wg.Done()
	buf := make([]byte, 2048)
	for {
		k, _, err := n.udp.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		var hb wireHeartbeat
		if json.Unmarshal(buf[:k], &hb) != nil || vmname.CheckHost(hb.From) != nil || hb.From == n.cfg.Host {
			continue
		}
		n.mu.Lock()
		if slices.Contains(n.members, engine.HostID(hb.From)) {
			n.heard[engine.HostID(hb.From)] = heard{hb: agent.Heartbeat{From: engine.HostID(hb.From), At: hb.At, LeaseOK: hb.LeaseOK, Fenced: hb.Fenced}, at: time.Now()}
		}
		n.mu.Unlock()
	}
}

// pause waits d, or until ctx ends (false).
func pause(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// hostMemMiB is this machine's memory.
func hostMemMiB() int {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		var kib int
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kib); err == nil {
			return kib / 1024
		}
	}
	return 0
}
