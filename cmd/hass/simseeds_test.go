package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/sim"
)

func TestParseSeeds(t *testing.T) {
	got, err := parseSeeds("3,7-9, 12")
	if err != nil || !slices.Equal(got, []uint64{3, 7, 8, 9, 12}) {
		t.Fatalf("got %v %v", got, err)
	}
	for _, bad := range []string{"", "x", "5-3", "1-", "1-2000000"} {
		if _, err := parseSeeds(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestSimSeeds: many seeds in parallel add up to the runs one by one, and a CPU profile is
// written.
func TestSimSeeds(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "cpu.prof")
	code, out, errs := hass("sim", "--seeds", "1-4", "--parallel", "3", "--hosts", "4", "--vms", "30", "--hours", "2", "--json", "--cpuprofile", prof)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var agg seedsResult
	if err := json.Unmarshal([]byte(out), &agg); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ops, steps := 0, 0
	for _, seed := range []string{"1", "2", "3", "4"} {
		code, one, errs := hass("sim", "--seed", seed, "--hosts", "4", "--vms", "30", "--hours", "2", "--json")
		if code != 0 {
			t.Fatalf("seed %s: exit %d: %s", seed, code, errs)
		}
		var r struct {
			Operations  int `json:"operations"`
			EngineSteps int `json:"engine_steps"`
		}
		if err := json.Unmarshal([]byte(one), &r); err != nil {
			t.Fatal(err)
		}
		ops, steps = ops+r.Operations, steps+r.EngineSteps
	}
	if agg.Seeds != 4 || agg.Operations != ops || agg.EngineSteps != steps || ops == 0 {
		t.Fatalf("aggregate %d seeds, %d operations, %d steps; the runs one by one: %d, %d", agg.Seeds, agg.Operations, agg.EngineSteps, ops, steps)
	}
	if fi, err := os.Stat(prof); err != nil || fi.Size() == 0 {
		t.Fatalf("no CPU profile: %v", err)
	}
	code, out, _ = hass("sim", "--seeds", "1-2", "--hosts", "2", "--vms", "5", "--hours", "1")
	if code != 0 || !strings.Contains(out, "every run kept the invariants") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if code, _, errs := hass("sim", "--seeds", "1-2", "--parallel", "0"); code != 2 || !strings.Contains(errs, "--parallel") {
		t.Fatalf("--parallel 0: exit %d, %s", code, errs)
	}
}

// TestSeedsProgress: the progress function hears of every run, and only a terminal gets it.
func TestSeedsProgress(t *testing.T) {
	cfg := sim.DefaultConfig()
	cfg.Hosts, cfg.VMs, cfg.Duration = 2, 4, 10*time.Minute
	var dones []int
	if _, err := runSeeds(context.Background(), cfg, []uint64{1, 2, 3}, 2, func(done, failed int) { dones = append(dones, done) }); err != nil {
		t.Fatal(err)
	}
	if len(dones) != 3 || dones[2] != 3 {
		t.Fatalf("progress calls %v, want 1, 2, 3", dones)
	}
	if terminalProgress(&strings.Builder{}, 3) != nil {
		t.Error("progress for a buffer")
	}
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if terminalProgress(f, 3) != nil {
		t.Error("progress for a regular file")
	}
}
