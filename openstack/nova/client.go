// Package nova is hass's client of OpenStack Nova's compute API, through gophercloud: what
// hass needs to operate and recover instances through Nova instead of behind its back
// (start, hard reboot, stop, evacuate, live migration, a compute service forced down), and to
// find which instances ask for protection.
package nova

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/aggregates"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/services"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"go.yaml.in/yaml/v3"
)

// Microversion is the compute API microversion hass speaks: 2.60 (Queens) has everything it
// uses (services by uuid since 2.53, evacuate to a named host, live migration with
// block_migration "auto"), and every later release still serves it.
const Microversion = "2.60"

// Client talks to Nova's compute API.
type Client struct {
	sc *gophercloud.ServiceClient
	// UserID is the OpenStack user hass acts as, as Nova names it in its notifications'
	// action_initiator_user ("" when unknown).
	UserID string
}

// Open reads cloud (a name in clouds.yaml) from the clouds.yaml at path ("" for the usual
// places: ./clouds.yaml, ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml, or
// $OS_CLIENT_CONFIG_FILE) and authenticates. Besides Keystone's auth types (password,
// token, application credentials, as gophercloud reads them), it takes auth_type
// admin_token or none with auth.endpoint (the compute endpoint) and auth.token: Nova run
// with noauth2, as in tests.
func Open(ctx context.Context, path, cloud string) (*Client, error) {
	if cloud == "" {
		cloud = os.Getenv("OS_CLOUD")
	}
	if cloud == "" {
		return nil, errors.New("nova: no cloud named (--openstack-cloud or OS_CLOUD)")
	}
	if path == "" {
		path = os.Getenv("OS_CLIENT_CONFIG_FILE")
	}
	var opts []clouds.ParseOption
	opts = append(opts, clouds.WithCloudName(cloud))
	if path != "" {
		opts = append(opts, clouds.WithLocations(path))
		if direct, err := noauth(path, cloud); err != nil {
			return nil, err
		} else if direct != nil {
			return direct, nil
		}
	}
	ao, eo, tlsCfg, err := clouds.Parse(opts...)
	if err != nil {
		return nil, fmt.Errorf("nova: clouds.yaml, cloud %q: %w", cloud, err)
	}
	ao.AllowReauth = true
	pc, err := openstack.NewClient(ao.IdentityEndpoint)
	if err != nil {
		return nil, fmt.Errorf("nova: cloud %q: auth_url: %w", cloud, err)
	}
	if tlsCfg != nil {
		pc.HTTPClient = http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	}
	if err := openstack.Authenticate(ctx, pc, ao); err != nil {
		return nil, fmt.Errorf("nova: cloud %q: authenticate: %w", cloud, err)
	}
	sc, err := openstack.NewComputeV2(pc, eo)
	if err != nil {
		return nil, fmt.Errorf("nova: cloud %q: the compute endpoint: %w", cloud, err)
	}
	sc.Microversion = Microversion
	c := &Client{sc: sc}
	if r, ok := pc.GetAuthResult().(tokens.CreateResult); ok {
		if user, err := r.ExtractUser(); err == nil && user != nil {
			c.UserID = user.ID
		}
	}
	return c, nil
}

// noauth reads a cloud with auth_type admin_token or none (Nova's noauth2: no Keystone);
// it returns nil for any other auth type.
func noauth(path, cloud string) (*Client, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nova: clouds.yaml: %w", err)
	}
	var f struct {
		Clouds map[string]struct {
			AuthType string `yaml:"auth_type"`
			Auth     struct {
				Endpoint string `yaml:"endpoint"`
				Token    string `yaml:"token"`
			} `yaml:"auth"`
		} `yaml:"clouds"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("nova: clouds.yaml %s: %w", path, err)
	}
	c, ok := f.Clouds[cloud]
	if !ok || (c.AuthType != "admin_token" && c.AuthType != "none") {
		return nil, nil
	}
	if c.Auth.Endpoint == "" {
		return nil, fmt.Errorf("nova: clouds.yaml %s: clouds.%s.auth.endpoint: required with auth_type %s (the compute endpoint, e.g. http://nova:8774/v2.1)", path, cloud, c.AuthType)
	}
	if c.AuthType == "admin_token" && c.Auth.Token == "" {
		return nil, fmt.Errorf("nova: clouds.yaml %s: clouds.%s.auth.token: required with auth_type admin_token", path, cloud)
	}
	return NewDirect(c.Auth.Endpoint, c.Auth.Token), nil
}

// NewDirect is a client of the compute endpoint with a fixed token (Nova's noauth2 takes
// "user:project"), without Keystone.
func NewDirect(endpoint, token string) *Client {
	pc := &gophercloud.ProviderClient{HTTPClient: http.Client{Timeout: 60 * time.Second}}
	pc.SetToken(token)
	sc := &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: gophercloud.NormalizeURL(endpoint), Type: "compute", Microversion: Microversion}
	user, _, _ := strings.Cut(token, ":")
	return &Client{sc: sc, UserID: user}
}

// Server is what hass reads of an instance.
type Server struct {
	ID           string
	Name         string
	Status       string // ACTIVE, SHUTOFF, ERROR, REBUILD, …
	TaskState    string // "" when no task runs
	PowerState   int    // 1 running, 4 shutdown, 6 crashed, …
	Host         string // its compute host
	InstanceName string // its libvirt domain
	Metadata     map[string]string
}

// ErrNotFound: Nova has no such instance (or it was deleted).
var ErrNotFound = errors.New("no such instance")

// ErrTransient: Nova failed inside (HTTP 5xx: its database busy, say); the same request may
// work a moment later.
var ErrTransient = errors.New("failed inside Nova")

// ErrNotYet: Nova refuses to take a compute service for up again until it has restarted and
// cleaned up after the evacuations from its host.
var ErrNotYet = errors.New("not yet")

// ErrConflict: Nova refused the action in the instance's or the service's current state
// (HTTP 409).
var ErrConflict = errors.New("refused in the current state")

func wrap(err error, what string) error {
	if err == nil {
		return nil
	}
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return fmt.Errorf("nova: %s: %w (%v)", what, ErrNotFound, err)
	case gophercloud.ResponseCodeIs(err, http.StatusConflict):
		return fmt.Errorf("nova: %s: %w (%v)", what, ErrConflict, err)
	}
	var code gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &code) && code.Actual >= 500 {
		return fmt.Errorf("nova: %s: %w (%v)", what, ErrTransient, err)
	}
	return fmt.Errorf("nova: %s: %w", what, err)
}

func fromGC(s *servers.Server) Server {
	return Server{ID: s.ID, Name: s.Name, Status: s.Status, TaskState: s.TaskState, PowerState: int(s.PowerState),
		Host: s.Host, InstanceName: s.InstanceName, Metadata: s.Metadata}
}

// Get reads one instance by uuid.
func (c *Client) Get(ctx context.Context, id string) (Server, error) {
	s, err := servers.Get(ctx, c.sc, id).Extract()
	if err != nil {
		return Server{}, wrap(err, "get instance "+id)
	}
	return fromGC(s), nil
}

// List reads every instance of every project (an admin's view).
func (c *Client) List(ctx context.Context) ([]Server, error) {
	pages, err := servers.List(c.sc, servers.ListOpts{AllTenants: true}).AllPages(ctx)
	if err != nil {
		return nil, wrap(err, "list instances")
	}
	all, err := servers.ExtractServers(pages)
	if err != nil {
		return nil, wrap(err, "list instances")
	}
	out := make([]Server, 0, len(all))
	for i := range all {
		out = append(out, fromGC(&all[i]))
	}
	return out, nil
}

// Find reads an instance by uuid, or else by its name (which must name one instance only).
func (c *Client) Find(ctx context.Context, ref string) (Server, error) {
	if s, err := c.Get(ctx, ref); err == nil || !errors.Is(err, ErrNotFound) {
		return s, err
	}
	all, err := c.List(ctx)
	if err != nil {
		return Server{}, err
	}
	var found []Server
	for _, s := range all {
		if s.Name == ref || s.InstanceName == ref {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return Server{}, fmt.Errorf("nova: instance %q: %w", ref, ErrNotFound)
	case 1:
		return found[0], nil
	}
	return Server{}, fmt.Errorf("nova: %d instances are named %q: name one by its uuid", len(found), ref)
}

// AggregateHosts lists the hosts of the host aggregate named name.
func (c *Client) AggregateHosts(ctx context.Context, name string) ([]string, error) {
	pages, err := aggregates.List(c.sc).AllPages(ctx)
	if err != nil {
		return nil, wrap(err, "list host aggregates")
	}
	all, err := aggregates.ExtractAggregates(pages)
	if err != nil {
		return nil, wrap(err, "list host aggregates")
	}
	for _, a := range all {
		if a.Name == name {
			return a.Hosts, nil
		}
	}
	return nil, fmt.Errorf("nova: host aggregate %q: %w", name, ErrNotFound)
}

func action(ctx context.Context, c *Client, id, what string, body map[string]any) error {
	// 202 for most; 200 for an evacuation (it answers with a body).
	_, err := c.sc.Post(ctx, c.sc.ServiceURL("servers", id, "action"), body, nil, &gophercloud.RequestOpts{OkCodes: []int{200, 202}})
	return wrap(err, what+" "+id)
}

// Start is Nova's os-start (a SHUTOFF instance).
func (c *Client) Start(ctx context.Context, id string) error {
	return wrap(servers.Start(ctx, c.sc, id).ExtractErr(), "start "+id)
}

// Stop is Nova's os-stop.
func (c *Client) Stop(ctx context.Context, id string) error {
	return wrap(servers.Stop(ctx, c.sc, id).ExtractErr(), "stop "+id)
}

// Reboot is Nova's reboot, HARD (the domain destroyed and created again: it also starts a
// crashed instance) or SOFT (the guest asked to reboot).
func (c *Client) Reboot(ctx context.Context, id string, hard bool) error {
	t := servers.SoftReboot
	if hard {
		t = servers.HardReboot
	}
	return wrap(servers.Reboot(ctx, c.sc, id, servers.RebootOpts{Type: t}).ExtractErr(), "reboot "+id)
}

// Suspend is Nova's suspend.
func (c *Client) Suspend(ctx context.Context, id string) error {
	return wrap(servers.Suspend(ctx, c.sc, id).ExtractErr(), "suspend "+id)
}

// Resume is Nova's resume.
func (c *Client) Resume(ctx context.Context, id string) error {
	return wrap(servers.Resume(ctx, c.sc, id).ExtractErr(), "resume "+id)
}

// Delete deletes an instance.
func (c *Client) Delete(ctx context.Context, id string) error {
	err := servers.Delete(ctx, c.sc, id).ExtractErr()
	if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return nil
	}
	return wrap(err, "delete "+id)
}

// Evacuate rebuilds an instance of a compute host that is down on host ("" lets Nova's
// scheduler choose). Nova refuses it while the instance's compute service is up.
func (c *Client) Evacuate(ctx context.Context, id, host string) error {
	body := map[string]any{}
	if host != "" {
		body["host"] = host
	}
	return action(ctx, c, id, "evacuate", map[string]any{"evacuate": body})
}

// LiveMigrate live-migrates an instance to host ("" lets Nova's scheduler choose), with
// block migration as Nova sees fit.
func (c *Client) LiveMigrate(ctx context.Context, id, host string) error {
	var h any
	if host != "" {
		h = host
	}
	return action(ctx, c, id, "live-migrate", map[string]any{"os-migrateLive": map[string]any{"host": h, "block_migration": "auto"}})
}

// Service is a nova-compute service.
type Service struct {
	ID         string
	Host       string
	State      string // up or down
	Status     string // enabled or disabled
	ForcedDown bool
}

// ComputeService reads the nova-compute service of host.
func (c *Client) ComputeService(ctx context.Context, host string) (Service, error) {
	pages, err := services.List(c.sc, services.ListOpts{Binary: "nova-compute", Host: host}).AllPages(ctx)
	if err != nil {
		return Service{}, wrap(err, "list the compute service of "+host)
	}
	all, err := services.ExtractServices(pages)
	if err != nil {
		return Service{}, wrap(err, "list the compute service of "+host)
	}
	for _, s := range all {
		if s.Host == host {
			return Service{ID: s.ID, Host: s.Host, State: s.State, Status: s.Status, ForcedDown: s.ForcedDown}, nil
		}
	}
	return Service{}, fmt.Errorf("nova: no nova-compute service on host %q: %w", host, ErrNotFound)
}

// forcedDown is a service update that always says forced_down (gophercloud's omits false).
type forcedDown bool

func (f forcedDown) ToServiceUpdateMap() (map[string]any, error) {
	return map[string]any{"forced_down": bool(f)}, nil
}

// ForceDown marks host's nova-compute service forced down (down: true), which Nova needs
// before it evacuates the host's instances, or clears that mark once the host is back.
func (c *Client) ForceDown(ctx context.Context, host string, down bool) error {
	s, err := c.ComputeService(ctx, host)
	if err != nil {
		return err
	}
	if s.ForcedDown == down {
		return nil
	}
	_, err = services.Update(ctx, c.sc, s.ID, forcedDown(down)).Extract()
	if !down && gophercloud.ResponseCodeIs(err, http.StatusBadRequest) {
		// Nova keeps a host forced down until its nova-compute has started again and
		// cleaned up after the evacuations from it.
		return fmt.Errorf("nova: clear forced_down on the compute service of %s: %w (%v)", host, ErrNotYet, err)
	}
	return wrap(err, fmt.Sprintf("set forced_down=%v on the compute service of %s", down, host))
}
