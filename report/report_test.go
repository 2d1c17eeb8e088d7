package report

import (
	"math"
	"testing"
	"time"

	"github.com/hassproject/hass/api"
)

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// at is t0 plus seconds.
func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func ptr(t time.Time) *time.Time { return &t }

// logb builds an event log in order.
type logb struct{ evs []api.Event }

func (b *logb) add(typ, vm string, t float64, msg string) *logb {
	b.evs = append(b.evs, api.Event{Seq: uint64(len(b.evs) + 1), At: at(t), Type: typ, VM: vm, Host: "h1", Msg: msg})
	return b
}

func (b *logb) protect(vm string, t float64) *logb {
	return b.add("protect", vm, t, "desired=running max-restarts=3 window=10m0s on-guest-shutdown=honour")
}

func (b *logb) detect(vm, kind string, t float64) *logb {
	return b.add("detect", vm, t, kind+": the emulator died")
}

func (b *logb) recovered(vm, kind string, fault, detect, rec float64) *logb {
	b.evs = append(b.evs, api.Event{Seq: uint64(len(b.evs) + 1), At: at(rec), Type: "recovered", VM: vm, Host: "h1", Kind: kind,
		Msg: kind + " after 1 attempt(s)", FaultAt: ptr(at(fault)), DetectAt: ptr(at(detect)), ActionAt: ptr(at(detect)), RecoveredAt: ptr(at(rec))})
	return b
}

func row(t *testing.T, rows []Row, name string) Row {
	t.Helper()
	for _, r := range rows {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no row %q in %+v", name, rows)
	return Row{}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func check(t *testing.T, what string, r Row, failures, recovered, downNow int, mean, worst, down, prot float64) {
	t.Helper()
	if r.Failures != failures || r.Recovered != recovered || r.DownNow != downNow || !near(float64(r.MeanTTR), mean) ||
		!near(float64(r.WorstTTR), worst) || !near(float64(r.Downtime), down) || !near(float64(r.Protected), prot) {
		t.Errorf("%s: got failures %d recovered %d down-now %d mean %v worst %v downtime %v protected %v\n"+
			"want failures %d recovered %d down-now %d mean %v worst %v downtime %v protected %v",
			what, r.Failures, r.Recovered, r.DownNow, r.MeanTTR, r.WorstTTR, r.Downtime, r.Protected,
			failures, recovered, downNow, mean, worst, down, prot)
	}
	want := 100.0
	if prot > 0 {
		want = 100 * (1 - down/prot)
	}
	if !near(r.Avail, want) {
		t.Errorf("%s: availability %v%%, want %v%%", what, r.Avail, want)
	}
}

func TestCrashAndRecovery(t *testing.T) {
	b := (&logb{}).protect("web", 0).detect("web", "vm-crash", 100.2).
		add("action", "web", 100.2, "start web on h1 (vm-crash)").recovered("web", "vm-crash", 100, 100.2, 101.5)
	r := Compute(b.evs, nil, at(0), at(1000))
	check(t, "web", row(t, r.VMs, "web"), 1, 1, 0, 1.5, 1.5, 1.5, 1000)
	check(t, "vm-crash", row(t, r.Kinds, "vm-crash"), 1, 1, 0, 1.5, 1.5, 1.5, 1000)
	check(t, "total", r.Total, 1, 1, 0, 1.5, 1.5, 1.5, 1000)
	if len(r.VMs) != 1 || len(r.Kinds) != 1 || !r.Since.Equal(at(0)) || !r.Until.Equal(at(1000)) {
		t.Fatalf("%+v", r)
	}
}

func TestUserStopIsNoDowntime(t *testing.T) {
	b := (&logb{}).protect("db", 0).
		add("op", "db", 10, "stop accepted id=4 source=api").add("action", "db", 10, "destroy db on h1 (op:4)").
		add("op", "db", 11, "stop id=4 done: seen down").
		add("op", "db", 50, "shutdown inferred source=libvirt (virsh shutdown): desired=stopped").
		add("expected", "db", 51, "shutoff/shutdown explained by the user's shutdown")
	r := Compute(b.evs, nil, at(0), at(100))
	check(t, "db", row(t, r.VMs, "db"), 0, 0, 0, 0, 0, 0, 100)
	if len(r.Kinds) != 0 {
		t.Fatalf("kinds %+v, want none", r.Kinds)
	}
}

func TestFailureBeforeSince(t *testing.T) {
	b := (&logb{}).protect("a", 0).detect("a", "vm-crash", 10).recovered("a", "vm-crash", 9, 10, 12).
		detect("a", "guest-panic", 95).recovered("a", "guest-panic", 94, 95, 106) // straddles since=100
	r := Compute(b.evs, nil, at(100), at(200))
	// Only the second: 6 s of its 12 inside the window; its time to recover is whole.
	check(t, "a", row(t, r.VMs, "a"), 1, 1, 0, 12, 12, 6, 100)
	if len(r.Kinds) != 1 || r.Kinds[0].Name != "guest-panic" {
		t.Fatalf("kinds %+v, want guest-panic alone", r.Kinds)
	}
}

func TestNoRecoveryYet(t *testing.T) {
	b := (&logb{}).protect("a", 0).detect("a", "host-down", 50).
		add("alert", "a", 60, "no host fits to restart it").detect("a", "host-down", 70) // still the same outage
	r := Compute(b.evs, nil, at(0), at(100))
	check(t, "a", row(t, r.VMs, "a"), 1, 0, 1, 0, 0, 50, 100)
	check(t, "host-down", row(t, r.Kinds, "host-down"), 1, 0, 1, 0, 0, 50, 100)
}

func TestOverlappingOutagesCountOnce(t *testing.T) {
	// The second fault (agent clock) is stamped before the first recovery was logged: the two
	// windows overlap, [10, 20] and [18, 25]; the downtime is their union, 15 s.
	b := (&logb{}).protect("a", 0).detect("a", "vm-crash", 10.1).recovered("a", "vm-crash", 10, 10.1, 20).
		detect("a", "vm-crash", 20.1).recovered("a", "vm-crash", 18, 20.1, 25)
	r := Compute(b.evs, nil, at(0), at(100))
	check(t, "a", row(t, r.VMs, "a"), 2, 2, 0, 8.5, 10, 15, 100)
	check(t, "kind", row(t, r.Kinds, "vm-crash"), 2, 2, 0, 8.5, 10, 15, 100)
}

func TestEarlierDetectionExtendsTheOutage(t *testing.T) {
	// A crash whose restart failed and that crashed again: one outage from the first
	// detection; the recovered event carries the last fault only.
	b := (&logb{}).protect("a", 0).detect("a", "vm-crash", 10).
		add("alert", "a", 12, "recovery attempt 1 failed: qemu died; next try at +5s").
		recovered("a", "vm-crash", 17, 17.2, 19)
	r := Compute(b.evs, nil, at(0), at(100))
	check(t, "a", row(t, r.VMs, "a"), 1, 1, 0, 9, 9, 9, 100)
}

func TestRecoveryCancelledByTheUser(t *testing.T) {
	b := (&logb{}).protect("a", 0).detect("a", "vm-crash", 10).
		add("op", "a", 13, "stop accepted id=7 source=api").
		add("op", "a", 13, "recovery from vm-crash cancelled: the user wants it stopped")
	r := Compute(b.evs, nil, at(0), at(100))
	check(t, "a", row(t, r.VMs, "a"), 1, 0, 0, 0, 0, 3, 100)
}

func TestGaveUpUntilTheUserActs(t *testing.T) {
	b := (&logb{}).protect("a", 0).detect("a", "guest-panic", 10).
		add("gave-up", "a", 30, "guest-panic: 3 restarts in 10m0s; the vm is in error until a user starts it").
		add("alert", "a", 30, "hass gave up on it: an operator should look").
		add("op", "a", 70, "start accepted id=9 source=api").
		detect("a", "vm-crash", 90) // a new outage, open at the end
	r := Compute(b.evs, nil, at(0), at(100))
	check(t, "a", row(t, r.VMs, "a"), 2, 0, 1, 0, 0, 60+10, 100)
	check(t, "panic", row(t, r.Kinds, "guest-panic"), 1, 0, 0, 0, 0, 60, 100)
	check(t, "crash", row(t, r.Kinds, "vm-crash"), 1, 0, 1, 0, 0, 10, 100)
}

func TestGaveUpWithoutDetection(t *testing.T) {
	// The detection was trimmed from the log: the gave-up event opens the outage.
	b := (&logb{}).add("gave-up", "a", 40, "io-error: paused on a disk error; the vm is in error until a user starts it")
	r := Compute(b.evs, nil, at(0), at(100))
	check(t, "a", row(t, r.VMs, "a"), 1, 0, 1, 0, 0, 60, 100)
	row(t, r.Kinds, "io-error")
}

func TestProtectionWindow(t *testing.T) {
	b := (&logb{}).protect("late", 50).detect("late", "vm-crash", 60).recovered("late", "vm-crash", 59, 60, 61).
		add("forget", "late", 80, "unprotected by the user").
		protect("late", 90). // protected again: 10 s more
		add("policy", "x", 0, "")
	b.evs = b.evs[:len(b.evs)-1]
	r := Compute(b.evs, []string{"quiet"}, at(0), at(100))
	check(t, "late", row(t, r.VMs, "late"), 1, 1, 0, 2, 2, 2, 40)
	check(t, "quiet", row(t, r.VMs, "quiet"), 0, 0, 0, 0, 0, 0, 100) // protected, no event: all window
	check(t, "total", r.Total, 1, 1, 0, 2, 2, 2, 140)
	// A failure open when the VM was unprotected ends there.
	b = (&logb{}).protect("x", 0).detect("x", "vm-crash", 10).add("forget", "x", 15, "deleted")
	r = Compute(b.evs, nil, at(0), at(100))
	check(t, "x", row(t, r.VMs, "x"), 1, 0, 0, 0, 0, 5, 15)
	// A VM unprotected before the window is no row.
	b = (&logb{}).protect("old", 0).add("forget", "old", 5, "deleted")
	if r = Compute(b.evs, nil, at(10), at(100)); len(r.VMs) != 0 {
		t.Fatalf("rows %+v, want none", r.VMs)
	}
}

func TestProtectedBeforeTheLog(t *testing.T) {
	// The first event of the VM is no protection: it was protected before the log begins.
	b := (&logb{}).add("op", "a", 20, "reboot accepted id=1 source=api").add("protect", "a", 30, "restored: running")
	r := Compute(b.evs, nil, at(0), at(100))
	check(t, "a", row(t, r.VMs, "a"), 0, 0, 0, 0, 0, 0, 100)
}

func TestKindsAndTotalAcrossVMs(t *testing.T) {
	b := (&logb{}).protect("a", 0).protect("b", 0).
		detect("a", "vm-crash", 10).recovered("a", "vm-crash", 10, 10, 12).
		detect("b", "vm-crash", 11).recovered("b", "vm-crash", 11, 11, 15).
		detect("b", "host-down", 40).recovered("b", "host-down", 38, 40, 48).
		add("host", "", 38, "lease expired: suspect")
	r := Compute(b.evs, nil, at(0), at(100))
	check(t, "a", row(t, r.VMs, "a"), 1, 1, 0, 2, 2, 2, 100)
	check(t, "b", row(t, r.VMs, "b"), 2, 2, 0, 7, 10, 14, 100)
	check(t, "vm-crash", row(t, r.Kinds, "vm-crash"), 2, 2, 0, 3, 4, 6, 200)
	check(t, "host-down", row(t, r.Kinds, "host-down"), 1, 1, 0, 10, 10, 10, 200)
	check(t, "total", r.Total, 3, 3, 0, 5.333, 10, 16, 200) // means are to the millisecond
	if r.VMs[0].Name != "a" || r.Kinds[0].Name != "host-down" {
		t.Fatalf("not sorted: %+v %+v", r.VMs, r.Kinds)
	}
}

func TestOutOfOrderInputIsSortedBySeq(t *testing.T) {
	b := (&logb{}).protect("a", 0).detect("a", "vm-crash", 10).recovered("a", "vm-crash", 10, 10, 13)
	rev := []api.Event{b.evs[2], b.evs[0], b.evs[1]}
	r := Compute(rev, nil, at(0), at(100))
	check(t, "a", row(t, r.VMs, "a"), 1, 1, 0, 3, 3, 3, 100)
}

func TestEmpty(t *testing.T) {
	r := Compute(nil, nil, at(0), at(100))
	if len(r.VMs) != 0 || len(r.Kinds) != 0 || r.VMs == nil || r.Kinds == nil {
		t.Fatalf("%+v", r)
	}
	check(t, "total", r.Total, 0, 0, 0, 0, 0, 0, 0)
}
