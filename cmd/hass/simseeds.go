package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hassproject/hass/sim"
)

// withCPUProfile runs f with a CPU profile written to path ("" for none).
func withCPUProfile(path string, f func() error) (err error) {
	if path == "" {
		return f()
	}
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--cpuprofile: %w", err)
	}
	defer func() {
		if cerr := out.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("--cpuprofile: %w", cerr)
		}
	}()
	if err := pprof.StartCPUProfile(out); err != nil {
		return fmt.Errorf("--cpuprofile: %w", err)
	}
	defer pprof.StopCPUProfile()
	return f()
}

// hostMemFor is each simulated host's memory: mib if set; else 64 GiB (the simulator's
// default), or more where a host's share of the VMs would use more than 40% of it, as they
// do in the default cluster (8 hosts, 100 VMs of 2 GiB: 39%). Without room to spare, a lost
// host's VMs have nowhere to go: 50,000 VMs on 1,000 hosts of 64 GiB would fill every host
// past its memory before anything failed.
func hostMemFor(cfg sim.Config, mib int) int {
	if mib > 0 {
		return mib
	}
	perHost := (cfg.VMs + cfg.Hosts - 1) / max(cfg.Hosts, 1)
	need := perHost * cfg.VMMemMiB * 10 / 4
	const step = 16384
	return max(cfg.HostMemMiB, (need+step-1)/step*step)
}

// parseSeeds reads a list of seeds and ranges: "1-1000", "3,7,10-12".
func parseSeeds(v string) ([]uint64, error) {
	var out []uint64
	for part := range strings.SplitSeq(v, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("seeds %q: %q is not a seed or a range A-B", v, part)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil || b < a {
				return nil, fmt.Errorf("seeds %q: %q is not a range A-B with A <= B", v, part)
			}
		}
		if b-a >= 1_000_000 || len(out)+int(b-a) >= 1_000_000 {
			return nil, fmt.Errorf("seeds %q: more than a million runs", v)
		}
		for s := a; ; s++ {
			out = append(out, s)
			if s == b {
				break
			}
		}
	}
	return out, nil
}

// seedsResult is the aggregate of many runs of the same configuration.
type seedsResult struct {
	Seeds              int     `json:"seeds"`
	Operations         int     `json:"operations"`
	Faults             int     `json:"faults"`
	MigrationFaults    int     `json:"migration_faults"`
	Recoveries         int     `json:"recoveries"`
	FalseRecoveries    int     `json:"false_recoveries"`
	MissedFailures     int     `json:"missed_failures"`
	SplitBrain         int     `json:"split_brain"`
	StuckTimers        int     `json:"stuck_timers"`
	GaveUp             int     `json:"gave_up"`
	Ambiguous          int     `json:"ambiguous"`
	RecoveryP50ms      int64   `json:"recovery_p50_ms"`     // the median run's
	RecoveryP99ms      int64   `json:"recovery_p99_ms"`     // the median run's
	RecoveryP99MaxMs   int64   `json:"recovery_p99_max_ms"` // the worst run's
	HostFailures       int     `json:"host_failures"`
	Evacuated          int     `json:"evacuated"`
	EvacuationP50ms    int64   `json:"evacuation_p50_ms"` // the median run's
	EvacuationP99ms    int64   `json:"evacuation_p99_ms"` // the median run's
	ControllerCrashes  int     `json:"controller_crashes"`
	EtcdMemberLosses   int     `json:"etcd_member_losses"`
	ControlPlaneLosses int     `json:"control_plane_losses"`
	StoreCuts          int     `json:"store_cuts"`
	SelfFences         int     `json:"self_fences"`
	HoldBacks          int     `json:"hold_backs"`
	FenceKills         int     `json:"fence_kills"`
	NeedlessFenceKills int     `json:"needless_fence_kills"`
	EngineSteps        int     `json:"engine_steps"`
	WallSeconds        float64 `json:"wall_s"`
	Parallel           int     `json:"parallel"`
	// Failed lists the runs that broke an invariant (false recoveries, missed failures,
	// split brain, stuck timers), by seed.
	Failed []sim.Result `json:"failed"`
}

// failedInvariant says whether a run broke one of the simulator's invariants.
func failedInvariant(r sim.Result) bool {
	return r.FalseRecoveries > 0 || r.MissedFailures > 0 || r.SplitBrain > 0 || r.StuckTimers > 0
}

// errInvariants: at least one run broke an invariant (exit code 1, after the summary).
var errInvariants = errors.New("invariants failed")

// runSeeds runs cfg once per seed, parallel runs at a time, and aggregates the results.
// progress, if not nil, is told after each run how many are done and how many broke an
// invariant.
func runSeeds(ctx context.Context, cfg sim.Config, seeds []uint64, parallel int, progress func(done, failed int)) (seedsResult, error) {
	start := time.Now()
	var progMu sync.Mutex
	done, failed := 0, 0
	results := make([]sim.Result, len(seeds))
	errs := make([]error, len(seeds))
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, min(parallel, len(seeds))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c := cfg
				c.Seed = seeds[i]
				results[i], errs[i] = sim.Run(c)
				if progress != nil {
					progMu.Lock()
					done++
					if errs[i] == nil && failedInvariant(results[i]) {
						failed++
					}
					progress(done, failed)
					progMu.Unlock()
				}
			}
		}()
	}
feed:
	for i := range seeds {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return seedsResult{}, err
	}
	for i, err := range errs {
		if err != nil {
			return seedsResult{}, fmt.Errorf("seed %d: %w", seeds[i], err)
		}
	}
	agg := seedsResult{Seeds: len(seeds), Parallel: parallel, WallSeconds: time.Since(start).Seconds()}
	var recP50, recP99, evcP50, evcP99 []int64
	for _, r := range results {
		agg.Operations += r.Operations
		agg.Faults += r.Faults
		agg.MigrationFaults += r.MigrationFaults
		agg.Recoveries += r.Recoveries
		agg.FalseRecoveries += r.FalseRecoveries
		agg.MissedFailures += r.MissedFailures
		agg.SplitBrain += r.SplitBrain
		agg.StuckTimers += r.StuckTimers
		agg.GaveUp += r.GaveUp
		agg.Ambiguous += r.Ambiguous
		agg.HostFailures += r.HostFailures
		agg.Evacuated += r.Evacuated
		agg.ControllerCrashes += r.ControllerCrashes
		agg.EtcdMemberLosses += r.EtcdMemberLosses
		agg.ControlPlaneLosses += r.ControlPlaneLosses
		agg.StoreCuts += r.StoreCuts
		agg.SelfFences += r.SelfFences
		agg.HoldBacks += r.HoldBacks
		agg.FenceKills += r.FenceKills
		agg.NeedlessFenceKills += r.NeedlessFenceKills
		agg.EngineSteps += r.EngineSteps
		agg.RecoveryP99MaxMs = max(agg.RecoveryP99MaxMs, r.RecoveryP99ms)
		if r.Recoveries > 0 {
			recP50, recP99 = append(recP50, r.RecoveryP50ms), append(recP99, r.RecoveryP99ms)
		}
		if r.Evacuated > 0 {
			evcP50, evcP99 = append(evcP50, r.EvacuationP50ms), append(evcP99, r.EvacuationP99ms)
		}
		if failedInvariant(r) {
			agg.Failed = append(agg.Failed, r)
		}
	}
	agg.RecoveryP50ms, agg.RecoveryP99ms = median(recP50), median(recP99)
	agg.EvacuationP50ms, agg.EvacuationP99ms = median(evcP50), median(evcP99)
	return agg, nil
}

func median(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// printSeeds prints the aggregate of many runs, then each run that broke an invariant.
func printSeeds(out io.Writer, cfg sim.Config, seeds []uint64, r seedsResult, asJSON bool) error {
	if asJSON {
		if r.Failed == nil {
			r.Failed = []sim.Result{}
		}
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, string(b))
		return err
	}
	fmt.Fprintf(out, "hass sim: %d seeds (%d-%d), %d hosts, %d VMs, %.1f simulated hours each; %.1f s wall time, %d in parallel\n\n",
		r.Seeds, slices.Min(seeds), slices.Max(seeds), cfg.Hosts, cfg.VMs, cfg.Duration.Hours(), r.WallSeconds, r.Parallel)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(k string, v any, note string) { fmt.Fprintf(tw, "  %s\t%v\t%s\n", k, v, note) }
	ms := func(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
	row("user operations", r.Operations, "")
	row("faults injected", r.Faults, fmt.Sprintf("(%d aimed at migrations' switch-overs)", r.MigrationFaults))
	row("control plane faults", fmt.Sprintf("%d / %d / %d / %d", r.ControllerCrashes, r.EtcdMemberLosses, r.ControlPlaneLosses, r.StoreCuts),
		"controller crashes / etcd members lost / control plane lost / hosts cut off from the store")
	row("recoveries", r.Recoveries, "")
	row("false recoveries", r.FalseRecoveries, "")
	row("missed failures", r.MissedFailures, "")
	row("split brain", r.SplitBrain, "")
	row("stuck timers", r.StuckTimers, "")
	row("gave up", r.GaveUp, "")
	row("ambiguous", r.Ambiguous, "")
	row("recovery p50 / p99", fmt.Sprintf("%s / %s", ms(r.RecoveryP50ms), ms(r.RecoveryP99ms)), fmt.Sprintf("the median run's (worst p99 %s)", ms(r.RecoveryP99MaxMs)))
	row("host failures, evacuated", fmt.Sprintf("%d, %d", r.HostFailures, r.Evacuated), "")
	row("evacuation p50 / p99", fmt.Sprintf("%s / %s", ms(r.EvacuationP50ms), ms(r.EvacuationP99ms)), "the median run's")
	row("self-fences, hold-backs", fmt.Sprintf("%d, %d", r.SelfFences, r.HoldBacks), fmt.Sprintf("(%d VMs killed by fences, %d needlessly)", r.FenceKills, r.NeedlessFenceKills))
	row("engine steps", r.EngineSteps, "")
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Failed) == 0 {
		_, err := fmt.Fprintf(out, "\nevery run kept the invariants\n")
		return err
	}
	fmt.Fprintf(out, "\n%d runs broke an invariant (replay one with hass sim --seed N --trace):\n", len(r.Failed))
	for _, f := range r.Failed {
		fmt.Fprintf(out, "  seed %d: %d false recoveries, %d missed failures, %d split brain, %d stuck timers\n",
			f.Seed, f.FalseRecoveries, f.MissedFailures, f.SplitBrain, f.StuckTimers)
	}
	return nil
}

// terminalProgress returns a progress function that keeps one line up to date on w when w
// is a terminal (at most every 200 ms, and at the end), and nil otherwise: a log or a pipe
// gets the summary alone.
func terminalProgress(w io.Writer, total int) func(done, failed int) {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	start, last := time.Now(), time.Time{}
	return func(done, failed int) {
		if done < total && time.Since(last) < 200*time.Millisecond {
			return
		}
		last = time.Now()
		fmt.Fprintf(w, "\r%d of %d seeds run, %d broke an invariant, %s", done, total, failed, time.Since(start).Round(time.Second))
		if done == total {
			fmt.Fprintln(w)
		}
	}
}
