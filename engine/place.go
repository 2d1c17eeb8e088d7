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

// place chooses a host for v other than exclude: the feasible host with the most free
// memory, ties broken by name. It returns "" when no host has room.
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
	best, bestSoft, bestFree := HostID(""), false, 0
	for _, id := range e.hostIx {
		if id == exclude {
			continue
		}
		h := e.hosts[id]
		ok, soft := e.feasible(v, h, used, groups)
		if !ok {
			continue
		}
		free := h.mem - used[id]
		if h.mem == 0 {
			free = 1 << 30
		}
		if best == "" || (soft && !bestSoft) || (soft == bestSoft && free > bestFree) {
			best, bestSoft, bestFree = id, soft, free
		}
	}
	return best
}
