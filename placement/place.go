package placement

import (
	"fmt"
	"strings"
)

// Hosts hands the candidates to a Planner one at a time, in name order, so a placement over
// a thousand hosts copies no list: Fill writes candidate i into h (every field but the
// details: h holds the previous candidate), Detail writes its details (HasCopy,
// FailedLately), which the planner asks for only of a host that passed every other checker.
type Hosts interface {
	Len() int
	Fill(i int, h *Host)
	Detail(i int, h *Host)
}

// Planner places VMs. It keeps what the last placement saw, for Explain; the zero value is
// ready. It is not safe for concurrent use.
type Planner struct {
	vm        VM
	h         Host
	rejects   [nRejects]int
	inCluster int // hosts of the VM's cluster
	usable    int // of them, up, out of maintenance and not excluded
	// the largest free memory and vCPUs among the usable hosts of the cluster turned down
	// for capacity (-1: not limited), and where
	maxMem, maxCPU   int
	maxMemH, maxCPUH string
	capSeen          bool
}

// Place returns the index of the best feasible host, or ok false when none fits (Explain
// then says why). The pass over the hosts only checks and ranks; when no host fits, a
// second pass tallies the rejections for Explain (a failed placement is rare, and a
// successful one pays nothing for the explanation).
func (p *Planner) Place(vm VM, hosts Hosts) (best int, ok bool) {
	p.vm = vm
	var bestKey uint64
	best = -1
	h := &p.h
	for i, n := 0, hosts.Len(); i < n; i++ {
		hosts.Fill(i, h)
		if feasibleCheap(&p.vm, h) != OK {
			continue
		}
		hosts.Detail(i, h)
		if CheckCopy(&p.vm, h) != OK {
			continue
		}
		if k := key(&p.vm, h); best < 0 || k > bestKey { // Rank and Better, as one number
			best, bestKey = i, k
		}
	}
	if best < 0 {
		p.tally(hosts)
	}
	return best, best >= 0
}

// tally counts every host's first rejection, and the capacity figures, for Explain.
func (p *Planner) tally(hosts Hosts) {
	p.rejects = [nRejects]int{}
	p.inCluster, p.usable, p.capSeen = 0, 0, false
	p.maxMem, p.maxCPU, p.maxMemH, p.maxCPUH = 0, 0, "", ""
	h := &p.h
	for i, n := 0, hosts.Len(); i < n; i++ {
		*h = Host{}
		hosts.Fill(i, h)
		r := feasibleCheap(&p.vm, h)
		if r == OK {
			hosts.Detail(i, h)
			r = CheckCopy(&p.vm, h)
		}
		p.note(h, r)
	}
}

// note tallies one host's verdict for Explain.
func (p *Planner) note(h *Host, r Reject) {
	p.rejects[r]++
	if h.Cluster != p.vm.Cluster {
		return
	}
	p.inCluster++
	if r == NotUp || r == InMaintenance || r == Excluded {
		return
	}
	p.usable++
	if r != OK && r != NoMemory && r != NoVCPUs {
		return // it has room, or a copy: not a capacity figure
	}
	if m := h.FreeMemMiB(); !p.capSeen || more(m, p.maxMem) {
		p.maxMem, p.maxMemH = m, h.Name
	}
	if c := h.FreeVCPUs(); !p.capSeen || more(c, p.maxCPU) {
		p.maxCPU, p.maxCPUH = c, h.Name
	}
	p.capSeen = true
}

// more: free amount a is larger than b, -1 meaning not limited.
func more(a, b int) bool {
	switch {
	case b < 0:
		return false
	case a < 0:
		return true
	}
	return a > b
}

// Rejected is how many hosts the last placement that found none turned down for r.
func (p *Planner) Rejected(r Reject) int { return p.rejects[r] }

// Explain says in one line why the last placement found no host.
func (p *Planner) Explain() string {
	vm := &p.vm
	c := vm.Cluster
	switch {
	case p.inCluster == 0:
		return fmt.Sprintf("cluster %s has no host", c)
	case p.usable == 0:
		var parts []string
		for _, r := range []Reject{Excluded, NotUp, InMaintenance} {
			if n := p.rejects[r]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, r))
			}
		}
		return fmt.Sprintf("cluster %s has no host up (of %d: %s)", c, p.inCluster, strings.Join(parts, ", "))
	case p.rejects[CopyUp] == p.usable && !p.capSeen:
		return fmt.Sprintf("a copy of it is up on every usable host of cluster %s", c)
	}
	aa, spare := p.rejects[HardAntiAffinity], p.rejects[ReservedHost]
	var b strings.Builder
	switch {
	case aa > 0 && spare > 0:
		fmt.Fprintf(&b, "anti-affinity group %s: every host of cluster %s with room runs one or is reserved for recoveries", vm.Group, c)
	case aa > 0:
		fmt.Fprintf(&b, "anti-affinity group %s: every host of cluster %s with room runs one", vm.Group, c)
	case spare > 0:
		fmt.Fprintf(&b, "only reserved hosts of cluster %s have room, and they take recoveries only", c)
	}
	if b.Len() > 0 {
		return b.String()
	}
	b.WriteString("no host has room: need ")
	switch noMem, noCPU := p.rejects[NoMemory], p.rejects[NoVCPUs]; {
	case noCPU == 0:
		fmt.Fprintf(&b, "%d MiB, largest free %d MiB on %s", vm.MemMiB, max(p.maxMem, 0), p.maxMemH)
	case noMem == 0:
		fmt.Fprintf(&b, "%d vCPUs, most free %d on %s", vm.VCPUs, max(p.maxCPU, 0), p.maxCPUH)
	default:
		fmt.Fprintf(&b, "%d MiB and %d vCPUs; largest free %d MiB on %s, most free vCPUs %d on %s",
			vm.MemMiB, vm.VCPUs, max(p.maxMem, 0), p.maxMemH, max(p.maxCPU, 0), p.maxCPUH)
	}
	return b.String()
}
