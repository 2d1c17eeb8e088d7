package controller

// Group commit: where many steps come at once (a takeover: every host's lease and the
// reports that waited; the agents' reports queued in the watch, such as a thousand hosts'
// answers to a resync), the controller steps the engine for each as before and writes what
// they decided together, in as few etcd transactions as the store's op limit allows,
// instead of one transaction (one disk sync) per step. Decisions do not change, and an
// order still reaches no agent before everything that decided it is stored: orders are
// written last, with or after the records of the steps that made them. A write that fails
// is handled as a step's failed write is: the VMs it carried are written with the next
// step that succeeds, and the engine is rebuilt from the store.

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/store"
)

// maxGroupOps bounds the writes grouped from the watch, so that a group fits in one etcd
// transaction (the store's limit is 120 operations).
const maxGroupOps = 100

// group is what the steps of a group decided, merged: the last record of each VM and host
// wins, events, consumed reports and orders keep their order.
type group struct {
	events  []store.Event
	vms     map[string]*vmChange
	hosts   map[string]store.HostState
	deletes []string
	actions []store.Action
	config  []store.ConfigChange
	// after runs once the group is written (fences, power cycles: see stepLocked).
	after []func()
	// decide is how long the engine took over the steps that gave orders.
	decide  time.Duration
	idFloor uint64
	// What c.persisted and c.hostStates held before the group changed them (each step of
	// the group compares with what the steps before it decided), to put back if the write
	// fails.
	oldVMs   map[engine.VMID]*store.VM
	oldHosts map[engine.HostID]*store.HostState
}

// beginGroup makes the following steps' writes wait for flushGroup. Callers hold c.mu.
func (c *Controller) beginGroup() {
	c.group = &group{vms: map[string]*vmChange{}, hosts: map[string]store.HostState{},
		oldVMs: map[engine.VMID]*store.VM{}, oldHosts: map[engine.HostID]*store.HostState{}}
}

// discardGroup forgets a group (its steps' engine is thrown away). Callers hold c.mu.
func (c *Controller) discardGroup() {
	if c.group != nil {
		c.undoGroup(c.group)
		c.group = nil
	}
}

// ops is how many etcd operations the group's write takes.
func (g *group) ops() int {
	n := len(g.events) + 2*len(g.vms) + len(g.hosts) + len(g.deletes) + len(g.actions) + 5*len(g.config) // a change is at most 5
	if len(g.events) > 0 {
		n++ // the event counter
	}
	if g.idFloor != 0 {
		n++
	}
	return n
}

// add takes one step's batch and changed VMs into the group. Callers hold c.mu.
func (c *Controller) addToGroup(b store.Batch, changed []vmChange) {
	g := c.group
	g.events = append(g.events, b.Events...)
	g.deletes = append(g.deletes, b.DeleteKeys...)
	g.actions = append(g.actions, b.Actions...)
	g.config = append(g.config, b.Config...)
	g.idFloor = max(g.idFloor, b.IDFloor)
	for _, s := range b.PutHostStates {
		h := engine.HostID(s.Host)
		if _, saved := g.oldHosts[h]; !saved {
			var old *store.HostState
			if o, ok := c.hostStates[h]; ok {
				old = &o
			}
			g.oldHosts[h] = old
		}
		g.hosts[s.Host] = s
		c.hostStates[h] = s
	}
	for _, ch := range changed {
		id := engine.VMID(ch.name)
		if _, saved := g.oldVMs[id]; !saved {
			var old *store.VM
			if o, ok := c.persisted[id]; ok {
				old = &o
			}
			g.oldVMs[id] = old
		}
		g.vms[ch.name] = &ch
		if ch.gone {
			delete(c.persisted, id)
		} else {
			c.persisted[id] = ch.rec
		}
	}
}

// undoGroup puts back what c.persisted and c.hostStates held before the group.
func (c *Controller) undoGroup(g *group) {
	for id, old := range g.oldVMs {
		if old == nil {
			delete(c.persisted, id)
		} else {
			c.persisted[id] = *old
		}
	}
	for h, old := range g.oldHosts {
		if old == nil {
			delete(c.hostStates, h)
		} else {
			c.hostStates[h] = *old
		}
	}
}

// flushGroup writes what the group's steps decided, and ends the group. Callers hold c.mu.
func (c *Controller) flushGroup(ctx context.Context) {
	g := c.group
	c.group = nil
	if g == nil || g.ops() == 0 {
		return
	}
	b := store.Batch{Guard: c.guard, Events: g.events, DeleteKeys: g.deletes, Actions: g.actions, Config: g.config, IDFloor: g.idFloor}
	if b.IDFloor != 0 && b.IDFloor <= c.idFloor {
		b.IDFloor = 0
	}
	for _, name := range slices.Sorted(maps.Keys(g.vms)) {
		ch := g.vms[name]
		if ch.gone {
			b.DeleteVMs = append(b.DeleteVMs, name)
		} else {
			b.PutVMs = append(b.PutVMs, ch.rec)
		}
		if p, ok := probeChange(g.oldVMs[engine.VMID(name)], *ch); ok {
			b.Probes = append(b.Probes, p)
		}
	}
	for _, h := range slices.Sorted(maps.Keys(g.hosts)) {
		b.PutHostStates = append(b.PutHostStates, g.hosts[h])
	}
	start := time.Now()
	if _, err := c.st.Record(ctx, b); err != nil {
		c.log.Error("what the engine decided could not be recorded: nothing of it is carried out", "err", err,
			"events", len(b.Events), "vms", len(b.PutVMs)+len(b.DeleteVMs), "actions", len(b.Actions))
		c.recordError(err)
		c.recordErr = err
		c.undoGroup(g)
		for id := range g.oldVMs {
			c.dirty[id] = true // written with the next step that succeeds
		}
		return
	}
	c.recordErr = nil
	clear(c.dirty)
	if b.IDFloor != 0 {
		c.idFloor = b.IDFloor
	}
	if len(b.Actions) > 0 {
		c.log.Info("orders recorded", "n", len(b.Actions), "decide", g.decide, "record", time.Since(start), "grouped", true)
	}
	for _, fn := range g.after {
		fn()
	}
}

// drainWatch steps the agents' writes already waiting in the watch, while the group stays
// small enough for one transaction. Callers hold c.mu.
func (c *Controller) drainWatch(ctx context.Context, watch <-chan store.AgentEvent) {
	for c.group.ops() < maxGroupOps {
		select {
		case ev, ok := <-watch:
			if !ok {
				return // the lead loop sees the closed channel next
			}
			c.agentEvent(ctx, ev)
		default:
			return
		}
	}
}
