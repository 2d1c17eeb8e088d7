package sim

import (
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the scenarios' log.expect files from this run")

// TestScenarios plays every folder under scenarios/ and compares its story with log.expect,
// byte for byte. A scenario must also keep the invariants, unless its README says it shows
// the naive detector.
func TestScenarios(t *testing.T) {
	dirs, err := filepath.Glob("../scenarios/*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, dir := range dirs {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		n++
		t.Run(filepath.Base(dir), func(t *testing.T) {
			sc, err := LoadScenario(dir)
			if err != nil {
				t.Fatal(err)
			}
			got, res := sc.Run(false)
			if *update {
				if err := os.WriteFile(filepath.Join(dir, "log.expect"), []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if sc.Expect == "" {
				t.Fatalf("no log.expect (run go test ./sim -run TestScenarios -update, then read it)")
			}
			if got != sc.Expect {
				t.Errorf("story differs from log.expect:\n%s", diff(sc.Expect, got))
			}
			if res.FalseRecoveries != 0 || res.MissedFailures != 0 || res.SplitBrain != 0 || res.StuckTimers != 0 || res.StoreDrift != 0 {
				t.Errorf("invariant broken: %+v", res)
			}
			// HA must not cause an outage: a VM killed by a self-fence runs again elsewhere,
			// unless the scenario shows the rule's known price.
			if res.NeedlessFenceKills != 0 && !strings.Contains(sc.Title, "the price") {
				t.Errorf("%d VMs killed by a self-fence ran again on the host that fenced them (nobody restarted them elsewhere): %+v", res.NeedlessFenceKills, res)
			}
			again, _ := sc.Run(false)
			if again != got {
				t.Errorf("two runs of the same scenario differ")
			}
		})
	}
	if n < 40 {
		t.Errorf("only %d scenarios; want at least 40", n)
	}
}

// diff shows the first lines where two stories part.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl == gl {
			continue
		}
		b.WriteString("line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl + "\n")
		if shown++; shown == 5 {
			break
		}
	}
	return b.String()
}

// The evacuation figures of the JSON result: a host lost is counted, and each VM that went
// down with it and ran again elsewhere, timed from the host's failure.
func TestEvacuationFigures(t *testing.T) {
	for _, c := range []struct {
		dir        string
		evacuated  int
		minP, maxP int64 // evacuation p50, ms
	}{
		{"../scenarios/host-power-loss-relocate", 1, 10000, 15000}, // lease TTL + self-fence margin
		{"../scenarios/host-power-loss-ipmi-fence", 1, 0, 15000},
		{"../scenarios/partition-self-fence", 1, 10000, 15000},
	} {
		sc, err := LoadScenario(c.dir)
		if err != nil {
			t.Fatal(err)
		}
		_, res := sc.Run(false)
		if res.HostFailures != 1 || res.Evacuated != c.evacuated || res.EvacuationP50ms < c.minP || res.EvacuationP50ms > c.maxP {
			t.Errorf("%s: host_failures %d (want 1), evacuated %d (want %d), evacuation p50 %d ms (want %d-%d)",
				c.dir, res.HostFailures, res.Evacuated, c.evacuated, res.EvacuationP50ms, c.minP, c.maxP)
		}
	}
}
