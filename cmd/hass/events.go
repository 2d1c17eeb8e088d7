package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hassproject/hass/api"
)

// followWait is how long one request of `hass events --follow` waits for an event: below
// the client's timeout (api.DefaultTimeout).
const followWait = 20 * time.Second

// followRetry is how long --follow waits before asking again when the daemon did not answer.
const followRetry = 2 * time.Second

func eventsCmd() *cobra.Command {
	cf := &clientFlags{}
	var (
		after               uint64
		limit               int
		follow              bool
		vm, host, typ, kind string
		since               string
	)
	c := &cobra.Command{
		Use:   "events",
		Short: "Show the event log: detections, actions, recoveries with their times (--follow: as they happen)",
		Long: `Show the event log, oldest first: detections, actions, recoveries with their times, user
operations, host changes, alerts. Filters narrow it: --vm, --host, --type (detect, recovered,
gave-up, alert, host, op, ...), --kind (a failure kind: vm-crash, guest-panic, host-down, ...),
--since (a duration back from now, such as 30m, 12h or 7d, or a time: 2026-03-04 or
2026-03-04T05:06:07Z).

--follow prints the events logged so far that pass the filters, then each new one as it is
logged, until interrupted; with -o json, one JSON object per line. When the daemon does not
answer (a restart, a new leader), it says so on stderr and asks again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			if limit < 1 || limit > api.MaxEventLimit {
				return usageError{fmt.Errorf("--limit %d: want 1 to %d", limit, api.MaxEventLimit)}
			}
			q := api.EventQuery{After: after, Limit: limit, Filter: api.EventFilter{VM: vm, Host: host, Type: typ, Kind: kind}}
			if since != "" {
				if q.Filter.Since, err = parseSince(since, time.Now()); err != nil {
					return usageError{fmt.Errorf("--since %q: %w", since, err)}
				}
			}
			if !follow {
				page, err := cl.EventsQuery(cmd.Context(), q)
				if err != nil {
					return err
				}
				if cf.json() {
					return printJSON(cmd.OutOrStdout(), page.Events)
				}
				return printEvents(cmd.OutOrStdout(), page.Events, true)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = followEvents(ctx, cl, q, cmd.OutOrStdout(), cmd.ErrOrStderr(), cf.json())
			if ctx.Err() != nil {
				return nil // interrupted: the normal end of --follow
			}
			return err
		},
	}
	cf.add(c)
	f := c.Flags()
	f.Uint64Var(&after, "after", 0, "only events after this sequence number")
	f.IntVar(&limit, "limit", 100, "at most this many events (with --follow: per request)")
	f.BoolVarP(&follow, "follow", "f", false, "print new events as they are logged, until interrupted")
	f.StringVar(&vm, "vm", "", "only events about this VM")
	f.StringVar(&host, "host", "", "only events about this host")
	f.StringVar(&typ, "type", "", "only events of this type: "+strings.Join(api.EventTypes, ", "))
	f.StringVar(&kind, "kind", "", "only events about this failure kind: "+strings.Join(api.FailureKinds, ", "))
	f.StringVar(&since, "since", "", "only events logged since: a duration back from now (30m, 12h, 7d, 2w) or a time (2026-03-04, 2026-03-04T05:06:07Z)")
	_ = c.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(api.EventTypes, cobra.ShellCompDirectiveNoFileComp))
	_ = c.RegisterFlagCompletionFunc("kind", cobra.FixedCompletions(api.FailureKinds, cobra.ShellCompDirectiveNoFileComp))
	return c
}

// followEvents prints the events that pass q's filter from q.After on, then waits for new
// ones, until ctx ends. A daemon that does not answer (unreachable, or 503 while a leader is
// elected) is asked again after followRetry; any other error ends it.
func followEvents(ctx context.Context, cl *api.Client, q api.EventQuery, out, errOut io.Writer, asJSON bool) error {
	header := !asJSON
	q.Wait = 0 // first, what is logged already
	for ctx.Err() == nil {
		page, err := cl.EventsQuery(ctx, q)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !retryable(err) {
				return err
			}
			fmt.Fprintf(errOut, "hass: events: %v; asking again in %s\n", err, followRetry)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(followRetry):
			}
			continue
		}
		if asJSON {
			enc := json.NewEncoder(out)
			enc.SetEscapeHTML(false)
			for _, e := range page.Events {
				if err := enc.Encode(e); err != nil {
					return err
				}
			}
		} else if len(page.Events) > 0 || header {
			if err := printEvents(out, page.Events, header); err != nil {
				return err
			}
			header = false
		}
		q.After = page.LastSeq
		if len(page.Events) < q.Limit {
			q.Wait = followWait // caught up: from now on, wait for the next
		}
	}
	return ctx.Err()
}

// retryable says whether --follow should ask again after err.
func retryable(err error) bool {
	if _, ok := errors.AsType[*api.UnreachableError](err); ok {
		return true
	}
	if e, ok := errors.AsType[*api.Error](err); ok {
		return e.Code == api.CodeUnavailable
	}
	return false
}

// printEvents prints events as a table (with its header if header).
func printEvents(w io.Writer, evs []api.Event, header bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if header {
		fmt.Fprintln(tw, "SEQ\tTIME\tTYPE\tVM\tHOST\tMESSAGE")
	}
	for _, e := range evs {
		msg := e.Msg
		if e.RecoveredAt != nil && e.FaultAt != nil {
			msg += fmt.Sprintf(" [fault %s, recovered %s]", e.FaultAt.Format(time.RFC3339Nano), e.RecoveredAt.Format(time.RFC3339Nano))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.At.Local().Format("15:04:05.000"), cell(e.Type), cell(e.VM), cell(e.Host), cell(strings.TrimSpace(msg)))
	}
	return tw.Flush()
}

// parseSince reads --since: a duration back from now (Go's units, and d for days, w for
// weeks: 90m, 12h, 7d, 1w2d, 1d12h) or a time (2026-03-04, 2026-03-04T05:06, RFC 3339).
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := parseAge(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			if t.After(now) {
				return time.Time{}, errors.New("that is in the future")
			}
			return t, nil
		}
	}
	return time.Time{}, errors.New("want a duration back from now (30m, 12h, 7d, 2w) or a time (2026-03-04, 2026-03-04T05:06:07Z)")
}

// parseAge is time.ParseDuration with d (24h) and w (7d) too; it must be positive.
func parseAge(s string) (time.Duration, error) {
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		j := i
		for j < len(rest) && (rest[j] < '0' || rest[j] > '9') && rest[j] != '.' {
			j++
		}
		if i == 0 || j == i {
			return 0, fmt.Errorf("%q: not a duration", s)
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		var d time.Duration
		switch unit {
		case "d", "w":
			n, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("%q: not a duration", s)
			}
			per := 24 * time.Hour
			if unit == "w" {
				per *= 7
			}
			if n*float64(per) > float64(1<<62) {
				return 0, fmt.Errorf("%q: too long", s)
			}
			d = time.Duration(n * float64(per))
		default:
			var err error
			if d, err = time.ParseDuration(num + unit); err != nil {
				return 0, fmt.Errorf("%q: not a duration", s)
			}
		}
		total += d
		if total < 0 {
			return 0, fmt.Errorf("%q: too long", s)
		}
	}
	if total <= 0 {
		return 0, fmt.Errorf("%q: want more than 0", s)
	}
	return total, nil
}
