package store

// The keys of a cluster: what agents write (under agents/, which a leading controller
// watches as one stream), what the controller writes for agents (orders, host states), and
// the election.
//
//	agents/hosts/<host>          a host's record, written by its agent when it starts
//	agents/alive/<host>          the host's liveness, attached to its agent's etcd lease
//	agents/inbox/<host>/<seq>    a report of the agent (observation, snapshot, result...)
//	agents/inventory/<host>      the host's domains and libvirt connection, as last listed
//	defs/<vm>                    a protected VM's domain XML, written by the host that has it
//	orders/<host>/<id>           an order of the leading controller, deleted by the agent
//	hoststates/<host>            what the leading controller holds about a host
//	election/                    the controllers' election (etcd's concurrency.Election)

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hassproject/hass/vmname"
)

const (
	agentsPrefix    = prefix + "agents/"
	hostPrefix      = agentsPrefix + "hosts/"
	alivePrefix     = agentsPrefix + "alive/"
	inboxPrefix     = agentsPrefix + "inbox/"
	inventoryPrefix = agentsPrefix + "inventory/"
	defPrefix       = prefix + "defs/"
	orderPrefix     = prefix + "orders/"
	hostStatePrefix = prefix + "hoststates/"
	// ElectionPrefix is where controllers campaign (concurrency.NewElection).
	ElectionPrefix = prefix + "election/"
)

// AgentsPrefix is the prefix of everything agents write: a leading controller reads it whole
// at takeover, then watches it.
const AgentsPrefix = agentsPrefix

func hostKey(h string) string               { return hostPrefix + h }
func aliveKey(h string) string              { return alivePrefix + h }
func inboxKey(h string, seq uint64) string  { return fmt.Sprintf("%s%s/%020d", inboxPrefix, h, seq) }
func inventoryKey(h string) string          { return inventoryPrefix + h }
func defKey(vm string) string               { return defPrefix + vm }
func orderKey(h string, id uint64) string   { return fmt.Sprintf("%s%s/%020d", orderPrefix, h, id) }
func hostOrderPrefix(h string) string       { return orderPrefix + h + "/" }
func hostStateKey(h string) string          { return hostStatePrefix + h }
func hostInboxPrefix(h string) string       { return inboxPrefix + h + "/" }
func inventoryHost(key string) string       { return strings.TrimPrefix(key, inventoryPrefix) }
func splitInbox(key string) (string, bool)  { return cutHost(strings.TrimPrefix(key, inboxPrefix)) }
func cutHost(rest string) (string, bool)    { h, _, ok := strings.Cut(rest, "/"); return h, ok && h != "" }
func hostOfOrder(key string) (string, bool) { return cutHost(strings.TrimPrefix(key, orderPrefix)) }

// Client is the etcd client, for what etcd's own packages do well (concurrency.Election,
// leases) and the store does not wrap.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Host is a host's record: written by its agent when it starts.
type Host struct {
	Name   string `json:"name"`
	MemMiB int    `json:"mem_mib"`
	// Fencing: the host has a power fence (IPMI) the controller can use.
	Fencing bool `json:"fencing"`
	// Watchdog: its agent pets a watchdog, which resets the host if the agent dies or hangs
	// (so a lost lease means the host fenced itself, one way or the other).
	Watchdog bool `json:"watchdog,omitempty"`
	// Heartbeat is the host's address for heartbeats between agents (host:port, UDP); empty
	// when it sends none (a cluster of one).
	Heartbeat string `json:"heartbeat,omitempty"`
	// VCPUs is how many vCPUs the host offers to VMs (0: not said).
	VCPUs int `json:"vcpus,omitempty"`
	// MigrateURI is the libvirt URI at which other hosts' libvirtds reach this host's for a
	// live migration (peer to peer), e.g. qemu+tcp://10.0.1.5/system; empty: it takes none.
	MigrateURI string    `json:"migrate_uri,omitempty"`
	Started    time.Time `json:"started"`
	Version    string    `json:"version,omitempty"`
	// Left: its agent stopped cleanly (and gave its lease back). The host is not lost: its
	// VMs may well run on, unwatched, until an agent runs there again. It is not fenced and
	// its VMs are not started elsewhere.
	Left bool `json:"left,omitempty"`
	// Members is how many hosts its agent counts as the cluster's members for its majority
	// rule (itself included): the hosts it had read from the store, which only grows (0: not
	// said, an agent before this field). An agent that counts fewer members than the
	// controller may hold back its self-fence where the controller's count says it fences
	// (see engine.AddHost.Members).
	Members int `json:"members,omitempty"`
}

// Validate names the first bad field.
func (h Host) Validate() error {
	if err := vmname.CheckHost(h.Name); err != nil {
		return fieldErr("name", "%v", err)
	}
	if h.MemMiB < 0 {
		return fieldErr("mem_mib", "%d: must be >= 0", h.MemMiB)
	}
	if h.VCPUs < 0 {
		return fieldErr("vcpus", "%d: must be >= 0", h.VCPUs)
	}
	if h.Members < 0 {
		return fieldErr("members", "%d: must be >= 0", h.Members)
	}
	if u := h.MigrateURI; u != "" && (!strings.Contains(u, "://") || strings.ContainsAny(u, " \t\n")) {
		return fieldErr("migrate_uri", "%q: not a libvirt URI", u)
	}
	return nil
}

// Host reads one host's record (ok false when there is none).
func (s *Store) Host(ctx context.Context, name string) (h Host, ok bool, err error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, hostKey(name))
	if err != nil {
		return h, false, fmt.Errorf("store: read host %s: %w", name, s.cause(err))
	}
	if len(r.Kvs) == 0 {
		return h, false, nil
	}
	h, err = DecodeHost(hostKey(name), r.Kvs[0].Value)
	return h, err == nil, err
}

// PutHost writes a host's record.
func (s *Store) PutHost(ctx context.Context, h Host) error {
	if err := h.Validate(); err != nil {
		return fmt.Errorf("store: put host: %w", err)
	}
	return s.putJSON(ctx, hostKey(h.Name), h, "put host "+h.Name)
}

// DecodeHost decodes a stored host record, naming the first bad field.
func DecodeHost(key string, value []byte) (Host, error) {
	var h Host
	if err := strictJSON(value, &h); err != nil {
		return h, fmt.Errorf("decode %s: %w", key, err)
	}
	if err := h.Validate(); err != nil {
		return h, fmt.Errorf("decode %s: %w", key, err)
	}
	if key != hostKey(h.Name) {
		return h, fmt.Errorf("decode %s: %w", key, fieldErr("name", "%q: does not match the key", h.Name))
	}
	return h, nil
}

// Hosts lists the host records that can be read, and apart from them those that cannot.
func (s *Store) Hosts(ctx context.Context) (hs []Host, bad []BadRecord, err error) {
	kvs, err := s.list(ctx, hostPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("store: list hosts: %w", err)
	}
	for _, kv := range kvs {
		h, err := DecodeHost(string(kv.Key), kv.Value)
		if err != nil {
			bad = append(bad, badRecord(string(kv.Key), err))
			continue
		}
		hs = append(hs, h)
	}
	return hs, bad, nil
}

// Alive is the value of a host's liveness key, which lives as long as its agent's lease.
type Alive struct {
	PID     int       `json:"pid"`
	Since   time.Time `json:"since"` // when this lease was granted
	TTL     int64     `json:"ttl_s"`
	Libvirt string    `json:"libvirt"` // "connected", or why not
}

// LeaseID names a lease in the store (etcd's), for a caller that keeps one across processes.
type LeaseID = clientv3.LeaseID

// Lease is an agent's etcd lease with its liveness key.
type Lease struct {
	ID  LeaseID
	TTL time.Duration
}

// GrantAlive grants a new lease of ttl and attaches host's liveness key to it.
func (s *Store) GrantAlive(ctx context.Context, host string, ttl time.Duration, a Alive) (Lease, error) {
	if err := s.writable(); err != nil {
		return Lease{}, fmt.Errorf("store: lease for %s: %w", host, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	secs := int64((ttl + time.Second - 1) / time.Second)
	g, err := s.cli.Grant(ctx, secs)
	if err != nil {
		return Lease{}, fmt.Errorf("store: lease for %s: %w", host, s.cause(err))
	}
	a.TTL = secs
	data, _ := json.Marshal(a)
	if _, err := s.cli.Put(ctx, aliveKey(host), string(data), clientv3.WithLease(g.ID)); err != nil {
		_, _ = s.cli.Revoke(context.WithoutCancel(ctx), g.ID)
		return Lease{}, fmt.Errorf("store: liveness key of %s: %w", host, s.cause(err))
	}
	return Lease{ID: g.ID, TTL: time.Duration(secs) * time.Second}, nil
}

// ErrLeaseLost: the lease expired (or was revoked); a new one must be granted.
var ErrLeaseLost = errors.New("lease expired")

// KeepAlive renews a lease once. ErrLeaseLost when it no longer exists.
func (s *Store) KeepAlive(ctx context.Context, l Lease) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.KeepAliveOnce(ctx, l.ID)
	if err != nil {
		if strings.Contains(err.Error(), "requested lease not found") {
			return fmt.Errorf("store: renew lease: %w", ErrLeaseLost)
		}
		return fmt.Errorf("store: renew lease: %w", s.cause(err))
	}
	if r.TTL <= 0 {
		return fmt.Errorf("store: renew lease: %w", ErrLeaseLost)
	}
	return nil
}

// UpdateAlive rewrites the liveness key's value under the same lease.
func (s *Store) UpdateAlive(ctx context.Context, host string, l Lease, a Alive) error {
	a.TTL = int64(l.TTL / time.Second)
	return s.putJSON(ctx, aliveKey(host), a, "liveness of "+host, clientv3.WithLease(l.ID))
}

// Revoke ends a lease at once (an agent that stops cleanly: its host is not lost, it left).
func (s *Store) Revoke(ctx context.Context, l Lease) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.cli.Revoke(ctx, l.ID)
	return err
}

// AliveHosts returns the liveness value of every host that holds a lease.
func (s *Store) AliveHosts(ctx context.Context) (map[string]Alive, error) {
	kvs, err := s.list(ctx, alivePrefix)
	if err != nil {
		return nil, fmt.Errorf("store: list live hosts: %w", err)
	}
	out := map[string]Alive{}
	for _, kv := range kvs {
		var a Alive
		_ = json.Unmarshal(kv.Value, &a) // the key's existence is what counts
		out[strings.TrimPrefix(string(kv.Key), alivePrefix)] = a
	}
	return out, nil
}

// PutReport writes one report of host's agent into its inbox, and deletes the order it
// answers (if any) in the same transaction.
func (s *Store) PutReport(ctx context.Context, host string, seq uint64, data []byte, doneOrder uint64) error {
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: report of %s: %w", host, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	ops := []clientv3.Op{clientv3.OpPut(inboxKey(host, seq), string(data))}
	if doneOrder != 0 {
		ops = append(ops, clientv3.OpDelete(orderKey(host, doneOrder)))
	}
	if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("store: report of %s: %w", host, s.cause(err))
	}
	return nil
}

// DeleteOrder deletes an order an agent dropped.
func (s *Store) DeleteOrder(ctx context.Context, host string, id uint64) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.cli.Delete(ctx, orderKey(host, id))
	return err
}

// Inventory is a host's domains as its agent last listed them.
type Inventory struct {
	Host    string      `json:"host"`
	Seq     uint64      `json:"seq"` // the agent's stamp taken before the listing
	At      time.Time   `json:"at"`
	Libvirt string      `json:"libvirt"` // "connected", or why not
	Domains []DomainRow `json:"domains"`
	// Hears names the other members whose heartbeats the agent heard within its peer timeout
	// when it listed (sorted). A member missing here cannot help it hold back its
	// self-fence when the control plane is lost: a heartbeat network that does not reach
	// every host shows here before it fences one.
	Hears []string `json:"hears,omitempty"`
}

// DomainRow is one domain in libvirt's numeric vocabulary.
type DomainRow struct {
	Name   string `json:"name"`
	UUID   string `json:"uuid,omitempty"`
	State  int    `json:"state"`
	Reason int    `json:"reason"`
	MemKiB uint64 `json:"mem_kib"`
	VCPUs  int    `json:"vcpus,omitempty"`
}

// PutInventory writes a host's inventory.
func (s *Store) PutInventory(ctx context.Context, inv Inventory) error {
	if err := vmname.CheckHost(inv.Host); err != nil {
		return fmt.Errorf("store: put inventory: %w", err)
	}
	return s.putJSON(ctx, inventoryKey(inv.Host), inv, "inventory of "+inv.Host)
}

// Inventories returns every host's inventory that can be read.
func (s *Store) Inventories(ctx context.Context) (map[string]Inventory, error) {
	kvs, err := s.list(ctx, inventoryPrefix)
	if err != nil {
		return nil, fmt.Errorf("store: list inventories: %w", err)
	}
	out := map[string]Inventory{}
	for _, kv := range kvs {
		inv, err := DecodeInventory(string(kv.Key), kv.Value)
		if err != nil {
			s.log.Warn("store: an inventory cannot be read", "key", string(kv.Key), "err", err)
			continue
		}
		out[inv.Host] = inv
	}
	return out, nil
}

// DecodeInventory decodes a stored inventory.
func DecodeInventory(key string, value []byte) (Inventory, error) {
	var inv Inventory
	if err := strictJSON(value, &inv); err != nil {
		return inv, fmt.Errorf("decode %s: %w", key, err)
	}
	if inventoryHost(key) != inv.Host {
		return inv, fmt.Errorf("decode %s: %w", key, fieldErr("host", "%q: does not match the key", inv.Host))
	}
	for _, h := range inv.Hears {
		if err := vmname.CheckHost(h); err != nil {
			return inv, fmt.Errorf("decode %s: %w", key, fieldErr("hears", "%v", err))
		}
	}
	return inv, nil
}

// PutDefinition stores a VM's domain XML, for starting it on another host.
func (s *Store) PutDefinition(ctx context.Context, vm, xml string) error {
	if err := validName(vm); err != nil {
		return fmt.Errorf("store: put definition: %w", err)
	}
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: put definition of %s: %w", vm, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if _, err := s.cli.Put(ctx, defKey(vm), xml); err != nil {
		return fmt.Errorf("store: put definition of %s: %w", vm, s.cause(err))
	}
	return nil
}

// Definition returns a VM's stored domain XML; ErrNotFound if there is none.
func (s *Store) Definition(ctx context.Context, vm string) (string, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, defKey(vm))
	if err != nil {
		return "", fmt.Errorf("store: definition of %s: %w", vm, s.cause(err))
	}
	if len(r.Kvs) == 0 {
		return "", fmt.Errorf("store: definition of %s: %w", vm, ErrNotFound)
	}
	return string(r.Kvs[0].Value), nil
}

// HostState is what the leading controller holds about a host (engine.HostState, stored).
type HostState struct {
	Host     string    `json:"host"`
	MemMiB   int       `json:"mem_mib"`
	VCPUs    int       `json:"vcpus,omitempty"`
	Fencing  bool      `json:"fencing"`
	Cluster  string    `json:"cluster,omitempty"`
	Reserved bool      `json:"reserved,omitempty"`
	State    string    `json:"state"` // up, suspect, fenced
	LostAt   time.Time `json:"lost_at"`
	LastSeen time.Time `json:"last_seen"`
	// Maintenance (and whether its VMs were to be migrated away) survives a new leader.
	Maintenance        bool `json:"maintenance,omitempty"`
	MaintenanceMigrate bool `json:"maintenance_migrate,omitempty"`
	// PowerOff: its BMC said it is off. Lease is the etcd lease its agent last held;
	// FencedLease the one it held when it was fenced (a new leader reading that lease's
	// key, not yet expired, does not take the host for up).
	PowerOff bool `json:"power_off,omitempty"`
	// PoweredOn: fenced, and its BMC said it is on again since: a VM may land there until
	// its agent lists.
	PoweredOn   bool  `json:"powered_on,omitempty"`
	Lease       int64 `json:"lease,omitempty"`
	FencedLease int64 `json:"fenced_lease,omitempty"`
}

// Validate names the first bad field.
func (h HostState) Validate() error {
	if err := vmname.CheckHost(h.Host); err != nil {
		return fieldErr("host", "%v", err)
	}
	switch h.State {
	case "up", "suspect", "fenced":
	default:
		return fieldErr("state", "%q: want up, suspect or fenced", h.State)
	}
	if h.MemMiB < 0 {
		return fieldErr("mem_mib", "%d: must be >= 0", h.MemMiB)
	}
	if h.PoweredOn && h.State != "fenced" {
		return fieldErr("powered_on", "set for a %s host", h.State)
	}
	return nil
}

// HostStates lists the stored host states that can be read, and those that cannot.
func (s *Store) HostStates(ctx context.Context) (hs []HostState, bad []BadRecord, err error) {
	kvs, err := s.list(ctx, hostStatePrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("store: list host states: %w", err)
	}
	for _, kv := range kvs {
		var h HostState
		key := string(kv.Key)
		if err := strictJSON(kv.Value, &h); err != nil {
			bad = append(bad, badRecord(key, fmt.Errorf("decode %s: %w", key, err)))
			continue
		}
		if err := h.Validate(); err != nil {
			bad = append(bad, badRecord(key, fmt.Errorf("decode %s: %w", key, err)))
			continue
		}
		if key != hostStateKey(h.Host) {
			bad = append(bad, badRecord(key, fmt.Errorf("decode %s: %w", key, fieldErr("host", "%q: does not match the key", h.Host))))
			continue
		}
		hs = append(hs, h)
	}
	return hs, bad, nil
}

// Orders lists host's pending orders, by ID, with the store revision they were read at
// (to watch from the next one).
func (s *Store) Orders(ctx context.Context, host string) ([]Action, int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, hostOrderPrefix(host), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("store: orders of %s: %w", host, s.cause(err))
	}
	var out []Action
	for _, kv := range r.Kvs {
		a, err := DecodeOrder(string(kv.Key), kv.Value)
		if err != nil {
			s.log.Error("store: an order cannot be read: deleted, not carried out", "key", string(kv.Key), "err", err)
			_, _ = s.cli.Delete(ctx, string(kv.Key))
			continue
		}
		a.Rev = kv.ModRevision
		out = append(out, a)
	}
	return out, r.Header.Revision, nil
}

// WatchOrders watches host's orders from revision rev on: each new order is sent on the
// channel, which is closed when ctx ends or the watch fails (the caller lists again).
func (s *Store) WatchOrders(ctx context.Context, host string, rev int64) <-chan Action {
	out := make(chan Action, 64)
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), hostOrderPrefix(host), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithFilterDelete())
	go func() {
		defer close(out)
		for resp := range wch {
			if resp.Err() != nil {
				s.log.Warn("store: order watch ended", "host", host, "err", resp.Err())
				return
			}
			for _, ev := range resp.Events {
				if !ev.IsCreate() {
					continue
				}
				a, err := DecodeOrder(string(ev.Kv.Key), ev.Kv.Value)
				if err != nil {
					s.log.Error("store: an order cannot be read: not carried out", "key", string(ev.Kv.Key), "err", err)
					continue
				}
				a.Rev = ev.Kv.ModRevision
				select {
				case out <- a:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// DecodeOrder decodes an order, checking it against its key.
func DecodeOrder(key string, value []byte) (Action, error) {
	var a Action
	if err := strictJSON(value, &a); err != nil {
		return a, fmt.Errorf("decode %s: %w", key, err)
	}
	if key != orderKey(a.Host, a.ID) {
		return a, fmt.Errorf("decode %s: %w", key, fieldErr("id", "%d on host %q: does not match the key", a.ID, a.Host))
	}
	return a, nil
}

// Token is what an agent checks an order against before carrying it out: the VM's intent
// generation as recorded, and the leading controller's term (0: nobody leads).
type Token struct {
	Gen       uint64
	Protected bool
	Term      int64
}

// OrderToken reads vm's recorded generation and the current leader's term in one read.
func (s *Store) OrderToken(ctx context.Context, vm string) (Token, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(vmKey(vm)),
		clientv3.OpGet(ElectionPrefix, clientv3.WithFirstCreate()...),
	).Commit()
	if err != nil {
		return Token{}, fmt.Errorf("store: order token of %s: %w", vm, s.cause(err))
	}
	var t Token
	if kvs := r.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		v, err := decodeVM(string(kvs[0].Key), kvs[0].Value)
		if err == nil {
			t.Gen, t.Protected = v.Gen, true
		}
	}
	if kvs := r.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		t.Term = kvs[0].CreateRevision
	}
	return t, nil
}

// Leader returns the leading controller's election value and term; term 0 when none leads.
func (s *Store) Leader(ctx context.Context) (value string, term int64, err error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, ElectionPrefix, clientv3.WithFirstCreate()...)
	if err != nil {
		return "", 0, fmt.Errorf("store: leader: %w", s.cause(err))
	}
	if len(r.Kvs) == 0 {
		return "", 0, nil
	}
	return string(r.Kvs[0].Value), r.Kvs[0].CreateRevision, nil
}

// AgentEvent is one change under agents/ as a leading controller sees it.
type AgentEvent struct {
	Key    string
	Value  []byte
	Delete bool
	Rev    int64
	Lease  int64 // the etcd lease the key is attached to (an alive key's: its agent's lease)
}

// IsInbox, IsAlive, IsHost and IsInventory tell what an AgentEvent's key is, with the host.
func (e AgentEvent) IsInbox() (string, bool) {
	if !strings.HasPrefix(e.Key, inboxPrefix) {
		return "", false
	}
	return splitInbox(e.Key)
}

// IsAlive: see IsInbox.
func (e AgentEvent) IsAlive() (string, bool) { return trimmed(e.Key, alivePrefix) }

// IsHost: see IsInbox.
func (e AgentEvent) IsHost() (string, bool) { return trimmed(e.Key, hostPrefix) }

// IsInventory: see IsInbox.
func (e AgentEvent) IsInventory() (string, bool) { return trimmed(e.Key, inventoryPrefix) }

func trimmed(key, p string) (string, bool) {
	if !strings.HasPrefix(key, p) {
		return "", false
	}
	h := strings.TrimPrefix(key, p)
	return h, h != "" && !strings.Contains(h, "/")
}

// AgentState reads everything agents wrote, in revision order (inbox reports as they were
// written), and the revision it was read at: a leader's takeover, before it watches.
func (s *Store) AgentState(ctx context.Context) ([]AgentEvent, int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, agentsPrefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("store: read the agents' state: %w", s.cause(err))
	}
	out := make([]AgentEvent, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		out = append(out, AgentEvent{Key: string(kv.Key), Value: kv.Value, Rev: kv.ModRevision, Lease: kv.Lease})
	}
	return out, r.Header.Revision, nil
}

// WatchAgents watches everything agents write from revision rev on. The channel is closed
// when ctx ends or the watch fails (compacted, or no etcd leader): the caller then takes
// over again from AgentState.
func (s *Store) WatchAgents(ctx context.Context, rev int64) <-chan AgentEvent {
	out := make(chan AgentEvent, 256)
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), agentsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	go func() {
		defer close(out)
		for resp := range wch {
			if err := resp.Err(); err != nil {
				s.log.Warn("store: watch of the agents ended", "err", err)
				return
			}
			for _, ev := range resp.Events {
				e := AgentEvent{Key: string(ev.Kv.Key), Value: ev.Kv.Value, Delete: ev.Type == clientv3.EventTypeDelete, Rev: ev.Kv.ModRevision, Lease: ev.Kv.Lease}
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// list gets every key under p, sorted by key.
func (s *Store) list(ctx context.Context, p string) ([]*kvPair, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, s.cause(err)
	}
	out := make([]*kvPair, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		out = append(out, &kvPair{Key: kv.Key, Value: kv.Value})
	}
	return out, nil
}

type kvPair struct{ Key, Value []byte }

func (s *Store) putJSON(ctx context.Context, key string, v any, what string, opts ...clientv3.OpOption) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if _, err := s.cli.Put(ctx, key, string(data), opts...); err != nil {
		return fmt.Errorf("store: %s: %w", what, s.cause(err))
	}
	return nil
}

// strictJSON decodes one JSON value into v, refusing unknown fields and trailing data.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("not a JSON record: %w", err)
		}
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON record")
	}
	return nil
}

// VMChange is a protected VM's record written (Deleted false) or deleted.
type VMChange struct {
	Name    string
	Deleted bool
}

// ProtectedNames lists the protected VMs' names and the revision read at.
func (s *Store) ProtectedNames(ctx context.Context) ([]string, int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, vmPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, 0, fmt.Errorf("store: list protected VMs: %w", s.cause(err))
	}
	out := make([]string, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), vmPrefix))
	}
	return out, r.Header.Revision, nil
}

// WatchVMs follows protected VMs being added and removed from revision rev on. The channel
// closes when ctx ends or the watch fails.
func (s *Store) WatchVMs(ctx context.Context, rev int64) <-chan VMChange {
	out := make(chan VMChange, 256)
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), vmPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithKeysOnly())
	go func() {
		defer close(out)
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			for _, ev := range resp.Events {
				c := VMChange{Name: strings.TrimPrefix(string(ev.Kv.Key), vmPrefix), Deleted: ev.Type == clientv3.EventTypeDelete}
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// Members lists etcd's members as "name url" (the first client URL).
func (s *Store) Members(ctx context.Context) ([]string, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: list members: %w", s.cause(err))
	}
	out := make([]string, 0, len(r.Members))
	for _, m := range r.Members {
		u := ""
		if len(m.ClientURLs) > 0 {
			u = m.ClientURLs[0]
		}
		name := m.Name
		if name == "" {
			name = "(joining)"
		}
		out = append(out, strings.TrimSpace(name+" "+u))
	}
	return out, nil
}

const resyncKey = prefix + "resync"

// RequestResync asks every agent for a complete domain list (a new leader's first act):
// the key's value is the leader's term.
func (s *Store) RequestResync(ctx context.Context, term int64) error {
	return s.putJSON(ctx, resyncKey, term, "request a resync")
}

// WatchResync sends on the channel each time a resync is requested; it closes when ctx ends
// or the watch fails.
func (s *Store) WatchResync(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), resyncKey)
	go func() {
		defer close(out)
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			select {
			case out <- struct{}{}:
			default: // one is pending already
			}
		}
	}()
	return out
}
