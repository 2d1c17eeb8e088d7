package benchmark

import (
	"context"
	"testing"
	"time"
)

// TestTakeover: a new leader of a small cluster, filled into a real etcd, finds the VM that
// crashed while nobody led in the last host's answer to its resync, and orders its restart.
func TestTakeover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ts, err := Takeover(ctx, t.TempDir(), 20, 1000)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", ts)
	if ts.FirstDecision <= 0 || ts.AtAgent < ts.FirstDecision || ts.Takeover <= 0 || ts.Resync <= 0 || ts.Load <= 0 || ts.Restore <= 0 {
		t.Fatalf("%+v: want every part measured, the order reaching its agent after it was decided", ts)
	}
	if ts.StoreKeys < 1000+3*20 {
		t.Fatalf("%d keys in the store, want at least a record and a definition per VM and three keys per host", ts.StoreKeys)
	}
}

// BenchmarkTakeover measures a new leader's takeover of 1,000 hosts and 50,000 VMs through
// a real etcd (about a minute, most of it filling the store).
func BenchmarkTakeover(b *testing.B) {
	for range b.N {
		ts, err := Takeover(context.Background(), b.TempDir(), 1000, 50000)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%+v", ts)
		b.ReportMetric(ts.FirstDecision.Seconds(), "s-to-first-decision")
	}
}
