package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hassproject/hass/sim"
)

func simCmd() *cobra.Command {
	var (
		seed          uint64
		hosts, vms    int
		hours         float64
		detector      string
		asJSON, trace bool
		scenario      string
		cpuprofile    string
		seeds         string
		parallel      int
		hostMem       int
	)
	c := &cobra.Command{
		Use:   "sim",
		Short: "Run the deterministic simulator: a whole cluster, user operations and faults",
		Long: `Run the real decision engine against simulated hosts, hypervisors, agents and a lossy
message bus, under a seeded workload of user operations and faults, and score it from the
simulator's ground truth. The same seed prints the same bytes.

With --scenario DIR, play one scenario folder (README, start, cmdlist, log.expect) and print
its story instead.

With --seeds (e.g. 1-1000), run every seed, --parallel at a time, and print the aggregate
and each run that broke an invariant; the exit code is 1 when one did.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if os.Getenv("GOGC") == "" {
				// The simulator's heap is mostly long-lived (the engine, the world): collect
				// it less often (a sixth of a large run's CPU went to the collector).
				debug.SetGCPercent(400)
			}
			if detector != "aware" && detector != "naive" {
				return usageError{fmt.Errorf("--detector %q: want aware or naive", detector)}
			}
			if scenario != "" {
				return runScenario(out, cmd.ErrOrStderr(), scenario, detector == "naive")
			}
			cfg := sim.DefaultConfig()
			cfg.Seed, cfg.Hosts, cfg.VMs = seed, hosts, vms
			cfg.Duration = time.Duration(hours * float64(time.Hour))
			cfg.Naive = detector == "naive"
			if hostMem < 0 {
				return usageError{fmt.Errorf("--host-mem %d: want 0 (sized to the VMs) or more", hostMem)}
			}
			cfg.HostMemMiB = hostMemFor(cfg, hostMem)
			if hours <= 0 || hours > 24*365*100 {
				return usageError{fmt.Errorf("--hours %v: want more than 0 and at most 876000", hours)}
			}
			if err := cfg.Validate(); err != nil {
				return usageError{fmt.Errorf("--%w", err)}
			}
			if seeds != "" {
				list, err := parseSeeds(seeds)
				if err != nil {
					return usageError{fmt.Errorf("--%w", err)}
				}
				if parallel < 1 {
					return usageError{fmt.Errorf("--parallel %d: want at least 1", parallel)}
				}
				var agg seedsResult
				err = withCPUProfile(cpuprofile, func() (err error) {
					agg, err = runSeeds(cmd.Context(), cfg, list, parallel, terminalProgress(cmd.ErrOrStderr(), len(list)))
					return err
				})
				if err != nil {
					return err
				}
				if err := printSeeds(out, cfg, list, agg, asJSON); err != nil {
					return err
				}
				if len(agg.Failed) > 0 {
					return fmt.Errorf("%d of %d runs: %w", len(agg.Failed), len(list), errInvariants)
				}
				return nil
			}
			var tw io.Writer
			if trace {
				tw = cmd.ErrOrStderr()
			}
			var res sim.Result
			err := withCPUProfile(cpuprofile, func() (err error) {
				res, err = sim.RunTraced(cfg, tw)
				return err
			})
			if err != nil {
				return err
			}
			if asJSON {
				b, _ := json.Marshal(res)
				fmt.Fprintln(out, string(b))
				return nil
			}
			printResult(out, res)
			return nil
		},
	}
	f := c.Flags()
	f.Uint64Var(&seed, "seed", 1, "random seed; the same seed gives the same run")
	f.IntVar(&hosts, "hosts", 8, "number of simulated hosts")
	f.IntVar(&vms, "vms", 100, "number of protected VMs")
	f.Float64Var(&hours, "hours", 24, "simulated hours")
	f.StringVar(&detector, "detector", "aware", "aware (operation-aware engine) or naive (any VM not running is a failure)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	f.BoolVar(&trace, "trace", false, "write the story of the run to stderr")
	f.StringVar(&scenario, "scenario", "", "play one scenario folder and print its story")
	f.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the run(s) to this file")
	f.StringVar(&seeds, "seeds", "", "run these seeds (e.g. 1-1000 or 1,5,9-12) and print the aggregate")
	f.IntVar(&parallel, "parallel", runtime.NumCPU(), "with --seeds: runs at a time")
	f.IntVar(&hostMem, "host-mem", 0, "each host's memory in MiB (0: 64 GiB, or more where the VMs would fill more than 40% of it)")
	return c
}

func runScenario(out, errOut io.Writer, dir string, naive bool) error {
	sc, err := sim.LoadScenario(filepath.Clean(dir))
	if err != nil {
		return err
	}
	story, _ := sc.Run(naive)
	fmt.Fprintf(out, "# %s\n%s", sc.Title, story)
	if sc.Expect != "" && sc.Expect != story && !naive {
		fmt.Fprintln(errOut, "hass: note: the story differs from log.expect")
	}
	return nil
}

func printResult(out io.Writer, r sim.Result) {
	fmt.Fprintf(out, "hass sim: seed %d, %d hosts, %d VMs, %.1f simulated hours, %s detector\n\n",
		r.Seed, r.Hosts, r.VMs, r.Hours, r.Detector)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(k string, v any, note string) { fmt.Fprintf(tw, "  %s\t%v\t%s\n", k, v, note) }
	row("user operations", r.Operations, fmt.Sprintf("(%d refused by hass or libvirt)", r.Refused))
	row("faults injected", r.Faults, "")
	row("migration faults", r.MigrationFaults, "aimed at a live migration's switch-over")
	row("recoveries", r.Recoveries, "")
	row("false recoveries", r.FalseRecoveries, "VMs started that the user had stopped or deleted")
	row("missed failures", r.MissedFailures, "protected VMs not running again before the deadline")
	row("split brain", r.SplitBrain, "a VM running on two hosts at once")
	row("gave up", r.GaveUp, "VMs put in error as their policy says")
	row("ambiguous", r.Ambiguous, "faults no observer could tell from a user's act")
	row("recovery p50", time.Duration(r.RecoveryP50ms)*time.Millisecond, "fault to running again, simulated time")
	row("recovery p99", time.Duration(r.RecoveryP99ms)*time.Millisecond, "")
	row("recovery max", time.Duration(r.RecoveryMaxms)*time.Millisecond, "")
	row("hosts lost, VMs evacuated", fmt.Sprintf("%d, %d", r.HostFailures, r.Evacuated), fmt.Sprintf("(%d fenced through their BMC, %d powered on again, %d seen off by the power layer)", r.IPMIFences, r.PowerOns, r.PowerOffSeen))
	row("maintenance", fmt.Sprintf("%d, %d", r.Maintenance, r.MaintenanceMoves), fmt.Sprintf("periods, VMs migrated away (%d admin shutdowns while in it)", r.AdminShutdowns))
	row("admission refused", r.AdmissionRefused, fmt.Sprintf("protects refused by admission control (tolerate %d host failures)", r.TolerateHostFailures))
	row("placement violations", r.MaintenanceViolations+r.ClusterViolations+r.AntiAffinityViolations+r.ReservedViolations, "maintenance, cluster, hard anti-affinity, spare: hass's own orders")
	row("engine steps", r.EngineSteps, "")
	row("actions", r.Actions, "")
	tw.Flush()
}
