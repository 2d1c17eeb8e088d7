package controller

// The election session's lease, kept alive by the controller itself.
//
// etcd answers a lease renewal only once it has applied everything it committed, and gives
// up after a second. A new leader's takeover writes 50,000 events and more in transactions
// of a thousand operations, one after another: renewals that arrive while one is applied
// can fail one after another until the 2 s session has expired (the client's own keepalive
// then closes the session, and the takeover is thrown away, to be done again). So the
// controller renews the lease itself: every third of its TTL, and between the parts of any
// write in several transactions (store.Guard.Keep), when the write just returned and etcd
// has applied it. The session is taken for lost once no renewal has been answered for the
// TTL (as etcd's client does), or when etcd says the lease is gone. Losing it wrongly would
// cost a takeover, never safety: every leader's write is guarded by its election key.

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaderLease is an election session's lease and what is known of its life.
type leaderLease struct {
	cli *clientv3.Client
	id  clientv3.LeaseID
	ttl time.Duration
	log *slog.Logger

	mu      sync.Mutex
	expires time.Time // when the lease runs out unless renewed: a renewal's send time plus its TTL
	lost    bool
	done    chan struct{}
}

// grantLease grants a lease of ttl (whole seconds, at least one).
func grantLease(ctx context.Context, cli *clientv3.Client, ttl time.Duration, log *slog.Logger) (*leaderLease, error) {
	secs := int64((ttl + time.Second - 1) / time.Second)
	secs = max(secs, 1)
	sent := time.Now()
	resp, err := cli.Grant(ctx, secs)
	if err != nil {
		return nil, err
	}
	return &leaderLease{cli: cli, id: resp.ID, ttl: time.Duration(secs) * time.Second, log: log,
		expires: sent.Add(time.Duration(resp.TTL) * time.Second), done: make(chan struct{})}, nil
}

// Done is closed once the lease is lost.
func (l *leaderLease) Done() <-chan struct{} { return l.done }

// keep renews the lease every third of its TTL until ctx ends or the lease is lost.
func (l *leaderLease) keep(ctx context.Context) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.done:
			return
		case <-t.C:
			l.renew(ctx)
		}
	}
}

// renew renews the lease once (an answer is awaited for at most a third of the TTL), and
// closes Done if it is lost.
func (l *leaderLease) renew(ctx context.Context) {
	if l.isLost() {
		return
	}
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	resp, err := l.cli.KeepAliveOnce(rctx, l.id)
	cancel()
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil && resp.TTL <= 0:
		l.lose("etcd no longer holds the election session's lease")
	case err != nil:
		if ctx.Err() == nil {
			l.log.Debug("the election session's lease could not be renewed", "err", err)
		}
		l.expire()
	default:
		l.mu.Lock()
		if e := sent.Add(time.Duration(resp.TTL) * time.Second); e.After(l.expires) {
			l.expires = e
		}
		l.mu.Unlock()
	}
}

// expire closes Done when no renewal was answered for the TTL.
func (l *leaderLease) expire() {
	l.mu.Lock()
	over := time.Now().After(l.expires)
	l.mu.Unlock()
	if over {
		l.lose("no renewal of the election session's lease was answered for its TTL")
	}
}

func (l *leaderLease) isLost() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

func (l *leaderLease) lose(why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.lost {
		l.lost = true
		l.log.Warn("the election session is lost", "why", why)
		close(l.done)
	}
}
