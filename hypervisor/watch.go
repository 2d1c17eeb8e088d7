package hypervisor

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Backoff configures the reconnect delays of Watch.
type Backoff struct {
	Initial    time.Duration // first delay; default 100ms
	Max        time.Duration // cap; default 30s
	Multiplier float64       // default 2
	// Jitter is the fraction (0..1) of random spread added to each delay;
	// default 0.2. Negative disables jitter.
	Jitter float64
	// StableAfter: a connection that lived at least this long resets the
	// delay to Initial; default 10s. Prevents hammering a flapping daemon.
	StableAfter time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = 100 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Multiplier < 1 {
		b.Multiplier = 2
	}
	if b.Jitter == 0 {
		b.Jitter = 0.2
	}
	if b.Jitter < 0 {
		b.Jitter = 0
	}
	if b.StableAfter <= 0 {
		b.StableAfter = 10 * time.Second
	}
	return b
}

// next returns the delay to use now and the one after it.
func (b Backoff) next(cur time.Duration) (wait, following time.Duration) {
	wait = cur
	if b.Jitter > 0 {
		wait += time.Duration(rand.Float64() * b.Jitter * float64(cur))
	}
	following = time.Duration(float64(cur) * b.Multiplier)
	if following > b.Max {
		following = b.Max
	}
	return wait, following
}

// Watch keeps d connected and forwards its events until ctx ends, then
// closes the returned channel (it also closes if d is closed).
//
// After every successful Connect — the first one included — Watch sends an
// Event{Kind: Resync, At: now} before any event of that connection. The
// consumer must then call d.List and reconcile: events may have been lost
// while disconnected. Because the subscription is already active when the
// Resync is sent, nothing that happens after the List snapshot is missed (an
// event may describe a change the List already shows; reconciliation must be
// idempotent).
//
// Connect failures and disconnects are retried with capped exponential
// backoff (see Backoff). log may be nil.
func Watch(ctx context.Context, d Driver, b Backoff, log *slog.Logger) <-chan Event {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b = b.withDefaults()
	out := make(chan Event)
	go func() {
		defer close(out)
		delay := b.Initial
		attempt := 0
		for {
			if ctx.Err() != nil {
				return
			}
			attempt++
			err := d.Connect(ctx)
			if err != nil {
				if errors.Is(err, ErrClosed) || ctx.Err() != nil {
					return
				}
				var wait time.Duration
				wait, delay = b.next(delay)
				log.Warn("hypervisor connect failed, retrying", "attempt", attempt, "retry_in", wait, "err", err)
				if !sleep(ctx, wait) {
					return
				}
				continue
			}
			connectedAt := time.Now()
			log.Info("hypervisor connected", "attempt", attempt)
			attempt = 0
			events := d.Events()
			if !send(ctx, out, Event{Kind: Resync, At: connectedAt}) {
				return
			}
			for ev := range events {
				if !send(ctx, out, ev) {
					return
				}
			}
			if ctx.Err() != nil {
				return
			}
			if time.Since(connectedAt) >= b.StableAfter {
				delay = b.Initial
			}
			var wait time.Duration
			wait, delay = b.next(delay)
			log.Warn("hypervisor connection lost, reconnecting", "up_for", time.Since(connectedAt).Round(time.Millisecond), "retry_in", wait)
			if !sleep(ctx, wait) {
				return
			}
		}
	}()
	return out
}

func send(ctx context.Context, out chan<- Event, ev Event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
