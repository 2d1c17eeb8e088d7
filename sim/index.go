package sim

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hassproject/hass/engine"
)

// Indexes of the simulated world, so that an event costs what it touches, not the size of
// the cluster: at 1,000 hosts and 50,000 VMs, finding a VM's copies by looking at every host,
// or a host's domains by looking at every VM, made the simulator's own bookkeeping the top of
// its profile. They change nothing the simulator does: every walk they replace visited the
// same hosts or VMs in the same order.

// vmHosts is, for each VM, the hosts that have a domain of it, in the order of s.hosts.
type vmHosts struct {
	at  map[engine.VMID][]*host
	pos map[*host]int // a host's place in s.hosts
}

// defined notes that h has a domain of id now (h.doms[id] was just set).
func (s *Sim) defined(h *host, id engine.VMID) {
	delete(s.domsSorted, h)
	if s.where.at == nil {
		s.where = vmHosts{at: map[engine.VMID][]*host{}, pos: map[*host]int{}}
	}
	p, ok := s.where.pos[h]
	if !ok {
		p = slices.Index(s.hosts, h)
		s.where.pos[h] = p
	}
	hs := s.where.at[id]
	i, found := slices.BinarySearchFunc(hs, p, func(x *host, p int) int { return s.where.pos[x] - p })
	if !found {
		s.where.at[id] = slices.Insert(hs, i, h)
	}
}

// undefined notes that h has no domain of id any more (h.doms[id] was just deleted).
func (s *Sim) undefined(h *host, id engine.VMID) {
	delete(s.domsSorted, h)
	hs := slices.DeleteFunc(s.where.at[id], func(x *host) bool { return x == h })
	if len(hs) == 0 {
		delete(s.where.at, id)
		return
	}
	s.where.at[id] = hs
}

// hostsOf lists the hosts that have a domain of id, in the order of s.hosts.
func (s *Sim) hostsOf(id engine.VMID) []*host { return s.where.at[id] }

// setUnseen sets t.unseen, keeping the count of VMs unseen on each host: a host's reports
// look their VMs up only while it has some.
func (s *Sim) setUnseen(t *vmTruth, h engine.HostID) {
	if s.unseenOn == nil {
		s.unseenOn = map[engine.HostID]int{}
	}
	if t.unseen != "" {
		s.unseenOn[t.unseen]--
	}
	t.unseen, t.unseenLost = h, false
	if h != "" {
		s.unseenOn[h]++
	}
}

// flushVM makes the store's copy of a VM's state current. Every step records the VMs it
// touched (Output.Touched, a superset of those it changed), and a VM's engine state changes
// only in a step that touches it, so the engine's state now is the state as last recorded:
// copying it when the store is read (an agent's token check, a controller's death), rather
// than after every step (50 VMs per resync, 33 resyncs a second at 1,000 hosts), stores the
// same. Where the store is checked after every step (scenarios, tests), only the VMs the
// steps recorded are copied (dirty), so checkStore still finds a VM changed without being
// recorded: its copy is not refreshed.
func (s *Sim) flushVM(id engine.VMID) {
	if s.eng == nil || s.checkStoreEach && !s.st.dirty[id] {
		return
	}
	delete(s.st.dirty, id)
	if st, ok := s.eng.State(id); ok {
		s.st.vms[id] = st
	} else {
		delete(s.st.vms, id)
	}
}

// flushStore makes the store's copy of every VM current (see flushVM), in name order.
func (s *Sim) flushStore() {
	if s.eng == nil {
		return
	}
	ids := s.vmIDs
	if s.checkStoreEach {
		ids = sortedKeys(s.st.dirty)
	}
	for _, id := range ids {
		s.flushVM(id)
	}
}

// domIDs lists h's domains in name order (each is a VM of s.vmIDs), sorted again only after
// a domain was defined or undefined there. Callers must not change the list.
func (s *Sim) domIDs(h *host) []engine.VMID {
	if ids, ok := s.domsSorted[h]; ok {
		return ids
	}
	if s.domsSorted == nil {
		s.domsSorted = map[*host][]engine.VMID{}
	}
	ids := slices.Sorted(maps.Keys(h.doms))
	s.domsSorted[h] = ids
	return ids
}

// listedIn says whether a snapshot lists a VM: by binary search, its rows being in name
// order as agents list them (a map otherwise).
func listedIn(doms []engine.DomainStatus) func(engine.VMID) bool {
	byName := func(d engine.DomainStatus, id engine.VMID) int { return strings.Compare(string(d.VM), string(id)) }
	if slices.IsSortedFunc(doms, func(a, b engine.DomainStatus) int { return byName(a, b.VM) }) {
		return func(id engine.VMID) bool {
			_, ok := slices.BinarySearchFunc(doms, id, byName)
			return ok
		}
	}
	set := make(map[engine.VMID]bool, len(doms))
	for _, d := range doms {
		set[d.VM] = true
	}
	return func(id engine.VMID) bool { return set[id] }
}

// storedIDs lists the VMs h's agent stored an observation of, in name order.
func storedIDs(h *host) []engine.VMID { return slices.Sorted(maps.Keys(h.stored)) }

// checkIndex compares the indexes with a walk of the world (tests and scenarios).
func (s *Sim) checkIndex() string {
	for _, id := range s.vmIDs {
		var want []*host
		for _, h := range s.hosts {
			if h.doms[id] != nil {
				want = append(want, h)
			}
		}
		if got := s.hostsOf(id); !slices.Equal(got, want) {
			return fmt.Sprintf("index: vm %s has domains on %d hosts, the index says %d", id, len(want), len(got))
		}
	}
	unseen := map[engine.HostID]int{}
	for _, t := range s.vms {
		if t.unseen != "" {
			unseen[t.unseen]++
		}
	}
	for _, h := range s.hosts {
		if unseen[h.id] != s.unseenOn[h.id] {
			return fmt.Sprintf("index: %d VMs unseen on %s, the count says %d", unseen[h.id], h.id, s.unseenOn[h.id])
		}
	}
	return ""
}
