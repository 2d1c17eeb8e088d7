package api

// Clusters, hosts and maintenance: what an administrator configures (hass cluster, hass
// host). A BMC's password goes in (HostRequest) and never comes out: no response, log line or
// event holds it.

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"

	"github.com/hassproject/hass/auth"
	"github.com/hassproject/hass/vmname"
)

// HostService is what the daemon provides for clusters and hosts.
type HostService interface {
	Clusters(ctx context.Context) ([]Cluster, error)
	PutCluster(ctx context.Context, name string, req ClusterRequest) (Cluster, error)
	DeleteCluster(ctx context.Context, name string) error
	PutHost(ctx context.Context, name string, req HostRequest) (Host, error)
	RemoveHost(ctx context.Context, name string) error
	Maintenance(ctx context.Context, name string, req MaintenanceRequest) (Host, error)
}

// Cluster is a cluster of hosts: recovery stays inside it.
type Cluster struct {
	Name string `json:"name"`
	// TolerateHostFailures: hass refuses to protect a VM that could not be restarted after
	// any this many host losses (admission control).
	TolerateHostFailures int `json:"tolerate_host_failures"`
	Hosts                int `json:"hosts"`
	// GuestLayers: the guest layers active for its VMs: all (what each VM's policy turns
	// on), os, network or none.
	GuestLayers string `json:"guest_layers"`
}

type clusterList struct {
	Clusters []Cluster `json:"clusters"`
}

// ClusterRequest is the body of PUT /v1/clusters/{name}.
type ClusterRequest struct {
	TolerateHostFailures *int   `json:"tolerate_host_failures,omitempty"` // 0..100; default 0
	GuestLayers          string `json:"guest_layers,omitempty"`           // all (default), os, network, none
}

// HostRequest is the body of PUT /v1/hosts/{name}: a host added, or its configuration
// changed. A field left out keeps its value (or its default for a new host).
type HostRequest struct {
	Cluster  string      `json:"cluster,omitempty"`  // default "default"
	MemMiB   *int        `json:"mem_mib,omitempty"`  // capacity for protected VMs; 0: what its agent reports
	VCPUs    *int        `json:"vcpus,omitempty"`    // 0: what its agent reports
	Reserved *bool       `json:"reserved,omitempty"` // a spare: only recoveries are placed on it
	BMC      *BMCRequest `json:"bmc,omitempty"`
}

// BMCRequest is a host's IPMI BMC (IPMI v2.0 over LAN). The password is write-only.
type BMCRequest struct {
	Addr     string `json:"addr"` // host or host:port
	User     string `json:"user"`
	Password string `json:"password"`
	Cipher   int    `json:"cipher,omitempty"` // RMCP+ cipher suite, default 3
}

// MaintenanceRequest is the body of POST /v1/hosts/{name}/maintenance.
type MaintenanceRequest struct {
	On bool `json:"on"`
	// Migrate (default true with on): live-migrate the host's protected VMs away first.
	Migrate *bool `json:"migrate,omitempty"`
}

var (
	clusterFields     = knownFields{"": jsonFields(reflect.TypeFor[ClusterRequest]())}
	hostFields        = knownFields{"": jsonFields(reflect.TypeFor[HostRequest]()), "bmc": jsonFields(reflect.TypeFor[BMCRequest]())}
	maintenanceFields = knownFields{"": jsonFields(reflect.TypeFor[MaintenanceRequest]())}
)

// Validate names the first bad field.
func (r ClusterRequest) Validate() error {
	if t := r.TolerateHostFailures; t != nil && (*t < 0 || *t > 100) {
		return BadRequest("tolerate_host_failures", "%d: want 0-100", *t)
	}
	switch r.GuestLayers {
	case "", "all", "os", "network", "none":
	default:
		return BadRequest("guest_layers", "%s: want all, os, network or none", quote(r.GuestLayers))
	}
	return nil
}

// Validate names the first bad field.
func (r HostRequest) Validate() error {
	if r.Cluster != "" {
		if err := vmname.CheckHost(r.Cluster); err != nil {
			return BadRequest("cluster", "%s", strings.Replace(err.Error(), "host name", "cluster name", 1))
		}
	}
	if r.MemMiB != nil && (*r.MemMiB < 0 || *r.MemMiB > 1<<30) {
		return BadRequest("mem_mib", "%d: want 0 (what the agent reports) up to 2^30", *r.MemMiB)
	}
	if r.VCPUs != nil && (*r.VCPUs < 0 || *r.VCPUs > 1<<16) {
		return BadRequest("vcpus", "%d: want 0 (what the agent reports) up to 65536", *r.VCPUs)
	}
	if b := r.BMC; b != nil {
		switch {
		case b.Addr == "" || strings.ContainsAny(b.Addr, " \t\r\n/"):
			return BadRequest("bmc.addr", "want host or host:port")
		case b.User == "" || strings.ContainsAny(b.User, "\r\n\x00"):
			return BadRequest("bmc.user", "required, on one line")
		case strings.ContainsAny(b.Password, "\r\n\x00"):
			return BadRequest("bmc.password", "must be on one line") // never echoed
		case b.Cipher < 0 || b.Cipher > 17:
			return BadRequest("bmc.cipher", "%d: want 0-17", b.Cipher)
		}
	}
	return nil
}

// ---- server -----------------------------------------------------------------------------

func (s *server) hostRoutes() []route {
	return []route{
		{"GET", "/v1/clusters", s.listClusters, auth.Viewer},
		{"PUT", "/v1/clusters/{name}", s.putCluster, auth.Admin},
		{"DELETE", "/v1/clusters/{name}", s.deleteCluster, auth.Admin},
		{"PUT", "/v1/hosts/{name}", s.putHost, auth.Admin},
		{"DELETE", "/v1/hosts/{name}", s.removeHost, auth.Admin},
		{"POST", "/v1/hosts/{name}/maintenance", s.maintenance, auth.Admin},
	}
}

func (s *server) hostSvc(w http.ResponseWriter, r *http.Request) (HostService, bool) {
	hs, ok := s.svc.(HostService)
	if !ok {
		s.fail(w, r, &Error{Code: CodeNotFound, Message: "this daemon manages no clusters or hosts"})
	}
	return hs, ok
}

// pathHost checks the {name} of a host or cluster path.
func pathHost(w http.ResponseWriter, r *http.Request, what string) (string, bool) {
	name := r.PathValue("name")
	if err := vmname.CheckHost(name); err != nil {
		writeError(w, BadRequest("name", "%s", strings.Replace(err.Error(), "host name", what+" name", 1)))
		return "", false
	}
	return name, true
}

func (s *server) listClusters(w http.ResponseWriter, r *http.Request) {
	hs, ok := s.hostSvc(w, r)
	if !ok {
		return
	}
	cs, err := hs.Clusters(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if cs == nil {
		cs = []Cluster{}
	}
	writeJSON(w, http.StatusOK, clusterList{Clusters: cs})
}

// hostCall serves one request on a host's or a cluster's path: it checks the name, reads
// and checks the body when decode is given, then calls fn and writes its answer.
func hostCall[T any](s *server, w http.ResponseWriter, r *http.Request, what string, decode func(body []byte) error,
	fn func(hs HostService, name string) (T, error)) {
	name, ok := pathHost(w, r, what)
	if !ok {
		return
	}
	if decode != nil {
		body, err := s.readBody(w, r)
		if err == nil {
			err = decode(body)
		}
		if err != nil {
			writeError(w, err)
			return
		}
	}
	hs, ok := s.hostSvc(w, r)
	if !ok {
		return
	}
	v, err := fn(hs, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *server) putCluster(w http.ResponseWriter, r *http.Request) {
	var req ClusterRequest
	decode := func(body []byte) error {
		if !isBlank(body) {
			if err := decodeStrict(body, &req, clusterFields); err != nil {
				return err
			}
		}
		return req.Validate()
	}
	hostCall(s, w, r, "cluster", decode, func(hs HostService, name string) (Cluster, error) {
		return hs.PutCluster(r.Context(), name, req)
	})
}

func (s *server) deleteCluster(w http.ResponseWriter, r *http.Request) {
	hostCall(s, w, r, "cluster", nil, func(hs HostService, name string) (Cluster, error) {
		return Cluster{Name: name, GuestLayers: "none"}, hs.DeleteCluster(r.Context(), name)
	})
}

func (s *server) putHost(w http.ResponseWriter, r *http.Request) {
	var req HostRequest
	decode := func(body []byte) error {
		if !isBlank(body) {
			if err := decodeStrict(body, &req, hostFields); err != nil {
				return err
			}
			if req.BMC != nil {
				if err := requireKeys(body, "bmc", "addr", "user", "password"); err != nil {
					return err
				}
			}
		}
		return req.Validate()
	}
	hostCall(s, w, r, "host", decode, func(hs HostService, name string) (Host, error) {
		return hs.PutHost(r.Context(), name, req)
	})
}

func (s *server) removeHost(w http.ResponseWriter, r *http.Request) {
	hostCall(s, w, r, "host", nil, func(hs HostService, name string) (Host, error) {
		return Host{Name: name, State: "removed", Lease: "expired"}, hs.RemoveHost(r.Context(), name)
	})
}

func (s *server) maintenance(w http.ResponseWriter, r *http.Request) {
	var req MaintenanceRequest
	decode := func(body []byte) error {
		if isBlank(body) {
			return BadRequest("on", "required: true or false")
		}
		if err := decodeStrict(body, &req, maintenanceFields); err != nil {
			return err
		}
		return requireKeys(body, "", "on")
	}
	hostCall(s, w, r, "host", decode, func(hs HostService, name string) (Host, error) {
		return hs.Maintenance(r.Context(), name, req)
	})
}

// requireKeys refuses a body whose object at path ("" for the top, else one key of it) lacks
// one of keys, naming the first missing one. The body was decoded strictly already.
func requireKeys(body []byte, path string, keys ...string) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return BadRequest("body", "not a JSON object")
	}
	prefix := ""
	if path != "" {
		var inner map[string]json.RawMessage
		if err := json.Unmarshal(obj[path], &inner); err != nil {
			return BadRequest(path, "not a JSON object")
		}
		obj, prefix = inner, path+"."
	}
	for _, k := range keys {
		if _, ok := obj[k]; !ok {
			return BadRequest(prefix+k, "required")
		}
	}
	return nil
}

// ---- client -----------------------------------------------------------------------------

func hostPath(kind, name, suffix string) (string, error) {
	if err := vmname.CheckHost(name); err != nil {
		return "", BadRequest("name", "%s", strings.Replace(err.Error(), "host name", strings.TrimSuffix(kind, "s")+" name", 1))
	}
	return "/v1/" + kind + "/" + escapeSegment(name) + suffix, nil
}

// Clusters lists the clusters (GET /v1/clusters).
func (c *Client) Clusters(ctx context.Context) ([]Cluster, error) {
	var out clusterList
	err := c.do(ctx, http.MethodGet, "/v1/clusters", nil, &out)
	return out.Clusters, err
}

// PutCluster creates or updates a cluster (PUT /v1/clusters/{name}).
func (c *Client) PutCluster(ctx context.Context, name string, req ClusterRequest) (Cluster, error) {
	var out Cluster
	p, err := hostPath("clusters", name, "")
	if err == nil {
		err = c.do(ctx, http.MethodPut, p, req, &out)
	}
	return out, err
}

// DeleteCluster deletes a cluster that has no host (DELETE /v1/clusters/{name}).
func (c *Client) DeleteCluster(ctx context.Context, name string) error {
	p, err := hostPath("clusters", name, "")
	if err == nil {
		err = c.do(ctx, http.MethodDelete, p, nil, &Cluster{})
	}
	return err
}

// PutHost adds a host or changes its configuration (PUT /v1/hosts/{name}).
func (c *Client) PutHost(ctx context.Context, name string, req HostRequest) (Host, error) {
	var out Host
	p, err := hostPath("hosts", name, "")
	if err == nil {
		err = c.do(ctx, http.MethodPut, p, req, &out)
	}
	return out, err
}

// RemoveHost removes a host that is home to no protected VM (DELETE /v1/hosts/{name}).
func (c *Client) RemoveHost(ctx context.Context, name string) error {
	p, err := hostPath("hosts", name, "")
	if err == nil {
		err = c.do(ctx, http.MethodDelete, p, nil, &Host{})
	}
	return err
}

// Maintenance puts a host in maintenance or takes it out (POST /v1/hosts/{name}/maintenance).
func (c *Client) Maintenance(ctx context.Context, name string, req MaintenanceRequest) (Host, error) {
	var out Host
	p, err := hostPath("hosts", name, "/maintenance")
	if err == nil {
		err = c.do(ctx, http.MethodPost, p, req, &out)
	}
	return out, err
}
