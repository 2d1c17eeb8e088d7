// Package hypervisor defines a driver-neutral view of a hypervisor host: the
// domains (VMs) it knows, the lifecycle operations hass performs on them and
// the events it reports.
//
// The numeric codes (DomainState, state reasons, lifecycle event types and
// details, watchdog / io-error actions) deliberately mirror libvirt's public
// enums (virDomainState, virDomain*Reason, virDomainEventType,
// virDomainEvent*DetailType, ...) so that a libvirt based driver can pass them
// through unchanged and the engine can log them verbatim. Named constants are
// provided for the values hass cares about; any other value is still
// delivered.
package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// DomainState mirrors libvirt virDomainState.
type DomainState int

// Domain states (virDomainState).
const (
	NoState     DomainState = 0
	Running     DomainState = 1
	Blocked     DomainState = 2
	Paused      DomainState = 3
	Shutdown    DomainState = 4 // being shut down
	Shutoff     DomainState = 5
	Crashed     DomainState = 6
	PMSuspended DomainState = 7
)

func (s DomainState) String() string {
	switch s {
	case NoState:
		return "nostate"
	case Running:
		return "running"
	case Blocked:
		return "blocked"
	case Paused:
		return "paused"
	case Shutdown:
		return "shutdown"
	case Shutoff:
		return "shutoff"
	case Crashed:
		return "crashed"
	case PMSuspended:
		return "pmsuspended"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Active reports whether a domain in this state has a live hypervisor
// process (i.e. it is not Shutoff/NoState/Crashed).
func (s DomainState) Active() bool {
	switch s {
	case Running, Blocked, Paused, Shutdown, PMSuspended:
		return true
	}
	return false
}

// State reason codes. The meaning of Domain.Reason depends on Domain.State
// (libvirt virDomainRunningReason, virDomainPausedReason,
// virDomainShutoffReason, ...). Only the commonly needed ones are named.
const (
	// Running reasons (virDomainRunningReason).
	RunningUnknown      = 0
	RunningBooted       = 1
	RunningMigrated     = 2
	RunningRestored     = 3
	RunningFromSnapshot = 4
	RunningUnpaused     = 5
	RunningMigrationCan = 6
	RunningSaveCanceled = 7
	RunningWakeup       = 8
	RunningCrashed      = 9
	RunningPostcopy     = 10

	// Paused reasons (virDomainPausedReason).
	PausedUnknown  = 0
	PausedUser     = 1
	PausedMigrate  = 2
	PausedSave     = 3
	PausedDump     = 4
	PausedIOError  = 5
	PausedWatchdog = 6
	PausedShutdown = 8
	PausedCrashed  = 10
	PausedStarting = 11

	// Shutoff reasons (virDomainShutoffReason).
	ShutoffUnknown      = 0
	ShutoffShutdown     = 1
	ShutoffDestroyed    = 2
	ShutoffCrashed      = 3
	ShutoffMigrated     = 4
	ShutoffSaved        = 5
	ShutoffFailed       = 6
	ShutoffFromSnapshot = 7
	ShutoffDaemon       = 8

	// Crashed reasons (virDomainCrashedReason).
	CrashedUnknown  = 0
	CrashedPanicked = 1
)

// Domain is a snapshot of one domain as reported by List.
type Domain struct {
	Name  string
	UUID  string // canonical 8-4-4-4-12 lower-case form
	State DomainState
	// Reason is the libvirt state reason code for State (see the
	// Running*/Paused*/Shutoff* constants).
	Reason int
	// MemoryKiB is the configured (maximum) memory of the domain.
	MemoryKiB uint64
	// VCPUs is its number of virtual CPUs.
	VCPUs int
}

// EventKind tells which kind of event an Event is.
type EventKind int

// Event kinds.
const (
	Lifecycle EventKind = iota
	Reboot
	Watchdog
	IOError
	AgentLifecycle
	// Resync is synthetic: it is never sent by a Driver, only by Watch,
	// right after every successful (re)connect and before any event of the
	// new connection. Events may have been lost while disconnected, so on
	// Resync the consumer must call List and reconcile its view.
	Resync
)

func (k EventKind) String() string {
	switch k {
	case Lifecycle:
		return "lifecycle"
	case Reboot:
		return "reboot"
	case Watchdog:
		return "watchdog"
	case IOError:
		return "io-error"
	case AgentLifecycle:
		return "agent-lifecycle"
	case Resync:
		return "resync"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Lifecycle event types (virDomainEventType), for Event.Lifecycle.
const (
	EventDefined     = 0
	EventUndefined   = 1
	EventStarted     = 2
	EventSuspended   = 3
	EventResumed     = 4
	EventStopped     = 5
	EventShutdown    = 6
	EventPMSuspended = 7
	EventCrashed     = 8
)

// Lifecycle event details (virDomainEvent*DetailType), for Event.Detail.
// The meaning depends on Event.Lifecycle.
const (
	DefinedAdded   = 0
	DefinedUpdated = 1

	UndefinedRemoved = 0

	StartedBooted   = 0
	StartedMigrated = 1
	StartedRestored = 2
	StartedSnapshot = 3
	StartedWakeup   = 4

	SuspendedPaused   = 0
	SuspendedMigrated = 1
	SuspendedIOError  = 2
	SuspendedWatchdog = 3
	SuspendedRestored = 4
	SuspendedSnapshot = 5
	SuspendedAPIError = 6

	ResumedUnpaused = 0
	ResumedMigrated = 1
	ResumedSnapshot = 2

	StoppedShutdown     = 0
	StoppedDestroyed    = 1
	StoppedCrashed      = 2
	StoppedMigrated     = 3
	StoppedSaved        = 4
	StoppedFailed       = 5
	StoppedFromSnapshot = 6

	ShutdownFinished = 0 // guest finished shutting down (process may still exist)
	ShutdownGuest    = 1 // guest initiated
	ShutdownHost     = 2 // host initiated

	CrashedPanickedDetail = 0
)

// Watchdog actions (virDomainEventWatchdogAction), for Event.Action.
const (
	WatchdogNone      = 0
	WatchdogPause     = 1
	WatchdogReset     = 2
	WatchdogPoweroff  = 3
	WatchdogShutdown  = 4
	WatchdogDebug     = 5
	WatchdogInjectNMI = 6
)

// IO error actions (virDomainEventIOErrorAction), for Event.Action.
const (
	IOErrorNone   = 0
	IOErrorPause  = 1
	IOErrorReport = 2
)

// Guest agent states/reasons (virConnectDomainEventAgentLifecycle*).
const (
	AgentConnected    = 1
	AgentDisconnected = 2

	AgentReasonUnknown       = 0
	AgentReasonDomainStarted = 1
	AgentReasonChannel       = 2
)

// Event is one hypervisor event.
type Event struct {
	Kind   EventKind
	Domain string // name
	UUID   string
	// Lifecycle is the virDomainEventType (Event* constants); only for
	// Kind == Lifecycle.
	Lifecycle int
	// Detail is the detail code for that event type, as libvirt sends it.
	Detail int
	// Action is the watchdog action (Watchdog*) or io-error action
	// (IOError*).
	Action int
	// IO error details (Kind == IOError).
	SrcPath  string
	DevAlias string
	IOReason string // e.g. "enospc", "eio"; empty if unknown
	// Guest agent (Kind == AgentLifecycle): AgentConnected/AgentDisconnected
	// and AgentReason*.
	AgentState  int
	AgentReason int
	// At is when the driver received the event.
	At time.Time
}

func (e Event) String() string {
	switch e.Kind {
	case Lifecycle:
		return fmt.Sprintf("%s %s type=%d detail=%d", e.Kind, e.Domain, e.Lifecycle, e.Detail)
	case Watchdog:
		return fmt.Sprintf("%s %s action=%d", e.Kind, e.Domain, e.Action)
	case IOError:
		return fmt.Sprintf("%s %s action=%d dev=%s path=%s reason=%s", e.Kind, e.Domain, e.Action, e.DevAlias, e.SrcPath, e.IOReason)
	case AgentLifecycle:
		return fmt.Sprintf("%s %s state=%d reason=%d", e.Kind, e.Domain, e.AgentState, e.AgentReason)
	case Resync:
		return e.Kind.String()
	}
	return fmt.Sprintf("%s %s", e.Kind, e.Domain)
}

// Driver is a connection to one hypervisor host.
//
// All methods are safe for concurrent use. Methods taking a domain name
// return an error wrapping ErrNotFound when the domain does not exist,
// ErrInvalidState when the operation is not valid in the domain's current
// state (e.g. Start of a running domain) and ErrNotConnected when there is
// no connection. Errors are *OpError values naming operation and domain.
type Driver interface {
	// Connect (re)establishes the connection and subscribes to events.
	// Events are delivered until ctx ends or the connection is lost. When
	// already connected, the old connection is dropped first. Connect may
	// be called again after a disconnect (that is what Watch does), but not
	// after Close.
	Connect(ctx context.Context) error
	// Events returns the event channel of the current connection. It is
	// closed when the connection is lost, when the ctx given to Connect
	// ends, or on Close. A new channel is created by every Connect, so
	// call Events again after reconnecting (or use Watch).
	Events() <-chan Event
	// List returns all domains, active and inactive, with state+reason.
	List(ctx context.Context) ([]Domain, error)
	Start(ctx context.Context, name string) error
	// Destroy forcefully stops a domain (like pulling the plug).
	Destroy(ctx context.Context, name string) error
	// Shutdown requests a graceful (ACPI power button) shutdown. It returns
	// as soon as the request is delivered; the guest may ignore it.
	Shutdown(ctx context.Context, name string) error
	// Reboot requests a graceful reboot; the guest may ignore it.
	Reboot(ctx context.Context, name string) error
	// Reset is a hard reset (like the reset button).
	Reset(ctx context.Context, name string) error
	Suspend(ctx context.Context, name string) error
	Resume(ctx context.Context, name string) error
	// Undefine removes the persistent definition. Undefining a running
	// domain makes it transient: it keeps running and disappears when it
	// stops.
	Undefine(ctx context.Context, name string) error
	// Define creates or updates a persistent domain from its XML.
	Define(ctx context.Context, xml string) error
	// XML returns the persistent (inactive) definition, including secure
	// fields, i.e. what can be passed to Define on another host.
	XML(ctx context.Context, name string) (string, error)
	// Migrate live-migrates a running or paused domain to the hypervisor at destURI (a
	// libvirt URI the source daemon can reach, e.g. qemu+tcp://10.0.1.2/system), peer to
	// peer: the source daemon connects to the destination itself. The definition moves
	// with the domain (persistent there, undefined here). It returns when the migration has
	// finished or failed; a failed migration leaves the domain running here.
	Migrate(ctx context.Context, name, destURI string) error
	// Close disconnects for good. Further calls fail with ErrClosed.
	Close() error
}

// Sentinel errors; test with errors.Is.
var (
	ErrNotFound     = errors.New("domain not found")
	ErrInvalidState = errors.New("operation invalid in current domain state")
	ErrNotConnected = errors.New("not connected to hypervisor")
	ErrClosed       = errors.New("driver closed")
)

// OpError describes a failed driver operation.
type OpError struct {
	Op     string // e.g. "start", "list"
	Domain string // empty for host-level operations
	Err    error
}

func (e *OpError) Error() string {
	if e.Domain == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return fmt.Sprintf("%s domain %q: %v", e.Op, e.Domain, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// GuestAgent is what a driver offers to watch the layers inside a domain (package guest): the
// QEMU guest agent, and one domain's state. A driver that lacks it cannot watch the guest
// layers.
type GuestAgent interface {
	// GuestPing sends guest-ping to the domain's guest agent and waits for its answer for
	// at most timeout. An error says it did not answer (or there is no agent).
	GuestPing(ctx context.Context, name string, timeout time.Duration) error
	// GuestAddresses lists the IP addresses the guest agent reports for the guest's
	// interfaces, loopback left out, IPv4 first.
	GuestAddresses(ctx context.Context, name string) ([]string, error)
	// State returns one domain's state and reason.
	State(ctx context.Context, name string) (DomainState, int, error)
}
