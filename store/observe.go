package store

import (
	"context"
	"time"
)

// Observer is told of the store's event-log writes (for metrics): the events a write
// stored, with their seqs, and how long each write took and whether it failed. Its methods
// must be quick and must not call the store.
type Observer interface {
	Recorded(evs []Event)
	Wrote(took time.Duration, err error)
}

// Observe makes o the store's observer (nil: none).
func (s *Store) Observe(o Observer) {
	if o == nil {
		s.obs.Store(nil)
		return
	}
	s.obs.Store(&o)
}

func (s *Store) observed(start time.Time, evs []Event, err error) {
	p := s.obs.Load()
	if p == nil {
		return
	}
	(*p).Wrote(time.Since(start), err)
	if len(evs) > 0 {
		(*p).Recorded(evs)
	}
}

// AppendEvents gives each event the next sequence number and stores it (see appendEvents).
func (s *Store) AppendEvents(ctx context.Context, evs []Event) ([]Event, error) {
	start := time.Now()
	out, err := s.appendEvents(ctx, evs)
	s.observed(start, out, err)
	return out, err
}

// Record writes a batch in one etcd transaction, with its events (see record).
func (s *Store) Record(ctx context.Context, b Batch) ([]Event, error) {
	start := time.Now()
	out, err := s.record(ctx, b)
	s.observed(start, out, err)
	return out, err
}
