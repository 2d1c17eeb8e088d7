package controller

// Clusters and hosts as an administrator configures them (api.HostService): each change is
// taken in by the engine (SetCluster, AddHost, RemoveHost, Maintenance) and recorded with
// that step, in its guarded transaction; a change the engine refuses is not stored.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/store"
)

var _ api.HostService = (*Controller)(nil)

// hostInput is what the engine is told of h: its agent's record, overridden by what an
// administrator configured. Callers hold c.mu.
func (c *Controller) hostInput(h engine.HostID) engine.AddHost {
	r := c.hosts[h]
	in := engine.AddHost{Host: h, MemMiB: r.MemMiB, VCPUs: r.VCPUs, Cluster: store.DefaultCluster, Members: r.Members}
	if hc, ok := c.hostCfg[h]; ok {
		if hc.MemMiB > 0 {
			in.MemMiB = hc.MemMiB
		}
		if hc.VCPUs > 0 {
			in.VCPUs = hc.VCPUs
		}
		in.Cluster, in.Reserved, in.Fencing = hc.Cluster, hc.Reserved, hc.BMC != nil
	}
	return in
}

// fenceable: h has a fence, its BMC or a watchdog its agent pets. Callers hold c.mu.
func (c *Controller) fenceable(h engine.HostID) bool {
	if hc, ok := c.hostCfg[h]; ok && hc.BMC != nil {
		return true
	}
	return c.hosts[h].Watchdog
}

// inMaintenance: the engine holds h in maintenance. Callers hold c.mu.
func (c *Controller) inMaintenance(h engine.HostID) bool {
	hs, ok := c.eng.Host(h)
	return ok && hs.Maintenance
}

// loadConfig reads the clusters and hosts configured. Callers hold c.mu.
func (c *Controller) loadConfig(ctx context.Context) ([]engine.ClusterState, []engine.Record, error) {
	cfg, err := c.st.LoadConfig(ctx)
	if err != nil {
		return nil, nil, err
	}
	c.hostCfg, c.clusterCfg = map[engine.HostID]store.HostConfig{}, map[string]store.Cluster{}
	var bad []engine.Record
	for _, b := range cfg.Bad {
		c.log.Error("a configuration record cannot be read: ignored", "key", b.Key, "err", b.Err)
		bad = append(bad, engine.Record{At: time.Now(), Type: engine.RecAlert, Msg: fmt.Sprintf("configuration record %s cannot be read, ignored: %v", b.Key, b.Err)})
	}
	var clusters []engine.ClusterState
	for _, cl := range cfg.Clusters {
		c.clusterCfg[cl.Name] = cl
		clusters = append(clusters, engine.ClusterState{Name: cl.Name, TolerateHostFailures: cl.TolerateHostFailures})
	}
	for _, h := range cfg.Hosts {
		if _, ok := c.clusterCfg[h.Cluster]; !ok && h.Cluster != store.DefaultCluster {
			c.log.Error("a host's cluster does not exist: the host is put in the default cluster", "host", h.Name, "cluster", h.Cluster)
			h.Cluster = store.DefaultCluster
		}
		c.hostCfg[engine.HostID(h.Name)] = h
	}
	return clusters, bad, nil
}

// recordConfig steps the engine with in (nil: no engine change) and records change with
// it. The engine's refusal is returned as a conflict, and nothing is stored then. Callers
// hold c.mu.
func (c *Controller) recordConfig(ctx context.Context, in engine.Input, change store.ConfigChange, msg string, host engine.HostID) error {
	if in == nil {
		ev := toStoreEvent(engine.Record{At: time.Now(), Type: engine.RecHost, Host: host, Msg: msg})
		if _, err := c.st.Record(ctx, store.Batch{Guard: c.guard, Config: []store.ConfigChange{change}, Events: []store.Event{ev}}); err != nil {
			c.recordError(err)
			return api.Unavailable("the change could not be recorded: %v", err)
		}
		return nil
	}
	c.pendingConfig = &change
	c.pendingNote = &engine.Record{At: time.Now(), Type: engine.RecHost, Host: host, Msg: msg}
	out := c.stepLocked(ctx, in)
	c.pendingConfig, c.pendingNote = nil, nil
	if out.Err != nil {
		return api.Conflict("%v", out.Err)
	}
	if c.recordErr != nil {
		return api.Unavailable("the change could not be recorded: %v", c.recordErr)
	}
	return nil
}

// Clusters implements api.HostService.
func (c *Controller) Clusters(ctx context.Context) ([]api.Cluster, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return nil, c.unavailable(ctx)
	}
	count := map[string]int{}
	for h := range c.hostNames() {
		count[c.clusterOf(h)]++
	}
	var out []api.Cluster
	for _, cl := range c.eng.Clusters() {
		out = append(out, api.Cluster{Name: cl.Name, TolerateHostFailures: cl.TolerateHostFailures, Hosts: count[cl.Name],
			GuestLayers: guestLayers(c.clusterCfg[cl.Name])})
	}
	return out, nil
}

// hostNames is every host hass knows: joined (an agent record) or configured. Callers
// hold c.mu.
func (c *Controller) hostNames() map[engine.HostID]bool {
	out := map[engine.HostID]bool{}
	for h := range c.hosts {
		out[h] = true
	}
	for h := range c.hostCfg {
		out[h] = true
	}
	return out
}

func (c *Controller) clusterOf(h engine.HostID) string {
	if hc, ok := c.hostCfg[h]; ok {
		return hc.Cluster
	}
	return store.DefaultCluster
}

// PutCluster implements api.HostService.
func (c *Controller) PutCluster(ctx context.Context, name string, req api.ClusterRequest) (api.Cluster, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return api.Cluster{}, c.unavailable(ctx)
	}
	cl, ok := c.clusterCfg[name]
	if !ok {
		cl = store.Cluster{Name: name, Created: time.Now().UTC()}
	}
	if req.TolerateHostFailures != nil {
		cl.TolerateHostFailures = *req.TolerateHostFailures
	}
	if req.GuestLayers != "" {
		cl.GuestLayers = req.GuestLayers
		if cl.GuestLayers == "all" {
			cl.GuestLayers = ""
		}
	}
	verb := "updated"
	if !ok {
		verb = "created"
	}
	msg := fmt.Sprintf("cluster %s %s: tolerates %d host failures, guest layers %s", name, verb, cl.TolerateHostFailures, guestLayers(cl))
	if err := c.recordConfig(ctx, engine.SetCluster{Name: name, TolerateHostFailures: cl.TolerateHostFailures},
		store.ConfigChange{PutCluster: &cl}, msg, ""); err != nil {
		return api.Cluster{}, err
	}
	c.clusterCfg[name] = cl
	n := 0
	for h := range c.hostNames() {
		if c.clusterOf(h) == name {
			n++
		}
	}
	return api.Cluster{Name: name, TolerateHostFailures: cl.TolerateHostFailures, Hosts: n, GuestLayers: guestLayers(cl)}, nil
}

// guestLayers is a cluster's active guest layers as the API shows them.
func guestLayers(cl store.Cluster) string {
	if cl.GuestLayers == "" {
		return "all"
	}
	return cl.GuestLayers
}

// DeleteCluster implements api.HostService.
func (c *Controller) DeleteCluster(ctx context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return c.unavailable(ctx)
	}
	if name == store.DefaultCluster {
		return api.Conflict("the default cluster cannot be deleted")
	}
	if _, ok := c.clusterCfg[name]; !ok {
		return api.NotFound("no cluster %q", name)
	}
	var in []string
	for h := range c.hostNames() {
		if c.clusterOf(h) == name {
			in = append(in, string(h))
		}
	}
	if len(in) > 0 {
		slices.Sort(in)
		return api.Conflict("cluster %s has hosts (%s): move or remove them first", name, strings.Join(in, ", "))
	}
	if err := c.recordConfig(ctx, engine.DeleteCluster{Name: name}, store.ConfigChange{DeleteCluster: name},
		"cluster "+name+" deleted", ""); err != nil {
		return err
	}
	delete(c.clusterCfg, name)
	return nil
}

// PutHost implements api.HostService.
func (c *Controller) PutHost(ctx context.Context, name string, req api.HostRequest) (api.Host, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return api.Host{}, c.unavailable(ctx)
	}
	h := engine.HostID(name)
	hc, existed := c.hostCfg[h]
	if !existed {
		hc = store.HostConfig{Name: name, Cluster: store.DefaultCluster, Added: time.Now().UTC()}
	}
	if req.Cluster != "" {
		if _, ok := c.clusterCfg[req.Cluster]; !ok && req.Cluster != store.DefaultCluster {
			return api.Host{}, api.Conflict("cluster %q does not exist (hass cluster create %s)", req.Cluster, req.Cluster)
		}
		hc.Cluster = req.Cluster
	}
	if req.MemMiB != nil {
		hc.MemMiB = *req.MemMiB
	}
	if req.VCPUs != nil {
		hc.VCPUs = *req.VCPUs
	}
	if req.Reserved != nil {
		hc.Reserved = *req.Reserved
	}
	var pw *string
	if b := req.BMC; b != nil {
		hc.BMC = &store.BMCConfig{Addr: b.Addr, User: b.User, Cipher: b.Cipher}
		pw = &b.Password
	}
	var what []string
	what = append(what, "cluster "+hc.Cluster)
	if hc.BMC != nil {
		what = append(what, fmt.Sprintf("BMC %s user %s", hc.BMC.Addr, hc.BMC.User)) // never the password
	}
	if hc.Reserved {
		what = append(what, "spare")
	}
	verb := "configured"
	if !existed {
		verb = "added"
	}
	msg := fmt.Sprintf("host %s %s: %s", name, verb, strings.Join(what, ", "))
	change := store.ConfigChange{PutHost: &hc, BMCPassword: pw}
	old, had := c.hostCfg[h]
	c.hostCfg[h] = hc
	var in engine.Input
	if _, joined := c.hosts[h]; joined {
		in = c.hostInput(h)
	}
	if err := c.recordConfig(ctx, in, change, msg, h); err != nil {
		if had {
			c.hostCfg[h] = old
		} else {
			delete(c.hostCfg, h)
		}
		return api.Host{}, err
	}
	return c.hostView(h, c.vmCounts()), nil
}

// RemoveHost implements api.HostService.
func (c *Controller) RemoveHost(ctx context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return c.unavailable(ctx)
	}
	h := engine.HostID(name)
	_, joined := c.hosts[h]
	if _, ok := c.hostCfg[h]; !ok && !joined {
		return api.NotFound("no host %q", name)
	}
	if _, ok := c.alive[h]; ok {
		return api.Conflict("host %s: its agent runs (it holds a lease): stop the agent first", name)
	}
	var in engine.Input
	if joined {
		in = engine.RemoveHost{Host: h}
	}
	if err := c.recordConfig(ctx, in, store.ConfigChange{DeleteHost: name}, "host "+name+" removed", h); err != nil {
		return err
	}
	delete(c.hostCfg, h)
	delete(c.hosts, h)
	delete(c.hostStates, h)
	delete(c.libvirt, h)
	return nil
}

// Maintenance implements api.HostService.
func (c *Controller) Maintenance(ctx context.Context, name string, req api.MaintenanceRequest) (api.Host, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return api.Host{}, c.unavailable(ctx)
	}
	h := engine.HostID(name)
	if _, ok := c.hosts[h]; !ok {
		return api.Host{}, api.NotFound("no host %q has joined (its agent never ran)", name)
	}
	migrate := req.On && (req.Migrate == nil || *req.Migrate)
	out := c.stepLocked(ctx, engine.Maintenance{Host: h, On: req.On, Migrate: migrate})
	if out.Err != nil {
		return api.Host{}, api.Conflict("%v", out.Err)
	}
	if c.recordErr != nil {
		return api.Host{}, api.Unavailable("the change could not be recorded: %v", c.recordErr)
	}
	return c.hostView(h, c.vmCounts()), nil
}

// vmCounts counts the protected VMs homed on each host. Callers hold c.mu.
func (c *Controller) vmCounts() map[engine.HostID]int {
	vms := map[engine.HostID]int{}
	for _, v := range c.eng.Status() {
		vms[v.Home]++
	}
	return vms
}

// hostView is h as the API shows it. Callers hold c.mu.
func (c *Controller) hostView(h engine.HostID, vms map[engine.HostID]int) api.Host {
	r, joined := c.hosts[h]
	ah := api.Host{Name: string(h), State: "not-joined", Lease: "expired", VMs: vms[h], MemMiB: r.MemMiB, VCPUs: r.VCPUs,
		Libvirt: "unknown (its agent never ran)", Cluster: c.clusterOf(h), Power: c.powerOf(h)}
	if hc, ok := c.hostCfg[h]; ok {
		ah.Reserved = hc.Reserved
		if hc.BMC != nil {
			ah.BMC, ah.Fencing = hc.BMC.Addr, true
		}
		if hc.MemMiB > 0 {
			ah.MemMiB = hc.MemMiB
		}
		if hc.VCPUs > 0 {
			ah.VCPUs = hc.VCPUs
		}
	}
	if !joined {
		return ah
	}
	ah.State, ah.Libvirt, ah.Started = c.eng.HostState(h), c.libvirt[h], r.Started
	ah.Members, ah.Hears = r.Members, c.hears[h]
	if hs, ok := c.eng.Host(h); ok {
		ah.Maintenance = hs.Maintenance
	}
	if a, ok := c.alive[h]; ok {
		ah.Lease = "held"
		ah.LeaseSince = a.Since
	} else {
		ah.Libvirt = "unknown (its agent is not heard from)"
	}
	if st, ok := c.hostStates[h]; ok && !st.LostAt.IsZero() && ah.State != "up" {
		t := st.LostAt
		ah.LostAt = &t
	}
	return ah
}

// Hosts implements api.Service: every host joined or configured.
func (c *Controller) Hosts(ctx context.Context) ([]api.Host, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading {
		return nil, c.unavailable(ctx)
	}
	vms := c.vmCounts()
	var out []api.Host
	for h := range c.hostNames() {
		out = append(out, c.hostView(h, vms))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
