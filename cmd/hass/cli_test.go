package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/engine"
)

// cliFake is the daemon the CLI tests talk to: an api.Service with a few VMs and events.
type cliFake struct {
	mu     sync.Mutex
	vms    []api.VM
	events []api.Event
	names  []string // the VM names the service was called with
}

var cliT0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func newCLIFake(names ...string) *cliFake {
	f := &cliFake{}
	for i, n := range names {
		f.vms = append(f.vms, api.VM{Name: n, Host: "h1", Desired: "running", Observed: "running", Reason: "booted",
			State: "healthy", Policy: api.ViewPolicy(engine.DefaultPolicy())})
		f.events = append(f.events, api.Event{Seq: uint64(i + 1), At: cliT0, Type: "protect", VM: n, Host: "h1", Msg: "protected"})
	}
	return f
}

func (f *cliFake) called(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names = append(f.names, name)
}

func (f *cliFake) VMs(context.Context) ([]api.VM, error) { return f.vms, nil }
func (f *cliFake) VM(_ context.Context, name string) (api.VM, error) {
	f.called(name)
	for _, v := range f.vms {
		if v.Name == name {
			return v, nil
		}
	}
	return api.VM{}, api.NotFound("vm %q is not protected", name)
}
func (f *cliFake) Protect(_ context.Context, name string, _ api.ProtectRequest) (api.VM, error) {
	f.called(name)
	return api.VM{Name: name, Host: "h1", Desired: "running", Observed: "running", State: "healthy",
		Policy: api.ViewPolicy(engine.DefaultPolicy())}, nil
}
func (f *cliFake) Unprotect(_ context.Context, name string) error { f.called(name); return nil }
func (f *cliFake) Operate(_ context.Context, name string, req api.OperationRequest) (api.Operation, error) {
	f.called(name)
	return api.Operation{ID: 9, VM: name, Op: req.Op, Source: "api", Phase: "requested", Target: req.Target}, nil
}
func (f *cliFake) Events(_ context.Context, after uint64, limit int) ([]api.Event, error) {
	var out []api.Event
	for _, e := range f.events {
		if e.Seq > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}
func (f *cliFake) Status(context.Context) (api.Status, error) {
	return api.Status{Host: "h1", Libvirt: "connected", Store: "ok", VMs: len(f.vms), Healthy: len(f.vms), Uptime: "1m", Version: "test"}, nil
}

func cliServer(t *testing.T, f *cliFake) string {
	t.Helper()
	ts := httptest.NewServer(api.NewServer(f, nil))
	t.Cleanup(ts.Close)
	return ts.URL
}

// libvirtNames are domain names libvirt takes that an ASCII-word pattern would refuse.
var libvirtNames = []string{"a+b", "web 01", "café", "日本語", "50%", "..", "a<b>&c", `"quoted"`}

// TestCLILibvirtNames: the CLI takes every name libvirt does, sends it escaped, and shows it as
// it is in tables and JSON.
func TestCLILibvirtNames(t *testing.T) {
	f := newCLIFake(libvirtNames...)
	srv := cliServer(t, f)
	for _, n := range libvirtNames {
		for _, args := range [][]string{{"vm", "show", n}, {"vm", "protect", n}, {"vm", "reboot", n},
			{"vm", "migrate", n, "h2"}, {"vm", "unprotect", n}} {
			code, out, errs := hass(append(args, "--server", srv)...)
			if code != 0 || !strings.Contains(out, n) {
				t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
			}
		}
	}
	f.mu.Lock()
	for _, n := range libvirtNames {
		if c := strings.Count(strings.Join(f.names, "\x00")+"\x00", n+"\x00"); c < 5 {
			t.Errorf("service got %q %d times, want 5 (got %q)", n, c, f.names)
		}
	}
	f.mu.Unlock()

	code, out, _ := hass("vm", "list", "--server", srv)
	if code != 0 {
		t.Fatalf("vm list: exit %d", code)
	}
	for _, n := range libvirtNames {
		if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool { return strings.HasPrefix(l, n+"  ") }) {
			t.Errorf("vm list: no row starts with %q:\n%s", n, out)
		}
	}
	code, out, _ = hass("vm", "list", "-o", "json", "--server", srv)
	var vms []api.VM
	if err := json.Unmarshal([]byte(out), &vms); code != 0 || err != nil || len(vms) != len(libvirtNames) {
		t.Fatalf("vm list -o json: exit %d, %v:\n%s", code, err, out)
	}
	if !strings.Contains(out, `"name": "a<b>&c"`) {
		t.Errorf("vm list -o json escapes the name:\n%s", out)
	}
	code, out, _ = hass("events", "--server", srv)
	for _, n := range libvirtNames {
		if code != 0 || !strings.Contains(out, "  "+n+"  ") {
			t.Errorf("events: no cell %q:\n%s", n, out)
		}
	}
	code, out, _ = hass("events", "-o", "json", "--server", srv)
	if code != 0 || !strings.Contains(out, `"vm": "a<b>&c"`) {
		t.Errorf("events -o json:\n%s", out)
	}
	// A name libvirt refuses is refused before anything is sent.
	code, _, errs := hass("vm", "show", "a/b", "--server", srv)
	if code == 0 || !strings.Contains(errs, `name: "a/b" is not a valid VM name`) {
		t.Errorf("show a/b: exit %d, stderr %q", code, errs)
	}
}
