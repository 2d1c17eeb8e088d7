package engine

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// fuzzBytes hands out the fuzzer's bytes; it returns zeros once they run out.
type fuzzBytes struct {
	b []byte
	i int
}

func (f *fuzzBytes) done() bool { return f.i >= len(f.b) }

func (f *fuzzBytes) u8() byte {
	if f.i >= len(f.b) {
		return 0
	}
	f.i++
	return f.b[f.i-1]
}

func (f *fuzzBytes) n(n int) int { return int(f.u8()) % n }

func (f *fuzzBytes) bit() bool { return f.u8()&1 == 1 }

var (
	fuzzHosts = []HostID{"h1", "h2", "h3", "h9", ""} // h9 and "" are never added (unless by the fuzzer)
	fuzzVMs   = []VMID{"v1", "v2", "v3", "vx", ""}
)

// fuzzRun decodes data into a sequence of inputs and checks the engine's invariants.
type fuzzRun struct {
	t     *testing.T
	e     *Engine
	in    fuzzBytes
	naive bool
	now   time.Time // the time given to the last Step
	enow  time.Time // the engine's clock: the latest time it was given
	seqs  map[HostID]uint64
	acts  []Action
	// userStopped: the last accepted request for the vm was stop, shutdown or delete, and
	// since then nothing reported the vm up anywhere.
	userStopped map[VMID]bool
	// twoCopies: hass alerted that the vm runs twice, with the copy on the host paused; it
	// must not say so again while nothing showed that copy gone (down, its host fenced) and
	// nothing else changed for the vm (a request, protection, a move of its home).
	twoCopies map[VMID]map[HostID]bool
	steps     int
	trace     []func() string // formatted only when a check fails
}

func (r *fuzzRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("%s\ninputs:\n%s\nengine:\n%s", fmt.Sprintf(format, args...), r.traceText(), dumpEngine(r.e))
}

func (r *fuzzRun) traceText() string {
	lines := make([]string, len(r.trace))
	for i, f := range r.trace {
		lines[i] = f()
	}
	return strings.Join(lines, "\n")
}

// dumpEngine shows the engine's inner state, for failure messages.
func dumpEngine(e *Engine) string {
	var b strings.Builder
	for _, id := range e.hostIx {
		h := e.hosts[id]
		fmt.Fprintf(&b, "  host %s %s lost=+%s\n", id, h.state, h.lostAt.Sub(t0))
	}
	for _, id := range e.sortedVMs() {
		v := e.vms[id]
		fmt.Fprintf(&b, "  vm %s home=%s desired=%s gen=%d errored=%t", id, v.home, v.desired, v.gen, v.errored)
		if !v.vanishedAt.IsZero() {
			fmt.Fprintf(&b, " vanished=+%s", v.vanishedAt.Sub(t0))
		}
		if op := v.op; op != nil {
			fmt.Fprintf(&b, " op=%s/%d deadline=+%s", op.Kind, op.ID, op.Deadline.Sub(t0))
		}
		if f := v.fail; f != nil {
			fmt.Fprintf(&b, " fail=%s attempts=%d next=+%s act=%d@%s deadline=+%s", f.kind, f.attempts,
				f.next.Sub(t0), f.actID, f.actHost, f.actDeadline.Sub(t0))
		}
		for _, o := range v.obs {
			fmt.Fprintf(&b, " [%s seq=%d %s/%s]", o.host, o.seq, o.state, o.reason)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (r *fuzzRun) host() HostID { return fuzzHosts[r.in.n(len(fuzzHosts))] }

func (r *fuzzRun) vm() VMID {
	// mostly real vms
	if r.in.n(8) == 0 {
		return fuzzVMs[3+r.in.n(2)]
	}
	return fuzzVMs[r.in.n(3)]
}

func (r *fuzzRun) advance() {
	switch r.in.n(12) {
	case 0: // same moment
	case 1:
		r.now = r.now.Add(time.Millisecond)
	case 2:
		r.now = r.now.Add(100 * time.Millisecond)
	case 3, 4:
		r.now = r.now.Add(time.Second)
	case 5:
		r.now = r.now.Add(5 * time.Second)
	case 6:
		r.now = r.now.Add(30 * time.Second)
	case 7:
		r.now = r.now.Add(2 * time.Minute)
	case 8:
		r.now = r.now.Add(11 * time.Minute)
	case 9:
		r.now = r.now.Add(-2 * time.Second) // the caller's clock steps back
	case 10:
		r.now = r.now.Add(time.Duration(r.in.u8()) * 10 * time.Millisecond)
	case 11:
		r.now = r.now.Add(time.Duration(r.in.u8()) * time.Second)
	}
}

func (r *fuzzRun) seq(h HostID) uint64 {
	s := r.seqs[h]
	switch r.in.n(8) {
	case 0:
		return 0 // unstamped
	case 1:
		return s // a repeat
	case 2:
		if s > 3 {
			return s - uint64(r.in.n(4)) // late
		}
		return 1
	case 3:
		if r.in.n(16) == 0 {
			r.seqs[h] = math.MaxUint64 - uint64(r.in.n(3))
			return r.seqs[h]
		}
	}
	if s < math.MaxUint64 {
		s++
	}
	r.seqs[h] = s
	return s
}

func (r *fuzzRun) state() DomState {
	if r.in.n(16) == 0 {
		return DomState(r.in.u8()) // garbage
	}
	return DomState(r.in.n(int(DomAbsent) + 1))
}

func (r *fuzzRun) reason() Reason {
	if r.in.n(16) == 0 {
		return Reason(r.in.u8())
	}
	return Reason(r.in.n(int(ReasonFenced) + 1))
}

func (r *fuzzRun) at() time.Time {
	switch r.in.n(4) {
	case 0:
		return time.Time{}
	case 1:
		return r.now.Add(-time.Duration(r.in.u8()) * 100 * time.Millisecond)
	case 2:
		return r.now.Add(time.Hour) // an agent clock far ahead
	}
	return r.now
}

func (r *fuzzRun) policy() Policy {
	p := Policy{
		Priority:        r.in.n(5) - 1,
		MaxRestarts:     r.in.n(5) - 1, // -1 is refused
		Window:          []time.Duration{0, time.Second, 30 * time.Second, 10 * time.Minute, -time.Second}[r.in.n(5)],
		MaxRelocations:  r.in.n(4) - 1,
		OnGuestShutdown: GuestShutdownPolicy(r.in.n(3)),
	}
	if r.in.bit() {
		p.AntiAffinity = "g"
	}
	if r.in.n(4) != 0 { // mostly valid
		if p.MaxRestarts < 0 {
			p.MaxRestarts = 1
		}
		if p.Window <= 0 {
			p.Window = time.Minute
		}
		if p.MaxRelocations < 0 {
			p.MaxRelocations = 1
		}
		p.OnGuestShutdown %= 2
	}
	return p
}

func (r *fuzzRun) actionResult() ActionResult {
	var res ActionResult
	if len(r.acts) > 0 && r.in.n(6) != 0 {
		a := r.acts[len(r.acts)-1-r.in.n(min(len(r.acts), 8))]
		res = ActionResult{ID: a.ID, Host: a.Host}
	} else {
		res = ActionResult{ID: uint64(r.in.u8()), Host: r.host()}
	}
	switch r.in.n(6) {
	case 0, 1:
		res.Err = "boom"
	case 2:
		res.Err, res.Unreached = "cannot connect to libvirt", true
	}
	if r.in.bit() {
		res.Seq = r.seq(res.Host)
		res.State, res.Reason = r.state(), r.reason()
	}
	return res
}

func (r *fuzzRun) next() Input {
	switch r.in.n(16) {
	case 0, 1:
		return Tick{}
	case 2:
		return AddHost{Host: r.host(), MemMiB: []int{0, 512, 2048, 4096, -1}[r.in.n(5)], Fencing: r.in.bit(),
			VCPUs: []int{0, 0, 2, 8}[r.in.n(4)], Reserved: r.in.n(4) == 0, Cluster: []string{"", "", "c1", "nope"}[r.in.n(4)]}
	case 3:
		return HostLease{Host: r.host(), Alive: r.in.n(3) != 0, Lease: int64(r.in.n(3))}
	case 4:
		return FenceResult{Host: r.host(), OK: r.in.bit(), Err: "bmc"}
	case 5:
		return Protect{VM: r.vm(), Host: r.host(), MemMiB: []int{0, 512, 1024, 3000}[r.in.n(4)], Policy: r.policy(),
			Desired: Desired(r.in.n(5))}
	case 6:
		switch r.in.n(8) {
		case 0:
			return Unprotect{VM: r.vm()}
		case 1:
			return Maintenance{Host: r.host(), On: r.in.bit(), Migrate: r.in.bit()}
		case 2:
			return HostPower{Host: r.host(), Off: r.in.bit()}
		case 3:
			return SetCluster{Name: []string{"c1", "default", ""}[r.in.n(3)], TolerateHostFailures: r.in.n(3)}
		case 4:
			if r.in.bit() {
				return DeleteCluster{Name: []string{"c1", "default"}[r.in.n(2)]}
			}
			return RemoveHost{Host: r.host()}
		}
		return Tick{}
	case 7, 8:
		op := OpKind(r.in.n(int(OpResume) + 1))
		if r.in.n(32) == 0 {
			op = OpKind(r.in.u8())
		}
		req := Request{Op: op, VM: r.vm(), Source: Source(r.in.n(5))}
		if r.in.bit() {
			req.Target = r.host()
		}
		return req
	case 9, 10, 11:
		h := r.host()
		return Observe{Host: h, VM: r.vm(), Seq: r.seq(h), State: r.state(), Reason: r.reason(), At: r.at()}
	case 12:
		h := r.host()
		kind := SignalKind(r.in.n(int(SigGuestPanic) + 2))
		return Signal{Host: h, VM: r.vm(), Seq: r.seq(h), Kind: kind, Watchdog: WatchdogAction(r.in.n(8)), At: r.at()}
	case 13:
		h := r.host()
		s := Snapshot{Host: h, Seq: r.seq(h), At: r.at()}
		for _, v := range fuzzVMs[:3] {
			if r.in.bit() {
				s.Domains = append(s.Domains, DomainStatus{VM: v, State: r.state(), Reason: r.reason()})
			}
		}
		return s
	case 14:
		return r.actionResult()
	default:
		return wakeTick{}
	}
}

// wakeTick asks the run to Tick at the engine's NextWake.
type wakeTick struct{}

func (wakeTick) input() {}

// maskNow drops the one Status field that depends on the clock alone.
func maskNow(ss []VMStatus) []VMStatus {
	out := slices.Clone(ss)
	for i := range out {
		out[i].Restarts = 0
	}
	return out
}

func isUp(s DomState) bool { return s == DomRunning || s == DomPaused }

// ran: the report shows the vm up, or crashed, which it can only do after it ran (the
// engine infers "somebody started it" from a crash of a vm it knew was down).
func ran(s DomState, r Reason) bool {
	switch r {
	case ReasonFailed, ReasonCrashed, ReasonPanicked, ReasonWatchdog:
		return true
	}
	return isUp(s) || s == DomCrashed
}

func (r *fuzzRun) vmOfAction(id uint64) (Action, bool) {
	for _, a := range r.acts {
		if a.ID == id {
			return a, true
		}
	}
	return Action{}, false
}

// step feeds one input and checks every invariant that must hold after it.
func (r *fuzzRun) step(in Input) {
	r.t.Helper()
	if _, ok := in.(wakeTick); ok {
		w := r.e.NextWake()
		if w.IsZero() {
			return
		}
		r.now = w
		in = Tick{}
	}
	r.steps++
	at := r.now
	r.trace = append(r.trace, func() string { return fmt.Sprintf("  +%s %T%+v", at.Sub(t0), in, in) })

	// Inputs that may be refused: remember what they must leave unchanged.
	var before []VMStatus
	var wakeBefore time.Time
	hostsBefore := map[HostID]string{}
	switch in.(type) {
	case Request, Protect, Unprotect, AddHost, HostLease, Observe, Snapshot, ActionResult,
		RemoveHost, SetCluster, DeleteCluster, Maintenance, HostPower:
		before = maskNow(r.e.Status())
		wakeBefore = r.e.NextWake()
		for _, h := range fuzzHosts {
			hostsBefore[h] = r.e.HostState(h)
		}
	}

	var costBefore []VMStatus
	if res, ok := in.(ActionResult); ok && res.Unreached {
		costBefore = r.e.Status()
	}

	homes := map[VMID]HostID{}
	for _, s := range r.e.Status() {
		homes[s.VM] = s.Home
	}

	hostStates, clusterStates := r.e.Hosts(), r.e.Clusters()
	vmStates := map[VMID]VMState{}
	for _, id := range fuzzVMs {
		if st, ok := r.e.State(id); ok {
			vmStates[id] = st
		}
	}
	advanced := r.now.After(r.enow)
	out := r.e.Step(r.now, in)
	if advanced {
		r.enow = r.now
	}
	acts := slices.Clone(out.Actions)
	log := slices.Clone(out.Log)
	r.acts = append(r.acts, acts...)
	for _, a := range acts {
		r.trace = append(r.trace, func() string { return "      -> " + a.String() })
	}
	if out.Err != nil {
		err := out.Err
		r.trace = append(r.trace, func() string { return "      -> refused: " + err.Error() })
	}
	for _, rec := range log {
		if rec.Type != RecAction {
			r.trace = append(r.trace, func() string { return "      .. " + rec.String() })
		}
	}

	// Every change of a host's state is logged as a RecHost record naming it: a runner that
	// stores e.Host(r.Host) for each such record keeps its stored copy exact.
	r.checkHostRecords(hostStates, log)
	// Likewise every change of a cluster, as a RecCluster record naming it.
	if now := r.e.Clusters(); !reflect.DeepEqual(now, clusterStates) && !slices.ContainsFunc(log, func(rec Record) bool { return rec.Type == RecCluster && rec.Cluster != "" }) {
		r.fatalf("clusters changed from %+v to %+v with no cluster record", clusterStates, now)
	}
	// Every VM whose stored state changed is in Touched.
	for _, id := range fuzzVMs {
		st, ok := r.e.State(id)
		was, wasOK := vmStates[id]
		if (ok != wasOK || !reflect.DeepEqual(st, was)) && !slices.Contains(out.Touched, id) {
			r.fatalf("vm %s's state changed but the step does not list it as touched:\nwas %+v\nnow %+v", id, was, st)
		}
	}

	// Err: nothing changed.
	if out.Err != nil {
		if len(acts) != 0 || len(log) != 0 {
			r.fatalf("refused input (%v) produced actions %v log %v", out.Err, acts, log)
		}
		if after := maskNow(r.e.Status()); !sameStatus(before, after) {
			r.fatalf("refused input (%v) changed the status:\nbefore %+v\nafter  %+v", out.Err, before, after)
		}
		// (NextWake may leave out timers that are already due, so it depends on the clock)
		if w := r.e.NextWake(); !advanced && !w.Equal(wakeBefore) {
			r.fatalf("refused input (%v) changed NextWake from %s to %s", out.Err, wakeBefore, w)
		}
		for _, h := range fuzzHosts {
			if r.e.HostState(h) != hostsBefore[h] {
				r.fatalf("refused input (%v) changed host %s", out.Err, h)
			}
		}
		return
	}

	// An action that never reached the hypervisor costs the VM nothing, and nothing is
	// issued until the host reports again or the retry delay passes.
	if costBefore != nil {
		if len(acts) != 0 {
			r.fatalf("an unreached result issued %v at once", acts)
		}
		for _, b := range costBefore {
			for _, a := range r.e.Status() {
				if a.VM == b.VM && (a.Restarts > b.Restarts || a.Relocations > b.Relocations) {
					r.fatalf("an unreached result raised %s's restarts %d->%d or relocations %d->%d",
						a.VM, b.Restarts, a.Restarts, b.Relocations, a.Relocations)
				}
			}
		}
	}

	// Actions are current when issued (except a delete answered in the same step, which
	// forgets the vm at once).
	for _, a := range acts {
		if !r.e.Current(a) && a.Kind != ActDelete && r.e.Protected(a.VM) {
			r.fatalf("action %s is not current in the step that issued it", a)
		}
	}

	// What this input tells about the user's intent.
	switch in := in.(type) {
	case Request:
		switch {
		case in.Op == OpStop || in.Op == OpShutdown || in.Op == OpDelete:
			r.userStopped[in.VM] = true
		case in.Op > OpResume:
			// refused: an unknown operation changes nothing
		default:
			// Any other operation is a newer intent than the stop (a reboot or a migration
			// after a stop may well mean "run it"); the invariant only covers a stop that is
			// the user's last word.
			r.userStopped[in.VM] = false
		}
	case Observe:
		if ran(in.State, in.Reason) {
			r.userStopped[in.VM] = false
		}
	case Snapshot:
		for _, d := range in.Domains {
			if ran(d.State, d.Reason) {
				r.userStopped[d.VM] = false
			}
		}
	case ActionResult:
		if a, ok := r.vmOfAction(in.ID); ok {
			if ran(in.State, in.Reason) || (in.Err == "" && in.State == DomUnknown &&
				(a.Kind == ActStart || a.Kind == ActResume || a.Kind == ActMigrate || a.Kind == ActReset)) {
				r.userStopped[a.VM] = false
			}
		}
	case Unprotect:
		delete(r.userStopped, in.VM)
	}
	for _, rec := range log {
		// The engine's documented way back: a stop that did not take effect while the vm
		// was last seen up restores the intent from before it, with an alert.
		if rec.Type == RecAlert && strings.Contains(rec.Msg, "did not take effect") {
			r.userStopped[rec.VM] = false
		}
		if rec.Type == RecForget {
			delete(r.userStopped, rec.VM)
		}
	}

	// A second copy is alerted once.
	gone := func(vm VMID, h HostID) {
		if m := r.twoCopies[vm]; m != nil {
			delete(m, h)
		}
	}
	switch in := in.(type) {
	case Observe:
		if !isUp(in.State) {
			gone(in.VM, in.Host)
		}
	case Snapshot:
		listed := map[VMID]bool{}
		for _, d := range in.Domains {
			listed[d.VM] = true
			if !isUp(d.State) {
				gone(d.VM, in.Host)
			}
		}
		for vm := range r.twoCopies {
			if !listed[vm] {
				gone(vm, in.Host)
			}
		}
	case Request:
		delete(r.twoCopies, in.VM)
	case Protect:
		delete(r.twoCopies, in.VM)
	}
	for _, s := range r.e.Status() {
		if homes[s.VM] != s.Home {
			delete(r.twoCopies, s.VM)
		}
	}
	for vm, m := range r.twoCopies {
		for h := range m {
			if r.e.HostState(h) == "fenced" {
				delete(m, h)
			}
		}
		if !r.e.Protected(vm) {
			delete(r.twoCopies, vm)
		}
	}
	for _, rec := range log {
		if rec.Type == RecForget {
			delete(r.twoCopies, rec.VM)
		}
		if rec.Type != RecAlert || !strings.Contains(rec.Msg, "two copies run") {
			continue
		}
		if r.twoCopies[rec.VM][rec.Host] {
			r.fatalf("second copy of %s on %s alerted again: %s", rec.VM, rec.Host, rec.Msg)
		}
		if r.twoCopies[rec.VM] == nil {
			r.twoCopies[rec.VM] = map[HostID]bool{}
		}
		r.twoCopies[rec.VM][rec.Host] = true
	}

	if !r.naive {
		for _, a := range acts {
			if a.Kind != ActStart {
				continue
			}
			if _, isReq := in.(Request); isReq {
				continue // an accepted start request: the user asked
			}
			if r.userStopped[a.VM] {
				r.fatalf("%s issued, but the user's last request stopped %s and nothing reported it up since", a, a.VM)
			}
			if r.e.Protected(a.VM) {
				if d := r.desired(a.VM); d != WantRunning && d != WantPaused {
					r.fatalf("%s issued for a vm the engine itself wants %s", a, d)
				}
			}
		}
	}

	// After a Tick at t, the engine wants to be woken after t, or never.
	if _, ok := in.(Tick); ok {
		if w := r.e.NextWake(); !w.IsZero() && !w.After(r.enow) {
			r.fatalf("after a Tick at +%s NextWake is +%s", r.enow.Sub(t0), w.Sub(t0))
		}
	}
}

func (r *fuzzRun) desired(id VMID) Desired {
	for _, s := range r.e.Status() {
		if s.VM == id {
			return s.Desired
		}
	}
	return WantAbsent
}

func runFuzz(t *testing.T, data []byte) {
	r := &fuzzRun{t: t, in: fuzzBytes{b: data}, now: t0, seqs: map[HostID]uint64{},
		userStopped: map[VMID]bool{}, twoCopies: map[VMID]map[HostID]bool{}}
	flags := r.in.u8()
	cfg := DefaultConfig()
	r.naive = flags&1 == 1
	cfg.Naive = r.naive
	r.e = New(cfg)

	// A cluster to start from: 2 or 3 hosts, 3 vms seen running.
	nh := 2 + int(flags>>1)&1
	for i := 0; i < nh; i++ {
		r.step(AddHost{Host: fuzzHosts[i], MemMiB: []int{0, 2048, 4096, 1024}[r.in.n(4)], Fencing: r.in.bit()})
	}
	for _, v := range fuzzVMs[:3] {
		h := fuzzHosts[r.in.n(nh)]
		r.step(Protect{VM: v, Host: h, MemMiB: 1024, Policy: DefaultPolicy()})
		r.step(Observe{Host: h, VM: v, Seq: r.seq(h), State: DomRunning, Reason: ReasonBooted, At: r.now})
	}
	for !r.in.done() && r.steps < 400 {
		r.advance()
		r.step(r.next())
	}
	// Let every timer run out: each wake must make progress.
	horizon := r.enow.Add(30 * time.Minute)
	for i := 0; i < 400; i++ {
		w := r.e.NextWake()
		if w.IsZero() || w.After(horizon) {
			break
		}
		if w.Before(r.enow) {
			w = r.enow
		}
		r.now = w
		r.step(Tick{})
	}
	// With nothing but time passing, every stop, shutdown, delete or suspend has ended by
	// now: done, or failed with the VM in error. None is tried again forever.
	if r.e.NextWake().After(horizon) || r.e.NextWake().IsZero() {
		for _, id := range r.e.sortedVMs() {
			if op := r.e.vms[id].op; op != nil && (op.Kind == OpStop || op.Kind == OpShutdown || op.Kind == OpDelete || op.Kind == OpSuspend) {
				r.fatalf("%s of %s still in flight 30 minutes after the last input (deadline +%s)", op.Kind, id, op.Deadline.Sub(t0))
			}
		}
	}
}

func FuzzEngine(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 2})
	// crash, restart result, user stop, old running event, tick far ahead
	f.Add([]byte{2, 3, 0, 2, 1, 0, 1, 0, 9, 0, 0, 4, 3, 6, 0, 14, 5, 7, 0, 2, 0, 4, 8, 0, 0, 8, 0, 15})
	f.Add([]byte("\x01naive: stop then observe shutoff then tick tick tick"))
	f.Add([]byte("\x02host lease lost, fence, relocate: three hosts and a long story of bytes"))
	f.Add([]byte{6, 0, 1, 1, 0, 0, 1, 2, 5, 3, 2, 0, 1, 1, 7, 2, 0, 3, 0, 1, 8, 15, 15, 15, 15})
	f.Fuzz(func(t *testing.T, data []byte) {
		runFuzz(t, data)
	})
}

// TestFuzzEngineSeeds runs a few thousand pseudo-random byte strings through the fuzz
// harness, so `go test -run Test` exercises the invariants too.
func TestFuzzEngineSeeds(t *testing.T) {
	var x uint64 = 0x9e3779b97f4a7c15
	for i := 0; i < 3000; i++ {
		n := 16 + i%300
		data := make([]byte, n)
		for j := range data {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			data[j] = byte(x)
		}
		t.Run("", func(t *testing.T) { runFuzz(t, data) })
		if t.Failed() {
			t.Logf("failing input: %q", data)
			return
		}
	}
}

// checkHostRecords fails the run if a host's HostState changed in a step that logged no
// RecHost record naming it.
func (r *fuzzRun) checkHostRecords(before []HostState, log []Record) {
	r.t.Helper()
	logged := map[HostID]bool{}
	for _, rec := range log {
		if rec.Type == RecHost {
			if rec.Host == "" {
				r.fatalf("a host record without a host: %s", rec)
			}
			logged[rec.Host] = true
		}
	}
	was := map[HostID]HostState{}
	for _, s := range before {
		was[s.Host] = s
	}
	for _, s := range r.e.Hosts() {
		if b, ok := was[s.Host]; (!ok || b != s) && !logged[s.Host] {
			r.fatalf("host %s changed from %+v to %+v with no host record", s.Host, b, s)
		}
	}
}
