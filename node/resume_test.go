package node

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor"
	"github.com/hassproject/hass/store"
)

// fenceDriver is a hypervisor that only records what a fence destroys.
type fenceDriver struct {
	hypervisor.Driver
	mu        sync.Mutex
	destroyed []string
}

func (d *fenceDriver) Destroy(_ context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.destroyed = append(d.destroyed, name)
	return nil
}

// embeddedStore opens a store of one embedded etcd member for the test, closed at its end,
// with a context that ends 90 s on.
func embeddedStore(t *testing.T) (context.Context, *store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	st, err := store.OpenEmbedded(ctx, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return ctx, st
}

// resumedNode is a node whose agent process resumes from past, with old the lease its
// predecessor held, as Run makes it (without its loops).
func resumedNode(st *store.Store, old store.LeaseID, past agent.Past) (*Node, *fenceDriver) {
	drv := &fenceDriver{}
	n := &Node{cfg: Config{Host: "h1", LeaseTTL: 5 * time.Second, RenewEvery: time.Second, SelfFenceAfter: 3 * time.Second},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), st: st, drv: drv,
		prot: map[engine.VMID]bool{"v1": true}, heard: map[engine.HostID]heard{}, keep: make(chan struct{}, 1),
		members: []engine.HostID{"h1", "h2"}, oldLease: old}
	acfg := agent.DefaultConfig("h1")
	acfg.SelfFenceAfter = n.cfg.SelfFenceAfter
	n.ag = agent.New(acfg, env{n}, time.Now(), &past)
	return n, drv
}

// A restarted agent asks the store about its predecessor's lease before its first Tick:
// alive, it keeps it and fences nothing; expired or unknown, it fences before any lease of
// its own; no answer, it is told the renewal failed and keeps the old lease on record.
func TestRestartAsksAboutTheOldLease(t *testing.T) {
	ctx, st := embeddedStore(t)
	l, err := st.GrantAlive(ctx, "h1", 5*time.Second, store.Alive{})
	if err != nil {
		t.Fatal(err)
	}
	overdue := agent.Past{Renewed: time.Now().Add(-4 * time.Second)} // past SelfFenceAfter, within the TTL

	// 1. Alive: kept, no fence, though the last renewal is older than SelfFenceAfter.
	n, drv := resumedNode(st, l.ID, overdue)
	if !n.askLease(ctx, 2*time.Second) {
		t.Fatal("the store answers: askLease says it did not")
	}
	n.ag.Tick(time.Now())
	if n.ag.Fenced() || len(drv.destroyed) != 0 || n.lease.ID != l.ID || n.oldLease != 0 {
		t.Fatalf("old lease alive: fenced=%v destroyed=%v lease %x (want %x)", n.ag.Fenced(), drv.destroyed, n.lease.ID, l.ID)
	}
	if n.past.Renewed.Before(time.Now().Add(-2*time.Second)) || n.past.Fenced {
		t.Fatalf("kept for the next process: %+v, want the renewal just made", n.past)
	}

	// 2. Expired (here revoked), or unknown: fenced at once, with a recent last renewal too.
	if err := st.Revoke(ctx, l); err != nil {
		t.Fatal(err)
	}
	for _, old := range []store.LeaseID{l.ID, 0} {
		n, drv = resumedNode(st, old, agent.Past{Renewed: time.Now()})
		if !n.askLease(ctx, 2*time.Second) {
			t.Fatal("the store answers: askLease says it did not")
		}
		if !n.ag.Fenced() || !slices.Equal(drv.destroyed, []string{"v1"}) || n.lease.ID != 0 || !n.past.Fenced {
			t.Fatalf("old lease %x gone: fenced=%v destroyed=%v lease %x past %+v", old, n.ag.Fenced(), drv.destroyed, n.lease.ID, n.past)
		}
	}

	// 3. No answer: nothing decided, the old lease stays on record; the timing rule is the
	// agent's (package agent's tests).
	l2, err := st.GrantAlive(ctx, "h1", 5*time.Second, store.Alive{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	n, drv = resumedNode(st, l2.ID, agent.Past{Renewed: time.Now()})
	if n.askLease(ctx, 500*time.Millisecond) {
		t.Fatal("the store is closed: askLease says it answered")
	}
	n.ag.Tick(time.Now())
	if n.ag.Fenced() || len(drv.destroyed) != 0 || n.oldLease != l2.ID || n.lease.ID != 0 {
		t.Fatalf("no answer: fenced=%v destroyed=%v old lease %x lease %x", n.ag.Fenced(), drv.destroyed, n.oldLease, n.lease.ID)
	}
}
