package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/hassproject/hass/version"
)

// versionCmd is `hass version`: the version stamped with -ldflags
// "-X github.com/hassproject/hass/version.Version=V", or what the build recorded.
func versionCmd() *cobra.Command {
	var short bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print hass's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if short {
				fmt.Fprintln(cmd.OutOrStdout(), version.String())
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "hass %s (%s, %s/%s)\n", version.String(), version.Go(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
	c.Flags().BoolVar(&short, "short", false, "print the version only")
	return c
}
