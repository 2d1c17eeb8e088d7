package engine

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hassproject/hass/placement"
)

type hostState uint8

const (
	hostUp      hostState = iota
	hostSuspect           // lease expired: its VMs are in an unknown state until it is fenced
	hostFenced            // fenced (power off confirmed, or lease expiry + self-fence margin passed)
)

var hostStateNames = [...]string{"up", "suspect", "fenced"}

func (s hostState) String() string { return hostStateNames[s] }

type host struct {
	id         HostID
	mem        int
	vcpus      int // 0 = not limited
	fencing    bool
	cluster    string
	reserved   bool // a spare: only recoveries are placed on it
	state      hostState
	lostAt     time.Time // when the lease expired
	lastSeen   time.Time // when the host last renewed it
	lastResync time.Time // when its last complete domain list (Snapshot) was taken
	// fencedAt: when this engine declared it fenced (restored fenced: when restored). From
	// then on nothing runs there: no migration can switch over to it.
	fencedAt   time.Time
	fenceActID uint64
	// unreached: an action for this host came back unreached (its hypervisor could not be
	// reached); the host's next report re-issues what waits for it.
	unreached bool
	// lease is the store's lease ID the host last renewed (0: unknown); fencedLease is the one
	// that was current when it was fenced, which does not bring it back up.
	lease, fencedLease int64
	// maint: in maintenance (see Maintenance); maintMigrate: its VMs are moved away, by the
	// drain pass due at maintNext (zero: nothing left to move). powerOff: the BMC reported it
	// powered off while in maintenance (it is fenced when maintenance ends, if still off).
	maint, maintMigrate, powerOff bool
	maintNext                     time.Time
	// offAt: when the BMC reported it powered off (while in maintenance), this engine's
	// news only (zero after a restore).
	offAt time.Time
	// onAt: when the BMC reported it powered on again while fenced (zero: not since its
	// fence, or not known to this engine). From then on copies may appear there (a user's
	// virsh migrate or start, libvirt's autostart) and run until its agent, started again,
	// fences them and lists: until then no proof that a VM runs nowhere counts it as empty.
	onAt time.Time
	// lapsed: in maintenance, its lease lapsed, and it has not listed its domains since it
	// came back. Its agent may have fenced itself: a VM reported destroyed there meanwhile is
	// taken as fenced, not stopped by a user (a new agent process does not know its own
	// fence's destroys).
	lapsed bool
	// members: how many hosts its agent counts as members (AddHost.Members; 0: not known).
	// heldBack: the engine said it does not declare this suspect fenced by its lease's expiry
	// because of that count (said once per suspicion).
	members  int
	heldBack bool

	related []*vm          // the VMs homed, observed, recovering or copied here (see index.go)
	used    int            // memory of the VMs homed here that are wanted up (and migrating here)
	usedCPU int            // their vCPUs
	groups  map[string]int // their anti-affinity groups, and how many of each
	homed   []sizeClass    // the VMs homed here that are wanted up, counted by size (admission)
	mark    uint64         // admission's stamp on the hosts it counts as lost
}

// hostObs is the newest thing known about a VM on one host.
type hostObs struct {
	host   HostID
	seq    uint64
	state  DomState
	reason Reason
	at     time.Time
	// since is when the copy was first seen in its present condition: live (running, or
	// paused other than as a migration's incoming copy), a migration's incoming copy, down
	// (defined, not running), or absent. For a migration's source that stopped, and for its destination that took over,
	// it is the switch-over; for an incoming copy, when it began to arrive.
	since time.Time
	// what it was before the newest observation
	prevState  DomState
	prevReason Reason
	// arrived: the copy's condition before its present one (before since) was a
	// migration's copy arriving here, incoming or running since the switch-over. Unlike
	// prevState, a list repeating the present condition keeps it.
	arrived bool
	// appeared: the copy's condition before its present one was absent (the domain was
	// not on this host).
	appeared bool
}

// live: the guest exists in memory and runs or could (an incoming migration copy does not
// until the switch-over).
func live(st DomState, r Reason) bool {
	return st.up() && !incomingCopy(st, r)
}

// incomingCopy: a live migration's incoming copy, paused until the switch-over.
func incomingCopy(st DomState, r Reason) bool { return st == DomPaused && r == ReasonMigrated }

// seen notes the new state (st, r), seen at, in since (before it is stored).
func (o *hostObs) seen(st DomState, r Reason, at time.Time) {
	if o.since.IsZero() || o.state == DomUnknown || st == DomUnknown || live(o.state, o.reason) != live(st, r) ||
		incomingCopy(o.state, o.reason) != incomingCopy(st, r) || (o.state == DomAbsent) != (st == DomAbsent) {
		o.arrived = !o.since.IsZero() && (incomingCopy(o.state, o.reason) || o.state == DomRunning && o.reason == ReasonMigrated)
		o.appeared = !o.since.IsZero() && o.state == DomAbsent
		o.since = at
	}
}

type failure struct {
	kind                        FailureKind
	faultAt, detectAt, actionAt time.Time
	attempts                    int
	next                        time.Time // earliest time of the next attempt
	actID                       uint64    // the start in flight, 0 when none
	actHost                     HostID
	actDeadline                 time.Time
	evacuate                    bool // the home host is gone: relocate without spending policy
	noCapacityAlerted           bool
	incomingLogged              bool // said once that it waits for a host that showed an incoming copy
	// awaitList: restored with an attempt in flight on this host; its next complete list
	// judges the attempt (not up there: issued again at once, without waiting for
	// InFlightGrace).
	awaitList HostID
	// What the attempt in flight cost, so that an attempt that never reached the hypervisor
	// can be refunded: actAt is when it was issued (its restart stamp, if actRestart), actReloc
	// says it counted a relocation, actFrom is the home before it moved the VM ("" if it did not).
	actAt      time.Time
	actRestart bool
	actReloc   bool
	actFrom    HostID
	// unreached is the host whose hypervisor the last attempt could not reach; cleared by an
	// attempt that reaches one. The next attempt waits for that host to report, or for next.
	unreached HostID
}

type vm struct {
	id          VMID
	policy      Policy
	mem         int
	vcpus       int
	cluster     string // its home host's cluster when it was protected: it stays inside it
	home        HostID
	desired     Desired
	gen         uint64
	op          *Operation
	opSawDown   bool   // a reboot in flight has seen the guest go down
	opActID     uint64 // the action carrying out op, 0 once answered
	obs         []hostObs
	fail        *failure
	restarts    []time.Time
	relocations int
	failedOn    []hostFailure // where it failed, newest last; placement avoids these hosts within the window
	// dups are the extra copies of the VM that hass found up beside the one it keeps (a
	// split brain): each was alerted once and paused, and is left to the operator until it
	// is seen gone.
	dups       []dupCopy
	errored    bool
	intentSeq  uint64 // the home observation's seq when the user's intent last changed
	vanishedAt time.Time
	unknownLog bool // "waiting" already logged for the current unknown spell
	ambiguous  bool // an alert for an unexplained shutdown was raised for the current stop
	reissue    bool // restored with its op's action unanswered: issue it again once home reports
	// ownPause: the home copy is paused by hass itself (an extra copy it paused that turned
	// out to be the only one, being resumed), not by a user.
	ownPause bool
	// waitWhy says why the VM waits for a host (placement found none, or a maintenance move
	// could not be placed); "" when it does not. Shown as VMStatus.Waiting.
	waitWhy string
	// nowhereWait is the host that kept nowhere from proving the VM runs nowhere the last
	// time it was asked: it is looked at first (at 1,000 hosts, the walk to it took most of
	// each resync's look at each migrating VM).
	nowhereWait HostID

	vmIndex
}

// dupCopy is an extra copy of a VM on host. pauseAt is when hass issued its pause, zero once
// the copy was seen paused (or was paused already).
type dupCopy struct {
	host    HostID
	pauseAt time.Time
}

// dupOn returns the extra copy on h, or nil.
func (v *vm) dupOn(h HostID) *dupCopy {
	for i := range v.dups {
		if v.dups[i].host == h {
			return &v.dups[i]
		}
	}
	return nil
}

// dropDup forgets the extra copy on h; it reports whether there was one.
func (v *vm) dropDup(h HostID) bool {
	for i := range v.dups {
		if v.dups[i].host == h {
			v.dups = slices.Delete(v.dups, i, i+1)
			return true
		}
	}
	return false
}

// hostFailure is one failure of a VM on a host: detected there, or a start refused there.
type hostFailure struct {
	host HostID
	at   time.Time
}

// ErrNotProtected is wrapped by errors about a VM the engine does not protect.
var ErrNotProtected = errors.New("not protected")

// Engine is the operation-aware decision core. It does no I/O and reads no clock: every call
// passes the time. It is not safe for concurrent use, not even its reading methods (NextWake
// and Status tidy its indexes); the daemon serialises calls.
type Engine struct {
	cfg      Config
	hosts    map[HostID]*host
	hostIx   []HostID // sorted
	hostList []*host  // sorted by name
	vms      map[VMID]*vm
	nextID   uint64
	now      time.Time
	out      Output

	// The indexes (index.go).
	vmIx      []VMID // sorted, unless vmIxStale: see sortedVMs
	vmIxStale bool
	dirty     []*vm   // touched in this step
	suspects  []*host // sorted by name
	nFenced   int     // hosts fenced: they are not members for the majority rule
	// noMajority: the suspect hosts are not a strict majority of the members; quorumSince is
	// when that last became true (zero: since the engine started). See MajoritySettle.
	noMajority  bool
	quorumSince time.Time
	// suspectsFell: when a host last stopped being suspect (this engine's news only). A
	// host whose agent counts fewer members than the engine is declared fenced only
	// MajoritySettle after it: until then its agent may still hear that host without a lease.
	suspectsFell time.Time
	restoring    bool // hosts are being restored: the majority is checked once they all are
	waiting      map[*vm]struct{}
	migrating    map[*vm]struct{}
	wake, due    timerHeap
	actVM        map[uint64]*vm
	cand         cands
	candMark     uint64
	admitMark    uint64 // stamps the hosts an admission check counts as lost
	hostGen      uint64 // counts hosts added and removed (see relKey)
	relBuf       []*host

	// listing: the observations being handled come from a host's complete list (a resync),
	// not from events.
	listing bool
	// listedBefore: during a complete list, the listing host had listed before since this
	// engine started (its lastResync was set).
	listedBefore bool

	clusters map[string]*cluster
	planner  placement.Planner
	view     hostsView // the hosts as the planner sees them (reused: no allocation)
	// draining lists the hosts in maintenance whose VMs are being moved away, by name.
	draining []*host
}

// New returns an empty engine.
func New(cfg Config) *Engine {
	return &Engine{cfg: cfg, hosts: map[HostID]*host{}, vms: map[VMID]*vm{}, noMajority: true,
		clusters: map[string]*cluster{DefaultCluster: {name: DefaultCluster}},
		waiting:  map[*vm]struct{}{}, migrating: map[*vm]struct{}{}, actVM: map[uint64]*vm{},
		wake: timerHeap{k: timerWake}, due: timerHeap{k: timerDue}}
}

// Step applies one input at time now and returns what to do. The returned slices are valid
// until the next call.
func (e *Engine) Step(now time.Time, in Input) Output {
	e.step(now, in)
	e.flush()
	if checkIndexes {
		e.checkIndexes()
	}
	return e.out
}

func (e *Engine) step(now time.Time, in Input) {
	if now.After(e.now) {
		e.now = now
	}
	e.out.Actions = e.out.Actions[:0]
	e.out.Log = e.out.Log[:0]
	e.out.Touched = e.out.Touched[:0]
	e.out.Err = nil
	switch in := in.(type) {
	case Tick:
		e.tick()
	case AddHost:
		e.addHost(in)
	case RemoveHost:
		e.removeHost(in)
	case SetCluster:
		e.setCluster(in)
	case DeleteCluster:
		e.deleteCluster(in)
	case Maintenance:
		e.maintenance(in)
	case HostPower:
		e.hostPower(in)
	case HostLease:
		e.hostLease(in)
		if e.out.Err == nil {
			e.issueDueFences()
		}
	case FenceResult:
		e.fenceResult(in)
	case Protect:
		e.protect(in)
	case Unprotect:
		e.unprotect(in)
	case Restore:
		e.restore(in)
	case Request:
		e.request(in)
	case Observe:
		if in.State > DomAbsent || in.Reason > ReasonOwnStop {
			e.out.Err = fmt.Errorf("observe %s on %s: invalid state %d or reason %d", in.VM, in.Host, in.State, in.Reason)
			break
		}
		e.observe(in.Host, in.VM, in.Seq, in.State, in.Reason, in.At)
		e.reachable(in.Host)
	case Signal:
		e.signal(in)
	case Snapshot:
		for _, d := range in.Domains {
			if d.State > DomAbsent || d.Reason > ReasonOwnStop {
				e.out.Err = fmt.Errorf("snapshot of %s: vm %s: invalid state %d or reason %d", in.Host, d.VM, d.State, d.Reason)
				return
			}
		}
		e.snapshot(in)
		e.reachable(in.Host)
	case ActionResult:
		if in.State > DomAbsent || in.Reason > ReasonOwnStop {
			e.out.Err = fmt.Errorf("result of action %d: invalid state %d or reason %d", in.ID, in.State, in.Reason)
			break
		}
		e.actionResult(in)
		if !in.Unreached {
			e.reachable(in.Host)
		}
	default:
		e.out.Err = fmt.Errorf("engine: unknown input %T", in)
	}
}

// issueDueFences orders the power fences that are due (see PowerFenceDelay): on a tick,
// and right after a host's lease changed.
func (e *Engine) issueDueFences() {
	for _, h := range e.suspects {
		if t, ok := e.powerFenceDue(h); ok && !e.now.Before(t) {
			e.issueFence(h)
		}
	}
}

// powerFenceDue says when a suspect host's power fence is to be ordered (ok false: it has
// none, it was ordered, or the hosts without a lease are a majority). See PowerFenceDelay.
func (e *Engine) powerFenceDue(h *host) (time.Time, bool) {
	if !h.fencing || h.fenceActID != 0 || !e.noMajority || h.maint {
		return time.Time{}, false
	}
	from := h.lostAt
	if e.quorumSince.After(from) {
		from = e.quorumSince // hosts regaining their leases together renew as far apart
	}
	return from.Add(e.cfg.PowerFenceDelay), true
}

// Current reports whether an action is still wanted: the VM is still protected and no newer
// user intent has overtaken it. Executors call it right before carrying an action out.
func (e *Engine) Current(a Action) bool {
	if a.Kind == ActFence {
		h := e.hosts[a.Host]
		return h != nil && h.state == hostSuspect && !h.maint
	}
	v := e.vms[a.VM]
	return v != nil && v.gen == a.Gen
}

// VMStatus is the engine's view of one VM, for the API and the CLI.
type VMStatus struct {
	VM          VMID
	Home        HostID
	Desired     Desired
	Observed    DomState
	Reason      Reason
	State       string // healthy, recovering, error, waiting, operation
	Op          *Operation
	Failure     FailureKind
	Restarts    int // in the current window
	Relocations int
	Policy      Policy
	MemMiB      int
	VCPUs       int
	Cluster     string
	// Waiting says why a VM that should run waits ("no host has room: need 2048 MiB, largest
	// free 1024 MiB on h3"); "" when it does not.
	Waiting string
}

// Status returns the view of every protected VM, sorted by name.
func (e *Engine) Status() []VMStatus {
	ids := e.sortedVMs()
	out := make([]VMStatus, 0, len(ids))
	for _, id := range ids {
		out = append(out, e.status(e.vms[id]))
	}
	return out
}

// Get returns the view of one VM, and whether it is protected.
func (e *Engine) Get(id VMID) (VMStatus, bool) {
	v := e.vms[id]
	if v == nil {
		return VMStatus{}, false
	}
	return e.status(v), true
}

func (e *Engine) status(v *vm) VMStatus {
	s := VMStatus{VM: v.id, Home: v.home, Desired: v.desired, Policy: v.policy,
		Restarts: v.restartsInWindow(e.now), Relocations: v.relocations}
	if o := v.obsOn(v.home); o != nil {
		s.Observed, s.Reason = o.state, o.reason
	}
	switch {
	case v.errored:
		s.State = "error"
	case v.fail != nil:
		s.State, s.Failure = "recovering", v.fail.kind
	case v.op != nil:
		s.State = "operation"
		op := *v.op
		s.Op = &op
	case s.Observed == DomUnknown && !(e.hostFenced(v.home) && !v.wantsUp()):
		// Nothing reported yet: no evidence either way. (A VM meant to be down on a fenced
		// host is down, proved.)
		s.State = "unknown"
	default:
		s.State = "healthy"
	}
	s.MemMiB, s.VCPUs, s.Cluster = v.mem, v.vcpus, v.cluster
	s.Waiting = e.waitReason(v)
	return s
}

// waitReason says why v, meant to run, waits: for a host to place it on, for maintenance
// to end, for its host to be fenced. "" when it does not wait.
func (e *Engine) waitReason(v *vm) string {
	if v.dead || v.errored || !v.wantsUp() {
		return ""
	}
	h := e.homeHost(v)
	switch {
	case v.waitWhy != "" && v.fail != nil && v.fail.actID == 0:
		return v.waitWhy
	case v.waitWhy != "" && v.op == nil && h != nil && h.maint && h.maintMigrate:
		return v.waitWhy
	case h == nil:
	case h.state == hostSuspect && h.maint:
		return fmt.Sprintf("its host %s is in maintenance and without a lease: it waits for maintenance to end", h.id)
	case h.state == hostSuspect:
		return fmt.Sprintf("its host %s is suspect: waiting for it to be fenced or back", h.id)
	}
	return ""
}

func (e *Engine) hostFenced(id HostID) bool {
	h := e.hosts[id]
	return h != nil && h.state == hostFenced
}

// Protected reports whether the engine protects vm.
func (e *Engine) Protected(id VMID) bool { _, ok := e.vms[id]; return ok }

// HostState returns "up", "suspect" or "fenced", or "" for an unknown host.
func (e *Engine) HostState(id HostID) string {
	if h := e.hosts[id]; h != nil {
		return h.state.String()
	}
	return ""
}

// NextWake returns the earliest time at which a Tick could change anything, or the zero
// time when nothing is pending. It costs O(log n) per VM whose timer it finds gone stale
// (a failure's next attempt that fell due), else O(1) plus the hosts in suspicion.
func (e *Engine) NextWake() time.Time {
	var w time.Time
	for _, h := range e.draining {
		w = earliest(w, h.maintNext)
	}
	for _, h := range e.suspects {
		if t, ok := e.fenceDue(h); ok {
			w = earliest(w, t)
		}
		if t, ok := e.powerFenceDue(h); ok {
			w = earliest(w, t)
		}
	}
	for {
		v := e.wake.top()
		if v == nil {
			break
		}
		t := v.timers[timerWake].at
		if t.After(e.now) {
			w = earliest(w, t)
			break
		}
		// It may count a failure's next attempt that is due by now, which no longer counts.
		nt := e.wakeAt(v)
		if nt == t {
			w = earliest(w, t)
			break
		}
		e.wake.set(v, nt, !nt.IsZero())
	}
	if checkIndexes {
		if old := e.nextWakeWalk(); !old.Equal(w) {
			panic(fmt.Sprintf("engine: NextWake %s, the walk of every VM says %s", w, old))
		}
	}
	return w
}

func (e *Engine) id() uint64 { e.nextID++; return e.nextID }

func (e *Engine) log(t RecordType, v VMID, h HostID, format string, args ...any) {
	e.out.Log = append(e.out.Log, Record{At: e.now, Type: t, VM: v, Host: h, Msg: fmt.Sprintf(format, args...)})
}

func (e *Engine) act(v *vm, k ActKind, h, target HostID, why string) Action {
	a := Action{ID: e.id(), Kind: k, VM: v.id, Host: h, Target: target, Gen: v.gen, Why: why}
	e.touch(v)
	e.noteAction(a.ID, v)
	e.out.Actions = append(e.out.Actions, a)
	e.log(RecAction, v.id, h, "%s", a.String())
	return a
}

// fenceDue says when a suspect host may be declared fenced by its lease's expiry: once the
// self-fence margin has passed since the expiry and the suspect hosts have not been a
// strict majority of the members for MajoritySettle; ok is false while they are.
func (e *Engine) fenceDue(h *host) (time.Time, bool) {
	if !e.noMajority || h.maint {
		return time.Time{}, false
	}
	t := h.lostAt.Add(e.cfg.SelfFenceMargin)
	if !e.quorumSince.IsZero() {
		if q := e.quorumSince.Add(e.cfg.MajoritySettle); q.After(t) {
			t = q
		}
	}
	if few, held := e.fewMembers(h); held {
		return time.Time{}, false
	} else if few && !e.suspectsFell.IsZero() {
		if q := e.suspectsFell.Add(e.cfg.MajoritySettle); q.After(t) {
			t = q
		}
	}
	return t, true
}

// fewMembers says whether h's agent counts fewer members than the engine does (few), and
// whether by its count it may hold back its self-fence (held): the hosts without a lease
// are a strict majority of the members it counts. Its count is a floor (an agent's members
// only grow), and the hosts it does not count may be any of the engine's: it fences for
// sure only if twice the suspects fit in its count.
func (e *Engine) fewMembers(h *host) (few, held bool) {
	if h.members <= 0 || h.members >= len(e.hostList) {
		// Not said, or it counts every host the engine knows: never fewer than the members,
		// and the cluster-wide rule decides (without a walk of the suspects).
		return false, false
	}
	suspects, members := e.majorityCounts()
	return h.members < members, 2*suspects > h.members
}

// majorityCounts returns the hosts without a lease and the members (the hosts not fenced)
// for the majority rule. A host in maintenance that its BMC reports powered off runs
// nothing and holds nothing back: it is neither, as a fenced one.
func (e *Engine) majorityCounts() (suspects, members int) {
	off := 0
	for _, h := range e.suspects {
		if h.powerOff {
			off++
		}
	}
	return len(e.suspects) - off, len(e.hostList) - e.nFenced - off
}

// checkMajority notes whether the suspect hosts are a strict majority of the members (the
// hosts not fenced), after a host changed state or joined.
func (e *Engine) checkMajority() {
	if e.restoring {
		return
	}
	suspects, members := e.majorityCounts()
	no := 2*suspects <= members
	if no == e.noMajority {
		return
	}
	e.noMajority = no
	if !no {
		e.log(RecAlert, "", "", "%d of the %d members have no lease: hass declares none of them fenced by lease expiry while they are a majority (their agents hold back their fences: the control plane may be lost)",
			suspects, members)
		return
	}
	e.quorumSince = e.now
	e.log(RecAlert, "", "", "the hosts without a lease (%d of %d members) are no longer a majority: hosts whose lease expired are declared fenced once that held for %s",
		suspects, members, e.cfg.MajoritySettle)
}

func (e *Engine) hostLease(in HostLease) {
	h := e.hosts[in.Host]
	if h == nil {
		e.out.Err = fmt.Errorf("lease: unknown host %q", in.Host)
		return
	}
	switch {
	case in.Alive && h.state == hostFenced && in.Lease != 0 && in.Lease == h.fencedLease:
		// The dead host's lease key, which the store keeps until it expires: not the host.
	case in.Alive && h.state != hostUp:
		if in.Lease != 0 {
			h.lease = in.Lease
		}
		h.fencedLease, h.powerOff, h.onAt = 0, false, time.Time{}
		e.log(RecHost, "", h.id, "lease renewed: up again (was %s)%s", h.state, leaseText(h.lease))
		e.setHostState(h, hostUp)
		h.fenceActID = 0
		c := e.candidates()
		defer c.done()
		c.addRelated(h, false)
		for _, v := range c.sorted() {
			if !v.dead && v.home == h.id { // an evaluation may forget a VM
				e.evaluate(v)
			}
		}
	case in.Alive && in.Lease != 0 && in.Lease != h.lease:
		h.lease, h.powerOff = in.Lease, false // a new agent: the host runs again
		e.log(RecHost, "", h.id, "holds lease %d", h.lease)
	case !in.Alive && h.state == hostUp:
		e.setHostState(h, hostSuspect)
		h.lostAt, h.lastSeen = e.now, in.Since
		if h.lastSeen.IsZero() || h.lastSeen.After(e.now) {
			h.lastSeen = e.now
		}
		if h.maint {
			h.lapsed = true
			e.log(RecHost, "", h.id, "lease expired while in maintenance: never fenced, its VMs wait for maintenance to end")
			return
		}
		e.log(RecHost, "", h.id, "lease expired: suspect, its VMs are in an unknown state until it is fenced")
		e.sayHeldBack()
	}
}

func leaseText(l int64) string {
	if l == 0 {
		return ""
	}
	return fmt.Sprintf(", lease %d", l)
}

// issueFence orders a suspect host's power fence.
func (e *Engine) issueFence(h *host) {
	a := Action{ID: e.id(), Kind: ActFence, Host: h.id, Why: "host-down"}
	h.fenceActID = a.ID
	e.out.Actions = append(e.out.Actions, a)
	e.log(RecAction, "", h.id, "%s", a.String())
}

func (e *Engine) fenceResult(in FenceResult) {
	h := e.hosts[in.Host]
	if h == nil || h.state != hostSuspect {
		return
	}
	if !in.OK {
		e.log(RecAlert, "", h.id, "fence failed (%s): waiting for lease expiry + self-fence margin", in.Err)
		return
	}
	if h.maint {
		// Ordered before the host went into maintenance: it is off, and stays in maintenance.
		e.hostPower(HostPower{Host: h.id, Off: true})
		return
	}
	e.fenced(h, "power-off confirmed")
}

func (e *Engine) fenced(h *host, why string) {
	h.fencedLease, h.onAt = h.lease, time.Time{}
	e.setHostState(h, hostFenced)
	e.log(RecHost, "", h.id, "fenced: %s", why)
	// What was known about domains on a fenced host is void: they are gone.
	var homed []*vm
	c := e.candidates()
	defer c.done()
	c.addRelated(h, true)
	if checkIndexes {
		e.checkCands(c, func(v *vm) bool {
			return v.obsOn(h.id) != nil || v.home == h.id || v.dupOn(h.id) != nil ||
				(v.fail != nil && v.fail.actHost == h.id) || (v.op != nil && v.op.Kind == OpMigrate)
		})
	}
	for _, v := range c.sorted() {
		if v.dead {
			continue
		}
		e.touch(v)
		if o := v.obsOn(h.id); o != nil {
			o.seen(DomUnknown, ReasonFenced, e.now)
			o.state, o.reason = DomUnknown, ReasonFenced
		}
		if v.home == h.id {
			v.vanishedAt = time.Time{}
		}
		v.dropDup(h.id) // an extra copy died with its host
		if f := v.fail; f != nil && f.actID != 0 && f.actHost == h.id {
			// That attempt died with the host: no answer will come. Try elsewhere now.
			f.actID, f.next = 0, e.now
		}
		if f := v.fail; f != nil && f.actID == 0 && v.home == h.id {
			// A failure waiting out its restart backoff on this host: host loss is not the
			// VM's fault, so it is evacuated now, with its neighbours.
			f.next = e.now
		}
		if v.home == h.id {
			homed = append(homed, v)
		} else if v.op != nil && v.op.Kind == OpMigrate {
			homed = append(homed, v) // it may have been on its way here
		}
	}
	// Evacuate the most important first, so they get the room that is left.
	slices.SortStableFunc(homed, func(a, b *vm) int { return b.policy.Priority - a.policy.Priority })
	for _, v := range homed {
		e.evaluate(v)
	}
}

func (e *Engine) protect(in Protect) {
	if in.VM == "" {
		e.out.Err = errors.New("protect: vm name is empty")
		return
	}
	if err := in.Policy.Validate(); err != nil {
		e.out.Err = fmt.Errorf("protect %s: %w", in.VM, err)
		return
	}
	if in.Desired > WantStopped {
		e.out.Err = fmt.Errorf("protect %s: desired state %s: want running, paused or stopped", in.VM, in.Desired)
		return
	}
	if in.MemMiB < 0 || in.VCPUs < 0 {
		e.out.Err = fmt.Errorf("protect %s: mem %d MiB and vcpus %d must be >= 0", in.VM, in.MemMiB, in.VCPUs)
		return
	}
	if v := e.vms[in.VM]; v != nil {
		e.touch(v)
		v.policy = in.Policy
		if in.MemMiB > 0 {
			v.mem = in.MemMiB
		}
		if in.VCPUs > 0 {
			v.vcpus = in.VCPUs
		}
		e.log(RecProtect, v.id, v.home, "policy updated max-restarts=%d window=%s on-guest-shutdown=%s", in.Policy.MaxRestarts, in.Policy.Window, in.Policy.OnGuestShutdown)
		return
	}
	h := e.hosts[in.Host]
	if h == nil {
		e.out.Err = fmt.Errorf("protect %s: unknown host %q", in.VM, in.Host)
		return
	}
	if in.Desired != WantStopped {
		if err := e.admitVM(in.VM, in.MemMiB, in.VCPUs, h); err != nil {
			e.out.Err = fmt.Errorf("protect %s: %w", in.VM, err)
			return
		}
	}
	// Host names are stored as the host's own string (the same value), which makes the
	// comparisons of host names that find a VM's observations cheaper.
	v := &vm{id: in.VM, policy: in.Policy, mem: in.MemMiB, vcpus: in.VCPUs, cluster: h.cluster, home: h.id, desired: in.Desired, gen: 1}
	e.vms[in.VM] = v
	e.indexVM(v)
	e.log(RecProtect, v.id, v.home, "desired=%s max-restarts=%d window=%s on-guest-shutdown=%s", v.desired, in.Policy.MaxRestarts, in.Policy.Window, in.Policy.OnGuestShutdown)
}

func (e *Engine) unprotect(in Unprotect) {
	if e.vms[in.VM] == nil {
		e.out.Err = fmt.Errorf("unprotect: vm %q is %w", in.VM, ErrNotProtected)
		return
	}
	e.forget(e.vms[in.VM], "unprotected")
}

func (e *Engine) forget(v *vm, why string) {
	delete(e.vms, v.id)
	e.touch(v)
	v.dead = true
	if n := len(e.vmIx); !e.vmIxStale && n > 0 && e.vmIx[n-1] == v.id {
		e.vmIx = e.vmIx[:n-1]
	} else {
		e.vmIxStale = true
	}
	v.gen++ // nothing issued for it is current any more
	e.log(RecForget, v.id, v.home, "%s", why)
}

func (v *vm) obsOn(h HostID) *hostObs {
	for i := range v.obs {
		if v.obs[i].host == h {
			return &v.obs[i]
		}
	}
	return nil
}

func (v *vm) obsFor(h HostID) *hostObs {
	if o := v.obsOn(h); o != nil {
		return o
	}
	v.obs = append(v.obs, hostObs{host: h})
	return &v.obs[len(v.obs)-1]
}

// failedOnHost notes a failure of v on h at now; failures older than the window are dropped.
func (v *vm) failedOnHost(h HostID, now time.Time) {
	out := v.failedOn[:0]
	for _, f := range v.failedOn {
		if now.Sub(f.at) < v.policy.Window && f.host != h {
			out = append(out, f)
		}
	}
	v.failedOn = append(out, hostFailure{host: h, at: now})
}

// failedRecently reports whether v failed on h within its window.
func (v *vm) failedRecently(h HostID, now time.Time) bool {
	for _, f := range v.failedOn {
		if f.host == h && now.Sub(f.at) < v.policy.Window {
			return true
		}
	}
	return false
}

func (v *vm) restartsInWindow(now time.Time) int {
	n := 0
	for _, t := range v.restarts {
		if now.Sub(t) < v.policy.Window {
			n++
		}
	}
	return n
}

// wantsUp: the user wants the guest to exist in memory (running or suspended).
func (v *vm) wantsUp() bool { return v.desired == WantRunning || v.desired == WantPaused }

// markIntent notes that the user's intent changed as of what is known now: only news newer
// than this may be read as another change of intent.
func (v *vm) markIntent() {
	if o := v.obsOn(v.home); o != nil {
		v.intentSeq = o.seq
	}
}

// stopping: a stop, shutdown or delete is in flight.
func (v *vm) stopping() bool {
	return v.op != nil && (v.op.Kind == OpStop || v.op.Kind == OpShutdown || v.op.Kind == OpDelete)
}
