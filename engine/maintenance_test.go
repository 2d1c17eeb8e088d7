package engine

import (
	"testing"
	"time"
)

// TestSuspendWhileMaintenanceHostAway: a suspend asked while its VM's host, in maintenance,
// is without a lease (the admin powered it off) reaches nobody; it fails, and the VM is in
// error. When the host is back and lists the VM down, the suspend is moot: the VM is a paused
// VM that went down with the maintenance, restarted when maintenance ends like the others
// (its memory is lost: it runs).
func TestSuspendWhileMaintenanceHostAway(t *testing.T) {
	s := time.Second
	h := newHarness(t, DefaultConfig())
	h.run(std(DefaultPolicy()))
	h.run([]ev{
		{at: s, in: Maintenance{Host: "h1", On: true}, acts: acts(), recs: recs(RecHost)},
		{at: 20 * s, in: HostLease{Host: "h1", Since: t0.Add(18 * s)}, acts: acts(), check: wantHostState("h1", "suspect")},
		{at: 25 * s, in: req(OpSuspend), acts: acts("suspend@h1"), check: wantDesired(WantPaused)},
		{at: 85 * s, in: Tick{}, acts: acts("suspend@h1")},
		{at: 145 * s, in: Tick{}, acts: acts("suspend@h1")},
		{at: 205 * s, in: Tick{}, acts: acts("suspend@h1")},
		{at: 265 * s, in: Tick{}, acts: acts(), recs: recs(RecAlert), check: wantState("error")},
		// Back, and v1 is listed down: it died with the power. No longer in error; held
		// while the host is in maintenance.
		{at: 330 * s, in: HostLease{Host: "h1", Alive: true, Lease: 2}, acts: acts()},
		{at: 331 * s, in: Snapshot{Host: "h1", Seq: 10, Domains: []DomainStatus{{VM: "v1", State: DomShutoff}}}, acts: acts(),
			recs: recs(RecOp, RecDetect), check: wantWaiting("v1", "its host h1 is in maintenance")},
		// Off: v1 is restarted there, and runs.
		{at: 410 * s, in: Maintenance{Host: "h1"}, acts: acts("start@h1"), recs: recs(RecHost)},
		{at: 411 * s, in: result{kind: ActStart, state: DomRunning, seq: 11}, recs: recs(RecRecovered), check: wantDesired(WantRunning)},
	})
}

// TestGiveUpPausedStaysDown: a paused VM that goes down and cannot be restarted is given up,
// and stays down: its memory is lost (desired running, for a user's start), and the next
// sight of it down does not take it out of error.
func TestGiveUpPausedStaysDown(t *testing.T) {
	s := time.Second
	p := policy(func(p *Policy) { p.MaxRestarts, p.MaxRelocations = 0, 0 })
	h := newHarness(t, DefaultConfig())
	h.run(std(p))
	h.run([]ev{
		{at: s, in: req(OpSuspend), acts: acts("suspend@h1")},
		{at: 2 * s, in: obs(2, DomPaused, ReasonUser), check: wantDesired(WantPaused)},
		{at: 3 * s, in: obs(3, DomCrashed, ReasonPanicked), any: true, recs: recs(RecGaveUp), check: all(wantState("error"), wantDesired(WantRunning))},
		{at: 4 * s, in: Snapshot{Host: "h1", Seq: 4, Domains: []DomainStatus{{VM: "v1", State: DomShutoff, Reason: ReasonCrashed}}},
			acts: acts(), nrecs: recs(RecOp, RecDetect), check: wantState("error")},
		{at: 5 * time.Minute, in: Tick{}, acts: acts(), check: wantState("error")},
	})
}
