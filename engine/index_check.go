package engine

import (
	"fmt"
	"slices"
	"time"

	"github.com/hassproject/hass/placement"
)

// The checks checkIndexes turns on: the indexes against a walk of every VM, and every
// indexed lookup against the full walk the engine used to make. They panic on a mismatch.

func (e *Engine) checkFail(format string, args ...any) {
	panic(fmt.Sprintf("engine: index check: "+format, args...))
}

// checkCands: every protected VM for which want holds is among the candidates.
func (e *Engine) checkCands(c *cands, want func(v *vm) bool) {
	for _, v := range e.vms {
		if want(v) && v.mark != c.mark {
			e.checkFail("vm %s is not among the candidates", v.id)
		}
	}
}

// checkIndexes checks every index against a walk of every VM and host.
func (e *Engine) checkIndexes() {
	if len(e.dirty) != 0 {
		e.checkFail("%d dirty VMs after a step", len(e.dirty))
	}
	if !e.vmIxStale {
		ids := make([]VMID, 0, len(e.vms))
		for id := range e.vms {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, e.vmIx) {
			e.checkFail("vmIx %v, want %v", e.vmIx, ids)
		}
	}
	if len(e.hostList) != len(e.hostIx) {
		e.checkFail("hostList has %d hosts, hostIx %d", len(e.hostList), len(e.hostIx))
	}
	var suspects []*host
	used, usedCPU := map[*host]int{}, map[*host]int{}
	groups := map[*host]map[string]int{}
	for i, id := range e.hostIx {
		h := e.hosts[id]
		if e.hostList[i] != h {
			e.checkFail("hostList[%d] is not %s", i, id)
		}
		if h.state == hostSuspect {
			suspects = append(suspects, h)
		}
		for p, v := range h.related {
			if v.dead || e.vms[v.id] != v {
				e.checkFail("host %s: related vm %s is not protected", id, v.id)
			}
			found := false
			for _, r := range v.rel {
				if r.h == h {
					found = r.pos == p
				}
			}
			if !found {
				e.checkFail("host %s: related vm %s does not know its place %d", id, v.id, p)
			}
		}
	}
	if !slices.Equal(suspects, e.suspects) {
		e.checkFail("%d suspects indexed, %d suspect hosts", len(e.suspects), len(suspects))
	}
	for id, v := range e.vms {
		if v.id != id || v.dead || v.dirty {
			e.checkFail("vm %s: id %s dead %t dirty %t", id, v.id, v.dead, v.dirty)
		}
		want := e.relatedHosts(v, nil)
		if len(want) != len(v.rel) {
			e.checkFail("vm %s: related to %d hosts, indexed on %d", id, len(want), len(v.rel))
		}
		for i, r := range v.rel {
			if r.h != want[i] || r.h.related[r.pos] != v {
				e.checkFail("vm %s: related host %d (%s) is wrong", id, i, r.h.id)
			}
		}
		if v.wantsUp() {
			for _, h := range e.useHostsWalk(v) {
				used[h] += v.mem
				usedCPU[h] += v.vcpus
				if g := v.policy.AntiAffinity; g != "" {
					if groups[h] == nil {
						groups[h] = map[string]int{}
					}
					groups[h][g]++
				}
			}
		}
		waiting := (v.fail != nil && v.fail.unreached != "") || (v.op != nil && !v.op.retryAt.IsZero())
		if _, ok := e.waiting[v]; ok != waiting || v.waiting != waiting {
			e.checkFail("vm %s: waiting %t, indexed %t", id, waiting, ok)
		}
		migrating := v.op != nil && v.op.Kind == OpMigrate
		if _, ok := e.migrating[v]; ok != migrating || v.migrating != migrating {
			e.checkFail("vm %s: migrating %t, indexed %t", id, migrating, ok)
		}
		d, on := e.dueAt(v)
		if t := v.timers[timerDue]; (t.pos != 0) != on || (on && (t.at != d || e.due.vs[t.pos-1] != v)) {
			e.checkFail("vm %s: due timer %v (in heap %t), want %v (%t)", id, t.at, t.pos != 0, d, on)
		}
		w := e.wakeAt(v)
		t := v.timers[timerWake]
		switch {
		case t.pos == 0:
			if !w.IsZero() {
				e.checkFail("vm %s: no wake timer, want %v", id, w)
			}
		case e.wake.vs[t.pos-1] != v:
			e.checkFail("vm %s: wake timer misplaced", id)
		case t.at == w:
		case !t.at.After(e.now) && (w.IsZero() || w.After(t.at)):
			// stale: a failure's next attempt fell due since; NextWake looks again
		default:
			e.checkFail("vm %s: wake timer %v, want %v", id, t.at, w)
		}
		if f := v.fail; f != nil && f.actID != 0 && e.actVM[f.actID] != v {
			e.checkFail("vm %s: recovery action %d not indexed", id, f.actID)
		}
		if v.op != nil && v.opActID != 0 && e.actVM[v.opActID] != v {
			e.checkFail("vm %s: operation action %d not indexed", id, v.opActID)
		}
	}
	for _, h := range e.hostList {
		if h.used != used[h] || h.usedCPU != usedCPU[h] {
			e.checkFail("host %s: %d MiB and %d vCPUs used, want %d and %d", h.id, h.used, h.usedCPU, used[h], usedCPU[h])
		}
		if len(h.groups) != len(groups[h]) {
			e.checkFail("host %s: groups %v, want %v", h.id, h.groups, groups[h])
		}
		for g, n := range groups[h] {
			if h.groups[g] != n {
				e.checkFail("host %s: groups %v, want %v", h.id, h.groups, groups[h])
			}
		}
	}
	for _, q := range []*timerHeap{&e.wake, &e.due} {
		for i, v := range q.vs {
			if v.timers[q.k].pos != i+1 || v.dead {
				e.checkFail("heap %d: vm %s at %d says %d", q.k, v.id, i, v.timers[q.k].pos-1)
			}
			if i > 0 && q.less(i, (i-1)/2) {
				e.checkFail("heap %d: not a heap at %d", q.k, i)
			}
		}
	}
}

// nextWakeWalk is NextWake as a walk of every host and VM.
func (e *Engine) nextWakeWalk() time.Time {
	var w time.Time
	min := func(t time.Time) {
		if !t.IsZero() && (w.IsZero() || t.Before(w)) {
			w = t
		}
	}
	for _, id := range e.hostIx {
		if h := e.hosts[id]; h.maint && h.maintMigrate {
			min(h.maintNext)
		}
		if h := e.hosts[id]; h.state == hostSuspect {
			if t, ok := e.fenceDue(h); ok {
				min(t)
			}
			if t, ok := e.powerFenceDue(h); ok {
				min(t)
			}
		}
	}
	for _, id := range e.sortedVMs() {
		v := e.vms[id]
		if v.op != nil {
			min(v.op.Deadline)
			if !v.op.retryAt.IsZero() && v.opActID == 0 {
				min(v.op.retryAt)
			}
		}
		if h := e.hosts[v.home]; h == nil || h.state == hostSuspect {
			continue
		}
		if f := v.fail; f != nil && !v.errored {
			if f.actID != 0 {
				min(f.actDeadline)
			} else if f.next.After(e.now) {
				min(f.next)
			}
		}
		if !v.vanishedAt.IsZero() && v.op == nil && v.fail == nil && !v.errored && e.hosts[v.home].state == hostUp {
			min(v.vanishedAt.Add(e.cfg.VanishGrace))
		}
	}
	return w
}

// actionVMWalk finds the VM an action result is for by a walk of every VM in name order.
func (e *Engine) actionVMWalk(id uint64) *vm {
	for _, vid := range e.sortedVMs() {
		v := e.vms[vid]
		if f := v.fail; f != nil && f.actID == id {
			return v
		}
		if v.opActID == id && v.op != nil {
			return v
		}
	}
	return nil
}

// useHostsWalk is the hosts a VM wanted up counts against: its home, and its migration's
// target.
func (e *Engine) useHostsWalk(v *vm) []*host {
	var out []*host
	if h := e.hosts[v.home]; h != nil {
		out = append(out, h)
		if op := v.op; op != nil && op.Kind == OpMigrate && op.Target != "" && op.Target != v.home && e.hosts[op.Target] != nil {
			out = append(out, e.hosts[op.Target])
		}
	}
	return out
}

// placeWalk is place adding up each host's usage by a walk of every VM.
func (e *Engine) placeWalk(v *vm, exclude HostID, purpose placement.Purpose) HostID {
	used, usedCPU := map[*host]int{}, map[*host]int{}
	groups := map[*host]int{}
	for _, id := range e.sortedVMs() {
		o := e.vms[id]
		if o == v || !o.wantsUp() {
			continue
		}
		for _, h := range e.useHostsWalk(o) {
			used[h] += o.mem
			usedCPU[h] += o.vcpus
			if g := o.policy.AntiAffinity; g != "" && g == v.policy.AntiAffinity {
				groups[h]++
			}
		}
	}
	var p placement.Planner
	i, ok := p.Place(e.placementVM(v, purpose), walkHosts{e: e, v: v, exclude: exclude, used: used, usedCPU: usedCPU, groups: groups})
	if !ok {
		return ""
	}
	return e.hostList[i].id
}

type walkHosts struct {
	e                     *Engine
	v                     *vm
	exclude               HostID
	used, usedCPU, groups map[*host]int
}

func (w walkHosts) Len() int { return len(w.e.hostList) }

func (w walkHosts) Detail(i int, p *placement.Host) { w.e.detailHost(p, w.e.hostList[i], w.v) }

func (w walkHosts) Fill(i int, p *placement.Host) {
	h := w.e.hostList[i]
	w.e.fillHost(p, h, w.v, w.e.hosts[w.exclude])
	p.UsedMemMiB, p.UsedVCPUs, p.GroupVMs = w.used[h], w.usedCPU[h], w.groups[h]
}
