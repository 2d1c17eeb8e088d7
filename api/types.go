// Package api is the hass daemon's HTTP API: the JSON types it speaks, the server that adapts
// HTTP to a Service, and the Client the CLI uses.
//
// Every type here is a plain JSON DTO; the daemon converts between these and the engine's
// types (FromStatus, FromOperation, FromRecord, Policy.Apply and ViewPolicy help).
package api

import (
	"context"
	"time"
)

// Service is what the daemon provides; the server adapts HTTP to it. Errors should be *Error
// (see NotFound, BadRequest, Conflict, Unavailable, Internal); any other error is reported as
// an internal error. The server validates every input before calling the Service.
type Service interface {
	VMs(ctx context.Context) ([]VM, error)
	VM(ctx context.Context, name string) (VM, error)
	Protect(ctx context.Context, name string, req ProtectRequest) (VM, error)
	Unprotect(ctx context.Context, name string) error
	Operate(ctx context.Context, name string, req OperationRequest) (Operation, error)
	Events(ctx context.Context, afterSeq uint64, limit int) ([]Event, error)
	Status(ctx context.Context) (Status, error)
	Hosts(ctx context.Context) ([]Host, error)
}

// Policy is a protection policy as a request gives it. A field left out (nil pointer, empty
// string) means "use the default", so 0 can be told apart from "not given".
type Policy struct {
	MaxRestarts     *int   `json:"max_restarts,omitempty"`      // restarts in place within Window, 0..1000
	Window          string `json:"window,omitempty"`            // Go duration, > 0 and <= 30 days
	MaxRelocations  *int   `json:"max_relocations,omitempty"`   // restarts elsewhere once MaxRestarts is spent, 0..1000
	OnGuestShutdown string `json:"on_guest_shutdown,omitempty"` // honour (or honor) or restart
	Priority        *int   `json:"priority,omitempty"`          // higher is relocated first
	AntiAffinity    string `json:"anti_affinity,omitempty"`     // group name; VMs in a group avoid sharing a host
	// AntiAffinityHard makes the group a rule: never two of its VMs on one host (a VM waits
	// rather than break it); otherwise it is a preference, waived when no host satisfies it.
	AntiAffinityHard *bool `json:"anti_affinity_hard,omitempty"`
	// Guest turns on the guest OS and guest network layers; given, it replaces the VM's
	// guest layers whole (an empty object turns them off).
	Guest *GuestPolicy `json:"guest,omitempty"`
	// NovaScheduler: under OpenStack, leave an evacuation's target to Nova's scheduler
	// (default false: hass's placement names the host).
	NovaScheduler *bool `json:"nova_scheduler,omitempty"`
}

// GuestPolicy says which guest layers the VM's host watches, and how (engine.GuestPolicy).
// A duration or count left out takes its default; in a view every one is given.
type GuestPolicy struct {
	Heartbeat         bool   `json:"heartbeat,omitempty"`          // guest OS layer: guest-ping through the QEMU guest agent
	HeartbeatInterval string `json:"heartbeat_interval,omitempty"` // default 2s
	HeartbeatTimeout  string `json:"heartbeat_timeout,omitempty"`  // default 1s
	HeartbeatMisses   int    `json:"heartbeat_misses,omitempty"`   // default 3
	Probe             string `json:"probe,omitempty"`              // guest network layer: icmp or tcp
	Port              int    `json:"port,omitempty"`               // tcp: the port to connect to
	Address           string `json:"address,omitempty"`            // default: the first address the guest agent reports
	ProbeInterval     string `json:"probe_interval,omitempty"`     // default 2s
	ProbeTimeout      string `json:"probe_timeout,omitempty"`      // default 1s
	ProbeMisses       int    `json:"probe_misses,omitempty"`       // default 3
	Recheck           string `json:"recheck,omitempty"`            // default 2s
}

// PolicyView is the policy a VM is protected with, every field concrete.
type PolicyView struct {
	MaxRestarts      int    `json:"max_restarts"`
	Window           string `json:"window"`
	MaxRelocations   int    `json:"max_relocations"`
	OnGuestShutdown  string `json:"on_guest_shutdown"`
	Priority         int    `json:"priority"`
	AntiAffinity     string `json:"anti_affinity,omitempty"`
	AntiAffinityHard bool   `json:"anti_affinity_hard,omitempty"`
	// Guest: the guest layers watched, with every default filled in (absent: none).
	Guest *GuestPolicy `json:"guest,omitempty"`
	// NovaInstance: under OpenStack, the Nova instance (uuid) the VM is; hass operates and
	// recovers it through Nova's API.
	NovaInstance string `json:"nova_instance,omitempty"`
	// NovaScheduler: under OpenStack, an evacuation's target is left to Nova's scheduler.
	NovaScheduler bool `json:"nova_scheduler,omitempty"`
}

// ProtectRequest is the body of PUT /v1/vms/{name}/protection. An empty body means the
// default policy.
type ProtectRequest struct {
	Policy Policy `json:"policy"`
}

// VM is one protected VM as the engine sees it.
type VM struct {
	Name        string     `json:"name"`
	Host        string     `json:"host"`              // its home host
	Desired     string     `json:"desired"`           // running, paused, stopped, absent
	Observed    string     `json:"observed"`          // the domain state on its home: running, paused, shutoff, crashed, absent, unknown
	Reason      string     `json:"reason"`            // why it is in that state (booted, destroyed, crashed, ...)
	State       string     `json:"state"`             // healthy, recovering, error, waiting, operation, unknown
	Failure     string     `json:"failure,omitempty"` // the failure kind while recovering
	Restarts    int        `json:"restarts"`          // restarts in the current window
	Relocations int        `json:"relocations"`
	Policy      PolicyView `json:"policy"`
	Operation   *Operation `json:"operation,omitempty"` // the operation in progress, if any
	Cluster     string     `json:"cluster,omitempty"`
	VCPUs       int        `json:"vcpus,omitempty"`
	MemMiB      int        `json:"mem_mib,omitempty"`
	// Waiting says why a VM that should run does not yet ("no host has room: need 2048 MiB,
	// largest free 1024 MiB on h3").
	Waiting string `json:"waiting,omitempty"`
}

// Ops lists the operations OperationRequest.Op accepts.
var Ops = []string{"start", "shutdown", "stop", "reboot", "delete", "migrate", "suspend", "resume"}

// OperationRequest is the body of POST /v1/vms/{name}/operations.
type OperationRequest struct {
	Op     string `json:"op"`               // one of Ops
	Target string `json:"target,omitempty"` // migrate only: the host to move to (empty: hass picks)
}

// Operation is one user operation on one VM.
type Operation struct {
	ID       uint64    `json:"id"`
	VM       string    `json:"vm"`
	Op       string    `json:"op"`
	Source   string    `json:"source"` // api, libvirt, openstack, guest
	Phase    string    `json:"phase"`  // requested, running, done, failed, expired
	Started  time.Time `json:"started,omitzero"`
	Deadline time.Time `json:"deadline,omitzero"`
	Target   string    `json:"target,omitempty"`
}

// Event is one entry of the event log.
type Event struct {
	Seq  uint64    `json:"seq"`
	At   time.Time `json:"at"`
	Type string    `json:"type"` // op, expected, detect, action, recovered, gave-up, alert, host, stale, forget, protect
	VM   string    `json:"vm,omitempty"`
	Host string    `json:"host,omitempty"`
	Kind string    `json:"kind,omitempty"` // failure kind
	Msg  string    `json:"msg,omitempty"`
	// Set on recovered events.
	FaultAt     *time.Time `json:"fault_at,omitempty"`
	DetectAt    *time.Time `json:"detect_at,omitempty"`
	ActionAt    *time.Time `json:"action_at,omitempty"`
	RecoveredAt *time.Time `json:"recovered_at,omitempty"`
}

// Status is the daemon's own health.
type Status struct {
	Host       string `json:"host"`
	Libvirt    string `json:"libvirt"` // "connected", or the connection error
	Store      string `json:"store"`
	VMs        int    `json:"vms"`
	Healthy    int    `json:"healthy"`
	Recovering int    `json:"recovering"`
	Error      int    `json:"error"`
	Unknown    int    `json:"unknown"`   // no evidence either way (e.g. libvirt unreachable)
	Operating  int    `json:"operating"` // a user operation in flight
	Uptime     string `json:"uptime"`
	Version    string `json:"version"`
	// The cluster: the controller that answered, the leading one and its term, and how
	// many hosts there are and how many hold their lease.
	Controller string `json:"controller"`
	Leader     string `json:"leader"`
	Term       int64  `json:"term"`
	Hosts      int    `json:"hosts"`
	HostsUp    int    `json:"hosts_up"`
	// StoreMembers are etcd's members as the store lists them: "name url".
	StoreMembers []string `json:"store_members"`
}

// Host is one hypervisor host of the cluster, as the leading controller sees it.
type Host struct {
	Name       string     `json:"name"`
	State      string     `json:"state"` // up, suspect (lease expired, not fenced yet) or fenced
	Lease      string     `json:"lease"` // held or expired
	LeaseSince time.Time  `json:"lease_since,omitzero"`
	LostAt     *time.Time `json:"lost_at,omitempty"`
	VMs        int        `json:"vms"` // protected VMs whose home it is
	MemMiB     int        `json:"mem_mib"`
	Fencing    bool       `json:"fencing"` // a power fence (IPMI) is configured
	Libvirt    string     `json:"libvirt"` // "connected", or why not, as its agent last said
	Started    time.Time  `json:"started"` // when its agent started
	// Members: how many hosts its agent counts as members for its majority rule (itself
	// included; 0: not said). Hears: the other members whose heartbeats its agent heard,
	// as its last inventory said. With the control plane lost, an agent holds back its
	// self-fence only while it hears a majority without a lease: a member it does not hear
	// cannot help it.
	Members int      `json:"members,omitempty"`
	Hears   []string `json:"hears,omitempty"`
	// What an administrator configured (hass host add); a host added whose agent never ran
	// is listed with State "not-joined".
	Cluster     string `json:"cluster"`
	VCPUs       int    `json:"vcpus"`
	Reserved    bool   `json:"reserved"`
	BMC         string `json:"bmc,omitempty"`   // the BMC's address (never its credentials)
	Power       string `json:"power,omitempty"` // on, off, or unknown (no answer), as its BMC last said
	Maintenance bool   `json:"maintenance"`
}

type hostList struct {
	Hosts []Host `json:"hosts"`
}

// Unprotected is the body of a successful DELETE /v1/vms/{name}/protection.
type Unprotected struct {
	Name      string `json:"name"`
	Protected bool   `json:"protected"` // always false
}

// Health is the body of GET /healthz.
type Health struct {
	Status string `json:"status"` // "ok"
}

// vmList and eventList are the list envelopes.
type vmList struct {
	VMs []VM `json:"vms"`
}

type eventList = EventPage

// errorBody is the body of every error response.
type errorBody struct {
	Error *Error `json:"error"`
}
