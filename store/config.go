package store

// What an administrator says about hosts and clusters (hass host add, hass cluster create),
// written by the leading controller with the engine step that takes it in:
//
//	config/clusters/<name>    a cluster: its admission control setting
//	config/hosts/<name>       a host: its cluster, capacity, spare flag, BMC address and user
//	secrets/bmc/<name>        the password of the host's BMC, apart, so that nothing that
//	                          lists hosts ever reads it (the API never returns it)

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hassproject/hass/vmname"
)

const (
	clusterCfgPrefix = prefix + "config/clusters/"
	hostCfgPrefix    = prefix + "config/hosts/"
	bmcSecretPrefix  = prefix + "secrets/bmc/"
)

func clusterCfgKey(n string) string { return clusterCfgPrefix + n }
func hostCfgKey(n string) string    { return hostCfgPrefix + n }
func bmcSecretKey(n string) string  { return bmcSecretPrefix + n }

// DefaultCluster is the cluster of hosts nobody put in another one.
const DefaultCluster = "default"

// Cluster is a cluster's configuration.
type Cluster struct {
	Name string `json:"name"`
	// TolerateHostFailures is how many host losses the cluster must be able to absorb:
	// a VM whose protection would break that is refused (admission control).
	TolerateHostFailures int       `json:"tolerate_host_failures"`
	Created              time.Time `json:"created"`
	// GuestLayers says which guest layers are active for the VMs of the cluster's hosts:
	// "" or "all" (what each VM's policy turns on), "os", "network", or "none".
	GuestLayers string `json:"guest_layers,omitempty"`
}

// GuestLayerValues are the values Cluster.GuestLayers takes.
var GuestLayerValues = []string{"all", "os", "network", "none"}

// Validate names the first bad field.
func (c Cluster) Validate() error {
	if err := CheckClusterName(c.Name); err != nil {
		return fieldErr("name", "%v", err)
	}
	if c.GuestLayers != "" && !slices.Contains(GuestLayerValues, c.GuestLayers) {
		return fieldErr("guest_layers", "%q: want all, os, network or none", c.GuestLayers)
	}
	if c.TolerateHostFailures < 0 || c.TolerateHostFailures > 100 {
		return fieldErr("tolerate_host_failures", "%d: want 0-100", c.TolerateHostFailures)
	}
	return nil
}

// CheckClusterName applies the host-name rule to cluster names.
func CheckClusterName(n string) error {
	if err := vmname.CheckHost(n); err != nil {
		return fmt.Errorf("cluster name %s", strings.TrimPrefix(err.Error(), "host name "))
	}
	return nil
}

// HostConfig is what an administrator configured for a host. The host takes part once its
// agent runs; until then it is listed as not joined.
type HostConfig struct {
	Name    string `json:"name"`
	Cluster string `json:"cluster"`
	// MemMiB and VCPUs, when not 0, override what the agent reports as the host's capacity
	// for protected VMs.
	MemMiB int `json:"mem_mib,omitempty"`
	VCPUs  int `json:"vcpus,omitempty"`
	// Reserved: a spare host, used only to restart VMs of failed hosts (Masakari's
	// reserved_host).
	Reserved bool `json:"reserved,omitempty"`
	// BMC is the host's IPMI BMC (its password is kept apart), nil when it has none.
	BMC   *BMCConfig `json:"bmc,omitempty"`
	Added time.Time  `json:"added"`
}

// BMCConfig is how to reach a host's BMC, without its password.
type BMCConfig struct {
	Addr   string `json:"addr"`
	User   string `json:"user"`
	Cipher int    `json:"cipher,omitempty"`
}

// Validate names the first bad field.
func (h HostConfig) Validate() error {
	if err := vmname.CheckHost(h.Name); err != nil {
		return fieldErr("name", "%v", err)
	}
	if err := CheckClusterName(h.Cluster); err != nil {
		return fieldErr("cluster", "%v", err)
	}
	if h.MemMiB < 0 {
		return fieldErr("mem_mib", "%d: must be >= 0", h.MemMiB)
	}
	if h.VCPUs < 0 {
		return fieldErr("vcpus", "%d: must be >= 0", h.VCPUs)
	}
	if b := h.BMC; b != nil {
		switch {
		case b.Addr == "" || strings.ContainsAny(b.Addr, " \t\n/"):
			return fieldErr("bmc.addr", "%q: want host or host:port", b.Addr)
		case b.User == "" || strings.ContainsAny(b.User, "\n\x00"):
			return fieldErr("bmc.user", "empty or with a newline")
		case b.Cipher < 0 || b.Cipher > 17:
			return fieldErr("bmc.cipher", "%d: want 0-17", b.Cipher)
		}
	}
	return nil
}

// Config is every cluster and host configuration.
type Config struct {
	Clusters []Cluster
	Hosts    []HostConfig
	Bad      []BadRecord
}

// LoadConfig reads every cluster and host configuration (not the BMC passwords). Records
// that do not decode are returned in Bad, naming key and field.
func (s *Store) LoadConfig(ctx context.Context) (Config, error) {
	var c Config
	var err error
	if c.Clusters, err = loadRecords(ctx, s, clusterCfgPrefix, "clusters", &c.Bad, func(cl *Cluster) (string, error) {
		return clusterCfgKey(cl.Name), cl.Validate()
	}); err != nil {
		return c, err
	}
	c.Hosts, err = loadRecords(ctx, s, hostCfgPrefix, "host configurations", &c.Bad, func(h *HostConfig) (string, error) {
		return hostCfgKey(h.Name), h.Validate()
	})
	return c, err
}

// loadRecords reads the JSON records under prefix, strictly; check gives a record's own key
// and validates it. A record that does not decode, is not valid or sits under another key is
// added to bad, named by key and field, and left out.
func loadRecords[T any](ctx context.Context, s *Store, prefix, what string, bad *[]BadRecord, check func(*T) (string, error)) ([]T, error) {
	kvs, err := s.list(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", what, err)
	}
	var out []T
	for _, kv := range kvs {
		var v T
		key := string(kv.Key)
		if err := strictJSON(kv.Value, &v); err != nil {
			*bad = append(*bad, badRecord(key, fmt.Errorf("decode %s: %w", key, err)))
			continue
		}
		own, err := check(&v)
		if err == nil && own != key {
			err = fieldErr("name", "does not match the key")
		}
		if err != nil {
			*bad = append(*bad, badRecord(key, fmt.Errorf("decode %s: %w", key, err)))
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

// BMCPassword reads the password of host's BMC ("" when none is stored).
func (s *Store) BMCPassword(ctx context.Context, host string) (string, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, bmcSecretKey(host))
	if err != nil {
		return "", fmt.Errorf("store: read the BMC password of %s: %w", host, s.cause(err))
	}
	if len(r.Kvs) == 0 {
		return "", nil
	}
	return string(r.Kvs[0].Value), nil
}

// ConfigChange is a change of configuration recorded with an engine step (Batch.Config).
type ConfigChange struct {
	PutCluster    *Cluster
	DeleteCluster string
	PutHost       *HostConfig
	DeleteHost    string
	// BMCPassword, with PutHost, replaces the stored password when not nil ("" removes it).
	BMCPassword *string
}

// ops turns the change into etcd operations, validating what it writes.
func (c ConfigChange) ops() ([]clientv3.Op, error) {
	var ops []clientv3.Op
	if cl := c.PutCluster; cl != nil {
		if err := cl.Validate(); err != nil {
			return nil, fmt.Errorf("cluster %q: %w", cl.Name, err)
		}
		ops = append(ops, clientv3.OpPut(clusterCfgKey(cl.Name), mustJSON(cl)))
	}
	if n := c.DeleteCluster; n != "" {
		ops = append(ops, clientv3.OpDelete(clusterCfgKey(n)))
	}
	if h := c.PutHost; h != nil {
		if err := h.Validate(); err != nil {
			return nil, fmt.Errorf("host %q: %w", h.Name, err)
		}
		ops = append(ops, clientv3.OpPut(hostCfgKey(h.Name), mustJSON(h)))
		if p := c.BMCPassword; p != nil {
			if *p == "" {
				ops = append(ops, clientv3.OpDelete(bmcSecretKey(h.Name)))
			} else {
				ops = append(ops, clientv3.OpPut(bmcSecretKey(h.Name), *p))
			}
		}
	}
	if n := c.DeleteHost; n != "" {
		// The host leaves hass: its configuration, its agent's record and inventory, and
		// what the controller held about it.
		ops = append(ops, clientv3.OpDelete(hostCfgKey(n)), clientv3.OpDelete(bmcSecretKey(n)),
			clientv3.OpDelete(hostKey(n)), clientv3.OpDelete(inventoryKey(n)), clientv3.OpDelete(hostStateKey(n)))
	}
	return ops, nil
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("store: encode %T: %v", v, err)) // plain structs: cannot fail
	}
	return string(b)
}

// GuestLayersOf reads which guest layers are active on host: its cluster's GuestLayers ("" for
// all), the cluster named by the host's configuration ("default" when it has none).
func (s *Store) GuestLayersOf(ctx context.Context, host string) (string, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, hostCfgKey(host))
	if err != nil {
		return "", fmt.Errorf("store: read host configuration %s: %w", host, s.cause(err))
	}
	cluster := DefaultCluster
	if len(r.Kvs) == 1 {
		var h HostConfig
		if err := strictJSON(r.Kvs[0].Value, &h); err != nil {
			return "", fmt.Errorf("store: decode host configuration %s: %w", host, err)
		}
		if h.Cluster != "" {
			cluster = h.Cluster
		}
	}
	r, err = s.cli.Get(ctx, clusterCfgKey(cluster))
	if err != nil {
		return "", fmt.Errorf("store: read cluster %s: %w", cluster, s.cause(err))
	}
	if len(r.Kvs) == 0 {
		return "", nil
	}
	var c Cluster
	if err := strictJSON(r.Kvs[0].Value, &c); err != nil {
		return "", fmt.Errorf("store: decode cluster %s: %w", cluster, err)
	}
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("store: cluster %s: %w", cluster, err)
	}
	return c.GuestLayers, nil
}
