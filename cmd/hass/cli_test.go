package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
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
	lv     string   // the libvirt connection state Status reports ("connected" if empty)
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
	lv := f.lv
	if lv == "" {
		lv = "connected"
	}
	return api.Status{Host: "h1", Libvirt: lv, Store: "ok", VMs: len(f.vms), Healthy: len(f.vms), Uptime: "1m", Version: "test",
		Controller: "h1", Leader: "h1", Term: 7, Hosts: 1, HostsUp: 1}, nil
}

func (f *cliFake) Hosts(context.Context) ([]api.Host, error) {
	return []api.Host{{Name: "h1", State: "up", Lease: "held", VMs: len(f.vms), MemMiB: 4096, Libvirt: "connected"}}, nil
}

func cliServer(t *testing.T, f *cliFake) string {
	t.Helper()
	ts := httptest.NewServer(api.NewServer(f, nil, api.WithAuth(cliAuth{})))
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

// TestCLIOutputEndsWithNewline: every command that prints, tables and JSON alike, ends its
// output with one newline, so the shell prompt starts on a line of its own.
func TestCLIOutputEndsWithNewline(t *testing.T) {
	f := newCLIFake("v1", "web 01")
	f.events[1].Msg = "restart failed:\n" // a message that ends a line itself
	now := cliT0
	f.events = append(f.events, api.Event{Seq: 3, At: now, Type: "recovered", VM: "v1", Host: "h1", Msg: "vm-crash after 1 attempt(s)",
		FaultAt: &now, RecoveredAt: &now})
	srv := cliServer(t, f)
	empty := cliServer(t, newCLIFake())
	scenario := filepath.Join("..", "..", "scenarios", "crash-restart-in-place")
	for _, args := range [][]string{
		{"events"}, {"events", "-o", "json"}, {"events", "--after", "99"}, {"events", "--server", empty},
		{"events", "--limit", "1"},
		{"vm", "list"}, {"vm", "list", "-o", "json"}, {"vm", "list", "--server", empty},
		{"vm", "list", "-o", "json", "--server", empty},
		{"vm", "show", "v1"}, {"vm", "show", "v1", "-o", "json"},
		{"vm", "protect", "v1"}, {"vm", "protect", "v1", "-o", "json"},
		{"vm", "unprotect", "v1"}, {"vm", "unprotect", "v1", "-o", "json"},
		{"vm", "reboot", "v1"}, {"vm", "migrate", "v1", "h2", "-o", "json"},
		{"status"}, {"status", "-o", "json"},
		{"sim", "--hosts", "2", "--vms", "3", "--hours", "1"}, {"sim", "--hosts", "2", "--vms", "3", "--hours", "1", "--json"},
		{"sim", "--scenario", scenario},
		{"vm"}, {"--help"},
	} {
		if !slices.Contains(args, "--server") && args[0] != "sim" && args[0] != "--help" {
			args = append(args, "--server", srv)
		}
		code, out, errs := hass(args...)
		if code != 0 {
			t.Errorf("%q: exit %d: %s", args, code, errs)
			continue
		}
		if !strings.HasSuffix(out, "\n") || strings.HasSuffix(out, "\n\n") {
			t.Errorf("%q: output does not end with exactly one newline:\n%q", args, out)
		}
	}
	// Errors too, on stderr.
	for _, args := range [][]string{{"vm", "show", "nope", "--server", srv}, {"events", "--limit", "0"}, {"vm", "show", "a/b"}} {
		code, out, errs := hass(args...)
		if code == 0 || out != "" || !strings.HasSuffix(errs, "\n") || strings.Count(errs, "\n") != 1 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q: want one line on stderr", args, code, out, errs)
		}
	}
}

// TestCLITableRowsStayOneLine: what the daemon sends may hold newlines, carriage returns, tabs
// and escape sequences (a libvirt error in an event, the libvirt connection error in the
// status); a table shows them escaped, one row per line, aligned, ending with a newline.
func TestCLITableRowsStayOneLine(t *testing.T) {
	f := newCLIFake("v1", "v2")
	f.events[0].Msg = "start failed: internal error: qemu unexpectedly closed the monitor:\n2026-03-04T05:06:07 qemu: -device x\r\n"
	f.events[1].Msg = "odd\tbytes \x1b[2J\x1b[A and \u009b31m"
	f.vms[1].Failure = "vm-crash\n"
	f.events[1].Host = "h\r1"
	f.lv = "dial unix /var/run/libvirt/libvirt-sock: connect: no such file or directory\n"
	srv := cliServer(t, f)

	code, out, _ := hass("events", "--server", srv)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("events: exit %d, %d lines, want a header and 2 rows:\n%s", code, len(lines), out)
	}
	for _, want := range []string{`closed the monitor:\n2026-03-04T05:06:07 qemu: -device x`, `odd\tbytes \x1b[2J\x1b[A and \u009b31m`, `h\r1`} {
		if !strings.Contains(out, want) {
			t.Errorf("events: %q not shown escaped:\n%s", want, out)
		}
	}
	if i := strings.Index(lines[0], "MESSAGE"); strings.Index(lines[1], "start failed") != i || strings.Index(lines[2], "odd") != i {
		t.Errorf("events: the MESSAGE column is not aligned:\n%s", out)
	}
	code, out, _ = hass("vm", "list", "--server", srv)
	if n := strings.Count(out, "\n"); code != 0 || n != 3 || !strings.Contains(out, `healthy (vm-crash\n)`) {
		t.Errorf("vm list: exit %d, %d lines:\n%s", code, n, out)
	}
	code, status, _ := hass("status", "--server", srv)
	if code != 0 || strings.Count(status, "\n") != 2 || !strings.Contains(status, `no such file or directory\n, store ok`) {
		t.Errorf("status: exit %d: %q", code, status)
	}
	for _, s := range []string{out, status} {
		if strings.ContainsFunc(strings.TrimSuffix(s, "\n"), func(r rune) bool { return r < 0x20 && r != '\n' || r == 0x1b || r == 0x9b }) {
			t.Errorf("control characters reach the terminal: %q", s)
		}
	}
	// JSON keeps the text as it is (escaped the JSON way).
	code, out, _ = hass("events", "-o", "json", "--server", srv)
	var evs []api.Event
	if err := json.Unmarshal([]byte(out), &evs); code != 0 || err != nil || evs[0].Msg != f.events[0].Msg {
		t.Errorf("events -o json: %v\n%s", err, out)
	}
}
