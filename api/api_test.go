package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/vmname"
)

// ---- the test double ----

// fakeService is a test double for Service: an in-memory table of VMs and an event log. It
// records every call it gets (so tests can check that bad input never reaches it) and, when
// err is set, returns err instead of doing anything; when panicMsg is set, it panics.
type fakeService struct {
	mu       sync.Mutex
	vms      map[string]VM
	events   []Event
	status   Status
	nextOp   uint64
	err      error
	panicMsg string
	calls    []fakeCall
}

// fakeCall is one call the fake got, with its arguments.
type fakeCall struct {
	Method  string
	Name    string
	Protect ProtectRequest
	Op      OperationRequest
	After   uint64
	Limit   int
}

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 800_000_000, time.UTC)

func newFake() *fakeService {
	at := func(d time.Duration) *time.Time { t := t0.Add(d); return &t }
	f := &fakeService{
		vms: map[string]VM{},
		status: Status{Host: "h1", StoreMembers: []string{"hass unix:///var/lib/hass/client.sock"}, Libvirt: "connected", Store: "ok", VMs: 2, Healthy: 1, Recovering: 1,
			Uptime: "1h2m3s", Version: "v0.1.0-test"},
		nextOp: 41,
	}
	f.vms["v1"] = VM{Name: "v1", Host: "h1", Desired: "running", Observed: "running", Reason: "booted",
		State: "healthy", Policy: ViewPolicy(engine.DefaultPolicy())}
	f.vms["web-01.example:a"] = VM{Name: "web-01.example:a", Host: "h1", Desired: "running", Observed: "shutoff",
		Reason: "failed", State: "recovering", Failure: "vm-crash", Restarts: 2, Relocations: 1,
		Policy: ViewPolicy(engine.DefaultPolicy()),
		Operation: &Operation{ID: 7, VM: "web-01.example:a", Op: "migrate", Source: "api", Phase: "running",
			Started: t0, Deadline: t0.Add(5 * time.Minute), Target: "h2"}}
	for i := range 250 {
		e := Event{Seq: uint64(i + 1), At: t0.Add(time.Duration(i) * time.Second), Type: "detect", VM: "v1", Host: "h1",
			Kind: "vm-crash", Msg: fmt.Sprintf("event %d", i+1)}
		if i%10 == 9 {
			e.Type = "recovered"
			e.FaultAt, e.DetectAt, e.ActionAt, e.RecoveredAt = at(0), at(10*time.Millisecond), at(20*time.Millisecond), at(time.Second)
		}
		f.events = append(f.events, e)
	}
	return f
}

func (f *fakeService) record(c fakeCall) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
	return f.err
}

func (f *fakeService) Calls() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeService) VMs(ctx context.Context) ([]VM, error) {
	if err := f.record(fakeCall{Method: "VMs"}); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []VM
	for _, v := range f.vms {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (f *fakeService) VM(ctx context.Context, name string) (VM, error) {
	if err := f.record(fakeCall{Method: "VM", Name: name}); err != nil {
		return VM{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vms[name]
	if !ok {
		return VM{}, NotFound("vm %s is not protected", name)
	}
	return v, nil
}

func (f *fakeService) Protect(ctx context.Context, name string, req ProtectRequest) (VM, error) {
	if err := f.record(fakeCall{Method: "Protect", Name: name, Protect: req}); err != nil {
		return VM{}, err
	}
	pol, err := req.Policy.Apply(engine.DefaultPolicy())
	if err != nil {
		return VM{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vms[name]
	if !ok {
		v = VM{Name: name, Host: "h1", Desired: "running", Observed: "running", Reason: "booted", State: "healthy"}
	}
	v.Policy = ViewPolicy(pol)
	f.vms[name] = v
	return v, nil
}

func (f *fakeService) Unprotect(ctx context.Context, name string) error {
	if err := f.record(fakeCall{Method: "Unprotect", Name: name}); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vms[name]; !ok {
		return NotFound("vm %s is not protected", name)
	}
	delete(f.vms, name)
	return nil
}

func (f *fakeService) Operate(ctx context.Context, name string, req OperationRequest) (Operation, error) {
	if err := f.record(fakeCall{Method: "Operate", Name: name, Op: req}); err != nil {
		return Operation{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vms[name]
	if !ok {
		return Operation{}, NotFound("vm %s is not protected", name)
	}
	if req.Op == "migrate" && req.Target == v.Host {
		return Operation{}, Conflict("migrate %s: vm already runs on %s", name, v.Host)
	}
	f.nextOp++
	op := Operation{ID: f.nextOp, VM: name, Op: req.Op, Source: "api", Phase: "requested",
		Started: t0, Deadline: t0.Add(2 * time.Minute), Target: req.Target}
	v.Operation = &op
	f.vms[name] = v
	return op, nil
}

func (f *fakeService) Events(ctx context.Context, afterSeq uint64, limit int) ([]Event, error) {
	if err := f.record(fakeCall{Method: "Events", After: afterSeq, Limit: limit}); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Event
	for _, e := range f.events {
		if e.Seq > afterSeq && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *fakeService) Status(ctx context.Context) (Status, error) {
	if err := f.record(fakeCall{Method: "Status"}); err != nil {
		return Status{}, err
	}
	return f.status, nil
}

func (f *fakeService) Hosts(ctx context.Context) ([]Host, error) {
	if err := f.record(fakeCall{Method: "Hosts"}); err != nil {
		return nil, err
	}
	return []Host{{Name: "h1", State: "up", Lease: "held", Libvirt: "connected"}}, nil
}

var _ Service = (*fakeService)(nil)

// ---- helpers ----

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func newTestServer(t *testing.T) (*fakeService, *Client, *httptest.Server) {
	t.Helper()
	f := newFake()
	ts := httptest.NewServer(NewServer(f, testLogger(t)))
	t.Cleanup(ts.Close)
	return f, NewClient(ts.URL, ts.Client()), ts
}

type answer struct {
	status int
	header http.Header
	body   []byte
	err    *Error
}

// raw sends one request as is and decodes an error body, if any.
func raw(t *testing.T, ts *httptest.Server, method, target, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: b}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, target, ct)
	}
	if !json.Valid(b) {
		t.Errorf("%s %s: body is not JSON: %q", method, target, b)
	}
	if resp.StatusCode >= 400 {
		var eb errorBody
		if err := json.Unmarshal(b, &eb); err != nil || eb.Error == nil {
			t.Fatalf("%s %s: %d without an error body: %q", method, target, resp.StatusCode, b)
		}
		a.err = eb.Error
	}
	return a
}

func intp(n int) *int { return &n }

// ---- round trips ----

func TestRoundTrip(t *testing.T) {
	f, c, _ := newTestServer(t)
	ctx := t.Context()

	t.Run("VMs", func(t *testing.T) {
		got, err := c.VMs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := newFake().VMs(ctx)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("VMs:\n got %+v\nwant %+v", got, want)
		}
	})
	t.Run("VM", func(t *testing.T) {
		got, err := c.VM(ctx, "web-01.example:a")
		if err != nil {
			t.Fatal(err)
		}
		if want := newFake().vms["web-01.example:a"]; !reflect.DeepEqual(got, want) {
			t.Fatalf("VM:\n got %+v\nwant %+v", got, want)
		}
		if last := f.Calls()[len(f.Calls())-1]; last.Name != "web-01.example:a" {
			t.Fatalf("service got name %q", last.Name)
		}
	})
	t.Run("Protect", func(t *testing.T) {
		req := ProtectRequest{Policy: Policy{MaxRestarts: intp(0), Window: "1h30m", MaxRelocations: intp(5),
			OnGuestShutdown: "restart", Priority: intp(-3), AntiAffinity: "db"}}
		got, err := c.Protect(ctx, "v9", req)
		if err != nil {
			t.Fatal(err)
		}
		want := PolicyView{MaxRestarts: 0, Window: "1h30m0s", MaxRelocations: 5, OnGuestShutdown: "restart", Priority: -3, AntiAffinity: "db"}
		if got.Name != "v9" || got.Policy != want {
			t.Fatalf("Protect: got %+v, want policy %+v", got, want)
		}
		last := f.Calls()[len(f.Calls())-1]
		if last.Method != "Protect" || last.Name != "v9" || !reflect.DeepEqual(last.Protect, req) {
			t.Fatalf("service got %+v, want %+v", last, req)
		}
		// Only what is given is sent: a zero stays apart from "not given".
		if _, err := c.Protect(ctx, "v9", ProtectRequest{Policy: Policy{MaxRestarts: intp(0)}}); err != nil {
			t.Fatal(err)
		}
		last = f.Calls()[len(f.Calls())-1]
		if p := last.Protect.Policy; p.MaxRestarts == nil || *p.MaxRestarts != 0 || p.MaxRelocations != nil || p.Priority != nil || p.Window != "" {
			t.Fatalf("service got policy %+v", p)
		}
	})
	t.Run("Unprotect", func(t *testing.T) {
		if err := c.Unprotect(ctx, "v9"); err != nil {
			t.Fatal(err)
		}
		if last := f.Calls()[len(f.Calls())-1]; last.Method != "Unprotect" || last.Name != "v9" {
			t.Fatalf("service got %+v", last)
		}
		_, err := c.VM(ctx, "v9")
		if e, ok := errors.AsType[*Error](err); !ok || e.Code != CodeNotFound {
			t.Fatalf("VM after Unprotect: %v", err)
		}
	})
	t.Run("Operate", func(t *testing.T) {
		for _, req := range []OperationRequest{{Op: "reboot"}, {Op: "migrate", Target: "h2"}, {Op: "migrate"}} {
			got, err := c.Operate(ctx, "v1", req)
			if err != nil {
				t.Fatal(err)
			}
			if got.VM != "v1" || got.Op != req.Op || got.Target != req.Target || got.Phase != "requested" ||
				!got.Started.Equal(t0) || !got.Deadline.Equal(t0.Add(2*time.Minute)) || got.ID == 0 {
				t.Fatalf("Operate(%+v) = %+v", req, got)
			}
			if last := f.Calls()[len(f.Calls())-1]; last.Method != "Operate" || last.Op != req {
				t.Fatalf("service got %+v, want %+v", last, req)
			}
		}
	})
	t.Run("Events", func(t *testing.T) {
		all := newFake().events
		for _, tc := range []struct {
			after     uint64
			limit     int
			wantLimit int
			want      []Event
		}{
			{0, 0, DefaultEventLimit, all[:100]},
			{5, 3, 3, all[5:8]},
			{200, 1000, 1000, all[200:]},
			{250, 10, 10, nil},
		} {
			got, err := c.Events(ctx, tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) || (len(got) > 0 && !reflect.DeepEqual(got, tc.want)) {
				t.Fatalf("Events(%d, %d): got %d events, want %d", tc.after, tc.limit, len(got), len(tc.want))
			}
			last := f.Calls()[len(f.Calls())-1]
			if last.Method != "Events" || last.After != tc.after || last.Limit != tc.wantLimit {
				t.Fatalf("service got %+v, want after=%d limit=%d", last, tc.after, tc.wantLimit)
			}
		}
	})
	t.Run("Status", func(t *testing.T) {
		got, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, f.status) {
			t.Fatalf("Status = %+v, want %+v", got, f.status)
		}
	})
	t.Run("Health", func(t *testing.T) {
		n := len(f.Calls())
		if err := c.Health(ctx); err != nil {
			t.Fatal(err)
		}
		if len(f.Calls()) != n {
			t.Fatal("healthz called the service")
		}
	})
}

func TestWireFormat(t *testing.T) {
	f, _, ts := newTestServer(t)
	a := raw(t, ts, "GET", "/v1/vms/web-01.example:a", "")
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "host", "desired", "observed", "reason", "state", "failure", "restarts", "relocations", "policy", "operation"} {
		if _, ok := m[k]; !ok {
			t.Errorf("VM JSON lacks %q: %s", k, a.body)
		}
	}
	if pol := m["policy"].(map[string]any); pol["max_restarts"] != 3.0 || pol["window"] != "10m0s" || pol["on_guest_shutdown"] != "honour" {
		t.Errorf("policy JSON: %v", pol)
	}
	if op := m["operation"].(map[string]any); op["deadline"] != "2026-03-04T05:11:07.8Z" || op["target"] != "h2" {
		t.Errorf("operation JSON: %v", op)
	}
	// Lists are never null.
	f.vms = map[string]VM{}
	if a := raw(t, ts, "GET", "/v1/vms", ""); strings.TrimSpace(string(a.body)) != `{"vms":[]}` {
		t.Errorf("empty list: %s", a.body)
	}
	if a := raw(t, ts, "GET", "/v1/events?after=999", ""); strings.TrimSpace(string(a.body)) != `{"events":[],"last_seq":999}` {
		t.Errorf("empty events: %s", a.body)
	}
	// Operations are accepted, not done.
	f.vms["v1"] = VM{Name: "v1", Host: "h1"}
	if a := raw(t, ts, "POST", "/v1/vms/v1/operations", `{"op":"stop"}`); a.status != http.StatusAccepted {
		t.Errorf("operate: %d, want 202", a.status)
	}
	if a := raw(t, ts, "DELETE", "/v1/vms/v1/protection", ""); a.status != 200 || !strings.Contains(string(a.body), `"protected":false`) {
		t.Errorf("unprotect: %d %s", a.status, a.body)
	}
}

func TestProtectEmptyBodyMeansDefaults(t *testing.T) {
	for _, body := range []string{"", "  \n", "{}", `{"policy":{}}`} {
		f, _, ts := newTestServer(t)
		a := raw(t, ts, "PUT", "/v1/vms/v7/protection", body)
		if a.status != 200 {
			t.Fatalf("body %q: %d %s", body, a.status, a.body)
		}
		var vm VM
		json.Unmarshal(a.body, &vm)
		if vm.Policy != ViewPolicy(engine.DefaultPolicy()) {
			t.Errorf("body %q: policy %+v", body, vm.Policy)
		}
		if calls := f.Calls(); len(calls) != 1 || !reflect.DeepEqual(calls[0].Protect, ProtectRequest{}) {
			t.Errorf("body %q: service got %+v", body, calls)
		}
	}
}

// ---- validation ----

func TestValidation(t *testing.T) {
	long := strings.Repeat("a", 1025)
	big := `{"policy":{"anti_affinity":"` + strings.Repeat("x", MaxBodyBytes) + `"}}`
	for _, tc := range []struct {
		method, target, body string
		field, msg           string
	}{
		{"GET", "/v1/vms/a%2Fb", "", "name", `name: "a/b" is not a valid VM name: it holds '/', which libvirt does not allow in a domain name (want 1 to 1024 characters, none of them '/' or a control character)`},
		{"GET", "/v1/vms/" + long, "", "name", "1025 characters long, more than 1024"},
		{"DELETE", "/v1/vms/a%09b/protection", "", "name", `"a\tb" is not a valid VM name: it holds the control character U+0009`},
		{"GET", "/v1/vms/a%00b", "", "name", "U+0000"},
		{"GET", "/v1/vms/a%0Ab", "", "name", "U+000A"},
		{"GET", "/v1/vms/a%7Fb", "", "name", "U+007F"},
		{"GET", "/v1/vms/a%C2%9Bb", "", "name", "U+009B"},
		{"POST", "/v1/vms/%FF/operations", `{"op":"stop"}`, "name", "not valid UTF-8"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"10x"}}`, "policy.window", `policy.window: "10x" is not a duration`},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"0s"}}`, "policy.window", "must be positive"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"-5m"}}`, "policy.window", "must be positive"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"721h"}}`, "policy.window", "longer than 30 days"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":10}}`, "policy.window", "want a string"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"max_restarts":-1}}`, "policy.max_restarts", "policy.max_restarts: -1 is out of range (want 0 to 1000)"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"max_restarts":1001}}`, "policy.max_restarts", "out of range"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"max_restarts":"3"}}`, "policy.max_restarts", "policy.max_restarts: want an integer, got string"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"max_restarts":1.5}}`, "policy.max_restarts", "policy.max_restarts: 1.5 is not an integer in range"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"max_restarts":1e30}}`, "policy.max_restarts", "1e30 is not an integer in range"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"max_relocations":-2}}`, "policy.max_relocations", "out of range"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"max_relocations":5000}}`, "policy.max_relocations", "out of range"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"priority":"high"}}`, "policy.priority", "want an integer"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"on_guest_shutdown":"ignore"}}`, "policy.on_guest_shutdown", `"ignore" is not one of honour, honor, restart`},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"anti_affinity":"a b"}}`, "policy.anti_affinity", "not a valid group name"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"windw":"1m"}}`, "policy.windw", "unknown field (want one of max_restarts, window,"},
		{"PUT", "/v1/vms/v1/protection", `{"polcy":{}}`, "polcy", "unknown field (want one of policy)"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":[]}`, "policy", "want a JSON object"},
		{"PUT", "/v1/vms/v1/protection", `[]`, "body", "want a JSON object"},
		{"PUT", "/v1/vms/v1/protection", `"x"`, "body", "want a JSON object"},
		{"PUT", "/v1/vms/v1/protection", `{`, "body", "truncated"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":}`, "body", "invalid JSON"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{}} {}`, "body", "unexpected data after"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{}}}`, "body", "unexpected data after"},
		{"PUT", "/v1/vms/v1/protection", big, "body", "larger than 64 KiB"},
		{"POST", "/v1/vms/v1/operations", ``, "op", "op is required (want one of start, shutdown, stop, reboot, delete, migrate, suspend, resume)"},
		{"POST", "/v1/vms/v1/operations", `{}`, "op", "op is required"},
		{"POST", "/v1/vms/v1/operations", `{"op":"explode"}`, "op", `op: "explode" is not an operation (want one of start, shutdown, stop, reboot, delete, migrate, suspend, resume)`},
		{"POST", "/v1/vms/v1/operations", `{"op":"Reboot"}`, "op", "not an operation"},
		{"POST", "/v1/vms/v1/operations", `{"op":5}`, "op", "want a string"},
		{"POST", "/v1/vms/v1/operations", `{"op":"reboot","target":"h2"}`, "target", "target: target is only allowed with op migrate"},
		{"POST", "/v1/vms/v1/operations", `{"op":"migrate","target":"h 2"}`, "target", "not a valid host name"},
		{"POST", "/v1/vms/v1/operations", `{"op":"reboot","force":true}`, "force", "unknown field (want one of op, target)"},
		{"POST", "/v1/vms/v1/operations", `{"op":"reboot"}x`, "body", "unexpected data after"},
		{"POST", "/v1/vms/v1/operations", `{"op":"resume","target":""}`, "target", "target: an empty string is not allowed (leave target out and hass picks a host)"},
		{"POST", "/v1/vms/v1/operations", `{"op":"migrate","target":""}`, "target", "an empty string is not allowed"},
		{"POST", "/v1/vms/v1/operations", `{"op":""}`, "op", "op is required"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":""}}`, "policy.window", "policy.window: an empty string is not allowed (leave the field out to get its default)"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"on_guest_shutdown":""}}`, "policy.on_guest_shutdown", "an empty string is not allowed"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"anti_affinity":""}}`, "policy.anti_affinity", "an empty string is not allowed"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"priority":2147483648}}`, "policy.priority", "policy.priority: 2147483648 is out of range (want -2147483648 to 2147483647)"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"priority":-2147483649}}`, "policy.priority", "out of range"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"0"}}`, "policy.window", "must be positive"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"1e3s"}}`, "policy.window", "not a duration"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"10 m"}}`, "policy.window", "not a duration"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"99999999999999h"}}`, "policy.window", "longer than 30 days"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"720h0m0.000000001s"}}`, "policy.window", "longer than 30 days"},
		{"PUT", "/v1/vms/v1/protection", "\u00a0", "body", "invalid JSON"},
		{"GET", "/v1/events?after=%2B1", "", "after", "not a non-negative integer"},
		{"GET", "/v1/events?limit=%2B5", "", "limit", "not an integer from 1 to 1000"},
		{"GET", "/v1/events?limit=%205", "", "limit", "not an integer from 1 to 1000"},
		{"GET", "/v1/events?limit=1e2", "", "limit", "not an integer from 1 to 1000"},
		{"POST", "/v1/vms/v1/operations", `{"op":"stop","op":"reboot"}`, "op", `op: key "op" is given twice (each key may appear once)`},
		{"POST", "/v1/vms/v1/operations", `{"op":"stop","\u006fp":"reboot"}`, "op", "given twice"},
		{"POST", "/v1/vms/v1/operations", `{"op":"migrate","target":"h2","target":"h3"}`, "target", "given twice"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"1m","window":"2m"}}`, "policy.window", `policy.window: key "window" is given twice`},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{},"policy":{}}`, "policy", "given twice"},
		{"POST", "/v1/vms/v1/operations", `{"OP":"stop"}`, "OP", "unknown field (want one of op, target)"},
		{"POST", "/v1/vms/v1/operations", `{"op":"stop","Target":"h2"}`, "Target", "unknown field"},
		{"PUT", "/v1/vms/v1/protection", `{"Policy":{}}`, "Policy", "unknown field (want one of policy)"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"Window":"1m"}}`, "policy.Window", "unknown field"},
		{"PUT", "/v1/vms/v1/protection", `null`, "body", "want a JSON object, got null"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":null}`, "policy", "null is not allowed"},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":null}}`, "policy.window", "null is not allowed"},
		{"POST", "/v1/vms/v1/operations", `{"op":null}`, "op", "null is not allowed"},
		{"POST", "/v1/vms/v1/operations", "{\"op\":\"st\xffop\"}", "body", "not valid UTF-8"},
		{"GET", "/v1/events?after=x", "", "after", `after: "x" is not a non-negative integer`},
		{"GET", "/v1/events?after=-1", "", "after", "not a non-negative integer"},
		{"GET", "/v1/events?after=18446744073709551616", "", "after", "not a non-negative integer"},
		{"GET", "/v1/events?after=1&after=2", "", "after", "given 2 times"},
		{"GET", "/v1/events?limit=0", "", "limit", "not an integer from 1 to 1000"},
		{"GET", "/v1/events?limit=1001", "", "limit", "not an integer from 1 to 1000"},
		{"GET", "/v1/events?limit=ten", "", "limit", "not an integer from 1 to 1000"},
		{"GET", "/v1/events?limit=", "", "limit", "not an integer"},
		{"GET", "/v1/events?afterr=3", "", "query", `unknown parameter "afterr" (want after, limit, vm, host, type, kind, since, wait)`},
		{"GET", "/v1/events?after=%zz", "", "query", "malformed query"},
	} {
		t.Run(tc.method+" "+tc.target+" "+tc.body[:min(len(tc.body), 40)], func(t *testing.T) {
			f, _, ts := newTestServer(t)
			a := raw(t, ts, tc.method, tc.target, tc.body)
			if a.status != http.StatusBadRequest || a.err.Code != CodeBadRequest {
				t.Fatalf("got %d %s, want 400 bad_request", a.status, a.body)
			}
			if a.err.Field != tc.field {
				t.Errorf("field %q, want %q (%s)", a.err.Field, tc.field, a.err.Message)
			}
			if !strings.HasPrefix(a.err.Message, tc.field+": ") || !strings.Contains(a.err.Message, tc.msg) {
				t.Errorf("message %q, want it to start with %q and hold %q", a.err.Message, tc.field+": ", tc.msg)
			}
			if calls := f.Calls(); len(calls) != 0 {
				t.Errorf("bad input reached the service: %+v", calls)
			}
		})
	}
}

func TestValidInputAccepted(t *testing.T) {
	for _, tc := range []struct{ method, target, body string }{
		{"GET", "/v1/vms/" + strings.Repeat("a", 128), ""},
		{"GET", "/v1/vms/" + strings.Repeat("%C3%A9", 1024), ""},
		{"GET", "/v1/vms/0f8fad5b-d9cb-469f-a165-70867728950e", ""},
		{"GET", "/v1/vms/a+b", ""},
		{"GET", "/v1/vms/-v1", ""},
		{"GET", "/v1/vms/.x", ""},
		{"PUT", "/v1/vms/a%20b/protection", ""},
		{"DELETE", "/v1/vms/caf%C3%A9/protection", ""},
		{"POST", "/v1/vms/%2E%2E/operations", `{"op":"stop"}`},
		{"GET", "/v1/vms/%2E", ""},
		{"GET", "/v1/vms/50%25", ""},
		{"GET", "/v1/vms/%F0%9F%99%82", ""},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"max_restarts":0,"max_relocations":1000,"window":"720h","on_guest_shutdown":"honor","priority":-5}}`},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"1ms"}}`},
		{"POST", "/v1/vms/v1/operations", `{"op":"migrate","target":"h2.example.com"}`},
		{"POST", "/v1/vms/v1/operations", `{"op":"migrate"}`},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"+10m","priority":2147483647}}`},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":".5h","priority":-2147483648}}`},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"1.h30.5m10µs1μs1us"}}`},
		{"PUT", "/v1/vms/v1/protection", `{"policy":{"window":"719h59m60s"}}`},
		{"GET", "/v1/events?after=007&limit=0010", ""},
		{"GET", "/v1/events?after=18446744073709551615&limit=1000", ""},
		{"GET", "/v1/events?limit=1", ""},
	} {
		f, _, ts := newTestServer(t)
		a := raw(t, ts, tc.method, tc.target, tc.body)
		if a.status >= 300 && a.err.Code == CodeBadRequest {
			t.Errorf("%s %s %s: refused: %s", tc.method, tc.target, tc.body, a.body)
		}
		if len(f.Calls()) != 1 {
			t.Errorf("%s %s: service calls %+v", tc.method, tc.target, f.Calls())
		}
	}
}

func TestClientValidationErrors(t *testing.T) {
	f, c, _ := newTestServer(t)
	_, err := c.Protect(t.Context(), "v1", ProtectRequest{Policy: Policy{Window: "10x"}})
	e, ok := errors.AsType[*Error](err)
	if !ok || e.Code != CodeBadRequest || e.Field != "policy.window" || e.Error() != `policy.window: "10x" is not a duration (e.g. 10m, 1h30m)` {
		t.Fatalf("got %#v", err)
	}
	if _, err := c.VM(t.Context(), ""); err == nil {
		t.Fatal("VM(\"\") succeeded")
	}
	if len(f.Calls()) != 0 {
		t.Fatalf("service calls %+v", f.Calls())
	}
}

// ---- errors ----

func TestServiceErrors(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		want   *Error
	}{
		{NotFound("vm %s is not protected", "v1"), 404, &Error{Code: CodeNotFound, Message: "vm v1 is not protected"}},
		{BadRequest("target", "unknown target host %q", "h9"), 400, &Error{Code: CodeBadRequest, Message: `target: unknown target host "h9"`, Field: "target"}},
		{Conflict("reboot v2: vm is shutoff, not running"), 409, &Error{Code: CodeConflict, Message: "reboot v2: vm is shutoff, not running"}},
		{Unavailable("store: etcd unreachable"), 503, &Error{Code: CodeUnavailable, Message: "store: etcd unreachable"}},
		{Internal("boom"), 500, &Error{Code: CodeInternal, Message: "boom"}},
		{fmt.Errorf("protect: %w", Conflict("busy")), 409, &Error{Code: CodeConflict, Message: "busy"}},
		{errors.New("disk on fire"), 500, &Error{Code: CodeInternal, Message: "disk on fire"}},
		{&Error{Code: "teapot", Message: "odd"}, 500, &Error{Code: "teapot", Message: "odd"}},
	} {
		t.Run(tc.want.Code+" "+tc.want.Message, func(t *testing.T) {
			f, c, ts := newTestServer(t)
			f.err = tc.err
			ctx := t.Context()
			calls := []struct {
				method, target, body string
				call                 func() error
			}{
				{"GET", "/v1/vms", "", func() error { _, err := c.VMs(ctx); return err }},
				{"GET", "/v1/vms/v1", "", func() error { _, err := c.VM(ctx, "v1"); return err }},
				{"PUT", "/v1/vms/v1/protection", "", func() error { _, err := c.Protect(ctx, "v1", ProtectRequest{}); return err }},
				{"DELETE", "/v1/vms/v1/protection", "", func() error { return c.Unprotect(ctx, "v1") }},
				{"POST", "/v1/vms/v1/operations", `{"op":"stop"}`, func() error {
					_, err := c.Operate(ctx, "v1", OperationRequest{Op: "stop"})
					return err
				}},
				{"GET", "/v1/events", "", func() error { _, err := c.Events(ctx, 0, 0); return err }},
				{"GET", "/v1/status", "", func() error { _, err := c.Status(ctx); return err }},
			}
			for _, cl := range calls {
				a := raw(t, ts, cl.method, cl.target, cl.body)
				if a.status != tc.status || !reflect.DeepEqual(a.err, tc.want) {
					t.Errorf("%s %s: %d %+v, want %d %+v", cl.method, cl.target, a.status, a.err, tc.status, tc.want)
				}
				err := cl.call()
				e, ok := errors.AsType[*Error](err)
				if !ok || !reflect.DeepEqual(e, tc.want) {
					t.Errorf("client %s %s: %#v, want %+v", cl.method, cl.target, err, tc.want)
				}
			}
		})
	}
}

func TestPanicIsInternalError(t *testing.T) {
	f, c, ts := newTestServer(t)
	f.panicMsg = "nil map"
	a := raw(t, ts, "GET", "/v1/status", "")
	if a.status != 500 || a.err.Code != CodeInternal || !strings.Contains(a.err.Message, "nil map") {
		t.Fatalf("got %d %s", a.status, a.body)
	}
	if _, err := c.Status(t.Context()); err == nil || err.Error() != "internal error: nil map" {
		t.Fatalf("client: %v", err)
	}
}

func TestRoutingErrors(t *testing.T) {
	f, _, ts := newTestServer(t)
	for _, tc := range []struct {
		method, target string
		status         int
		allow          string
	}{
		{"POST", "/v1/vms", 405, "GET, HEAD"},
		{"DELETE", "/v1/vms/v1", 405, "GET, HEAD"},
		{"GET", "/v1/vms/v1/protection", 405, "PUT, DELETE"},
		{"PATCH", "/v1/vms/v1/protection", 405, "PUT, DELETE"},
		{"GET", "/v1/vms/v1/operations", 405, "POST"},
		{"POST", "/v1/events", 405, "GET, HEAD"},
		{"PUT", "/v1/status", 405, "GET, HEAD"},
		{"POST", "/openapi.json", 405, "GET, HEAD"},
		{"OPTIONS", "/healthz", 405, "GET, HEAD"},
		{"GET", "/", 404, ""},
		{"GET", "/v1", 404, ""},
		{"GET", "/v1/vms/", 404, ""},
		{"GET", "/v1/vm", 404, ""},
		{"GET", "/v2/vms", 404, ""},
		{"GET", "/v1/vms/v1/operations/3", 404, ""},
		{"GET", "/v1//vms", 404, ""},
		{"GET", "/v1/vms/../status", 404, ""},
		{"GET", "/v1/vms/v1/./protection", 404, ""},
		{"POST", "/nope", 404, ""},
	} {
		a := raw(t, ts, tc.method, tc.target, "")
		if a.status != tc.status {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.target, a.status, a.body, tc.status)
			continue
		}
		if got := a.header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.target, got, tc.allow)
		}
		wantCode := map[int]string{404: CodeNotFound, 405: CodeMethodNotAllowed}[tc.status]
		if a.err.Code != wantCode || !strings.Contains(a.err.Message, tc.method) {
			t.Errorf("%s %s: error %+v", tc.method, tc.target, a.err)
		}
	}
	if len(f.Calls()) != 0 {
		t.Errorf("service calls: %+v", f.Calls())
	}
	// HEAD works wherever GET does.
	resp, err := ts.Client().Head(ts.URL + "/v1/status")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD /v1/status: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestClientNonAPIAnswer(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/status" {
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		w.Write([]byte("<html>not hass</html>"))
	}))
	defer ts.Close()
	c := NewClient(ts.URL, nil)
	_, err := c.Status(t.Context())
	if e, ok := errors.AsType[*Error](err); !ok || e.Code != CodeUnavailable || !strings.Contains(e.Message, "502 Bad Gateway: bad gateway") {
		t.Fatalf("status: %#v", err)
	}
	if _, err := c.VMs(t.Context()); err == nil || !strings.Contains(err.Error(), "unreadable answer") {
		t.Fatalf("VMs: %v", err)
	}
}

// ---- transports ----

func TestUnixSocket(t *testing.T) {
	dir, err := shortTempDir(t)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "hass.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	srv := &http.Server{Handler: NewServer(f, testLogger(t))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	for _, base := range []string{"unix://" + sock, "unix:" + sock} {
		c := NewClient(base, nil)
		st, err := c.Status(t.Context())
		if err != nil {
			t.Fatalf("%s: %v", base, err)
		}
		if !reflect.DeepEqual(st, f.status) {
			t.Fatalf("%s: status %+v", base, st)
		}
		if _, err := c.Operate(t.Context(), "v1", OperationRequest{Op: "reboot"}); err != nil {
			t.Fatal(err)
		}
		_, err = c.VM(t.Context(), "nope")
		if e, ok := errors.AsType[*Error](err); !ok || e.Code != CodeNotFound || e.Message != "vm nope is not protected" {
			t.Fatalf("%s: VM(nope): %#v", base, err)
		}
	}
	// A caller's http.Client keeps its settings; only the dialing changes.
	c := NewClient("unix://"+sock, &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}})
	if _, err := c.VMs(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// shortTempDir is t.TempDir, unless that is too long for a unix socket path (~107 bytes):
// then a short directory in the system's temp dir.
func shortTempDir(t *testing.T) (string, error) {
	d := t.TempDir()
	if len(d) < 80 {
		return d, nil
	}
	d, err := os.MkdirTemp("", "hass")
	if err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	return d, err
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close()
	for _, base := range []string{addr, "unix://" + filepath.Join(t.TempDir(), "none.sock")} {
		c := NewClient(base, nil)
		_, err := c.Status(t.Context())
		var ue *UnreachableError
		if !errors.As(err, &ue) {
			t.Fatalf("%s: got %#v, want *UnreachableError", base, err)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "cannot reach the hass daemon at "+base+": ") || !strings.HasSuffix(msg, " (is `hass up` running?)") {
			t.Fatalf("%s: message %q", base, msg)
		}
		if strings.Count(msg, base) != 1 {
			t.Errorf("%s: address repeated in %q", base, msg)
		}
		t.Log(msg)
	}
	// A cancelled context is not "unreachable".
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = NewClient(addr, nil).Status(ctx)
	var ue *UnreachableError
	if errors.As(err, &ue) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %#v", err)
	}
}

func TestBadBaseURL(t *testing.T) {
	for _, base := range []string{"unix://", "ftp://x", "http://", "http://[::1"} {
		if _, err := NewClient(base, nil).Status(t.Context()); err == nil || !strings.Contains(err.Error(), "hass daemon address") {
			t.Errorf("%q: %v", base, err)
		}
	}
	// host:port alone means http.
	_, _, ts := newTestServer(t)
	if _, err := NewClient(strings.TrimPrefix(ts.URL, "http://")+"/", nil).Status(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// ---- OpenAPI ----

func TestOpenAPI(t *testing.T) {
	_, _, ts := newTestServer(t)
	a := raw(t, ts, "GET", "/openapi.json", "")
	if a.status != 200 {
		t.Fatalf("%d", a.status)
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
		Comps   struct {
			Schemas map[string]struct {
				Properties map[string]any `json:"properties"`
				OneOf      []struct {
					Ref string `json:"$ref"`
				} `json:"oneOf"`
			} `json:"schemas"`
			Responses map[string]any `json:"responses"`
		} `json:"components"`
	}
	if err := json.Unmarshal(a.body, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
	routes := map[string][]string{
		"/v1/vms":                      {"get"},
		"/v1/vms/{name}":               {"get"},
		"/v1/vms/{name}/protection":    {"put", "delete"},
		"/v1/vms/{name}/operations":    {"post"},
		"/v1/events":                   {"get"},
		"/v1/status":                   {"get"},
		"/v1/hosts":                    {"get"},
		"/v1/hosts/{name}":             {"put", "delete"},
		"/v1/hosts/{name}/maintenance": {"post"},
		"/v1/clusters":                 {"get"},
		"/v1/clusters/{name}":          {"put", "delete"},
		"/openapi.json":                {"get"},
		"/healthz":                     {"get"},
		"/v1/tokens":                   {"get", "post"},
		"/v1/tokens/{name}":            {"delete"},
	}
	for p, methods := range routes {
		for _, m := range methods {
			op, ok := doc.Paths[p][m].(map[string]any)
			if !ok {
				t.Errorf("openapi.json lacks %s %s", m, p)
				continue
			}
			if _, ok := op["responses"].(map[string]any)["405"]; !ok {
				t.Errorf("%s %s: no 405 response", m, p)
			}
		}
	}
	for p, ms := range doc.Paths {
		for m := range ms {
			if m != "parameters" && !slices.Contains(routes[p], m) {
				t.Errorf("openapi.json describes %s %s, which the server does not serve", m, p)
			}
		}
	}
	// Every $ref resolves.
	for _, ref := range refsIn(a.body) {
		name, ok := strings.CutPrefix(ref, "#/components/")
		kind, name, _ := strings.Cut(name, "/")
		var m map[string]any
		json.Unmarshal(a.body, &m)
		if c, _ := m["components"].(map[string]any)[kind].(map[string]any); !ok || c[name] == nil {
			t.Errorf("dangling $ref %s", ref)
		}
	}
	// The schemas match the Go types field for field.
	for name, typ := range map[string]reflect.Type{
		"Policy": reflect.TypeFor[Policy](), "PolicyView": reflect.TypeFor[PolicyView](),
		"ProtectRequest": reflect.TypeFor[ProtectRequest](), "OperationRequest": reflect.TypeFor[OperationRequest](),
		"Operation": reflect.TypeFor[Operation](), "VM": reflect.TypeFor[VM](), "Event": reflect.TypeFor[Event](),
		"Status": reflect.TypeFor[Status](), "Error": reflect.TypeFor[Error](), "Unprotected": reflect.TypeFor[Unprotected](),
		"Health": reflect.TypeFor[Health](), "VMList": reflect.TypeFor[vmList](), "EventList": reflect.TypeFor[eventList](),
		"ErrorBody": reflect.TypeFor[errorBody](),
	} {
		s, ok := doc.Comps.Schemas[name]
		if !ok {
			t.Errorf("no schema %s", name)
			continue
		}
		var props []string
		for p := range s.Properties {
			props = append(props, p)
		}
		for _, v := range s.OneOf { // a union: the Go type has every variant's fields
			for p := range doc.Comps.Schemas[strings.TrimPrefix(v.Ref, "#/components/schemas/")].Properties {
				if !slices.Contains(props, p) {
					props = append(props, p)
				}
			}
		}
		want := jsonFields(typ)
		slices.Sort(props)
		slices.Sort(want)
		if !slices.Equal(props, want) {
			t.Errorf("schema %s has %v, Go type has %v", name, props, want)
		}
	}
	// The name rules are the server's own.
	var named struct {
		Components struct {
			Parameters struct {
				Name struct {
					Schema struct {
						Pattern   string `json:"pattern"`
						MinLength int    `json:"minLength"`
						MaxLength int    `json:"maxLength"`
					} `json:"schema"`
				} `json:"Name"`
			} `json:"parameters"`
		} `json:"components"`
	}
	json.Unmarshal(a.body, &named)
	if s := named.Components.Parameters.Name.Schema; s.Pattern != vmname.Pattern || s.MinLength != 1 || s.MaxLength != vmname.MaxLen {
		t.Errorf("parameter name: %+v, want pattern %s, 1 to %d characters", s, vmname.Pattern, vmname.MaxLen)
	}
	var m map[string]any
	json.Unmarshal(a.body, &m)
	schemas := m["components"].(map[string]any)["schemas"].(map[string]any)
	prop := func(schema, name string) map[string]any {
		return schemas[schema].(map[string]any)["properties"].(map[string]any)[name].(map[string]any)
	}
	for _, p := range []map[string]any{prop("Policy", "anti_affinity"), prop("MigrateOperationRequest", "target")} {
		if p["pattern"] != NamePattern {
			t.Errorf("pattern %v, want %s", p["pattern"], NamePattern)
		}
	}
	if p := prop("Policy", "window"); p["pattern"] != WindowPattern {
		t.Errorf("window pattern %v, want %s", p["pattern"], WindowPattern)
	}
	var ops []string
	for _, v := range []string{"MigrateOperationRequest", "OtherOperationRequest"} {
		for _, op := range prop(v, "op")["enum"].([]any) {
			ops = append(ops, op.(string))
		}
	}
	if slices.Sort(ops); !slices.Equal(ops, slices.Sorted(slices.Values(Ops))) {
		t.Errorf("operations %v, want %v", ops, Ops)
	}
	for _, r := range []string{"BadRequest", "NotFound", "Conflict", "Unavailable", "Internal", "MethodNotAllowed"} {
		if doc.Comps.Responses[r] == nil {
			t.Errorf("no response %s", r)
		}
	}
	if !bytes.Equal(OpenAPI(), openapiJSON) {
		t.Error("OpenAPI() differs")
	}
}

func refsIn(doc []byte) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "$ref" {
					out = append(out, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var v any
	json.Unmarshal(doc, &v)
	walk(v)
	return out
}

// ---- logging ----

func TestDebugLog(t *testing.T) {
	var buf syncBuffer
	h := NewServer(newFake(), slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/vms/v1?x=1", nil))
	out := buf.String()
	for _, want := range []string{"level=DEBUG", "msg=\"api request\"", "method=GET", "path=/v1/vms/v1", "status=200", "took="} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	// A nil logger is fine.
	NewServer(newFake(), nil).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/vms", nil))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// ---- vocabulary and conversions ----

func TestOpsMatchEngine(t *testing.T) {
	for i, op := range Ops {
		k, err := engine.ParseOpKind(op)
		if err != nil || int(k) != i || k.String() != op {
			t.Errorf("Ops[%d] = %q: engine says %v, %v", i, op, k, err)
		}
	}
	if _, err := engine.ParseOpKind(fmt.Sprint(engine.OpKind(len(Ops)))); err == nil {
		t.Errorf("engine has more operations than Ops")
	}
}

func TestPolicyApply(t *testing.T) {
	def := engine.DefaultPolicy()
	got, err := Policy{}.Apply(def)
	if err != nil || got != def {
		t.Fatalf("empty: %+v, %v", got, err)
	}
	got, err = Policy{MaxRestarts: intp(0), Window: "1h", MaxRelocations: intp(2), OnGuestShutdown: "restart", Priority: intp(9), AntiAffinity: "g"}.Apply(def)
	want := engine.Policy{MaxRestarts: 0, Window: time.Hour, MaxRelocations: 2, OnGuestShutdown: engine.GuestShutdownRestart, Priority: 9, AntiAffinity: "g"}
	if err != nil || got != want {
		t.Fatalf("full: %+v, %v", got, err)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := (Policy{Window: "0"}).Apply(def); err == nil {
		t.Fatal("window 0 accepted")
	}
	if v := ViewPolicy(want); v.Window != "1h0m0s" || v.OnGuestShutdown != "restart" || v.MaxRestarts != 0 {
		t.Fatalf("view %+v", v)
	}
	// The view's window parses back.
	if _, err := (Policy{Window: ViewPolicy(def).Window}).Apply(def); err != nil {
		t.Fatal(err)
	}
}

func TestConversions(t *testing.T) {
	op := engine.Operation{ID: 3, Kind: engine.OpMigrate, VM: "v1", Source: engine.SrcLibvirt, Phase: engine.PhaseRunning,
		Target: "h2", Started: t0, Deadline: t0.Add(time.Minute)}
	st := engine.VMStatus{VM: "v1", Home: "h1", Desired: engine.WantRunning, Observed: engine.DomShutoff,
		Reason: engine.ReasonFailed, State: "recovering", Failure: engine.FailVMCrash, Restarts: 2, Relocations: 1,
		Policy: engine.DefaultPolicy(), Op: &op}
	vm := FromStatus(st)
	want := VM{Name: "v1", Host: "h1", Desired: "running", Observed: "shutoff", Reason: "failed", State: "recovering",
		Failure: "vm-crash", Restarts: 2, Relocations: 1, Policy: PolicyView{MaxRestarts: 3, Window: "10m0s", MaxRelocations: 1,
			OnGuestShutdown: "honour"},
		Operation: &Operation{ID: 3, VM: "v1", Op: "migrate", Source: "libvirt", Phase: "running", Started: t0,
			Deadline: t0.Add(time.Minute), Target: "h2"}}
	if !reflect.DeepEqual(vm, want) {
		t.Fatalf("FromStatus:\n got %+v\nwant %+v", vm, want)
	}
	ev := FromRecord(9, engine.Record{At: t0, Type: engine.RecRecovered, VM: "v1", Host: "h1", Msg: "ok",
		FaultAt: t0, RecoveredAt: t0.Add(time.Second), Kind: engine.FailVMCrash})
	if ev.Seq != 9 || ev.Type != "recovered" || ev.Kind != "vm-crash" || ev.FaultAt == nil || ev.DetectAt != nil ||
		!ev.RecoveredAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("FromRecord: %+v", ev)
	}
}

// ---- fuzzing ----

// FuzzServer throws arbitrary requests at the server: it must never panic, must always answer
// JSON, must answer below 500 unless the service itself failed internally, must never call
// the service with input that does not validate, and must serve exactly the requests the
// OpenAPI document calls valid (judged as in TestOpenAPIAgreesWithServer).
func FuzzServer(f *testing.F) {
	doc := loadOAS(f)
	ops := doc.operations()
	seeds := []struct {
		method, path, query, body string
		mode                      uint8
	}{
		{"GET", "/v1/vms", "", "", 0},
		{"GET", "/v1/vms/v1", "", "", 1},
		{"PUT", "/v1/vms/v1/protection", "", `{"policy":{"max_restarts":2,"window":"5m"}}`, 0},
		{"PUT", "/v1/vms/v1/protection", "", `{"policy":{"window":"10x"}}`, 0},
		{"PUT", "/v1/vms/v1/protection", "", `{"policy":{"max_restarts":1e999}}`, 0},
		{"DELETE", "/v1/vms/v1/protection", "", "", 2},
		{"POST", "/v1/vms/v1/operations", "", `{"op":"migrate","target":"h2"}`, 0},
		{"POST", "/v1/vms/v1/operations", "", `{"op":"reboot"}`, 4},
		{"POST", "/v1/vms/v1/operations", "", `{"op":"reboot","target":"x"}`, 0},
		{"GET", "/v1/events", "after=3&limit=10", "", 0},
		{"GET", "/v1/events", "limit=-1", "", 0},
		{"GET", "/v1/status", "", "", 5},
		{"GET", "/openapi.json", "", "", 0},
		{"GET", "/healthz", "", "", 0},
		{"BREW", "/v1/vms", "", "", 0},
		{"GET", "/v1//vms/../x", "", "", 0},
		{"", "", "", "", 0},
		{"GET", "*", "", "", 0},
		{"GET", "/v1/vms/\x00", "", "", 0},
		{"PUT", "/v1/vms/a%2Fb/protection", "", `{"policy":{"anti_affinity":"\u0000"}}`, 0},
		{"PUT", "/v1/vms/a+b/protection", "", `{"policy":{"window":"1h30m","priority":-2147483648}}`, 0},
		{"PUT", "/v1/vms/%2E%2E/protection", "", `{"policy":{"window":"720h1ns"}}`, 0},
		{"PUT", "/v1/vms/caf%C3%A9/protection", "", `{"policy":{"window":"0"},"policy":{}}`, 0},
		{"PUT", "/v1/vms/a%20b/protection", "", `{"policy":{"Window":"1m","priority":null}}`, 0},
		{"POST", "/v1/vms/50%25/operations", "", `{"op":"migrate","target":""}`, 0},
		{"POST", "/v1/vms/v1/operations", "", `{"op":"migrate","op":"reboot"}`, 0},
		{"POST", "/v1/vms/v1/operations", "", `{"OP":"stop"}`, 0},
		{"POST", "/v1/vms/a%09b/operations", "", "\u00a0", 0},
		{"GET", "/v1/events", "after=-0&limit=%2B5", "", 0},
		{"GET", "/v1/events", "after=18446744073709551616", "", 0},
		{"HEAD", "/v1/vms/v1", "", "", 0},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.query, []byte(s.body), s.mode)
	}
	f.Fuzz(func(t *testing.T, method, p, query string, body []byte, mode uint8) {
		fake := newFake()
		internal := false
		switch mode % 7 {
		case 1:
			fake.err = NotFound("vm is not protected")
		case 2:
			fake.err = Conflict("busy")
		case 3:
			fake.err = BadRequest("target", "unknown host")
		case 4:
			fake.err, internal = Internal("boom"), true
		case 5:
			fake.err, internal = errors.New("plain"), true
		case 6:
			fake.panicMsg, internal = "kaboom", true
		}
		h := NewServer(fake, nil)
		var u *url.URL
		if pu, err := url.ParseRequestURI(p + "?" + query); err == nil && len(p)%2 == 0 {
			u = pu
		} else {
			u = &url.URL{Path: p, RawQuery: query}
		}
		req := &http.Request{Method: method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)), Host: "hass", RequestURI: u.RequestURI()}
		req = req.WithContext(context.Background())
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		calls := fake.Calls()
		if rec.Code >= 500 && !(internal && len(calls) > 0) {
			t.Fatalf("%q %q ?%q %q: %d %s without an internal service error", method, p, query, body, rec.Code, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%q %q: body is not JSON: %q", method, p, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%q %q: Content-Type %q", method, p, ct)
		}
		if rec.Code >= 400 {
			var eb errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == nil || eb.Error.Code == "" || eb.Error.Message == "" {
				t.Fatalf("%q %q: %d with a bad error body %q", method, p, rec.Code, rec.Body)
			}
			if rec.Code == 405 && rec.Header().Get("Allow") == "" {
				t.Fatalf("%q %q: 405 without Allow", method, p)
			}
		}
		for _, c := range calls {
			if c.Name != "" && !ValidVMName(c.Name) {
				t.Fatalf("service got bad name %q", c.Name)
			}
			switch c.Method {
			case "Protect":
				if err := c.Protect.Policy.Validate(); err != nil {
					t.Fatalf("service got bad policy: %v", err)
				}
			case "Operate":
				if err := c.Op.Validate(); err != nil {
					t.Fatalf("service got bad operation: %v", err)
				}
			case "Events":
				if c.Limit < 1 || c.Limit > MaxEventLimit {
					t.Fatalf("service got limit %d", c.Limit)
				}
			}
		}
		if len(calls) > 1 {
			t.Fatalf("one request, %d service calls", len(calls))
		}
		if vs, decided := (&validator{d: doc}).judge(ops, method, u.EscapedPath(), u.RawQuery, body); decided {
			served := len(calls) > 0 || rec.Code < 300
			if served != (len(vs) == 0) {
				t.Fatalf("%q %q ?%q %q: the document says %v, the server answered %d %s", method, u.EscapedPath(), u.RawQuery, body, vs, rec.Code, rec.Body)
			}
		}
	})
}

// ---- VM names ----

// oddNames are valid libvirt domain names that a strict pattern would refuse.
var oddNames = []string{"a+b", "a b", " lead", "trail ", "café", "日本語", "🙂", "50%", "100%25", "a?b", "a#b",
	`a\b`, `"q"`, "'", ".", "..", "...", "-v1", "a=b;c", "a<b>&c", "a:b@c", "a%2Fb", strings.Repeat("é", 1024)}

func TestVMNamesRoundTrip(t *testing.T) {
	f, c, ts := newTestServer(t)
	ctx := t.Context()
	for _, name := range oddNames {
		vm, err := c.Protect(ctx, name, ProtectRequest{})
		if err != nil || vm.Name != name {
			t.Fatalf("Protect(%q) = %q, %v", name, vm.Name, err)
		}
		if last := f.Calls()[len(f.Calls())-1]; last.Name != name {
			t.Fatalf("Protect(%q): service got %q", name, last.Name)
		}
		if got, err := c.VM(ctx, name); err != nil || got.Name != name {
			t.Fatalf("VM(%q) = %q, %v", name, got.Name, err)
		}
		op, err := c.Operate(ctx, name, OperationRequest{Op: "reboot"})
		if err != nil || op.VM != name {
			t.Fatalf("Operate(%q) = %+v, %v", name, op, err)
		}
	}
	vms, err := c.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vms {
		names = append(names, v.Name)
	}
	for _, name := range oddNames {
		if !slices.Contains(names, name) {
			t.Errorf("VMs lacks %q", name)
		}
	}
	// The answer holds the name as it is: JSON escaping only where JSON needs it.
	a := raw(t, ts, "GET", "/v1/vms/a%3Cb%3E&c", "")
	if !strings.Contains(string(a.body), `"name":"a<b>&c"`) {
		t.Errorf("answer %s does not show the name as is", a.body)
	}
	for _, name := range oddNames {
		if err := c.Unprotect(ctx, name); err != nil {
			t.Fatalf("Unprotect(%q): %v", name, err)
		}
	}
	if _, err := c.VM(ctx, "..."); err == nil {
		t.Fatal("VM ... still there")
	}
}

// TestClientRefusesBadNamesAsTheServerDoes: the client checks a name before sending it, with
// the server's very error.
func TestClientRefusesBadNamesAsTheServerDoes(t *testing.T) {
	f, c, ts := newTestServer(t)
	for name, target := range map[string]string{
		"a/b":                     "/v1/vms/a%2Fb",
		"a\tb":                    "/v1/vms/a%09b",
		"a\u0085":                 "/v1/vms/a%C2%85",
		strings.Repeat("x", 1025): "/v1/vms/" + strings.Repeat("x", 1025),
		"\xff":                    "/v1/vms/%FF",
	} {
		_, err := c.VM(t.Context(), name)
		e, ok := errors.AsType[*Error](err)
		if !ok {
			t.Fatalf("VM(%q): %v", name, err)
		}
		a := raw(t, ts, "GET", target, "")
		if !reflect.DeepEqual(e, a.err) {
			t.Errorf("VM(%q): client says %+v, server %+v", name, e, a.err)
		}
	}
	if len(f.Calls()) != 0 {
		t.Errorf("service calls %+v", f.Calls())
	}
}

// ---- slow clients ----

// TestSlowBodyIsCutOff: a client that sends the headers and then stalls gets an answer and a
// closed connection within the body timeout (plus slack), never a connection held forever.
func TestSlowBodyIsCutOff(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const bound = timeout + 2*time.Second
	for _, tc := range []struct {
		name, req, status string
	}{
		{"stalled body", "PUT /v1/vms/v1/protection HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pol", "400"},
		{"no body at all", "POST /v1/vms/v1/operations HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n", "400"},
		{"stalled chunks", "POST /v1/vms/v1/operations HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"op\"\r\n", "400"},
		{"unread body", "GET /v1/status HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nxx", "200"},
		{"refused before the body", "PUT /v1/vms/a%2Fb/protection HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n{", "400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			ts := httptest.NewServer(newServer(f, testLogger(t), timeout))
			defer ts.Close()
			conn, err := net.Dial("tcp", ts.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close() // before ts.Close, which waits for the handler
			start := time.Now()
			if _, err := io.WriteString(conn, tc.req); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(start.Add(bound))
			got, err := io.ReadAll(conn) // the answer, then EOF when the server closes
			took := time.Since(start)
			if err != nil {
				t.Fatalf("after %s: %v (got %q): the server neither answered nor closed the connection", took.Round(time.Millisecond), err, got)
			}
			if !strings.HasPrefix(string(got), "HTTP/1.1 "+tc.status+" ") {
				t.Fatalf("answer %q, want %s", got, tc.status)
			}
			if tc.status == "400" && strings.Contains(tc.name, "stall") && !strings.Contains(string(got), "body: the request body did not arrive within 300ms") {
				t.Errorf("answer %q does not say the body timed out", got)
			}
			if c := f.Calls(); tc.status == "400" && len(c) != 0 {
				t.Errorf("service called: %+v", c)
			}
			t.Logf("answered and closed after %s", took.Round(time.Millisecond))
		})
	}
}

// The fake's clusters and hosts: every well-formed request succeeds.

func (f *fakeService) Clusters(ctx context.Context) ([]Cluster, error) {
	if err := f.record(fakeCall{Method: "Clusters"}); err != nil {
		return nil, err
	}
	return []Cluster{{Name: "default", Hosts: 1, GuestLayers: "all"}}, nil
}

func (f *fakeService) PutCluster(ctx context.Context, name string, req ClusterRequest) (Cluster, error) {
	if err := f.record(fakeCall{Method: "PutCluster", Name: name}); err != nil {
		return Cluster{}, err
	}
	c := Cluster{Name: name, GuestLayers: "all"}
	if req.TolerateHostFailures != nil {
		c.TolerateHostFailures = *req.TolerateHostFailures
	}
	return c, nil
}

func (f *fakeService) DeleteCluster(ctx context.Context, name string) error {
	return f.record(fakeCall{Method: "DeleteCluster", Name: name})
}

func (f *fakeService) PutHost(ctx context.Context, name string, req HostRequest) (Host, error) {
	if err := f.record(fakeCall{Method: "PutHost", Name: name}); err != nil {
		return Host{}, err
	}
	h := Host{Name: name, State: "not-joined", Lease: "expired", Cluster: "default", Libvirt: "unknown"}
	if req.Cluster != "" {
		h.Cluster = req.Cluster
	}
	if req.BMC != nil {
		h.BMC, h.Fencing = req.BMC.Addr, true
	}
	return h, nil
}

func (f *fakeService) RemoveHost(ctx context.Context, name string) error {
	return f.record(fakeCall{Method: "RemoveHost", Name: name})
}

func (f *fakeService) Maintenance(ctx context.Context, name string, req MaintenanceRequest) (Host, error) {
	if err := f.record(fakeCall{Method: "Maintenance", Name: name}); err != nil {
		return Host{}, err
	}
	return Host{Name: name, State: "up", Lease: "held", Cluster: "default", Libvirt: "connected", Maintenance: req.On}, nil
}

var _ HostService = (*fakeService)(nil)
