package sim

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestAwareKeepsInvariants runs the standard cluster (8 hosts, 100 VMs, 24 hours) for many
// seeds: the operation-aware engine must make no false recovery, miss no failure and never
// run a VM twice, while the run really does contain operations, faults and recoveries.
func TestAwareKeepsInvariants(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 3
	}
	var total Result
	defer func() {
		// The control plane's faults happen across the seeds, and the majority rule acts.
		if total.ControllerCrashes == 0 || total.EtcdMemberLosses == 0 || total.ControlPlaneLosses == 0 ||
			total.StoreCuts == 0 || total.HoldBacks == 0 || total.SelfFences == 0 {
			t.Errorf("a control-plane fault never happened: %+v", total)
		}
		// The layouts, admission control, maintenance and the BMC are exercised too.
		if total.AdmissionRefused == 0 || total.Created == 0 || total.MaintenanceMoves == 0 || total.AdminShutdowns == 0 ||
			total.PowerOffSeen == 0 || total.Reserved == 0 || total.Clusters <= seeds {
			t.Errorf("a placement or maintenance path never ran: %+v", total)
		}
	}()
	for seed := 1; seed <= seeds; seed++ {
		cfg := DefaultConfig()
		cfg.Seed = uint64(seed)
		r, err := Run(cfg)
		if err != nil {
			t.Fatal(err)
		}
		total.ControllerCrashes += r.ControllerCrashes
		total.EtcdMemberLosses += r.EtcdMemberLosses
		total.ControlPlaneLosses += r.ControlPlaneLosses
		total.StoreCuts += r.StoreCuts
		total.HoldBacks += r.HoldBacks
		total.SelfFences += r.SelfFences
		total.AdmissionRefused += r.AdmissionRefused
		total.Created += r.Created
		total.MaintenanceMoves += r.MaintenanceMoves
		total.AdminShutdowns += r.AdminShutdowns
		total.PowerOffSeen += r.PowerOffSeen
		total.Reserved += r.Reserved
		total.Clusters += r.Clusters
		if r.FalseRecoveries != 0 || r.MissedFailures != 0 || r.SplitBrain != 0 || r.StuckTimers != 0 ||
			r.MaintenanceViolations != 0 || r.ClusterViolations != 0 || r.AntiAffinityViolations != 0 || r.ReservedViolations != 0 {
			t.Errorf("seed %d: %+v", seed, r)
		}
		if r.Operations < 100 || r.Faults < 20 || r.Recoveries < 20 {
			t.Errorf("seed %d: too quiet to prove anything: %+v", seed, r)
		}
	}
}

// TestNaiveMakesFalseRecoveries shows what operation awareness buys: on the same seeds the
// naive detector restarts VMs users stopped.
func TestNaiveMakesFalseRecoveries(t *testing.T) {
	for seed := uint64(1); seed <= 2; seed++ {
		cfg := DefaultConfig()
		cfg.Seed, cfg.Naive = seed, true
		r, err := Run(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if r.FalseRecoveries == 0 {
			t.Errorf("seed %d: the naive detector made no false recovery: %+v", seed, r)
		}
		if r.Detector != "naive" {
			t.Errorf("detector = %q", r.Detector)
		}
	}
}

// TestSameSeedSameRun: the same seed gives the same result and the same story, byte for byte;
// another seed gives another run.
func TestSameSeedSameRun(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Duration = 6 * time.Hour
	run := func(seed uint64) ([]byte, string) {
		cfg.Seed = seed
		var story bytes.Buffer
		r, err := RunTraced(cfg, &story)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(r)
		return b, story.String()
	}
	a, sa := run(7)
	b, sb := run(7)
	if !bytes.Equal(a, b) || sa != sb {
		t.Fatalf("seed 7 twice differs:\n%s\n%s", a, b)
	}
	c, _ := run(8)
	if bytes.Equal(a, c) {
		t.Fatalf("seeds 7 and 8 gave the same result: %s", a)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Hosts = 0 }, "hosts 0"},
		{func(c *Config) { c.VMs = -1 }, "vms -1"},
		{func(c *Config) { c.Duration = 0 }, "hours 0"},
		{func(c *Config) { c.DropProb = 1 }, "drop probability"},
		{func(c *Config) { c.SelfFenceAfter = c.LeaseTTL }, "self-fence-after"},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("Validate() = %v, want an error naming %q", err, tc.want)
		}
		if _, err := Run(c); err == nil {
			t.Errorf("Run accepted a config Validate refuses (%q)", tc.want)
		}
	}
}

// TestStoreHoldsEngineState: in a random run with controller crashes, after every step the
// store holds exactly what the engine holds (what a new leader restores), and the run keeps
// the invariants across the crashes.
func TestStoreHoldsEngineState(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Duration = 6 * time.Hour
	cfg.ControllerCrashPerHr = 2
	for seed := uint64(1); seed <= 2; seed++ {
		cfg.Seed = seed
		s := newSim(cfg, nil)
		s.checkStoreEach = true
		r := runRandom(s)
		if r.StoreDrift != 0 || r.ControllerCrashes < 3 {
			t.Errorf("seed %d: store drift %d, controller crashes %d", seed, r.StoreDrift, r.ControllerCrashes)
		}
		if r.FalseRecoveries != 0 || r.MissedFailures != 0 || r.SplitBrain != 0 || r.StuckTimers != 0 {
			t.Errorf("seed %d: %+v", seed, r)
		}
	}
}
