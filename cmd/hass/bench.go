package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hassproject/hass/benchmark"
)

func benchCmd() *cobra.Command {
	var (
		shapes  []string
		withSim bool
		withSt  bool
		profile string
	)
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure the decision engine and the simulator, and print the numbers",
		Long: `Measure the decision engine on a recorded workload per cluster shape (lease renewals,
resyncs, crashes and their restarts answered by the agents, user operations, guest signals,
host losses with fencing and evacuation), replayed on one core; then the simulator's speed.
After the table, each workload's mix: what it fed the engine and which engine paths ran.

A shape is VMS/HOSTS/WINDOW: the cluster, and how much of its life (virtual time) the
workload covers. The engine's cost grows with the number of VMs; so does the time this takes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ss []benchmark.Shape
			for _, v := range shapes {
				s, err := benchmark.ParseShape(v)
				if err != nil {
					return usageError{fmt.Errorf("--shape: %w", err)}
				}
				ss = append(ss, s)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(cmd.ErrOrStderr(), "measuring (about 30 seconds with the default shapes)...")
			rows, recs, err := benchmark.Run(ss, withSim)
			if err != nil {
				return err
			}
			if withSt {
				fmt.Fprintln(cmd.ErrOrStderr(), "measuring a leader's takeover of 1,000 hosts and 50,000 VMs through a real etcd (about a minute)...")
				r, err := benchmark.TakeoverRows(cmd.Context(), 1000, 50000)
				if err != nil {
					return err
				}
				rows = append(rows, r...)
				fmt.Fprintf(cmd.ErrOrStderr(), "measuring the controller driving 1,000 agents through a real etcd (%s of load, a minute or two)...\n", benchmark.LargeEtcd.Window)
				if r, err = benchmark.EtcdRows(cmd.Context(), benchmark.LargeEtcd); err != nil {
					return err
				}
				rows = append(rows, r...)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "what\tmeasured\ttarget")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Value, r.Target)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, rec := range recs {
				fmt.Fprintf(out, "\n%s", rec.Report())
			}
			if profile != "" && len(ss) > 0 {
				f, err := os.Create(profile)
				if err != nil {
					return err
				}
				n, err := benchmark.Profile(ss[len(ss)-1], f)
				if err != nil {
					f.Close()
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote a CPU profile of %d replays of %s to %s (go tool pprof -tagfocus phase=replay leaves out building the clusters)\n",
					n, ss[len(ss)-1], profile)
			}
			return nil
		},
	}
	def := []string{shapeFlag(benchmark.Small), shapeFlag(benchmark.Large)}
	c.Flags().StringArrayVar(&shapes, "shape", def, "a cluster shape to measure the engine on, VMS/HOSTS/WINDOW (repeat for more)")
	c.Flags().BoolVar(&withSim, "sim", true, "also measure the simulator's speed")
	c.Flags().BoolVar(&withSt, "store", false, "also measure, through a real etcd in a temporary directory, a new leader's takeover of 1,000 hosts and 50,000 VMs, and the controller driving 1,000 simulated agents")
	c.Flags().StringVar(&profile, "cpuprofile", "", "write a CPU profile of replays of the last shape's workload to this file")
	return c
}

func shapeFlag(s benchmark.Shape) string {
	w := s.Window.String()
	switch {
	case s.Window%time.Hour == 0:
		w = fmt.Sprintf("%dh", s.Window/time.Hour)
	case s.Window%time.Minute == 0:
		w = fmt.Sprintf("%dm", s.Window/time.Minute)
	}
	return fmt.Sprintf("%d/%d/%s", s.VMs, s.Hosts, w)
}
