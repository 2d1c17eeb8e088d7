package engine

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func wantWaiting(vm VMID, sub string) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		t.Helper()
		got := h.status(vm).Waiting
		if (sub == "") != (got == "") || !strings.Contains(got, sub) {
			t.Fatalf("%s waiting %q, want %q", vm, got, sub)
		}
	}
}

func running(vm VMID, host HostID, seq uint64) Observe {
	return Observe{Host: host, VM: vm, Seq: seq, State: DomRunning, Reason: ReasonBooted}
}

// TestClusters: clusters are created, updated and deleted with records; hosts join only
// existing ones; a cluster with hosts, and the default one, cannot be deleted; a host with
// protected VMs can neither leave its cluster nor be removed.
func TestClusters(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.run([]ev{
		{in: AddHost{Host: "h1", MemMiB: 4096, Cluster: "c1"}, err: `cluster "c1": no such cluster`},
		{in: SetCluster{Name: "c1", TolerateHostFailures: -1}, err: "tolerate_host_failures -1"},
		{in: SetCluster{Name: "", TolerateHostFailures: 0}, err: "name: empty"},
		{in: SetCluster{Name: "c1"}, recs: recs(RecCluster)},
		{in: SetCluster{Name: "c1"}, nrecs: recs(RecCluster)}, // no change, no record
		{in: SetCluster{Name: "c1", TolerateHostFailures: 1}, recs: recs(RecCluster)},
		{in: AddHost{Host: "h1", MemMiB: 4096, Cluster: "c1"}, recs: recs(RecHost)},
		{in: AddHost{Host: "h2", MemMiB: 4096, Cluster: "c1"}},
		{in: AddHost{Host: "h3", MemMiB: 4096}},
		{in: DeleteCluster{Name: "c1"}, err: "it has hosts"},
		{in: DeleteCluster{Name: "default"}, err: "cannot be deleted"},
		{in: DeleteCluster{Name: "c9"}, err: "no such cluster"},
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: DefaultPolicy()}},
		{in: AddHost{Host: "h1", MemMiB: 4096}, err: "protected VMs live on it (v1)"},
		{in: RemoveHost{Host: "h1"}, err: "protected VMs live on it (v1)"},
		{in: RemoveHost{Host: "h9"}, err: "unknown host"},
		{in: RemoveHost{Host: "h2"}, recs: recs(RecHost), check: func(t *testing.T, h *harness) {
			if _, ok := h.e.Host("h2"); ok {
				t.Fatal("h2 still known")
			}
		}},
	})
	got := h.e.Clusters()
	want := []ClusterState{{Name: "c1", TolerateHostFailures: 1}, {Name: "default"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Clusters() = %+v, want %+v", got, want)
	}
	if s, _ := h.e.Get("v1"); s.Cluster != "c1" {
		t.Fatalf("v1 cluster %q, want c1", s.Cluster)
	}
	// A cluster record names its cluster: a runner stores e.Cluster(r.Cluster).
	for _, r := range h.logs {
		if r.Type == RecCluster && r.Cluster == "" {
			t.Fatalf("cluster record without a cluster: %s", r)
		}
	}
	h.run([]ev{
		{in: RemoveHost{Host: "h3"}},
		{in: SetCluster{Name: "c2"}},
		{in: DeleteCluster{Name: "c2"}, recs: recs(RecCluster), check: func(t *testing.T, h *harness) {
			if _, ok := h.e.Cluster("c2"); ok {
				t.Fatal("c2 still exists")
			}
		}},
	})
}

// TestRecoveryStaysInItsCluster: a host of c1 is lost; its VM goes to the other c1 host,
// not to the emptier host of c2; when no c1 host is left, it waits and says why.
func TestRecoveryStaysInItsCluster(t *testing.T) {
	s := time.Second
	h := newHarness(t, DefaultConfig())
	h.run([]ev{
		{in: SetCluster{Name: "c1"}},
		{in: SetCluster{Name: "c2"}},
		{in: AddHost{Host: "h1", MemMiB: 4096, Cluster: "c1"}},
		{in: AddHost{Host: "h2", MemMiB: 2048, Cluster: "c1"}},
		{in: AddHost{Host: "h3", MemMiB: 65536, Cluster: "c2"}},
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: DefaultPolicy()}},
		{in: running("v1", "h1", 1)},
		{at: 10 * s, in: HostLease{Host: "h1", Since: t0.Add(8 * s)}},
		{at: 12 * s, in: Tick{}, acts: acts("start@h2"), check: wantHome("h2")},
		{at: 13 * s, in: result{kind: ActStart}, recs: recs(RecRecovered)},
		{at: 20 * s, in: HostLease{Host: "h2", Since: t0.Add(18 * s)}},
		{at: 22 * s, in: Tick{}, acts: acts(), recs: recs(RecAlert),
			check: wantWaiting("v1", "cluster c1 has no host up (of 2: 2 not up)")},
	})
}

// TestPlacementRules: vCPUs, reserved hosts and hard anti-affinity, through the engine.
func TestPlacementRules(t *testing.T) {
	s := time.Second
	t.Run("vcpus", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run([]ev{
			{in: AddHost{Host: "h1", MemMiB: 8192, VCPUs: 8}},
			{in: AddHost{Host: "h2", MemMiB: 8192, VCPUs: 2}},
			{in: AddHost{Host: "h3", MemMiB: 4096, VCPUs: 4}},
			{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, VCPUs: 4, Policy: DefaultPolicy()}},
			{in: running("v1", "h1", 1)},
			// h2 has more memory but too few vCPUs.
			{at: s, in: req(OpMigrate), acts: acts("migrate@h1"), check: wantTarget("h3")},
		})
	})
	t.Run("reserved host takes recoveries first, never a user's move", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run([]ev{
			{in: AddHost{Host: "h1", MemMiB: 4096}},
			{in: AddHost{Host: "h2", MemMiB: 4096}},
			{in: AddHost{Host: "h3", MemMiB: 2048, Reserved: true}, recs: recs(RecHost)},
			{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: DefaultPolicy()}},
			{in: running("v1", "h1", 1)},
			{at: s, in: Request{Op: OpMigrate, VM: "v1", Target: "h3"}, err: "reserved for recoveries"},
			{at: 2 * s, in: req(OpMigrate), acts: acts("migrate@h1"), check: wantTarget("h2")},
			{at: 3 * s, in: result{kind: ActMigrate}, check: wantHome("h2")},
			{at: 3 * s, in: Observe{Host: "h1", VM: "v1", Seq: 2, State: DomShutoff, Reason: ReasonMigrated}},
			{at: 10 * s, in: HostLease{Host: "h2", Since: t0.Add(8 * s)}},
			{at: 12 * s, in: Tick{}, acts: acts("start@h3"), check: wantHome("h3")},
		})
		if st, _ := h.e.Host("h3"); !st.Reserved {
			t.Fatal("h3 not reserved in HostState")
		}
	})
	t.Run("user start never on a spare", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run([]ev{
			{in: AddHost{Host: "h1", MemMiB: 4096}},
			{in: AddHost{Host: "h2", MemMiB: 4096, Reserved: true}},
			{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: DefaultPolicy(), Desired: WantStopped}},
			{in: Observe{Host: "h1", VM: "v1", Seq: 1, State: DomShutoff, Reason: ReasonShutdown}},
			{at: s, in: Maintenance{Host: "h1", On: true}},
			{at: 2 * s, in: req(OpStart), err: "only reserved hosts of cluster default have room"},
		})
	})
	t.Run("hard anti-affinity", func(t *testing.T) {
		hard := policy(func(p *Policy) { p.AntiAffinity, p.AntiAffinityHard = "db", true })
		h := newHarness(t, DefaultConfig())
		h.run([]ev{
			{in: AddHost{Host: "h1", MemMiB: 4096}},
			{in: AddHost{Host: "h2", MemMiB: 4096}},
			{in: AddHost{Host: "h3", MemMiB: 4096}},
			{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: hard}},
			{in: Protect{VM: "v2", Host: "h2", MemMiB: 1024, Policy: hard}},
			{in: Protect{VM: "v3", Host: "h3", MemMiB: 512, Policy: DefaultPolicy()}},
			{in: running("v1", "h1", 1)},
			{in: running("v2", "h2", 1)},
			{in: running("v3", "h3", 1)},
			{at: s, in: Request{Op: OpMigrate, VM: "v1", Target: "h2"}, err: "anti-affinity group db, which is hard"},
			// h2 has the most room, but runs v2: h1's v1 goes to h3.
			{at: 10 * s, in: HostLease{Host: "h1", Since: t0.Add(8 * s)}},
			{at: 12 * s, in: Tick{}, acts: acts("start@h3"), check: wantHome("h3")},
			{at: 13 * s, in: result{kind: ActStart}},
			// h3 is lost: v1 may go neither to h2 (v2) nor to h1 (down): it waits, and says why.
			{at: 20 * s, in: HostLease{Host: "h3", Since: t0.Add(18 * s)}},
			{at: 22 * s, in: Tick{}, any: true, check: func(t *testing.T, h *harness) {
				if got := h.status("v1"); got.Home != "h3" || !strings.Contains(got.Waiting, "anti-affinity group db: every host of cluster default with room runs one") {
					t.Fatalf("v1: home %s waiting %q", got.Home, got.Waiting)
				}
				if got := h.status("v3"); got.Home != "h2" {
					t.Fatalf("v3 (no group) should go to h2, home %s", got.Home)
				}
			}},
		})
	})
	t.Run("policy names the bad field", func(t *testing.T) {
		p := DefaultPolicy()
		p.AntiAffinityHard = true
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "anti-affinity-hard") {
			t.Fatalf("Validate() = %v", err)
		}
	})
	t.Run("no room says how much", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run([]ev{
			{in: AddHost{Host: "h1", MemMiB: 4096}},
			{in: AddHost{Host: "h2", MemMiB: 2048}},
			{in: AddHost{Host: "h3", MemMiB: 2048}},
			{in: Protect{VM: "v1", Host: "h1", MemMiB: 2048, Policy: DefaultPolicy()}},
			{in: Protect{VM: "v9", Host: "h3", MemMiB: 1024, Policy: DefaultPolicy()}},
			{in: Protect{VM: "v8", Host: "h2", MemMiB: 1536, Policy: DefaultPolicy()}},
			{in: running("v1", "h1", 1)},
			{at: 10 * s, in: HostLease{Host: "h1", Since: t0.Add(8 * s)}},
			{at: 12 * s, in: Tick{}, acts: acts(), check: wantWaiting("v1", "no host has room: need 2048 MiB, largest free 1024 MiB on h3")},
		})
	})
}

// TestMigrationReservesItsTarget: a migration in flight counts against its target, so a
// second placement does not take the same room.
func TestMigrationReservesItsTarget(t *testing.T) {
	s := time.Second
	h := newHarness(t, DefaultConfig())
	h.run([]ev{
		{in: AddHost{Host: "h1", MemMiB: 8192}},
		{in: AddHost{Host: "h2", MemMiB: 3072}},
		{in: AddHost{Host: "h3", MemMiB: 2048}},
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 2048, Policy: DefaultPolicy()}},
		{in: Protect{VM: "v2", Host: "h1", MemMiB: 2048, Policy: DefaultPolicy()}},
		{in: running("v1", "h1", 1)},
		{in: running("v2", "h1", 2)},
		{at: s, in: Request{Op: OpMigrate, VM: "v1"}, acts: acts("migrate@h1"), check: wantTarget("h2")},
		{at: s, in: Request{Op: OpMigrate, VM: "v2"}, acts: acts("migrate@h1"), check: func(t *testing.T, h *harness) {
			if a, _ := h.lastAct(ActMigrate, "v2"); a.Target != "h3" {
				t.Fatalf("v2 goes to %s, want h3 (h2's room is taken by v1's migration)", a.Target)
			}
		}},
	})
}

// TestLeaseIDs: a host fenced while lease 7 was current does not come back up on lease 7
// (a new leader reading the dead host's key), only on another.
func TestLeaseIDs(t *testing.T) {
	s := time.Second
	h := newHarness(t, DefaultConfig())
	h.run([]ev{
		{in: AddHost{Host: "h1", MemMiB: 4096}},
		{in: AddHost{Host: "h2", MemMiB: 4096}},
		{in: HostLease{Host: "h1", Alive: true, Lease: 7}, recs: recs(RecHost)},
		{in: HostLease{Host: "h1", Alive: true, Lease: 7}, nrecs: recs(RecHost)},
		{at: 10 * s, in: HostLease{Host: "h1", Since: t0.Add(8 * s), Lease: 7}},
		{at: 12 * s, in: Tick{}, check: func(t *testing.T, h *harness) {
			if st, _ := h.e.Host("h1"); st.State != "fenced" || st.FencedLease != 7 {
				t.Fatalf("h1 %+v", st)
			}
		}},
		{at: 13 * s, in: HostLease{Host: "h1", Alive: true, Lease: 7}, nrecs: recs(RecHost), check: wantHostState("h1", "fenced")},
		{at: 14 * s, in: HostLease{Host: "h1", Alive: true, Lease: 8}, recs: recs(RecHost), check: func(t *testing.T, h *harness) {
			if st, _ := h.e.Host("h1"); st.State != "up" || st.Lease != 8 || st.FencedLease != 0 {
				t.Fatalf("h1 %+v", st)
			}
		}},
	})
}

// TestHostPower: the BMC's power off fences a host at once, its lease running or not; a
// suspect host with a fence order outstanding is simply fenced; power on changes nothing.
func TestHostPower(t *testing.T) {
	s := time.Second
	t.Run("up host, lease still running", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(cat(cluster3(true), []ev{
			{at: s, in: HostPower{Host: "h1"}, acts: acts(), nrecs: recs(RecHost)},
			{at: 2 * s, in: HostPower{Host: "h1", Off: true}, acts: acts("start@h3"), recs: recs(RecHost, RecDetect),
				check: all(wantHostState("h1", "fenced"), wantLogMsg("power off (BMC)"), wantHome("h3"))},
			{at: 3 * s, in: HostPower{Host: "h1", Off: true}, acts: acts(), nrecs: recs(RecHost)},
			{at: 4 * s, in: HostPower{Host: "h9", Off: true}, err: "unknown host"},
		}))
	})
	t.Run("suspect with a fence outstanding", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.PowerFenceDelay = 0
		h := newHarness(t, cfg)
		h.run(cat(cluster3(true), []ev{
			{at: 10 * s, in: HostLease{Host: "h1", Since: t0.Add(8 * s)}, acts: acts("fence@h1")},
			{at: 11 * s, in: HostPower{Host: "h1", Off: true}, acts: acts("start@h3"), check: all(wantHostState("h1", "fenced"), wantCurrent(ActFence, "", false))},
			{at: 12 * s, in: FenceResult{Host: "h1", OK: true}, acts: acts()},
		}))
	})
	t.Run("a fence ordered before maintenance is not acted on", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.PowerFenceDelay = 0
		h := newHarness(t, cfg)
		h.run(cat(cluster3(true), []ev{
			{at: 10 * s, in: HostLease{Host: "h1", Since: t0.Add(8 * s)}, acts: acts("fence@h1")},
			{at: 10 * s, in: Maintenance{Host: "h1", On: true}, check: wantCurrent(ActFence, "", false)},
			{at: 11 * s, in: FenceResult{Host: "h1", OK: true}, acts: acts(), check: all(wantHostState("h1", "suspect"),
				func(t *testing.T, h *harness) {
					if st, _ := h.e.Host("h1"); !st.PowerOff {
						t.Fatalf("h1 %+v: the confirmed power-off is not noted", st)
					}
				})},
			{at: 60 * s, in: Tick{}, acts: acts(), check: wantHostState("h1", "suspect")},
		}))
	})
}

// TestMaintenance: on with migration moves the running VMs away, highest priority first,
// never to a spare; no fence and no recovery while the host is in maintenance, even when
// its lease lapses and the BMC says it is off; off restarts what went down with it there.
func TestMaintenance(t *testing.T) {
	s := time.Second
	hi := policy(func(p *Policy) { p.Priority = 5 })
	setup := []ev{
		{in: AddHost{Host: "h1", MemMiB: 4096, Fencing: true}},
		{in: AddHost{Host: "h2", MemMiB: 1024}},
		{in: AddHost{Host: "h3", MemMiB: 8192, Reserved: true}},
		{in: AddHost{Host: "h4", MemMiB: 1024}},
		{in: Protect{VM: "lo", Host: "h1", MemMiB: 1024, Policy: DefaultPolicy()}},
		{in: Protect{VM: "hi", Host: "h1", MemMiB: 1024, Policy: hi}},
		{in: Protect{VM: "x", Host: "h1", MemMiB: 1024, Policy: DefaultPolicy()}},
		{in: running("lo", "h1", 1)},
		{in: running("hi", "h1", 2)},
		{in: running("x", "h1", 3)},
	}
	t.Run("migrate", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.PowerFenceDelay = 0
		h := newHarness(t, cfg)
		h.run(setup)
		h.run([]ev{
			{at: s, in: Maintenance{Host: "h9", On: true}, err: "unknown host"},
			// hi first (to h2, the first name with room), then lo (h4); x finds no room
			// (h3 is a spare): it stays, says why, and raises one alert.
			{at: s, in: Maintenance{Host: "h1", On: true, Migrate: true}, acts: acts("migrate@h1", "migrate@h1"),
				recs: recs(RecHost, RecAlert), check: func(t *testing.T, h *harness) {
					if a, _ := h.lastAct(ActMigrate, "hi"); a.Target != "h2" {
						t.Fatalf("hi goes to %s", a.Target)
					}
					if a, _ := h.lastAct(ActMigrate, "lo"); a.Target != "h4" {
						t.Fatalf("lo goes to %s", a.Target)
					}
					if w := h.status("x").Waiting; !strings.Contains(w, "maintenance of h1: cannot move it: only reserved hosts") {
						t.Fatalf("x waiting %q", w)
					}
					if st, _ := h.e.Host("h1"); !st.Maintenance || !st.MaintenanceMigrate {
						t.Fatalf("h1 %+v", st)
					}
					if op := h.status("hi").Op; op == nil || op.Source != SrcMaintenance {
						t.Fatalf("hi op %+v", op)
					}
				}},
			{at: 5 * s, in: result{kind: ActMigrate, vm: "hi"}, check: func(t *testing.T, h *harness) {
				if h.status("hi").Home != "h2" {
					t.Fatal("hi not on h2")
				}
			}},
			{at: 5 * s, in: result{kind: ActMigrate, vm: "lo"}},
			// The next pass (RetryPlacement later) still finds no room for x: no new alert.
			{at: 11 * s, in: Tick{}, acts: acts(), nrecs: recs(RecAlert)},
			// The admin shuts h1 down: its lease lapses and the BMC says off. No fence, no recovery.
			{at: 20 * s, in: HostLease{Host: "h1", Since: t0.Add(18 * s)}, acts: acts(), check: wantHostState("h1", "suspect")},
			{at: 21 * s, in: HostPower{Host: "h1", Off: true}, acts: acts(), check: wantHostState("h1", "suspect")},
			{at: 60 * s, in: Tick{}, acts: acts(), nacts: []ActKind{ActFence, ActStart}, check: all(wantHostState("h1", "suspect"),
				wantWaiting("x", "maintenance"))},
			// Powered on again: back with a new lease; x is seen down (it died with the power).
			{at: 120 * s, in: HostLease{Host: "h1", Alive: true, Lease: 2}},
			{at: 121 * s, in: Snapshot{Host: "h1", Seq: 10, Domains: []DomainStatus{{VM: "x", State: DomShutoff}}},
				acts: acts(), recs: recs(RecDetect), check: wantWaiting("x", "its host h1 is in maintenance")},
			// Off: x is restarted there.
			{at: 130 * s, in: Maintenance{Host: "h1"}, acts: acts("start@h1"), recs: recs(RecHost)},
		})
	})
	t.Run("no-migrate, then off while the BMC says off", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.PowerFenceDelay = 0
		h := newHarness(t, cfg)
		h.run(setup)
		h.run([]ev{
			{at: s, in: Maintenance{Host: "h1", On: true}, acts: acts(), recs: recs(RecHost)},
			{at: 20 * s, in: HostLease{Host: "h1", Since: t0.Add(18 * s)}, acts: acts()},
			{at: 21 * s, in: HostPower{Host: "h1", Off: true}, acts: acts(), check: func(t *testing.T, h *harness) {
				if st, _ := h.e.Host("h1"); !st.PowerOff {
					t.Fatalf("h1 %+v", st)
				}
			}},
			{at: 30 * s, in: Tick{}, acts: acts()},
			// Off: the host is still off: fenced at once, and its VMs evacuated (to the spare first).
			{at: 40 * s, in: Maintenance{Host: "h1"}, any: true, nacts: []ActKind{ActFence}, check: all(wantHostState("h1", "fenced"),
				func(t *testing.T, h *harness) {
					if h.status("hi").Home != "h3" {
						t.Fatalf("hi home %s, want the spare h3", h.status("hi").Home)
					}
				})},
		})
	})
	t.Run("survives a restore", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.run(setup)
		h.run([]ev{{at: s, in: Maintenance{Host: "h1", On: true, Migrate: true}, any: true}})
		n := New(DefaultConfig())
		var vs []VMState
		for _, id := range h.e.sortedVMs() {
			st, _ := h.e.State(id)
			vs = append(vs, st)
		}
		if out := n.Step(t0.Add(2*s), Restore{NextID: h.e.LastID(), Hosts: h.e.Hosts(), VMs: vs, Clusters: h.e.Clusters()}); out.Err != nil {
			t.Fatal(out.Err)
		}
		if st, _ := n.Host("h1"); !st.Maintenance || !st.MaintenanceMigrate {
			t.Fatalf("h1 restored %+v", st)
		}
		if w := n.NextWake(); w.IsZero() || w.After(t0.Add(2*s)) {
			t.Fatalf("NextWake %v: the drain pass must be due at once", w)
		}
		// x was not moved; the restored engine tries again on its first tick (after h1 reports).
		n.Step(t0.Add(3*s), Snapshot{Host: "h1", Seq: 9, Domains: []DomainStatus{{VM: "x", State: DomRunning},
			{VM: "hi", State: DomRunning}, {VM: "lo", State: DomRunning}}})
		out := n.Step(t0.Add(3*s), Tick{})
		if len(out.Actions) != 0 || !strings.Contains(n.status(n.vms["x"]).Waiting, "cannot move it") {
			t.Fatalf("after restore: %+v waiting %q", out.Actions, n.status(n.vms["x"]).Waiting)
		}
	})
}

// TestAdmission: a cluster that must tolerate one host failure refuses a VM that could not
// be restarted after losing its largest host, with an error naming why; nothing changes.
func TestAdmission(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.run([]ev{
		{in: SetCluster{Name: "c1", TolerateHostFailures: 1}},
		{in: AddHost{Host: "h1", MemMiB: 4096, Cluster: "c1"}},
		{in: AddHost{Host: "h2", MemMiB: 4096, Cluster: "c1"}},
		{in: AddHost{Host: "h3", MemMiB: 2048, Cluster: "c1", Reserved: true}},
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 2048, Policy: DefaultPolicy()}},
		{in: Protect{VM: "v2", Host: "h2", MemMiB: 2048, Policy: DefaultPolicy()}},
		{in: Protect{VM: "v3", Host: "h1", MemMiB: 2048, Policy: DefaultPolicy()}},
		// Losing h1 (4 GiB used) leaves h2's 2 GiB and the spare's 2 GiB: it fits. One more
		// on h2 leaves nothing for what h1 runs.
		{in: Protect{VM: "v4", Host: "h2", MemMiB: 1024, Policy: DefaultPolicy()}, err: "admission control: cluster c1 must tolerate 1 host failure: after losing h1, v3 would find no room: need 2048 MiB, largest free 1024 MiB on h2"},
		// A stopped VM is admitted (it needs no room until it starts) ...
		{in: Protect{VM: "v4", Host: "h2", MemMiB: 1024, Policy: DefaultPolicy(), Desired: WantStopped}},
		{in: Observe{Host: "h2", VM: "v4", Seq: 1, State: DomShutoff, Reason: ReasonShutdown}},
		// ... but not started.
		{in: Request{Op: OpStart, VM: "v4"}, err: "admission control", acts: acts()},
	})
	var ae *AdmissionError
	if !errors.As(h.last.Err, &ae) || ae.Cluster != "c1" || ae.Tolerate != 1 || ae.VM != "v4" || len(ae.Lost) != 1 {
		t.Fatalf("error %v: want an *AdmissionError for v4 in c1 with one lost host, got %+v", h.last.Err, ae)
	}
	if s := h.status("v4"); s.Desired != WantStopped {
		t.Fatalf("a refused start changed the vm: %+v", s)
	}
	// Tolerance 0 admits anything; raising it past what the cluster meets is accepted, with an alert.
	h.run([]ev{
		{in: SetCluster{Name: "c1"}},
		{in: Request{Op: OpStart, VM: "v4"}, acts: acts("start@h2")},
		{in: SetCluster{Name: "c1", TolerateHostFailures: 2}, recs: recs(RecCluster, RecAlert)},
		{in: Protect{VM: "v5", Host: "h2", MemMiB: 1, Policy: DefaultPolicy()}, err: "after losing h1 and h2, v2 would find no room: need 2048 MiB, largest free 0 MiB on h3"},
	})
	// Maintenance takes a host out of the room.
	h2 := newHarness(t, DefaultConfig())
	h2.run([]ev{
		{in: SetCluster{Name: "c1", TolerateHostFailures: 1}},
		{in: AddHost{Host: "h1", MemMiB: 4096, Cluster: "c1"}},
		{in: AddHost{Host: "h2", MemMiB: 4096, Cluster: "c1"}},
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, Policy: DefaultPolicy()}},
		{in: Maintenance{Host: "h2", On: true}},
		{in: Protect{VM: "v2", Host: "h1", MemMiB: 1024, Policy: DefaultPolicy()}, err: "it has 1 usable hosts"},
	})
}

// TestRestoreRoundTrips: HostState, VMState and ClusterState survive JSON and a restore.
func TestRestoreRoundTrips(t *testing.T) {
	s := time.Second
	h := newHarness(t, DefaultConfig())
	h.run([]ev{
		{in: SetCluster{Name: "c1", TolerateHostFailures: 1}},
		{in: AddHost{Host: "h1", MemMiB: 8192, VCPUs: 16, Cluster: "c1", Fencing: true}},
		{in: AddHost{Host: "h2", MemMiB: 8192, VCPUs: 16, Cluster: "c1", Reserved: true}},
		{in: AddHost{Host: "h3", MemMiB: 8192, Cluster: "c1"}},
		{in: HostLease{Host: "h1", Alive: true, Lease: 41}},
		{in: Protect{VM: "v1", Host: "h1", MemMiB: 1024, VCPUs: 2, Policy: policy(func(p *Policy) { p.AntiAffinity, p.AntiAffinityHard = "g", true })}},
		{in: Maintenance{Host: "h3", On: true}},
		{at: 10 * s, in: HostLease{Host: "h1", Since: t0.Add(8 * s), Lease: 41}},
		{at: 12 * s, in: Tick{}, any: true},
	})
	type stored struct {
		Hosts    []HostState
		VMs      []VMState
		Clusters []ClusterState
	}
	var st stored
	st.Hosts, st.Clusters = h.e.Hosts(), h.e.Clusters()
	v1, _ := h.e.State("v1")
	st.VMs = []VMState{v1}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back stored
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st, back) {
		t.Fatalf("JSON round trip:\n got %+v\nwant %+v", back, st)
	}
	n := New(DefaultConfig())
	if out := n.Step(t0.Add(13*s), Restore{NextID: h.e.LastID(), Hosts: back.Hosts, VMs: back.VMs, Clusters: back.Clusters}); out.Err != nil {
		t.Fatal(out.Err)
	}
	if !reflect.DeepEqual(n.Hosts(), st.Hosts) || !reflect.DeepEqual(n.Clusters(), st.Clusters) {
		t.Fatalf("restored hosts or clusters differ:\n%+v\n%+v", n.Hosts(), n.Clusters())
	}
	if got, _ := n.State("v1"); got.Cluster != "c1" || got.VCPUs != 2 || !got.Policy.AntiAffinityHard {
		t.Fatalf("restored v1 %+v", got)
	}
	// Bad stored states name their field.
	for _, tc := range []struct {
		r    Restore
		want string
	}{
		{Restore{Clusters: []ClusterState{{Name: "c", TolerateHostFailures: -1}}}, "tolerate_host_failures"},
		{Restore{Hosts: []HostState{{Host: "h", State: "up", Cluster: "nope"}}}, `unknown cluster "nope"`},
		{Restore{Hosts: []HostState{{Host: "h", State: "up", MaintenanceMigrate: true}}}, "maintenance_migrate"},
		{Restore{Hosts: []HostState{{Host: "h", State: "up", VCPUs: -1}}}, "vcpus -1"},
		{Restore{Hosts: []HostState{{Host: "h", State: "up", FencedLease: 3}}}, "fenced_lease"},
	} {
		if out := New(DefaultConfig()).Step(t0, tc.r); out.Err == nil || !strings.Contains(out.Err.Error(), tc.want) {
			t.Errorf("Restore %+v: %v, want %q", tc.r, out.Err, tc.want)
		}
	}
}
