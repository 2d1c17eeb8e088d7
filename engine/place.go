package engine

// Placement, in the manner of a scheduler: feasibility checks say yes or no to a host, a
// score ranks the hosts that are left. Hosts with no memory figure (0) have unlimited room.
// Each host's memory in use and anti-affinity groups are kept up to date as VMs change
// (index.go), so a placement costs one look at each host, not a walk of every VM.

// feasible reports whether v may run on h, given the memory used there and whether a VM of
// v's anti-affinity group runs there (v itself left out of both), and whether it would
// break only a soft rule (anti-affinity), which is waived when no host satisfies it.
func feasible(v *vm, h *host, used int, grouped bool) (ok, soft bool) {
	if h.state != hostUp {
		return false, false
	}
	if h.mem > 0 && used+v.mem > h.mem {
		return false, false
	}
	if grouped {
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
	// Bring the usage of the VMs changed in this step up to date (an evacuation places its
	// VMs one after another, each in the room the last one left).
	for _, x := range e.dirty {
		e.syncUse(x)
	}
	e.syncUse(v)
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
	g := v.policy.AntiAffinity
	best, bestScore := HostID(""), score{}
	for _, h := range e.hostList {
		if h.id == exclude {
			continue
		}
		used, grouped := h.used, false
		if g != "" {
			n := h.groups[g]
			if v.use.h == h && v.use.group == g {
				n--
			}
			grouped = n > 0
		}
		if v.use.h == h {
			used -= v.use.mem // v itself does not count
		}
		ok, soft := feasible(v, h, used, grouped)
		if !ok {
			continue
		}
		if o := v.obsOn(h.id); o != nil && o.state.up() {
			continue // a copy of it is up there already: never start a second one beside it
		}
		sc := score{reached: !h.unreached, fresh: !v.failedRecently(h.id, e.now), soft: soft, free: h.mem - used}
		if h.mem == 0 {
			sc.free = 1 << 30
		}
		if best == "" || better(sc, bestScore) {
			best, bestScore = h.id, sc
		}
	}
	if checkIndexes {
		if old := e.placeWalk(v, exclude); old != best {
			panic("engine: place " + string(v.id) + ": the indexes say " + string(best) + ", the walk of every VM " + string(old))
		}
	}
	return best
}
