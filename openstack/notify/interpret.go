package notify

import (
	"fmt"
	"strings"

	"github.com/hassproject/hass/engine"
)

// Kind is what a notification means for hass.
type Kind uint8

// Meanings.
const (
	Nothing     Kind = iota // nothing for hass to do (Why says why)
	OpStarted               // a user's operation began (Op)
	OpEnded                 // it ended well
	OpFailed                // it failed
	Created                 // an instance was created (Host, Metadata: protect it if the policy says so)
	Deleted                 // an instance is gone: forget it
	Moved                   // an instance runs on another host now (a migration or an evacuation landed)
	ServiceDown             // a compute service was forced down or disabled (Host)
	ServiceUp               // a compute service is neither forced down nor disabled again
)

var kindNames = [...]string{"nothing", "op-started", "op-ended", "op-failed", "created", "deleted", "moved", "service-down", "service-up"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Meaning is what one notification means for hass.
type Meaning struct {
	Kind     Kind
	VM       string // the instance's uuid ("" for services)
	Name     string // the instance's display name
	Host     string // the instance's compute host, or the service's host
	Op       engine.OpKind
	User     bool   // a user asked (the notification names an initiator other than hass)
	Why      string // what it is, in words, for the log
	Metadata map[string]string
}

// Options tunes Interpret.
type Options struct {
	// Self is the OpenStack user hass acts as: what Nova does at hass's request (a recovery
	// through Nova's start, hard reboot or evacuate) is hass's own, not a user's intent.
	Self string
}

// ops maps an instance action (the event type between "instance." and ".start"/".end"/
// ".error") to hass's operation.
var ops = map[string]struct {
	op   engine.OpKind
	what string
}{
	"power_off": {engine.OpStop, "stop"},
	"power_on":  {engine.OpStart, "start"},
	"reboot":    {engine.OpReboot, "reboot"},
	"rebuild":   {engine.OpReboot, "rebuild"},
	"delete":    {engine.OpDelete, "delete"},
	"suspend":   {engine.OpSuspend, "suspend"},
	"resume":    {engine.OpResume, "resume"},
	"pause":     {engine.OpSuspend, "pause"},
	"unpause":   {engine.OpResume, "unpause"},
	// A live migration: pre starts it (on the destination), post_dest ends it there,
	// rollback or abort fail it.
	"live_migration_pre":           {engine.OpMigrate, "live migration"},
	"live_migration_post":          {engine.OpMigrate, "live migration"},
	"live_migration_post_dest":     {engine.OpMigrate, "live migration"},
	"live_migration_rollback":      {engine.OpMigrate, "live migration"},
	"live_migration_rollback_dest": {engine.OpMigrate, "live migration"},
	"live_migration_abort":         {engine.OpMigrate, "live migration"},
}

// Interpret says what a notification means for hass.
func Interpret(n Notification, o Options) Meaning {
	if n.Service != nil {
		s := n.Service
		m := Meaning{Host: s.Host, Kind: ServiceUp, Why: fmt.Sprintf("%s on %s is enabled and not forced down", s.Binary, s.Host)}
		if s.Binary != "nova-compute" {
			return Meaning{Host: s.Host, Why: fmt.Sprintf("service %s: not a compute service", s.Binary)}
		}
		if s.ForcedDown || s.Disabled {
			m.Kind = ServiceDown
			m.Why = fmt.Sprintf("%s on %s: forced down %v, disabled %v", s.Binary, s.Host, s.ForcedDown, s.Disabled)
		}
		return m
	}
	in := n.Instance
	if in == nil {
		return Meaning{Why: fmt.Sprintf("%s: not an instance or service notification", n.EventType)}
	}
	m := Meaning{VM: in.UUID, Name: in.Name, Host: in.Host, Metadata: in.Metadata}
	m.User = in.Initiator != "" && in.Initiator != o.Self
	action, phase := splitEvent(n.EventType)
	if n.Priority == "ERROR" || strings.HasSuffix(n.EventType, ".error") {
		phase = "error"
	}
	switch action {
	case "create":
		if phase == "end" {
			m.Kind, m.Why = Created, fmt.Sprintf("instance created on %s", in.Host)
		} else {
			m.Why = "instance being created"
		}
		return m
	case "update", "exists", "shutdown", "rebuild_scheduled", "snapshot", "resize_prep", "volume_attach", "volume_detach",
		"interface_attach", "interface_detach", "trigger_crash_dump":
		m.Why = fmt.Sprintf("%s: nothing for hass (a state change Nova reports, or part of another operation)", n.EventType)
		return m
	case "evacuate":
		// Announced by nova-api with the destination as host; the rebuild there follows.
		if !m.User {
			m.Why = "evacuation ordered by hass"
			return m
		}
		m.Kind, m.Op, m.Why = OpStarted, engine.OpMigrate, fmt.Sprintf("an operator evacuates it to %s", in.Host)
		return m
	}
	op, ok := ops[action]
	if !ok {
		m.Why = fmt.Sprintf("%s: an event type hass does not know", n.EventType)
		return m
	}
	m.Op = op.op
	if in.Initiator == "" && action == "power_off" {
		// Nova's power-state sync stops an instance it found down (a crash) with no user
		// behind it: not a user's intent. hass sees the crash through libvirt.
		m.Why = "Nova's own power-state sync stops it (no user asked): not a user's intent"
		return m
	}
	if !m.User {
		m.Why = fmt.Sprintf("%s %s at hass's own request", op.what, phase)
		if in.Initiator == "" {
			m.Why = fmt.Sprintf("%s %s with no user named", op.what, phase)
		}
		if !(action == "live_migration_post_dest" && phase == "end") && !(action == "rebuild" && phase == "end") {
			return m
		}
	}
	switch phase {
	case "start":
		if strings.HasPrefix(action, "live_migration") && action != "live_migration_pre" {
			m.Why = fmt.Sprintf("%s %s: the migration goes on", op.what, n.EventType)
			return m
		}
		m.Kind, m.Why = OpStarted, fmt.Sprintf("a user's %s begins", op.what)
	case "end":
		switch action {
		case "live_migration_post_dest":
			m.Kind, m.Why = Moved, fmt.Sprintf("live migration done: it runs on %s", in.Host)
		case "rebuild":
			m.Kind, m.Why = Moved, fmt.Sprintf("rebuilt on %s", in.Host)
		case "delete":
			m.Kind, m.Why = Deleted, "deleted"
		case "live_migration_rollback", "live_migration_rollback_dest", "live_migration_abort":
			m.Kind, m.Why = OpFailed, fmt.Sprintf("live migration rolled back: it stays on %s", in.Host)
		case "live_migration_pre", "live_migration_post":
			m.Why = fmt.Sprintf("%s: the migration goes on", n.EventType)
		default:
			m.Kind, m.Why = OpEnded, fmt.Sprintf("a user's %s is done", op.what)
		}
	case "error":
		m.Kind, m.Why = OpFailed, fmt.Sprintf("a user's %s failed: %s", op.what, in.FaultReason)
	default:
		m.Why = fmt.Sprintf("%s: no phase hass knows", n.EventType)
	}
	return m
}

// splitEvent splits "instance.power_off.end" into ("power_off", "end"), and
// "instance.evacuate" into ("evacuate", "").
func splitEvent(t string) (action, phase string) {
	rest := strings.TrimPrefix(t, "instance.")
	if i := strings.LastIndexByte(rest, '.'); i >= 0 {
		switch p := rest[i+1:]; p {
		case "start", "end", "error":
			return rest[:i], p
		}
	}
	return rest, ""
}
