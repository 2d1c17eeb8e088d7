// Package report computes availability from hass's event log: per VM and per failure kind,
// the failures, the mean and worst time to recover, the downtime, and the availability over
// a window. It is pure: events in, figures out.
//
// A VM is down from its failure to its recovery. The event log says when:
//
//   - a detect event opens a failure (its kind heads the message, "vm-crash: ...") at the
//     time it was logged, unless one is open for the VM already (a failure during a recovery
//     is the same outage);
//   - a recovered event closes it: the outage ran from its fault_at (the agent's stamp of the
//     fault; or the open failure's detection, if that was earlier) to its recovered_at, and
//     that is also its time to recover;
//   - a gave-up event leaves it open (the VM is in error, down) until a user acts on the VM
//     (an op event: a start, a stop, a delete), whose time ends it;
//   - an op event that cancels or drops the recovery (a user stopped or deleted the VM while
//     it was being recovered) ends it then, unrecovered;
//   - a forget event (the VM is no longer protected) ends it, and the VM's protection.
//
// A user's stop, shutdown or delete opens nothing: it is not downtime. A failure still open
// at the window's end counts as downtime until then (DownNow). A failure that began before
// the window and ended inside it counts, with only its downtime inside the window; its time
// to recover is its whole length. Outages of one VM that overlap are counted once.
//
// Availability is 1 - downtime / protected time, as a percentage, where a VM is protected
// from its protect event ("desired=...") or, when the log holds none (it was trimmed, or
// the VM was protected before it began), from the window's start, until its forget event.
package report

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hassproject/hass/api"
)

// Row is one line of the report: one VM, one failure kind, or the total.
type Row struct {
	Name      string  `json:"name"`
	Failures  int     `json:"failures"`  // outages in the window (begun in it, or going on at its start)
	Recovered int     `json:"recovered"` // of which hass recovered (a recovered event)
	DownNow   int     `json:"down_now"`  // of which still going on at the window's end
	MeanTTR   Secs    `json:"mean_recovery_s"`
	WorstTTR  Secs    `json:"worst_recovery_s"`
	Downtime  Secs    `json:"downtime_s"`
	Protected Secs    `json:"protected_s"`      // protected time in the window (a kind's: every VM's)
	Avail     float64 `json:"availability_pct"` // 100 * (1 - downtime / protected)
	ttrSum    time.Duration
}

// Secs is a duration shown in seconds (JSON, CSV) with millisecond precision.
type Secs float64

func secs(d time.Duration) Secs { return Secs(d.Round(time.Millisecond).Seconds()) }

// Duration turns it back into a time.Duration.
func (s Secs) Duration() time.Duration {
	return time.Duration(float64(s) * float64(time.Second)).Round(time.Millisecond)
}

// Report is the availability over [Since, Until].
type Report struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	VMs   []Row     `json:"vms"`   // by name
	Kinds []Row     `json:"kinds"` // by failure kind
	Total Row       `json:"total"`
}

// outage is one failure of one VM.
type outage struct {
	kind       string
	start, end time.Time
	recovered  bool
	open       bool // still going on at the window's end
	gaveUp     bool
}

// span is a half-open interval of time.
type span struct{ from, to time.Time }

type vmLog struct {
	outages    []*outage
	cur        *outage
	protected  []span
	protecting bool // a protection span is open (its from is protected[len-1].from)
	seen       bool
}

// Compute computes the report over [since, until] from events, in log (seq) order. vms are
// the VMs protected at until: one the log never mentions was protected the whole window
// without a failure.
func Compute(events []api.Event, vms []string, since, until time.Time) Report {
	logs := map[string]*vmLog{}
	get := func(name string) *vmLog {
		l := logs[name]
		if l == nil {
			l = &vmLog{}
			logs[name] = l
		}
		return l
	}
	events = slices.Clone(events)
	slices.SortStableFunc(events, func(a, b api.Event) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, e := range events {
		if e.VM == "" {
			continue
		}
		l := get(e.VM)
		first := !l.seen
		l.seen = true
		if first && !(e.Type == "protect" && strings.HasPrefix(e.Msg, "desired=")) {
			// Protected before the log says so (trimmed, or before hass logged protections).
			l.protected, l.protecting = append(l.protected, span{from: time.Time{}}), true
		}
		switch e.Type {
		case "protect":
			if strings.HasPrefix(e.Msg, "desired=") && !l.protecting {
				l.protected, l.protecting = append(l.protected, span{from: e.At}), true
			}
		case "forget":
			l.end(e.At)
			if l.protecting {
				l.protected[len(l.protected)-1].to = e.At
				l.protecting = false
			}
		case "detect":
			if l.cur == nil {
				l.cur = &outage{kind: e.FailureKind(), start: e.At}
				l.outages = append(l.outages, l.cur)
			}
		case "gave-up":
			if l.cur == nil {
				l.cur = &outage{kind: e.FailureKind(), start: e.At}
				l.outages = append(l.outages, l.cur)
			}
			l.cur.gaveUp = true
		case "recovered":
			fault := e.At
			if e.DetectAt != nil {
				fault = *e.DetectAt
			}
			if e.FaultAt != nil {
				fault = *e.FaultAt
			}
			end := e.At
			if e.RecoveredAt != nil {
				end = *e.RecoveredAt
			}
			o := l.cur
			if o == nil {
				o = &outage{kind: e.FailureKind(), start: fault}
				l.outages = append(l.outages, o)
			}
			if fault.Before(o.start) {
				o.start = fault
			}
			if o.kind == "" {
				o.kind = e.FailureKind()
			}
			o.end, o.recovered = end, true
			l.cur = nil
		case "op":
			if l.cur == nil {
				break
			}
			if l.cur.gaveUp || strings.HasPrefix(e.Msg, "recovery from ") {
				l.end(e.At) // the user took over, or called the recovery off
			}
		}
	}
	for _, name := range vms {
		if l := get(name); !l.seen {
			l.seen, l.protecting = true, true
			l.protected = append(l.protected, span{from: time.Time{}})
		}
	}
	r := Report{Since: since, Until: until}
	kinds := map[string]*Row{}
	var totalProtected, totalDown time.Duration
	for _, name := range slices.Sorted(maps.Keys(logs)) {
		l := logs[name]
		if l.cur != nil {
			l.cur.end, l.cur.open = until, true
		}
		if l.protecting {
			l.protected[len(l.protected)-1].to = until
		}
		prot := total(clip(l.protected, since, until))
		row := Row{Name: name, Protected: secs(prot)}
		var down []span
		byKind := map[string][]span{}
		for _, o := range l.outages {
			if !o.end.After(since) || !o.start.Before(until) {
				continue // wholly outside the window
			}
			k := o.kind
			if k == "" {
				k = "unknown"
			}
			kr := kinds[k]
			if kr == nil {
				kr = &Row{Name: k}
				kinds[k] = kr
			}
			for _, rw := range []*Row{&row, kr} {
				rw.Failures++
				switch {
				case o.open:
					rw.DownNow++
				case o.recovered:
					rw.Recovered++
					ttr := o.end.Sub(o.start)
					rw.ttrSum += ttr
					if s := secs(ttr); s > rw.WorstTTR {
						rw.WorstTTR = s
					}
				}
			}
			sp := span{o.start, o.end}
			down = append(down, sp)
			byKind[k] = append(byKind[k], sp)
		}
		d := total(clip(down, since, until))
		row.Downtime = secs(d)
		row.Avail = avail(d, prot)
		row.MeanTTR = mean(row.ttrSum, row.Recovered)
		for k, sps := range byKind {
			kinds[k].ttrDown(total(clip(sps, since, until)))
		}
		if prot == 0 && row.Failures == 0 {
			continue // not protected in the window
		}
		totalProtected += prot
		totalDown += d
		r.VMs = append(r.VMs, row)
		r.Total.Failures += row.Failures
		r.Total.Recovered += row.Recovered
		r.Total.DownNow += row.DownNow
		r.Total.ttrSum += row.ttrSum
		r.Total.WorstTTR = max(r.Total.WorstTTR, row.WorstTTR)
	}
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		kr := kinds[k]
		kr.MeanTTR = mean(kr.ttrSum, kr.Recovered)
		kr.Protected = secs(totalProtected)
		kr.Avail = avail(kr.Downtime.Duration(), totalProtected)
		r.Kinds = append(r.Kinds, *kr)
	}
	r.Total.Name = "total"
	r.Total.MeanTTR = mean(r.Total.ttrSum, r.Total.Recovered)
	r.Total.Downtime = secs(totalDown)
	r.Total.Protected = secs(totalProtected)
	r.Total.Avail = avail(totalDown, totalProtected)
	if r.VMs == nil {
		r.VMs = []Row{}
	}
	if r.Kinds == nil {
		r.Kinds = []Row{}
	}
	return r
}

// ttrDown adds a VM's downtime of this kind to a kind's row.
func (r *Row) ttrDown(d time.Duration) { r.Downtime = secs(r.Downtime.Duration() + d) }

// end closes the VM's current outage at t, unrecovered.
func (l *vmLog) end(t time.Time) {
	if l.cur != nil {
		l.cur.end = t
		l.cur = nil
	}
}

func mean(sum time.Duration, n int) Secs {
	if n == 0 {
		return 0
	}
	return secs(sum / time.Duration(n))
}

func avail(down, prot time.Duration) float64 {
	if prot <= 0 {
		return 100
	}
	return 100 * (1 - float64(down)/float64(prot))
}

// clip cuts spans to [since, until], dropping the empty, and merges overlapping ones.
func clip(sps []span, since, until time.Time) []span {
	var out []span
	for _, s := range sps {
		if s.from.Before(since) {
			s.from = since
		}
		if s.to.After(until) {
			s.to = until
		}
		if s.to.After(s.from) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b span) int { return a.from.Compare(b.from) })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 && !s.from.After(merged[n-1].to) {
			if s.to.After(merged[n-1].to) {
				merged[n-1].to = s.to
			}
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

func total(sps []span) time.Duration {
	var d time.Duration
	for _, s := range sps {
		d += s.to.Sub(s.from)
	}
	return d
}
