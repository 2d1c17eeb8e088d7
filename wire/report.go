// Package wire is what agents write for the controller, encoded: each report (an observed
// state change, a signal, a complete domain list, an order's result, a domain offered for
// protection, the moment an order reached the hypervisor) is one JSON document in the
// agent's inbox in etcd. Decoding is strict: unknown fields, unknown names and missing
// fields are errors that name the field, and a report that does not decode changes nothing.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/vmname"
)

// Report kinds.
const (
	KindObserve  = "observe"
	KindSignal   = "signal"
	KindSnapshot = "snapshot"
	KindResult   = "result"
	KindProtect  = "protect"
	KindCalled   = "called"
)

// Report is one agent report as stored.
type Report struct {
	Kind string    `json:"kind"`
	Host string    `json:"host"`
	Seq  uint64    `json:"seq"`
	At   time.Time `json:"at"`
	// observe, signal, protect, called
	VM string `json:"vm,omitempty"`
	// observe, result, protect: the domain's state and reason (result: when known)
	State  string `json:"state,omitempty"`
	Reason string `json:"reason,omitempty"`
	// signal
	Signal   string `json:"signal,omitempty"`
	Watchdog int    `json:"watchdog,omitempty"`
	// snapshot
	Domains *[]Domain `json:"domains,omitempty"` // a pointer: an empty list is written, as []
	// result, called
	ID        uint64 `json:"id,omitempty"`
	Err       string `json:"err,omitempty"`
	Unreached bool   `json:"unreached,omitempty"`
	// protect
	MemMiB int `json:"mem_mib,omitempty"`
	VCPUs  int `json:"vcpus,omitempty"`
}

// Domain is one row of a snapshot.
type Domain struct {
	VM     string `json:"vm"`
	State  string `json:"state"`
	Reason string `json:"reason"`
}

// Protect is a domain an agent offers for protection (--protect-all): the controller
// protects it unless a user unprotected it, then takes the observation.
type Protect struct {
	Protect engine.Protect
	Observe engine.Observe
}

// Called says when the hypervisor was asked to carry out order ID (the recovered event's
// action time).
type Called struct {
	Host engine.HostID
	ID   uint64
	VM   engine.VMID
	At   time.Time
}

// Encode turns what an agent reports (an engine.Input, Protect or Called) into a report.
func Encode(v any) (Report, error) {
	switch in := v.(type) {
	case engine.Observe:
		return Report{Kind: KindObserve, Host: string(in.Host), Seq: in.Seq, At: in.At, VM: string(in.VM),
			State: in.State.String(), Reason: in.Reason.String()}, nil
	case engine.Signal:
		return Report{Kind: KindSignal, Host: string(in.Host), Seq: in.Seq, At: in.At, VM: string(in.VM),
			Signal: in.Kind.String(), Watchdog: int(in.Watchdog)}, nil
	case engine.Snapshot:
		doms := make([]Domain, 0, len(in.Domains))
		for _, d := range in.Domains {
			doms = append(doms, Domain{VM: string(d.VM), State: d.State.String(), Reason: d.Reason.String()})
		}
		return Report{Kind: KindSnapshot, Host: string(in.Host), Seq: in.Seq, At: in.At, Domains: &doms}, nil
	case engine.ActionResult:
		r := Report{Kind: KindResult, Host: string(in.Host), Seq: in.Seq, ID: in.ID, Err: in.Err, Unreached: in.Unreached}
		if in.State != engine.DomUnknown {
			r.State, r.Reason = in.State.String(), in.Reason.String()
		}
		return r, nil
	case Protect:
		return Report{Kind: KindProtect, Host: string(in.Protect.Host), Seq: in.Observe.Seq, At: in.Observe.At,
			VM: string(in.Protect.VM), MemMiB: in.Protect.MemMiB, VCPUs: in.Protect.VCPUs, State: in.Observe.State.String(), Reason: in.Observe.Reason.String()}, nil
	case Called:
		return Report{Kind: KindCalled, Host: string(in.Host), ID: in.ID, VM: string(in.VM), At: in.At}, nil
	}
	return Report{}, fmt.Errorf("wire: cannot encode %T", v)
}

// Marshal encodes and serialises.
func Marshal(v any) ([]byte, error) {
	r, err := Encode(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// FieldError names the field of a report that is wrong.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Unmarshal decodes a stored report strictly into what it carries: an engine.Input
// (Observe, Signal, Snapshot, ActionResult), a Protect or a Called. host is the host whose
// inbox held it: a report naming another host is refused.
func Unmarshal(data []byte, host string) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r Report
	if err := dec.Decode(&r); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, fmt.Errorf("not a JSON report: %w", err)
		case errors.As(err, &te):
			return nil, fieldErr(te.Field, "want a %s", te.Type)
		}
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the report")
	}
	if r.Host != host {
		return nil, fieldErr("host", "%q: the report is in the inbox of %q", r.Host, host)
	}
	return r.Decode()
}

// Decode checks a report and returns what it carries.
func (r Report) Decode() (any, error) {
	h := engine.HostID(r.Host)
	if err := vmname.CheckHost(r.Host); err != nil {
		return nil, fieldErr("host", "%v", err)
	}
	needVM := func() error {
		if err := vmname.Check(r.VM); err != nil {
			return fieldErr("vm", "%v", err)
		}
		return nil
	}
	needSeq := func() error {
		if r.Seq == 0 {
			return fieldErr("seq", "missing")
		}
		return nil
	}
	switch r.Kind {
	case KindObserve:
		if err := errors.Join(needVM(), needSeq()); err != nil {
			return nil, err
		}
		st, why, err := stateReason(r.State, r.Reason, "state", "reason")
		if err != nil {
			return nil, err
		}
		return engine.Observe{Host: h, VM: engine.VMID(r.VM), Seq: r.Seq, State: st, Reason: why, At: r.At}, nil
	case KindSignal:
		if err := errors.Join(needVM(), needSeq()); err != nil {
			return nil, err
		}
		k, ok := signalByName[r.Signal]
		if !ok {
			return nil, fieldErr("signal", "%q: unknown", r.Signal)
		}
		if r.Watchdog < 0 || r.Watchdog > int(engine.WatchdogInjectNMI) {
			return nil, fieldErr("watchdog", "%d: unknown action", r.Watchdog)
		}
		return engine.Signal{Host: h, VM: engine.VMID(r.VM), Seq: r.Seq, Kind: k, Watchdog: engine.WatchdogAction(r.Watchdog), At: r.At}, nil
	case KindSnapshot:
		if err := needSeq(); err != nil {
			return nil, err
		}
		if r.Domains == nil {
			return nil, fieldErr("domains", "missing (an empty list is [])")
		}
		s := engine.Snapshot{Host: h, Seq: r.Seq, At: r.At}
		for i, d := range *r.Domains {
			if err := vmname.Check(d.VM); err != nil {
				// A domain hass cannot name is not one it protects: left out, not an error.
				continue
			}
			st, why, err := stateReason(d.State, d.Reason, fmt.Sprintf("domains[%d].state", i), fmt.Sprintf("domains[%d].reason", i))
			if err != nil {
				return nil, err
			}
			s.Domains = append(s.Domains, engine.DomainStatus{VM: engine.VMID(d.VM), State: st, Reason: why})
		}
		return s, nil
	case KindResult:
		if r.ID == 0 {
			return nil, fieldErr("id", "missing")
		}
		res := engine.ActionResult{ID: r.ID, Err: r.Err, Host: h, Seq: r.Seq, Unreached: r.Unreached}
		if r.State != "" {
			st, why, err := stateReason(r.State, r.Reason, "state", "reason")
			if err != nil {
				return nil, err
			}
			res.State, res.Reason = st, why
		}
		return res, nil
	case KindProtect:
		if err := errors.Join(needVM(), needSeq()); err != nil {
			return nil, err
		}
		if r.MemMiB < 0 {
			return nil, fieldErr("mem_mib", "%d: must be >= 0", r.MemMiB)
		}
		if r.VCPUs < 0 {
			return nil, fieldErr("vcpus", "%d: must be >= 0", r.VCPUs)
		}
		st, why, err := stateReason(r.State, r.Reason, "state", "reason")
		if err != nil {
			return nil, err
		}
		return Protect{
			Protect: engine.Protect{VM: engine.VMID(r.VM), Host: h, MemMiB: r.MemMiB, VCPUs: r.VCPUs, Policy: engine.DefaultPolicy(), Desired: DesiredOf(st)},
			Observe: engine.Observe{Host: h, VM: engine.VMID(r.VM), Seq: r.Seq, State: st, Reason: why, At: r.At},
		}, nil
	case KindCalled:
		if err := needVM(); err != nil {
			return nil, err
		}
		if r.ID == 0 {
			return nil, fieldErr("id", "missing")
		}
		if r.At.IsZero() {
			return nil, fieldErr("at", "missing")
		}
		return Called{Host: h, ID: r.ID, VM: engine.VMID(r.VM), At: r.At}, nil
	case "":
		return nil, fieldErr("kind", "missing")
	}
	return nil, fieldErr("kind", "%q: want %s", r.Kind, strings.Join([]string{KindObserve, KindSignal, KindSnapshot, KindResult, KindProtect, KindCalled}, ", "))
}

// DesiredOf is what protecting a domain found in state st keeps it as: running or
// suspended if it is up, stopped otherwise.
func DesiredOf(st engine.DomState) engine.Desired {
	switch st {
	case engine.DomRunning:
		return engine.WantRunning
	case engine.DomPaused:
		return engine.WantPaused
	}
	return engine.WantStopped
}

func stateReason(state, reason, sf, rf string) (engine.DomState, engine.Reason, error) {
	st, ok := stateByName[state]
	if !ok {
		return 0, 0, fieldErr(sf, "%q: unknown state", state)
	}
	why, ok := reasonByName[reason]
	if !ok {
		return 0, 0, fieldErr(rf, "%q: unknown reason", reason)
	}
	return st, why, nil
}

var (
	stateByName  = names[engine.DomState](func(i int) string { return engine.DomState(i).String() })
	reasonByName = names[engine.Reason](func(i int) string { return engine.Reason(i).String() })
	signalByName = names[engine.SignalKind](func(i int) string { return engine.SignalKind(i).String() })
)

// names maps each known name of a uint8 enumeration to its value (unknown values print as
// "kind(n)", with a parenthesis).
func names[T ~uint8](name func(int) string) map[string]T {
	m := map[string]T{}
	for i := 0; i < 256; i++ {
		n := name(i)
		if strings.Contains(n, "(") {
			break
		}
		m[n] = T(i)
	}
	return m
}
