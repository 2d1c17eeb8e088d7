package store

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestLargeTransactions: the embedded etcd takes transactions of the store's size (a
// server left at etcd's default of 128 operations would refuse the first of them), a batch
// larger still is written in parts, in order, all of it; and a store connected as to an
// external etcd keeps to etcd's default limit.
func TestLargeTransactions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := open(t, t.TempDir())
	if s.txnOps() <= maxTxnOps || s.eventsPerTxn() <= maxEventsPerTxn {
		t.Fatalf("embedded: %d ops, %d events per transaction: want more than etcd's default", s.txnOps(), s.eventsPerTxn())
	}
	var one Batch
	for i := range s.eventsPerTxn() {
		one.Events = append(one.Events, Event{Type: "op", Msg: fmt.Sprint(i)})
	}
	if out, err := s.Record(ctx, one); err != nil || len(out) != s.eventsPerTxn() {
		t.Fatalf("one transaction of %d events: %d written, %v", s.eventsPerTxn(), len(out), err)
	}
	var big Batch
	for i := range 2*s.eventsPerTxn() + 7 {
		big.Events = append(big.Events, Event{Type: "op", Msg: fmt.Sprint(i)})
	}
	for i := range s.txnOps() + 50 {
		big.PutVMs = append(big.PutVMs, vm(fmt.Sprintf("vm%05d", i)))
	}
	out, err := s.Record(ctx, big)
	if err != nil || len(out) != len(big.Events) || out[len(out)-1].Seq != uint64(len(one.Events)+len(big.Events)) {
		t.Fatalf("big batch: %d events, %v", len(out), err)
	}
	if vms, err := s.VMs(ctx); err != nil || len(vms) != len(big.PutVMs) {
		t.Fatalf("%d VMs stored, want %d (%v)", len(vms), len(big.PutVMs), err)
	}

	ext, err := Connect(ctx, s.Endpoints(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	if ext.txnOps() != maxTxnOps || ext.eventsPerTxn() != maxEventsPerTxn {
		t.Fatalf("external: %d ops, %d events per transaction: want etcd's default limit", ext.txnOps(), ext.eventsPerTxn())
	}
	var parts Batch
	for i := range 130 {
		parts.Events = append(parts.Events, Event{Type: "op", Msg: fmt.Sprint(i)})
	}
	if out, err := ext.Record(ctx, parts); err != nil || len(out) != 130 {
		t.Fatalf("external, 130 events: %d written, %v", len(out), err)
	}
}

// slowKV delays every transaction's commit, as a starved etcd does.
type slowKV struct {
	clientv3.KV
	delay time.Duration
}

func (k slowKV) Txn(ctx context.Context) clientv3.Txn {
	return slowTxn{Txn: k.KV.Txn(ctx), ctx: ctx, delay: k.delay}
}

type slowTxn struct {
	clientv3.Txn
	ctx   context.Context
	delay time.Duration
}

func (t slowTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t slowTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Then(ops...)
	return t
}
func (t slowTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t slowTxn) Commit() (*clientv3.TxnResponse, error) {
	select {
	case <-time.After(t.delay):
	case <-t.ctx.Done():
		return nil, t.ctx.Err()
	}
	return t.Txn.Commit()
}

// TestRecordInPartsEachBounded: a batch written in several transactions (a takeover's
// 50,000 events) is bounded per transaction, not as a whole: on a slow store the whole
// takes longer than one call's timeout, and it must still be written (it used to fail, and
// a new leader's takeover started again and again, never deciding anything).
func TestRecordInPartsEachBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background()) // no deadline: the store bounds each call
	defer cancel()
	s := open(t, t.TempDir())
	s.opTimeout = 400 * time.Millisecond
	s.cli.KV = slowKV{KV: s.cli.KV, delay: 100 * time.Millisecond}
	var b Batch
	for i := range 6*s.eventsPerTxn() + 1 { // seven transactions: 700 ms in all
		b.Events = append(b.Events, Event{Type: "op", Msg: fmt.Sprint(i)})
	}
	start := time.Now()
	out, err := s.Record(ctx, b)
	if err != nil || len(out) != len(b.Events) {
		t.Fatalf("%d events in 7 transactions of 100 ms, each bounded by %s: %d written after %s, %v",
			len(b.Events), s.opTimeout, len(out), time.Since(start).Round(time.Millisecond), err)
	}
	if time.Since(start) < s.opTimeout {
		t.Fatalf("written in %s: the store was not slow, the test proves nothing", time.Since(start))
	}
	// One transaction slower than the bound still fails: the bound is kept.
	s.cli.KV = slowKV{KV: s.cli.KV, delay: time.Second}
	if _, err := s.Record(ctx, Batch{Events: []Event{{Type: "op", Msg: "slow"}}}); err == nil {
		t.Fatal("a transaction of 1 s passed a bound of 400 ms")
	}
}

// TestRecordInPartsKeepsTheLease: a leader's write in several transactions renews its
// election lease between them (Guard.Keep). Here nothing else renews it, and the parts take
// longer in all than its TTL: without the renewals the lease, and the election key with it,
// would expire in the middle, and the rest of the write would find no leader.
func TestRecordInPartsKeepsTheLease(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	lease, err := s.cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	key := ElectionPrefix + "c1"
	r, err := s.cli.Put(ctx, key, "c1", clientv3.WithLease(lease.ID))
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	g := &Guard{Key: key, Rev: r.Header.Revision, Keep: func(ctx context.Context) {
		kept++
		if _, err := s.cli.KeepAliveOnce(ctx, lease.ID); err != nil {
			t.Errorf("renew: %v", err)
		}
	}}
	s.cli.KV = slowKV{KV: s.cli.KV, delay: 400 * time.Millisecond}
	b := Batch{Guard: g}
	for i := range 7*s.eventsPerTxn() + 1 { // eight transactions: 3.2 s, the TTL is 2 s
		b.Events = append(b.Events, Event{Type: "op", Msg: fmt.Sprint(i)})
	}
	start := time.Now()
	out, err := s.Record(ctx, b)
	if err != nil || len(out) != len(b.Events) {
		t.Fatalf("%d of %d events written in %s: %v", len(out), len(b.Events), time.Since(start).Round(time.Millisecond), err)
	}
	if kept != 7 {
		t.Fatalf("the lease renewed %d times between 8 transactions, want 7", kept)
	}
	if time.Since(start) < 3*time.Second {
		t.Fatalf("written in %s: not longer than the lease's TTL, the test proves nothing", time.Since(start))
	}
}
