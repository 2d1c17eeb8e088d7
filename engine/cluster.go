package engine

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// cluster is a set of hosts that cover for each other (a HASS cluster, a Masakari segment).
type cluster struct {
	name     string
	tolerate int // TolerateHostFailures: see admission.go
}

// ClusterState is what the engine holds about a cluster, as a runner stores it. Every change
// is logged as a RecCluster record naming it (Record.Cluster).
type ClusterState struct {
	Name                 string
	TolerateHostFailures int
}

// Validate names the first bad field.
func (s ClusterState) Validate() error {
	switch {
	case s.Name == "":
		return errors.New("name: empty")
	case s.TolerateHostFailures < 0:
		return fmt.Errorf("tolerate_host_failures %d: must be >= 0", s.TolerateHostFailures)
	}
	return nil
}

// Cluster returns what the engine holds about a cluster, and whether it exists.
func (e *Engine) Cluster(name string) (ClusterState, bool) {
	c := e.clusters[name]
	if c == nil {
		return ClusterState{}, false
	}
	return ClusterState{Name: c.name, TolerateHostFailures: c.tolerate}, true
}

// Clusters returns every cluster, sorted by name ("default" among them).
func (e *Engine) Clusters() []ClusterState {
	out := make([]ClusterState, 0, len(e.clusters))
	for _, c := range e.clusters {
		out = append(out, ClusterState{Name: c.name, TolerateHostFailures: c.tolerate})
	}
	slices.SortFunc(out, func(a, b ClusterState) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

func (e *Engine) logCluster(name, format string, args ...any) {
	e.out.Log = append(e.out.Log, Record{At: e.now, Type: RecCluster, Cluster: name, Msg: fmt.Sprintf(format, args...)})
}

func (e *Engine) setCluster(in SetCluster) {
	if err := (ClusterState{Name: in.Name, TolerateHostFailures: in.TolerateHostFailures}).Validate(); err != nil {
		e.out.Err = fmt.Errorf("set cluster: %w", err)
		return
	}
	c := e.clusters[in.Name]
	switch {
	case c == nil:
		c = &cluster{name: in.Name, tolerate: in.TolerateHostFailures}
		e.clusters[in.Name] = c
		e.logCluster(c.name, "cluster %s created tolerate-host-failures=%d", c.name, c.tolerate)
	case c.tolerate != in.TolerateHostFailures:
		c.tolerate = in.TolerateHostFailures
		e.logCluster(c.name, "cluster %s updated tolerate-host-failures=%d", c.name, c.tolerate)
	default:
		return
	}
	if c.tolerate > 0 && slices.ContainsFunc(e.hostList, func(h *host) bool { return h.cluster == c.name }) {
		if err := e.admit(c, nil, nil); err != nil {
			e.log(RecAlert, "", "", "cluster %s does not meet its tolerance today: %s", c.name, err.(*AdmissionError).Reason)
		}
	}
}

func (e *Engine) deleteCluster(in DeleteCluster) {
	c := e.clusters[in.Name]
	switch {
	case in.Name == DefaultCluster:
		e.out.Err = fmt.Errorf("delete cluster %s: the default cluster cannot be deleted", in.Name)
		return
	case c == nil:
		e.out.Err = fmt.Errorf("delete cluster %q: no such cluster", in.Name)
		return
	}
	var hs []string
	for _, h := range e.hostList {
		if h.cluster == c.name {
			hs = append(hs, string(h.id))
		}
	}
	if len(hs) > 0 {
		if len(hs) > 3 {
			hs = append(hs[:3], fmt.Sprintf("and %d more", len(hs)-3))
		}
		e.out.Err = fmt.Errorf("delete cluster %s: it has hosts (%s): remove them first", c.name, strings.Join(hs, ", "))
		return
	}
	delete(e.clusters, c.name)
	e.logCluster(c.name, "cluster %s deleted", c.name)
}

// restoreCluster registers a stored cluster (Validate'd).
func (e *Engine) restoreCluster(s ClusterState) {
	c := e.clusters[s.Name]
	if c == nil {
		c = &cluster{name: s.Name}
		e.clusters[s.Name] = c
	}
	c.tolerate = s.TolerateHostFailures
	e.logCluster(c.name, "cluster %s restored tolerate-host-failures=%d", c.name, c.tolerate)
}
