package engine

import (
	"fmt"
	"strings"
	"time"
)

// Input is anything the engine is told. Exactly the types in this file implement it.
type Input interface{ input() }

// Tick only advances time: deadlines, backoff timers and fence margins are checked.
type Tick struct{}

// AddHost registers a host the engine may place VMs on, or updates one it knows. A host
// cannot move to another cluster while protected VMs are homed on it.
type AddHost struct {
	Host   HostID
	MemMiB int
	VCPUs  int // 0 = not limited
	// Fencing says the host has a power fence (IPMI): the engine asks for a power-off instead
	// of waiting for the self-fence margin.
	Fencing bool
	// Cluster is the cluster the host belongs to ("" means "default"); it must exist (see
	// SetCluster). Recovery stays inside a VM's cluster.
	Cluster string
	// Reserved makes the host a spare: only recoveries (evacuations, relocations) are placed
	// on it, and they go there first. A user's start or migration with no host named, and a
	// maintenance move, never go to a spare; a user's migration naming it is refused. A VM
	// that already lives on a spare (it was evacuated there) is started and restarted there
	// like anywhere else.
	Reserved bool
	// Members is how many hosts the host's agent counts as members for its majority rule,
	// itself included (0: not known). The agent holds back its self-fence while it and the
	// peers it hears without a lease are a strict majority of the members it counts; one
	// that counts fewer members than the engine (it joined a moment ago, or cannot read the
	// host list) may hold back where the engine's count says it fences. So the engine
	// declares such a host fenced by its lease's expiry only while the hosts without a lease
	// are not a majority of its count either (see fenceDue).
	Members int
}

// RemoveHost forgets a host. It is refused (Output.Err, naming up to three VMs) while a
// protected VM is homed there, a recovery attempt is in flight there, or a migration goes
// there.
type RemoveHost struct{ Host HostID }

// DefaultCluster is the cluster a host belongs to when none is named. It always exists.
const DefaultCluster = "default"

// SetCluster creates a cluster or updates it. TolerateHostFailures is its admission
// control: a VM is protected (or a stopped one started) only while every protected VM of the
// cluster could still be restarted after losing that many hosts (see AdmissionError).
// Raising it is accepted even when the cluster does not meet it today: an alert says so.
type SetCluster struct {
	Name                 string
	TolerateHostFailures int
}

// DeleteCluster deletes a cluster with no host; "default" cannot be deleted.
type DeleteCluster struct{ Name string }

// Maintenance puts a host in maintenance (On) or takes it out. In maintenance the host
// takes no new placements, hass never fences it and holds every recovery of the VMs homed
// there (its lease may lapse: the admin may shut it down). With Migrate, each protected VM
// running there is live-migrated away, highest priority first, placed like an evacuation
// (but never on a spare); one that cannot be placed stays, its Waiting says why, and it is
// tried again every RetryPlacement. Off: the host is like any other again; a VM meant to run
// that is down there (it went down with the host) is restarted there as its agent reports
// it, and a host the BMC reported powered off meanwhile is fenced at once.
type Maintenance struct {
	Host    HostID
	On      bool
	Migrate bool
}

// HostPower is the host's chassis power status as its BMC reports it, read (and read again
// to be sure) by the controller. Off declares the host fenced at once ("power off (BMC)"),
// whether its lease still runs or not, exactly like a confirmed FenceResult: nothing runs on
// a host without power, so its VMs are evacuated at once. A host in maintenance is not fenced
// (it is noted, and fenced when maintenance ends if still off; On undoes the note). A
// fenced host reported On again may run what lands there (a user's virsh migrate, before
// its agent starts and fences it): until its agent lists its domains after that, no proof
// that a VM runs nowhere counts it as empty. Otherwise On changes nothing: the host comes
// back up with a new lease.
type HostPower struct {
	Host HostID
	Off  bool
}

// HostLease reports a host's lease: kept (Alive) or expired. Since, on an expiry, is when
// the host last renewed it: the latest moment it is known to have been well, which recovery
// statistics take as the fault time.
//
// Lease is the store's lease ID (0: unknown). A host fenced while lease L was current does
// not come back up on HostLease{Alive: true, Lease: L}: a new leader may still read the
// dead host's lease key before it expires. Only a different lease (or any, when none was
// known at the fence) brings it up.
type HostLease struct {
	Host  HostID
	Alive bool
	Since time.Time
	Lease int64
}

// FenceResult reports the outcome of a Fence action.
type FenceResult struct {
	Host HostID
	OK   bool
	Err  string
}

// Protect puts a VM under protection, or updates its policy.
type Protect struct {
	VM     VMID
	Host   HostID // where it is defined now
	MemMiB int
	VCPUs  int
	Policy Policy
	// Desired is the VM's state when protection starts (running unless it is stopped).
	Desired Desired
}

// Unprotect stops protecting a VM: hass forgets it and leaves it as it is.
type Unprotect struct{ VM VMID }

// Request is a user operation through the hass API (or from OpenStack, by Source).
type Request struct {
	Op     OpKind
	VM     VMID
	Target HostID // migrate only; empty lets the engine choose
	Source Source
}

// Observe reports one domain's new state on one host. Seq orders observations from the same
// host: the agent stamps each with a number larger than any it stamped before (its clock in
// nanoseconds works), so a late or reordered observation is recognised and dropped.
type Observe struct {
	Host   HostID
	VM     VMID
	Seq    uint64
	State  DomState
	Reason Reason
	At     time.Time // when the agent saw it; the fault time for recovery statistics
}

// SignalKind is an event that is not a state change.
type SignalKind uint8

// Signals.
const (
	SigReboot     SignalKind = iota // the guest rebooted inside its emulator
	SigWatchdog                     // the guest watchdog fired; Action says what libvirt did
	SigIOError                      // a disk I/O error
	SigAgentDown                    // the guest agent stopped answering (guest hang hint)
	SigAgentUp                      // the guest agent answered again
	SigGuestPanic                   // the guest panicked (crash loaded or preserved)
	// SigGuestHung: the guest OS layer failed, verified by the host's guest monitor (package
	// guest): its agent stopped answering heartbeats while its emulator runs, and still did
	// not answer at the recheck.
	SigGuestHung
	// SigGuestNetDown: the guest network layer failed, verified: the guest's address stopped
	// answering while its agent (the OS layer, where watched) and its emulator are fine, and
	// it still did not answer at the recheck.
	SigGuestNetDown
)

var signalNames = [...]string{"reboot", "watchdog", "io-error", "guest-agent-down", "guest-agent-up", "guest-panic",
	"guest-hung", "guest-network-down"}

func (s SignalKind) String() string {
	if int(s) < len(signalNames) {
		return signalNames[s]
	}
	return fmt.Sprintf("signal(%d)", s)
}

// WatchdogAction is what the hypervisor did when the guest watchdog fired.
type WatchdogAction uint8

// Watchdog actions (libvirt's names).
const (
	WatchdogNone WatchdogAction = iota
	WatchdogPause
	WatchdogReset
	WatchdogPoweroff
	WatchdogShutdown
	WatchdogDebug
	WatchdogInjectNMI
)

// Signal reports an event that is not a state change.
type Signal struct {
	Host     HostID
	VM       VMID
	Seq      uint64
	Kind     SignalKind
	Watchdog WatchdogAction
	At       time.Time
}

// Snapshot is the complete list of domains on one host at one moment (a resync). Every
// protected VM that the list lacks is absent from that host.
type Snapshot struct {
	Host    HostID
	Seq     uint64
	Domains []DomainStatus
	At      time.Time
}

// DomainStatus is one row of a Snapshot.
type DomainStatus struct {
	VM     VMID
	State  DomState
	Reason Reason
}

// ActionResult reports how an action went. Seq, when set, is the host's observation stamp at
// the moment the action finished, and State/Reason, when set, how the action left the domain
// on Host: the result is then also an observation, fresher than any event still on its way.
type ActionResult struct {
	ID     uint64
	Err    string
	Host   HostID
	Seq    uint64
	State  DomState
	Reason Reason
	// Unreached: the executor could not reach the hypervisor at all (no connection to
	// libvirtd); the action was never carried out. Err says why. The engine does not count
	// such an attempt against the VM and issues it again once the host reports again.
	Unreached bool
}

func (Tick) input()          {}
func (AddHost) input()       {}
func (RemoveHost) input()    {}
func (SetCluster) input()    {}
func (DeleteCluster) input() {}
func (Maintenance) input()   {}
func (HostPower) input()     {}
func (HostLease) input()     {}
func (FenceResult) input()   {}
func (Protect) input()       {}
func (Unprotect) input()     {}
func (Request) input()       {}
func (Observe) input()       {}
func (Signal) input()        {}
func (Snapshot) input()      {}
func (ActionResult) input()  {}

// ActKind is what an action asks a host (or a fence) to do.
type ActKind uint8

// Action kinds.
const (
	ActStart ActKind = iota
	ActShutdown
	ActDestroy
	ActReboot
	ActReset
	ActDelete // destroy if running, then undefine
	ActMigrate
	ActSuspend
	ActResume
	ActFence // power the host off (IPMI)
)

var actNames = [...]string{"start", "shutdown", "destroy", "reboot", "reset", "delete", "migrate", "suspend", "resume", "fence"}

func (k ActKind) String() string {
	if int(k) < len(actNames) {
		return actNames[k]
	}
	return fmt.Sprintf("act(%d)", k)
}

// Action is an order to carry out. Gen is the VM's intent generation when it was issued: the
// executor carries it out only while Engine.Current reports the action still current, so an
// order overtaken by a newer user intent (a stop issued while a restart was on its way) is
// dropped instead of undoing what the user asked.
type Action struct {
	ID     uint64
	Kind   ActKind
	VM     VMID
	Host   HostID
	Target HostID // migrate: the destination
	Gen    uint64
	Why    string // "op:<id>" or "recovery:<kind>"
	// Term is the term of the leading controller that ordered it, set by the controller's
	// runner when it records the order (the engine leaves it 0). With Gen it is the order's
	// fencing token: an agent carries an order out only while both match the store.
	Term uint64
}

func (a Action) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", a.Kind)
	if a.VM != "" {
		fmt.Fprintf(&b, " %s", a.VM)
	}
	fmt.Fprintf(&b, " on %s", a.Host)
	if a.Target != "" {
		fmt.Fprintf(&b, " to %s", a.Target)
	}
	fmt.Fprintf(&b, " (%s)", a.Why)
	return b.String()
}

// RecordType classifies an event log entry.
type RecordType string

// Event log record types.
const (
	RecOp        RecordType = "op"        // an operation was accepted, or changed phase
	RecExpected  RecordType = "expected"  // an observation explained by an operation
	RecDetect    RecordType = "detect"    // a failure was detected
	RecAction    RecordType = "action"    // an action was issued
	RecRecovered RecordType = "recovered" // a failed VM runs again
	RecGaveUp    RecordType = "gave-up"   // policy exhausted: the VM is in error
	RecAlert     RecordType = "alert"     // an operator should look
	RecHost      RecordType = "host"      // a host changed state
	RecStale     RecordType = "stale"     // an observation older than what is known was dropped
	RecForget    RecordType = "forget"    // a VM is no longer protected
	RecProtect   RecordType = "protect"   // a VM is now protected
	RecCluster   RecordType = "cluster"   // a cluster was created, changed or deleted (Record.Cluster)
)

// Record is one entry of the event log.
type Record struct {
	At   time.Time
	Type RecordType
	VM   VMID
	Host HostID
	Msg  string
	// Cluster names the cluster of a RecCluster record.
	Cluster string
	// Set on RecRecovered: when the fault happened (agent clock), when it was detected, when
	// the first recovery action was issued, and when the VM ran again.
	FaultAt, DetectAt, ActionAt, RecoveredAt time.Time
	Kind                                     FailureKind
}

func (r Record) String() string {
	var b strings.Builder
	b.WriteString(string(r.Type))
	if r.VM != "" {
		b.WriteString(" vm=")
		b.WriteString(string(r.VM))
	}
	if r.Host != "" {
		b.WriteString(" host=")
		b.WriteString(string(r.Host))
	}
	if r.Msg != "" {
		b.WriteString(" ")
		b.WriteString(r.Msg)
	}
	return b.String()
}

// Output is what one Step produced: actions to carry out (record them, then execute) and
// event log entries, and which VMs it touched. Err is set when a Request or Protect was refused; nothing changed then.
type Output struct {
	Actions []Action
	Log     []Record
	Err     error
	// Touched lists the VMs the step may have changed (a superset, in no useful order; a VM
	// may be listed once only). A runner that stores e.State(id) for each of them (or deletes
	// it where State says it is no longer protected), e.Host(r.Host) for each RecHost record
	// (deleting it where Host says the host is no longer known), e.Cluster(r.Cluster) for each
	// RecCluster record (likewise) and LastID keeps what it stored exactly what the engine
	// holds: what Restore needs.
	Touched []VMID
}
