package daemon

import (
	"context"
	"errors"
	"fmt"
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
		out = append(out, api.FromStatus(s))
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
	return api.FromStatus(s), nil
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
	d.mu.Lock()
	seq := d.stamp()
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
		st, r := d.tr.Row(dom.Name, int(dom.State), dom.Reason)
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
	if out := d.stepLocked(ctx, in); out.Err != nil {
		return api.VM{}, api.BadRequest("policy", "%v", out.Err)
	}
	if found && !already {
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
		switch v.State {
		case "recovering":
			s.Recovering++
		case "error":
			s.Error++
		default:
			s.Healthy++
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

func toRecord(s engine.VMStatus) store.VM {
	desired := s.Desired.String()
	if s.Desired == engine.WantAbsent {
		desired = engine.WantStopped.String()
	}
	return store.VM{Name: string(s.VM), Host: string(s.Home), MemMiB: s.MemMiB, Desired: desired,
		Policy: store.Policy{MaxRestarts: s.Policy.MaxRestarts, Window: store.Duration(s.Policy.Window),
			MaxRelocations: s.Policy.MaxRelocations, OnGuestShutdown: s.Policy.OnGuestShutdown.String(),
			Priority: s.Policy.Priority, AntiAffinity: s.Policy.AntiAffinity}}
}

func sameRecord(a, b store.VM) bool {
	a.Rev, b.Rev = 0, 0
	return a == b
}

func fromRecord(r store.VM) (engine.Policy, engine.Desired, error) {
	gs, err := engine.ParseGuestShutdownPolicy(r.Policy.OnGuestShutdown)
	if err != nil {
		return engine.Policy{}, 0, err
	}
	p := engine.Policy{MaxRestarts: r.Policy.MaxRestarts, Window: time.Duration(r.Policy.Window),
		MaxRelocations: r.Policy.MaxRelocations, OnGuestShutdown: gs, Priority: r.Policy.Priority,
		AntiAffinity: r.Policy.AntiAffinity}
	var d engine.Desired
	switch r.Desired {
	case "running":
		d = engine.WantRunning
	case "paused":
		d = engine.WantPaused
	case "stopped":
		d = engine.WantStopped
	default:
		return p, 0, fmt.Errorf("desired %q: want running, paused or stopped", r.Desired)
	}
	return p, d, nil
}
