package engine

import (
	"fmt"
	"testing"
	"time"
)

// bigCluster is 1,000 hosts (64 GiB, 32 vCPUs; the last 20 reserved) and 50,000 protected
// VMs of four sizes in one cluster that must tolerate two host failures.
func bigCluster(tb testing.TB) *Engine {
	tb.Helper()
	was := checkIndexes
	checkIndexes = false // the index checks walk every VM at every step
	defer func() { checkIndexes = was }()
	e := New(DefaultConfig())
	e.Step(t0, SetCluster{Name: "c1"})
	for i := range 1000 {
		e.Step(t0, AddHost{Host: HostID(fmt.Sprintf("h%04d", i)), MemMiB: 65536, VCPUs: 32, Cluster: "c1", Reserved: i >= 980})
	}
	sizes := [][2]int{{512, 1}, {1024, 1}, {2048, 2}, {4096, 4}}
	for i := range 50000 {
		s := sizes[i%len(sizes)]
		out := e.Step(t0, Protect{VM: VMID(fmt.Sprintf("vm%05d", i)), Host: HostID(fmt.Sprintf("h%04d", i%980)),
			MemMiB: s[0], VCPUs: s[1], Policy: DefaultPolicy()})
		if out.Err != nil {
			tb.Fatalf("protect %d: %v", i, out.Err)
		}
	}
	e.Step(t0, SetCluster{Name: "c1", TolerateHostFailures: 2})
	return e
}

// TestAdmissionCostAtScale: one admission check at 1,000 hosts and 50,000 VMs costs well
// under a millisecond (it packs only what the lost hosts ran).
func TestAdmissionCostAtScale(t *testing.T) {
	e := bigCluster(t)
	h := e.hosts["h0001"]
	start := time.Now()
	const n = 50
	for range n {
		if err := e.admitVM("new", 2048, 2, h); err != nil {
			t.Fatalf("admit: %v", err)
		}
	}
	per := time.Since(start) / n
	t.Logf("admission check at 1,000 hosts / 50,000 VMs: %s", per)
	if per > 20*time.Millisecond {
		t.Fatalf("admission check takes %s", per)
	}
	// Losing 900 hosts leaves no room for what they ran.
	e.clusters["c1"].tolerate = 900
	if err := e.admitVM("new", 2048, 2, h); err == nil {
		t.Fatal("admitted after losing 900 of 1,000 hosts")
	}
}

func BenchmarkAdmission(b *testing.B) {
	e := bigCluster(b)
	h := e.hosts["h0001"]
	b.ResetTimer()
	for range b.N {
		if err := e.admitVM("new", 2048, 2, h); err != nil {
			b.Fatal(err)
		}
	}
}
