package wire

import (
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/store"
)

// GuestToStore is a guest policy as stored: nil when no guest layer is on.
func GuestToStore(g engine.GuestPolicy) *store.GuestPolicy {
	if !g.Enabled() {
		return nil
	}
	return &store.GuestPolicy{Heartbeat: g.Heartbeat, HeartbeatInterval: store.Duration(g.HeartbeatInterval),
		HeartbeatTimeout: store.Duration(g.HeartbeatTimeout), HeartbeatMisses: g.HeartbeatMisses,
		Probe: g.Probe, Port: g.Port, Address: g.Address, ProbeInterval: store.Duration(g.ProbeInterval),
		ProbeTimeout: store.Duration(g.ProbeTimeout), ProbeMisses: g.ProbeMisses, Recheck: store.Duration(g.Recheck)}
}

// GuestFromStore is a stored guest policy for the engine (and the agents' monitors).
func GuestFromStore(g *store.GuestPolicy) engine.GuestPolicy {
	if g == nil {
		return engine.GuestPolicy{}
	}
	return engine.GuestPolicy{Heartbeat: g.Heartbeat, HeartbeatInterval: time.Duration(g.HeartbeatInterval),
		HeartbeatTimeout: time.Duration(g.HeartbeatTimeout), HeartbeatMisses: g.HeartbeatMisses,
		Probe: g.Probe, Port: g.Port, Address: g.Address, ProbeInterval: time.Duration(g.ProbeInterval),
		ProbeTimeout: time.Duration(g.ProbeTimeout), ProbeMisses: g.ProbeMisses, Recheck: time.Duration(g.Recheck)}
}
