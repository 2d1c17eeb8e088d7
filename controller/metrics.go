package controller

import (
	"context"
	"time"

	"github.com/hassproject/hass/metrics"
)

var _ metrics.Source = (*Controller)(nil)

// MetricsSnapshot implements metrics.Source: VMs and hosts by state as the API shows them
// (a host in maintenance counts as "maintenance"), each joined host's libvirt connection,
// and the leadership. A controller that does not lead knows no state: Known is false.
func (c *Controller) MetricsSnapshot() metrics.Snapshot {
	if !c.IsLeading() { // the term of whoever leads, from the store
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, term, _ := c.st.Leader(ctx)
		return metrics.Snapshot{Term: term}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := metrics.Snapshot{Leading: c.leading, Term: c.term}
	if !c.leading || c.eng == nil {
		return s
	}
	s.Known = true
	s.VMs, s.Hosts, s.Libvirt = map[string]int{}, map[string]int{}, map[string]bool{}
	for _, v := range c.eng.Status() {
		s.VMs[c.view(v).State]++
	}
	vms := c.vmCounts()
	for h := range c.hostNames() {
		hv := c.hostView(h, vms)
		state := hv.State
		if hv.Maintenance {
			state = "maintenance"
		}
		s.Hosts[state]++
		if _, joined := c.hosts[h]; joined {
			s.Libvirt[string(h)] = c.libvirt[h] == "connected"
		}
	}
	return s
}
