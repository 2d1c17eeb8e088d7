package engine

// Placement, in the manner of a scheduler: feasibility checks say yes or no to a host, a
// score ranks the hosts that are left. Hosts with no memory figure (0) have unlimited room.

// feasible reports whether v may run on h, and whether it would break only a soft rule
// (anti-affinity), which is waived when no host satisfies it.
func (e *Engine) feasible(v *vm, h *host, used map[HostID]int, groups map[HostID]map[string]bool) (ok, soft bool) {
	if h.state != hostUp {
		return false, false
	}
	if h.mem > 0 && used[h.id]+v.mem > h.mem {
		return false, false
	}
	if g := v.policy.AntiAffinity; g != "" && groups[h.id][g] {
		return true, false
	}
	return true, true
}

// place chooses a host for v other than exclude. Among the feasible hosts it prefers, in
// this order: one whose hypervisor was not just found unreachable, one the VM has not
// failed on within its policy window (a host it just crashed on, or that refused to start
// it, is tried again only when no other host has room), one that keeps its anti-affinity
// group apart, then the one with the most free memory; ties are broken by name. It returns
// "" when no host has room.
func (e *Engine) place(v *vm, exclude HostID) HostID {
	used := make(map[HostID]int, len(e.hostIx))
	groups := make(map[HostID]map[string]bool)
	for _, id := range e.vmIx {
		o := e.vms[id]
		if o == v || !o.wantsUp() {
			continue
		}
		used[o.home] += o.mem
		if g := o.policy.AntiAffinity; g != "" {
			if groups[o.home] == nil {
				groups[o.home] = map[string]bool{}
			}
			groups[o.home][g] = true
		}
	}
	type score struct {
		reached, fresh, soft bool
		free                 int
	}
	better := func(a, b score) bool {
		if a.reached != b.reached {
			return a.reached
		}
		if a.fresh != b.fresh {
			return a.fresh
		}
		if a.soft != b.soft {
			return a.soft
		}
		return a.free > b.free
	}
	best, bestScore := HostID(""), score{}
	for _, id := range e.hostIx {
		if id == exclude {
			continue
		}
		h := e.hosts[id]
		ok, soft := e.feasible(v, h, used, groups)
		if !ok {
			continue
		}
		if o := v.obsOn(id); o != nil && o.state.up() {
			continue // a copy of it is up there already: never start a second one beside it
		}
		sc := score{reached: !h.unreached, fresh: !v.failedRecently(id, e.now), soft: soft, free: h.mem - used[id]}
		if h.mem == 0 {
			sc.free = 1 << 30
		}
		if best == "" || better(sc, bestScore) {
			best, bestScore = id, sc
		}
	}
	return best
}
