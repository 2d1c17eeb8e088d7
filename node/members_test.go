package node

import (
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/store"
)

// The host record says how many members the agent counts, and is written again when it
// reads more of them (the controller declares a host fenced by its lease's expiry only while
// the hosts without a lease are not a majority of that count); the inventory names the peers
// it heard within its peer timeout.
func TestMembersAndHearsPublished(t *testing.T) {
	ctx, st := embeddedStore(t)
	n := &Node{cfg: Config{Host: "h1", LeaseTTL: 5 * time.Second, RenewEvery: time.Second, SelfFenceAfter: 3 * time.Second},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), st: st, drv: &fenceDriver{},
		prot: map[engine.VMID]bool{}, heard: map[engine.HostID]heard{}, keep: make(chan struct{}, 1),
		peers: map[engine.HostID]string{}, members: []engine.HostID{"h1"}, out: make(chan outItem, 8),
		peerTimeout: 1500 * time.Millisecond, started: time.Now()}
	n.ag = agent.New(agent.DefaultConfig("h1"), env{n}, time.Now(), nil)
	members := func() int {
		t.Helper()
		h, ok, err := st.Host(ctx, "h1")
		if err != nil || !ok {
			t.Fatalf("h1's host record: %v %v", ok, err)
		}
		return h.Members
	}

	if !n.join(ctx, false) {
		t.Fatal("join failed")
	}
	if got := members(); got != 1 {
		t.Errorf("alone in the store: the record says %d members, want 1", got)
	}
	for _, h := range []string{"h2", "h3"} {
		if err := st.PutHost(ctx, store.Host{Name: h, Heartbeat: "10.0.0.9:7946"}); err != nil {
			t.Fatal(err)
		}
	}
	n.refreshCluster(ctx)
	if got := members(); got != 3 {
		t.Errorf("after reading h2 and h3: the record says %d members, want 3", got)
	}
	if len(n.members) != 3 || n.peers["h2"] == "" {
		t.Errorf("members %v, peers %v", n.members, n.peers)
	}

	now := time.Now()
	n.heard["h2"] = heard{at: now}
	n.heard["h3"] = heard{at: now.Add(-5 * time.Second)} // longer ago than the peer timeout
	n.queueInventory(store.Inventory{Host: "h1", Libvirt: "connected"})
	it := <-n.out
	if it.inv == nil || !slices.Equal(it.inv.Hears, []string{"h2"}) {
		t.Fatalf("the inventory hears %+v, want [h2]", it.inv)
	}
}
