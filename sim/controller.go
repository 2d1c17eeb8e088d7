package sim

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/hassproject/hass/engine"
)

// ---- the store (etcd) and the controller that can die at any moment --------------------
//
// The controller is a process with a term. Its engine holds nothing that it did not record:
// after every step the runner writes into the store each changed VM's engine.VMState, each
// changed host's engine.HostState (one per RecHost record) and the ID floor, and stamps its
// orders with its term, before it carries anything out. When it dies its engine is thrown
// away; after an election the new leader restores a fresh engine from the store, reads
// every host's lease, takes the reports that waited in the store meanwhile, and asks every
// reachable agent for a resync. Agents carry out an order only while its Gen and Term
// match the store.

// store is what the controller recorded, as etcd holds it.
type store struct {
	term     uint64 // the leading controller's term
	nextID   uint64 // the engine's ID floor
	vms      map[engine.VMID]engine.VMState
	hosts    map[engine.HostID]engine.HostState
	clusters map[string]engine.ClusterState
	// dirty: VMs recorded since their copy in vms was taken (see flushVM).
	dirty map[engine.VMID]bool
}

func newStore() store {
	return store{term: 1, vms: map[engine.VMID]engine.VMState{}, hosts: map[engine.HostID]engine.HostState{},
		clusters: map[string]engine.ClusterState{}, dirty: map[engine.VMID]bool{}}
}

// controller is the leading controller process.
type controller struct {
	down       bool           // no controller leads: an election is under way
	crashArmed bool           // die in the next step that orders something, after recording it
	waiting    []engine.Input // reports that reached the store while no controller led
	epoch      int            // bumps at each crash: an election scheduled for an older one is void
	electLater bool           // an election is due but the store is unavailable: once it is back
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// storeCurrent is the fencing-token check an agent makes against the store: the VM's
// intent generation as the controller last recorded it, and the leader's term.
func (s *Sim) storeCurrent(a engine.Action) bool {
	s.flushVM(a.VM)
	st, ok := s.st.vms[a.VM]
	return ok && st.Gen == a.Gen && a.Term == s.st.term
}

// record writes, after each controller step, what the step changed into the store, as the
// daemon records it before carrying anything out: the state of every VM the step touched
// (Output.Touched), the state of every host it logged a RecHost record for, and the ID floor.
func (s *Sim) record(in engine.Input, out engine.Output) {
	touch := func(id engine.VMID) {
		if id != "" && s.checkStoreEach {
			s.st.dirty[id] = true // its state is copied when the store is read (flushVM)
		}
	}
	for _, r := range out.Log {
		touch(r.VM)
		switch r.Type {
		case engine.RecHost:
			if hs, ok := s.eng.Host(r.Host); ok {
				s.st.hosts[r.Host] = hs
			} else {
				delete(s.st.hosts, r.Host) // removed
			}
		case engine.RecCluster:
			if cs, ok := s.eng.Cluster(r.Cluster); ok {
				s.st.clusters[r.Cluster] = cs
			} else {
				delete(s.st.clusters, r.Cluster)
			}
		}
	}
	for _, id := range out.Touched {
		touch(id)
	}
	s.st.nextID = s.eng.LastID()
}

// noLeader is a step while no controller leads: a user's request is refused (the API is
// served by the leader), a report waits in the store for the next leader, in order; lease
// changes and ticks need nobody (the new leader reads every lease).
func (s *Sim) noLeader(in engine.Input) engine.Output {
	switch in.(type) {
	case engine.Request, engine.Protect, engine.Unprotect, engine.AddHost, engine.Maintenance, engine.SetCluster,
		engine.DeleteCluster, engine.RemoveHost:
		return engine.Output{Err: errors.New("no controller leads: an election is under way")}
	case engine.Tick, engine.HostLease, engine.HostPower:
		return engine.Output{} // the new leader reads every lease and polls every BMC again
	}
	s.ctl.waiting = append(s.ctl.waiting, in)
	return engine.Output{}
}

// controllerCrash kills the leading controller; another one is elected after delay.
func (s *Sim) controllerCrash(why string) {
	if s.ctl.down {
		return
	}
	s.res.ControllerCrashes++
	if why != "" {
		why = " " + why
	}
	s.trace("truth: the controller (term %d) crashes%s", s.st.term, why)
	s.ctl.down, s.ctl.crashArmed = true, false
	s.noteCP()
	s.ctl.epoch++
	s.flushStore() // what it recorded, before its engine is gone
	s.eng, s.wake = nil, time.Time{}
	ep := s.ctl.epoch
	delay := 2 * time.Second
	if s.random {
		delay = time.Second + time.Duration(s.frng.Int64N(int64(2*time.Second)))
	}
	s.after(delay, func() {
		if s.ctl.epoch == ep {
			s.elect()
		}
	})
}

// elect makes a new controller the leader: a fresh engine restored from the store, every
// host's lease as the store has it, the reports that waited, and a resync of every agent.
func (s *Sim) elect() {
	if !s.ctl.down {
		return
	}
	if s.cpDown {
		s.ctl.electLater = true // no leader can be elected without the store
		return
	}
	s.st.term++
	s.ctl.down = false
	s.noteCP()
	ecfg := s.cfg.Engine
	ecfg.Naive = s.cfg.Naive
	s.eng = engine.New(ecfg)
	r := engine.Restore{NextID: s.st.nextID}
	for _, name := range sortedKeys(s.st.clusters) {
		r.Clusters = append(r.Clusters, s.st.clusters[name])
	}
	for _, id := range sortedKeys(s.st.hosts) {
		r.Hosts = append(r.Hosts, s.st.hosts[id])
	}
	for _, id := range sortedKeys(s.st.vms) {
		r.VMs = append(r.VMs, s.st.vms[id])
	}
	s.trace("truth: a new controller leads (term %d): it restores %s and %s from the store",
		s.st.term, plural(len(r.VMs), "VM"), plural(len(r.Hosts), "host"))
	if out := s.step(r); out.Err != nil {
		panic(fmt.Sprintf("sim: restore from the store refused: %v", out.Err))
	}
	waiting := s.ctl.waiting
	s.ctl.waiting = nil
	for _, in := range waiting {
		s.step(in)
	}
	for _, h := range s.hosts {
		if h.leaseAlive {
			// The host's lease key as the store has it: a host fenced while it still
			// ran (its BMC said off) is not up again on it (engine.HostLease).
			s.step(engine.HostLease{Host: h.id, Alive: true, Lease: h.lease})
		} else {
			if s.eng.HostState(h.id) == "up" {
				// Lost while no controller led: what its agent last wrote comes first, as
				// when a leader sees a lease expire. (A suspect host's reports were read
				// before; a fenced host's are void.)
				s.readStore(h)
			}
			s.step(engine.HostLease{Host: h.id, Alive: false, Since: h.renewed, Lease: h.lease})
		}
	}
	for _, h := range s.hosts {
		s.snapshot(h)
	}
	s.pollPower()
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkStore compares the store with the engine: after every step, what a new leader would
// restore must be what the engine holds. It returns the first difference.
func (s *Sim) checkStore() string {
	if s.eng == nil {
		return ""
	}
	s.flushStore()
	if d := s.checkIndex(); d != "" {
		return d
	}
	for _, id := range s.vmIDs {
		got, ok := s.eng.State(id)
		st, stored := s.st.vms[id]
		if ok != stored || (ok && !reflect.DeepEqual(got, st)) {
			return fmt.Sprintf("vm %s: engine %+v, store %+v", id, got, st)
		}
	}
	for _, hs := range s.eng.Hosts() {
		if st := s.st.hosts[hs.Host]; st != hs {
			return fmt.Sprintf("host %s: engine %+v, store %+v", hs.Host, hs, st)
		}
	}
	for _, cs := range s.eng.Clusters() {
		if st, ok := s.st.clusters[cs.Name]; ok && st != cs || !ok && cs != (engine.ClusterState{Name: engine.DefaultCluster}) {
			return fmt.Sprintf("cluster %s: engine %+v, store %+v", cs.Name, cs, st)
		}
	}
	return ""
}
