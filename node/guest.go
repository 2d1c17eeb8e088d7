package node

import (
	"context"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/guest"
	"github.com/hassproject/hass/hypervisor"
	"github.com/hassproject/hass/store"
	"github.com/hassproject/hass/wire"
)

// The guest layers (package guest): the monitor runs under n.mu like the agent; its probes
// run in goroutines of their own and come back under n.mu.

// guestEnv is the monitor's world: the guest agent and domain state through libvirt, the
// guest's address over this host's network, verified failures through the agent.
type guestEnv struct{ n *Node }

func (e guestEnv) Ping(vm engine.VMID, timeout time.Duration, done func(time.Time, bool)) {
	n := e.n
	go func() {
		err := n.ga.GuestPing(n.ctx, string(vm), timeout)
		n.mu.Lock()
		defer n.mu.Unlock()
		done(time.Now(), err == nil)
	}()
}

func (e guestEnv) Reach(vm engine.VMID, p engine.GuestPolicy, done func(time.Time, bool)) {
	n := e.n
	cached := n.guestAddr[vm]
	go func() {
		addr := p.Address
		if addr == "" {
			addr = cached
		}
		if addr == "" {
			// Ask the guest agent; until it says, the address cannot answer (and the layer
			// is not counted until it has answered once).
			ctx, cancel := context.WithTimeout(n.ctx, p.ProbeTimeout)
			addrs, err := n.ga.GuestAddresses(ctx, string(vm))
			cancel()
			if err == nil && len(addrs) > 0 {
				addr = addrs[0]
				n.mu.Lock()
				n.guestAddr[vm] = addr
				n.mu.Unlock()
				n.log.Info("guest network layer: probing the address the guest agent reports", "vm", vm, "address", addr)
			}
		}
		ok := false
		if addr != "" {
			var err error
			if p.Probe == engine.ProbeTCP {
				err = guest.TCP(n.ctx, addr, p.Port, p.ProbeTimeout)
			} else {
				err = n.pinger.Ping(n.ctx, addr, p.ProbeTimeout)
			}
			ok = err == nil
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		done(time.Now(), ok)
	}()
}

func (e guestEnv) Running(vm engine.VMID, done func(time.Time, bool)) {
	n := e.n
	go func() {
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		st, _, err := n.ga.State(ctx, string(vm))
		cancel()
		n.mu.Lock()
		defer n.mu.Unlock()
		done(time.Now(), err == nil && st == hypervisor.Running)
	}()
}

func (e guestEnv) Failed(vm engine.VMID, kind engine.SignalKind, at time.Time, why string) {
	e.n.log.Warn("guest layer failed", "vm", vm, "signal", kind.String(), "why", why)
	e.n.ag.GuestFailed(at, vm, kind)
}

func (e guestEnv) Log(format string, args ...any) { env(e).Log(format, args...) }

// guestLoop follows the guest policies in the store (probes/) and ticks the monitor.
func (n *Node) guestLoop(ctx context.Context) {
	defer n.wg.Done()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var watch <-chan store.ProbeEvent
	var retry <-chan time.Time
	load := func() {
		probes, rev, bad, err := n.st.Probes(ctx)
		if err != nil {
			retry = time.After(time.Second)
			return
		}
		for _, e := range bad {
			n.log.Error("a stored guest policy cannot be read: its VM's guest layers are not watched", "err", e)
		}
		now := time.Now()
		n.mu.Lock()
		for vm := range n.guestPol {
			if _, ok := probes[string(vm)]; !ok {
				n.mon.Forget(vm)
				delete(n.guestPol, vm)
			}
		}
		n.mu.Unlock()
		for name, g := range probes {
			n.setGuest(ctx, now, engine.VMID(name), wire.GuestFromStore(&g))
		}
		watch = n.st.WatchProbes(ctx, rev+1)
	}
	load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry:
			retry = nil
			load()
		case ev, ok := <-watch:
			if !ok {
				watch, retry = nil, time.After(time.Second)
				continue
			}
			if ev.Err != nil {
				n.log.Error("a stored guest policy cannot be read: its VM's guest layers are not watched", "vm", ev.VM, "err", ev.Err)
			}
			n.setGuest(ctx, time.Now(), engine.VMID(ev.VM), wire.GuestFromStore(ev.Guest))
		case <-tick.C:
			n.mu.Lock()
			n.mon.Tick(time.Now())
			n.mu.Unlock()
		}
	}
}

// maskLayers keeps of p the layers a cluster's setting leaves active ("" or "all": every one).
func maskLayers(p engine.GuestPolicy, layers string) engine.GuestPolicy {
	switch layers {
	case "none":
		return engine.GuestPolicy{}
	case "os":
		p.Probe, p.Port, p.Address, p.ProbeInterval, p.ProbeTimeout, p.ProbeMisses = "", 0, "", 0, 0, 0
	case "network":
		p.Heartbeat, p.HeartbeatInterval, p.HeartbeatTimeout, p.HeartbeatMisses = false, 0, 0, 0
	}
	if !p.Enabled() {
		return engine.GuestPolicy{}
	}
	return p
}

// setLayers applies the guest layers this host's cluster leaves active, when they changed.
// Callers hold n.mu.
func (n *Node) setLayers(now time.Time, layers string) {
	if layers == n.layers {
		return
	}
	n.log.Info("guest layers active on this host's cluster", "layers", layers)
	n.layers = layers
	for vm, p := range n.guestPol {
		running := false
		if d, ok := n.running[vm]; ok {
			running = d
		}
		n.mon.Watch(now, vm, maskLayers(p, layers), running)
	}
}

// setGuest watches vm's guest layers under p (none: stops watching), with its current state
// asked from libvirt.
func (n *Node) setGuest(ctx context.Context, now time.Time, vm engine.VMID, p engine.GuestPolicy) {
	running := false
	if p.Enabled() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, _, err := n.ga.State(sctx, string(vm))
		cancel()
		running = err == nil && st == hypervisor.Running
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.running[vm] = running
	n.mon.Watch(now, vm, maskLayers(p, n.layers), running)
	if p.Enabled() {
		n.guestPol[vm] = p
	} else {
		delete(n.guestPol, vm)
		delete(n.guestAddr, vm)
	}
}

func (n *Node) setRunning(vm engine.VMID, running bool) {
	if _, ok := n.guestPol[vm]; ok {
		n.running[vm] = running
	}
}

// guestEvent tells the monitor what a hypervisor event means for the guest layers. Callers
// hold n.mu.
func (n *Node) guestEvent(ev hypervisor.Event) {
	vm := engine.VMID(ev.Domain)
	switch ev.Kind {
	case hypervisor.Lifecycle:
		switch ev.Lifecycle {
		case hypervisor.EventStarted, hypervisor.EventResumed:
			delete(n.guestAddr, vm)
			n.setRunning(vm, true)
			n.mon.Started(ev.At, vm)
		case hypervisor.EventStopped, hypervisor.EventSuspended, hypervisor.EventCrashed,
			hypervisor.EventPMSuspended, hypervisor.EventShutdown:
			n.setRunning(vm, false)
			n.mon.Stopped(ev.At, vm)
		}
	case hypervisor.Reboot:
		delete(n.guestAddr, vm)
		n.mon.Started(ev.At, vm)
	case hypervisor.AgentLifecycle:
		if ev.AgentState == hypervisor.AgentDisconnected {
			n.mon.AgentGone(ev.At, vm)
		}
	}
}
