package store

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"
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
