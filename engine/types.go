package engine

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// VMID names a protected VM (the libvirt domain name, or a Nova instance uuid).
type VMID string

// HostID names a compute host.
type HostID string

// DomState is a domain's state on one host, as an agent observed it.
type DomState uint8

// Domain states. Absent means the host does not define the domain at all.
const (
	DomUnknown DomState = iota
	DomRunning
	DomPaused
	DomShutoff
	DomCrashed
	DomAbsent
)

var domStateNames = [...]string{"unknown", "running", "paused", "shutoff", "crashed", "absent"}

func (s DomState) String() string {
	if int(s) < len(domStateNames) {
		return domStateNames[s]
	}
	return fmt.Sprintf("domstate(%d)", s)
}

// up reports whether the domain's process exists and holds the guest (running or paused).
func (s DomState) up() bool { return s == DomRunning || s == DomPaused }

// Reason says why a domain is in its state. The agent's translator folds libvirt's event
// details and state reasons into one of these.
type Reason uint8

// Reasons, driver-neutral.
const (
	ReasonUnknown       Reason = iota
	ReasonBooted               // started by a start request
	ReasonMigrated             // started on, or stopped on, the two ends of a migration
	ReasonRestored             // started from a saved image
	ReasonResumed              // unpaused
	ReasonUser                 // paused by a suspend request
	ReasonShutdownGuest        // shut off after the guest itself shut down
	ReasonShutdownHost         // shut off after a host-requested (ACPI) shutdown
	ReasonShutdown             // shut off after a shutdown whose initiator is unknown
	ReasonDestroyed            // shut off by a destroy (virsh destroy, hass stop)
	ReasonFailed               // shut off because the emulator died (kill -9, OOM)
	ReasonCrashed              // shut off because the guest crashed
	ReasonPanicked             // crashed state after a guest panic
	ReasonWatchdog             // paused or shut off by the guest watchdog
	ReasonIOError              // paused on a disk I/O error
	ReasonUndefined            // no longer defined (virsh undefine)
	ReasonFenced               // destroyed by the agent's self-fence
	ReasonOwnStop              // stopped by hass's own executor as part of an operation (a hard reboot)
)

var reasonNames = [...]string{"unknown", "booted", "migrated", "restored", "resumed", "user",
	"shutdown-guest", "shutdown-host", "shutdown", "destroyed", "failed", "crashed", "panicked",
	"watchdog", "io-error", "undefined", "fenced", "own-stop"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}

// Desired is what the user wants a VM to be. Operations change it.
type Desired uint8

// Desired states.
const (
	WantRunning Desired = iota
	WantPaused          // suspended by the user: up, but not running
	WantStopped
	WantAbsent
)

var desiredNames = [...]string{"running", "paused", "stopped", "absent"}

func (d Desired) String() string {
	if int(d) < len(desiredNames) {
		return desiredNames[d]
	}
	return fmt.Sprintf("desired(%d)", d)
}

// OpKind is a user operation.
type OpKind uint8

// Operations.
const (
	OpStart OpKind = iota
	OpShutdown
	OpStop
	OpReboot
	OpDelete
	OpMigrate
	OpSuspend
	OpResume
)

var opNames = [...]string{"start", "shutdown", "stop", "reboot", "delete", "migrate", "suspend", "resume"}

func (k OpKind) String() string {
	if int(k) < len(opNames) {
		return opNames[k]
	}
	return fmt.Sprintf("op(%d)", k)
}

// ParseOpKind is the inverse of OpKind.String.
func ParseOpKind(s string) (OpKind, error) {
	for i, n := range opNames {
		if n == s {
			return OpKind(i), nil
		}
	}
	return 0, fmt.Errorf("unknown operation %q (want one of start, shutdown, stop, reboot, delete, migrate, suspend, resume)", s)
}

// Source says who asked for an operation.
type Source uint8

// Sources.
const (
	SrcAPI         Source = iota // the hass API or CLI
	SrcLibvirt                   // inferred from a libvirt event detail (virsh behind hass's back)
	SrcOpenStack                 // a Nova notification
	SrcGuest                     // the guest itself (guest-initiated shutdown, honoured by policy)
	SrcMaintenance               // hass itself, moving a VM off a host put in maintenance
)

var sourceNames = [...]string{"api", "libvirt", "openstack", "guest", "maintenance"}

// ours: hass ordered the operation itself (a user through the API, or a maintenance move),
// so hass waits for its action's answer and knows where it goes.
func (s Source) ours() bool { return s == SrcAPI || s == SrcMaintenance }

// ParseSource is the inverse of Source.String.
func ParseSource(s string) (Source, error) {
	for i, n := range sourceNames {
		if n == s {
			return Source(i), nil
		}
	}
	return 0, fmt.Errorf("unknown source %q (want one of api, libvirt, openstack, guest, maintenance)", s)
}

func (s Source) String() string {
	if int(s) < len(sourceNames) {
		return sourceNames[s]
	}
	return fmt.Sprintf("source(%d)", s)
}

// OpPhase is where an operation is in its life.
type OpPhase uint8

// Operation phases.
const (
	PhaseRequested OpPhase = iota
	PhaseRunning
	PhaseDone
	PhaseFailed
	PhaseExpired
)

var phaseNames = [...]string{"requested", "running", "done", "failed", "expired"}

func (p OpPhase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", p)
}

// Operation is one user operation on one VM.
type Operation struct {
	ID       uint64
	Kind     OpKind
	VM       VMID
	Source   Source
	Phase    OpPhase
	Target   HostID // migrate only
	Started  time.Time
	Deadline time.Time
	// escalated is set once a shutdown that outlived its deadline was turned into a destroy.
	escalated bool
	prev      Desired // the desired state before this operation, restored if it fails
	baseSeq   uint64  // the home observation's seq when the operation was accepted
	home      HostID  // the home when the operation was accepted
	// retryAt is when the operation's action, which came back unreached (the hypervisor
	// could not be reached), is issued again; zero when nothing waits. The host's next
	// report brings it forward.
	retryAt   time.Time
	unreached bool // its last action came back unreached (said once in the log per outage)
	// tries counts how many times the action was issued again after the deadline passed
	// (a stop, shutdown, delete or suspend insisted on); see InsistTries.
	tries int
}

// FailureKind names what failed.
type FailureKind string

// Failure kinds.
const (
	FailVMCrash       FailureKind = "vm-crash"
	FailGuestPanic    FailureKind = "guest-panic"
	FailGuestHang     FailureKind = "guest-hang"
	FailGuestNetwork  FailureKind = "guest-network"
	FailGuestShutdown FailureKind = "guest-shutdown"
	FailWatchdog      FailureKind = "watchdog"
	FailIOError       FailureKind = "io-error"
	FailHostDown      FailureKind = "host-down"
	FailOperation     FailureKind = "operation-failed"
	FailVMDown        FailureKind = "vm-down" // the naive detector's only verdict
)

// guestLayer: the failure is a guest layer's (the guest runs, but hangs or lost its network):
// only a reset or a reboot of the guest ends it, not seeing it run.
func (k FailureKind) guestLayer() bool { return k == FailGuestHang || k == FailGuestNetwork }

// GuestShutdownPolicy says what a guest-initiated shutdown means.
type GuestShutdownPolicy uint8

// Guest shutdown policies.
const (
	GuestShutdownHonour  GuestShutdownPolicy = iota // the guest meant it: the VM stays stopped
	GuestShutdownRestart                            // treat it as a failure and restart the VM
)

func (p GuestShutdownPolicy) String() string {
	if p == GuestShutdownRestart {
		return "restart"
	}
	return "honour"
}

// ParseGuestShutdownPolicy accepts "honour" (or "honor") and "restart".
func ParseGuestShutdownPolicy(s string) (GuestShutdownPolicy, error) {
	switch s {
	case "honour", "honor":
		return GuestShutdownHonour, nil
	case "restart":
		return GuestShutdownRestart, nil
	}
	return 0, fmt.Errorf("on-guest-shutdown %q: want honour or restart", s)
}

// Policy is how one VM is protected.
type Policy struct {
	Priority        int                 // higher is relocated first
	MaxRestarts     int                 // restarts in place allowed within Window
	Window          time.Duration       // the window MaxRestarts counts in
	MaxRelocations  int                 // restarts on another host after MaxRestarts is spent
	OnGuestShutdown GuestShutdownPolicy // what a guest-initiated shutdown means
	AntiAffinity    string              // VMs in the same group avoid sharing a host
	// AntiAffinityHard makes the group a rule: hass never places two of its VMs on one host,
	// and a VM waits rather than break it. Otherwise the group is a preference, waived when
	// no host satisfies it.
	AntiAffinityHard bool
	// Guest turns on the guest OS and guest network layers (off by default). The host's agent
	// watches them (package guest) and reports a verified failure; the engine recovers.
	Guest GuestPolicy
	// Instance is, under OpenStack, the Nova instance (its uuid) the VM is: it is started,
	// stopped, rebooted and evacuated through Nova's API, never behind Nova's back. The engine
	// decides the same either way; the controller carries its orders out through Nova.
	Instance string
	// NovaScheduler: under OpenStack, an evacuation's target is left to Nova's scheduler;
	// the VM's home is the host it lands on (otherwise hass's placement names the host).
	NovaScheduler bool
}

// GuestPolicy says which guest layers the host's agent watches for one VM, and how. A layer
// counts a miss only once it has answered since the VM last started (a guest that never ran
// its agent, or whose network never came up, is not a failure), and never while the VM is not
// running. After Misses misses in a row, the layers beneath are checked to find the lowest one
// that failed, and all of them again after Recheck: only a failure that is still there is
// reported. A hung guest (OS layer) is reset; a guest whose network is down is rebooted. Each
// counts as a restart in place against MaxRestarts.
type GuestPolicy struct {
	// Heartbeat turns on the guest OS layer: a guest-ping through the QEMU guest agent every
	// HeartbeatInterval, answered within HeartbeatTimeout.
	Heartbeat         bool
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	HeartbeatMisses   int
	// Probe turns on the guest network layer: "icmp" (an echo request) or "tcp" (a connection
	// to Port) to Address, or, when Address is empty, to the first address the guest agent
	// reports. "" turns it off.
	Probe         string
	Port          int
	Address       string
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	ProbeMisses   int
	// Recheck is how long after a layer's failure was found all layers are checked again.
	Recheck time.Duration
}

// Guest probe kinds.
const (
	ProbeICMP = "icmp"
	ProbeTCP  = "tcp"
)

// Enabled reports whether any guest layer is watched.
func (g GuestPolicy) Enabled() bool { return g.Heartbeat || g.Probe != "" }

// WithDefaults fills the timers and counts left zero, for the layers that are on.
func (g GuestPolicy) WithDefaults() GuestPolicy {
	if !g.Enabled() {
		return GuestPolicy{}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if g.Heartbeat {
		def(&g.HeartbeatInterval, 2*time.Second)
		def(&g.HeartbeatTimeout, time.Second)
		if g.HeartbeatMisses == 0 {
			g.HeartbeatMisses = 3
		}
	}
	if g.Probe != "" {
		def(&g.ProbeInterval, 2*time.Second)
		def(&g.ProbeTimeout, time.Second)
		if g.ProbeMisses == 0 {
			g.ProbeMisses = 3
		}
	}
	def(&g.Recheck, 2*time.Second)
	return g
}

// Validate names the first bad field.
func (g GuestPolicy) Validate() error {
	switch {
	case g.Probe != "" && g.Probe != ProbeICMP && g.Probe != ProbeTCP:
		return fmt.Errorf("policy guest-probe %q: want icmp, tcp or nothing", g.Probe)
	case g.Probe == ProbeTCP && (g.Port < 1 || g.Port > 65535):
		return fmt.Errorf("policy guest-probe-port %d: a tcp probe needs a port in 1-65535", g.Port)
	case g.Probe != ProbeTCP && g.Port != 0:
		return fmt.Errorf("policy guest-probe-port %d: only a tcp probe has a port", g.Port)
	case g.Probe == "" && g.Address != "":
		return fmt.Errorf("policy guest-address %q: set, but no guest-probe", g.Address)
	case g.Address != "" && net.ParseIP(g.Address) == nil:
		return fmt.Errorf("policy guest-address %q: not an IP address", g.Address)
	case g.HeartbeatInterval < 0 || g.HeartbeatTimeout < 0 || g.ProbeInterval < 0 || g.ProbeTimeout < 0 || g.Recheck < 0:
		return errors.New("policy guest timers: must not be negative")
	case g.HeartbeatMisses < 0 || g.ProbeMisses < 0:
		return errors.New("policy guest misses: must not be negative")
	case !g.Heartbeat && (g.HeartbeatInterval != 0 || g.HeartbeatTimeout != 0 || g.HeartbeatMisses != 0):
		return errors.New("policy guest-heartbeat-*: set, but guest-heartbeat is off")
	case g.Probe == "" && (g.ProbeInterval != 0 || g.ProbeTimeout != 0 || g.ProbeMisses != 0):
		return errors.New("policy guest-probe-*: set, but guest-probe is off")
	case !g.Enabled() && g.Recheck != 0:
		return errors.New("policy guest-recheck: set, but no guest layer is on")
	}
	w := g.WithDefaults()
	switch {
	case w.Heartbeat && w.HeartbeatTimeout > w.HeartbeatInterval:
		return fmt.Errorf("policy guest-heartbeat-timeout %s: longer than its interval %s", w.HeartbeatTimeout, w.HeartbeatInterval)
	case w.Probe != "" && w.ProbeTimeout > w.ProbeInterval:
		return fmt.Errorf("policy guest-probe-timeout %s: longer than its interval %s", w.ProbeTimeout, w.ProbeInterval)
	case w.Heartbeat && w.HeartbeatInterval < 100*time.Millisecond:
		return fmt.Errorf("policy guest-heartbeat-interval %s: below 100ms", w.HeartbeatInterval)
	case w.Probe != "" && w.ProbeInterval < 100*time.Millisecond:
		return fmt.Errorf("policy guest-probe-interval %s: below 100ms", w.ProbeInterval)
	}
	return nil
}

// DefaultPolicy is what `hass vm protect` gives without flags.
func DefaultPolicy() Policy {
	return Policy{MaxRestarts: 3, Window: 10 * time.Minute, MaxRelocations: 1}
}

// Validate names the first bad field.
func (p Policy) Validate() error {
	switch {
	case p.MaxRestarts < 0:
		return fmt.Errorf("policy max-restarts %d: must be >= 0", p.MaxRestarts)
	case p.Window <= 0:
		return fmt.Errorf("policy window %s: must be > 0", p.Window)
	case p.MaxRelocations < 0:
		return fmt.Errorf("policy max-relocations %d: must be >= 0", p.MaxRelocations)
	case p.OnGuestShutdown > GuestShutdownRestart:
		return fmt.Errorf("policy on-guest-shutdown %d: unknown", p.OnGuestShutdown)
	case p.AntiAffinityHard && p.AntiAffinity == "":
		return errors.New("policy anti-affinity-hard: set, but anti-affinity names no group")
	}
	return p.Guest.Validate()
}

// Config tunes the engine's timers.
type Config struct {
	StartTimeout    time.Duration // an engine action with no answer by then counts as failed
	ShutdownTimeout time.Duration // a graceful shutdown still running by then is escalated to destroy
	RebootTimeout   time.Duration // a reboot not back by then is a failure
	MigrateTimeout  time.Duration // a migration not finished by then has failed
	BackoffBase     time.Duration // delay before the second restart; doubles each time
	BackoffMax      time.Duration
	// SelfFenceMargin is how long after a host's lease expired the engine waits before it
	// trusts that the host's agent has fenced itself (it fences before the lease can expire;
	// the margin absorbs clock drift). An IPMI power-off confirmation skips the wait.
	SelfFenceMargin time.Duration
	// MajoritySettle: the engine declares a suspect host fenced by its lease's expiry (and so
	// evacuates it) only while the hosts without a live lease (the suspect ones) are not a
	// strict majority of the members (the hosts not fenced), and only once that has held for
	// MajoritySettle. An agent whose lease lapsed holds back its self-fence while it and the
	// peers it hears without a lease are a strict majority of the members (see package
	// agent); when that stops it fences at once, but it may be holding back on heartbeats up
	// to its peer timeout old. So MajoritySettle must be at least the agents' PeerTimeout
	// plus a heartbeat period plus the time a self-fence takes. An IPMI-confirmed power-off
	// is exempt: that host runs nothing.
	MajoritySettle time.Duration
	// PowerFenceDelay is how long after a host's lease expired, and after the hosts without a
	// lease last stopped being a majority, the engine orders its power fence (IPMI); never
	// while they are a majority. The leases of hosts that lost the store together expire up
	// to a renewal period (plus the lease check's period) apart, and those that regain it
	// together renew as far apart, so an earlier power-off could hit a host of a majority
	// whose agent holds back its fence, turning a control-plane outage into a VM outage.
	// Since it is longer than SelfFenceMargin, a host lost alone is fenced by its expiry
	// first; the power fence is quicker than the expiry where the majority rule's settle time
	// (MajoritySettle) holds that back.
	PowerFenceDelay time.Duration
	// InFlightGrace is how long a restored engine (a new leader, or hass restarted) waits
	// for the answer to a recovery action that was in flight before it issues the action
	// again: the answer, or the host's next complete list, may be on its way.
	InFlightGrace time.Duration
	// VanishGrace is how long a VM may be missing from its home host's domain list (with no
	// undefine event seen) before hass accepts that it was deleted behind its back.
	VanishGrace time.Duration
	// RetryPlacement is how often a VM that found no host to run on is tried again.
	RetryPlacement time.Duration
	// UnreachedRetry is how long after an action came back unreached (its executor could
	// not reach the hypervisor) it is issued again, unless the host reports first.
	UnreachedRetry time.Duration
	// Naive turns off operation awareness: any protected VM that is not running is a failure.
	// For comparison only.
	Naive bool
}

// DefaultConfig holds the timers hass runs with unless told otherwise.
func DefaultConfig() Config {
	return Config{
		StartTimeout:    60 * time.Second,
		ShutdownTimeout: 120 * time.Second,
		RebootTimeout:   120 * time.Second,
		MigrateTimeout:  300 * time.Second,
		BackoffBase:     5 * time.Second,
		BackoffMax:      2 * time.Minute,
		SelfFenceMargin: 2 * time.Second,
		MajoritySettle:  6 * time.Second, // peer timeout 3 s + heartbeat 1 s + self-fence 2 s
		PowerFenceDelay: 3 * time.Second, // lease renewal period 2 s + lease check period 1 s
		InFlightGrace:   3 * time.Second,
		VanishGrace:     90 * time.Second,
		RetryPlacement:  10 * time.Second,
		UnreachedRetry:  10 * time.Second,
	}
}
