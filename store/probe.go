package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// probePrefix holds, for each protected VM whose guest layers are watched, its guest policy:
// what every host's agent watches for the VMs that run there. It is a key apart from the VM's
// record so that agents follow a small key that changes only when the policy does, not every
// record the controller writes.
const probePrefix = prefix + "probes/"

func probeKey(vm string) string { return probePrefix + vm }

// GuestPolicy is a VM's guest layers as stored (engine.GuestPolicy; zero durations and counts
// mean the defaults).
type GuestPolicy struct {
	Heartbeat         bool     `json:"heartbeat,omitempty"`
	HeartbeatInterval Duration `json:"heartbeat_interval,omitempty"`
	HeartbeatTimeout  Duration `json:"heartbeat_timeout,omitempty"`
	HeartbeatMisses   int      `json:"heartbeat_misses,omitempty"`
	Probe             string   `json:"probe,omitempty"` // icmp | tcp | ""
	Port              int      `json:"port,omitempty"`
	Address           string   `json:"address,omitempty"`
	ProbeInterval     Duration `json:"probe_interval,omitempty"`
	ProbeTimeout      Duration `json:"probe_timeout,omitempty"`
	ProbeMisses       int      `json:"probe_misses,omitempty"`
	Recheck           Duration `json:"recheck,omitempty"`
}

// Validate names the first bad field (relative to the policy: "probe", "port", ...).
func (g GuestPolicy) Validate() error {
	switch {
	case g.Probe != "" && g.Probe != "icmp" && g.Probe != "tcp":
		return fieldErr("probe", "%q: want icmp, tcp or nothing", g.Probe)
	case g.Port < 0 || g.Port > 65535:
		return fieldErr("port", "%d: want 1-65535", g.Port)
	case g.Address != "" && net.ParseIP(g.Address) == nil:
		return fieldErr("address", "%q: not an IP address", g.Address)
	case g.HeartbeatMisses < 0:
		return fieldErr("heartbeat_misses", "%d: must be >= 0", g.HeartbeatMisses)
	case g.ProbeMisses < 0:
		return fieldErr("probe_misses", "%d: must be >= 0", g.ProbeMisses)
	}
	for _, d := range []struct {
		name string
		d    Duration
	}{{"heartbeat_interval", g.HeartbeatInterval}, {"heartbeat_timeout", g.HeartbeatTimeout},
		{"probe_interval", g.ProbeInterval}, {"probe_timeout", g.ProbeTimeout}, {"recheck", g.Recheck}} {
		if d.d < 0 {
			return fieldErr(d.name, "%s: must be >= 0", time.Duration(d.d))
		}
	}
	return nil
}

// ProbeChange sets (Guest non-nil) or removes (nil) the guest layers watched for VM.
type ProbeChange struct {
	VM    string
	Guest *GuestPolicy
}

func (p ProbeChange) op() (clientv3.Op, error) {
	if err := validName(p.VM); err != nil {
		return clientv3.Op{}, fmt.Errorf("probe: %w", err)
	}
	if p.Guest == nil {
		return clientv3.OpDelete(probeKey(p.VM)), nil
	}
	if err := p.Guest.Validate(); err != nil {
		return clientv3.Op{}, fmt.Errorf("probe %q: %w", p.VM, err)
	}
	data, err := json.Marshal(p.Guest)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("probe %q: %w", p.VM, err)
	}
	return clientv3.OpPut(probeKey(p.VM), string(data)), nil
}

// Probes returns every VM's watched guest layers, and the store revision they were read at.
// A record that cannot be read is left out and named in the error list bad (the rest stand).
func (s *Store) Probes(ctx context.Context) (probes map[string]GuestPolicy, rev int64, bad []error, err error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, probePrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, nil, fmt.Errorf("store: list guest probes: %w", s.cause(err))
	}
	probes = make(map[string]GuestPolicy, len(r.Kvs))
	for _, kv := range r.Kvs {
		name := strings.TrimPrefix(string(kv.Key), probePrefix)
		g, err := decodeProbe(kv.Value)
		if err != nil {
			bad = append(bad, fmt.Errorf("store: guest probe %q: %w", name, err))
			continue
		}
		probes[name] = g
	}
	return probes, r.Header.Revision, bad, nil
}

func decodeProbe(data []byte) (GuestPolicy, error) {
	var g GuestPolicy
	if err := strictJSON(data, &g); err != nil {
		return g, err
	}
	return g, g.Validate()
}

// ProbeEvent is a change of one VM's watched guest layers: Guest is nil when none are.
type ProbeEvent struct {
	VM    string
	Guest *GuestPolicy
	Err   error // the stored policy could not be read (it is treated as none)
}

// WatchProbes follows changes of the guest probes from revision rev on. The channel closes
// when ctx ends or the watch fails.
func (s *Store) WatchProbes(ctx context.Context, rev int64) <-chan ProbeEvent {
	out := make(chan ProbeEvent, 64)
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), probePrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	go func() {
		defer close(out)
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			for _, ev := range resp.Events {
				pe := ProbeEvent{VM: strings.TrimPrefix(string(ev.Kv.Key), probePrefix)}
				if ev.Type == clientv3.EventTypePut {
					g, err := decodeProbe(ev.Kv.Value)
					if err != nil {
						pe.Err = err
					} else {
						pe.Guest = &g
					}
				}
				select {
				case out <- pe:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}
