package api

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// logFake is a fake whose event log is varied: VMs, hosts, types and kinds.
func logFake(n int) *fakeService {
	f := newFake()
	f.events = nil
	for i := range n {
		e := Event{Seq: uint64(i + 1), At: t0.Add(time.Duration(i) * time.Minute), VM: fmt.Sprintf("v%d", i%3), Host: fmt.Sprintf("h%d", i%2)}
		switch i % 4 {
		case 0:
			e.Type, e.Msg = "detect", "vm-crash: the emulator died"
		case 1:
			e.Type, e.Msg = "action", "start"
		case 2:
			e.Type, e.Kind, e.Msg = "recovered", "vm-crash", "vm-crash after 1 attempt(s)"
		case 3:
			e.Type, e.Msg = "detect", "guest-panic: reported"
		}
		f.events = append(f.events, e)
	}
	return f
}

func (f *fakeService) add(e Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e.Seq = uint64(len(f.events) + 1)
	f.events = append(f.events, e)
}

func TestEventFilters(t *testing.T) {
	f := logFake(2500) // more than a page of the service's, so the server reads several
	ts := httptest.NewServer(NewServer(f, nil))
	defer ts.Close()
	cl := NewClient(ts.URL, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		q    EventQuery
		want func(Event) bool
	}{
		{"vm", EventQuery{Limit: 1000, Filter: EventFilter{VM: "v1"}}, func(e Event) bool { return e.VM == "v1" }},
		{"host", EventQuery{Limit: 1000, Filter: EventFilter{Host: "h0"}}, func(e Event) bool { return e.Host == "h0" }},
		{"type", EventQuery{Limit: 1000, Filter: EventFilter{Type: "recovered"}}, func(e Event) bool { return e.Type == "recovered" }},
		{"kind from the message", EventQuery{Limit: 1000, Filter: EventFilter{Kind: "guest-panic"}}, func(e Event) bool { return e.Seq%4 == 0 }},
		{"kind from the field and the message", EventQuery{Limit: 1000, Filter: EventFilter{Kind: "vm-crash"}}, func(e Event) bool { return e.Seq%4 == 1 || e.Seq%4 == 3 }},
		{"since", EventQuery{Limit: 1000, Filter: EventFilter{Since: t0.Add(2400 * time.Minute)}}, func(e Event) bool { return e.Seq > 2400 }},
		{"all of them", EventQuery{Limit: 1000, After: 100, Filter: EventFilter{VM: "v2", Host: "h1", Type: "action", Since: t0.Add(1000 * time.Minute)}},
			func(e Event) bool { return e.Seq > 1000 && e.VM == "v2" && e.Host == "h1" && e.Type == "action" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			after := tc.q.After
			for {
				q := tc.q
				q.After = after
				page, err := cl.EventsQuery(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range page.Events {
					got = append(got, e.Seq)
				}
				if page.LastSeq < after {
					t.Fatalf("last_seq %d went back from %d", page.LastSeq, after)
				}
				if len(page.Events) == 0 {
					break
				}
				after = page.LastSeq
			}
			var want []uint64
			for _, e := range f.events {
				if e.Seq > tc.q.After && tc.want(e) {
					want = append(want, e.Seq)
				}
			}
			if len(want) == 0 || !slices.Equal(got, want) {
				t.Fatalf("got %d events, want %d (%v... vs %v...)", len(got), len(want), head(got), head(want))
			}
		})
	}
	// A limit is a limit of matches; last_seq says where the server stopped.
	page, err := cl.EventsQuery(ctx, EventQuery{Limit: 3, Filter: EventFilter{Type: "recovered"}})
	if err != nil || len(page.Events) != 3 || page.LastSeq != 11 {
		t.Fatalf("limit 3 of recovered: %v, %d events, last_seq %d (want 3, 11)", err, len(page.Events), page.LastSeq)
	}
	// Nothing matches: last_seq is the log's end, so the next request reads nothing again.
	page, err = cl.EventsQuery(ctx, EventQuery{Filter: EventFilter{VM: "nobody"}})
	if err != nil || len(page.Events) != 0 || page.LastSeq != 2500 {
		t.Fatalf("no match: %v, %d events, last_seq %d", err, len(page.Events), page.LastSeq)
	}
}

func head(s []uint64) []uint64 { return s[:min(len(s), 5)] }

// waiterFake is a fake that is also an EventWaiter.
type waiterFake struct {
	*fakeService
	waits atomic.Int32
}

func (w *waiterFake) WaitEvents(ctx context.Context, after uint64) error {
	w.waits.Add(1)
	for {
		w.mu.Lock()
		n := uint64(len(w.events))
		w.mu.Unlock()
		if n > after {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestEventsLongPoll: a request with wait answers as soon as a matching event is logged,
// skips events that do not match, and answers empty when the wait is over.
func TestEventsLongPoll(t *testing.T) {
	for _, waiter := range []bool{false, true} {
		t.Run(fmt.Sprintf("waiter=%v", waiter), func(t *testing.T) {
			f := logFake(10)
			var svc Service = f
			wf := &waiterFake{fakeService: f}
			if waiter {
				svc = wf
			}
			ts := httptest.NewServer(NewServer(svc, nil))
			defer ts.Close()
			cl := NewClient(ts.URL, nil)
			go func() {
				time.Sleep(300 * time.Millisecond)
				f.add(Event{At: time.Now(), Type: "action", VM: "other"}) // does not match
				time.Sleep(300 * time.Millisecond)
				f.add(Event{At: time.Now(), Type: "gave-up", VM: "v9", Msg: "io-error: disk"})
			}()
			start := time.Now()
			page, err := cl.EventsQuery(context.Background(), EventQuery{After: 10, Wait: 10 * time.Second, Filter: EventFilter{VM: "v9"}})
			took := time.Since(start)
			if err != nil || len(page.Events) != 1 || page.Events[0].Seq != 12 || page.Events[0].FailureKind() != "io-error" || page.LastSeq != 12 {
				t.Fatalf("%v: %+v", err, page)
			}
			if took < 500*time.Millisecond || took > 5*time.Second {
				t.Fatalf("answered after %s: want soon after the event, 0.6 s in", took)
			}
			if waiter && wf.waits.Load() < 1 {
				t.Fatal("the service's WaitEvents was not used")
			}
			start = time.Now()
			page, err = cl.EventsQuery(context.Background(), EventQuery{After: 12, Wait: time.Second})
			if took := time.Since(start); err != nil || len(page.Events) != 0 || page.LastSeq != 12 || took < time.Second || took > 4*time.Second {
				t.Fatalf("an empty wait: %v, %+v after %s", err, page, took)
			}
		})
	}
}

// TestEventsWaitEndsWithClient: a client that leaves ends the server's wait.
func TestEventsWaitEndsWithClient(t *testing.T) {
	f := &waiterFake{fakeService: logFake(1)}
	ts := httptest.NewServer(NewServer(f, nil))
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := NewClient(ts.URL, nil).EventsQuery(ctx, EventQuery{After: 1, Wait: 30 * time.Second})
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %s", err, time.Since(start))
	}
}

func TestFailureKindOf(t *testing.T) {
	for _, tc := range []struct{ typ, kind, msg, want string }{
		{"recovered", "vm-crash", "vm-crash after 1 attempt(s)", "vm-crash"},
		{"detect", "", "guest-panic: reported", "guest-panic"},
		{"gave-up", "", "host-down: no host fits; the vm is in error", "host-down"},
		{"detect", "", "no colon here", ""},
		{"detect", "", "two words: x", ""},
		{"action", "", "start: x", ""},
		{"alert", "", "", ""},
	} {
		if got := FailureKindOf(tc.typ, tc.kind, tc.msg); got != tc.want {
			t.Errorf("FailureKindOf(%q, %q, %q) = %q, want %q", tc.typ, tc.kind, tc.msg, got, tc.want)
		}
	}
}
