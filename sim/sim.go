// Package sim is the deterministic simulator: simulated hosts with hypervisors, agents,
// leases, a message bus that delays, reorders and drops, and a virtual clock, driving the
// real decision engine. A seeded workload of user operations and faults (or a scripted
// scenario) runs against it, and an invariant checker scores the engine from the
// simulator's own ground truth, never from what the engine believes.
//
// The same seed gives the same run, byte for byte: there is one random source, one clock,
// and every map is walked in sorted order. The simulator never reads the wall clock.
package sim

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/lifecycle"
	"github.com/hassproject/hass/vclock"
)

// Config describes one simulated run.
type Config struct {
	Seed     uint64
	Hosts    int
	VMs      int
	Duration time.Duration
	Naive    bool // run the naive detector instead of the operation-aware one

	HostMemMiB int
	VMMemMiB   int

	// The agent/controller protocol.
	LeaseTTL        time.Duration
	RenewEvery      time.Duration
	SelfFenceAfter  time.Duration // agent-side: no renewal for this long -> destroy its VMs
	WatchdogTimeout time.Duration // hardware watchdog: host reset when not petted for this long
	ResyncEvery     time.Duration
	AgentBoot       time.Duration // power-on to agent up
	HostReboot      time.Duration // a watchdog reset keeps the host down this long

	// The bus between agents and the controller.
	BusDelay    time.Duration
	BusJitter   time.Duration
	ReorderProb float64 // chance a message is held back up to 3 s (reordering it)
	DropProb    float64 // chance a message is lost

	// Ground truth: a protected VM meant to run that is down longer than this is missed.
	RecoveryDeadline time.Duration

	// Random workload (ignored by scenarios), per VM-hour and per host-hour.
	OpsPerVMHour     float64
	CrashPerVMHour   float64
	PanicPerVMHour   float64
	GuestOffPerVMHr  float64
	HangPerVMHour    float64
	PowerPerHostHr   float64
	PartPerHostHr    float64
	AgentPerHostHr   float64
	LibvirtPerHostHr float64
	DuringOpProb     float64 // chance a fault is aimed into an operation's window
	// MigFaultProb is the chance a migration gets a fault aimed at its switch-over (a
	// destination agent crash, a lost resume event, a lost source stop event; before, at or
	// after the switch-over), and a third of those get a second one of another kind.
	MigFaultProb   float64
	StopInRecovery float64 // chance a user stops a VM right after hass detected its failure
	// ControllerCrashPerHr: the leading controller dies (a new one is elected 1-3 s later);
	// half of the crashes strike in the step of an order, after it is recorded and before
	// it is carried out.
	ControllerCrashPerHr float64
	// EtcdLossPerHr: a member of the store's 3-member etcd cluster is lost for 30 s to 5 min;
	// a quarter of the time a second one follows it for 5 to 60 s (no quorum).
	EtcdLossPerHr float64
	// ControlPlaneLostPerHr: the store and every controller are lost everywhere for 5 s to
	// 5 min (the hosts still hear each other).
	ControlPlaneLostPerHr float64
	// StoreCutPerHr: a random set of 1 to Hosts-1 hosts is cut off from the store and the
	// controller for 20 s to 3 min, while they still hear their peers.
	StoreCutPerHr float64

	// PowerPoll is how often the controller reads the BMC's power status of each host with
	// a fence (IPMI); a host seen off is declared fenced at once (engine.HostPower).
	PowerPoll time.Duration
	// FencePowerOn: the IPMI fencer powers a host it fenced on again this long after the
	// confirmed power-off; the host boots and rejoins with a new lease.
	FencePowerOn time.Duration
	// MaintPerHostHr: an admin puts a host in maintenance (with migration 4 times in 5), and
	// in 3 of 5 cycles shuts it down for a while, powers it on, and takes it out again.
	MaintPerHostHr float64
	// Variants draws, per seed, a cluster layout for the random workload: two clusters of
	// hosts (seeds = 0 mod 3), a reserved host per cluster (seeds = 1 mod 4), admission
	// control with new VMs asking for protection (seeds = 2 mod 5), hard anti-affinity pairs
	// (one-cluster seeds = 1 mod 2). Off, the run is the plain one-cluster workload.
	Variants bool
	// CreatePerHr: in admission runs, new VMs ask to be protected at this rate.
	CreatePerHr float64
	// GuestVMs: the random workload's first GuestVMs VMs are protected with both guest
	// layers (guestPolicy); each of them, per hour, hangs silently (no watchdog), loses its
	// network for good (until it restarts), loses it for 1-5 s, or has its guest agent
	// restart inside it at these rates; ProbeLossProb is the chance any one probe is lost.
	GuestVMs            int
	SilentHangPerVMHr   float64
	NetDiesPerVMHr      float64
	NetBlipPerVMHr      float64
	AgentRestartPerVMHr float64
	ProbeLossProb       float64

	Engine engine.Config
}

// DefaultConfig is the standard cluster and workload `hass sim` uses.
func DefaultConfig() Config {
	return Config{
		Seed: 1, Hosts: 8, VMs: 100, Duration: 24 * time.Hour,
		HostMemMiB: 65536, VMMemMiB: 2048,
		LeaseTTL: 10 * time.Second, RenewEvery: 2 * time.Second, SelfFenceAfter: 7 * time.Second,
		WatchdogTimeout: 8 * time.Second, ResyncEvery: 30 * time.Second,
		AgentBoot: 30 * time.Second, HostReboot: 90 * time.Second,
		BusDelay: time.Millisecond, BusJitter: 20 * time.Millisecond, ReorderProb: 0.02, DropProb: 0.005,
		RecoveryDeadline: 3 * time.Minute,
		OpsPerVMHour:     0.3, CrashPerVMHour: 0.01, PanicPerVMHour: 0.003, GuestOffPerVMHr: 0.004,
		HangPerVMHour: 0.003, PowerPerHostHr: 0.005, PartPerHostHr: 0.01, AgentPerHostHr: 0.02,
		LibvirtPerHostHr: 0.03, DuringOpProb: 0.2, StopInRecovery: 0.1, MigFaultProb: 0.3,
		ControllerCrashPerHr: 0.25, EtcdLossPerHr: 0.25, ControlPlaneLostPerHr: 0.1, StoreCutPerHr: 0.1,
		PowerPoll: 5 * time.Second, FencePowerOn: 20 * time.Second, MaintPerHostHr: 0.01,
		Variants: true, CreatePerHr: 3,
		GuestVMs: 10, SilentHangPerVMHr: 0.02, NetDiesPerVMHr: 0.02, NetBlipPerVMHr: 0.2, AgentRestartPerVMHr: 0.2,
		ProbeLossProb: 0.01,
		Engine:        engine.DefaultConfig(),
	}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Hosts < 1 || c.Hosts > 1000:
		return fmt.Errorf("hosts %d: want 1 to 1000", c.Hosts)
	case c.VMs < 0 || c.VMs > 100000:
		return fmt.Errorf("vms %d: want 0 to 100000", c.VMs)
	case c.Duration <= 0 || c.Duration > 100*365*24*time.Hour:
		return fmt.Errorf("hours %v: want more than 0 and at most 100 years", c.Duration.Hours())
	case c.DropProb < 0 || c.DropProb >= 1:
		return fmt.Errorf("drop probability %v: want 0 <= p < 1", c.DropProb)
	case c.ReorderProb < 0 || c.ReorderProb > 1:
		return fmt.Errorf("reorder probability %v: want 0 <= p <= 1", c.ReorderProb)
	case c.SelfFenceAfter >= c.LeaseTTL:
		return fmt.Errorf("self-fence-after %s must be shorter than the lease TTL %s", c.SelfFenceAfter, c.LeaseTTL)
	}
	return nil
}

// Result is what one run measured. The JSON names are a stable interface.
type Result struct {
	Seed            uint64  `json:"seed"`
	Hosts           int     `json:"hosts"`
	VMs             int     `json:"vms"`
	Hours           float64 `json:"hours"`
	Detector        string  `json:"detector"`
	Operations      int     `json:"operations"`
	Refused         int     `json:"operations_refused"`
	Faults          int     `json:"faults"`
	Recoveries      int     `json:"recoveries"`
	FalseRecoveries int     `json:"false_recoveries"`
	MissedFailures  int     `json:"missed_failures"`
	SplitBrain      int     `json:"split_brain"`
	GaveUp          int     `json:"gave_up"`
	Ambiguous       int     `json:"ambiguous"`
	RecoveryP50ms   int64   `json:"recovery_p50_ms"`
	RecoveryP99ms   int64   `json:"recovery_p99_ms"`
	RecoveryMaxms   int64   `json:"recovery_max_ms"`
	EngineSteps     int     `json:"engine_steps"`
	Actions         int     `json:"actions"`
	Dropped         int     `json:"messages_dropped"`
	StuckTimers     int     `json:"stuck_timers"`
	// StoreDrift counts the steps after which the store did not hold what the engine holds
	// (checked in scenarios and tests only: a new leader would restore something else).
	StoreDrift int `json:"store_drift,omitempty"`
	// MigrationFaults counts the faults aimed at a migration's switch-over (see MigFault).
	MigrationFaults int `json:"migration_faults"`
	// HostFailures counts hosts lost to the cluster: a power loss (a watchdog reset included)
	// or a network cut. Evacuated counts the VMs that went down with their host and ran
	// again on another one; the percentiles are from the host failure to running elsewhere.
	HostFailures    int   `json:"host_failures"`
	Evacuated       int   `json:"evacuated"`
	EvacuationP50ms int64 `json:"evacuation_p50_ms"`
	EvacuationP99ms int64 `json:"evacuation_p99_ms"`
	// ControllerCrashes counts the leading controller's deaths (each followed by an election).
	ControllerCrashes int `json:"controller_crashes"`
	// EtcdMemberLosses counts the store's members lost (see etcdLose).
	EtcdMemberLosses int `json:"etcd_member_losses"`
	// ControlPlaneLosses counts the control plane lost everywhere (store and controllers).
	ControlPlaneLosses int `json:"control_plane_losses"`
	// StoreCuts counts hosts cut off from the store and the controller while they still
	// hear their peers (a minority or a majority of the cluster at a time).
	StoreCuts int `json:"store_cuts"`
	// SelfFences counts agents fencing their host; HoldBacks counts agents holding back a
	// fence under the majority rule (each spell once).
	SelfFences int `json:"self_fences"`
	HoldBacks  int `json:"hold_backs"`
	// FenceKills counts the running VMs self-fences destroyed; NeedlessFenceKills those of
	// them that next ran on the very host that fenced them (nobody restarted them elsewhere
	// meanwhile: the fence only made an outage).
	FenceKills         int `json:"fence_kills"`
	NeedlessFenceKills int `json:"needless_fence_kills"`
	// Clusters is how many clusters the run's hosts were split into; Reserved how many hosts
	// were spares; TolerateHostFailures the admission control of each cluster (0: none).
	Clusters             int `json:"clusters"`
	Reserved             int `json:"reserved_hosts"`
	TolerateHostFailures int `json:"tolerate_host_failures"`
	// GuestFaults counts the faults struck at the guest layers (silent hangs, networks dying,
	// transient network losses, guest agents restarting); GuestProbes the probes the guest
	// monitors sent; GuestReports the failures they verified and reported.
	GuestFaults  int `json:"guest_faults"`
	GuestProbes  int `json:"guest_probes"`
	GuestReports int `json:"guest_reports"`
	// AdmissionRefused counts the protections admission control refused (a refusal is no
	// missed failure: the VM was never protected); Created those it accepted.
	AdmissionRefused int `json:"admission_refused"`
	Created          int `json:"vms_created"`
	// Maintenance counts maintenance cycles; MaintenanceMoves the migrations hass ordered to
	// move VMs off hosts in maintenance; AdminShutdowns the hosts shut down in maintenance.
	Maintenance      int `json:"maintenance_cycles"`
	MaintenanceMoves int `json:"maintenance_moves"`
	AdminShutdowns   int `json:"admin_shutdowns"`
	// IPMIFences counts hosts powered off by a fence order; PowerOns the fencer powering them
	// on again; PowerOffSeen the hosts the controller declared fenced on the BMC's reading.
	IPMIFences   int `json:"ipmi_fences"`
	PowerOns     int `json:"power_ons"`
	PowerOffSeen int `json:"power_off_seen"`
	// The placement and maintenance invariants, each a count of violations (all must be 0):
	// a host in maintenance fenced, or a VM restarted elsewhere because its host in
	// maintenance went down; hass starting or moving a VM outside its cluster; hass placing a
	// VM beside one of its hard anti-affinity group; hass placing a VM on a reserved host
	// other than by recovery.
	MaintenanceViolations  int `json:"maintenance_violations"`
	ClusterViolations      int `json:"cluster_violations"`
	AntiAffinityViolations int `json:"anti_affinity_violations"`
	ReservedViolations     int `json:"reserved_violations"`
	// Violations names the VM (or host) and the moment of each false recovery, split brain,
	// missed failure and placement violation, the first maxViolations of them, so a run
	// that breaks an invariant says where to look (`--trace`, filtered to the VM).
	Violations []Violation `json:"violations,omitempty"`
}

// Violation is one breach of a safety invariant.
type Violation struct {
	Kind  string          `json:"kind"` // false_recovery, split_brain
	VM    engine.VMID     `json:"vm"`
	AtMs  int64           `json:"at_ms"`           // simulated time since the start
	Hosts []engine.HostID `json:"hosts,omitempty"` // where it was started, or runs
}

// maxViolations bounds Result.Violations (the counts go on).
const maxViolations = 20

// violation notes one breach of a safety invariant for Result.Violations.
func (s *Sim) violation(kind string, id engine.VMID, hosts ...engine.HostID) {
	if len(s.res.Violations) >= maxViolations {
		return
	}
	s.res.Violations = append(s.res.Violations, Violation{Kind: kind, VM: id, AtMs: s.now.Sub(s.start).Milliseconds(), Hosts: hosts})
}

type vmTruth struct {
	id        engine.VMID
	policy    engine.Policy
	mem       int
	wants     engine.Desired
	gone      bool          // deleted
	faultAt   time.Time     // open fault interval, zero when none
	faultN    int           // numbers fault intervals, so a deadline check finds its own
	counted   bool          // the open interval was already scored (missed / gave up)
	ambiguous bool          // the fault could not be told from a user's act
	unseen    engine.HostID // the host where the user's last act happened while no agent could see or store it
	// unseenLost: the agent process on unseen that saw the user's act ended before it could
	// store it, and the VM no longer shows it (actsForgotten): no later list from that host
	// tells it, so unseen stays until the user acts again.
	unseenLost bool
	// pending: the user's last act is a virsh shutdown the guest has not acted on yet; until
	// it does, nothing any observer could see says the user wants the VM stopped.
	pending  bool
	attempts []time.Time
	// lostWith is the failed host the VM went down with (its fault interval was opened by
	// that host's power loss or self-fence), "" otherwise; lostAt is when that host failed.
	lostWith engine.HostID
	lostAt   time.Time
	// fencedOn is the host whose self-fence destroyed the VM last, until it runs again.
	fencedOn engine.HostID
	// unseenStop: hass restarted the VM although the user had stopped it where nobody could
	// see (an ambiguous start); the user's stop stays unknown to hass until they act again.
	unseenStop bool
	// cluster is the cluster of the host it was protected on.
	cluster string
	// maintDown is the host in maintenance whose admin shutdown took the VM down: it is owed
	// again when that maintenance ends.
	maintDown engine.HostID
}

// Sim is one simulated run.
type Sim struct {
	cfg Config
	rng *rand.Rand
	// frng draws the control-plane faults (controller crashes, etcd member losses, control
	// plane losses), so that adding them leaves the rest of a seed's workload as it was
	// until the first one strikes.
	frng     *rand.Rand
	start    time.Time
	now      time.Time
	end      time.Time
	q        vclock.Agenda
	eng      *engine.Engine
	hosts    []*host
	hostByID map[engine.HostID]*host
	vms      map[engine.VMID]*vmTruth
	vmIDs    []engine.VMID
	res      Result
	recTimes []time.Duration
	evcTimes []time.Duration
	out      io.Writer // the story, in scenario mode; nil otherwise
	wake     time.Time // earliest scheduled engine tick
	random   bool
	// checkStoreEach compares the store with the engine after every step (scenarios, tests).
	checkStoreEach bool

	hostIDs []engine.HostID
	cpDown  bool            // the control plane is lost everywhere: the controller decides nothing
	cpWhy   map[string]bool // why: see controlPlaneLost
	etcd    etcdCluster     // the store's members
	// cpOutageDone and cpOutageSince measure the time without a control plane (cpOutage).
	cpOutageDone  time.Duration
	cpOutageSince time.Time
	st            store                             // what the controller recorded (etcd)
	ctl           controller                        // the leading controller
	beats         map[engine.HostID]agent.Heartbeat // the last heartbeat each host sent to its peers

	dropNext int // scripted bus faults
	holdNext int
	holdFor  time.Duration

	migFaults map[engine.VMID][]MigFault // armed for the VM's next migration

	nextLease int64   // the store's last lease ID
	created   int     // VMs created during the run
	where     vmHosts // for each VM, the hosts with a domain of it (index.go)
	// domsSorted caches each host's domains in name order (see domIDs).
	domsSorted map[*host][]engine.VMID
	// unseenOn counts, per host, the VMs whose vmTruth.unseen names it (see setUnseen).
	unseenOn map[engine.HostID]int
	// guestVMs are the VMs protected with a guest layer, in the order they were protected.
	guestVMs []engine.VMID
	// groups lists each anti-affinity group's VMs in name order (the hard anti-affinity
	// check looks at the group, not at every VM).
	groups map[string][]engine.VMID
}

// MigFault is a fault aimed at a live migration's switch-over, the moment the destination
// resumes the guest and the source stops it.
//
//	dest-agent-crash  the destination's agent crashes and restarts (resyncing) 1.5 s later:
//	                  before (down from 2 s to 0.5 s before the switch-over: its resync shows
//	                  the incoming copy still paused), at (down from the switch-over, whose
//	                  events it misses, to 1.5 s after), after (down from 0.5 s after)
//	lost-resume       the destination's resume event is lost; the destination resyncs 1 s
//	                  before (its list shows the incoming copy paused), at (1 ms before, within
//	                  any clock skew) or 1 s after the switch-over
//	lost-stop         the source's stop event and the migration's result are lost; the
//	                  destination resyncs before, at or after the switch-over, as above
type MigFault struct {
	Kind string // dest-agent-crash, lost-resume, lost-stop
	When string // before, at, after
}

var migFaultKinds = []string{"dest-agent-crash", "lost-resume", "lost-stop"}
var migFaultWhens = []string{"before", "at", "after"}

// Epoch is the simulated time zero.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newSim(cfg Config, out io.Writer) *Sim {
	ecfg := cfg.Engine
	ecfg.Naive = cfg.Naive
	s := &Sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		frng:  rand.New(rand.NewPCG(cfg.Seed^0x5851f42d4c957f2d, cfg.Seed)),
		start: epoch, now: epoch, end: epoch.Add(cfg.Duration), eng: engine.New(ecfg),
		hostByID: map[engine.HostID]*host{}, vms: map[engine.VMID]*vmTruth{}, out: out,
		migFaults: map[engine.VMID][]MigFault{}, st: newStore(), cpWhy: map[string]bool{}, etcd: newEtcd(), beats: map[engine.HostID]agent.Heartbeat{}}
	s.res.Seed, s.res.Hosts, s.res.VMs, s.res.Hours = cfg.Seed, cfg.Hosts, cfg.VMs, cfg.Duration.Hours()
	s.res.Detector = "aware"
	if cfg.Naive {
		s.res.Detector = "naive"
	}
	return s
}

func (s *Sim) addHost(id engine.HostID, mem int, fencing bool) *host {
	return s.addHostIn(hostSpec{id: id, mem: mem, fencing: fencing})
}

// addHostIn adds a host of a cluster, maybe reserved.
func (s *Sim) addHostIn(sp hostSpec) *host {
	cl := sp.cluster
	if cl == "" {
		cl = engine.DefaultCluster
	}
	h := &host{id: sp.id, mem: sp.mem, fencing: sp.fencing, cluster: cl, reserved: sp.reserved, power: true, agent: true, libvirtd: true, lose: map[engine.VMID]int{},
		doms: map[engine.VMID]*dom{}, stored: map[engine.VMID]engine.Observe{}, renewed: s.now, past: agent.Past{Renewed: s.now},
		lastPet: s.now, leaseAlive: true, armed: true}
	h.ag = s.newAgent(h, nil) // a first start
	s.hosts = append(s.hosts, h)
	s.hostIDs = append(s.hostIDs, sp.id)
	s.hostByID[sp.id] = h
	// A simulated agent reads the members from the world, every host at once
	// (agentEnv.Members): it says no count, and never counts fewer than the engine. A
	// scenario's host that knows only some (knows=) says how many, as the real agent's
	// host record does (engine.AddHost.Members).
	h.knows = sp.knows
	s.step(engine.AddHost{Host: sp.id, MemMiB: sp.mem, VCPUs: sp.vcpus, Fencing: sp.fencing, Cluster: sp.cluster, Reserved: sp.reserved, Members: len(sp.knows)})
	if s.random {
		h.lease = s.newLease() // the random workload tells the engine each host's lease
		s.step(engine.HostLease{Host: sp.id, Alive: true, Lease: h.lease})
	}
	return h
}

func (s *Sim) newLease() int64 { s.nextLease++; return s.nextLease }

// addVM defines a VM on h and asks hass to protect it; false when hass refused (admission
// control): the VM is then not part of the run.
func (s *Sim) addVM(id engine.VMID, h *host, mem int, p engine.Policy, running bool) bool {
	st, r := lifecycle.StateRunning, 1
	want := engine.WantRunning
	if !running {
		st, r, want = lifecycle.StateShutoff, lifecycle.ShutoffShutdown, engine.WantStopped
	}
	if out := s.step(engine.Protect{VM: id, Host: h.id, MemMiB: mem, Policy: p, Desired: want}); out.Err != nil {
		s.trace("user: protect %s refused: %v", id, out.Err)
		return false
	}
	h.doms[id] = &dom{state: st, reason: r}
	s.defined(h, id)
	s.vms[id] = &vmTruth{id: id, policy: p, mem: mem, wants: want, cluster: h.cluster}
	s.watchGuest(id, p.Guest, h)
	i, _ := slices.BinarySearch(s.vmIDs, id) // kept sorted
	s.vmIDs = slices.Insert(s.vmIDs, i, id)
	if g := p.AntiAffinity; g != "" {
		if s.groups == nil {
			s.groups = map[string][]engine.VMID{}
		}
		i, _ := slices.BinarySearch(s.groups[g], id)
		s.groups[g] = slices.Insert(s.groups[g], i, id)
	}
	return true
}

// run drives the clock until the end.
func (s *Sim) run() {
	for _, h := range s.hosts {
		s.snapshot(h) // each agent resyncs when it connects
	}
	s.after(time.Second, s.heartbeat)
	if s.cfg.PowerPoll > 0 {
		s.after(s.cfg.PowerPoll, s.powerPoller)
	}
	for i, h := range s.hosts {
		hh := h
		s.after(time.Duration(i+1)*s.cfg.ResyncEvery/time.Duration(len(s.hosts)+1), func() { s.resync(hh) })
	}
	for s.q.Len() > 0 {
		at, fn := s.q.Next()
		if at.After(s.end) {
			break
		}
		s.now = at
		fn()
	}
	s.now = s.end
	s.finish()
}

// step gives the engine one input and carries out what it decides.
func (s *Sim) step(in engine.Input) engine.Output {
	if s.cpDown {
		// No controller can act: what reaches it is lost (the agents' store has it), and a
		// user's request is refused.
		switch in.(type) {
		case engine.Request, engine.Protect, engine.Maintenance, engine.SetCluster:
			return engine.Output{Err: errors.New("the control plane is unavailable")}
		}
		return engine.Output{}
	}
	if s.ctl.down {
		return s.noLeader(in)
	}
	s.res.EngineSteps++
	out := s.eng.Step(s.now, in)
	acts := slices.Clone(out.Actions)
	recs := slices.Clone(out.Log)
	res := engine.Output{Actions: acts, Log: recs, Err: out.Err, Touched: slices.Clone(out.Touched)}
	for i := range acts {
		acts[i].Term = s.st.term // the runner stamps its orders with its term as it records them
	}
	prev := homesBefore(acts, recs)
	s.record(in, res) // recorded before anything is carried out
	s.checkPlacements(acts, prev)
	if s.checkStoreEach {
		if d := s.checkStore(); d != "" {
			s.res.StoreDrift++
			s.trace("CHECK: store drift after %T: %s", in, d)
		}
	}
	for _, r := range recs {
		s.trace("%s", r)
		s.onRecord(r)
	}
	if s.ctl.crashArmed && len(acts) > 0 {
		s.ctl.crashArmed = false
		s.controllerCrash("after recording its step, before carrying out " + plural(len(acts), "order"))
		return res
	}
	for _, a := range acts {
		s.res.Actions++
		s.execute(a)
	}
	s.scheduleWake(in)
	return res
}

func (s *Sim) scheduleWake(in engine.Input) {
	w := s.eng.NextWake()
	if w.IsZero() || (!s.wake.IsZero() && !w.Before(s.wake) && s.wake.After(s.now)) {
		return
	}
	if !w.After(s.now) {
		if _, tick := in.(engine.Tick); tick {
			// The engine asked to be woken for a moment it has just been shown and did
			// nothing: a bug. Count it and back off instead of spinning.
			s.res.StuckTimers++
			w = s.now.Add(time.Second)
		} else {
			w = s.now.Add(time.Millisecond)
		}
	}
	s.wake = w
	eng := s.eng
	s.at(w, func() {
		if s.eng != eng {
			return // that controller is gone
		}
		if s.wake.Equal(w) {
			s.wake = time.Time{}
		}
		s.step(engine.Tick{})
	})
}

func (s *Sim) trace(format string, args ...any) {
	if s.out == nil {
		return
	}
	fmt.Fprintf(s.out, "%10s %s\n", fmtOffset(s.now.Sub(s.start)), fmt.Sprintf(format, args...))
}

func fmtOffset(d time.Duration) string {
	return fmt.Sprintf("%.3fs", d.Seconds())
}

// ---- carrying out the engine's actions -------------------------------------------------

func (s *Sim) execute(a engine.Action) {
	h := s.hostByID[a.Host]
	if h == nil {
		return
	}
	if a.Kind == engine.ActFence {
		s.after(500*time.Millisecond, func() {
			if !h.fencing {
				s.step(engine.FenceResult{Host: h.id, Err: "no fence device"})
				return
			}
			s.trace("truth: IPMI powers %s off", h.id)
			if h.power {
				s.res.IPMIFences++
			}
			s.powerOff(h, "fenced over IPMI")
			s.step(engine.FenceResult{Host: h.id, OK: true})
			if s.cfg.FencePowerOn > 0 {
				ep := h.epoch
				s.after(s.cfg.FencePowerOn, func() {
					if h.epoch == ep && !h.power {
						s.trace("truth: IPMI powers %s on again", h.id)
						s.res.PowerOns++
						s.powerOn(h)
					}
				})
			}
		})
		return
	}
	s.after(s.cfg.BusDelay, func() {
		if !h.reachable() {
			s.trace("bus: action %d (%s %s) lost: %s unreachable", a.ID, a.Kind, a.VM, h.id)
			return
		}
		h.ag.Order(s.now, a)
	})
}

// newAgent starts the agent process of h: the agent package, over the simulated world. It
// resumes from past, what the last process on h kept (nil: a first start).
func (s *Sim) newAgent(h *host, past *agent.Past) *agent.Agent {
	cfg := agent.DefaultConfig(h.id)
	cfg.SelfFenceAfter = s.cfg.SelfFenceAfter
	s.newMonitor(h) // the agent process's guest monitor, new with it
	s.hangsForgotten(h)
	s.actsForgotten(h)
	return agent.New(cfg, agentEnv{s: s, h: h}, s.now, past)
}

// actsForgotten keeps unseen, as a new agent process starts on h, the user's acts there that
// no agent stored and that the VM no longer shows: a virsh start during a loss of the control
// plane, then the host's power lost before the agent could store it. The process that saw
// the start is gone, and the new one lists the domain shut off, as hass last knew it: nothing
// can tell that the user wanted it running (seed 3 at 1,000 hosts, vm16545).
func (s *Sim) actsForgotten(h *host) {
	if s.unseenOn[h.id] == 0 {
		return
	}
	for _, id := range s.domIDs(h) {
		t, d := s.vms[id], h.doms[id]
		if t == nil || t.gone || t.unseen != h.id || t.unseenLost || d == nil || up(d.state) {
			continue
		}
		if t.wants != engine.WantRunning && t.wants != engine.WantPaused {
			continue
		}
		t.unseenLost = true
		s.trace("truth: the user's start of %s was known only to the agent process on %s that ended before it could store it: nothing can tell it any more", id, h.id)
	}
}

// hangsForgotten marks ambiguous the hangs on h that hass has not heard of as a new agent
// process starts there. A hung guest's watchdog (action none) leaves no trace in libvirt:
// the agent that saw it remembered it (its lists say so), and could not report it yet (the
// control plane lost, or the host cut off from it); with that process gone, no observer can
// tell the hang any more. The same gap as a guest layer's, whose new monitor never saw it
// answer (newMonitor).
func (s *Sim) hangsForgotten(h *host) {
	if s.eng == nil {
		return
	}
	var hung []engine.VMID
	for id, d := range h.doms {
		if d.hung && d.state == lifecycle.StateRunning {
			hung = append(hung, id)
		}
	}
	slices.Sort(hung)
	for _, id := range hung {
		t := s.vms[id]
		if t == nil || t.gone || t.faultAt.IsZero() || t.ambiguous {
			continue
		}
		if st, ok := s.eng.Get(id); !ok || st.Failure != "" {
			continue
		}
		t.ambiguous = true
		s.trace("truth: %s's hang was known only to the agent process on %s that just ended: nothing can tell it any more", id, h.id)
	}
}

// dur is a duration around base: exact in scenarios, spread in random runs.
func (s *Sim) dur(base time.Duration) time.Duration {
	if !s.random {
		return base
	}
	return base/2 + time.Duration(s.rng.Int64N(int64(base)))
}

func (s *Sim) undefine(h *host, id engine.VMID) {
	delete(h.doms, id)
	s.undefined(h, id)
	s.emit(h, id, lc(lifecycle.EvUndefined, 0))
}

// reboot is a hard reboot (destroy, then start) or a reboot inside the guest that libvirt
// reports with a reboot event (soft). current, if set, is asked before the second half of a
// hard reboot whether the order is still current: a stop issued meanwhile wins.
func (s *Sim) reboot(h *host, id engine.VMID, d *dom, hard bool, current func() bool, done func(string)) {
	if d == nil || d.state != lifecycle.StateRunning {
		done("domain is not running")
		return
	}
	if !hard {
		g := d.gen
		s.after(s.dur(3*time.Second), func() {
			if d.gen == g && h.power && d.state == lifecycle.StateRunning {
				s.emit(h, id, lifecycle.Event{Kind: lifecycle.KindReboot})
				done("")
			} else {
				done("domain went down during the reboot")
			}
		})
		return
	}
	h.ag.OwnStop(id) // the agent's own destroy, the first half of a hard reboot
	s.setDom(h, id, d, lifecycle.StateShutoff, lifecycle.ShutoffDestroyed, lc(lifecycle.EvStopped, lifecycle.StoppedDestroyed))
	g := d.gen
	s.after(s.dur(2*time.Second), func() {
		if d.gen != g || !h.power || d.state != lifecycle.StateShutoff {
			done("domain changed during the reboot")
			return
		}
		if current != nil && !current() {
			done("reboot overtaken by a newer intent")
			return
		}
		if d.rebootHang {
			d.rebootHang = false
			s.faultIfWanted(id, "reboot did not come back")
			done("guest did not come back from the reboot")
			return
		}
		s.setDom(h, id, d, lifecycle.StateRunning, 1, lc(lifecycle.EvStarted, lifecycle.StartedBooted))
		done("")
	})
}

func (s *Sim) migrate(src *host, id engine.VMID, d *dom, dst *host, done func(string)) {
	if d == nil || d.state != lifecycle.StateRunning {
		done("domain is not running")
		return
	}
	if dst == nil || !dst.power || !dst.libvirtd {
		done("cannot reach the destination's libvirt")
		return
	}
	g := d.gen
	fail := s.random && s.rng.IntN(20) == 0
	// As libvirt does it: the destination starts an incoming copy, paused, when the
	// migration begins; at the end it resumes as the source stops; on failure it goes.
	nd := dst.doms[id]
	if nd == nil {
		nd = &dom{state: lifecycle.StateShutoff}
		dst.doms[id] = nd
		s.defined(dst, id)
	}
	nd.state, nd.reason = lifecycle.StatePaused, lifecycle.PausedMigration
	nd.gen++
	s.emit(dst, id, lc(lifecycle.EvStarted, lifecycle.StartedMigrated))
	ng := nd.gen
	abort := func(why string) {
		if nd.gen == ng && dst.power && nd.state == lifecycle.StatePaused {
			s.setDom(dst, id, nd, lifecycle.StateShutoff, lifecycle.ShutoffFailed, lc(lifecycle.EvStopped, lifecycle.StoppedFailed))
		}
		done(why)
	}
	sw := s.dur(4 * time.Second)
	faults := s.migFaults[id]
	delete(s.migFaults, id)
	for _, f := range faults {
		s.armMigFault(f, src, dst, id, sw)
	}
	s.after(sw, func() {
		if d.gen != g || !src.power || d.state != lifecycle.StateRunning {
			abort("domain changed during the migration")
			return
		}
		if fail || !dst.power || !dst.libvirtd || nd.gen != ng {
			abort("migration failed: destination went away")
			return
		}
		// Switch-over: the destination resumes as the source stops.
		for _, f := range faults {
			switch f.Kind {
			case "lost-resume":
				dst.lose[id]++
			case "lost-stop":
				src.lose[id] += 2 // its stop event, and the migration's result
			}
		}
		nd.state, nd.reason = lifecycle.StateRunning, 2
		nd.gen++
		s.setDom(src, id, d, lifecycle.StateShutoff, lifecycle.ShutoffMigrated, lc(lifecycle.EvStopped, lifecycle.StoppedMigrated))
		s.emit(dst, id, lc(lifecycle.EvResumed, lifecycle.ResumedMigrated))
		s.afterChange(id)
		done("")
		if len(faults) > 0 { // what was not lost at the switch-over is not lost later
			delete(src.lose, id)
			delete(dst.lose, id)
		}
	})
}

// armMigFault schedules what a MigFault does around a switch-over due sw from now.
func (s *Sim) armMigFault(f MigFault, src, dst *host, id engine.VMID, sw time.Duration) {
	s.res.MigrationFaults++
	s.trace("truth: fault %s %s the switch-over of %s from %s to %s", f.Kind, f.When, id, src.id, dst.id)
	down := s.dur(1500 * time.Millisecond)
	switch f.Kind {
	case "dest-agent-crash":
		var at time.Duration
		switch f.When {
		case "before":
			at = sw - 500*time.Millisecond - down
		case "at":
			at = sw - time.Nanosecond // just before the switch-over: its events are lost
		case "after":
			at = sw + 500*time.Millisecond
		}
		s.after(max(at, 0), func() {
			if !dst.agent {
				return
			}
			s.agentCrash(dst)
			ep := dst.epoch
			s.after(down, func() {
				if dst.epoch == ep {
					s.agentStart(dst)
				}
			})
		})
	case "lost-resume", "lost-stop":
		at := map[string]time.Duration{"before": sw - time.Second, "at": sw - time.Millisecond, "after": sw + time.Second}[f.When]
		s.after(max(at, 0), func() {
			s.trace("truth: agent on %s resyncs", dst.id)
			s.snapshot(dst)
		})
	}
}

// ---- ground truth ----------------------------------------------------------------------

// upCopies counts the hosts where the VM's guest is up.
func (s *Sim) upCopies(id engine.VMID) (n int, running bool) {
	for _, h := range s.hostsOf(id) {
		if d := h.doms[id]; h.power && d != nil && up(d.state) {
			if d.state == lifecycle.StatePaused && d.reason == lifecycle.PausedMigration {
				continue // the incoming copy of a live migration runs no guest code
			}
			n++
			// A hung guest, or one whose network died, runs but does not do its job.
			running = running || (d.state == lifecycle.StateRunning && !d.hung && !d.netDown)
		}
	}
	return n, running
}

// afterChange is called after every domain state change.
func (s *Sim) afterChange(id engine.VMID) {
	t := s.vms[id]
	if t == nil {
		return
	}
	n, running := s.upCopies(id)
	if n > 1 {
		s.res.SplitBrain++
		s.trace("CHECK: split brain: %s runs on %d hosts", id, n)
		var on []engine.HostID
		for _, h := range s.hostsOf(id) {
			if s.upOn(id, h.id) {
				on = append(on, h.id)
			}
		}
		s.violation("split_brain", id, on...)
	}
	if !t.faultAt.IsZero() && n > 0 && (running || t.wants == engine.WantPaused) {
		d := s.now.Sub(t.faultAt)
		if !t.counted {
			s.res.Recoveries++
			s.recTimes = append(s.recTimes, d)
		}
		if t.lostWith != "" && !s.upOn(id, t.lostWith) {
			s.res.Evacuated++
			s.evcTimes = append(s.evcTimes, s.now.Sub(t.lostAt))
		}
		t.lostWith = ""
		if t.fencedOn != "" {
			if s.upOn(id, t.fencedOn) {
				s.res.NeedlessFenceKills++
				s.trace("truth: %s runs again on %s, the host whose fence killed it", id, t.fencedOn)
			}
			t.fencedOn = ""
		}
		s.trace("truth: %s runs again %s after the fault", id, fmtOffset(d))
		t.faultAt, t.counted, t.ambiguous = time.Time{}, false, false
	}
}

// faultIfWanted opens a fault interval: the VM went down without anybody asking.
func (s *Sim) faultIfWanted(id engine.VMID, why string) {
	t := s.vms[id]
	if t == nil || t.gone {
		return
	}
	s.res.Faults++
	if t.wants != engine.WantRunning && t.wants != engine.WantPaused || !t.faultAt.IsZero() {
		return
	}
	t.faultAt, t.counted = s.now, false
	t.ambiguous = t.unseen != "" // nobody could know the user wanted it running
	t.faultN++
	n := t.faultN
	s.trace("truth: fault: %s down (%s)", id, why)
	// The deadline counts the time the control plane was available: while it is lost (or
	// no controller leads) nobody can restart anything, by design.
	outage0 := s.cpOutage()
	var check func(deadline time.Time, outage time.Duration)
	check = func(deadline time.Time, outage time.Duration) {
		if t.faultN != n || t.faultAt.IsZero() || t.counted {
			return
		}
		if extra := s.cpOutage() - outage; extra > 0 {
			s.at(deadline.Add(extra), func() { check(deadline.Add(extra), outage+extra) })
			return
		}
		if s.held(id) {
			// Nobody may restart it now, by design (its host is in maintenance, or no host of
			// its cluster is usable): it is owed a full deadline from when that ends.
			d, o := s.now.Add(s.cfg.RecoveryDeadline), s.cpOutage()
			s.at(d, func() { check(d, o) })
			return
		}
		t.counted = true
		if t.ambiguous {
			s.res.Ambiguous++
			s.trace("CHECK: ambiguous: %s still down; the fault could not be told from a user's act", id)
			return
		}
		s.res.MissedFailures++
		s.violation("missed_failure", id)
		if without := outage - outage0; without > 0 {
			s.trace("CHECK: missed failure: %s still down %s after the fault (%s of it without a control plane)", id, s.now.Sub(t.faultAt), without)
		} else {
			s.trace("CHECK: missed failure: %s still down %s after the fault", id, s.cfg.RecoveryDeadline)
		}
	}
	deadline := s.now.Add(s.cfg.RecoveryDeadline)
	s.at(deadline, func() { check(deadline, outage0) })
}

// cpOutage is how long, in all, the control plane has been unavailable (lost, or no
// controller leading) until now.
func (s *Sim) cpOutage() time.Duration {
	d := s.cpOutageDone
	if !s.cpOutageSince.IsZero() {
		d += s.now.Sub(s.cpOutageSince)
	}
	return d
}

// noteCP keeps cpOutage: called whenever the control plane or the leadership changes.
func (s *Sim) noteCP() {
	down := s.cpDown || s.ctl.down
	switch {
	case down && s.cpOutageSince.IsZero():
		s.cpOutageSince = s.now
	case !down && !s.cpOutageSince.IsZero():
		s.cpOutageDone += s.now.Sub(s.cpOutageSince)
		s.cpOutageSince = time.Time{}
	}
}

// userWants records a user's intent at the moment the user expresses it.
func (s *Sim) userWants(id engine.VMID, d engine.Desired) {
	t := s.vms[id]
	if t == nil {
		return
	}
	t.wants, t.pending, t.unseenStop, t.unseenLost = d, false, false, false
	if d == engine.WantAbsent {
		t.gone = true
	}
	if d != engine.WantRunning && d != engine.WantPaused && !t.faultAt.IsZero() {
		t.faultAt, t.counted, t.ambiguous = time.Time{}, false, false // no longer owed
	}
}

func (s *Sim) onRecord(r engine.Record) {
	s.noteMove(r)
	if r.Type != engine.RecGaveUp {
		return
	}
	t := s.vms[r.VM]
	if t == nil || t.faultAt.IsZero() || t.counted {
		return
	}
	t.counted = true
	n := 0
	for _, a := range t.attempts {
		if s.now.Sub(a) < t.policy.Window {
			n++
		}
	}
	if n >= t.policy.MaxRestarts {
		s.res.GaveUp++
		return
	}
	s.res.MissedFailures++
	s.violation("missed_failure", r.VM)
	s.trace("CHECK: missed failure: hass gave up on %s after only %d start attempts in %s", r.VM, n, t.policy.Window)
}

func (s *Sim) finish() {
	pct := func(ds []time.Duration, p float64) int64 {
		i := int(p*float64(len(ds))+0.5) - 1
		i = max(0, min(i, len(ds)-1))
		return ds[i].Milliseconds()
	}
	if len(s.recTimes) > 0 {
		slices.Sort(s.recTimes)
		s.res.RecoveryP50ms, s.res.RecoveryP99ms = pct(s.recTimes, 0.50), pct(s.recTimes, 0.99)
		s.res.RecoveryMaxms = s.recTimes[len(s.recTimes)-1].Milliseconds()
	}
	if len(s.evcTimes) > 0 {
		slices.Sort(s.evcTimes)
		s.res.EvacuationP50ms, s.res.EvacuationP99ms = pct(s.evcTimes, 0.50), pct(s.evcTimes, 0.99)
	}
}

// upOn says whether the VM's domain is up on host h.
func (s *Sim) upOn(id engine.VMID, h engine.HostID) bool {
	hh := s.hostByID[h]
	if hh == nil || !hh.power {
		return false
	}
	d := hh.doms[id]
	return d != nil && up(d.state)
}

// lostWithHost notes that the VM's fault, if one was opened just now, came with host h.
func (s *Sim) lostWithHost(id engine.VMID, h *host) {
	if t := s.vms[id]; t != nil && !t.faultAt.IsZero() && t.faultAt.Equal(s.now) && t.lostWith == "" {
		t.lostWith, t.lostAt = h.id, h.failedAt
	}
}
