package engine

import (
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
