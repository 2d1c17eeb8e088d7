package sim

import (
	"fmt"
	"time"
)

// ---- the store's members (etcd) ----------------------------------------------------------
//
// The store is a 3-member etcd cluster. Losing a member that is not the etcd leader changes
// nothing while two remain. Losing the leader leaves the store unavailable until the two
// others elect a new one (1-2 s): no write succeeds (a controller step, whose record fails,
// carries nothing out; no lease is renewed), and the new leader gives every lease a fresh
// TTL. Losing two members loses the control plane everywhere until one of them comes back
// (and a leader is elected).

const etcdMembers = 3

type etcdCluster struct {
	up       [etcdMembers]bool
	leader   int  // -1: none
	electing bool // an election is under way
	epoch    int  // bumps at every loss or return: a pending election of an older one is void
}

func newEtcd() etcdCluster {
	return etcdCluster{up: [etcdMembers]bool{true, true, true}, leader: 0}
}

func (c *etcdCluster) quorum() bool {
	n := 0
	for _, u := range c.up {
		if u {
			n++
		}
	}
	return n > etcdMembers/2
}

func memberName(i int) string { return fmt.Sprintf("e%d", i+1) }

// etcdElection is how long etcd takes to elect a leader.
func (s *Sim) etcdElection() time.Duration {
	if !s.random {
		return 1500 * time.Millisecond
	}
	return time.Second + time.Duration(s.frng.Int64N(int64(time.Second)))
}

// etcdLose takes member i down.
func (s *Sim) etcdLose(i int) {
	c := &s.etcd
	if !c.up[i] {
		return
	}
	s.res.EtcdMemberLosses++
	c.up[i] = false
	c.epoch++
	wasLeader := c.leader == i
	switch {
	case !c.quorum():
		s.trace("truth: etcd member %s is lost: no quorum, the store is unavailable until a member comes back", memberName(i))
		c.leader, c.electing = -1, false
		s.controlPlaneLost(cpEtcd)
	case wasLeader:
		s.trace("truth: etcd member %s, the etcd leader, is lost: the store is unavailable until a new leader is elected", memberName(i))
		c.leader = -1
		s.controlPlaneLost(cpEtcd)
		s.etcdElect()
	default:
		s.trace("truth: etcd member %s is lost (not the leader: the store carries on)", memberName(i))
	}
}

// etcdBack brings member i back.
func (s *Sim) etcdBack(i int) {
	c := &s.etcd
	if c.up[i] {
		return
	}
	c.up[i] = true
	s.trace("truth: etcd member %s is back", memberName(i))
	if c.leader < 0 && !c.electing && c.quorum() {
		s.etcdElect()
	}
}

// etcdElect elects a leader after the election time, if the quorum holds until then.
func (s *Sim) etcdElect() {
	c := &s.etcd
	c.electing = true
	c.epoch++
	ep := c.epoch
	s.after(s.etcdElection(), func() {
		if c.epoch != ep || !c.quorum() {
			return
		}
		c.electing = false
		for i, u := range c.up {
			if u {
				c.leader = i
				break
			}
		}
		s.trace("truth: etcd elects %s its leader: the store is available, every lease gets a fresh TTL", memberName(c.leader))
		s.controlPlaneBack(cpEtcd)
	})
}
