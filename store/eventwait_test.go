package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWaitEvents(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	// An empty log: the wait ends with its context.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := s.WaitEvents(short, 0)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("empty log: %v, want the context's deadline", err)
	}
	if _, err := s.AppendEvents(ctx, []Event{{At: time.Now(), Type: "test"}, {At: time.Now(), Type: "test"}}); err != nil {
		t.Fatal(err)
	}
	// Events there already: at once.
	if err := s.WaitEvents(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// After the last one: until one is appended.
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.WaitEvents(ctx, 2) }()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("returned before any event was appended: %v", err)
	default:
	}
	if _, err := s.AppendEvents(ctx, []Event{{At: time.Now(), Type: "test"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || time.Since(start) < 300*time.Millisecond {
			t.Fatalf("%v after %s", err, time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no return 10 s after the event was appended")
	}
}
