package daemon

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/store"
)

// version is what `hass status` reports.
const version = "0.1.0"

var _ api.Service = (*Daemon)(nil)

// VMs implements api.Service.
func (d *Daemon) VMs(ctx context.Context) ([]api.VM, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.eng.Status()
	out := make([]api.VM, 0, len(st))
	for _, s := range st {
		out = append(out, d.view(s))
	}
	return out, nil
}

// VM implements api.Service.
func (d *Daemon) VM(ctx context.Context, name string) (api.VM, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.eng.Get(engine.VMID(name))
	if !ok {
		return api.VM{}, api.NotFound("vm %q is not protected", name)
	}
	return d.view(s), nil
}

// view is the API view of a VM. While libvirt cannot be reached nothing is known about a VM
// that is not being recovered or operated on: it reads as unknown, never as healthy.
// Callers hold d.mu.
func (d *Daemon) view(s engine.VMStatus) api.VM {
	if d.libvirt != "connected" && s.State == "healthy" {
		s.State, s.Observed, s.Reason = "unknown", engine.DomUnknown, engine.ReasonUnknown
	}
	return api.FromStatus(s)
}

// Protect implements api.Service: the domain must exist on this host; its current state
// becomes its desired state (a running VM is protected as running, a shut-off one as stopped).
func (d *Daemon) Protect(ctx context.Context, name string, req api.ProtectRequest) (api.VM, error) {
	d.mu.Lock()
	base := engine.DefaultPolicy()
	cur, already := d.eng.Get(engine.VMID(name))
	if already {
		base = cur.Policy
	}
	d.mu.Unlock()
	p, err := req.Policy.Apply(base)
	if err != nil {
		return api.VM{}, err
	}
	if err := d.st.Writable(); err != nil {
		return api.VM{}, api.Unavailable("%v: nothing was changed", err)
	}
	d.mu.Lock()
	seq := d.ag.Stamp(time.Now())
	d.mu.Unlock()
	doms, err := d.drv.List(ctx)
	if err != nil {
		return api.VM{}, api.Unavailable("cannot list the domains of this host: %v", err)
	}
	var found bool
	var in engine.Protect
	var obs engine.Observe
	for _, dom := range doms {
		if dom.Name != name {
			continue
		}
		found = true
		d.mu.Lock()
		st, r := d.ag.Row(rowOf(dom))
		d.mu.Unlock()
		in = engine.Protect{VM: engine.VMID(name), Host: engine.HostID(d.cfg.HostName),
			MemMiB: int(dom.MemoryKiB / 1024), Policy: p, Desired: desiredOf(st)}
		obs = engine.Observe{Host: in.Host, VM: in.VM, Seq: seq, State: st, Reason: r, At: time.Now()}
	}
	if !found && !already {
		return api.VM{}, api.NotFound("no domain %q on host %s (virsh list --all shows what there is)", name, d.cfg.HostName)
	}
	if !found {
		in = engine.Protect{VM: engine.VMID(name), Policy: p} // a policy update of a known VM
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// Decide again under the lock: an unprotect may have raced with the listing above.
	if !found && !d.eng.Protected(engine.VMID(name)) {
		return api.VM{}, api.NotFound("no domain %q on host %s (virsh list --all shows what there is)", name, d.cfg.HostName)
	}
	isNew := !d.eng.Protected(engine.VMID(name))
	if out := d.stepLocked(ctx, in); out.Err != nil {
		return api.VM{}, api.BadRequest("policy", "%v", out.Err)
	}
	if found && isNew {
		d.stepLocked(ctx, obs)
	}
	if err := d.st.SetOptOut(ctx, name, false); err != nil {
		d.log.Warn("clear the opt-out", "vm", name, "err", err)
	}
	s, _ := d.eng.Get(engine.VMID(name))
	return api.FromStatus(s), nil
}

// Unprotect implements api.Service.
func (d *Daemon) Unprotect(ctx context.Context, name string) error {
	if err := d.st.Writable(); err != nil {
		return api.Unavailable("%v: nothing was changed", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if out := d.stepLocked(ctx, engine.Unprotect{VM: engine.VMID(name)}); out.Err != nil {
		return engineError(out.Err)
	}
	// A user's unprotect is remembered, so that --protect-all leaves the VM alone.
	if d.seen == nil {
		d.seen = map[string]bool{}
	}
	d.seen[name] = true
	if err := d.st.SetOptOut(ctx, name, true); err != nil {
		d.log.Warn("remember the unprotect", "vm", name, "err", err)
	}
	return nil
}

// Operate implements api.Service: the operation is recorded (desired state, event log,
// action) before libvirt is asked.
func (d *Daemon) Operate(ctx context.Context, name string, req api.OperationRequest) (api.Operation, error) {
	if err := d.st.Writable(); err != nil {
		return api.Operation{}, api.Unavailable("%v: nothing was changed", err)
	}
	op, err := engine.ParseOpKind(req.Op)
	if err != nil {
		return api.Operation{}, api.BadRequest("op", "%v", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.stepLocked(ctx, engine.Request{Op: op, VM: engine.VMID(name), Target: engine.HostID(req.Target), Source: engine.SrcAPI})
	if out.Err != nil {
		return api.Operation{}, engineError(out.Err)
	}
	res := api.Operation{VM: name, Op: op.String(), Source: engine.SrcAPI.String(), Phase: engine.PhaseDone.String(), Target: req.Target}
	if s, ok := d.eng.Get(engine.VMID(name)); ok && s.Op != nil && s.Op.Kind == op {
		res = api.FromOperation(*s.Op)
	}
	return res, nil
}

func engineError(err error) error {
	if errors.Is(err, engine.ErrNotProtected) {
		return api.NotFound("%v", err)
	}
	return api.Conflict("%v", err)
}

// Events implements api.Service.
func (d *Daemon) Events(ctx context.Context, afterSeq uint64, limit int) ([]api.Event, error) {
	evs, err := d.st.Events(ctx, afterSeq, limit)
	if err != nil {
		return nil, api.Unavailable("event log: %v", err)
	}
	out := make([]api.Event, 0, len(evs))
	for _, e := range evs {
		out = append(out, api.Event{Seq: e.Seq, At: e.At, Type: e.Type, VM: e.VM, Host: e.Host, Kind: e.Kind,
			Msg: e.Msg, FaultAt: e.FaultAt, DetectAt: e.DetectAt, ActionAt: e.ActionAt, RecoveredAt: e.RecoveredAt})
	}
	return out, nil
}

// Status implements api.Service.
func (d *Daemon) Status(ctx context.Context) (api.Status, error) {
	storeState := "ok"
	if err := d.st.Health(ctx); err != nil { // unreadable, unwritable (disk full) or failed
		storeState = err.Error()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := api.Status{Host: d.cfg.HostName, Libvirt: d.libvirt, Store: storeState, Version: version,
		Uptime: time.Since(d.started).Round(time.Second).String()}
	for _, v := range d.eng.Status() {
		s.VMs++
		switch d.view(v).State {
		case "recovering":
			s.Recovering++
		case "error":
			s.Error++
		case "unknown":
			s.Unknown++
		case "healthy":
			s.Healthy++
		default: // an operation in flight
			s.Operating++
		}
	}
	return s, nil
}

// ---- conversions between the engine and the store ---------------------------------------

func toStoreEvent(r engine.Record) store.Event {
	e := api.FromRecord(0, r)
	return store.Event{At: e.At, Type: e.Type, VM: e.VM, Host: e.Host, Kind: e.Kind, Msg: e.Msg,
		FaultAt: e.FaultAt, DetectAt: e.DetectAt, ActionAt: e.ActionAt, RecoveredAt: e.RecoveredAt}
}

func toRecord(s engine.VMState) store.VM {
	r := store.VM{Name: string(s.VM), Host: string(s.Home), MemMiB: s.MemMiB, Desired: s.Desired.String(),
		Policy: store.Policy{MaxRestarts: s.Policy.MaxRestarts, Window: store.Duration(s.Policy.Window),
			MaxRelocations: s.Policy.MaxRelocations, OnGuestShutdown: s.Policy.OnGuestShutdown.String(),
			Priority: s.Policy.Priority, AntiAffinity: s.Policy.AntiAffinity},
		Gen: s.Gen, Restarts: s.Restarts, Relocations: s.Relocations, Errored: s.Errored,
		IntentSeq: s.IntentSeq, Ambiguous: s.Ambiguous}
	if op := s.Op; op != nil {
		r.Op = &store.Op{ID: op.ID, Kind: op.Kind.String(), Source: op.Source.String(), Target: string(op.Target),
			Started: op.Started.UTC(), Deadline: op.Deadline.UTC(), Escalated: op.Escalated, Prev: op.Prev.String(),
			BaseSeq: op.BaseSeq, Home: string(op.Home), SawDown: op.SawDown, Pending: op.Pending, Tries: op.Tries}
	}
	if f := s.Failure; f != nil {
		r.Failure = &store.Failure{Kind: string(f.Kind), FaultAt: f.FaultAt.UTC(), DetectAt: f.DetectAt.UTC(),
			ActionAt: f.ActionAt.UTC(), Attempts: f.Attempts, Next: f.Next.UTC(), InFlight: f.InFlight,
			ActHost: string(f.ActHost), Evacuate: f.Evacuate, NoCapacityAlerted: f.NoCapacityAlerted}
	}
	for i, t := range r.Restarts {
		r.Restarts[i] = t.UTC()
	}
	for _, f := range s.FailedOn {
		r.FailedOn = append(r.FailedOn, store.FailedOn{Host: string(f.Host), At: f.At.UTC()})
	}
	return r
}

func sameRecord(a, b store.VM) bool {
	a.Rev, b.Rev = 0, 0
	return reflect.DeepEqual(a, b)
}

// fromRecord turns a stored VM back into engine state, naming the first field it cannot read.
func fromRecord(r store.VM, host engine.HostID) (engine.VMState, error) {
	gs, err := engine.ParseGuestShutdownPolicy(r.Policy.OnGuestShutdown)
	if err != nil {
		return engine.VMState{}, fmt.Errorf("policy.on_guest_shutdown: %w", err)
	}
	s := engine.VMState{VM: engine.VMID(r.Name), Home: host, MemMiB: r.MemMiB,
		Policy: engine.Policy{MaxRestarts: r.Policy.MaxRestarts, Window: time.Duration(r.Policy.Window),
			MaxRelocations: r.Policy.MaxRelocations, OnGuestShutdown: gs, Priority: r.Policy.Priority,
			AntiAffinity: r.Policy.AntiAffinity},
		Gen: max(r.Gen, 1), Restarts: r.Restarts, Relocations: r.Relocations, Errored: r.Errored,
		IntentSeq: r.IntentSeq, Ambiguous: r.Ambiguous}
	for _, f := range r.FailedOn {
		s.FailedOn = append(s.FailedOn, engine.HostFailure{Host: engine.HostID(f.Host), At: f.At})
	}
	if s.Desired, err = parseDesired(r.Desired); err != nil {
		return s, fmt.Errorf("desired: %w", err)
	}
	if op := r.Op; op != nil {
		o := &engine.OpState{ID: op.ID, Target: engine.HostID(op.Target), Started: op.Started, Deadline: op.Deadline,
			Escalated: op.Escalated, BaseSeq: op.BaseSeq, Home: host, SawDown: op.SawDown, Pending: op.Pending, Tries: op.Tries}
		if o.Kind, err = engine.ParseOpKind(op.Kind); err != nil {
			return s, fmt.Errorf("op.kind: %w", err)
		}
		if o.Source, err = engine.ParseSource(op.Source); err != nil {
			return s, fmt.Errorf("op.source: %w", err)
		}
		if o.Prev, err = parseDesired(op.Prev); err != nil {
			return s, fmt.Errorf("op.prev: %w", err)
		}
		if engine.HostID(op.Home) != host {
			o.BaseSeq = 0 // accepted on another host name: nothing here is older than it
		}
		s.Op = o
	}
	if f := r.Failure; f != nil {
		s.Failure = &engine.FailState{Kind: engine.FailureKind(f.Kind), FaultAt: f.FaultAt, DetectAt: f.DetectAt,
			ActionAt: f.ActionAt, Attempts: f.Attempts, Next: f.Next, InFlight: f.InFlight, ActHost: host,
			Evacuate: f.Evacuate, NoCapacityAlerted: f.NoCapacityAlerted}
	}
	return s, s.Validate()
}

func parseDesired(s string) (engine.Desired, error) {
	for _, d := range []engine.Desired{engine.WantRunning, engine.WantPaused, engine.WantStopped, engine.WantAbsent} {
		if d.String() == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("%q: want running, paused, stopped or absent", s)
}
