package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/lifecycle"
	"github.com/hassproject/hass/store"
	"github.com/hassproject/hass/version"
	"github.com/hassproject/hass/wire"
)

var _ api.Service = (*Controller)(nil)

// unavailable is the error of a request this controller cannot serve: it does not lead
// (naming who does), or the store refuses writes.
func (c *Controller) unavailable(ctx context.Context) error {
	v, term, err := c.st.Leader(ctx)
	if err != nil || term == 0 {
		return api.Unavailable("no controller leads right now (an election is under way, or the store is unreachable): try again in a few seconds")
	}
	var l Leader
	_ = json.Unmarshal([]byte(v), &l)
	if l.API != "" {
		return api.Unavailable("this controller (%s) does not lead: controller %s does (term %d), at %s", c.cfg.Name, l.Name, term, l.API)
	}
	return api.Unavailable("this controller (%s) does not lead: controller %s does (term %d)", c.cfg.Name, l.Name, term)
}

// VMs implements api.Service.
func (c *Controller) VMs(ctx context.Context) ([]api.VM, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return nil, c.unavailable(ctx)
	}
	st := c.eng.Status()
	out := make([]api.VM, 0, len(st))
	for _, s := range st {
		out = append(out, c.view(s))
	}
	return out, nil
}

// VM implements api.Service.
func (c *Controller) VM(ctx context.Context, name string) (api.VM, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return api.VM{}, c.unavailable(ctx)
	}
	s, ok := c.eng.Get(engine.VMID(name))
	if !ok {
		return api.VM{}, api.NotFound("vm %q is not protected", name)
	}
	return c.view(s), nil
}

// view is the API view of a VM. While its host's libvirt cannot be reached nothing is known
// about a VM that is not being recovered or operated on: it reads as unknown, never as
// healthy. Callers hold c.mu.
func (c *Controller) view(s engine.VMStatus) api.VM {
	if c.libvirt[s.Home] != "connected" && s.State == "healthy" {
		s.State, s.Observed, s.Reason = "unknown", engine.DomUnknown, engine.ReasonUnknown
	}
	return api.FromStatus(s)
}

// findDomain looks for a domain in the hosts' inventories (what their agents last listed).
// A domain defined on several hosts is taken where it runs.
// blind is a live host whose libvirt does not answer (its list is not known), if any.
func (c *Controller) findDomain(ctx context.Context, name string) (inv store.Inventory, row store.DomainRow, found bool, blind *store.Inventory, err error) {
	invs, err := c.st.Inventories(ctx)
	if err != nil {
		return store.Inventory{}, store.DomainRow{}, false, nil, err
	}
	hosts := make([]string, 0, len(invs))
	for h := range invs {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	var best store.Inventory
	c.mu.Lock()
	for _, h := range hosts {
		if _, alive := c.alive[engine.HostID(h)]; alive && invs[h].Libvirt != "connected" && blind == nil {
			b := invs[h]
			blind = &b
		}
	}
	c.mu.Unlock()
	for _, h := range hosts {
		for _, d := range invs[h].Domains {
			if d.Name != name {
				continue
			}
			if !found || (d.State == 1 && row.State != 1) { // 1: running
				best, row, found = invs[h], d, true
			}
		}
	}
	return best, row, found, blind, nil
}

// Protect implements api.Service: the domain must be defined on a host of the cluster (as
// its agent last listed it); its current state becomes its desired state (a running VM is
// protected as running, a shut-off one as stopped).
func (c *Controller) Protect(ctx context.Context, name string, req api.ProtectRequest) (api.VM, error) {
	instance := ""
	if c.cfg.Nova != nil {
		var err error
		if name, instance, err = c.novaResolve(ctx, name); err != nil {
			return api.VM{}, err
		}
	}
	c.mu.Lock()
	if !c.leading {
		c.mu.Unlock()
		return api.VM{}, c.unavailable(ctx)
	}
	base := engine.DefaultPolicy()
	cur, already := c.eng.Get(engine.VMID(name))
	if already {
		base = cur.Policy
	}
	c.mu.Unlock()
	p, err := req.Policy.Apply(base)
	if err != nil {
		return api.VM{}, err
	}
	if instance != "" {
		p.Instance = instance
	}
	if err := c.st.Writable(); err != nil {
		return api.VM{}, api.Unavailable("%v: nothing was changed", err)
	}
	inv, row, found, blind, err := c.findDomain(ctx, name)
	if err != nil {
		return api.VM{}, api.Unavailable("cannot read the hosts' domain lists: %v", err)
	}
	if found && inv.Libvirt != "connected" {
		return api.VM{}, api.Unavailable("cannot list the domains of host %s: %s", inv.Host, inv.Libvirt)
	}
	if !found && blind != nil {
		// It may be defined there: nobody can tell until that host's libvirt answers.
		return api.VM{}, api.Unavailable("no domain %q on the hosts that answer, and cannot list the domains of host %s: %s",
			name, blind.Host, blind.Libvirt)
	}
	var in engine.Protect
	var obs engine.Observe
	if found {
		st, why := lifecycle.NewTranslator().Row(row.Name, row.State, row.Reason)
		h := engine.HostID(inv.Host)
		in = engine.Protect{VM: engine.VMID(name), Host: h, MemMiB: int(row.MemKiB / 1024), VCPUs: row.VCPUs, Policy: p, Desired: wire.DesiredOf(st)}
		obs = engine.Observe{Host: h, VM: engine.VMID(name), Seq: inv.Seq, State: st, Reason: why, At: inv.At}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return api.VM{}, c.unavailable(ctx)
	}
	if !found && !c.eng.Protected(engine.VMID(name)) {
		return api.VM{}, api.NotFound("no domain %q on any host of the cluster (virsh list --all shows what there is)", name)
	}
	if !found {
		in = engine.Protect{VM: engine.VMID(name), Policy: p} // a policy update of a known VM
	}
	isNew := !c.eng.Protected(engine.VMID(name))
	if out := c.stepLocked(ctx, in); out.Err != nil {
		if _, ok := errors.AsType[*engine.AdmissionError](out.Err); ok {
			return api.VM{}, api.Conflict("%v", out.Err)
		}
		return api.VM{}, api.BadRequest("policy", "%v", out.Err)
	}
	if c.recordErr != nil {
		return api.VM{}, api.Unavailable("could not record it (%v): nothing was changed", c.recordErr)
	}
	if found && isNew {
		c.stepLocked(ctx, obs)
	}
	if err := c.st.SetOptOut(ctx, name, false); err != nil {
		c.log.Warn("clear the opt-out", "vm", name, "err", err)
	}
	delete(c.optOut, name)
	s, _ := c.eng.Get(engine.VMID(name))
	return api.FromStatus(s), nil
}

// Unprotect implements api.Service.
func (c *Controller) Unprotect(ctx context.Context, name string) error {
	if err := c.st.Writable(); err != nil {
		return api.Unavailable("%v: nothing was changed", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return c.unavailable(ctx)
	}
	if out := c.stepLocked(ctx, engine.Unprotect{VM: engine.VMID(name)}); out.Err != nil {
		return engineError(out.Err)
	}
	if c.recordErr != nil {
		return api.Unavailable("could not record it (%v): nothing was changed", c.recordErr)
	}
	// A user's unprotect is remembered, so that --protect-all leaves the VM alone.
	c.optOut[name] = true
	if err := c.st.SetOptOut(ctx, name, true); err != nil {
		c.log.Warn("remember the unprotect", "vm", name, "err", err)
	}
	return nil
}

// Operate implements api.Service: the operation is recorded (desired state, event log,
// order) before any agent can act on it.
func (c *Controller) Operate(ctx context.Context, name string, req api.OperationRequest) (api.Operation, error) {
	if err := c.st.Writable(); err != nil {
		return api.Operation{}, api.Unavailable("%v: nothing was changed", err)
	}
	op, err := engine.ParseOpKind(req.Op)
	if err != nil {
		return api.Operation{}, api.BadRequest("op", "%v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return api.Operation{}, c.unavailable(ctx)
	}
	out := c.stepLocked(ctx, engine.Request{Op: op, VM: engine.VMID(name), Target: engine.HostID(req.Target), Source: engine.SrcAPI})
	if out.Err != nil {
		return api.Operation{}, engineError(out.Err)
	}
	if c.recordErr != nil {
		return api.Operation{}, api.Unavailable("could not record it (%v): nothing was changed", c.recordErr)
	}
	res := api.Operation{VM: name, Op: op.String(), Source: engine.SrcAPI.String(), Phase: engine.PhaseDone.String(), Target: req.Target}
	if s, ok := c.eng.Get(engine.VMID(name)); ok && s.Op != nil && s.Op.Kind == op {
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
func (c *Controller) Events(ctx context.Context, afterSeq uint64, limit int) ([]api.Event, error) {
	evs, err := c.st.Events(ctx, afterSeq, limit)
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

// Status implements api.Service. Host and Libvirt are about LocalHost, the host whose agent
// runs next to this controller (hass up), if any.
func (c *Controller) Status(ctx context.Context) (api.Status, error) {
	storeState := "ok"
	if err := c.st.Health(ctx); err != nil { // unreadable, unwritable (disk full) or failed
		storeState = err.Error()
	}
	s := api.Status{Host: c.cfg.LocalHost, Store: storeState, Version: version.String(), Controller: c.cfg.Name,
		Uptime: time.Since(c.started).Round(time.Second).String()}
	s.StoreMembers, _ = c.st.Members(ctx)
	if s.StoreMembers == nil {
		s.StoreMembers = []string{}
	}
	if v, term, err := c.st.Leader(ctx); err == nil && term != 0 {
		var l Leader
		_ = json.Unmarshal([]byte(v), &l)
		s.Leader, s.Term = l.Name, term
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		s.Libvirt = "unknown (this controller does not lead)"
		return s, nil
	}
	s.Libvirt = c.libvirt[engine.HostID(c.cfg.LocalHost)]
	if s.Libvirt == "" {
		s.Libvirt = "no agent seen yet"
	}
	for h := range c.hosts {
		s.Hosts++
		if c.eng.HostState(h) == "up" {
			s.HostsUp++
		}
	}
	for _, v := range c.eng.Status() {
		s.VMs++
		switch c.view(v).State {
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

// ToRecord is a VM's engine state as stored.
func ToRecord(s engine.VMState) store.VM {
	r := store.VM{Name: string(s.VM), Host: string(s.Home), MemMiB: s.MemMiB, VCPUs: s.VCPUs, Cluster: s.Cluster,
		Desired: s.Desired.String(),
		Policy: store.Policy{MaxRestarts: s.Policy.MaxRestarts, Window: store.Duration(s.Policy.Window),
			MaxRelocations: s.Policy.MaxRelocations, OnGuestShutdown: s.Policy.OnGuestShutdown.String(),
			Priority: s.Policy.Priority, AntiAffinity: s.Policy.AntiAffinity, AntiAffinityHard: s.Policy.AntiAffinityHard,
			Guest: wire.GuestToStore(s.Policy.Guest), Instance: s.Policy.Instance, NovaScheduler: s.Policy.NovaScheduler},
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

// FromRecord turns a stored VM back into engine state, naming the first field it cannot read.
func FromRecord(r store.VM) (engine.VMState, error) {
	host := engine.HostID(r.Host)
	gs, err := engine.ParseGuestShutdownPolicy(r.Policy.OnGuestShutdown)
	if err != nil {
		return engine.VMState{}, fmt.Errorf("policy.on_guest_shutdown: %w", err)
	}
	s := engine.VMState{VM: engine.VMID(r.Name), Home: host, MemMiB: r.MemMiB, VCPUs: r.VCPUs, Cluster: r.Cluster,
		Policy: engine.Policy{MaxRestarts: r.Policy.MaxRestarts, Window: time.Duration(r.Policy.Window),
			MaxRelocations: r.Policy.MaxRelocations, OnGuestShutdown: gs, Priority: r.Policy.Priority,
			AntiAffinity: r.Policy.AntiAffinity, AntiAffinityHard: r.Policy.AntiAffinityHard,
			Guest: wire.GuestFromStore(r.Policy.Guest), Instance: r.Policy.Instance, NovaScheduler: r.Policy.NovaScheduler},
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
			Escalated: op.Escalated, BaseSeq: op.BaseSeq, Home: engine.HostID(op.Home), SawDown: op.SawDown, Pending: op.Pending, Tries: op.Tries}
		if o.Home == "" {
			o.Home = host
		}
		if o.Kind, err = engine.ParseOpKind(op.Kind); err != nil {
			return s, fmt.Errorf("op.kind: %w", err)
		}
		if o.Source, err = engine.ParseSource(op.Source); err != nil {
			return s, fmt.Errorf("op.source: %w", err)
		}
		if o.Prev, err = parseDesired(op.Prev); err != nil {
			return s, fmt.Errorf("op.prev: %w", err)
		}
		s.Op = o
	}
	if f := r.Failure; f != nil {
		act := engine.HostID(f.ActHost)
		if act == "" {
			act = host
		}
		s.Failure = &engine.FailState{Kind: engine.FailureKind(f.Kind), FaultAt: f.FaultAt, DetectAt: f.DetectAt,
			ActionAt: f.ActionAt, Attempts: f.Attempts, Next: f.Next, InFlight: f.InFlight, ActHost: act,
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
