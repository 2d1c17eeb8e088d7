package api

import (
	"context"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hassproject/hass/vmname"
)

// GET /v1/events: the event log, filtered, and followed by long polling.

// MaxEventWait is the longest a GET /v1/events?wait=N may wait for a new event, in seconds.
const MaxEventWait = 60

// EventTypes are the event types a filter takes (and the log holds).
var EventTypes = []string{"op", "expected", "detect", "action", "recovered", "gave-up", "alert", "host", "stale", "forget", "protect", "cluster", "audit"}

// FailureKinds are the failure kinds a filter takes.
var FailureKinds = []string{"vm-crash", "guest-panic", "guest-hang", "guest-shutdown", "watchdog", "io-error", "host-down", "operation-failed", "vm-down"}

// TimePattern is the form the since filter takes: RFC 3339, with a zone.
const TimePattern = `^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`

var timeRE = regexp.MustCompile(TimePattern)

// EventFilter selects events; its zero value selects all.
type EventFilter struct {
	VM, Host string
	Type     string // an event type (EventTypes)
	Kind     string // a failure kind (FailureKinds), on detect, recovered and gave-up events
	Since    time.Time
}

func (f EventFilter) empty() bool { return f == EventFilter{} }

// Match reports whether e passes the filter.
func (f EventFilter) Match(e Event) bool {
	return (f.VM == "" || e.VM == f.VM) && (f.Host == "" || e.Host == f.Host) && (f.Type == "" || e.Type == f.Type) &&
		(f.Kind == "" || e.FailureKind() == f.Kind) && (f.Since.IsZero() || !e.At.Before(f.Since))
}

// FailureKind is the failure an event is about: its kind field, or for a detect or gave-up
// event (whose kind the engine puts at the head of the message, "vm-crash: ...") the kind
// its message begins with; "" for other events.
func (e Event) FailureKind() string {
	return FailureKindOf(e.Type, e.Kind, e.Msg)
}

// FailureKindOf is Event.FailureKind on an event's fields.
func FailureKindOf(typ, kind, msg string) string {
	if kind != "" {
		return kind
	}
	if typ != "detect" && typ != "gave-up" {
		return ""
	}
	k, _, ok := strings.Cut(msg, ":")
	if !ok || k == "" || strings.ContainsAny(k, " \t\n") {
		return ""
	}
	return k
}

// EventQuery is one GET /v1/events.
type EventQuery struct {
	After  uint64
	Limit  int // 0: DefaultEventLimit
	Filter EventFilter
	// Wait, when no event matches yet, waits up to this long for one (at most MaxEventWait
	// seconds, whole seconds).
	Wait time.Duration
}

// EventPage is the answer to an EventQuery: the events, and the seq to ask after next
// (LastSeq: the last event the server looked at, matching or not).
type EventPage struct {
	Events  []Event `json:"events"`
	LastSeq uint64  `json:"last_seq"`
}

// EventWaiter is what a Service may also provide: WaitEvents returns once an event with a seq
// above afterSeq exists, or when ctx ends. Without it the server polls Events.
type EventWaiter interface {
	WaitEvents(ctx context.Context, afterSeq uint64) error
}

// eventPageSize is how many events the server reads from the Service at a time when it
// filters.
const eventPageSize = MaxEventLimit

// pollEvery is how often the server polls a Service that is no EventWaiter.
const pollEvery = 250 * time.Millisecond

func (s *server) events(w http.ResponseWriter, r *http.Request) {
	q, err := parseEventQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, err)
		return
	}
	page, err := s.eventPage(r.Context(), q)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client left while it waited
		}
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// eventPage reads events after q.After until q.Limit match or the log ends; if none matched
// and q.Wait is set, it waits for more and reads again, until the wait is over.
func (s *server) eventPage(ctx context.Context, q EventQuery) (EventPage, error) {
	deadline := time.Now().Add(q.Wait)
	page := EventPage{Events: []Event{}, LastSeq: q.After}
	for {
		if err := s.scanEvents(ctx, q, &page); err != nil {
			return EventPage{}, err
		}
		left := time.Until(deadline)
		if len(page.Events) > 0 || left <= 0 {
			return page, nil
		}
		wctx, cancel := context.WithTimeout(ctx, left)
		err := s.waitEvents(wctx, page.LastSeq)
		cancel()
		if ctx.Err() != nil {
			return EventPage{}, ctx.Err()
		}
		if err != nil && wctx.Err() == nil {
			return EventPage{}, err
		}
	}
}

// scanEvents appends to page the events after page.LastSeq that match, up to q.Limit,
// advancing page.LastSeq past every event it read.
func (s *server) scanEvents(ctx context.Context, q EventQuery, page *EventPage) error {
	if q.Filter.empty() {
		evs, err := s.svc.Events(ctx, page.LastSeq, q.Limit-len(page.Events))
		if err != nil {
			return err
		}
		page.Events = append(page.Events, evs...)
		if len(evs) > 0 {
			page.LastSeq = evs[len(evs)-1].Seq
		}
		return nil
	}
	for len(page.Events) < q.Limit {
		evs, err := s.svc.Events(ctx, page.LastSeq, eventPageSize)
		if err != nil {
			return err
		}
		for _, e := range evs {
			page.LastSeq = e.Seq
			if q.Filter.Match(e) {
				page.Events = append(page.Events, e)
				if len(page.Events) == q.Limit {
					return nil
				}
			}
		}
		if len(evs) < eventPageSize {
			return nil
		}
	}
	return nil
}

// waitEvents returns once an event after afterSeq exists, or ctx ends.
func (s *server) waitEvents(ctx context.Context, afterSeq uint64) error {
	if ew, ok := s.svc.(EventWaiter); ok {
		return ew.WaitEvents(ctx, afterSeq)
	}
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		evs, err := s.svc.Events(ctx, afterSeq, 1)
		if err != nil || len(evs) > 0 {
			return err
		}
	}
}

var eventParams = []string{"after", "limit", "vm", "host", "type", "kind", "since", "wait"}

func parseEventQuery(raw string) (EventQuery, error) {
	q := EventQuery{Limit: DefaultEventLimit}
	vals, perr := url.ParseQuery(raw)
	if perr != nil {
		return q, BadRequest("query", "malformed query string: %v", perr)
	}
	for _, k := range slices.Sorted(maps.Keys(vals)) {
		if !slices.Contains(eventParams, k) {
			return q, BadRequest("query", "unknown parameter %s (want %s)", quote(k), strings.Join(eventParams, ", "))
		}
		if len(vals[k]) > 1 {
			return q, BadRequest(k, "given %d times (want at most once)", len(vals[k]))
		}
	}
	get := func(k string) (string, bool) {
		v, ok := vals[k]
		if !ok {
			return "", false
		}
		return v[0], true
	}
	if v, ok := get("after"); ok {
		n, ok := queryInt(v)
		if !ok || !n.IsUint64() {
			return q, BadRequest("after", "%s is not a non-negative integer (an event seq)", quote(v))
		}
		q.After = n.Uint64()
	}
	if v, ok := get("limit"); ok {
		n, ok := queryInt(v)
		if !ok || !n.IsInt64() || n.Int64() < 1 || n.Int64() > MaxEventLimit {
			return q, BadRequest("limit", "%s is not an integer from 1 to %d", quote(v), MaxEventLimit)
		}
		q.Limit = int(n.Int64())
	}
	if v, ok := get("wait"); ok {
		n, ok := queryInt(v)
		if !ok || !n.IsInt64() || n.Int64() < 0 || n.Int64() > MaxEventWait {
			return q, BadRequest("wait", "%s is not an integer from 0 to %d (seconds)", quote(v), MaxEventWait)
		}
		q.Wait = time.Duration(n.Int64()) * time.Second
	}
	if v, ok := get("vm"); ok {
		if err := checkVMName("vm", v); err != nil {
			return q, err
		}
		q.Filter.VM = v
	}
	if v, ok := get("host"); ok {
		if err := vmname.CheckHost(v); err != nil {
			return q, BadRequest("host", "%v", err)
		}
		q.Filter.Host = v
	}
	if v, ok := get("type"); ok {
		if !slices.Contains(EventTypes, v) {
			return q, BadRequest("type", "%s is not an event type (want one of %s)", quote(v), strings.Join(EventTypes, ", "))
		}
		q.Filter.Type = v
	}
	if v, ok := get("kind"); ok {
		if !slices.Contains(FailureKinds, v) {
			return q, BadRequest("kind", "%s is not a failure kind (want one of %s)", quote(v), strings.Join(FailureKinds, ", "))
		}
		q.Filter.Kind = v
	}
	if v, ok := get("since"); ok {
		t, err := time.Parse(time.RFC3339Nano, v)
		if !timeRE.MatchString(v) || err != nil {
			return q, BadRequest("since", "%s is not a time in RFC 3339 form, such as 2026-03-04T05:06:07Z", quote(v))
		}
		q.Filter.Since = t
	}
	return q, nil
}

// EventsQuery reads one page of the event log; with q.Wait it is a long poll, which the
// client's timeout must outlast (DefaultTimeout, 30 s, does for waits up to 25 s).
func (c *Client) EventsQuery(ctx context.Context, q EventQuery) (EventPage, error) {
	v := url.Values{}
	if q.After > 0 {
		v.Set("after", strconv.FormatUint(q.After, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Wait > 0 {
		v.Set("wait", strconv.Itoa(int((q.Wait+time.Second-1)/time.Second)))
	}
	f := q.Filter
	for k, s := range map[string]string{"vm": f.VM, "host": f.Host, "type": f.Type, "kind": f.Kind} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !f.Since.IsZero() {
		v.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	p := "/v1/events"
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	var out EventPage
	if err := c.do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return EventPage{}, err
	}
	return out, nil
}
