package engine

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
)

// Admission control, as XenServer's "number of host failures to tolerate" and vSphere's
// admission control have it: a cluster with TolerateHostFailures N refuses to protect a VM
// (or to start a stopped protected one through hass) when, after losing N hosts, the
// cluster's protected VMs could not all run on what is left.
//
// The check, at one Protect or start, costs O(hosts log hosts + displaced VMs x hosts) and
// never walks every VM:
//
//  1. The usable hosts of the cluster are those up and out of maintenance; reserved hosts
//     count as room. A host in maintenance is neither room nor demand (its VMs stay with it).
//     Hosts already suspect or fenced are lost already: their VMs are displaced on top of
//     the N.
//  2. The N hosts whose loss hurts most are taken to be the largest: by memory, then vCPUs
//     (a host with no limit counts as the largest), then the most used. In totals that is
//     exact: losing host h leaves free room minus h's capacity for what h ran, so the
//     largest loss is the worst one, per resource. Which set of N makes packing hardest is
//     a harder question, and is approximated by the same rule.
//  3. The VMs wanted up that are homed on the lost hosts (the new one too, if its home is
//     among them) are packed, largest first (memory, then vCPUs), into the free memory and
//     vCPUs the survivors have now, each into the first survivor it fits (first-fit
//     decreasing), as an evacuation would have to. The VMs on the survivors stay where they
//     are. If one of them fits nowhere, the request is refused.
//
// What it approximates: packing is NP-hard, and first-fit decreasing may fail where a
// cleverer packing exists (it is within 11/9 of the optimum, so the check errs towards
// refusing); the choice of the N lost hosts by size is exact for the totals but not for
// packing, where another set could be worse; hard anti-affinity is not checked (a group
// with more VMs than surviving hosts is refused at placement, not at admission); a VM a user
// starts behind hass's back (virsh) or protects elsewhere is not refused, only counted.
// Raising a cluster's tolerance is accepted even when the cluster does not meet it today:
// an alert says so.

// AdmissionError is why admission control refused a request. Nothing changed.
type AdmissionError struct {
	VM       VMID
	Cluster  string
	Tolerate int      // the cluster's TolerateHostFailures
	Lost     []HostID // the hosts whose loss the check assumed (the largest usable ones)
	Reason   string   // what would not fit, with numbers
}

func (e *AdmissionError) Error() string {
	n := "1 host failure"
	if e.Tolerate != 1 {
		n = fmt.Sprintf("%d host failures", e.Tolerate)
	}
	return fmt.Sprintf("admission control: cluster %s must tolerate %s: %s", e.Cluster, n, e.Reason)
}

// demand is a VM that needs room.
type demand struct {
	id       VMID
	mem, cpu int
}

// room is a surviving host's free memory and vCPUs (math.MaxInt: not limited).
type room struct {
	h        *host
	mem, cpu int
}

// admit checks cluster c's tolerance with extra (nil: none) added on home. It returns an
// *AdmissionError, or nil.
func (e *Engine) admit(c *cluster, extra *demand, home *host) error {
	n := c.tolerate
	if n <= 0 {
		return nil
	}
	refuse := func(lost []*host, format string, args ...any) error {
		err := &AdmissionError{Cluster: c.name, Tolerate: n, Reason: fmt.Sprintf(format, args...)}
		if extra != nil {
			err.VM = extra.id
		}
		for _, h := range lost {
			err.Lost = append(err.Lost, h.id)
		}
		return err
	}
	var usable, down []*host
	for _, h := range e.hostList {
		switch {
		case h.cluster != c.name || h.maint:
		case h.state == hostUp:
			usable = append(usable, h)
		default:
			down = append(down, h)
		}
	}
	if len(usable) <= n {
		return refuse(usable, "it has %d usable hosts (up, out of maintenance): losing %d leaves none", len(usable), n)
	}
	size := func(x int) int {
		if x == 0 {
			return math.MaxInt
		}
		return x
	}
	slices.SortFunc(usable, func(a, b *host) int {
		if c := cmp.Compare(size(b.mem), size(a.mem)); c != 0 {
			return c
		}
		if c := cmp.Compare(size(b.vcpus), size(a.vcpus)); c != 0 {
			return c
		}
		if c := cmp.Compare(b.used, a.used); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	lost, surv := usable[:n], usable[n:]
	// The displaced demands, counted by size (see packClasses); their names are gathered
	// only for a refusal.
	var classes []sizeClass
	displaced := func(each func(id VMID, mem, cpu int)) {
		for _, hs := range [2][]*host{down, lost} {
			for _, h := range hs {
				for _, v := range h.related {
					if !v.dead && v.home == h.id && v.wantsUp() {
						each(v.id, v.mem, v.vcpus)
					}
				}
				if extra != nil && home == h {
					each(extra.id, extra.mem, extra.cpu)
				}
			}
		}
	}
	classes = e.displacedClasses(down, lost, extra, home)
	if checkIndexes {
		var walk []sizeClass
		displaced(func(_ VMID, mem, cpu int) { walk = countClass(walk, mem, cpu) })
		if !sameClasses(walk, classes) {
			panic(fmt.Sprintf("engine: admission of %s: the index counts %v, the walk %v", c.name, classes, walk))
		}
	}
	rooms := make([]room, len(surv))
	for i, h := range surv {
		r := room{h: h, mem: math.MaxInt, cpu: math.MaxInt}
		if h.mem > 0 {
			r.mem = h.mem - h.used
		}
		if h.vcpus > 0 {
			r.cpu = h.vcpus - h.usedCPU
		}
		if extra != nil && home == h {
			if h.mem > 0 {
				r.mem -= extra.mem
			}
			if h.vcpus > 0 {
				r.cpu -= extra.cpu
			}
		}
		rooms[i] = r
	}
	idsOf := func(mem, cpu int) []VMID {
		var ids []VMID
		displaced(func(id VMID, m, c int) {
			if m == mem && c == cpu {
				ids = append(ids, id)
			}
		})
		return ids
	}
	if it, ok := packClasses(classes, rooms, idsOf); !ok {
		return refuse(lost, "after losing %s, %s would find no room: %s", hostNames(lost), it.id, shortOf(it, rooms))
	}
	return nil
}

// firstFitDecreasing packs the demands, largest first (memory, then vCPUs, then name), each
// into the first room it fits, taking what it uses from rooms. It returns the first demand
// that fits nowhere, and false; rooms are then as that demand found them.
func firstFitDecreasing(items []demand, rooms []room) (demand, bool) {
	var classes []sizeClass
	for _, it := range items {
		classes = countClass(classes, it.mem, it.cpu)
	}
	return packClasses(classes, rooms, func(mem, cpu int) []VMID {
		var ids []VMID
		for _, d := range items {
			if d.mem == mem && d.cpu == cpu {
				ids = append(ids, d.id)
			}
		}
		return ids
	})
}

// sizeClass counts the demands of one size.
type sizeClass struct{ mem, cpu, n int }

// countClass counts one demand of mem and cpu in classes (few: VMs come in a few sizes).
func countClass(classes []sizeClass, mem, cpu int) []sizeClass {
	return countClassN(classes, mem, cpu, 1)
}

// countClassN adds n (which may be negative) demands of mem and cpu to classes.
func countClassN(classes []sizeClass, mem, cpu, n int) []sizeClass {
	for i := range classes {
		if classes[i].mem == mem && classes[i].cpu == cpu {
			classes[i].n += n
			return classes
		}
	}
	return append(classes, sizeClass{mem: mem, cpu: cpu, n: n})
}

// displacedClasses counts, by size, the VMs wanted up and homed on the hosts down and lost,
// and extra if home is one of them: what losing them would displace. The hosts' counts
// (host.homed) are as of the last step's end; the VMs this step touched so far are counted
// as they are now, where they were indexed (host.related) then, as a walk of each host's
// related VMs would. Walking those at every Protect and start was most of a large
// simulation with admission control (500 hosts to lose: 25,000 VMs a check).
func (e *Engine) displacedClasses(down, lost []*host, extra *demand, home *host) []sizeClass {
	e.admitMark++
	mark := e.admitMark
	var classes []sizeClass
	for _, hs := range [2][]*host{down, lost} {
		for _, h := range hs {
			h.mark = mark
			for _, k := range h.homed {
				if k.n != 0 {
					classes = countClassN(classes, k.mem, k.cpu, k.n)
				}
			}
		}
	}
	for _, v := range e.dirty {
		if h := v.use.h; h != nil && h.mark == mark {
			classes = countClassN(classes, v.use.mem, v.use.cpu, -1)
		}
		if v.dead || !v.wantsUp() {
			continue
		}
		for _, r := range v.rel {
			if r.h.id == v.home && r.h.mark == mark {
				classes = countClassN(classes, v.mem, v.vcpus, 1)
			}
		}
	}
	if extra != nil && home != nil && home.mark == mark {
		classes = countClassN(classes, extra.mem, extra.cpu, 1)
	}
	return slices.DeleteFunc(classes, func(k sizeClass) bool { return k.n == 0 })
}

// sameClasses says whether a and b count the same demands of each size.
func sameClasses(a, b []sizeClass) bool {
	count := func(cs []sizeClass) map[[2]int]int {
		m := map[[2]int]int{}
		for _, k := range cs {
			if k.n != 0 {
				m[[2]int{k.mem, k.cpu}] += k.n
			}
		}
		return m
	}
	return maps.Equal(count(a), count(b))
}

// packClasses is first-fit decreasing a class of equal demands (memory, vCPUs) at a time:
// equal demands are interchangeable, so placing k of them one by one fills the rooms in
// order, each room taking as many as fit, whatever their names. Only a refusal names one:
// the one that would have come first in name order at that place (idsOf lists a class's
// names). Sorting every demand by name as well, and listing them all, at each Protect or
// start was most of a large simulation with admission control: 25,000 demands when 500
// hosts are to be lost.
func packClasses(classes []sizeClass, rooms []room, idsOf func(mem, cpu int) []VMID) (demand, bool) {
	slices.SortFunc(classes, func(a, b sizeClass) int {
		if c := cmp.Compare(b.mem, a.mem); c != 0 {
			return c
		}
		return cmp.Compare(b.cpu, a.cpu)
	})
	for _, k := range classes {
		it := demand{mem: k.mem, cpu: k.cpu}
		left := k.n
		for i := range rooms {
			if left == 0 {
				break
			}
			r := &rooms[i]
			n := min(left, fits(r.mem, it.mem), fits(r.cpu, it.cpu))
			if n == 0 {
				continue
			}
			if r.mem != math.MaxInt {
				r.mem -= n * it.mem
			}
			if r.cpu != math.MaxInt {
				r.cpu -= n * it.cpu
			}
			left -= n
		}
		if left > 0 {
			ids := idsOf(it.mem, it.cpu)
			slices.Sort(ids)
			it.id = ids[len(ids)-left]
			return it, false
		}
	}
	return demand{}, true
}

// fits is how many demands of need fit in free (math.MaxInt: unlimited), one after another
// as first-fit places them: each needs free >= need.
func fits(free, need int) int {
	switch {
	case free < need:
		return 0
	case need <= 0 || free == math.MaxInt:
		return math.MaxInt
	}
	return free / need
}

func hostNames(hs []*host) string {
	var b strings.Builder
	for i, h := range hs {
		switch {
		case i == 0:
		case i == len(hs)-1:
			b.WriteString(" and ")
		default:
			b.WriteString(", ")
		}
		b.WriteString(string(h.id))
	}
	return b.String()
}

// shortOf says what it needs and the most the survivors offer.
func shortOf(it demand, rooms []room) string {
	mem, cpu := rooms[0], rooms[0]
	for _, r := range rooms[1:] {
		if r.mem > mem.mem {
			mem = r
		}
		if r.cpu > cpu.cpu {
			cpu = r
		}
	}
	if mem.mem < it.mem || cpu.cpu == math.MaxInt {
		return fmt.Sprintf("need %d MiB, largest free %d MiB on %s", it.mem, max(mem.mem, 0), mem.h.id)
	}
	return fmt.Sprintf("need %d MiB and %d vCPUs; largest free %d MiB on %s, most free vCPUs %d on %s",
		it.mem, it.cpu, max(mem.mem, 0), mem.h.id, max(cpu.cpu, 0), cpu.h.id)
}

// admitVM checks admission for v, wanted up on home, counting it as new demand.
func (e *Engine) admitVM(id VMID, mem, cpu int, home *host) error {
	c := e.clusters[home.cluster]
	if c == nil {
		return nil
	}
	return e.admit(c, &demand{id: id, mem: mem, cpu: cpu}, home)
}
