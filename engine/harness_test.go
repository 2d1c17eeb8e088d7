package engine

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// t0 is the start of every story.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// result is a test-only input: the harness turns it into an ActionResult for the most
// recent action of kind (on vm v1 unless vm is set), so stories need not know action ids.
type result struct {
	kind   ActKind
	vm     VMID
	err    string
	host   HostID // defaults to the action's host
	seq    uint64
	state  DomState
	reason Reason
	// unreached: the executor could not reach the hypervisor
	unreached bool
}

func (result) input() {}

// ev is one step of a story: an input at an offset from t0 and what must come of it.
type ev struct {
	at    time.Duration
	in    Input
	acts  []string     // exactly these actions, each "kind@host"; empty: no action at all
	any   bool         // do not check acts; nacts still applies
	nacts []ActKind    // none of these kinds may be issued
	recs  []RecordType // each must appear in the step's log
	nrecs []RecordType // none of these may appear
	err   string       // the step must be refused with an error containing this
	check func(t *testing.T, h *harness)
}

type harness struct {
	t    *testing.T
	e    *Engine
	acts []Action // every action issued so far
	logs []Record // every record logged so far
	last Output   // the last step's output (copied)
}

func newHarness(t *testing.T, cfg Config) *harness {
	return &harness{t: t, e: New(cfg)}
}

// lastAct returns the newest action of kind k for vm.
func (h *harness) lastAct(k ActKind, vm VMID) (Action, bool) {
	for i := len(h.acts) - 1; i >= 0; i-- {
		if a := h.acts[i]; a.Kind == k && (a.VM == vm || k == ActFence) {
			return a, true
		}
	}
	return Action{}, false
}

func (h *harness) step(i int, s ev) {
	t := h.t
	t.Helper()
	in := s.in
	if r, ok := in.(result); ok {
		vm := r.vm
		if vm == "" {
			vm = "v1"
		}
		a, found := h.lastAct(r.kind, vm)
		if !found {
			t.Fatalf("step %d: no %s action for %s to answer", i, r.kind, vm)
		}
		host := r.host
		if host == "" {
			host = a.Host
		}
		in = ActionResult{ID: a.ID, Err: r.err, Host: host, Seq: r.seq, State: r.state, Reason: r.reason, Unreached: r.unreached}
	}
	out := h.e.Step(t0.Add(s.at), in)
	h.last = Output{Actions: slices.Clone(out.Actions), Log: slices.Clone(out.Log), Err: out.Err}
	h.acts = append(h.acts, h.last.Actions...)
	h.logs = append(h.logs, h.last.Log...)
	desc := fmt.Sprintf("step %d (+%s %T%+v)", i, s.at, in, in)
	switch {
	case s.err == "" && out.Err != nil:
		t.Fatalf("%s: unexpected error: %v", desc, out.Err)
	case s.err != "" && out.Err == nil:
		t.Fatalf("%s: want an error containing %q, got none; log:\n%s", desc, s.err, logText(out.Log))
	case s.err != "" && !strings.Contains(out.Err.Error(), s.err):
		t.Fatalf("%s: error %q does not contain %q", desc, out.Err, s.err)
	}
	var got []string
	for _, a := range out.Actions {
		got = append(got, fmt.Sprintf("%s@%s", a.Kind, a.Host))
	}
	for _, a := range out.Actions {
		if slices.Contains(s.nacts, a.Kind) {
			t.Fatalf("%s: unwanted action %s; log:\n%s", desc, a, logText(out.Log))
		}
	}
	if !s.any && !slices.Equal(got, s.acts) {
		t.Fatalf("%s: actions %q, want %q; log:\n%s", desc, got, s.acts, logText(out.Log))
	}
	for _, rt := range s.recs {
		if !hasRec(out.Log, rt) {
			t.Fatalf("%s: no %q record in log:\n%s", desc, rt, logText(out.Log))
		}
	}
	for _, rt := range s.nrecs {
		if hasRec(out.Log, rt) {
			t.Fatalf("%s: unwanted %q record in log:\n%s", desc, rt, logText(out.Log))
		}
	}
	if s.check != nil {
		s.check(t, h)
	}
}

func (h *harness) run(steps []ev) {
	h.t.Helper()
	for i, s := range steps {
		h.step(i, s)
	}
}

func hasRec(log []Record, rt RecordType) bool {
	return slices.ContainsFunc(log, func(r Record) bool { return r.Type == rt })
}

func logText(log []Record) string {
	var b strings.Builder
	for _, r := range log {
		fmt.Fprintf(&b, "    %s\n", r)
	}
	return b.String()
}

// status returns the status of one VM; it fails the test when the VM is not protected.
func (h *harness) status(vm VMID) VMStatus {
	h.t.Helper()
	for _, s := range h.e.Status() {
		if s.VM == vm {
			return s
		}
	}
	h.t.Fatalf("%s is not in Status()", vm)
	return VMStatus{}
}

// ---- story building blocks -------------------------------------------------------------

func cat(parts ...[]ev) []ev {
	var out []ev
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// std is the standard cluster: h1 and h2 with 4 GiB each, v1 (1 GiB) protected on h1 with
// policy p and seen running there (seq 1).
func std(p Policy) []ev {
	return []ev{
		{in: AddHost{Host: "h1", MemMiB: 4096}, recs: []RecordType{RecHost}},
		{in: AddHost{Host: "h2", MemMiB: 4096}, recs: []RecordType{RecHost}},
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: p}, recs: []RecordType{RecProtect}},
		{in: obs(1, DomRunning, ReasonBooted), nrecs: []RecordType{RecDetect, RecOp}},
	}
}

// obs is an observation of v1 on h1.
func obs(seq uint64, st DomState, r Reason) Observe {
	return Observe{Host: "h1", VM: "v1", Seq: seq, State: st, Reason: r}
}

func obsAt(h HostID, seq uint64, st DomState, r Reason) Observe {
	return Observe{Host: h, VM: "v1", Seq: seq, State: st, Reason: r}
}

func req(op OpKind) Request { return Request{Op: op, VM: "v1"} }

func policy(f func(*Policy)) Policy {
	p := DefaultPolicy()
	if f != nil {
		f(&p)
	}
	return p
}

func acts(a ...string) []string { return a }

func recs(r ...RecordType) []RecordType { return r }

func wantDesired(d Desired) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		if got := h.status("v1").Desired; got != d {
			t.Fatalf("desired %s, want %s", got, d)
		}
	}
}

func wantHome(host HostID) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		if got := h.status("v1").Home; got != host {
			t.Fatalf("home %s, want %s", got, host)
		}
	}
}

func wantState(s string) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		if got := h.status("v1").State; got != s {
			t.Fatalf("state %s, want %s", got, s)
		}
	}
}

func wantProtected(want bool) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		if got := h.e.Protected("v1"); got != want {
			t.Fatalf("Protected(v1) = %t, want %t", got, want)
		}
	}
}

func all(fs ...func(*testing.T, *harness)) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		for _, f := range fs {
			f(t, h)
		}
	}
}

// sameStatus compares two Status() results.
func sameStatus(a, b []VMStatus) bool { return reflect.DeepEqual(a, b) }
