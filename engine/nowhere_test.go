package engine

import (
	"strings"
	"testing"
	"time"
)

// TestNowhereProofByBMCOff: a user's virsh migrate away from h1 whose every event was lost
// (hass learns of it from h1's list: shut off, migrated), while h3, a host in maintenance
// its admin shut down (not fenced, its lease lapsed), cannot list. The VM runs nowhere once
// every other host has listed since the switch-over; h3 proves it by its BMC's "off" since
// the migration began, and without that reading the proof waits for h3.
func TestNowhereProofByBMCOff(t *testing.T) {
	s := time.Second
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	setup := cat(std(DefaultPolicy()), []ev{
		{in: AddHost{Host: "h3", MemMiB: 4096}, recs: recs(RecHost)},
		{at: s, in: Maintenance{Host: "h3", On: true}, acts: acts(), recs: recs(RecHost)},
		// h1 lists v1 shut off by a migration: a user's migrate, destination unknown.
		{at: 10 * s, in: Snapshot{Host: "h1", Seq: 2, At: at(10 * s), Domains: []DomainStatus{{VM: "v1", State: DomShutoff, Reason: ReasonMigrated}}},
			acts: acts(), nrecs: recs(RecDetect)},
		// The admin shuts h3 down: its lease lapses.
		{at: 16 * s, in: HostLease{Host: "h3", Since: at(14 * s)}, acts: acts(), check: wantHostState("h3", "suspect")},
		// h2 lists after the switch-over, without v1.
		{at: 20 * s, in: Snapshot{Host: "h2", Seq: 1, At: at(20 * s)}, acts: acts(), nrecs: recs(RecDetect)},
	})
	t.Run("h3's BMC says off since the migration: runs nowhere, restarted", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(setup, []ev{
			{at: 21 * s, in: HostPower{Host: "h3", Off: true}, acts: acts()},
			// h2's next list (every host lists every 30 s) settles it.
			{at: 50 * s, in: Snapshot{Host: "h2", Seq: 2, At: at(50 * s)}, acts: acts("start@h1"), recs: recs(RecDetect),
				check: wantLogMsg("runs nowhere")},
		}))
	})
	t.Run("no BMC reading: the proof waits for h3 to list", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(setup, []ev{
			{at: 21 * s, in: Tick{}, acts: acts(), nrecs: recs(RecDetect)},
			{at: 50 * s, in: Snapshot{Host: "h2", Seq: 2, At: at(50 * s)}, acts: acts(), nrecs: recs(RecDetect)},
			{at: 5 * time.Minute, in: Tick{}, acts: acts(), nrecs: recs(RecDetect)},
			// h3 powers on and lists, without v1: now it runs nowhere.
			{at: 6 * time.Minute, in: HostLease{Host: "h3", Alive: true, Lease: 2}},
			{at: 6*time.Minute + s, in: Snapshot{Host: "h3", Seq: 1, At: at(6*time.Minute + s)}, any: true, recs: recs(RecDetect),
				check: wantLogMsg("nowhere")},
		}))
	})
}

// TestNowhereWaitsForAFencedHostPoweredOn: h3 was fenced by its BMC's "off", and its BMC
// says it is on again before its agent is back. A user's virsh migrate away from h1, its
// every event lost, may have landed there (the real controller powers a host on again
// after its fence; libvirtd runs before hass's agent): the proof that the VM runs nowhere
// waits for h3's list. Its agent, started again with its lease long gone, fences: a copy
// that appeared there and that fence destroyed is where the VM landed. Without the BMC's
// "on", a fenced host runs nothing.
func TestNowhereWaitsForAFencedHostPoweredOn(t *testing.T) {
	s := time.Second
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	setup := cat(std(DefaultPolicy()), []ev{
		{in: AddHost{Host: "h3", MemMiB: 4096}, recs: recs(RecHost)},
		// h3 listed once, without v1.
		{in: Snapshot{Host: "h3", Seq: 1, At: t0}, acts: acts()},
		{at: s, in: HostPower{Host: "h3", Off: true}, acts: acts(), check: wantHostState("h3", "fenced")},
	})
	migrated := []ev{
		// h1 lists v1 shut off by a migration: a user's migrate, destination unknown.
		{at: 10 * s, in: Snapshot{Host: "h1", Seq: 2, At: at(10 * s), Domains: []DomainStatus{{VM: "v1", State: DomShutoff, Reason: ReasonMigrated}}},
			acts: acts(), nrecs: recs(RecDetect)},
	}
	t.Run("off since its fence: h2's list proves it runs nowhere", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(setup, migrated, []ev{
			{at: 20 * s, in: Snapshot{Host: "h2", Seq: 1, At: at(20 * s)}, acts: acts("start@h1"), recs: recs(RecDetect),
				check: wantLogMsg("runs nowhere")},
		}))
	})
	on := cat(setup, []ev{
		{at: 5 * s, in: HostPower{Host: "h3"}, acts: acts(), check: wantLogMsg("powered on (BMC) while fenced")},
	}, migrated, []ev{
		{at: 20 * s, in: Snapshot{Host: "h2", Seq: 1, At: at(20 * s)}, acts: acts(), nrecs: recs(RecDetect)},
		{at: 2 * time.Minute, in: Tick{}, acts: acts(), nrecs: recs(RecDetect)},
	})
	t.Run("on again: the copy its agent's fence destroyed is where it landed", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(on, []ev{
			{at: 2*time.Minute + s, in: HostLease{Host: "h3", Alive: true, Lease: 7}},
			{at: 2*time.Minute + 2*s, in: Snapshot{Host: "h3", Seq: 2, At: at(2*time.Minute + 2*s),
				Domains: []DomainStatus{{VM: "v1", State: DomShutoff, Reason: ReasonFenced}}},
				acts: acts("start@h3"), recs: recs(RecDetect), check: wantLogMsg("migrated here from h1, then went down")},
		}))
	})
	t.Run("on again: its list without the vm completes the proof", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(on, []ev{
			{at: 2*time.Minute + s, in: Snapshot{Host: "h3", Seq: 2, At: at(2*time.Minute + s)}, acts: acts("start@h1"), recs: recs(RecDetect),
				check: wantLogMsg("runs nowhere")},
		}))
	})
	t.Run("off again: it runs nothing", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(on, []ev{
			{at: 2*time.Minute + s, in: HostPower{Host: "h3", Off: true}, acts: acts(), check: wantLogMsg("powered off (BMC) again")},
			{at: 2*time.Minute + 30*s, in: Snapshot{Host: "h2", Seq: 2, At: at(2*time.Minute + 30*s)}, acts: acts("start@h1"), recs: recs(RecDetect),
				check: wantLogMsg("runs nowhere")},
		}))
	})
}

// TestPoweredOnSurvivesARestore: a fenced host its BMC reported on is stored so (HostState
// PoweredOn), and a new leader restored from it waits for that host's list too; the field
// is refused for a host that is not fenced.
func TestPoweredOnSurvivesARestore(t *testing.T) {
	e := New(DefaultConfig())
	e.Step(t0, AddHost{Host: "h1", MemMiB: 4096, Fencing: true})
	e.Step(t0, HostPower{Host: "h1", Off: true})
	if hs, _ := e.Host("h1"); hs.State != "fenced" || hs.PoweredOn {
		t.Fatalf("fenced by its BMC's off: %+v", hs)
	}
	e.Step(t0.Add(time.Second), HostPower{Host: "h1"})
	hs, _ := e.Host("h1")
	if !hs.PoweredOn {
		t.Fatalf("on again while fenced: %+v, want powered_on", hs)
	}
	e2 := New(DefaultConfig())
	if out := e2.Step(t0.Add(2*time.Second), Restore{Hosts: []HostState{hs}}); out.Err != nil {
		t.Fatal(out.Err)
	}
	if got, _ := e2.Host("h1"); !got.PoweredOn || got.State != "fenced" {
		t.Fatalf("restored %+v, want fenced and powered on", got)
	}
	bad := hs
	bad.State, bad.LostAt = "up", time.Time{}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "powered_on") {
		t.Fatalf("powered_on on an up host: %v, want an error naming powered_on", err)
	}
}
