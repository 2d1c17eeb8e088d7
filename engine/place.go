package engine

import "github.com/hassproject/hass/placement"

// Placement (a relocation, an evacuation, a start or migration with no host named, a
// maintenance move) is package placement's: its checkers say no to a host with a reason,
// its rankers score the hosts that are left. The engine keeps each host's memory, vCPUs
// and anti-affinity groups in use up to date as VMs change (index.go) and hands them over
// host by host with the VM itself left out, so a placement costs one look at each host, not
// a walk of every VM.

// place chooses a host for v other than exclude, for purpose. It returns "" and the reason,
// one line with numbers, when no host fits.
func (e *Engine) place(v *vm, exclude HostID, purpose placement.Purpose) (HostID, string) {
	// Bring the usage of the VMs changed in this step up to date (an evacuation places its
	// VMs one after another, each in the room the last one left).
	for _, x := range e.dirty {
		e.syncUse(x)
	}
	e.syncUse(v)
	e.view = hostsView{e: e, v: v, exclude: e.hosts[exclude]}
	i, ok := e.planner.Place(e.placementVM(v, purpose), &e.view)
	e.view = hostsView{}
	best, why := HostID(""), ""
	if ok {
		best = e.hostList[i].id
	} else {
		why = e.planner.Explain()
	}
	if checkIndexes {
		if old := e.placeWalk(v, exclude, purpose); old != best {
			panic("engine: place " + string(v.id) + ": the indexes say " + string(best) + ", the walk of every VM " + string(old))
		}
	}
	return best, why
}

// placementVM is what placement needs to know of v.
func (e *Engine) placementVM(v *vm, purpose placement.Purpose) placement.VM {
	return placement.VM{Name: string(v.id), Cluster: v.cluster, MemMiB: v.mem, VCPUs: v.vcpus,
		Group: v.policy.AntiAffinity, Hard: v.policy.AntiAffinityHard, Purpose: purpose}
}

// hostsView hands the engine's hosts to the planner, in name order, with their usage as it
// stands with v left out.
type hostsView struct {
	e       *Engine
	v       *vm
	exclude *host // nil: none
}

func (w *hostsView) Len() int { return len(w.e.hostList) }

func (w *hostsView) Fill(i int, p *placement.Host) {
	h, v := w.e.hostList[i], w.v
	w.e.fillHost(p, h, v, w.exclude)
	p.UsedMemMiB, p.UsedVCPUs = h.used, h.usedCPU
	mine := v.use.h == h || v.use.t == h
	if mine {
		p.UsedMemMiB -= v.use.mem // v itself does not count
		p.UsedVCPUs -= v.use.cpu
	}
	p.GroupVMs = 0
	if g := v.policy.AntiAffinity; g != "" {
		p.GroupVMs = h.groups[g]
		if mine && v.use.group == g {
			p.GroupVMs--
		}
	}
}

func (w *hostsView) Detail(i int, p *placement.Host) { w.e.detailHost(p, w.e.hostList[i], w.v) }

// fillHost fills what placement needs to know of h that does not depend on usage.
func (e *Engine) fillHost(p *placement.Host, h *host, v *vm, exclude *host) {
	p.Name, p.Cluster = string(h.id), h.cluster
	p.Up, p.Maintenance, p.Reserved, p.Excluded = h.state == hostUp, h.maint, h.reserved, h == exclude
	p.MemMiB, p.VCPUs, p.Unreached = h.mem, h.vcpus, h.unreached
}

// detailHost fills what placement asks only of a host that passed its other checkers.
func (e *Engine) detailHost(p *placement.Host, h *host, v *vm) {
	o := v.obsOn(h.id)
	p.HasCopy = o != nil && o.state.up() // a copy of it is up there already: never start a second one beside it
	p.FailedLately = v.failedRecently(h.id, e.now)
}
