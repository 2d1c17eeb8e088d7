package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// usageError marks errors in what the user typed: exit code 2.
type usageError struct{ error }

func run(args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "hass",
		Short:         "hass keeps virtual machines available",
		Long:          "hass — the High Availability Service System for KVM/libvirt virtual machines.\nIt tells failures from operations users asked for, and recovers from failures.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(certsCmd(), simCmd(), benchCmd(), withConfig(upCmd()), withConfig(controllerCmd()), withConfig(agentCmd()), hostCmd(), clusterCmd(), vmCmd(), eventsCmd(), statusCmd(),
		versionCmd(), configCmd(), reportCmd(), tokenCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintf(stderr, "hass: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}
