package engine

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// restarted moves every VM of e into a new engine, as a restarted daemon does.
func restarted(t *testing.T, e *Engine, now time.Time) *Engine {
	t.Helper()
	n := New(e.cfg)
	for _, id := range e.hostIx {
		n.Step(now, AddHost{Host: id, MemMiB: e.hosts[id].mem, Fencing: e.hosts[id].fencing})
	}
	var states []VMState
	for _, id := range e.sortedVMs() {
		s, _ := e.State(id)
		states = append(states, s)
	}
	if out := n.Step(now, Restore{NextID: e.LastID(), VMs: states}); out.Err != nil {
		t.Fatalf("restore: %v", out.Err)
	}
	for _, s := range states {
		got, ok := n.State(s.VM)
		if !ok {
			t.Fatalf("%s not restored", s.VM)
		}
		// An unanswered recovery attempt is not waited for after a restore: it is issued
		// again at the first tick after it (the reports that waited come first).
		if s.Failure != nil && s.Failure.InFlight {
			s.Failure.InFlight = false
			s.Failure.Next = now.Add(DefaultConfig().InFlightGrace)
		}
		if s.Op != nil {
			s.Op.Pending = false
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("restored state differs:\n got %+v\nwant %+v", got, s)
		}
	}
	return n
}

func TestRestoreShutdownKeepsItsDeadline(t *testing.T) {
	cfg := DefaultConfig()
	e := New(cfg)
	e.Step(t0, AddHost{Host: "h1", MemMiB: 4096})
	e.Step(t0, Protect{VM: "v1", Host: "h1", MemMiB: 512, Policy: DefaultPolicy()})
	e.Step(t0, Observe{Host: "h1", VM: "v1", Seq: 1, State: DomRunning, Reason: ReasonBooted})
	out := e.Step(t0.Add(time.Second), Request{Op: OpShutdown, VM: "v1"})
	if out.Err != nil || len(out.Actions) != 1 || out.Actions[0].Kind != ActShutdown {
		t.Fatalf("shutdown: %+v", out)
	}
	opID := out.Actions[0].ID
	e.Step(t0.Add(2*time.Second), ActionResult{ID: opID, Host: "h1", Seq: 2, State: DomRunning, Reason: ReasonBooted})

	// The daemon dies; a new one restores and resyncs: the guest still runs.
	n := restarted(t, e, t0.Add(30*time.Second))
	out = n.Step(t0.Add(31*time.Second), Snapshot{Host: "h1", Seq: 10, Domains: []DomainStatus{{VM: "v1", State: DomRunning}}})
	if len(out.Actions) != 1 || out.Actions[0].Kind != ActShutdown {
		t.Fatalf("after restore the shutdown is driven again: got %+v", out.Actions)
	}
	if out.Actions[0].ID <= opID {
		t.Fatalf("action id %d after restore is not above %d", out.Actions[0].ID, opID)
	}
	for _, r := range out.Log {
		if strings.Contains(r.Msg, "inferred") {
			t.Fatalf("a running guest read as a user's start: %s", r)
		}
	}
	// At the original deadline (shutdown timeout after the request) it escalates.
	out = n.Step(t0.Add(time.Second+cfg.ShutdownTimeout), Tick{})
	if len(out.Actions) != 1 || out.Actions[0].Kind != ActDestroy {
		t.Fatalf("at the deadline: want a destroy, got %+v", out.Actions)
	}
	if s, _ := n.Get("v1"); s.Desired != WantStopped {
		t.Fatalf("desired %s, want stopped", s.Desired)
	}
}

func TestRestoreRecoveryInFlight(t *testing.T) {
	e := New(DefaultConfig())
	e.Step(t0, AddHost{Host: "h1", MemMiB: 4096})
	e.Step(t0, Protect{VM: "v1", Host: "h1", MemMiB: 512, Policy: DefaultPolicy()})
	e.Step(t0, Observe{Host: "h1", VM: "v1", Seq: 1, State: DomRunning, Reason: ReasonBooted})
	out := e.Step(t0.Add(time.Second), Observe{Host: "h1", VM: "v1", Seq: 2, State: DomShutoff, Reason: ReasonFailed, At: t0.Add(time.Second)})
	if len(out.Actions) != 1 || out.Actions[0].Kind != ActStart {
		t.Fatalf("crash: want a start, got %+v", out.Actions)
	}
	for _, up := range []bool{true, false} {
		n := restarted(t, e, t0.Add(3*time.Second))
		st := DomShutoff
		if up {
			st = DomRunning
		}
		out = n.Step(t0.Add(4*time.Second), Snapshot{Host: "h1", Seq: 10, Domains: []DomainStatus{{VM: "v1", State: st}}})
		if up {
			if len(out.Actions) != 0 || !hasRec(out.Log, RecRecovered) {
				t.Fatalf("running after restore: want a recovered record and no action, got %+v", out)
			}
			continue
		}
		if len(out.Actions) != 1 || out.Actions[0].Kind != ActStart {
			t.Fatalf("down after restore: want a start at once, got %+v", out.Actions)
		}
	}
}

func TestRestoreRefusesBadState(t *testing.T) {
	good := VMState{VM: "v1", Home: "h1", Policy: DefaultPolicy(), Gen: 1}
	cases := []struct {
		edit func(*VMState)
		want string
	}{
		{func(s *VMState) { s.VM = "" }, "vm"},
		{func(s *VMState) { s.Home = "h9" }, "unknown host"},
		{func(s *VMState) { s.Gen = 0 }, "gen"},
		{func(s *VMState) { s.Policy.Window = 0 }, "window"},
		{func(s *VMState) { s.Op = &OpState{ID: 3, Kind: 99, Deadline: t0} }, "op.kind"},
		{func(s *VMState) { s.Op = &OpState{ID: 3, Kind: OpStop} }, "op.deadline"},
		{func(s *VMState) { s.Failure = &FailState{Kind: FailVMCrash} }, "failure.detect_at"},
		{func(s *VMState) { s.Desired = WantAbsent }, "absent"},
	}
	for _, c := range cases {
		e := New(DefaultConfig())
		e.Step(t0, AddHost{Host: "h1"})
		s := good
		c.edit(&s)
		out := e.Step(t0, Restore{VMs: []VMState{good, s}})
		if out.Err == nil || !strings.Contains(out.Err.Error(), c.want) {
			t.Errorf("want an error naming %q, got %v", c.want, out.Err)
		}
		if e.Protected("v1") {
			t.Errorf("%q: a refused restore changed the engine", c.want)
		}
	}
}

// Hosts go out and back in: a new engine restored with Hosts holds the same host states,
// fences a restored suspect host once its margin passed (issuing its power fence again when
// it has one), and evacuates the VMs of a restored fenced host.
func TestRestoreHosts(t *testing.T) {
	e := New(DefaultConfig())
	now := t0
	e.Step(now, AddHost{Host: "h1", MemMiB: 4096})
	e.Step(now, AddHost{Host: "h2", MemMiB: 4096, Fencing: true})
	e.Step(now, AddHost{Host: "h3", MemMiB: 4096})
	e.Step(now, AddHost{Host: "h4", MemMiB: 4096})
	e.Step(now, AddHost{Host: "h5", MemMiB: 0})
	e.Step(now, AddHost{Host: "h6", MemMiB: 0})
	e.Step(now, Protect{VM: "v1", Host: "h1", MemMiB: 512, Policy: DefaultPolicy()})
	e.Step(now, Protect{VM: "v3", Host: "h3", MemMiB: 512, Policy: DefaultPolicy()})
	for _, v := range []struct {
		vm VMID
		h  HostID
	}{{"v1", "h1"}, {"v3", "h3"}} {
		e.Step(now, Observe{Host: v.h, VM: v.vm, Seq: 1, State: DomRunning, Reason: ReasonBooted, At: now})
	}
	now = now.Add(10 * time.Second)
	out := e.Step(now, HostLease{Host: "h3", Alive: false, Since: now.Add(-8 * time.Second)})
	if !hasRec(out.Log, RecHost) {
		t.Fatalf("no host record for the expiry: %v", out.Log)
	}
	now = now.Add(time.Second)
	e.Step(now, HostLease{Host: "h2", Alive: false, Since: now.Add(-9 * time.Second)})
	e.Step(now, HostLease{Host: "h1", Alive: false, Since: now.Add(-9 * time.Second)})
	// h3 fenced (its margin passed), h1 and h2 suspect.
	now = now.Add(1500 * time.Millisecond)
	e.Step(now, Tick{})
	want := e.Hosts()
	if got := []string{want[0].State, want[1].State, want[2].State, want[3].State}; !reflect.DeepEqual(got, []string{"suspect", "suspect", "fenced", "up"}) {
		t.Fatalf("host states %v", got)
	}
	if s, ok := e.Host("h3"); !ok || s != want[2] || s.LostAt != t0.Add(10*time.Second) || s.LastSeen != t0.Add(2*time.Second) {
		t.Fatalf("Host(h3) = %+v, %t", s, ok)
	}
	var vms []VMState
	for _, id := range []VMID{"v1", "v3"} {
		s, _ := e.State(id)
		vms = append(vms, s)
	}

	n := New(DefaultConfig())
	out = n.Step(now, Restore{NextID: e.LastID(), VMs: vms, Hosts: want})
	if out.Err != nil {
		t.Fatal(out.Err)
	}
	if got := n.Hosts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored hosts differ:\n got %+v\nwant %+v", got, want)
	}
	var start *Action
	for i, a := range out.Actions {
		if a.Kind == ActStart && a.VM == "v3" {
			start = &out.Actions[i]
		}
	}
	if start == nil {
		// Its evacuation was in flight when the state was stored: the first list of the
		// host it went to says whether it took.
		out = n.Step(now, Snapshot{Host: vms[1].Failure.ActHost, Seq: 1, At: now})
		for i, a := range out.Actions {
			if a.Kind == ActStart && a.VM == "v3" {
				start = &out.Actions[i]
			}
		}
	}
	if start == nil || start.Host == "h3" {
		t.Fatalf("v3 (on fenced h3) not evacuated: %v\nstored %+v %+v\nnow %+v", out.Actions, vms[1], vms[1].Failure, n.Status())
	}
	// h2's power fence is ordered again PowerFenceDelay after the restore (a new engine
	// does not know how long the hosts without a lease have not been a majority).
	if out := n.Step(t0.Add(15*time.Second), Tick{}); len(out.Actions) != 0 {
		t.Fatalf("ordered before PowerFenceDelay passed since the restore: %v", out.Actions)
	}
	out = n.Step(t0.Add(15500*time.Millisecond), Tick{})
	if len(out.Actions) != 1 || out.Actions[0].Kind != ActFence || out.Actions[0].Host != "h2" || out.Actions[0].ID <= e.LastID() {
		t.Fatalf("h2's fence not ordered again with a new id: %v", out.Actions)
	}
	// h1 (no power fence) is fenced once its margin passed and, the engine being new, once
	// the majority rule's settle time passed since the restore.
	n.Step(t0.Add(18*time.Second), Tick{})
	if s, _ := n.Host("h1"); s.State != "suspect" {
		t.Fatalf("h1 %+v before the settle time", s)
	}
	n.Step(t0.Add(19*time.Second), Tick{})
	if s, _ := n.Host("h1"); s.State != "fenced" {
		t.Fatalf("h1 %+v after its margin", s)
	}

	for _, bad := range []struct {
		s    HostState
		want string
	}{
		{HostState{MemMiB: 1, State: "up"}, "host: empty"},
		{HostState{Host: "x", MemMiB: -1, State: "up"}, "mem_mib"},
		{HostState{Host: "x", State: "down"}, "state"},
		{HostState{Host: "x", State: "suspect"}, "lost_at"},
	} {
		if err := bad.s.Validate(); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Validate(%+v) = %v, want %q", bad.s, err, bad.want)
		}
		if out := New(DefaultConfig()).Step(now, Restore{Hosts: []HostState{bad.s}}); out.Err == nil {
			t.Errorf("Restore accepted %+v", bad.s)
		}
	}
	if out := New(DefaultConfig()).Step(now, Restore{VMs: vms}); out.Err == nil {
		t.Errorf("Restore accepted VMs whose homes are unknown")
	}
}

// The leading controller dies with the destination of the migration it ordered (it ran
// there, TestHassMigrationDestinationLost on the rig): the new leader restores the migration
// in flight, the old term's order is void, and its result, when it comes, answers nothing.
// Once the destination is fenced and the source lists the VM still running, the migration
// failed: it ends at once, not at its deadline, and the VM is not restarted.
func TestRestoreMigrationDestinationFenced(t *testing.T) {
	cfg := DefaultConfig()
	e := New(cfg)
	for _, h := range []HostID{"h1", "h2", "h3", "h4"} {
		e.Step(t0, AddHost{Host: h, MemMiB: 4096})
	}
	e.Step(t0, Protect{VM: "v1", Host: "h4", MemMiB: 512, Policy: DefaultPolicy()})
	e.Step(t0, Observe{Host: "h4", VM: "v1", Seq: 1, State: DomRunning, Reason: ReasonBooted, At: t0})
	out := e.Step(t0.Add(time.Second), Request{Op: OpMigrate, VM: "v1", Target: "h3"})
	if out.Err != nil || len(out.Actions) != 1 || out.Actions[0].Kind != ActMigrate {
		t.Fatalf("migrate: %+v", out)
	}
	migID := out.Actions[0].ID
	// The incoming copy shows on h3; then h3 loses power, and the leader with it.
	e.Step(t0.Add(2*time.Second), Observe{Host: "h3", VM: "v1", Seq: 2, State: DomPaused, Reason: ReasonMigrated, At: t0.Add(2 * time.Second)})

	at := func(d time.Duration) time.Time { return t0.Add(d) }
	n := restarted(t, e, at(5*time.Second))
	// Every live agent lists its domains (the first word of each); h3 is dead.
	for i, h := range []HostID{"h1", "h2", "h4"} {
		s := Snapshot{Host: h, Seq: uint64(10 + i), At: at(5 * time.Second)}
		if h == "h4" {
			s.Domains = []DomainStatus{{VM: "v1", State: DomRunning, Reason: ReasonBooted}}
		}
		if out := n.Step(at(5*time.Second), s); len(out.Actions) != 0 {
			t.Fatalf("list of %s after the takeover: want no action, got %+v", h, out.Actions)
		}
	}
	n.Step(at(7*time.Second), HostLease{Host: "h3", Alive: false, Since: at(2 * time.Second)})
	out = n.Step(at(7*time.Second+cfg.SelfFenceMargin), Tick{})
	if !strings.Contains(logText(out.Log), "h3 fenced") {
		t.Fatalf("h3 not fenced:\n%s", logText(out.Log))
	}
	fencedAt := at(7*time.Second + cfg.SelfFenceMargin)
	if s, _ := n.Get("v1"); s.Op == nil {
		t.Fatalf("the migration ended before the source was listed since the fence: %+v", s)
	}
	// The old term's order comes back failed: its ID answers nothing any more.
	n.Step(fencedAt.Add(20*time.Second), ActionResult{ID: migID, Host: "h4", Err: "client socket is closed"})
	// h4's next list, taken after the fence: the VM runs there still.
	out = n.Step(fencedAt.Add(30*time.Second), Snapshot{Host: "h4", Seq: 20, At: fencedAt.Add(30 * time.Second),
		Domains: []DomainStatus{{VM: "v1", State: DomRunning, Reason: ReasonBooted}}})
	s, _ := n.Get("v1")
	if s.Op != nil || s.Home != "h4" || s.Failure != "" || len(out.Actions) != 0 {
		t.Fatalf("after the source's list: want the migration over, home h4, no failure, no action; got %+v, actions %+v\n%s", s, out.Actions, logText(out.Log))
	}
	if !strings.Contains(logText(out.Log), "migrate id=1 failed") || hasRec(out.Log, RecDetect) {
		t.Fatalf("want the migration failed and nothing detected:\n%s", logText(out.Log))
	}
	out = n.Step(at(10*time.Minute), Tick{})
	if len(out.Actions) != 0 {
		t.Fatalf("later: want no action, got %+v", out.Actions)
	}
}
