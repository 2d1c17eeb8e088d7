package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/api"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.Local)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"7d", now.Add(-7 * 24 * time.Hour)},
		{"2w", now.Add(-14 * 24 * time.Hour)},
		{"1d12h", now.Add(-36 * time.Hour)},
		{"90m", now.Add(-90 * time.Minute)},
		{"1.5h", now.Add(-90 * time.Minute)},
		{"2026-03-04", time.Date(2026, 3, 4, 0, 0, 0, 0, time.Local)},
		{"2026-03-04T05:06", time.Date(2026, 3, 4, 5, 6, 0, 0, time.Local)},
		{"2026-03-04T05:06:07Z", time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)},
	} {
		got, err := parseSince(tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "7", "d", "7x", "-1d", "0d", "2026-13-01", "2027-01-01", "yesterday", "1e9999d"} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q): no error", bad)
		}
	}
}

func eventsFake() *cliFake {
	f := newCLIFake("v1", "v2")
	at := cliT0.Add(time.Minute)
	f.events = append(f.events,
		api.Event{Seq: 3, At: at, Type: "detect", VM: "v1", Host: "h1", Msg: "vm-crash: the emulator died"},
		api.Event{Seq: 4, At: at, Type: "detect", VM: "v2", Host: "h2", Msg: "guest-panic: reported"},
		api.Event{Seq: 5, At: at.Add(time.Second), Type: "recovered", VM: "v1", Host: "h1", Kind: "vm-crash", Msg: "vm-crash after 1 attempt(s)", FaultAt: &at, RecoveredAt: &at})
	return f
}

func TestEventsFilters(t *testing.T) {
	srv := cliServer(t, eventsFake())
	for _, tc := range []struct {
		args []string
		seqs []uint64
	}{
		{[]string{"--vm", "v1"}, []uint64{1, 3, 5}},
		{[]string{"--host", "h2"}, []uint64{4}},
		{[]string{"--type", "detect"}, []uint64{3, 4}},
		{[]string{"--kind", "vm-crash"}, []uint64{3, 5}},
		{[]string{"--since", "2026-03-04T05:07:00Z"}, []uint64{3, 4, 5}},
		{[]string{"--vm", "v1", "--type", "recovered", "--after", "2"}, []uint64{5}},
	} {
		args := append([]string{"events", "-o", "json", "--server", srv}, tc.args...)
		code, out, errs := hass(args...)
		var evs []api.Event
		if code != 0 || json.Unmarshal([]byte(out), &evs) != nil {
			t.Errorf("%q: exit %d, %q %q", tc.args, code, out, errs)
			continue
		}
		var got []uint64
		for _, e := range evs {
			got = append(got, e.Seq)
		}
		if !equalSeqs(got, tc.seqs) {
			t.Errorf("%q: seqs %v, want %v", tc.args, got, tc.seqs)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "crash"}, `type: "crash" is not an event type`},
		{[]string{"--kind", "oops"}, `kind: "oops" is not a failure kind`},
		{[]string{"--since", "soon"}, `--since "soon": want a duration`},
		{[]string{"--host", "-h"}, "host"},
	} {
		code, out, errs := hass(append([]string{"events", "--server", srv}, tc.args...)...)
		if code == 0 || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want an error naming %q", tc.args, code, out, errs, tc.want)
		}
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in two goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestEventsFollow: --follow prints what is logged already, then each new matching event
// soon after it is logged, as JSON lines or table rows under one header.
func TestEventsFollow(t *testing.T) {
	for _, asJSON := range []bool{true, false} {
		f := eventsFake()
		cl := api.NewClient(cliServer(t, f), nil).WithToken(testToken.String())
		var out, errOut syncBuffer
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- followEvents(ctx, cl, api.EventQuery{Limit: 100, Filter: api.EventFilter{VM: "v1"}}, &out, &errOut, asJSON)
		}()
		waitFor := func(what string, ok func(string) bool) {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for !ok(out.String()) {
				if time.Now().After(deadline) {
					t.Fatalf("json=%v: %s: not printed within 10 s:\n%s", asJSON, what, out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		waitFor("the log so far", func(s string) bool { return strings.Contains(s, "vm-crash after 1 attempt(s)") })
		f.mu.Lock()
		f.events = append(f.events,
			api.Event{Seq: 6, At: time.Now(), Type: "op", VM: "v2", Host: "h2", Msg: "not for v1"},
			api.Event{Seq: 7, At: time.Now(), Type: "op", VM: "v1", Host: "h1", Msg: "stop accepted id=9 source=api"})
		f.mu.Unlock()
		logged := time.Now()
		waitFor("a new event", func(s string) bool { return strings.Contains(s, "stop accepted id=9") })
		if d := time.Since(logged); d > 3*time.Second {
			t.Errorf("json=%v: a new event printed %s after it was logged", asJSON, d)
		}
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("json=%v: ended with %v", asJSON, err)
		}
		s := out.String()
		if strings.Contains(s, "not for v1") || errOut.String() != "" {
			t.Errorf("json=%v: printed another VM's event, or complained: %q %q", asJSON, s, errOut.String())
		}
		lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
		if asJSON {
			if len(lines) != 4 {
				t.Errorf("%d JSON lines, want 4:\n%s", len(lines), s)
			}
			for _, l := range lines {
				var e api.Event
				if err := json.Unmarshal([]byte(l), &e); err != nil || e.VM != "v1" {
					t.Errorf("line %q: %v", l, err)
				}
			}
		} else if len(lines) != 5 || !strings.HasPrefix(lines[0], "SEQ") || strings.Count(s, "SEQ") != 1 {
			t.Errorf("table: want one header and 4 rows:\n%s", s)
		}
	}
}
