package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// A write guarded by a leader's election key lands while the key is the one it was, and
// never once another key replaced it (a deposed leader): then nothing of it is written.
func TestGuardedRecord(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	key := ElectionPrefix + "c1"
	r, err := s.cli.Put(ctx, key, "c1")
	if err != nil {
		t.Fatal(err)
	}
	g := &Guard{Key: key, Rev: r.Header.Revision}
	b := Batch{Guard: g, Events: []Event{{At: time.Now(), Type: "op", VM: "web1", Msg: "ok"}}, PutVMs: []VM{vm("web1")},
		Actions: []Action{{ID: 1, Kind: "start", VM: "web1", Host: "h1", Gen: 1, Term: g.Rev}}}
	if _, err := s.Record(ctx, b); err != nil {
		t.Fatalf("the leader's write: %v", err)
	}
	// Deposed: the key is gone, and another leader's key has another create revision.
	if _, err := s.cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Put(ctx, key, "c2"); err != nil {
		t.Fatal(err)
	}
	for _, b := range []Batch{
		{Guard: g, Events: []Event{{At: time.Now(), Type: "op", VM: "web2"}}, PutVMs: []VM{vm("web2")}},
		{Guard: g, PutVMs: []VM{vm("web2")}},
		{Guard: g, Actions: []Action{{ID: 2, Kind: "start", VM: "web1", Host: "h1"}}},
	} {
		if _, err := s.Record(ctx, b); !errors.Is(err, ErrNotLeader) {
			t.Errorf("a deposed leader's write: err %v, want ErrNotLeader", err)
		}
	}
	if _, err := s.VM(ctx, "web2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the deposed leader's VM was written: %v", err)
	}
	evs, err := s.Events(ctx, 0, 0)
	if err != nil || len(evs) != 1 {
		t.Errorf("events: %d (%v), want only the leader's", len(evs), err)
	}
	orders, _, err := s.Orders(ctx, "h1")
	if err != nil || len(orders) != 1 || orders[0].ID != 1 || orders[0].Rev == 0 {
		t.Errorf("orders: %+v (%v), want the leader's one, with its revision", orders, err)
	}
}

// An order's token is read in one go: the VM's recorded generation and the leader's term.
func TestOrderToken(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	tok, err := s.OrderToken(ctx, "web1")
	if err != nil || tok.Protected || tok.Term != 0 {
		t.Fatalf("empty store: %+v %v", tok, err)
	}
	v := vm("web1")
	v.Gen = 7
	if err := s.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	r, err := s.cli.Put(ctx, ElectionPrefix+"a", "leader")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Put(ctx, ElectionPrefix+"b", "candidate"); err != nil {
		t.Fatal(err)
	}
	tok, err = s.OrderToken(ctx, "web1")
	if err != nil || !tok.Protected || tok.Gen != 7 || tok.Term != r.Header.Revision {
		t.Errorf("token %+v (%v), want gen 7 and term %d (the first candidate's)", tok, err, r.Header.Revision)
	}
	val, term, err := s.Leader(ctx)
	if err != nil || val != "leader" || term != r.Header.Revision {
		t.Errorf("leader %q term %d (%v)", val, term, err)
	}
}

// Host records and inventories are decoded strictly, naming the bad field; a bad one is
// reported apart and the others are read.
func TestHostRecords(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	if err := s.PutHost(ctx, Host{Name: "h1", MemMiB: 4096, Watchdog: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHost(ctx, Host{Name: "bad name"}); err == nil {
		t.Error("a host with a bad name was stored")
	}
	for key, doc := range map[string]string{
		hostKey("h2"): `{"name":"h2","mem_mib":-5}`,
		hostKey("h3"): `{"name":"h4"}`,
		hostKey("h5"): `{"name":"h5","colour":"blue"}`,
		hostKey("h6"): `{"name":"h6","members":-1}`,
	} {
		if _, err := s.cli.Put(ctx, key, doc); err != nil {
			t.Fatal(err)
		}
	}
	hs, bad, err := s.Hosts(ctx)
	if err != nil || len(hs) != 1 || hs[0].Name != "h1" || !hs[0].Watchdog || len(bad) != 4 {
		t.Fatalf("hosts %+v, bad %+v, %v", hs, bad, err)
	}
	fields := map[string]bool{}
	for _, b := range bad {
		fields[b.Field] = true
	}
	if !fields["mem_mib"] || !fields["name"] || !fields["members"] {
		t.Errorf("bad records do not name their fields: %+v", bad)
	}
	inv := Inventory{Host: "h1", Seq: 3, Libvirt: "connected", Domains: []DomainRow{{Name: "web1", State: 1, Reason: 1, MemKiB: 1 << 20}}, Hears: []string{"h2", "h3"}}
	if err := s.PutInventory(ctx, inv); err != nil {
		t.Fatal(err)
	}
	invs, err := s.Inventories(ctx)
	if err != nil || len(invs["h1"].Domains) != 1 || invs["h1"].Domains[0].MemKiB != 1<<20 || !slices.Equal(invs["h1"].Hears, []string{"h2", "h3"}) {
		t.Errorf("inventories %+v %v", invs, err)
	}
	if _, err := DecodeInventory(inventoryKey("h1"), []byte(`{"host":"h2"}`)); err == nil {
		t.Error("an inventory under another host's key was accepted")
	}
	if _, err := DecodeInventory(inventoryKey("h1"), []byte(`{"host":"h1","hears":["h2","no such/host"]}`)); err == nil || !strings.Contains(err.Error(), "hears") {
		t.Errorf("an inventory hearing a bad host name: %v, want an error naming hears", err)
	}
}

// A report and the order it answers go in one transaction.
func TestReportConsumesOrder(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	if err := s.PutAction(ctx, Action{ID: 5, Kind: "start", VM: "web1", Host: "h1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutReport(ctx, "h1", 42, []byte(`{"kind":"result"}`), 5); err != nil {
		t.Fatal(err)
	}
	orders, _, err := s.Orders(ctx, "h1")
	if err != nil || len(orders) != 0 {
		t.Errorf("orders left: %+v %v", orders, err)
	}
	evs, _, err := s.AgentState(ctx)
	if err != nil || len(evs) != 1 {
		t.Fatalf("agents' state %+v %v", evs, err)
	}
	if h, ok := evs[0].IsInbox(); !ok || h != "h1" {
		t.Errorf("%s: not h1's inbox", evs[0].Key)
	}
	if _, err := s.Record(ctx, Batch{DeleteKeys: []string{evs[0].Key}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, Batch{DeleteKeys: []string{vmKey("web1")}}); err == nil {
		t.Error("a batch deleted a key outside the inboxes")
	}
}

// A stored host state is read back when it is sound; one that says a host not fenced was
// powered on again (only a fenced host's power-on is news), or is otherwise bad, is reported
// with the field it breaks, and the others are still read.
func TestHostStates(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	for key, doc := range map[string]string{
		hostStateKey("h1"): `{"host":"h1","state":"fenced","powered_on":true}`,
		hostStateKey("h2"): `{"host":"h2","state":"up","powered_on":true}`,
		hostStateKey("h3"): `{"host":"h3","state":"asleep"}`,
		hostStateKey("h4"): `{"host":"h4","state":"suspect","mem_mib":-1}`,
		hostStateKey("h5"): `{"host":"h6","state":"up"}`,
	} {
		if _, err := s.cli.Put(ctx, key, doc); err != nil {
			t.Fatal(err)
		}
	}
	hs, bad, err := s.HostStates(ctx)
	if err != nil || len(hs) != 1 || hs[0].Host != "h1" || !hs[0].PoweredOn {
		t.Fatalf("host states %+v, %v; want h1 fenced and powered on", hs, err)
	}
	fields := map[string]bool{}
	for _, b := range bad {
		fields[b.Field] = true
	}
	for _, f := range []string{"powered_on", "state", "mem_mib", "host"} {
		if !fields[f] {
			t.Errorf("no bad record names %s: %+v", f, bad)
		}
	}
	if err := (HostState{Host: "h1", State: "suspect", PoweredOn: true}).Validate(); err == nil || !strings.Contains(err.Error(), "powered_on") {
		t.Errorf("a suspect host powered on: %v, want an error naming powered_on", err)
	}
}
