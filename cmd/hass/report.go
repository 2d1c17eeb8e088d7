package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/report"
)

// reportCmd is `hass report --since 7d [-o table|json|csv]`.
func reportCmd() *cobra.Command {
	cf := &clientFlags{}
	var since string
	c := &cobra.Command{
		Use:   "report",
		Short: "Availability per VM and per failure kind, computed from the event log",
		Long: `Print, per protected VM and per failure kind, over the window from --since to now: the
failures, how many hass recovered and how many are still down, the mean and worst time to
recover (fault to running again), the downtime, and the availability (1 - downtime / protected
time, as a percentage), computed from the event log.

An outage runs from the fault (the agent's stamp) to the VM running again; one hass gave up on
lasts until a user acts on the VM; one still going on counts until now. A user's stop,
shutdown or delete is no downtime. The event log keeps --keep-events entries (100,000 by
default): a window longer than the log reaches back no further than its oldest entry.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			output := cf.output
			if output != "table" && output != "json" && output != "csv" {
				return usageError{fmt.Errorf("--output %q: want table, json or csv", output)}
			}
			now := time.Now()
			from, err := parseSince(since, now)
			if err != nil {
				return usageError{fmt.Errorf("--since %q: %w", since, err)}
			}
			tok, err := cf.token()
			if err != nil {
				return err
			}
			cl := api.NewClient(cf.server, nil).WithToken(tok)
			evs, err := allEvents(cmd.Context(), cl)
			if err != nil {
				return err
			}
			vms, err := cl.VMs(cmd.Context())
			if err != nil {
				return err
			}
			names := make([]string, len(vms))
			for i, v := range vms {
				names[i] = v.Name
			}
			r := report.Compute(evs, names, from, now)
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				return printJSON(out, r)
			case "csv":
				return printReportCSV(out, r)
			}
			return printReport(out, r)
		},
	}
	cf.add(c) // --server and -o, as every client command has them
	c.PersistentFlags().Lookup("output").Usage = "table, json or csv"
	c.Flags().StringVar(&since, "since", "7d", "the window: a duration back from now (24h, 7d, 30d) or a time (2026-03-04)")
	return c
}

// allEvents reads the whole event log, a page at a time.
func allEvents(ctx context.Context, cl *api.Client) ([]api.Event, error) {
	var out []api.Event
	var after uint64
	for {
		page, err := cl.EventsQuery(ctx, api.EventQuery{After: after, Limit: api.MaxEventLimit})
		if err != nil {
			return nil, err
		}
		out = append(out, page.Events...)
		if len(page.Events) < api.MaxEventLimit {
			return out, nil
		}
		after = page.LastSeq
	}
}

func dur(s report.Secs) string {
	if s == 0 {
		return "-"
	}
	d := s.Duration()
	switch {
	case d < time.Minute:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func printReport(w io.Writer, r report.Report) error {
	fmt.Fprintf(w, "availability from %s to %s (%s)\n\n", r.Since.Local().Format("2006-01-02 15:04:05"), r.Until.Local().Format("2006-01-02 15:04:05"),
		r.Until.Sub(r.Since).Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	section := func(title string, rows []report.Row) {
		fmt.Fprintf(tw, "%s\tFAILURES\tRECOVERED\tDOWN NOW\tMEAN TTR\tWORST TTR\tDOWNTIME\tAVAILABILITY\n", title)
		for _, x := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%.4f%%\n", cell(x.Name), x.Failures, x.Recovered, x.DownNow,
				dur(x.MeanTTR), dur(x.WorstTTR), dur(x.Downtime), x.Avail)
		}
	}
	section("VM", append(r.VMs, r.Total))
	if len(r.Kinds) == 0 {
		fmt.Fprintln(tw, "\nno failures in this window")
		return tw.Flush()
	}
	fmt.Fprintln(tw)
	section("FAILURE KIND", r.Kinds)
	return tw.Flush()
}

func printReportCSV(w io.Writer, r report.Report) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"scope", "name", "failures", "recovered", "down_now", "mean_recovery_s", "worst_recovery_s", "downtime_s", "protected_s", "availability_pct"})
	f := func(x report.Secs) string { return strconv.FormatFloat(float64(x), 'f', 3, 64) }
	emit := func(scope string, x report.Row) {
		cw.Write([]string{scope, x.Name, strconv.Itoa(x.Failures), strconv.Itoa(x.Recovered), strconv.Itoa(x.DownNow),
			f(x.MeanTTR), f(x.WorstTTR), f(x.Downtime), f(x.Protected), strconv.FormatFloat(x.Avail, 'f', 6, 64)})
	}
	for _, x := range r.VMs {
		emit("vm", x)
	}
	for _, x := range r.Kinds {
		emit("kind", x)
	}
	emit("total", r.Total)
	cw.Flush()
	return cw.Error()
}
