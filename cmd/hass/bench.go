package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hassproject/hass/benchmark"
)

func benchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "bench",
		Short: "Measure the decision engine and the simulator, and print the numbers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "measuring (about 10 seconds)...")
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "what\tmeasured\ttarget")
			for _, r := range benchmark.Run() {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Value, r.Target)
			}
			return tw.Flush()
		},
	}
}
