package engine

import (
	"fmt"
	"slices"
	"time"

	"github.com/hassproject/hass/placement"
)

// ---- user operations -------------------------------------------------------------------

func (e *Engine) request(in Request) {
	v := e.vms[in.VM]
	if v == nil {
		e.out.Err = fmt.Errorf("%s: vm %q is %w", in.Op, in.VM, ErrNotProtected)
		return
	}
	e.touch(v)
	o := v.obsOn(v.home)
	observed := DomUnknown
	if o != nil {
		observed = o.state
	}
	home := e.homeHost(v)
	refuse := func(format string, args ...any) {
		e.out.Err = fmt.Errorf("%s %s: %s", in.Op, in.VM, fmt.Sprintf(format, args...))
	}
	target := v.home
	if int(in.Op) >= len(opNames) {
		e.out.Err = fmt.Errorf("%s %s: unknown operation", in.Op, in.VM)
		return
	}
	switch in.Op {
	case OpStart:
		if home.state == hostSuspect {
			// Its lease expired but it is not fenced: the VM may still run there (a majority
			// without a lease holds back its fences for as long as it lasts).
			refuse("home host %s is suspect: the vm may still run there until it is fenced or back", v.home)
			return
		}
		if home.state != hostUp || (home.maint && !observed.up()) {
			what := home.state.String()
			if home.maint {
				what = "in maintenance"
			}
			var why string
			if target, why = e.place(v, v.home, placement.User); target == "" {
				refuse("home host %s is %s and no other host fits: %s", v.home, what, why)
				return
			}
		}
		if !v.wantsUp() {
			// A stopped VM that starts needs room after the cluster's tolerated losses.
			if err := e.admitVM(v.id, v.mem, v.vcpus, e.hosts[target]); err != nil {
				e.out.Err = fmt.Errorf("%s %s: %w", in.Op, in.VM, err)
				return
			}
		}
	case OpReboot, OpSuspend, OpMigrate:
		if v.fail != nil {
			refuse("vm is recovering from %s", v.fail.kind)
			return
		}
		if observed != DomRunning {
			refuse("vm is %s, not running", observed)
			return
		}
		if in.Op == OpMigrate {
			if in.Target == "" {
				var why string
				if in.Target, why = e.place(v, v.home, placement.User); in.Target == "" {
					refuse("no host fits: %s", why)
					return
				}
			}
			t := e.hosts[in.Target]
			switch {
			case t == nil:
				refuse("unknown target host %q", in.Target)
				return
			case in.Target == v.home:
				refuse("vm already runs on %s", in.Target)
				return
			case t.state != hostUp:
				refuse("target host %s is %s", in.Target, t.state)
				return
			case !in.Source.ours():
				// Nova moves it whatever hass says: only expect it.
			case t.maint:
				refuse("target host %s is in maintenance", in.Target)
				return
			case t.cluster != v.cluster:
				refuse("target host %s is in cluster %s; the vm belongs to cluster %s", in.Target, t.cluster, v.cluster)
				return
			case t.reserved:
				refuse("target host %s is reserved for recoveries", in.Target)
				return
			case v.policy.AntiAffinityHard && t.groups[v.policy.AntiAffinity] > 0:
				refuse("target host %s runs a vm of anti-affinity group %s, which is hard", in.Target, v.policy.AntiAffinity)
				return
			}
			in.Target = t.id
		}
	case OpResume:
		if observed != DomPaused {
			refuse("vm is %s, not paused", observed)
			return
		}
	case OpShutdown:
		if !observed.up() && v.fail == nil {
			refuse("vm is %s, not running", observed)
			return
		}
	}
	if (in.Op == OpReboot || in.Op == OpSuspend || in.Op == OpMigrate || in.Op == OpResume) &&
		!v.wantsUp() && in.Source == SrcAPI {
		refuse("the vm is being %s: start it first", v.desired)
		return
	}
	if v.op != nil {
		e.endOp(v, PhaseFailed, "superseded by "+in.Op.String())
	}
	prev := v.desired
	if !(in.Op == OpStart && v.fail != nil && v.desired == WantRunning) {
		v.gen++ // a start riding along a recovery leaves the recovery's orders current
	}
	v.markIntent()
	op := &Operation{ID: e.id(), Kind: in.Op, VM: v.id, Source: in.Source, Phase: PhaseRunning,
		Target: in.Target, Started: e.now}
	op.home = v.home
	if o != nil {
		op.baseSeq = o.seq // only what is seen after the request can complete it
	}
	v.op, v.opSawDown, v.opActID = op, false, 0
	e.log(RecOp, v.id, v.home, "%s accepted id=%d source=%s", in.Op, op.ID, in.Source)
	if v.errored {
		// The user took over: protection starts afresh from what they asked for.
		v.errored, v.restarts, v.relocations = false, nil, 0
	}
	why := fmt.Sprintf("op:%d", op.ID)
	var kind ActKind
	switch in.Op {
	case OpStart:
		v.desired, op.Deadline, kind = WantRunning, e.now.Add(e.cfg.StartTimeout), ActStart
		if v.fail != nil {
			// A recovery is already bringing it back: the start rides along with it.
			return
		}
		v.home = target
	case OpShutdown:
		v.desired, op.Deadline, kind = WantStopped, e.now.Add(e.cfg.ShutdownTimeout), ActShutdown
	case OpStop:
		v.desired, op.Deadline, kind = WantStopped, e.now.Add(e.cfg.StartTimeout), ActDestroy
	case OpDelete:
		v.desired, op.Deadline, kind = WantAbsent, e.now.Add(e.cfg.StartTimeout), ActDelete
	case OpReboot:
		op.Deadline, kind = e.now.Add(e.cfg.RebootTimeout), ActReboot
	case OpMigrate:
		op.Deadline, kind = e.now.Add(e.cfg.MigrateTimeout), ActMigrate
	case OpSuspend:
		v.desired, op.Deadline, kind = WantPaused, e.now.Add(e.cfg.StartTimeout), ActSuspend
	case OpResume:
		v.desired, op.Deadline, kind = WantRunning, e.now.Add(e.cfg.StartTimeout), ActResume
	}
	op.prev = prev
	if v.desired != WantRunning && v.desired != WantPaused && v.fail != nil {
		e.log(RecOp, v.id, v.home, "recovery from %s cancelled: the user wants it %s", v.fail.kind, v.desired)
		v.fail = nil
	}
	if in.Source == SrcOpenStack {
		// Nova carries the operation out itself; hass only expects its effects.
		e.checkOp(v)
		return
	}
	a := e.act(v, kind, v.home, in.Target, why)
	v.opActID = a.ID
	e.checkOp(v)
}

// endOp closes the operation in flight.
func (e *Engine) endOp(v *vm, p OpPhase, why string) {
	op := v.op
	op.Phase = p
	e.log(RecOp, v.id, v.home, "%s id=%d %s: %s", op.Kind, op.ID, p, why)
	v.op, v.opActID, v.reissue = nil, 0, false
}

// infer records an operation that was done behind hass's back (virsh, the guest itself).
func (e *Engine) infer(v *vm, k OpKind, src Source, d Desired, why string) {
	if v.op != nil {
		e.endOp(v, PhaseFailed, "superseded by "+k.String()+" from "+src.String())
	}
	v.gen++
	v.desired = d
	v.markIntent()
	e.log(RecOp, v.id, v.home, "%s inferred source=%s (%s): desired=%s", k, src, why, d)
}

// checkOp completes or expires the operation in flight.
func (e *Engine) checkOp(v *vm) {
	op := v.op
	if op == nil {
		return
	}
	o := v.obsOn(v.home)
	state := DomUnknown
	if o != nil {
		state = o.state
	}
	done := false
	fresh := state
	if o != nil && o.seq <= op.baseSeq && v.home == op.home {
		fresh = DomUnknown // nothing seen since the request
	}
	switch op.Kind {
	case OpStart, OpResume:
		done = fresh == DomRunning
	case OpShutdown, OpStop:
		// (a copy that left by live migration is not stopped: the VM runs on elsewhere)
		done = (fresh == DomShutoff && o.reason != ReasonMigrated) || fresh == DomAbsent
	case OpSuspend:
		done = fresh == DomPaused
	case OpReboot:
		done = v.opSawDown && fresh == DomRunning
	case OpDelete:
		done = fresh == DomAbsent
	case OpMigrate:
		done = v.home == op.Target && fresh == DomRunning
	}
	if done {
		e.endOp(v, PhaseDone, "observed "+state.String())
		if op.Kind == OpDelete {
			e.forget(v, "deleted")
		}
		return
	}
	if op.Kind == OpMigrate && e.stayedHome(v, op, o) {
		// Nothing else ends it when the migration's result is lost (the leading controller
		// died with the destination, and its order with it): it would wait for its deadline.
		e.endOp(v, PhaseFailed, fmt.Sprintf("its destination %s was fenced, so it did not land there; the vm runs on here", op.Target))
		return
	}
	if h := e.homeHost(v); h != nil && h.state == hostFenced {
		// Its host is fenced: the VM is down, proved. A stop is done; a delete is done as far
		// as the VM goes (its definition stays on the dead host, which hass no longer tends).
		switch op.Kind {
		case OpStop, OpShutdown:
			e.endOp(v, PhaseDone, fmt.Sprintf("its host %s was fenced: the vm is down", v.home))
			return
		case OpDelete:
			e.endOp(v, PhaseDone, fmt.Sprintf("its host %s was fenced: the vm is down", v.home))
			e.forget(v, fmt.Sprintf("deleted (its definition on %s is left there: the host is fenced)", v.home))
			return
		}
	}
	if v.reissue && o != nil && state != DomUnknown && v.home == op.home {
		// Restored with its action unanswered: the last process may have died before it
		// was carried out. Every such action is idempotent, so issue it again.
		v.reissue = false
		if reissuable(op) && op.Source != SrcOpenStack && e.now.Before(op.Deadline) {
			e.log(RecOp, v.id, v.home, "%s id=%d restored unanswered: issuing it again", op.Kind, op.ID)
			e.opAct(v, opAction(op))
			return
		}
	}
	if e.now.Before(op.Deadline) {
		if !op.retryAt.IsZero() && v.opActID == 0 && !e.now.Before(op.retryAt) {
			// Its action never reached the hypervisor: issue it again.
			e.opAct(v, opAction(op))
		}
		return
	}
	if op.Kind == OpShutdown && !op.escalated && state.up() {
		op.escalated = true
		op.Deadline = e.now.Add(e.cfg.StartTimeout)
		e.log(RecOp, v.id, v.home, "shutdown id=%d outlived its deadline: destroying", op.ID)
		e.opAct(v, ActDestroy)
		return
	}
	if k, ok := insist(op, state); ok {
		// The user's stop, delete or suspend stands: hass never turns it around on its own.
		// It tries again a few times; if the VM still is not seen done, the operation has
		// failed and the VM is in error, with one alert, for the user to sort out.
		if op.tries >= InsistTries {
			e.endOp(v, PhaseFailed, fmt.Sprintf("not confirmed after %d attempts (vm %s)", op.tries+1, state))
			v.errored = true
			e.log(RecAlert, v.id, v.home, "%s id=%d could not be carried out: the vm is still %s on %s after %d attempts; it is in error and hass will not try again until a user acts",
				op.Kind, op.ID, state, v.home, op.tries+1)
			return
		}
		op.tries++
		op.Deadline = e.now.Add(e.cfg.StartTimeout)
		if op.Kind == OpShutdown {
			op.escalated = true // insisting on a shutdown is a destroy
		}
		e.log(RecOp, v.id, v.home, "%s id=%d not confirmed by its deadline (vm %s): trying again (%d of %d)", op.Kind, op.ID, state, op.tries, InsistTries)
		e.opAct(v, k)
		return
	}
	e.endOp(v, PhaseExpired, "deadline passed with the vm "+state.String())
	e.opFailed(v, op, state)
}

// opAct issues the action that carries out the VM's operation.
func (e *Engine) opAct(v *vm, k ActKind) {
	op := v.op
	target := HostID("")
	if k == ActMigrate {
		target = op.Target
	}
	op.retryAt = time.Time{}
	v.opActID = e.act(v, k, v.home, target, fmt.Sprintf("op:%d", op.ID)).ID
}

// opAction is the action that carries out an operation.
func opAction(op *Operation) ActKind {
	switch op.Kind {
	case OpShutdown:
		if op.escalated {
			return ActDestroy
		}
		return ActShutdown
	case OpStop:
		return ActDestroy
	case OpReboot:
		return ActReboot
	case OpDelete:
		return ActDelete
	case OpMigrate:
		return ActMigrate
	case OpSuspend:
		return ActSuspend
	case OpResume:
		return ActResume
	}
	return ActStart
}

// InsistTries is how many times a stop, shutdown, delete or suspend is tried again after its
// deadline passed without it being seen done, before it fails and leaves the VM in error.
const InsistTries = 3

// opErrorCured: a VM left in error by a stop, delete or suspend that could not be carried out
// is now seen as the user wanted it (down, gone, paused): it is no longer in error.
func (e *Engine) opErrorCured(v *vm) {
	o := v.obsOn(v.home)
	h := e.homeHost(v)
	fenced := h != nil && h.state == hostFenced
	fresh := o != nil && o.state != DomUnknown && o.seq > v.intentSeq
	switch v.desired {
	case WantAbsent:
		if fenced || (fresh && o.state == DomAbsent) {
			v.errored = false
			e.forget(v, "deleted: it is gone, as the user asked")
		}
	case WantStopped:
		if fenced || (fresh && !o.state.up()) {
			v.errored = false
			e.log(RecOp, v.id, v.home, "no longer in error: the vm is down, as the user asked")
		}
	case WantPaused:
		if fresh && o.state == DomPaused {
			v.errored = false
			e.log(RecOp, v.id, v.home, "no longer in error: the vm is paused, as the user asked")
		} else if fenced || (fresh && !o.state.up()) {
			// It went down since (its host's power went, say, while the suspend could reach
			// nobody): the suspend is moot, and the VM is protected as any paused VM that goes
			// down (its memory is lost: it runs again).
			v.errored = false
			e.log(RecOp, v.id, v.home, "no longer in error: the vm is down, not paused: protected as a paused vm that went down")
		}
	}
}

// insist says whether an operation that changes the user's intent towards "less running"
// still has work to do, and which action does it.
func insist(op *Operation, state DomState) (ActKind, bool) {
	switch op.Kind {
	case OpStop, OpShutdown:
		return ActDestroy, state.up() || state == DomUnknown
	case OpDelete:
		return ActDelete, state != DomAbsent
	case OpSuspend:
		return ActSuspend, state == DomRunning || state == DomUnknown
	}
	return 0, false
}

// opFailed handles an operation that failed or expired: declare a failure when the VM
// should run and does not.
func (e *Engine) opFailed(v *vm, op *Operation, state DomState) {
	switch op.Kind {
	case OpMigrate:
		if o := v.obsOn(v.home); !op.Source.ours() && v.wantsUp() && !state.up() && v.fail == nil && o != nil && e.nowhere(v, op, o) {
			e.detect(v, FailOperation, e.now, "migration left the vm running nowhere")
		}
	case OpStart, OpReboot, OpResume:
		if v.wantsUp() && !state.up() && v.fail == nil && !downOnPurpose(v.obsOn(v.home), op) {
			e.detect(v, FailOperation, e.now, fmt.Sprintf("%s did not bring the vm up", op.Kind))
		}
	}
}

// downOnPurpose: since op was accepted, the VM was seen to go down by somebody's wish (the
// guest shut itself down, a user stopped, shut down, undefined or migrated it away), not by
// failing. The classification rules say what that means, as they would without the
// operation.
func downOnPurpose(o *hostObs, op *Operation) bool {
	if o == nil || o.seq <= op.baseSeq || o.state.up() || crashReason(o) {
		return false
	}
	switch o.reason {
	case ReasonShutdownGuest, ReasonShutdownHost, ReasonShutdown, ReasonDestroyed, ReasonUndefined, ReasonMigrated:
		return true
	}
	return false
}

// ---- observations ----------------------------------------------------------------------

func (e *Engine) observe(h HostID, id VMID, seq uint64, st DomState, r Reason, at time.Time) {
	v, hh := e.vms[id], e.hosts[h]
	if v == nil || hh == nil {
		return
	}
	e.observeVM(v, hh.id, seq, st, r, at) // the host's own string: the same name
}

// observeVM is observe of v, protected, on h, a known host.
func (e *Engine) observeVM(v *vm, h HostID, seq uint64, st DomState, r Reason, at time.Time) {
	id := v.id
	e.touch(v)
	o := v.obsFor(h)
	if !e.cfg.Naive && seq != 0 && seq <= o.seq {
		if st != o.state {
			e.log(RecStale, id, h, "%s/%s seq=%d dropped: already know %s/%s seq=%d", st, r, seq, o.state, o.reason, o.seq)
		}
		return
	}
	if r == ReasonUnknown && st == o.state {
		r = o.reason // a resync without a reason does not erase what an event told
	}
	prev, prevSeq := o.state, o.seq
	if seq > o.seq {
		o.seq = seq
	}
	if at.IsZero() {
		at = e.now
	}
	prevSince := o.since
	first := prevSince.IsZero() && prevSeq == 0
	o.seen(st, r, at)
	if first && st != DomAbsent && e.listedBeforeNow(h) {
		o.appeared = true // absent from this host's last complete list: it appeared since
	}
	o.prevState, o.prevReason = o.state, o.reason
	o.state, o.reason, o.at = st, r, at
	if h == v.home && (st != DomPaused || r != ReasonUser) {
		v.ownPause = false
	}
	if h != v.home {
		hh, ho := e.homeHost(v), v.obsOn(v.home)
		homeDown := hh == nil || hh.state == hostFenced || hh.powerOff ||
			(hh.state == hostUp && ho != nil && ho.state != DomUnknown && !ho.state.up())
		migrating := v.op != nil && v.op.Kind == OpMigrate && (v.op.Target == h || v.op.Target == "")
		cold, unpause := false, false
		if !st.up() && v.dropDup(h) {
			e.log(RecExpected, id, h, "the extra copy here is gone (%s/%s); the vm runs on %s", st, r, v.home)
		}
		if !st.up() {
			// A copy away from home going down does not matter, unless the VM had already
			// moved here (its home copy is down after a migration) and then failed here
			// before hass heard that it had landed.
			// The copy must have just appeared or just gone down here, by a crash: a resync
			// repeating an old crashed copy, or a fenced one, is no news.
			// A list that shows a copy down, the first word of it from this host (a new
			// leader has heard nothing yet), is no news either: it may be a copy left
			// behind long ago (a migration that failed there).
			fresh := prev == DomAbsent || prev.up() || prevSeq == 0 && !e.listing
			crashed := o.state == DomCrashed || r == ReasonFailed || r == ReasonCrashed || r == ReasonPanicked
			// It ran here as the migration's target: the switch-over had happened, whatever
			// hass still believes of the source, so whatever took it down here (a crash, a
			// user's destroy) happened to the VM.
			// So did the incoming copy, last heard still paused, when the source has handed
			// over (libvirt stops the source by migration only once the destination has
			// resumed the guest, the resume unheard here), or when it was shut down (only a
			// running guest shuts down): it landed, and then went down.
			handed := ho != nil && ho.state == DomShutoff && ho.reason == ReasonMigrated
			shutdown := r == ReasonShutdownGuest || r == ReasonShutdownHost || r == ReasonShutdown
			incoming := prev == DomPaused && o.prevReason == ReasonMigrated
			ranHere := migrating && (prev == DomRunning && o.prevReason == ReasonMigrated || incoming && (handed || shutdown))
			// An incoming copy that shut down or panicked ran here (a paused incoming copy
			// runs no guest code), whether or not hass knows of the migration (a user's virsh
			// migrate whose events were all lost): the VM landed here, and went down here.
			panicked := st == DomCrashed || r == ReasonPanicked
			ranHere = ranHere || incoming && (shutdown || panicked) && fresh
			// A copy that appeared here since this host's last list and that its fence
			// destroyed ran here: the migration landed here, and went down with the fence.
			ranHere = ranHere || migrating && homeDown && fencedOnArrival(o) && prev != st
			if !(migrating && homeDown && crashed && fresh && prev != st) && !ranHere {
				return
			}
			if incoming && !shutdown && e.arrivedElsewhere(v, h) {
				// Only an incoming copy went down here (an aborted migration), and another
				// host holds one a migration brought: the source may have handed over to it
				// (two migrations at once, one a user's). Its report says where it landed.
				return
			}
		}
		switch {
		case !st.up():
			e.log(RecExpected, id, h, "migrated here from %s, then went down", v.home)
			if v.op != nil && v.op.Kind == OpMigrate {
				v.op.Target = h
			}
		case st == DomPaused && (r == ReasonMigrated || migrating && r != ReasonUser):
			// The incoming copy of a migration under way: it does not run yet. libvirt
			// reports an incoming copy paused for migration (the rig's TestIncomingCopyReason
			// checks it): one paused by a user at the target has landed, and is live.
			return
		case live(o.prevState, o.prevReason) && v.dupOn(h) == nil && ho != nil && live(ho.state, ho.reason) && !o.at.After(ho.since.Add(time.Second)):
			// Up here already, and reported as of before the home copy came up (a second
			// for clock skew): the source of the migration that took the VM home, in a list
			// taken just before its switch-over and delivered after it. No migration back.
			return
		case (r == ReasonMigrated || migrating) && !homeDown && v.op != nil && v.op.Source.ours() && v.opActID != 0:
			return // ours, still unanswered: its result, or the source stopping, says it landed
		case r == ReasonMigrated || migrating:
			e.log(RecExpected, id, h, "migrated here from %s", v.home)
			if v.op != nil && v.op.Kind == OpMigrate {
				v.op.Target = h
			}
			if f := v.fail; f != nil && f.actID != 0 && f.actHost != h {
				// A recovery start on its way elsewhere is void: the VM runs here.
				v.gen++
				f.actID = 0
			}
			// The old home's copy came up after this one began to arrive (its incoming copy
			// appeared, or it took over): it is not the migration's source, but a copy booted
			// since. Two copies run.
			arrived := o.since
			if prev == DomPaused && o.prevReason == ReasonMigrated && !prevSince.IsZero() {
				arrived = prevSince
			}
			cold = ho != nil && live(ho.state, ho.reason) && hh != nil && hh.state == hostUp && ho.since.After(arrived)
		case homeDown:
			// Started here by somebody while its home copy is known to be down: it lives
			// here now. Anything hass had on its way to the old home is void.
			e.log(RecOp, id, h, "runs here while its copy on %s is down: this is its home now", v.home)
			v.gen++
			if f := v.fail; f != nil {
				f.actID = 0
				if st == DomPaused && r == ReasonUnknown {
					// Paused as a start passes through (Nova's start and hard reboot create
					// the domain paused, then resume it): it is given a start's time to run
					// before the failure is decided on again (a policy spent would give up on
					// a VM that is coming up).
					if next := e.now.Add(e.cfg.StartTimeout); f.next.Before(next) {
						f.next = next
					}
				}
			}
			// hass paused this copy as an extra one only because it could not tell whether
			// the home copy ran (its host was suspect): it did not, so this is the VM's one
			// copy, which somebody started: it is resumed, and meant to run.
			unpause = v.dupOn(h) != nil && st == DomPaused
		case st == DomPaused && r == ReasonUnknown && (!prev.up() || prev == DomPaused && o.prevReason == ReasonUnknown):
			// Paused as a start passes through ("paused (starting up)"): a start, or a live
			// migration's incoming copy before libvirt's STARTED/MIGRATED event (the rig's
			// TestIncomingCopyReason sees about a second of it). No guest code runs yet; the
			// report that it runs, or that it is an incoming copy, says which.
			return
		default:
			// Up here and at home: two copies, unless this report predates the home copy
			// coming up (a migration's source reported just before its switch-over).
			if v.dupOn(h) != nil || !o.prevState.up() || ho == nil || o.at.After(ho.since.Add(time.Second)) {
				e.twoCopies(v, h)
				if v.home == h {
					e.evaluate(v) // it moved home to the copy it keeps
				}
			}
			return
		}
		old := v.home
		v.home = h
		v.dropDup(h) // an extra copy here is the VM's home now
		if cold {
			e.twoCopies(v, old)
		}
		if unpause {
			if v.desired != WantRunning {
				e.log(RecOp, id, h, "started here behind hass's back, and paused by hass only as a possible second copy: desired=running")
				v.desired = WantRunning
				v.markIntent()
			}
			if v.op == nil {
				v.ownPause = true // hass's pause, not a user's, until it is seen otherwise
				e.act(v, ActResume, h, "", "split-brain-resolved")
			}
		}
		if v.stopping() || (v.op != nil && v.op.Kind == OpSuspend) {
			// The user's stop, shutdown, delete or suspend was sent to where the VM was: it
			// follows the VM here.
			e.log(RecOp, id, h, "%s id=%d follows the vm here from %s", v.op.Kind, v.op.ID, old)
			e.opAct(v, opAction(v.op))
		}
	}
	if v.op != nil && v.op.Kind == OpReboot && !st.up() {
		v.opSawDown = true
	}
	if st != DomAbsent || r != ReasonUnknown {
		v.vanishedAt = time.Time{}
	}
	e.evaluate(v)
}

func (e *Engine) signal(in Signal) {
	v := e.vms[in.VM]
	if v == nil || in.Host != v.home {
		return
	}
	e.touch(v)
	if o := v.obsOn(in.Host); !e.cfg.Naive && o != nil && in.Seq != 0 && in.Seq <= o.seq {
		e.log(RecStale, v.id, in.Host, "%s seq=%d dropped: already know seq=%d", in.Kind, in.Seq, o.seq)
		return
	}
	switch in.Kind {
	case SigReboot:
		if f := v.fail; f != nil && f.kind.guestLayer() && f.actID != 0 && f.actHost == in.Host && !in.At.Before(f.actAt) {
			// The guest rebooted since its reset (or reboot) was ordered: that is the action
			// taking, whether or not its answer arrives. Never reset it a second time.
			f.actID = 0
			e.log(RecExpected, v.id, v.home, "guest rebooted: its recovery from %s took", f.kind)
			e.recovered(v)
			return
		}
		if v.op != nil && v.op.Kind == OpReboot {
			e.endOp(v, PhaseDone, "guest rebooted")
		} else {
			e.log(RecExpected, v.id, v.home, "guest rebooted itself")
		}
	case SigWatchdog:
		switch in.Watchdog {
		case WatchdogReset:
			e.log(RecDetect, v.id, v.home, "%s: watchdog fired and the hypervisor reset the guest", FailGuestHang)
		case WatchdogNone, WatchdogDebug, WatchdogInjectNMI:
			if v.fail == nil && !v.errored && !e.cfg.Naive && v.wantsUp() && !v.stopping() {
				e.detect(v, FailGuestHang, in.At, "watchdog fired and nothing was done about it")
			}
		default:
			e.log(RecDetect, v.id, v.home, "%s: watchdog fired; the hypervisor stopped or paused the guest", FailWatchdog)
		}
	case SigGuestPanic:
		e.log(RecDetect, v.id, v.home, "%s reported", FailGuestPanic)
	case SigIOError:
		e.log(RecAlert, v.id, v.home, "disk I/O error reported")
	case SigAgentDown, SigAgentUp:
		e.log(RecExpected, v.id, v.home, "%s", in.Kind)
	case SigGuestHung, SigGuestNetDown:
		e.guestLayer(v, in)
	}
}

// guestLayer takes a guest layer's verified failure (package guest): a hung guest OS is
// reset, a guest whose network is down rebooted. The monitor cannot see operations, so what
// explains the silence is checked here: an operation in flight (a reboot, shutdown,
// migration, suspend or start), a VM the user does not want running, a VM not seen running
// (paused by the user, or down: the process layer has it), a recovery already under way.
func (e *Engine) guestLayer(v *vm, in Signal) {
	k, what := FailGuestHang, "its guest agent stopped answering"
	if in.Kind == SigGuestNetDown {
		k, what = FailGuestNetwork, "its network address stopped answering"
	}
	if e.cfg.Naive {
		return
	}
	o := v.obsOn(v.home)
	switch {
	case v.op != nil:
		e.log(RecExpected, v.id, v.home, "%s (%s) during %s id=%d: expected, not a failure", in.Kind, what, v.op.Kind, v.op.ID)
	case v.errored:
		e.log(RecExpected, v.id, v.home, "%s: the vm is in error until a user acts", in.Kind)
	case !v.wantsUp() || v.desired == WantPaused:
		e.log(RecExpected, v.id, v.home, "%s: the user wants it %s", in.Kind, v.desired)
	case v.fail != nil:
		e.log(RecExpected, v.id, v.home, "%s: already recovering from %s", in.Kind, v.fail.kind)
	case o == nil || o.state != DomRunning:
		st := DomUnknown
		if o != nil {
			st = o.state
		}
		e.log(RecExpected, v.id, v.home, "%s while the vm is %s: not a guest failure", in.Kind, st)
	default:
		e.detect(v, k, in.At, what+", verified by the layers beneath and a recheck")
	}
}

func (e *Engine) snapshot(in Snapshot) {
	h := e.hosts[in.Host]
	if h == nil {
		return
	}
	// A host that listed before (since this engine started) did not have a VM it had no
	// observation of: a copy first seen now appeared since.
	e.listedBefore = !h.lastResync.IsZero()
	if in.At.After(h.lastResync) {
		h.lastResync = in.At
	}
	if h.lapsed && h.state == hostUp {
		// Its first complete list since its lease came back says all the fence did.
		defer func() {
			h.lapsed = false
			e.log(RecHost, "", h.id, "listed its domains since its lease came back")
		}()
	}
	e.listing = true
	defer func() { e.listing = false }()
	// Each protected VM listed notes its row (the last, if listed twice).
	c := e.candidates()
	defer c.done()
	for i, d := range in.Domains {
		if v := e.vms[d.VM]; v != nil {
			c.add(v)
			v.row, v.rowMark = i, c.mark
		}
	}
	// The VMs listed, those homed or seen here, and those migrating: the rest have nothing
	// to do with this host.
	c.addRelated(h, true)
	if checkIndexes {
		e.checkCands(c, func(v *vm) bool {
			return slices.ContainsFunc(in.Domains, func(d DomainStatus) bool { return d.VM == v.id }) ||
				v.home == in.Host || v.obsOn(in.Host) != nil || (v.op != nil && v.op.Kind == OpMigrate)
		})
	}
	// Evaluate in name order (an evaluation may forget a VM).
	var waiting []*vm
	for _, v := range c.sorted() {
		if v.dead {
			continue
		}
		if f := v.fail; f != nil && f.incomingLogged && f.actID == 0 && v.obsOn(h.id) != nil {
			waiting = append(waiting, v)
		}
		if f := v.fail; f != nil && f.awaitList == h.id {
			// A restored attempt in flight: this list says whether it took.
			f.awaitList = ""
			if v.rowMark != c.mark || !in.Domains[v.row].State.up() {
				f.next = e.now
				e.touch(v)
			}
		}
		if v.rowMark == c.mark {
			d := in.Domains[v.row]
			if o := v.obsOn(h.id); v.home != h.id && o != nil && e.stillDown(v, o, d) {
				// A copy away from home, down as it was at the last two words of it: only
				// the news's sequence number and time are noted, as observeVM would (the host
				// keeps the definition of every VM that ever left it; each of its lists
				// made each one a step's change).
				e.notedAgain(o, in)
				continue
			}
			e.observeVM(v, h.id, in.Seq, d.State, d.Reason, in.At)
		} else if o := v.obsOn(h.id); v.home != h.id && o != nil && e.stillAbsent(v, o) {
			// Long gone from this host, and absent again: only the news's sequence number and
			// time are noted, as observeVM would, without making the VM a step's change (it
			// was not: at 1,000 hosts, a VM keeps the observation of every host it ever ran
			// on, and every list of each made it one, to be indexed and recorded again).
			e.notedAgain(o, in)
		} else if v.home == h.id || o != nil {
			e.observeVM(v, h.id, in.Seq, DomAbsent, ReasonUnknown, in.At)
		} else if v.op != nil && v.op.Kind == OpMigrate {
			e.evaluate(v) // this host's list may be the last proof that it landed nowhere
		}
	}
	// The VMs that waited for this list (an incoming migration copy was seen here before
	// their home was lost) are decided on it now, not at the next placement retry (10 s
	// later on the rig).
	for _, v := range waiting {
		if f := v.fail; !v.dead && f != nil && f.actID == 0 && f.next.After(e.now) {
			f.next = e.now
			e.evaluate(v)
		}
	}
}

// listedBeforeNow says whether h has sent a complete list since this engine started, before
// the one being handled if any: every protected VM it listed then has an observation there.
func (e *Engine) listedBeforeNow(h HostID) bool {
	if e.listing {
		return e.listedBefore
	}
	hh := e.hosts[h]
	return hh != nil && !hh.lastResync.IsZero()
}

// notedAgain notes a list that tells nothing new of o (stillAbsent, stillDown): its
// sequence number and time, as observeVM would.
func (e *Engine) notedAgain(o *hostObs, in Snapshot) {
	if in.Seq == 0 || in.Seq > o.seq {
		o.seq = max(o.seq, in.Seq)
		at := in.At
		if at.IsZero() {
			at = e.now
		}
		if o.since.IsZero() {
			o.since = at
		}
		o.at = at
	}
}

// stillDown says whether the row d of a list repeats what o, v's observation on a host other
// than its home, already said twice: the same down state (shut off or crashed) and reason,
// and the same before it, with no extra copy there and no migration of v under way. For
// such a row observeVM changes nothing but o's sequence number and time (a copy away from
// home that stays down is no news; only a migration, a copy appearing or going down, or an
// extra copy make it one).
func (e *Engine) stillDown(v *vm, o *hostObs, d DomainStatus) bool {
	if e.cfg.Naive || d.State != o.state || o.state.up() || o.state == DomUnknown || o.state == DomAbsent {
		return false
	}
	if d.Reason != o.reason && d.Reason != ReasonUnknown {
		return false
	}
	return o.prevState == o.state && o.prevReason == o.reason && v.dupOn(o.host) == nil &&
		(v.op == nil || v.op.Kind != OpMigrate)
}

// stillAbsent says whether o, v's observation on a host other than its home, is absent and
// was absent before it too, with no reason, and no extra copy of v is known there: another
// list without v changes nothing there but o's sequence number and time (see observeVM).
func (e *Engine) stillAbsent(v *vm, o *hostObs) bool {
	return !e.cfg.Naive && o.state == DomAbsent && o.reason == ReasonUnknown &&
		o.prevState == DomAbsent && o.prevReason == ReasonUnknown && v.dupOn(o.host) == nil
}

func (e *Engine) actionResult(in ActionResult) {
	v := e.actionVM(in.ID)
	if checkIndexes {
		if old := e.actionVMWalk(in.ID); old != v {
			panic(fmt.Sprintf("engine: action %d: the index says vm %v, the walk of every VM %v", in.ID, v, old))
		}
	}
	if v == nil {
		return
	}
	e.touch(v)
	if f := v.fail; f != nil && f.actID == in.ID {
		f.actID = 0
		if in.Unreached {
			e.unreachedAttempt(v, f, in)
			return
		}
		f.unreached = ""
		if in.Err != "" {
			v.failedOnHost(f.actHost, e.now) // it would not start there
			f.next = e.now.Add(e.backoff(f.attempts))
			e.log(RecAlert, v.id, f.actHost, "recovery attempt %d failed: %s; next try at +%s", f.attempts, in.Err, f.next.Sub(e.now))
			e.evaluate(v)
			return
		}
		if in.Host != "" && in.Host != f.actHost && f.actFrom != "" {
			// A start elsewhere that its executor carried out on another host: Nova's
			// scheduler chose it (the policy leaves the choice to it), or the VM was started
			// again where it was (Nova cannot move it off a compute hass has not fenced
			// without a cold migration). The VM lives there now.
			if h := e.hosts[in.Host]; h == nil || h.state != hostUp {
				v.failedOnHost(f.actHost, e.now)
				f.next = e.now.Add(e.backoff(f.attempts))
				e.log(RecAlert, v.id, in.Host, "recovery attempt %d started it on %s, which is not a host of hass's that is up: hass cannot watch it there; next try at +%s", f.attempts, in.Host, f.next.Sub(e.now))
				e.evaluate(v)
				return
			}
			e.log(RecOp, v.id, in.Host, "started on %s, not %s: its executor chose the host (Nova's scheduler, or where the instance was)", in.Host, f.actHost)
			v.home = in.Host
			v.dropDup(in.Host)
			f.actHost = in.Host
		}
		switch {
		case f.kind == FailGuestHang || f.kind == FailGuestNetwork:
			if o := v.obsFor(f.actHost); in.State != DomUnknown && in.Seq > o.seq {
				o.seen(in.State, in.Reason, e.now)
				o.seq, o.state, o.reason, o.at = in.Seq, in.State, in.Reason, e.now
			} else if o.reason == ReasonWatchdog {
				o.reason = ReasonBooted // the reset answered the watchdog
			}
			e.recovered(v)
		case in.State != DomUnknown:
			e.observe(f.actHost, v.id, in.Seq, in.State, in.Reason, e.now)
		default:
			e.observe(f.actHost, v.id, in.Seq, DomRunning, ReasonBooted, e.now)
		}
		return
	}
	if v.opActID == in.ID && v.op != nil {
		op := v.op
		v.opActID = 0
		if in.Unreached {
			host := in.Host
			if e.hosts[host] == nil {
				host = v.home
			}
			if h := e.hosts[host]; h != nil {
				h.unreached = true
			}
			op.retryAt = e.now.Add(e.unreachedRetry())
			if !op.unreached { // once per outage: each retry is in the log as an action
				e.log(RecOp, v.id, host, "%s id=%d could not reach the hypervisor (%s): issuing it again when %s reports, or every %s",
					op.Kind, op.ID, in.Err, host, e.unreachedRetry())
			}
			op.unreached = true
			return
		}
		op.unreached = false
		if in.Err != "" {
			o := v.obsFor(v.home)
			if in.State != DomUnknown && in.Host == v.home && in.Seq > o.seq {
				// The agent says how it left the domain: fresher than any event.
				o.seen(in.State, in.Reason, e.now)
				o.seq, o.state, o.reason, o.at = in.Seq, in.State, in.Reason, e.now
			}
			state := o.state
			if _, ok := insist(op, state); ok {
				v.opActID = 0
				v.op = op
				e.log(RecOp, v.id, v.home, "%s id=%d failed (%s): trying again at its deadline", op.Kind, op.ID, in.Err)
				return
			}
			e.endOp(v, PhaseFailed, in.Err)
			e.opFailed(v, op, state)
			e.evaluate(v)
			return
		}
		if in.Seq == 0 && op.Kind != OpMigrate && op.Kind != OpReboot {
			return
		}
		if in.State == DomUnknown && op.Kind != OpStart && op.Kind != OpMigrate {
			return // only an observation says how a stop left the domain; wait for one
		}
		if op.Kind == OpReboot {
			e.endOp(v, PhaseDone, "reboot carried out")
		}
		if in.State != DomUnknown && in.Host != "" && op.Kind != OpMigrate {
			e.observe(in.Host, v.id, in.Seq, in.State, in.Reason, e.now)
			return
		}
		switch op.Kind {
		case OpStart:
			e.observe(v.home, v.id, in.Seq, DomRunning, ReasonBooted, e.now)
		case OpStop:
			e.observe(v.home, v.id, in.Seq, DomShutoff, ReasonDestroyed, e.now)
		case OpShutdown:
			if op.escalated {
				e.observe(v.home, v.id, in.Seq, DomShutoff, ReasonDestroyed, e.now)
			}
		case OpDelete:
			e.observe(v.home, v.id, in.Seq, DomAbsent, ReasonUndefined, e.now)
		case OpSuspend:
			e.observe(v.home, v.id, in.Seq, DomPaused, ReasonUser, e.now)
		case OpResume:
			e.observe(v.home, v.id, in.Seq, DomRunning, ReasonResumed, e.now)
		case OpMigrate:
			t := v.obsFor(op.Target)
			t.seen(DomRunning, ReasonMigrated, e.now)
			t.state, t.reason, t.at = DomRunning, ReasonMigrated, e.now
			e.log(RecExpected, v.id, op.Target, "migrated here from %s", v.home)
			old, oo := v.home, v.obsOn(v.home)
			v.home = op.Target
			v.dropDup(v.home)
			if oo != nil && live(oo.state, oo.reason) && oo.since.After(op.Started.Add(time.Second)) && e.hosts[old].state == hostUp {
				e.twoCopies(v, old) // the old home's copy was booted after the migration began
			}
			e.evaluate(v)
		}
		return
	}
}

// ---- time ------------------------------------------------------------------------------

// sayHeldBack says, once per suspicion, of each suspect host whose agent's count of members
// keeps it from being declared fenced by its lease's expiry (see fewMembers).
func (e *Engine) sayHeldBack() {
	for _, h := range e.suspects {
		if h.heldBack || h.maint || !e.noMajority {
			continue
		}
		if _, held := e.fewMembers(h); held {
			h.heldBack = true
			suspects, members := e.majorityCounts()
			e.log(RecAlert, "", h.id, "its agent counts %d of the %d members this engine counts, and the %d without a lease are a majority of its count: it may hold back its self-fence, so hass does not declare it fenced by its lease's expiry (its power fence, its return, or fewer hosts without a lease settle it)",
				h.members, members, suspects)
		}
	}
}

func (e *Engine) tick() {
	if len(e.draining) > 0 {
		e.drainDue()
	}
	if len(e.suspects) > 0 {
		e.sayHeldBack()
		for _, h := range slices.Clone(e.suspects) { // in name order
			if t, ok := e.fenceDue(h); ok && h.state == hostSuspect && !e.now.Before(t) {
				e.fenced(h, "lease expired and the self-fence margin passed")
			}
		}
		e.issueDueFences()
	}
	// The VMs whose timer is due, and those the fences touched, in name order.
	c := e.candidates()
	defer c.done()
	e.due.each(e.now, c.add)
	c.addDirty()
	if checkIndexes {
		e.checkCands(c, e.tickDue)
	}
	for _, v := range c.sorted() {
		if !v.dead && e.tickDue(v) {
			e.evaluate(v)
		}
	}
}

// ---- classification --------------------------------------------------------------------

// evaluate is level-triggered: it looks at the VM's desired state, operation, failure and
// newest observation on its home host, and does whatever is missing. Calling it again with
// nothing changed does nothing.
func (e *Engine) evaluate(v *vm) {
	e.touch(v)
	e.checkOp(v)
	if !v.dead && v.errored && v.op == nil && v.desired != WantRunning {
		e.opErrorCured(v)
	}
	if v.dead || v.errored {
		return // the operation deleted it, or it is in error until a user acts
	}
	h := e.homeHost(v)
	switch {
	case h == nil || h.state == hostSuspect:
		return // unknown: the host may still run it; wait for the fence
	case h.state == hostFenced:
		if v.wantsUp() && v.fail == nil {
			e.detect(v, FailHostDown, h.lastSeen, "home host fenced")
			return
		}
		if v.fail != nil {
			e.recover(v)
		}
		return
	}
	o := v.obsOn(v.home)
	if !v.vanishedAt.IsZero() && (o == nil || o.state != DomAbsent || o.reason != ReasonUnknown) {
		v.vanishedAt = time.Time{} // it is listed again (or known otherwise): not vanished
	}
	if o == nil || o.state == DomUnknown {
		if v.fail != nil {
			e.recover(v)
		}
		return
	}
	if e.cfg.Naive {
		e.naive(v, o)
		return
	}
	e.classify(v, o)
}

// crashReason: the VM went down by itself, not by anybody's request.
func crashReason(o *hostObs) bool {
	switch o.reason {
	case ReasonFailed, ReasonCrashed, ReasonPanicked, ReasonWatchdog, ReasonFenced:
		return true
	}
	return o.state == DomCrashed
}

func failureKind(o *hostObs) FailureKind {
	switch {
	case o.state == DomCrashed || o.reason == ReasonPanicked:
		return FailGuestPanic
	case o.reason == ReasonWatchdog:
		return FailWatchdog
	case o.reason == ReasonFenced:
		return FailHostDown
	}
	return FailVMCrash
}

func (e *Engine) classify(v *vm, o *hostObs) {
	switch o.state {
	case DomRunning:
		if v.fail == nil && o.reason == ReasonWatchdog && v.desired != WantStopped {
			// The agent still remembers an unanswered watchdog: the signal itself was lost.
			e.detect(v, FailGuestHang, o.at, "running, but its watchdog fired and nothing reset it")
			return
		}
		if v.fail != nil {
			if v.fail.kind.guestLayer() {
				e.recover(v) // only its reset (or reboot) ends a hang (or a dead network)
				return
			}
			e.recovered(v)
		}
		if v.op == nil {
			switch v.desired {
			case WantStopped:
				e.infer(v, OpStart, SrcLibvirt, WantRunning, "running with no start in flight")
			case WantPaused:
				e.infer(v, OpResume, SrcLibvirt, WantRunning, "running with no resume in flight")
			}
		}
		return
	case DomPaused:
		switch o.reason {
		case ReasonIOError:
			if v.fail == nil {
				e.detect(v, FailIOError, o.at, "paused on a disk I/O error: fix the storage, then resume; not restarting")
			}
		case ReasonWatchdog:
			if v.fail == nil && v.wantsUp() && !v.stopping() {
				e.detect(v, FailGuestHang, o.at, "paused by the guest watchdog")
				return
			}
		case ReasonUser:
			if v.fail != nil && !v.fail.kind.guestLayer() {
				e.recovered(v)
			}
			if v.op == nil && v.desired == WantRunning && !v.ownPause {
				e.infer(v, OpSuspend, SrcLibvirt, WantPaused, "paused by a user")
			}
		}
		if v.fail != nil {
			e.recover(v) // a pause does not end the failure: its timers keep running
		}
		return
	}
	// Down: shut off, crashed or absent.
	if v.fail != nil {
		if crashReason(o) && o.at.After(v.fail.detectAt) && v.fail.actID == 0 && v.fail.attempts > 0 {
			// It came back and went down again before we saw it run: a new fault.
			v.fail.faultAt = o.at
		}
		e.recover(v)
		return
	}
	if o.reason == ReasonUndefined && (v.op == nil || v.op.Kind != OpDelete) && v.policy.Instance == "" {
		// (A Nova instance's domain is undefined and defined again by Nova's own hard
		// reboot, start, evacuation and migration: only Nova's delete forgets it.)
		e.infer(v, OpDelete, SrcLibvirt, WantAbsent, "undefined")
		e.forget(v, "deleted behind hass's back")
		return
	}
	if !v.wantsUp() {
		switch {
		case o.state == DomAbsent && o.reason == ReasonUnknown && v.op == nil:
			e.vanish(v)
		case v.op == nil && crashReason(o) && o.reason != ReasonFenced && !o.prevState.up() && o.seq > v.intentSeq &&
			o.prevState != DomUnknown && !crashReason(&hostObs{state: o.prevState, reason: o.prevReason}):
			// It was down, and now it crashed: it must have run in between. Somebody started
			// it and hass missed the news; it crashed since. Protect it as started.
			e.infer(v, OpStart, SrcLibvirt, WantRunning, "crashed, so it had been started")
			e.detect(v, failureKind(o), o.at, fmt.Sprintf("%s/%s", o.state, o.reason))
		}
		return
	}
	if o.reason == ReasonMigrated {
		if h := e.landed(v, true); h != "" {
			e.log(RecExpected, v.id, h, "migrated here from %s", v.home)
			v.home = h
			e.evaluate(v)
			return
		}
	}
	if op := v.op; op != nil {
		switch {
		case op.Kind == OpReboot && op.Source != SrcOpenStack && (o.reason == ReasonDestroyed || o.reason == ReasonShutdownHost):
			// hass's own reboot never stops the domain that way (its hard reboot reports
			// own-stop): somebody stopped it behind hass's back while it was rebooting.
			e.endOp(v, PhaseFailed, "the vm was stopped by somebody during the reboot")
		case crashReason(o):
			e.endOp(v, PhaseFailed, fmt.Sprintf("vm went down (%s/%s) during the operation", o.state, o.reason))
		case op.Kind == OpMigrate && o.reason != ReasonMigrated:
			e.endOp(v, PhaseFailed, fmt.Sprintf("vm went down (%s/%s) during the migration", o.state, o.reason))
		case op.Kind == OpMigrate && op.Target == "" && o.reason == ReasonMigrated && e.stoppedOnUnknownArrival(v, op) != "":
			// The source handed over, so a host resumed the guest; hass did not know which
			// (a user's virsh migrate unheard, during a loss of the control plane): the one
			// host where a copy appeared since and was stopped there (only a running guest
			// shuts down) is where it landed.
			e.landedThenDown(v, op, e.stoppedOnUnknownArrival(v, op), "stopped here")
			return
		case op.Kind == OpMigrate && op.Target != "" && op.Target != v.home && e.stoppedOnArrival(v, op):
			// The source handed over, so its one destination resumed the guest: the copy
			// stopped there since (a user's destroy or shutdown) was the VM.
			e.landedThenDown(v, op, op.Target, "stopped here")
			return
		case op.Kind == OpMigrate && o.reason == ReasonMigrated && e.crashedOnArrival(v, op) != "":
			// The source handed over, and the copy that had arrived at the destination went
			// down since by a failure: the VM landed there and failed there. Heard before the
			// source's handover, that crash had no known migration to belong to (observeVM).
			e.landedThenDown(v, op, e.crashedOnArrival(v, op), "went down")
			return
		case op.Kind == OpMigrate && e.nowhere(v, op, o):
			e.endOp(v, PhaseFailed, "every other host has reported since, and none runs it")
			e.detect(v, FailOperation, op.Started, "migrated away but runs nowhere")
			return
		default:
			return // the operation explains it; its deadline catches it if it never completes
		}
	}
	if crashReason(o) {
		e.detect(v, failureKind(o), o.at, fmt.Sprintf("%s/%s", o.state, o.reason))
		return
	}
	if h := e.homeHost(v); h != nil && h.lapsed && o.reason == ReasonDestroyed {
		// Its host, in maintenance, lost its lease: its agent fenced itself, and a new agent
		// process no longer knows that it was its own destroy. Not a user's stop.
		e.detect(v, FailHostDown, o.at, "destroyed while its host, in maintenance, had no lease: its agent fenced it")
		return
	}
	switch o.reason {
	case ReasonDestroyed:
		e.infer(v, OpStop, SrcLibvirt, WantStopped, "destroyed")
	case ReasonShutdownHost:
		e.infer(v, OpShutdown, SrcLibvirt, WantStopped, "shut down at the host's request")
	case ReasonShutdownGuest:
		if v.policy.OnGuestShutdown == GuestShutdownRestart {
			e.detect(v, FailGuestShutdown, o.at, "guest shut itself down and the policy says restart")
			return
		}
		e.infer(v, OpShutdown, SrcGuest, WantStopped, "guest shut itself down; policy honours it")
	case ReasonShutdown:
		if v.policy.OnGuestShutdown == GuestShutdownRestart {
			e.log(RecAlert, v.id, v.home, "shut down by an unknown initiator (events were lost): honouring it rather than risk restarting a VM a user stopped")
		}
		e.infer(v, OpShutdown, SrcLibvirt, WantStopped, "shut down, initiator unknown")
	case ReasonMigrated:
		if h := e.landed(v, true); h != "" {
			e.log(RecExpected, v.id, h, "migrated here from %s", v.home)
			v.home = h
			e.evaluate(v)
			return
		}
		// Migrated away behind hass's back: the destination reports it soon. Wait as for a
		// migration we asked for; its deadline catches one that landed nowhere.
		v.op = &Operation{ID: e.id(), Kind: OpMigrate, VM: v.id, Source: SrcLibvirt, Phase: PhaseRunning,
			Started: e.now, Deadline: e.now.Add(e.cfg.MigrateTimeout), prev: v.desired}
		e.log(RecOp, v.id, v.home, "migrate inferred source=libvirt: waiting for the destination to report it")
	default:
		if o.state == DomAbsent && o.reason == ReasonUnknown {
			e.vanish(v)
			return
		}
		e.detect(v, FailVMCrash, o.at, fmt.Sprintf("%s/%s with nobody asking", o.state, o.reason))
	}
}

// twoCopies handles a VM seen up on its home and on other, both live hosts: a split brain,
// two guests writing to one disk. hass keeps the copy that carries the guest's live state,
// which is the one that arrived by live migration when only one did (it holds the guest's
// memory; a copy booted from disk holds nothing that is not on the disk), and otherwise the
// one it knows as the VM's home; it pauses the other. A pause stops the other copy's writes
// at once and loses nothing, so even if hass kept the wrong one, no state is lost: the
// operator checks, then destroys or resumes the paused copy. hass alerts once, and leaves
// the paused copy alone from then on (it pauses it again only if the pause never took);
// when that copy goes down, the VM has one copy again.
func (e *Engine) twoCopies(v *vm, other HostID) {
	o, ho := v.obsOn(other), v.obsOn(v.home)
	if o == nil || ho == nil {
		return
	}
	if d := v.dupOn(other); d != nil {
		switch {
		case o.state == DomPaused:
			d.pauseAt = time.Time{} // the pause took
		case !d.pauseAt.IsZero() && o.state == DomRunning && !e.now.Before(d.pauseAt.Add(e.cfg.StartTimeout)):
			d.pauseAt = e.now // it did not: once more, without another alert
			e.act(v, ActSuspend, other, "", "split-brain")
		}
		return
	}
	keep, pause := v.home, other
	why := "its home: hass cannot tell which copy carries the guest's live state"
	if o.reason == ReasonMigrated && ho.reason != ReasonMigrated {
		keep, pause = other, v.home
		why = "it arrived by live migration and carries the guest's memory; the other was booted from disk"
	} else if ho.reason == ReasonMigrated && o.reason != ReasonMigrated {
		why = "it arrived by live migration and carries the guest's memory; the other was booted from disk"
	}
	if keep != v.home {
		v.home = keep
		v.gen++ // nothing hass ordered for the old home stands
		if f := v.fail; f != nil && f.actID != 0 {
			f.actID = 0
		}
	}
	v.dups = append(v.dups, dupCopy{host: pause})
	d := &v.dups[len(v.dups)-1]
	e.log(RecAlert, v.id, pause, "two copies run, on %s and %s: keeping the one on %s (%s); pausing the one on %s, which stops its disk writes and loses nothing: check, then destroy or resume it (hass leaves it paused)",
		keep, pause, keep, why, pause)
	if po := v.obsOn(pause); po.state == DomRunning {
		d.pauseAt = e.now
		e.act(v, ActSuspend, pause, "", "split-brain")
	}
}

// incoming returns a live host other than home whose newest report of the VM is a migration's
// incoming copy, taken before its home host was lost (plus a second for clock skew): that
// copy may have been resumed since. A list from that host taken after the loss settles it.
func (e *Engine) incoming(v *vm) HostID {
	home := e.homeHost(v)
	for _, o := range v.obs {
		h := e.hosts[o.host]
		if o.host == v.home || h == nil || h.state != hostUp || o.state != DomPaused || o.reason != ReasonMigrated {
			continue
		}
		if home != nil && home.state != hostUp && h.lastResync.After(home.lostAt.Add(time.Second)) {
			continue // listed since the loss, still paused: it cannot switch over any more
		}
		return o.host
	}
	return ""
}

// arrivedElsewhere says whether a live host other than h and the VM's home holds a copy
// that a migration brought: incoming (paused until its switch-over) or running since.
func (e *Engine) arrivedElsewhere(v *vm, h HostID) bool {
	for _, o := range v.obs {
		if o.host == h || o.host == v.home || !o.state.up() || o.reason != ReasonMigrated {
			continue
		}
		if hh := e.hosts[o.host]; hh != nil && hh.state == hostUp {
			return true
		}
	}
	return false
}

// stoppedOnArrival says whether the migration's target reports the VM shut off by a stop
// (a destroy or a shutdown, not a failure) since the migration began, on a live host.
func (e *Engine) stoppedOnArrival(v *vm, op *Operation) bool {
	t := v.obsOn(op.Target)
	if t == nil || t.state != DomShutoff || t.since.Before(op.Started) {
		return false
	}
	switch t.reason {
	case ReasonDestroyed, ReasonShutdown, ReasonShutdownHost, ReasonShutdownGuest:
	default:
		return false
	}
	h := e.hosts[op.Target]
	return h != nil && h.state == hostUp
}

// landedThenDown: the migration op of v landed on h, where the VM went down since (how).
func (e *Engine) landedThenDown(v *vm, op *Operation, h HostID, how string) {
	e.log(RecExpected, v.id, h, "migrated here from %s, then %s", v.home, how)
	op.Target = h
	v.home = h
	e.evaluate(v)
}

// crashedOnArrival returns the host, other than home, where a migration whose source has
// handed over landed and then went down, or "": a copy there that had arrived by migration
// (incoming, or running since its switch-over) and went down since the migration began, by a
// crash on a live host, or with its host's fence. The migration's destination when hass knows it; for one
// inferred from the source's stop (a user's, or one whose order was lost), the one host
// with such a copy that went down within MigrateTimeout before hass inferred it. A copy
// shown down in the first word from a host is not one (its arrival was not seen): it may be
// left over from a migration that failed long ago. Nor is a copy that went down while
// another live host holds one a migration brought (an aborted incoming copy, while the
// source handed over to the other).
func (e *Engine) crashedOnArrival(v *vm, op *Operation) HostID {
	since := op.Started
	if op.Target == "" {
		since = op.Started.Add(-e.cfg.MigrateTimeout)
	}
	found := HostID("")
	for i := range v.obs {
		t := &v.obs[i]
		if t.host == v.home || op.Target != "" && t.host != op.Target {
			continue
		}
		h := e.hosts[t.host]
		if h == nil || t.state.up() || !(t.arrived || fencedOnArrival(t)) || t.since.Before(since) {
			continue
		}
		switch {
		case fencedOnArrival(t):
			// It appeared there since the host's last list, and the host's own fence
			// destroyed it (a fence destroys only running copies): it had landed there.
		case h.state == hostFenced && t.state == DomUnknown && t.reason == ReasonFenced:
			// It had arrived there when that host was fenced: it went down with it, as the
			// VMs homed there did.
		case h.state != hostUp:
			continue
		case !(t.state == DomCrashed || t.reason == ReasonFailed || t.reason == ReasonCrashed || t.reason == ReasonPanicked):
			continue
		}
		if found != "" {
			return "" // two such copies: which one landed is not known
		}
		found = t.host
	}
	if found == "" || e.arrivedElsewhere(v, found) {
		return ""
	}
	return found
}

// fencedOnArrival: the copy t appeared on its host since that host's last complete list (so
// it was no copy left over there), and the host's agent destroyed it as it fenced itself: a
// fence destroys only running copies, so the VM ran there (a migration that landed on a
// host powered on again after its fence, before its agent started and found its lease
// gone).
func fencedOnArrival(t *hostObs) bool {
	return t.appeared && t.state == DomShutoff && t.reason == ReasonFenced
}

// stoppedOnUnknownArrival returns, for a migration inferred from its source's handover
// (hass knows no destination), the one live host other than home where a copy of the VM
// that arrived or appeared there (not the first word of it from that host: a copy left over
// long ago) was stopped (a destroy or a shutdown) within MigrateTimeout before hass inferred
// it, or "": none, or more than one.
func (e *Engine) stoppedOnUnknownArrival(v *vm, op *Operation) HostID {
	since := op.Started.Add(-e.cfg.MigrateTimeout)
	found := HostID("")
	for i := range v.obs {
		t := &v.obs[i]
		if t.host == v.home || t.state != DomShutoff || !(t.arrived || t.appeared) || t.since.Before(since) {
			continue
		}
		switch t.reason {
		case ReasonDestroyed, ReasonShutdown, ReasonShutdownHost, ReasonShutdownGuest:
		default:
			continue
		}
		if h := e.hosts[t.host]; h == nil || h.state != hostUp {
			continue
		}
		if found != "" {
			return ""
		}
		found = t.host
	}
	return found
}

// stayedHome says whether a migration's destination was fenced while the VM's home copy runs
// on: a fenced host's copies are dead, so the migration did not land there (or, if it did, the
// source's copy would be stopped by migration). The home copy must have been reported live
// since the fence (a second for clock skew): until then the destination may still have
// resumed the guest, and the source's stop may not be known yet.
func (e *Engine) stayedHome(v *vm, op *Operation, o *hostObs) bool {
	if op.Target == "" || op.Target == v.home || o == nil || !live(o.state, o.reason) {
		return false
	}
	t, h := e.hosts[op.Target], e.homeHost(v)
	if t == nil || t.state != hostFenced || h == nil || h.state != hostUp {
		return false
	}
	return o.at.After(t.fencedAt.Add(time.Second))
}

// landed returns the host other than home where the VM was last seen running (with paused,
// or paused by a user: the copy a migration that handed over left there), if any. A
// report from before a fenced home's copy last ran there after arriving by migration is not
// one (a second for clock skew): it is the migration's source, reported before its
// switch-over, whose stop was not heard (a later report of a copy there, running beside the
// home's, would have made it an extra copy). A recovery asks for a running copy only: one
// paused elsewhere is not the VM coming up (taking it for home there had a recovery and the
// evaluation it moved to call each other for ever, between two paused copies; FuzzEngine).
func (e *Engine) landed(v *vm, paused bool) HostID {
	var leftAt time.Time
	if ho := v.obsOn(v.home); ho != nil && ho.state == DomUnknown && ho.reason == ReasonFenced && ho.arrived {
		leftAt = ho.at.Add(time.Second)
	}
	for _, o := range v.obs {
		// With paused, a copy paused by a user is live too (the naive rule knows only
		// running).
		up := o.state == DomRunning || paused && !e.cfg.Naive && live(o.state, o.reason)
		if o.host != v.home && up && e.hosts[o.host] != nil && e.hosts[o.host].state == hostUp {
			if !leftAt.IsZero() && !o.at.After(leftAt) && v.dupOn(o.host) == nil {
				continue
			}
			return o.host
		}
	}
	return ""
}

// nowhere proves that a VM whose home copy left in a migration (o, its home observation,
// is down) runs on no other host: every other host is fenced, or has sent a complete domain
// list taken after the switch-over (the moment the source was first seen stopped) without it
// running there, else its home would have moved. A list taken earlier proves nothing, even
// one taken during the migration: the incoming copy is still paused until the switch-over,
// and runs right after it. A suspect host proves nothing either, unless its BMC reported it
// powered off since the migration began (and not on since).
func (e *Engine) nowhere(v *vm, op *Operation, o *hostObs) bool {
	switchAt := o.since
	if switchAt.IsZero() {
		switchAt = o.at
	}
	if switchAt.After(e.now) {
		switchAt = e.now // an agent clock ahead of ours must not postpone the proof for ever
	}
	if switchAt.Before(op.Started) {
		switchAt = op.Started
	}
	blocks := func(id HostID) bool {
		h := e.hosts[id]
		switch {
		case h == nil || id == v.home:
		case h.state == hostFenced && !h.onAt.IsZero():
			// Powered on again since its fence: a copy may have landed there (a user's virsh
			// migrate before its agent started). Its agent's list, taken after its fence,
			// says.
			return !h.lastResync.After(switchAt.Add(time.Second)) || !h.lastResync.After(h.onAt)
		case h.state == hostFenced:
		case h.powerOff && h.offAt.After(op.Started):
			// Its BMC reported it powered off since the migration began, and not on since (a
			// host in maintenance its admin shut down, never fenced): whatever landed there
			// runs no more. Without this, the proof waited for it to power on again and list
			// (3-6 minutes).
		case h.state == hostSuspect || !h.lastResync.After(switchAt.Add(time.Second)): // a second for clock skew
			return true
		}
		return false
	}
	if v.nowhereWait != "" && blocks(v.nowhereWait) {
		return false
	}
	for _, id := range e.hostIx {
		if blocks(id) {
			v.nowhereWait = id
			return false
		}
	}
	v.nowhereWait = ""
	return true
}

// vanish handles a VM missing from its home host's domain list with no undefine event seen:
// it may have been migrated or undefined while hass was not listening. Wait VanishGrace for
// it to show up elsewhere, then accept that it is gone.
func (e *Engine) vanish(v *vm) {
	if v.vanishedAt.IsZero() {
		v.vanishedAt = e.now
		e.log(RecExpected, v.id, v.home, "missing from the host's domain list: waiting %s for it to show up elsewhere", e.cfg.VanishGrace)
		return
	}
	if e.now.Before(v.vanishedAt.Add(e.cfg.VanishGrace)) {
		return
	}
	e.log(RecAlert, v.id, v.home, "vanished without an undefine event and ran nowhere for %s", e.cfg.VanishGrace)
	e.forget(v, "vanished")
}

// naive is the pre-operation-awareness rule: a protected VM that is not running has failed.
func (e *Engine) naive(v *vm, o *hostObs) {
	if o.state == DomRunning {
		if v.fail != nil {
			e.recovered(v)
		}
		return
	}
	if v.fail != nil {
		e.recover(v)
		return
	}
	e.detect(v, FailVMDown, o.at, fmt.Sprintf("%s/%s", o.state, o.reason))
}

// ---- recovery --------------------------------------------------------------------------

func (e *Engine) backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := e.cfg.BackoffBase << (n - 1)
	if d > e.cfg.BackoffMax || d <= 0 {
		d = e.cfg.BackoffMax
	}
	return d
}

func (e *Engine) detect(v *vm, k FailureKind, faultAt time.Time, why string) {
	if v.errored {
		return // in error until a user acts
	}
	v.vanishedAt = time.Time{}
	if v.op != nil && (v.op.Kind == OpReboot || v.op.Kind == OpMigrate || v.op.Kind == OpSuspend || v.op.Kind == OpResume) {
		e.endOp(v, PhaseFailed, string(k)+" during the operation")
	}
	f := &failure{kind: k, faultAt: faultAt, detectAt: e.now}
	if faultAt.IsZero() || faultAt.After(e.now) {
		f.faultAt = e.now
	}
	f.next = e.now.Add(e.backoff(v.restartsInWindow(e.now)))
	if h := e.homeHost(v); k == FailHostDown || h == nil || h.state != hostUp {
		// Host loss is not the VM's fault: its in-place restart backoff does not delay the
		// evacuation.
		f.next = e.now
	}
	v.fail = f
	v.failedOnHost(v.home, e.now)
	e.log(RecDetect, v.id, v.home, "%s: %s", k, why)
	e.recover(v)
}

func (e *Engine) recover(v *vm) {
	f := v.fail
	if !v.wantsUp() && !e.cfg.Naive {
		e.log(RecOp, v.id, v.home, "recovery from %s dropped: the user wants it %s", f.kind, v.desired)
		v.fail = nil
		return
	}
	if f.kind == FailIOError {
		return
	}
	if f.actID != 0 {
		if e.now.Before(f.actDeadline) {
			return
		}
		if f.kind.guestLayer() {
			// A reset or reboot whose answer (and whose reboot event) never came may well
			// have been done: another one would take a guest that runs fine down again. It is
			// taken as done; a guest that still hangs or has no network is found again (its
			// guest monitor reports it again, the agent's next list still shows the watchdog).
			e.log(RecAlert, v.id, f.actHost, "recovery attempt %d (%s) had no answer in %s: taken as done, not repeated",
				f.attempts, f.kind, e.cfg.StartTimeout)
			f.actID = 0
			e.recovered(v)
			return
		}
		e.log(RecAlert, v.id, f.actHost, "recovery attempt %d had no answer in %s", f.attempts, e.cfg.StartTimeout)
		f.actID = 0
		f.next = e.now.Add(e.backoff(f.attempts))
	}
	if e.held(v) {
		if why := fmt.Sprintf("its host %s is in maintenance: recovery waits for maintenance to end", v.home); v.waitWhy != why {
			v.waitWhy = why
			e.log(RecExpected, v.id, v.home, "recovery from %s held: the host is in maintenance", f.kind)
		}
		return
	}
	if e.now.Before(f.next) {
		return
	}
	h := e.homeHost(v)
	why := "recovery:" + string(f.kind)
	if (f.kind == FailGuestHang || f.kind == FailGuestNetwork) && h.state == hostUp {
		// The guest OS hung (reset it) or its network died (reboot it), its emulator still
		// running. Each counts as a restart in place: a guest that fails again and again
		// within the window is given up on, not reset for ever.
		if o := v.obsOn(v.home); o != nil && o.state.up() {
			act, what := ActReset, "reset"
			if f.kind == FailGuestNetwork {
				act, what = ActReboot, "reboot"
			}
			if n := v.restartsInWindow(e.now); n >= v.policy.MaxRestarts {
				e.giveUp(v, fmt.Sprintf("%s again after %d restart(s) or %s(s) within %s", f.kind, n, what, v.policy.Window))
				return
			}
			v.restarts = append(pruneBefore(v.restarts, e.now.Add(-v.policy.Window)), e.now)
			e.startAttempt(v, e.act(v, act, v.home, "", why), v.home)
			return
		}
	}
	if !f.evacuate && h.state == hostUp && v.restartsInWindow(e.now) < v.policy.MaxRestarts {
		if o := v.obsOn(v.home); o == nil || o.state == DomUnknown {
			return // back from a fence: wait for the host's first resync
		}
		v.restarts = append(pruneBefore(v.restarts, e.now.Add(-v.policy.Window)), e.now)
		e.startAttempt(v, e.act(v, ActStart, v.home, "", why), v.home)
		f.actRestart = true
		return
	}
	evacuate := f.evacuate || h.state != hostUp
	if l := e.landed(v, false); l != "" {
		// Before starting it anywhere: a live host already reports it running (a migration
		// that landed while its source died). That copy is the VM; never start a second.
		e.log(RecExpected, v.id, l, "runs here already (its home %s is %s): this is its home now", v.home, h.state)
		v.home = l
		e.evaluate(v)
		return
	}
	if l := e.incoming(v); l != "" && h.state != hostUp {
		// A live host last showed an incoming migration copy of it: the migration may have
		// switched over before the home host was lost, and the VM may run there now. Only
		// that host's list taken after the loss tells; until then no copy is started.
		if !f.incomingLogged {
			f.incomingLogged = true
			e.log(RecExpected, v.id, l, "an incoming migration copy was seen here before %s was lost: waiting for this host's next domain list before starting it anywhere", v.home)
		}
		f.next = e.now.Add(e.cfg.RetryPlacement)
		return
	}
	if !evacuate && v.relocations >= v.policy.MaxRelocations {
		e.giveUp(v, fmt.Sprintf("%d restarts in %s and %d relocations spent", v.restartsInWindow(e.now), v.policy.Window, v.relocations))
		return
	}
	target, whyNot := e.place(v, v.home, placement.Recovery)
	if target == "" {
		if !evacuate {
			e.giveUp(v, fmt.Sprintf("%d restarts in %s spent and no other host fits (%s)", v.restartsInWindow(e.now), v.policy.Window, whyNot))
			return
		}
		v.waitWhy = whyNot
		if !f.noCapacityAlerted {
			f.noCapacityAlerted = true
			e.log(RecAlert, v.id, v.home, "no host fits to restart it (%s): retrying every %s", whyNot, e.cfg.RetryPlacement)
		}
		f.next = e.now.Add(e.cfg.RetryPlacement)
		return
	}
	v.waitWhy = ""
	if !evacuate {
		v.relocations++
	}
	e.log(RecOp, v.id, v.home, "relocating to %s", target)
	from := v.home
	v.home = target // recorded before it is carried out
	e.startAttempt(v, e.act(v, ActStart, target, "", why), target)
	f.actReloc, f.actFrom = !evacuate, from
}

func (e *Engine) startAttempt(v *vm, a Action, h HostID) {
	f := v.fail
	f.attempts++
	f.actID, f.actHost, f.actDeadline = a.ID, h, e.now.Add(e.cfg.StartTimeout)
	f.actAt, f.actRestart, f.actReloc, f.actFrom = e.now, false, false, ""
	if f.actionAt.IsZero() {
		f.actionAt = e.now
	}
}

// unreachedAttempt handles a recovery attempt whose executor could not reach the hypervisor:
// it was never carried out, so it is not the VM's failure. What it cost is given back (the
// attempt, its restart stamp, its relocation, the move of the VM's home), and it is tried
// again when the host reports again, or after UnreachedRetry.
func (e *Engine) unreachedAttempt(v *vm, f *failure, in ActionResult) {
	host := f.actHost
	if f.attempts > 0 {
		f.attempts--
	}
	if f.actRestart {
		for i := len(v.restarts) - 1; i >= 0; i-- {
			if v.restarts[i].Equal(f.actAt) {
				v.restarts = append(v.restarts[:i], v.restarts[i+1:]...)
				break
			}
		}
	}
	if f.actReloc && v.relocations > 0 {
		v.relocations--
	}
	if f.actFrom != "" {
		v.home = f.actFrom
	}
	f.actRestart, f.actReloc, f.actFrom = false, false, ""
	if h := e.hosts[host]; h != nil {
		h.unreached = true
	}
	f.next = e.now.Add(e.unreachedRetry())
	if f.unreached != host { // once per outage: each retry is in the log as an action
		e.log(RecAlert, v.id, host, "recovery attempt could not reach the hypervisor on %s (%s): not counted against the vm; trying again when %s reports, or every %s",
			host, in.Err, host, e.unreachedRetry())
	}
	f.unreached = host
}

// reachable: host id reported, so its hypervisor can be reached again. What waits for it
// (a recovery attempt or an operation's action that came back unreached) goes now.
func (e *Engine) reachable(id HostID) {
	h := e.hosts[id]
	if h == nil || !h.unreached {
		return
	}
	h.unreached = false
	c := e.candidates()
	defer c.done()
	for v := range e.waiting {
		c.add(v)
	}
	c.addDirty()
	if checkIndexes {
		e.checkCands(c, func(v *vm) bool {
			return (v.fail != nil && v.fail.unreached == id) || (v.op != nil && !v.op.retryAt.IsZero() && v.home == id)
		})
	}
	for _, v := range c.sorted() {
		if v.dead {
			continue
		}
		e.touch(v)
		wake := false
		if f := v.fail; f != nil && f.unreached == id && f.actID == 0 && f.next.After(e.now) {
			f.next, wake = e.now, true
		}
		if op := v.op; op != nil && !op.retryAt.IsZero() && v.opActID == 0 && v.home == id && op.retryAt.After(e.now) {
			op.retryAt, wake = e.now, true
		}
		if wake {
			e.evaluate(v)
		}
	}
}

func (e *Engine) unreachedRetry() time.Duration {
	switch {
	case e.cfg.UnreachedRetry > 0:
		return e.cfg.UnreachedRetry
	case e.cfg.BackoffBase > 0:
		return e.cfg.BackoffBase
	}
	return 10 * time.Second
}

func (e *Engine) recovered(v *vm) {
	f := v.fail
	v.fail = nil
	if v.desired == WantPaused {
		// A suspended guest's memory died with it: the restarted VM runs.
		v.desired = WantRunning
		e.log(RecOp, v.id, v.home, "was suspended; its memory is lost, so it runs now: desired=running")
	}
	r := Record{At: e.now, Type: RecRecovered, VM: v.id, Host: v.home, Kind: f.kind,
		FaultAt: f.faultAt, DetectAt: f.detectAt, ActionAt: f.actionAt, RecoveredAt: e.now,
		Msg: fmt.Sprintf("%s after %d attempt(s): detected +%s, acted +%s, running +%s after the fault",
			f.kind, f.attempts, ms(f.detectAt.Sub(f.faultAt)), ms(f.actionAt.Sub(f.faultAt)), ms(e.now.Sub(f.faultAt)))}
	if f.actionAt.IsZero() {
		r.Msg = fmt.Sprintf("%s: running again without an action (+%s after the fault)", f.kind, ms(e.now.Sub(f.faultAt)))
	}
	e.out.Log = append(e.out.Log, r)
}

func ms(d time.Duration) string {
	if d < time.Millisecond && d > -time.Millisecond {
		return d.Round(time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func (e *Engine) giveUp(v *vm, why string) {
	k := v.fail.kind
	v.fail = nil
	v.errored = true
	if v.desired == WantPaused {
		// Its memory is lost: a user's start revives it (and a later sight of it down is no
		// cure of a failed suspend, see opErrorCured).
		v.desired = WantRunning
	}
	v.vanishedAt = time.Time{}
	if v.op != nil {
		e.endOp(v, PhaseFailed, "hass gave up on the vm")
	}
	e.log(RecGaveUp, v.id, v.home, "%s: %s; the vm is in error until a user starts it", k, why)
	e.log(RecAlert, v.id, v.home, "hass gave up on it: an operator should look")
}

func pruneBefore(ts []time.Time, cut time.Time) []time.Time {
	out := ts[:0]
	for _, t := range ts {
		if t.After(cut) {
			out = append(out, t)
		}
	}
	return out
}
