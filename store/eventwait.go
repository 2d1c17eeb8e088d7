package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WaitEvents returns once the event log has an event with a seq above afterSeq (at once if
// it has one already), or with ctx's error when ctx ends first. It watches the log's
// counter, so a wait costs nothing while nothing is logged.
func (s *Store) WaitEvents(ctx context.Context, afterSeq uint64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, eventSeqKey)
	if err != nil {
		return fmt.Errorf("store: wait for events after %d: get %s: %w", afterSeq, eventSeqKey, s.cause(err))
	}
	if len(resp.Kvs) > 0 {
		last, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
		if err != nil {
			return fmt.Errorf("store: wait for events: decode %s: %w", eventSeqKey, err)
		}
		if last > afterSeq {
			return nil
		}
	}
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), eventSeqKey, clientv3.WithRev(resp.Header.Revision+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("store: wait for events after %d: %w", afterSeq, s.cause(err))
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			if last, err := strconv.ParseUint(string(ev.Kv.Value), 10, 64); err == nil && last > afterSeq {
				return nil
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("store: wait for events: the watch ended")
}
