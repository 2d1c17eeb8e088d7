package main

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hassproject/hass/config"
)

// The daemons' config file: one section per command, keyed by flag name (package config).

// configSections are the commands the file configures, each by the flags of that command.
var configSections = []string{"up", "controller", "agent"}

// configLists are the string flags the file may give as a YAML list.
var configLists = []string{"etcd"}

// configChecks refuse what the commands refuse beyond a flag's type, so that the file's
// error names its line.
var configChecks = map[string]config.Check{
	"log-level": func(v string) error {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("%q: want debug, info, warn or error", v)
		}
		return nil
	},
	"resync":           minDuration(time.Second),
	"shutdown-timeout": minDuration(time.Second),
	"store-min-free": func(v string) error {
		var n int64
		if _, err := fmt.Sscan(v, &n); err != nil || n < 0 {
			return fmt.Errorf("%s: want 0 (no check) or more", v)
		}
		return nil
	},
}

func minDuration(min time.Duration) config.Check {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		if d < min {
			return fmt.Errorf("%s: want at least %s", v, min)
		}
		return nil
	}
}

// daemonFlags returns a fresh flag set of each configurable command.
func daemonFlags() map[string]*pflag.FlagSet {
	return map[string]*pflag.FlagSet{"up": upCmd().Flags(), "controller": controllerCmd().Flags(), "agent": agentCmd().Flags()}
}

// checkConfig loads the file and checks every section against its command's flags.
func checkConfig(path string, explicit bool) (*config.File, error) {
	f, err := config.Load(path, explicit, configSections)
	if err != nil {
		return nil, err
	}
	var all config.Errors
	for _, name := range configSections {
		if err := f.Apply(name, daemonFlags()[name], configLists, configChecks); err != nil {
			var es config.Errors
			if !errors.As(err, &es) {
				return nil, err
			}
			all = append(all, es...)
		}
	}
	if len(all) > 0 {
		slices.SortStableFunc(all, func(a, b *config.Error) int { return a.Line - b.Line })
		return nil, all
	}
	return f, nil
}

// withConfig gives a daemon command --config: before it runs, the file is checked whole, and
// its section sets every flag the command line did not.
func withConfig(c *cobra.Command) *cobra.Command {
	var path string
	c.Flags().StringVar(&path, "config", config.DefaultPath, "the config file (YAML, a section per command keyed by flag name; flags given here win); a missing default file is no error")
	c.PreRunE = func(cmd *cobra.Command, _ []string) error {
		f, err := checkConfig(path, cmd.Flags().Changed("config"))
		if err != nil {
			return usageError{err}
		}
		if err := f.Apply(c.Name(), cmd.Flags(), configLists, configChecks); err != nil {
			return usageError{err}
		}
		return nil
	}
	return c
}

// configCmd is `hass config check`.
func configCmd() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "The config file of hass up, hass controller and hass agent"}
	var path string
	check := &cobra.Command{
		Use:   "check",
		Short: "Check the config file: YAML, sections, keys (flag names), each value's type and worth",
		Long: `Check the config file (default ` + config.DefaultPath + `, or --config) as hass up, hass controller and
hass agent do when they start: every problem is printed on its own line, naming the file, the
line and column, and the field (section.key). Exit status 0 if it is fine, 1 if not.

The file has a section per command; its keys are the command's flag names, its values what the
flag would be given (a string, an integer, true or false, a duration such as 30s; --etcd may be
a list). A flag given on the command line wins over the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			explicit := cmd.Flags().Changed("config")
			f, err := checkConfig(path, explicit)
			if err != nil {
				return err
			}
			if len(f.Sections) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: no settings (the flags' defaults apply)\n", path)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok", path)
			for i, s := range f.Sections {
				sep := ";"
				if i == 0 {
					sep = ":"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s %d settings", sep, s.Name, len(s.Values))
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	check.Flags().StringVar(&path, "config", config.DefaultPath, "the config file to check")
	c.AddCommand(check)
	return c
}
