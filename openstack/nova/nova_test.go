package nova

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
)

// fakeNova answers the few compute API calls Carry makes, moving one instance through the
// states real Nova shows (the end-to-end tests in test/rig run against a real Nova; this
// checks the choices Carry makes, call by call).
type fakeNova struct {
	mu       sync.Mutex
	srv      server
	calls    []string
	forced   map[string]bool
	refuse   map[string]int // action -> HTTP status to answer with
	fail500  int            // this many actions fail inside Nova (HTTP 500) first
	refuseUp int            // this many forced_down=false updates are refused (HTTP 400) first
	evacFail bool           // an evacuation is accepted, then fails and is rolled back
	settleIn int            // the number of GETs until a task ends
}

type server struct {
	Status, Task, Host string
	Power              int
}

func (f *fakeNova) handler(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if got := r.Header.Get("X-OpenStack-Nova-API-Version"); got != Microversion {
			t.Errorf("%s %s: microversion %q, want %q", r.Method, r.URL.Path, got, Microversion)
		}
		if r.Header.Get("X-Auth-Token") != "admin:admin" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch {
		case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v2.1/servers/"):
			if f.srv.Task != "" {
				if f.settleIn--; f.settleIn <= 0 {
					f.srv.Task = ""
				}
			}
			task := any(nil)
			if f.srv.Task != "" {
				task = f.srv.Task
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"server": map[string]any{"id": "u1", "name": "vm", "status": f.srv.Status,
				"OS-EXT-STS:task_state": task, "OS-EXT-STS:power_state": f.srv.Power, "OS-EXT-SRV-ATTR:host": f.srv.Host,
				"OS-EXT-SRV-ATTR:instance_name": "instance-00000001"}})
		case r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/action"):
			var body map[string]json.RawMessage
			b, _ := io.ReadAll(r.Body)
			_ = json.Unmarshal(b, &body)
			for k, v := range body {
				f.calls = append(f.calls, k+" "+string(v))
				if f.fail500 > 0 {
					f.fail500--
					w.WriteHeader(http.StatusInternalServerError)
					_, _ = w.Write([]byte(`{"computeFault": {"message": "database is locked", "code": 500}}`))
					return
				}
				if code := f.refuse[k]; code != 0 {
					w.WriteHeader(code)
					_, _ = w.Write([]byte(`{"conflictingRequest": {"message": "no", "code": 409}}`))
					return
				}
				switch k {
				case "os-start", "reboot":
					f.srv = server{Status: "ACTIVE", Power: 1, Host: f.srv.Host}
				case "evacuate":
					var e map[string]string
					_ = json.Unmarshal(v, &e)
					if !f.forced[f.srv.Host] {
						w.WriteHeader(http.StatusConflict)
						_, _ = w.Write([]byte(`{"conflictingRequest": {"message": "Compute service of ` + f.srv.Host + ` is still in use.", "code": 409}}`))
						return
					}
					if f.evacFail {
						w.WriteHeader(http.StatusOK)
						_, _ = w.Write([]byte(`{}`))
						return
					}
					if e["host"] == "" {
						e["host"] = "h3" // Nova's scheduler chooses
					}
					f.srv = server{Status: "REBUILD", Task: "rebuild_spawning", Host: e["host"], Power: 0}
					f.settleIn = 3
					defer func() { f.srv.Status, f.srv.Power = "ACTIVE", 1 }()
					w.WriteHeader(http.StatusOK) // as Nova answers an evacuation
					_, _ = w.Write([]byte(`{}`))
					return
				case "os-stop":
					f.srv = server{Status: "SHUTOFF", Power: 4, Host: f.srv.Host}
				}
			}
			w.WriteHeader(http.StatusAccepted)
		case r.Method == "GET" && r.URL.Path == "/v2.1/os-services":
			host := r.URL.Query().Get("host")
			_ = json.NewEncoder(w).Encode(map[string]any{"services": []map[string]any{{"id": "svc-" + host, "host": host,
				"binary": "nova-compute", "state": "down", "status": "enabled", "forced_down": f.forced[host]}}})
		case r.Method == "PUT" && strings.HasPrefix(r.URL.Path, "/v2.1/os-services/svc-"):
			var body map[string]bool
			b, _ := io.ReadAll(r.Body)
			_ = json.Unmarshal(b, &body)
			if _, ok := body["forced_down"]; !ok {
				t.Errorf("a service update without forced_down: %s", b)
			}
			host := strings.TrimPrefix(r.URL.Path, "/v2.1/os-services/svc-")
			if !body["forced_down"] && f.refuseUp > 0 {
				f.refuseUp--
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"badRequest": {"code": 400, "message": "Unable to force up host as done evacuation migration records remain"}}`))
				return
			}
			f.forced[host] = body["forced_down"]
			f.calls = append(f.calls, "forced_down "+host+" "+string(b))
			_ = json.NewEncoder(w).Encode(map[string]any{"service": map[string]any{"id": "svc-" + host, "host": host, "forced_down": f.forced[host]}})
		default:
			t.Errorf("unexpected call %s %s", r.Method, r.URL)
			w.WriteHeader(http.StatusNotFound)
		}
	})
}

func newFake(t *testing.T, s server) (*fakeNova, *Client) {
	f := &fakeNova{srv: s, forced: map[string]bool{}, refuse: map[string]int{}}
	ts := httptest.NewServer(f.handler(t))
	t.Cleanup(ts.Close)
	return f, NewDirect(ts.URL+"/v2.1", "admin:admin")
}

var fast = Timing{Poll: time.Millisecond, Settle: time.Second, Done: time.Second}

func start(host string) engine.Action {
	return engine.Action{ID: 7, Kind: engine.ActStart, VM: "instance-00000001", Host: engine.HostID(host)}
}

func TestCarryStartInPlace(t *testing.T) {
	for _, tc := range []struct {
		name string
		srv  server
		runs bool
		want []string
	}{
		// A crash: Nova still says ACTIVE (its lifecycle event comes 15 s late): hard reboot.
		{"crashed, Nova not told yet", server{Status: "ACTIVE", Power: 1, Host: "h1"}, false, []string{`reboot {"type":"HARD"}`}},
		{"crashed, Nova knows", server{Status: "ACTIVE", Power: 4, Host: "h1"}, false, []string{`reboot {"type":"HARD"}`}},
		// Nova's power sync stopped it already: started.
		{"stopped by Nova's sync", server{Status: "SHUTOFF", Power: 4, Host: "h1"}, false, []string{"os-start null"}},
		{"error", server{Status: "ERROR", Power: 0, Host: "h1"}, false, []string{`reboot {"type":"HARD"}`}},
		// Running, and hass sees it run: an order repeated after it was done restarts nothing.
		{"done already", server{Status: "ACTIVE", Power: 1, Host: "h1"}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newFake(t, tc.srv)
			tm := fast
			tm.Runs = func(string) bool { return tc.runs }
			called := false
			tm.OnStart = func() { called = true }
			if _, err := Carry(context.Background(), c, start("h1"), "u1", tm); err != nil {
				t.Fatal(err)
			}
			if strings.Join(f.calls, "|") != strings.Join(tc.want, "|") {
				t.Errorf("calls %q, want %q", f.calls, tc.want)
			}
			if called != (len(tc.want) > 0) {
				t.Errorf("OnStart called: %v", called)
			}
		})
	}
}

func TestCarryWaitsOutNovasTask(t *testing.T) {
	// Nova's own power-state sync is stopping the instance: hass waits for it to end, then
	// starts the instance.
	f, c := newFake(t, server{Status: "ACTIVE", Task: "powering-off", Power: 4, Host: "h1"})
	f.settleIn = 3
	f.mu.Lock()
	f.srv.Status = "SHUTOFF"
	f.mu.Unlock()
	if _, err := Carry(context.Background(), c, start("h1"), "u1", fast); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 1 || f.calls[0] != "os-start null" {
		t.Errorf("calls %q", f.calls)
	}
}

func TestCarryEvacuates(t *testing.T) {
	// The engine orders a start on h2 of an instance on h1 (fenced): h1's service is forced
	// down first (Nova refuses an evacuation otherwise), then the instance is evacuated to
	// h2 and checked ACTIVE there.
	f, c := newFake(t, server{Status: "ACTIVE", Power: 1, Host: "h1"})
	if _, err := Carry(context.Background(), c, start("h2"), "u1", fast); err != nil {
		t.Fatal(err)
	}
	want := []string{`forced_down h1 {"forced_down":true}`, `evacuate {"host":"h2"}`}
	if strings.Join(f.calls, "|") != strings.Join(want, "|") {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
	if f.srv.Host != "h2" || f.srv.Status != "ACTIVE" {
		t.Errorf("instance %+v", f.srv)
	}
	// The mark is cleared only once Nova lets it (after the host's nova-compute restarted),
	// and false is sent, not left out.
	f.refuseUp = 1
	if err := c.ForceDown(context.Background(), "h1", false); !errors.Is(err, ErrNotYet) {
		t.Fatalf("err %v, want ErrNotYet", err)
	}
	if err := c.ForceDown(context.Background(), "h1", false); err != nil {
		t.Fatal(err)
	}
	if f.forced["h1"] {
		t.Error("h1 still forced down")
	}
}

func TestCarryEvacuatesWhereNovasSchedulerChooses(t *testing.T) {
	// The policy leaves the target to Nova's scheduler: no host named, and Carry says where
	// the instance landed (h3, not the h2 hass's placement had named).
	f, c := newFake(t, server{Status: "ACTIVE", Power: 1, Host: "h1"})
	tm := fast
	tm.Scheduler = true
	landed, err := Carry(context.Background(), c, start("h2"), "u1", tm)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`forced_down h1 {"forced_down":true}`, `evacuate {}`}
	if strings.Join(f.calls, "|") != strings.Join(want, "|") {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
	if landed != "h3" {
		t.Errorf("landed on %q, want h3", landed)
	}
}

func TestCarryEvacuatesOnlyFromAFencedHost(t *testing.T) {
	// The engine orders a start on h2, but Nova has the crashed instance on h3, which hass
	// has not fenced (a crash loop's relocation, or an operator moved it meanwhile): h3 is
	// not forced down, nothing is evacuated; the instance is started again on h3, and Carry
	// says so.
	f, c := newFake(t, server{Status: "SHUTOFF", Power: 4, Host: "h3"})
	tm := fast
	tm.Fenced = func(h string) bool { return h == "h1" }
	landed, err := Carry(context.Background(), c, start("h2"), "u1", tm)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"os-start null"}; strings.Join(f.calls, "|") != strings.Join(want, "|") || f.forced["h3"] {
		t.Errorf("calls %q, forced %v: want %q and nothing forced down", f.calls, f.forced, want)
	}
	if landed != "h3" || f.srv.Host != "h3" {
		t.Errorf("landed %q, instance %+v: want h3", landed, f.srv)
	}
}

func TestCarryEvacuationRolledBack(t *testing.T) {
	// Nova took the evacuation, then it failed on the target and was rolled back: said at
	// once, not after the wait's end.
	f, c := newFake(t, server{Status: "ACTIVE", Power: 1, Host: "h1"})
	f.evacFail = true
	tm := fast
	tm.Done = time.Hour
	_, err := Carry(context.Background(), c, start("h2"), "u1", tm)
	if err == nil || !strings.Contains(err.Error(), "evacuation") || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("err %v", err)
	}
}

func TestCarryRefused(t *testing.T) {
	f, c := newFake(t, server{Status: "ACTIVE", Power: 4, Host: "h1"})
	f.refuse["reboot"] = http.StatusConflict
	_, err := Carry(context.Background(), c, start("h1"), "u1", fast)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("err %v, want a conflict", err)
	}
	// A reset of a hung guest is a hard reboot; a guest network down, a soft one.
	f.refuse = map[string]int{}
	f.calls = nil
	a := start("h1")
	a.Kind = engine.ActReboot
	if _, err := Carry(context.Background(), c, a, "u1", fast); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 1 || f.calls[0] != `reboot {"type":"SOFT"}` {
		t.Errorf("calls %q", f.calls)
	}
}

func TestCarryRetriesWhatFailedInsideNova(t *testing.T) {
	f, c := newFake(t, server{Status: "ACTIVE", Power: 4, Host: "h1"})
	f.fail500 = 2
	if _, err := Carry(context.Background(), c, start("h1"), "u1", fast); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 3 || f.srv.Power != 1 {
		t.Errorf("calls %q, instance %+v", f.calls, f.srv)
	}
	f.fail500, f.calls = transientTries, nil
	f.srv = server{Status: "ACTIVE", Power: 4, Host: "h1"}
	if _, err := Carry(context.Background(), c, start("h1"), "u1", fast); !errors.Is(err, ErrTransient) || len(f.calls) != transientTries {
		t.Errorf("err %v after calls %q", err, f.calls)
	}
}

func TestCarryTimesOut(t *testing.T) {
	f, c := newFake(t, server{Status: "ACTIVE", Power: 4, Host: "h1"})
	tm := fast
	// A task of Nova's that never ends: hass gives up waiting, and says so.
	f.mu.Lock()
	f.srv.Task = "reboot_started_hard"
	f.settleIn = 1 << 30
	f.mu.Unlock()
	tm.Settle = 20 * time.Millisecond
	_, err := Carry(context.Background(), c, start("h1"), "u1", tm)
	if err == nil || !strings.Contains(err.Error(), "still runs") {
		t.Fatalf("err %v", err)
	}
}

func TestOpenCloudsYAML(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "clouds.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := write("clouds:\n  test:\n    auth_type: admin_token\n    auth:\n      endpoint: http://nova:8774/v2.1\n      token: hass:svc\n")
	c, err := Open(context.Background(), p, "test")
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != "hass" || c.sc.Endpoint != "http://nova:8774/v2.1/" {
		t.Errorf("client %q %q", c.UserID, c.sc.Endpoint)
	}
	for _, tc := range []struct{ yaml, cloud, want string }{
		{"clouds:\n  test:\n    auth_type: admin_token\n    auth:\n      token: x\n", "test", "clouds.test.auth.endpoint"},
		{"clouds:\n  test:\n    auth_type: admin_token\n    auth:\n      endpoint: http://x/v2.1\n", "test", "clouds.test.auth.token"},
		{"clouds: [\n", "test", "clouds.yaml"},
		{"clouds:\n  other:\n    auth_type: none\n", "test", `cloud "test"`},
	} {
		_, err := Open(context.Background(), write(tc.yaml), tc.cloud)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one naming %s", tc.yaml, err, tc.want)
		}
	}
	if _, err := Open(context.Background(), p, ""); err == nil && os.Getenv("OS_CLOUD") == "" {
		t.Error("no cloud named: no error")
	}
}
