package benchmark

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hassproject/hass/engine"
)

// Report describes the recording's mix: what each kind of input was, its share of the
// inputs and of the engine's time, and which engine paths the workload made run.
func (r *Recording) Report() string {
	m := &r.Mix
	var b strings.Builder
	fmt.Fprintf(&b, "mix: %s: %s inputs and %s NextWake polls (%.0f inputs per virtual second)\n",
		r.Shape, commas(m.Inputs), commas(m.wakePolls), float64(m.Inputs)/r.Shape.Window.Seconds())
	// Each kind's time: with a measured replay, its CPU time apportioned among the input
	// kinds by their wall-clock time call by call while recording, and NextWake's own
	// measure; without, the wall-clock time while recording.
	var nanos [nKinds]float64
	var wallInputs float64
	for k := range KindPoll {
		wallInputs += float64(m.Kinds[k].Nanos)
	}
	for k := range nKinds {
		nanos[k] = float64(m.Kinds[k].Nanos)
		if r.stepsCPU > 0 && k != KindPoll {
			nanos[k] = float64(r.stepsCPU) * float64(m.Kinds[k].Nanos) / max(wallInputs, 1)
		}
	}
	if r.stepsCPU > 0 {
		nanos[KindPoll] = float64(r.pollCPU) * float64(m.Kinds[KindPoll].Calls)
	}
	var total float64
	for _, n := range nanos {
		total += n
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  kind\tcalls\tshare of inputs\tshare of engine time\tmean time\tactions per call\t")
	for k := range nKinds {
		ks := m.Kinds[k]
		if ks.Calls == 0 {
			continue
		}
		share := "-"
		if k != KindPoll {
			share = pct(m.Share(k))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%.3f\t\n", k, commas(ks.Calls), share,
			pct(nanos[k]/max(total, 1)), nanosStr(int64(nanos[k]/float64(ks.Calls))),
			float64(ks.Actions)/float64(ks.Calls))
	}
	tw.Flush()
	if r.stepsCPU > 0 {
		fmt.Fprintf(&b, "  (time: CPU time of the benchmark's replay, shared out among the kinds of input by their wall-clock time while recording; NextWake timed apart)\n")
	} else {
		fmt.Fprintf(&b, "  (time: wall clock, call by call while recording, less the clock's own cost)\n")
	}
	fmt.Fprintf(&b, "  actions: %.4f per input; %s of the inputs ordered at least one:", m.ActionsPerInput(), pct(m.ActiveShare()))
	for k, n := range m.Actions {
		if n > 0 {
			fmt.Fprintf(&b, " %s %s", engine.ActKind(k), commas(n))
		}
	}
	fmt.Fprintf(&b, "\n  requests:")
	for k, n := range m.Ops {
		if n > 0 {
			fmt.Fprintf(&b, " %s %s", engine.OpKind(k), commas(n))
		}
	}
	fmt.Fprintf(&b, " (%s refused); %s virsh destroys behind hass's back\n", commas(m.Refused), commas(m.Virsh))
	fmt.Fprintf(&b, "  faults:")
	for k, n := range m.Faults {
		fmt.Fprintf(&b, " %s %s", faultNames[k], commas(n))
	}
	fmt.Fprintf(&b, "; host losses %s (repaired %s)\n", commas(m.HostLosses), commas(m.HostRepairs))
	fmt.Fprintf(&b, "  engine paths: %s action results (%s with an error), %s snapshots, %s detections, %s recoveries, %s gave up,\n",
		commas(m.Kinds[KindResult].Calls), commas(m.ActionErrors), commas(m.Kinds[KindSnapshot].Calls),
		commas(m.Detected), commas(m.Recovered), commas(m.GaveUp))
	fmt.Fprintf(&b, "    %s op completions (%s failed, %s expired, %s shutdowns escalated), %s inferred ops, %s fences, %s hosts back up,\n",
		commas(m.OpsDone), commas(m.OpsFailed), commas(m.OpsExpired), commas(m.Escal), commas(m.Inferred),
		commas(m.Fenced), commas(m.HostsUp))
	fmt.Fprintf(&b, "    %s placements (%s relocations, %s migrations), %s ticks, %s stale drops, %s alerts, %s VMs forgotten, %s created\n",
		commas(m.Placements()), commas(m.Relocations), commas(m.MigratePlaced), commas(m.Kinds[KindTick].Calls),
		commas(m.Stale), commas(m.Alerts), commas(m.Forgotten), commas(m.Created))
	fmt.Fprintf(&b, "  agents: %s actions lost with their host, %s dropped as overtaken; split brain %d\n",
		commas(m.ActionsLost), commas(m.ActionsOvertaken), m.SplitBrain)
	return b.String()
}

func pct(f float64) string {
	switch {
	case f == 0:
		return "0%"
	case f < 0.001:
		return fmt.Sprintf("%.3f%%", 100*f)
	case f < 0.1:
		return fmt.Sprintf("%.2f%%", 100*f)
	}
	return fmt.Sprintf("%.1f%%", 100*f)
}

// durStr prints d with two or three significant digits: 1.38 ms, 412 µs, 7.3 µs, 95 ns.
func durStr(d time.Duration) string {
	switch n := float64(d.Nanoseconds()); {
	case n >= 1e9:
		return fmt.Sprintf("%.2f s", n/1e9)
	case n >= 10e6:
		return fmt.Sprintf("%.0f ms", n/1e6)
	case n >= 1e6:
		return fmt.Sprintf("%.2f ms", n/1e6)
	case n >= 10e3:
		return fmt.Sprintf("%.0f µs", n/1e3)
	case n >= 1e3:
		return fmt.Sprintf("%.1f µs", n/1e3)
	default:
		return fmt.Sprintf("%.0f ns", n)
	}
}

func nanosStr(n int64) string {
	switch {
	case n >= 10_000_000:
		return fmt.Sprintf("%.0f ms", float64(n)/1e6)
	case n >= 10_000:
		return fmt.Sprintf("%.0f µs", float64(n)/1e3)
	}
	return fmt.Sprintf("%d ns", n)
}

// Check names the engine paths the recording failed to exercise, or nil when it exercised
// them all: lease renewals, a resync from every host, user requests and their completion,
// crashes detected and recovered, actions answered by results, a host lost, fenced by a Tick
// and evacuated by placement, and migrations placed by the engine. The engine benchmark
// refuses a recording that fails it, so a mix that degenerated to the cheap path is never
// reported as a throughput.
func (r *Recording) Check() []string {
	m, s := &r.Mix, r.Shape
	var bad []string
	need := func(ok bool, format string, args ...any) {
		if !ok {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	need(m.Kinds[KindLeaseRenewed].Calls >= s.Hosts, "%d lease renewals for %d hosts", m.Kinds[KindLeaseRenewed].Calls, s.Hosts)
	resyncs := s.Hosts * int(s.Window/r.Rates.ResyncEvery)
	need(resyncs > 0 && m.Kinds[KindSnapshot].Calls >= resyncs*9/10, "%d snapshots, want about %d (a resync of every host every %s)",
		m.Kinds[KindSnapshot].Calls, resyncs, r.Rates.ResyncEvery)
	need(m.Kinds[KindRequest].Calls > 0 && m.OpsDone > 0, "%d requests, %d operations completed", m.Kinds[KindRequest].Calls, m.OpsDone)
	need(m.Detected > 0 && m.Recovered > 0, "%d failures detected, %d recovered", m.Detected, m.Recovered)
	need(m.Kinds[KindResult].Calls > 0 && m.Answered > 0, "%d action results", m.Kinds[KindResult].Calls)
	pending := m.actionsOrdered - m.Answered - m.ActionsLost - m.ActionsOvertaken
	need(pending <= m.actionsOrdered/10+20, "%d of %d actions were never answered", pending, m.actionsOrdered)
	need(m.HostLosses > 0 && m.Kinds[KindLeaseExpired].Calls > 0, "%d host losses, %d lease expiries", m.HostLosses, m.Kinds[KindLeaseExpired].Calls)
	need(m.Fenced > 0 && m.Kinds[KindTick].Calls > 0, "%d hosts fenced, %d ticks", m.Fenced, m.Kinds[KindTick].Calls)
	need(m.Relocations > 0, "no VM relocated: no placement after a host loss")
	need(m.MigratePlaced > 0, "no migration placed by the engine")
	need(m.SplitBrain == 0, "%d starts while another copy ran (split brain)", m.SplitBrain)
	return bad
}
