package api

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/vmname"
)

// Limits the server enforces on input.
const (
	MaxBodyBytes      = 64 << 10            // request bodies
	MaxCount          = 1000                // max_restarts, max_relocations
	MaxWindow         = 30 * 24 * time.Hour // policy window
	MinPriority       = math.MinInt32       // policy priority: a 32-bit integer,
	MaxPriority       = math.MaxInt32       // as the OpenAPI document's format int32 says
	DefaultEventLimit = 100                 // GET /v1/events without limit
	MaxEventLimit     = 1000
)

// NamePattern is the rule for host names and anti-affinity group names (not VM names: see
// package vmname), as the OpenAPI document gives it.
const NamePattern = `^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`

var nameRE = regexp.MustCompile(NamePattern)

// ValidName reports whether s is an acceptable host or anti-affinity group name: 1 to 128 of
// A-Z a-z 0-9 _ . : -, starting with a letter or digit.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ValidVMName reports whether s is an acceptable VM name: a libvirt domain name of 1 to 1024
// characters without '/' or control characters (see package vmname).
func ValidVMName(s string) bool { return vmname.Valid(s) }

const nameRule = "want 1 to 128 of A-Z a-z 0-9 _ . : - starting with a letter or digit"

// checkName returns a bad_request error naming field when s is not a valid host or group name.
func checkName(field, what, s string) error {
	if s == "" {
		return BadRequest(field, "%s is required", what)
	}
	if !ValidName(s) {
		return BadRequest(field, "%s is not a valid %s (%s)", quote(s), what, nameRule)
	}
	return nil
}

// checkVMName returns a bad_request error naming field when s is not a valid VM name.
func checkVMName(field, s string) error {
	if s == "" {
		return BadRequest(field, "VM name is required")
	}
	if err := vmname.Check(s); err != nil {
		return BadRequest(field, "%s is not a valid VM name: %v (want %s)", quote(s), err, vmname.Rule)
	}
	return nil
}

// quote quotes user input for an error message, cut short (at a character boundary) if long.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > max-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

// Validate checks every field that is given and returns a bad_request *Error naming the first
// bad one ("policy.window: ..."), or nil.
func (p Policy) Validate() error {
	if err := checkCount("policy.max_restarts", p.MaxRestarts); err != nil {
		return err
	}
	if p.Window != "" {
		if _, err := parseWindow(p.Window); err != nil {
			return err
		}
	}
	if err := checkCount("policy.max_relocations", p.MaxRelocations); err != nil {
		return err
	}
	if p.OnGuestShutdown != "" {
		if _, err := engine.ParseGuestShutdownPolicy(p.OnGuestShutdown); err != nil {
			return BadRequest("policy.on_guest_shutdown", "%s is not one of honour, honor, restart", quote(p.OnGuestShutdown))
		}
	}
	if p.Priority != nil && (*p.Priority < MinPriority || *p.Priority > MaxPriority) {
		return BadRequest("policy.priority", "%d is out of range (want %d to %d)", *p.Priority, MinPriority, MaxPriority)
	}
	if p.AntiAffinity != "" && !ValidName(p.AntiAffinity) {
		return BadRequest("policy.anti_affinity", "%s is not a valid group name (%s)", quote(p.AntiAffinity), nameRule)
	}
	if p.Guest != nil {
		if _, err := p.Guest.toEngine(); err != nil {
			return err
		}
	}
	return nil
}

// MaxGuestTimer bounds the guest layers' intervals, timeouts and recheck.
const MaxGuestTimer = time.Hour

// toEngine checks each field of g on its own (what depends on several fields, such as a tcp
// probe's port, is the engine's policy check: engine.GuestPolicy.Validate) and converts it.
func (g GuestPolicy) toEngine() (engine.GuestPolicy, error) {
	out := engine.GuestPolicy{Heartbeat: g.Heartbeat, HeartbeatMisses: g.HeartbeatMisses, Probe: g.Probe, Port: g.Port, Address: g.Address,
		ProbeMisses: g.ProbeMisses}
	timers := []struct {
		field string
		s     string
		d     *time.Duration
	}{{"heartbeat_interval", g.HeartbeatInterval, &out.HeartbeatInterval}, {"heartbeat_timeout", g.HeartbeatTimeout, &out.HeartbeatTimeout},
		{"probe_interval", g.ProbeInterval, &out.ProbeInterval}, {"probe_timeout", g.ProbeTimeout, &out.ProbeTimeout},
		{"recheck", g.Recheck, &out.Recheck}}
	for _, t := range timers {
		if t.s == "" {
			continue
		}
		d, err := parseDuration("policy.guest."+t.field, t.s, MaxGuestTimer)
		if err != nil {
			return out, err
		}
		*t.d = d
	}
	switch {
	case g.HeartbeatMisses < 0 || g.HeartbeatMisses > MaxCount:
		return out, BadRequest("policy.guest.heartbeat_misses", "%d is out of range (want 0 to %d)", g.HeartbeatMisses, MaxCount)
	case g.ProbeMisses < 0 || g.ProbeMisses > MaxCount:
		return out, BadRequest("policy.guest.probe_misses", "%d is out of range (want 0 to %d)", g.ProbeMisses, MaxCount)
	case g.Probe != "" && g.Probe != engine.ProbeICMP && g.Probe != engine.ProbeTCP:
		return out, BadRequest("policy.guest.probe", "%s is not one of icmp, tcp", quote(g.Probe))
	case utf8.RuneCountInString(g.Address) > 64:
		return out, BadRequest("policy.guest.address", "is longer than 64 characters")
	case g.Port < 0 || g.Port > 65535:
		return out, BadRequest("policy.guest.port", "%d is out of range (want 0 to 65535)", g.Port)
	}
	return out, nil
}

// parseDuration reads a positive Go duration of at most max for field.
func parseDuration(field, s string, max time.Duration) (time.Duration, error) {
	if !windowRE.MatchString(s) {
		if d, err := time.ParseDuration(s); err == nil && d <= 0 {
			return 0, BadRequest(field, "%s must be positive", quote(s))
		}
		return 0, BadRequest(field, "%s is not a duration (e.g. 2s, 500ms)", quote(s))
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil || d > max:
		return 0, BadRequest(field, "%s is longer than %s", quote(s), max)
	case d <= 0:
		return 0, BadRequest(field, "%s must be positive", quote(s))
	}
	return d, nil
}

func checkCount(field string, n *int) error {
	if n != nil && (*n < 0 || *n > MaxCount) {
		return BadRequest(field, "%d is out of range (want 0 to %d)", *n, MaxCount)
	}
	return nil
}

// WindowPattern is the syntax of a policy window: a Go duration (time.ParseDuration) without a
// minus sign (a window is positive) and other than the bare "0".
const WindowPattern = `^\+?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`

var windowRE = regexp.MustCompile(WindowPattern)

func parseWindow(s string) (time.Duration, error) {
	if !windowRE.MatchString(s) {
		if d, err := time.ParseDuration(s); err == nil && d <= 0 { // "-5m", "0"
			return 0, BadRequest("policy.window", "%s must be positive", quote(s))
		}
		return 0, BadRequest("policy.window", "%s is not a duration (e.g. 10m, 1h30m)", quote(s))
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, BadRequest("policy.window", "%s is longer than 30 days (720h)", quote(s)) // the only error left: overflow
	case d <= 0:
		return 0, BadRequest("policy.window", "%s must be positive", quote(s))
	case d > MaxWindow:
		return 0, BadRequest("policy.window", "%s is longer than 30 days (720h)", quote(s))
	}
	return d, nil
}

// Apply returns base with every field p gives replaced, after validating p. Use
// engine.DefaultPolicy() as base for a new protection.
func (p Policy) Apply(base engine.Policy) (engine.Policy, error) {
	if err := p.Validate(); err != nil {
		return base, err
	}
	out := base
	if p.MaxRestarts != nil {
		out.MaxRestarts = *p.MaxRestarts
	}
	if p.Window != "" {
		out.Window, _ = parseWindow(p.Window)
	}
	if p.MaxRelocations != nil {
		out.MaxRelocations = *p.MaxRelocations
	}
	if p.OnGuestShutdown != "" {
		out.OnGuestShutdown, _ = engine.ParseGuestShutdownPolicy(p.OnGuestShutdown)
	}
	if p.Priority != nil {
		out.Priority = *p.Priority
	}
	if p.AntiAffinity != "" {
		out.AntiAffinity = p.AntiAffinity
	}
	if p.AntiAffinityHard != nil {
		out.AntiAffinityHard = *p.AntiAffinityHard
	}
	if p.Guest != nil {
		out.Guest, _ = p.Guest.toEngine()
	}
	if p.NovaScheduler != nil {
		out.NovaScheduler = *p.NovaScheduler
	}
	return out, nil
}

// Validate checks the op and target and returns a bad_request *Error naming the bad field,
// or nil.
func (r OperationRequest) Validate() error {
	if r.Op == "" {
		return BadRequest("op", "op is required (want one of %s)", strings.Join(Ops, ", "))
	}
	if _, err := engine.ParseOpKind(r.Op); err != nil {
		return BadRequest("op", "%s is not an operation (want one of %s)", quote(r.Op), strings.Join(Ops, ", "))
	}
	if r.Target != "" {
		if r.Op != "migrate" {
			return BadRequest("target", "target is only allowed with op migrate, not %s", r.Op)
		}
		if err := checkName("target", "host name", r.Target); err != nil {
			return err
		}
	}
	return nil
}
