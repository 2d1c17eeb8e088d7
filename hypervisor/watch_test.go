package hypervisor

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeDriver fails the first failN connects, then delivers one event per
// connection and drops it.
type fakeDriver struct {
	Driver // unimplemented methods panic
	mu     sync.Mutex
	failN  int
	calls  int
	times  []time.Time
	events chan Event
}

func (f *fakeDriver) Connect(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.times = append(f.times, time.Now())
	if f.calls <= f.failN {
		return errors.New("boom")
	}
	f.events = make(chan Event, 1)
	f.events <- Event{Kind: Lifecycle, Domain: "vm", Detail: f.calls}
	close(f.events)
	return nil
}

func (f *fakeDriver) Events() <-chan Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events
}

func TestWatchResyncAndBackoff(t *testing.T) {
	f := &fakeDriver{failN: 3}
	ctx, cancel := context.WithCancel(t.Context())
	b := Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond, Jitter: -1}
	defer cancel()
	ch := Watch(ctx, f, b, nil)
	var kinds []EventKind
	for ev := range ch {
		kinds = append(kinds, ev.Kind)
		if len(kinds) == 6 {
			cancel()
		}
	}
	want := []EventKind{Resync, Lifecycle, Resync, Lifecycle, Resync, Lifecycle}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("kinds = %v, want prefix %v", kinds, want)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// delays: 10, 20, 40 (failures), then 40 (capped) after each disconnect
	wantMin := []time.Duration{10, 20, 40, 40, 40}
	for i, w := range wantMin {
		got := f.times[i+1].Sub(f.times[i])
		if got < w*time.Millisecond {
			t.Errorf("delay %d = %s, want >= %dms", i, got, w)
		}
	}
}

func TestWatchStopsOnClosed(t *testing.T) {
	d := closedDriver{}
	ch := Watch(t.Context(), d, Backoff{}, nil)
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("unexpected event")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Watch did not stop on ErrClosed")
	}
}

type closedDriver struct{ Driver }

func (closedDriver) Connect(context.Context) error {
	return &OpError{Op: "connect", Err: ErrClosed}
}
