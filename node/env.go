package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor"
)

// env is the real world around a host's agent: etcd, libvirt, UDP to the peers, the
// watchdog. Its methods run with n.mu held, and never wait on the store or the network.
type env struct{ n *Node }

var _ agent.Env = env{}

// Report queues the report for the sender (written to this host's inbox in order). A
// result also deletes the order it answers.
func (e env) Report(in engine.Input) {
	var order uint64
	if r, ok := in.(engine.ActionResult); ok {
		order = r.ID
	}
	e.n.queue(in, order)
}

// Current compares the order's fencing token with the store's, read just before.
func (e env) Current(a engine.Action) bool {
	t := e.n.token
	return t != nil && t.Protected && t.Gen == a.Gen && t.Term != 0 && uint64(t.Term) == a.Term
}

// Execute takes the order; execute carries it out once the lock is released.
func (e env) Execute(a engine.Action, done func(time.Time, agent.Outcome)) {
	e.n.exec = &pendingExec{a: a, done: done}
}

// Protected lists the VMs the store says are protected (a self-fence destroys those that
// run here).
func (e env) Protected() []engine.VMID {
	out := make([]engine.VMID, 0, len(e.n.prot))
	for v := range e.n.prot {
		out = append(out, v)
	}
	return out
}

// Destroy kills a domain at once, for a self-fence. It must not wait long: the lease runs.
// A domain libvirt says is not running (or not defined) was not stopped by it; any other
// error may have stopped it.
func (e env) Destroy(vm engine.VMID) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := e.n.drv.Destroy(ctx, string(vm))
	if err != nil {
		e.n.log.Debug("self-fence: destroy", "vm", vm, "err", err)
	}
	return !errors.Is(err, hypervisor.ErrInvalidState) && !errors.Is(err, hypervisor.ErrNotFound)
}

// Members lists the cluster's hosts, as last read from the store.
func (e env) Members() []engine.HostID { return e.n.members }

// Heard returns the last heartbeat from peer.
func (e env) Heard(peer engine.HostID) (agent.Heartbeat, time.Time, bool) {
	h, ok := e.n.heard[peer]
	return h.hb, h.at, ok
}

// PetWatchdog writes to the watchdog device.
func (e env) PetWatchdog() {
	if e.n.wd != nil {
		if _, err := e.n.wd.Write([]byte{'1'}); err != nil {
			e.n.log.Error("cannot pet the watchdog", "err", err)
		}
	}
}

// SendHeartbeat sends this host's heartbeat to every peer over UDP.
func (e env) SendHeartbeat(hb agent.Heartbeat) {
	if e.n.udp == nil {
		return
	}
	data, _ := json.Marshal(wireHeartbeat{From: string(hb.From), At: hb.At, LeaseOK: hb.LeaseOK, Fenced: hb.Fenced})
	for _, addr := range e.n.peers {
		if ua, err := net.ResolveUDPAddr("udp", addr); err == nil {
			_, _ = e.n.udp.WriteToUDP(data, ua)
		}
	}
}

// Log writes an agent line.
func (e env) Log(format string, args ...any) {
	e.n.log.Info(fmt.Sprintf(format, args...))
}

// Remember has the keeper write the agent's state file (state.go) in the background.
func (e env) Remember(p agent.Past) { e.n.remember(p) }
