package engine

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// VMState is what the engine holds about one protected VM beyond what agents report: the
// user's intent, the operation in flight, the failure being recovered and the restart
// history. It is everything the engine needs to go on after the process that runs it dies,
// so the daemon stores it (in etcd) whenever it changes, before carrying out any action the
// change ordered, and gives it back with Restore. What agents observed is not part of it:
// a new process learns that again from the agents' resyncs.
type VMState struct {
	VM          VMID
	Home        HostID
	MemMiB      int
	VCPUs       int
	Cluster     string // the cluster it belongs to ("" in states stored before clusters: its home's)
	Policy      Policy
	Desired     Desired
	Gen         uint64 // intent generation: actions of an older one are not current
	Op          *OpState
	Failure     *FailState
	Restarts    []time.Time   // restarts in place, for the policy's window
	FailedOn    []HostFailure // where it failed lately: placement avoids these hosts
	Relocations int
	Errored     bool   // hass gave up: only a user's operation revives it
	IntentSeq   uint64 // the home observation's seq when the user's intent last changed
	Ambiguous   bool   // an alert for an unexplained shutdown was raised for the current stop
}

// HostFailure is a failure of a VM on a host, which placement remembers within the window.
type HostFailure struct {
	Host HostID
	At   time.Time
}

// OpState is an operation in flight, as stored.
type OpState struct {
	ID        uint64
	Kind      OpKind
	Source    Source
	Target    HostID // migrate only
	Started   time.Time
	Deadline  time.Time
	Escalated bool    // a shutdown that outlived its deadline was turned into a destroy
	Prev      Desired // the desired state before it, given back if it fails
	BaseSeq   uint64  // the home observation's seq when it was accepted
	Home      HostID  // the home when it was accepted
	SawDown   bool    // a reboot in flight has seen the guest go down
	Pending   bool    // its action was issued and not answered yet
	Tries     int     // times its action was issued again after its deadline
}

// FailState is a failure being recovered, as stored.
type FailState struct {
	Kind              FailureKind
	FaultAt           time.Time
	DetectAt          time.Time
	ActionAt          time.Time // the first recovery action
	Attempts          int
	Next              time.Time // earliest time of the next attempt
	InFlight          bool      // a recovery action was issued and not answered yet
	ActHost           HostID
	Evacuate          bool // the home host is gone: relocate without spending policy
	NoCapacityAlerted bool
}

// Validate names the first bad field.
func (s VMState) Validate() error {
	switch {
	case s.VM == "":
		return errors.New("vm: empty")
	case s.Home == "":
		return errors.New("home: empty")
	case s.MemMiB < 0:
		return fmt.Errorf("mem_mib %d: must be >= 0", s.MemMiB)
	case s.VCPUs < 0:
		return fmt.Errorf("vcpus %d: must be >= 0", s.VCPUs)
	case s.Desired > WantAbsent:
		return fmt.Errorf("desired %d: unknown", s.Desired)
	case s.Gen == 0:
		return errors.New("gen: must be >= 1")
	case s.Relocations < 0:
		return fmt.Errorf("relocations %d: must be >= 0", s.Relocations)
	case s.Op != nil && s.Op.Tries < 0:
		return fmt.Errorf("op.tries %d: must be >= 0", s.Op.Tries)
	}
	if err := s.Policy.Validate(); err != nil {
		return err
	}
	if op := s.Op; op != nil {
		switch {
		case op.ID == 0:
			return errors.New("op.id: must be >= 1")
		case int(op.Kind) >= len(opNames):
			return fmt.Errorf("op.kind %d: unknown", op.Kind)
		case int(op.Source) >= len(sourceNames):
			return fmt.Errorf("op.source %d: unknown", op.Source)
		case op.Prev > WantAbsent:
			return fmt.Errorf("op.prev %d: unknown", op.Prev)
		case op.Deadline.IsZero():
			return errors.New("op.deadline: missing")
		}
	}
	if f := s.Failure; f != nil {
		switch {
		case f.Kind == "":
			return errors.New("failure.kind: empty")
		case f.Attempts < 0:
			return fmt.Errorf("failure.attempts %d: must be >= 0", f.Attempts)
		case f.DetectAt.IsZero():
			return errors.New("failure.detect_at: missing")
		}
	}
	return nil
}

// State returns what the engine holds about one VM, and whether it protects it.
func (e *Engine) State(id VMID) (VMState, bool) {
	v := e.vms[id]
	if v == nil {
		return VMState{}, false
	}
	s := VMState{VM: v.id, Home: v.home, MemMiB: v.mem, VCPUs: v.vcpus, Cluster: v.cluster, Policy: v.policy, Desired: v.desired, Gen: v.gen,
		Restarts: slices.Clone(v.restarts), Relocations: v.relocations, Errored: v.errored,
		IntentSeq: v.intentSeq, Ambiguous: v.ambiguous}
	for _, f := range v.failedOn {
		s.FailedOn = append(s.FailedOn, HostFailure{Host: f.host, At: f.at})
	}
	if op := v.op; op != nil {
		s.Op = &OpState{Tries: op.tries, ID: op.ID, Kind: op.Kind, Source: op.Source, Target: op.Target, Started: op.Started,
			Deadline: op.Deadline, Escalated: op.escalated, Prev: op.prev, BaseSeq: op.baseSeq, Home: op.home,
			SawDown: v.opSawDown, Pending: v.opActID != 0}
	}
	if f := v.fail; f != nil {
		s.Failure = &FailState{Kind: f.kind, FaultAt: f.faultAt, DetectAt: f.detectAt, ActionAt: f.actionAt,
			Attempts: f.attempts, Next: f.next, InFlight: f.actID != 0, ActHost: f.actHost, Evacuate: f.evacuate,
			NoCapacityAlerted: f.noCapacityAlerted}
	}
	return s, true
}

// LastID is the largest action or operation ID the engine has handed out. IDs stay unique
// across restarts when the next engine is restored with a NextID above it.
func (e *Engine) LastID() uint64 { return e.nextID }

// Restore gives a new engine back what an earlier one held (see VMState), before any
// observation arrives. IDs handed out from now on are larger than NextID and than any ID in
// VMs. A VM whose home host is not known is refused, as is an invalid state or a VM already
// protected; then nothing changes.
//
// An operation in flight is driven again once its home host reports the VM: its action is
// issued again if the VM is not yet where the operation takes it (the old process may have
// died before carrying it out, or it failed; every such action is idempotent), except a
// reboot or a migration, which are not repeated: their deadline decides. A recovery attempt that was in flight is not waited for: the first observation
// says whether it took (the VM runs: recovered) or must be made again.
type Restore struct {
	NextID uint64
	VMs    []VMState
	// Hosts are registered as AddHost would register them, with their state: a suspect host
	// is fenced once LostAt+SelfFenceMargin has passed (and the majority rule allows it; its
	// power fence, if it has one, is ordered again as it would have been); a fenced host's VMs
	// are evacuated. They are restored before VMs, so
	// a VM's home may be one of them. A host the engine knows already takes the stored state.
	// A host in maintenance stays in it (and its VMs go on being moved away, if it said so).
	Hosts []HostState
	// Clusters are restored first, so a host's cluster may be one of them; "default" always
	// exists, and takes its stored tolerance if given.
	Clusters []ClusterState
}

func (Restore) input() {}

func (e *Engine) restore(in Restore) {
	clusters := map[string]bool{}
	for i, s := range in.Clusters {
		if err := s.Validate(); err != nil {
			e.out.Err = fmt.Errorf("restore cluster %d (%q): %w", i, s.Name, err)
			return
		}
		if clusters[s.Name] {
			e.out.Err = fmt.Errorf("restore cluster %q: given twice", s.Name)
			return
		}
		clusters[s.Name] = true
	}
	seen := map[HostID]bool{}
	for i, s := range in.Hosts {
		if err := s.Validate(); err != nil {
			e.out.Err = fmt.Errorf("restore host %d (%q): %w", i, s.Host, err)
			return
		}
		if cl := s.cluster(); e.clusters[cl] == nil && !clusters[cl] {
			e.out.Err = fmt.Errorf("restore host %q: cluster: unknown cluster %q", s.Host, cl)
			return
		}
		if seen[s.Host] {
			e.out.Err = fmt.Errorf("restore host %q: given twice", s.Host)
			return
		}
		seen[s.Host] = true
	}
	for i, s := range in.VMs {
		if err := s.Validate(); err != nil {
			e.out.Err = fmt.Errorf("restore vm %d (%q): %w", i, s.VM, err)
			return
		}
		if e.hosts[s.Home] == nil && !seen[s.Home] {
			e.out.Err = fmt.Errorf("restore vm %q: home: unknown host %q", s.VM, s.Home)
			return
		}
		if e.vms[s.VM] != nil {
			e.out.Err = fmt.Errorf("restore vm %q: already protected", s.VM)
			return
		}
		if s.Desired == WantAbsent && s.Op == nil && !s.Errored { // (a delete that failed leaves it in error)
			e.out.Err = fmt.Errorf("restore vm %q: desired absent with no delete in flight", s.VM)
			return
		}
	}
	if in.NextID > e.nextID {
		e.nextID = in.NextID
	}
	for _, s := range in.VMs {
		if s.Op != nil {
			e.nextID = max(e.nextID, s.Op.ID)
		}
	}
	for _, c := range in.Clusters {
		e.restoreCluster(c)
	}
	var fenced []*host
	e.restoring = true
	for _, s := range in.Hosts {
		if h := e.restoreHost(s); h.state == hostFenced {
			fenced = append(fenced, h)
		}
	}
	e.restoring = false
	if len(in.Hosts) > 0 {
		e.checkMajority()
		// How long the hosts without a lease have not been a majority is not stored: a new
		// engine counts it from now (an agent may be holding back on stale heartbeats).
		e.quorumSince = e.now
	}
	var restored []*vm
	for _, s := range in.VMs {
		cl := s.Cluster
		if cl == "" {
			cl = e.hosts[s.Home].cluster
		}
		v := &vm{id: s.VM, policy: s.Policy, mem: s.MemMiB, vcpus: s.VCPUs, cluster: cl, home: e.hosts[s.Home].id, desired: s.Desired, gen: s.Gen,
			restarts: slices.Clone(s.Restarts), relocations: s.Relocations, errored: s.Errored,
			intentSeq: s.IntentSeq, ambiguous: s.Ambiguous}
		for _, f := range s.FailedOn {
			v.failedOn = append(v.failedOn, hostFailure{host: f.Host, at: f.At})
		}
		if op := s.Op; op != nil {
			v.op = &Operation{ID: op.ID, Kind: op.Kind, VM: s.VM, Source: op.Source, Phase: PhaseRunning,
				Target: op.Target, Started: op.Started, Deadline: op.Deadline, escalated: op.Escalated,
				prev: op.Prev, baseSeq: op.BaseSeq, home: op.Home, tries: op.Tries}
			v.opSawDown = op.SawDown
			v.reissue = reissuable(v.op)
			e.nextID = max(e.nextID, op.ID)
		}
		if f := s.Failure; f != nil {
			v.fail = &failure{kind: f.Kind, faultAt: f.FaultAt, detectAt: f.DetectAt, actionAt: f.ActionAt,
				attempts: f.Attempts, next: f.Next, actHost: f.ActHost, evacuate: f.Evacuate,
				noCapacityAlerted: f.NoCapacityAlerted}
			if f.InFlight {
				// Issued again InFlightGrace after the restore, not in the restore step: its
				// answer may be on its way (the agent carried it out just before the last
				// controller died), and a runner asks every agent for a complete list when it
				// takes over; an answered action is not repeated.
				v.fail.next = e.now.Add(max(e.cfg.InFlightGrace, time.Millisecond))
				v.fail.awaitList = f.ActHost
			}
		}
		e.vms[s.VM] = v
		e.indexVM(v)
		what := "desired=" + v.desired.String()
		if v.op != nil {
			what += fmt.Sprintf(", %s id=%d in flight until %s", v.op.Kind, v.op.ID, v.op.Deadline.UTC().Format(time.RFC3339))
		}
		if v.fail != nil {
			what += fmt.Sprintf(", recovering from %s (%d attempts)", v.fail.kind, v.fail.attempts)
		}
		if v.errored {
			what += ", in error"
		}
		e.log(RecProtect, v.id, v.home, "restored: %s", what)
		restored = append(restored, v)
	}
	// The VMs of a host that was fenced already are evacuated (or go on being): nothing
	// will report them from there.
	for _, v := range restored {
		if !v.dead && slices.Contains(fenced, e.hosts[v.home]) {
			e.evaluate(v)
		}
	}
}

// HostState is what the engine holds about a host, as a runner stores it. Every change of
// any of it is logged as a RecHost record naming the host, so a runner that stores
// e.Host(r.Host) for each RecHost record of a step keeps the stored copy exact.
type HostState struct {
	Host     HostID
	MemMiB   int
	VCPUs    int // 0 = not limited
	Fencing  bool
	Cluster  string    // "" reads as "default"
	Reserved bool      // a spare: only recoveries are placed on it
	State    string    // "up", "suspect" or "fenced"
	LostAt   time.Time // suspect or fenced: when its lease expired
	LastSeen time.Time // when it last renewed its lease, as the engine knows
	// Maintenance: in maintenance; MaintenanceMigrate: its VMs are moved away; PowerOff: the
	// BMC reported it powered off while in maintenance.
	Maintenance        bool
	MaintenanceMigrate bool
	PowerOff           bool
	// PoweredOn: fenced, and the BMC reported it powered on since its fence: a VM may land
	// there until its agent lists (restored: as of the restore).
	PoweredOn bool
	// Lapsed: in maintenance, its lease lapsed and it has not listed its domains since (a
	// VM reported destroyed there is taken as fenced by its agent).
	Lapsed bool
	// Lease is the lease ID it last renewed (0: unknown); FencedLease, for a fenced host, the
	// one current when it was fenced, which does not bring it back up.
	Lease       int64
	FencedLease int64
}

// cluster is the host's cluster, "default" when none is stored.
func (s HostState) cluster() string {
	if s.Cluster == "" {
		return DefaultCluster
	}
	return s.Cluster
}

// Validate names the first bad field.
func (s HostState) Validate() error {
	switch {
	case s.Host == "":
		return errors.New("host: empty")
	case s.MemMiB < 0:
		return fmt.Errorf("mem_mib %d: must be >= 0", s.MemMiB)
	case s.VCPUs < 0:
		return fmt.Errorf("vcpus %d: must be >= 0", s.VCPUs)
	case s.MaintenanceMigrate && !s.Maintenance:
		return errors.New("maintenance_migrate: set for a host not in maintenance")
	case s.PowerOff && !s.Maintenance:
		return errors.New("power_off: set for a host not in maintenance")
	case s.PoweredOn && s.State != "fenced":
		return fmt.Errorf("powered_on: set for a %s host", s.State)
	}
	if _, ok := parseHostState(s.State); !ok {
		return fmt.Errorf("state %q: want up, suspect or fenced", s.State)
	}
	if s.State != "up" && s.LostAt.IsZero() {
		return fmt.Errorf("lost_at: missing for a %s host", s.State)
	}
	if s.FencedLease != 0 && s.State != "fenced" {
		return fmt.Errorf("fenced_lease: set for a %s host", s.State)
	}
	return nil
}

func parseHostState(s string) (hostState, bool) {
	for i, n := range hostStateNames {
		if n == s {
			return hostState(i), true
		}
	}
	return 0, false
}

// Host returns what the engine holds about a host, and whether it knows it.
func (e *Engine) Host(id HostID) (HostState, bool) {
	h := e.hosts[id]
	if h == nil {
		return HostState{}, false
	}
	return h.export(), true
}

// Hosts returns what the engine holds about every host, sorted by name.
func (e *Engine) Hosts() []HostState {
	out := make([]HostState, 0, len(e.hostList))
	for _, h := range e.hostList {
		out = append(out, h.export())
	}
	return out
}

func (h *host) export() HostState {
	s := HostState{Host: h.id, MemMiB: h.mem, VCPUs: h.vcpus, Fencing: h.fencing, Cluster: h.cluster, Reserved: h.reserved,
		State: h.state.String(), LastSeen: h.lastSeen, Maintenance: h.maint, MaintenanceMigrate: h.maintMigrate,
		PowerOff: h.powerOff, Lapsed: h.lapsed, Lease: h.lease, FencedLease: h.fencedLease, PoweredOn: !h.onAt.IsZero()}
	if h.state != hostUp {
		s.LostAt = h.lostAt
	}
	return s
}

// restoreHost registers a stored host with its state.
func (e *Engine) restoreHost(s HostState) *host {
	st, _ := parseHostState(s.State)
	h := e.hosts[s.Host]
	if h == nil {
		h = &host{id: s.Host}
		e.insertHost(h)
	}
	h.mem, h.vcpus, h.fencing, h.cluster, h.reserved = s.MemMiB, s.VCPUs, s.Fencing, s.cluster(), s.Reserved
	h.maint, h.maintMigrate, h.powerOff, h.lapsed = s.Maintenance, s.MaintenanceMigrate, s.PowerOff, s.Lapsed
	h.lease, h.fencedLease = s.Lease, s.FencedLease
	h.onAt = time.Time{}
	if s.PoweredOn && st == hostFenced {
		h.onAt = e.now // a VM may have landed there: its next list says
	}
	if h.maintMigrate {
		e.startDraining(h) // the first tick moves what is left
	} else {
		e.stopDraining(h)
	}
	h.lastSeen, h.lostAt, h.fenceActID = s.LastSeen, time.Time{}, 0
	if st != hostUp {
		h.lostAt = s.LostAt
	}
	e.setHostState(h, st)
	what := ""
	switch st {
	case hostSuspect:
		what = fmt.Sprintf(", lease expired at %s", h.lostAt.UTC().Format(time.RFC3339Nano))
	case hostFenced:
		what = fmt.Sprintf(", fenced after its lease expired at %s", h.lostAt.UTC().Format(time.RFC3339Nano))
	}
	if h.maint {
		what += ", in maintenance"
		if h.maintMigrate {
			what += " (moving its VMs away)"
		}
	}
	e.log(RecHost, "", h.id, "restored: %s %s%s", st, hostText(h), what)

	return h
}

// reissuable says whether an operation's action is issued again after a restore: every one
// but a reboot or a migration, which are not repeated (their deadline decides).
func reissuable(op *Operation) bool { return op.Kind != OpReboot && op.Kind != OpMigrate }
