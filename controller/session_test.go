package controller

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/hassproject/hass/store"
)

// TestLeaderLease: the election session's lease, against a real etcd, lives while the
// controller renews it (here only by hand, as between a takeover's writes), and is lost
// once etcd no longer holds it.
func TestLeaderLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.OpenEmbedded(ctx, t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, err := grantLease(ctx, st.Client(), 2*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for range 8 { // 4 s, twice the TTL
		time.Sleep(500 * time.Millisecond)
		l.renew(ctx)
	}
	select {
	case <-l.Done():
		t.Fatal("lost while renewed")
	default:
	}
	ttl, err := st.Client().TimeToLive(ctx, l.id)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("etcd's lease after 4 s of renewals: %+v, %v", ttl, err)
	}
	if _, err := st.Client().Revoke(ctx, l.id); err != nil {
		t.Fatal(err)
	}
	l.renew(ctx)
	select {
	case <-l.Done():
	case <-time.After(time.Second):
		t.Fatal("not lost after etcd revoked it")
	}
}
