package engine

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/hassproject/hass/placement"
)

// Maintenance mode (see the Maintenance input). A host in maintenance:
//
//   - takes no new placements (placement's checkers say no);
//   - is never fenced: its lease may lapse (the admin shuts it down) and it is then suspect,
//     which counts for the majority rule as any host without a lease does, but no fence is
//     ordered and it is never declared fenced by expiry; the BMC reporting it powered off is
//     noted, not acted on;
//   - holds every recovery of the VMs homed there: a failure is detected and logged, and
//     waits for maintenance to end (a VM the admin's shutdown took down is not restarted
//     elsewhere: it is restarted there, when the host is back and out of maintenance);
//   - with Migrate, has its running protected VMs live-migrated away by a drain pass, highest
//     priority first (then by name), each placed like an evacuation but never on a spare,
//     through the normal migrate operation (source "maintenance"); a VM that cannot be
//     placed stays, its Waiting says why (and an alert), and the pass runs again every
//     RetryPlacement until every such VM has left. A paused VM is not moved.
//
// A host that was fenced before it was put in maintenance has its VMs evacuated as any
// fenced host: they are down already, and holding them would only make the outage longer.

func (e *Engine) maintenance(in Maintenance) {
	h := e.hosts[in.Host]
	if h == nil {
		e.out.Err = fmt.Errorf("maintenance: unknown host %q", in.Host)
		return
	}
	if in.On {
		if !h.maint || h.maintMigrate != in.Migrate {
			h.maint, h.maintMigrate = true, in.Migrate
			how := "its VMs stay and may stop (no migration)"
			if in.Migrate {
				how = "its running protected VMs are live-migrated away"
			}
			e.log(RecHost, "", h.id, "maintenance on: no placements, no fencing, no recovery here; %s", how)
			for _, v := range h.related {
				e.touch(v)
			}
		}
		if !in.Migrate {
			e.stopDraining(h)
			return
		}
		e.startDraining(h)
		e.drain(h)
		return
	}
	if !h.maint {
		return
	}
	h.maint, h.maintMigrate = false, false
	e.stopDraining(h)
	e.log(RecHost, "", h.id, "maintenance off: placements, fencing and recovery as for any host")
	if h.powerOff && h.state != hostFenced {
		h.powerOff = false
		if h.state == hostUp {
			h.lostAt, h.lastSeen = e.now, e.now
		}
		e.fenced(h, "power off (BMC), reported during maintenance")
		return
	}
	c := e.candidates()
	c.addRelated(h, false)
	vs := slices.Clone(c.sorted())
	c.done()
	for _, v := range vs {
		if !v.dead && v.home == h.id {
			e.evaluate(v) // a held recovery goes on
		}
	}
	if h.state == hostSuspect {
		e.issueDueFences()
	}
}

// startDraining adds h to the hosts whose VMs are moved away, due now.
func (e *Engine) startDraining(h *host) {
	h.maintNext = e.now
	i, found := slices.BinarySearchFunc(e.draining, h.id, func(x *host, id HostID) int { return cmp.Compare(x.id, id) })
	if !found {
		e.draining = slices.Insert(e.draining, i, h)
	}
}

func (e *Engine) stopDraining(h *host) {
	h.maintNext = time.Time{}
	if i := slices.Index(e.draining, h); i >= 0 {
		e.draining = slices.Delete(e.draining, i, i+1)
	}
}

// drainDue runs the drain passes that are due (on a tick).
func (e *Engine) drainDue() {
	for _, h := range slices.Clone(e.draining) {
		if !h.maintNext.IsZero() && !e.now.Before(h.maintNext) {
			e.drain(h)
		}
	}
}

// drain moves the running protected VMs of h, in maintenance, away: one pass.
func (e *Engine) drain(h *host) {
	h.maintNext = time.Time{}
	c := e.candidates()
	c.addRelated(h, false)
	var vs []*vm
	for _, v := range c.sorted() {
		if !v.dead && v.home == h.id && v.wantsUp() && !v.errored {
			vs = append(vs, v)
		}
	}
	c.done()
	slices.SortStableFunc(vs, func(a, b *vm) int { return b.policy.Priority - a.policy.Priority })
	left := 0
	for _, v := range vs {
		o := v.obsOn(h.id)
		switch {
		case v.fail != nil:
			continue // down, its recovery held: nothing runs here to move
		case v.op != nil || o == nil || o.state == DomUnknown:
			left++ // an operation (our move, perhaps) or a report to wait for
			continue
		case o.state == DomPaused:
			e.maintWait(v, fmt.Sprintf("maintenance of %s: paused here, and a paused vm is not moved (resume it, or stop it)", h.id))
			continue
		case o.state != DomRunning:
			continue // down: nothing to move
		}
		target, why := e.place(v, h.id, placement.Maintenance)
		if target == "" {
			e.maintWait(v, fmt.Sprintf("maintenance of %s: cannot move it: %s", h.id, why))
			left++
			continue
		}
		err := e.out.Err
		e.request(Request{Op: OpMigrate, VM: v.id, Target: target, Source: SrcMaintenance})
		if e.out.Err != nil {
			e.maintWait(v, fmt.Sprintf("maintenance of %s: cannot move it: %s", h.id, e.out.Err))
		} else {
			v.waitWhy = ""
		}
		left++ // the next pass sees whether it left
		e.out.Err = err
	}
	if left > 0 {
		h.maintNext = e.now.Add(e.cfg.RetryPlacement)
		return
	}
	e.stopDraining(h)
	e.log(RecExpected, "", h.id, "maintenance: no running protected vm is left here to move")
}

// maintWait notes why a VM stays on a host in maintenance; a new reason is alerted once.
func (e *Engine) maintWait(v *vm, why string) {
	e.touch(v)
	if v.waitWhy != why {
		v.waitWhy = why
		e.log(RecAlert, v.id, v.home, "%s", why)
	}
}

// held: v's recovery waits because its home is in maintenance (and not fenced).
func (e *Engine) held(v *vm) bool {
	h := e.homeHost(v)
	return h != nil && h.maint && h.state != hostFenced
}
