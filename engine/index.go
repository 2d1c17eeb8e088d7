package engine

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// The engine's indexes, so that an input costs what it touches rather than the size of the
// cluster. None of them decides anything: each one only narrows down which VMs a loop that
// used to walk every VM (in name order) has to look at, and the loop still checks, VM by
// VM and in name order, the very conditions it always did. They are:
//
//   - for each host, the VMs related to it: homed there, observed there, with a recovery
//     attempt sent there, or with an extra copy there (resyncs, fences, a host back up);
//   - the VMs with a migration in flight, and those waiting for an unreached hypervisor;
//   - two min-heaps of per-VM timers: when NextWake could fire for the VM, and when a Tick
//     must evaluate it;
//   - each host's memory in use and anti-affinity groups, for placement;
//   - the VM each action ID was issued for (action results).
//
// Every VM a step touches (observes, evaluates, signals, requests for, fences, ...) is
// marked dirty before it changes; at the end of the step the dirty VMs are indexed again.
// Within a step, a loop looks at the indexed VMs and the dirty ones: a superset of the VMs
// its conditions can hold for. Processing one VM changes only that VM (and host flags), so
// taking the candidates before the loop is the same as the old walk.

// checkIndexes makes every Step check the indexes against a walk of every VM, and every
// indexed lookup against the old full walk. The engine's tests turn it on.
var checkIndexes = false

// relRef is a VM's place in one host's related list.
type relRef struct {
	h   *host
	pos int
}

// relKey is what a VM's related hosts follow from, as far as it changes: its home host,
// how many hosts it was observed on (observations are only added, except with a host
// removed, which changes hostGen), its recovery attempt's host, and the hosts known. A VM
// with extra copies has no key: its related hosts are worked out every time.
type relKey struct {
	home    *host
	nobs    int
	act     HostID
	hostGen uint64
	ok      bool
}

// usage is what a VM counts against a host's memory, vCPUs and anti-affinity groups:
// placement counts every VM that is wanted up against its home, and a VM with a migration in
// flight against its target as well (t), so that moves placed one after another (a host
// drained for maintenance) do not all take the same room.
type usage struct {
	h, t  *host
	mem   int
	cpu   int
	group string
}

// timer is a VM's key in one of the engine's timer heaps; pos is 1 + its index there, 0
// when it is not in the heap.
type timer struct {
	at  time.Time
	pos int
}

const (
	timerWake = iota // NextWake: the earliest moment a Tick could change anything for the VM
	timerDue         // tick: the VM is evaluated by a Tick at or after this moment
)

// vmIndex is a VM's part of the indexes.
type vmIndex struct {
	homeH     *host // e.hosts[v.home], when its name is still v.home (see homeHost)
	dirty     bool  // marked in this step; indexed again at its end
	dead      bool  // forgotten
	mark      uint64
	row       int // its row in the Snapshot being applied, if rowMark is that snapshot's mark
	rowMark   uint64
	rel       []relRef
	relKey    relKey // what rel was computed from (see syncRelated)
	use       usage
	timers    [2]timer
	waiting   bool
	migrating bool
}

// touch marks v dirty: it may change in this step.
func (e *Engine) touch(v *vm) {
	if !v.dirty {
		v.dirty = true
		e.dirty = append(e.dirty, v)
	}
}

// homeHost returns v's home host (nil if unknown).
func (e *Engine) homeHost(v *vm) *host {
	if h := v.homeH; h != nil && h.id == v.home {
		return h
	}
	h := e.hosts[v.home]
	v.homeH = h
	return h
}

// flush indexes the VMs the step touched.
func (e *Engine) flush() {
	for i, v := range e.dirty {
		e.out.Touched = append(e.out.Touched, v.id)
		v.dirty = false
		e.reindex(v)
		e.dirty[i] = nil
	}
	e.dirty = e.dirty[:0]
}

func (e *Engine) reindex(v *vm) {
	e.syncUse(v)
	e.syncRelated(v)
	waiting := !v.dead && ((v.fail != nil && v.fail.unreached != "") || (v.op != nil && !v.op.retryAt.IsZero()))
	if waiting != v.waiting {
		v.waiting = waiting
		if waiting {
			e.waiting[v] = struct{}{}
		} else {
			delete(e.waiting, v)
		}
	}
	migrating := !v.dead && v.op != nil && v.op.Kind == OpMigrate
	if migrating != v.migrating {
		v.migrating = migrating
		if migrating {
			e.migrating[v] = struct{}{}
		} else {
			delete(e.migrating, v)
		}
	}
	if v.dead {
		e.wake.set(v, time.Time{}, false)
		e.due.set(v, time.Time{}, false)
		return
	}
	w := e.wakeAt(v)
	e.wake.set(v, w, !w.IsZero())
	d, ok := e.dueAt(v)
	e.due.set(v, d, ok)
}

// setHostState changes a host's state. The VMs related to it are touched: whether their
// timers count depends on their home's state.
func (e *Engine) setHostState(h *host, s hostState) {
	if h.state == s {
		return
	}
	if h.state == hostSuspect {
		if i := slices.Index(e.suspects, h); i >= 0 {
			e.suspects = slices.Delete(e.suspects, i, i+1)
		}
		e.suspectsFell, h.heldBack = e.now, false
	}
	if h.state == hostFenced {
		e.nFenced--
	}
	h.state = s
	if s == hostSuspect {
		i, _ := slices.BinarySearchFunc(e.suspects, h.id, func(x *host, id HostID) int { return cmp.Compare(x.id, id) })
		e.suspects = slices.Insert(e.suspects, i, h)
	}
	if s == hostFenced {
		e.nFenced++
		h.fencedAt = e.now
	}
	for _, v := range h.related {
		e.touch(v)
	}
	e.checkMajority()
}

// ---- candidates ------------------------------------------------------------------------

// cands gathers the VMs a loop looks at, each once, and sorts them by name. Not reentrant:
// the loops that use it never nest.
type cands struct {
	e    *Engine
	list []*vm
	mark uint64 // stamped on the VMs added
	busy bool
}

// candidates starts a new list of candidates; the caller calls done when its loop is over.
// The loops never nest (the engine's tests would panic); were they to, the inner one gets
// a list of its own.
func (e *Engine) candidates() *cands {
	e.candMark++
	c := &e.cand
	if c.busy {
		if checkIndexes {
			panic("engine: candidate lists nested")
		}
		c = &cands{}
	}
	c.e, c.list, c.mark, c.busy = e, c.list[:0], e.candMark, true
	return c
}

func (c *cands) done() {
	clear(c.list) // let forgotten VMs go
	c.busy = false
}

func (c *cands) add(v *vm) {
	if v.mark != c.mark {
		v.mark = c.mark
		c.list = append(c.list, v)
	}
}

// addRelated adds the VMs related to h, the VMs with a migration in flight (migrating), and
// the VMs touched so far in this step.
func (c *cands) addRelated(h *host, migrating bool) {
	if h != nil {
		for _, v := range h.related {
			c.add(v)
		}
	}
	if migrating {
		for v := range c.e.migrating {
			c.add(v)
		}
	}
	c.addDirty()
}

func (c *cands) addDirty() {
	for _, v := range c.e.dirty {
		c.add(v)
	}
}

// sorted returns the candidates in name order, the order the engine walks VMs in. The
// slice is valid until the next candidates call.
func (c *cands) sorted() []*vm {
	slices.SortFunc(c.list, func(a, b *vm) int { return cmp.Compare(a.id, b.id) })
	return c.list
}

// sortedVMs returns the names of every protected VM, sorted.
func (e *Engine) sortedVMs() []VMID {
	if e.vmIxStale {
		e.vmIx = e.vmIx[:0]
		for id := range e.vms {
			e.vmIx = append(e.vmIx, id)
		}
		slices.Sort(e.vmIx)
		e.vmIxStale = false
	}
	return e.vmIx
}

// indexVM adds a newly protected VM to the name index.
func (e *Engine) indexVM(v *vm) {
	if !e.vmIxStale && (len(e.vmIx) == 0 || e.vmIx[len(e.vmIx)-1] < v.id) {
		e.vmIx = append(e.vmIx, v.id)
	} else {
		e.vmIxStale = true
	}
	e.touch(v)
}

// ---- hosts related to a VM -------------------------------------------------------------

// relatedHosts returns the known hosts v is related to: its home, the hosts it was observed
// on, the host its recovery attempt went to, and the hosts of its extra copies.
func (e *Engine) relatedHosts(v *vm, buf []*host) []*host {
	add := func(id HostID) {
		for _, h := range buf {
			if h.id == id {
				return
			}
		}
		for _, r := range v.rel { // the hosts it is indexed on, before asking the map
			if r.h.id == id {
				buf = append(buf, r.h)
				return
			}
		}
		if h := e.hosts[id]; h != nil {
			buf = append(buf, h)
		}
	}
	if h := e.homeHost(v); h != nil {
		buf = append(buf, h)
	}
	for i := range v.obs {
		add(v.obs[i].host)
	}
	if f := v.fail; f != nil && f.actHost != "" {
		add(f.actHost)
	}
	for _, d := range v.dups {
		add(d.host)
	}
	return buf
}

func (e *Engine) syncRelated(v *vm) {
	// Most VMs a step touches (every VM of a host's list) are related to the same hosts as
	// before: the key says so without working them out again.
	var key relKey
	if !v.dead && len(v.dups) == 0 {
		key = relKey{home: e.homeHost(v), nobs: len(v.obs), hostGen: e.hostGen}
		if f := v.fail; f != nil {
			key.act = f.actHost
		}
		key.ok = true
	}
	skip := key.ok && key == v.relKey
	if skip && !checkIndexes {
		return
	}
	v.relKey = key
	var want []*host
	if !v.dead {
		want = e.relatedHosts(v, e.relBuf[:0])
		e.relBuf = want[:0]
	}
	if len(want) == len(v.rel) {
		same := true
		for i, h := range want {
			if v.rel[i].h != h {
				same = false
				break
			}
		}
		if same {
			return
		}
	}
	if skip {
		panic(fmt.Sprintf("engine: vm %s: its related hosts changed, its key %+v did not", v.id, key))
	}
	// Drop the hosts no longer related, then add the new ones.
	kept := v.rel[:0]
	for _, r := range v.rel {
		if slices.Contains(want, r.h) {
			kept = append(kept, r)
			continue
		}
		h, p := r.h, r.pos
		last := h.related[len(h.related)-1]
		h.related[p] = last
		if last != v {
			for i := range last.rel {
				if last.rel[i].h == h {
					last.rel[i].pos = p
					break
				}
			}
		}
		h.related[len(h.related)-1] = nil
		h.related = h.related[:len(h.related)-1]
	}
	v.rel = kept
	for _, h := range want {
		found := false
		for _, r := range v.rel {
			if r.h == h {
				found = true
				break
			}
		}
		if !found {
			v.rel = append(v.rel, relRef{h: h, pos: len(h.related)})
			h.related = append(h.related, v)
		}
	}
	// Keep v.rel in the order relatedHosts gives, so the quick check above holds next time.
	for i, h := range want {
		for j := i; j < len(v.rel); j++ {
			if v.rel[j].h == h {
				v.rel[i], v.rel[j] = v.rel[j], v.rel[i]
				break
			}
		}
	}
	if len(v.rel) == 0 {
		v.rel = nil
	}
}

// ---- placement usage -------------------------------------------------------------------

// syncUse brings what v counts against its home's (and its migration target's) memory,
// vCPUs and groups up to date.
func (e *Engine) syncUse(v *vm) {
	var u usage
	if !v.dead && v.wantsUp() {
		if h := e.homeHost(v); h != nil {
			u = usage{h: h, mem: v.mem, cpu: v.vcpus, group: v.policy.AntiAffinity}
			if op := v.op; op != nil && op.Kind == OpMigrate && op.Target != "" && op.Target != v.home {
				u.t = e.hosts[op.Target]
			}
		}
	}
	if u == v.use {
		return
	}
	o := v.use
	if o.h != nil {
		o.h.homed = countClassN(o.h.homed, o.mem, o.cpu, -1)
	}
	if u.h != nil {
		u.h.homed = countClassN(u.h.homed, u.mem, u.cpu, 1)
	}
	for _, h := range [2]*host{o.h, o.t} {
		if h == nil {
			continue
		}
		h.used -= o.mem
		h.usedCPU -= o.cpu
		if o.group != "" {
			if h.groups[o.group]--; h.groups[o.group] == 0 {
				delete(h.groups, o.group)
			}
		}
	}
	for _, h := range [2]*host{u.h, u.t} {
		if h == nil {
			continue
		}
		h.used += u.mem
		h.usedCPU += u.cpu
		if u.group != "" {
			if h.groups == nil {
				h.groups = map[string]int{}
			}
			h.groups[u.group]++
		}
	}
	v.use = u
}

// ---- timers ----------------------------------------------------------------------------

func earliest(w, t time.Time) time.Time {
	if !t.IsZero() && (w.IsZero() || t.Before(w)) {
		return t
	}
	return w
}

// wakeAt is the earliest time at which a Tick could change anything for v, zero for none.
// It depends on e.now: a failure's next attempt that is due already waits for an
// observation, not for time, so it does not count.
func (e *Engine) wakeAt(v *vm) time.Time {
	var w time.Time
	if v.op != nil {
		w = earliest(w, v.op.Deadline)
		if !v.op.retryAt.IsZero() && v.opActID == 0 {
			w = earliest(w, v.op.retryAt)
		}
	}
	h := e.homeHost(v)
	if h == nil || h.state == hostSuspect {
		return w // nothing moves until the host is fenced, which is timed apart
	}
	if f := v.fail; f != nil && !v.errored {
		if f.actID != 0 {
			w = earliest(w, f.actDeadline)
		} else if f.next.After(e.now) {
			w = earliest(w, f.next)
		}
	}
	if !v.vanishedAt.IsZero() && v.op == nil && v.fail == nil && !v.errored && h.state == hostUp {
		w = earliest(w, v.vanishedAt.Add(e.cfg.VanishGrace))
	}
	return w
}

// dueAt is the moment from which a Tick evaluates v (see tick), and whether there is one.
func (e *Engine) dueAt(v *vm) (time.Time, bool) {
	var d time.Time
	on := false
	add := func(t time.Time) {
		if !on || t.Before(d) {
			d, on = t, true
		}
	}
	if op := v.op; op != nil {
		add(op.Deadline)
		if !op.retryAt.IsZero() && v.opActID == 0 {
			add(op.retryAt)
		}
	}
	if !v.vanishedAt.IsZero() {
		add(v.vanishedAt.Add(e.cfg.VanishGrace))
	}
	if f := v.fail; f != nil {
		if f.actID != 0 {
			add(f.actDeadline)
		} else {
			add(f.next)
		}
	}
	return d, on
}

// tickDue: a Tick at now evaluates v.
func (e *Engine) tickDue(v *vm) bool {
	due := (v.op != nil && !e.now.Before(v.op.Deadline)) ||
		(v.op != nil && !v.op.retryAt.IsZero() && v.opActID == 0 && !e.now.Before(v.op.retryAt)) ||
		(!v.vanishedAt.IsZero() && !e.now.Before(v.vanishedAt.Add(e.cfg.VanishGrace)))
	if f := v.fail; f != nil {
		due = due || (f.actID != 0 && !e.now.Before(f.actDeadline)) || (f.actID == 0 && !e.now.Before(f.next))
	}
	return due
}

// timerHeap is a min-heap of VMs by one of their timers.
type timerHeap struct {
	k  int
	vs []*vm
}

func (q *timerHeap) less(i, j int) bool {
	return q.vs[i].timers[q.k].at.Before(q.vs[j].timers[q.k].at)
}

func (q *timerHeap) swap(i, j int) {
	q.vs[i], q.vs[j] = q.vs[j], q.vs[i]
	q.vs[i].timers[q.k].pos = i + 1
	q.vs[j].timers[q.k].pos = j + 1
}

func (q *timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			return
		}
		q.swap(i, p)
		i = p
	}
}

func (q *timerHeap) down(i int) bool {
	i0, n := i, len(q.vs)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && q.less(r, l) {
			m = r
		}
		if !q.less(m, i) {
			break
		}
		q.swap(i, m)
		i = m
	}
	return i > i0
}

// set puts v in the heap at at (on), or takes it out (!on).
func (q *timerHeap) set(v *vm, at time.Time, on bool) {
	t := &v.timers[q.k]
	if !on {
		if t.pos != 0 {
			q.remove(t.pos - 1)
		}
		t.at = time.Time{}
		return
	}
	if t.pos == 0 {
		t.at = at
		q.vs = append(q.vs, v)
		t.pos = len(q.vs)
		q.up(len(q.vs) - 1)
		return
	}
	t.at = at
	if i := t.pos - 1; !q.down(i) {
		q.up(i)
	}
}

func (q *timerHeap) remove(i int) {
	n := len(q.vs) - 1
	if i != n {
		q.swap(i, n)
	}
	v := q.vs[n]
	v.timers[q.k].pos = 0
	q.vs[n] = nil
	q.vs = q.vs[:n]
	if i < n && !q.down(i) {
		q.up(i)
	}
}

// top returns the VM with the earliest timer, or nil.
func (q *timerHeap) top() *vm {
	if len(q.vs) == 0 {
		return nil
	}
	return q.vs[0]
}

// each calls fn for every VM whose timer is at or before t.
func (q *timerHeap) each(t time.Time, fn func(*vm)) {
	var walk func(i int)
	walk = func(i int) {
		if i >= len(q.vs) || t.Before(q.vs[i].timers[q.k].at) {
			return
		}
		fn(q.vs[i])
		walk(2*i + 1)
		walk(2*i + 2)
	}
	walk(0)
}

// ---- action IDs ------------------------------------------------------------------------

// noteAction remembers that action id was issued for v. An entry goes when the action's
// result comes; those of actions that never got one are pruned now and then.
func (e *Engine) noteAction(id uint64, v *vm) {
	e.actVM[id] = v
	if len(e.actVM) > 2*len(e.vms)+4096 {
		for id, v := range e.actVM {
			if v.dead || !((v.fail != nil && v.fail.actID == id) || v.opActID == id) {
				delete(e.actVM, id)
			}
		}
	}
}

// actionVM returns the VM whose recovery attempt or operation action id is, or nil. The
// VM is the one the old walk in name order found first.
func (e *Engine) actionVM(id uint64) *vm {
	if id != 0 {
		v := e.actVM[id]
		delete(e.actVM, id) // the action is answered: nothing carries its ID any more
		if v == nil || v.dead {
			return nil
		}
		if (v.fail != nil && v.fail.actID == id) || (v.opActID == id && v.op != nil) {
			return v
		}
		return nil
	}
	// ID 0 matches any VM with a failure and no attempt in flight, or with an operation
	// whose action was answered: every such VM has a Tick timer.
	var best *vm
	consider := func(v *vm) {
		if v.dead || !((v.fail != nil && v.fail.actID == 0) || (v.opActID == 0 && v.op != nil)) {
			return
		}
		if best == nil || v.id < best.id {
			best = v
		}
	}
	for _, v := range e.due.vs {
		consider(v)
	}
	for _, v := range e.dirty {
		consider(v)
	}
	return best
}
