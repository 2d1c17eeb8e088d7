package engine

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
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

// TestFirstFitDecreasingByClass: packing equal demands a class at a time gives what
// first-fit decreasing one demand at a time (sorted by size, then name) gives: the same
// verdict, the same demand named when one fits nowhere, the same rooms left.
func TestFirstFitDecreasingByClass(t *testing.T) {
	plain := func(items []demand, rooms []room) (demand, bool) {
		items = slices.Clone(items)
		slices.SortFunc(items, func(a, b demand) int {
			if c := cmp.Compare(b.mem, a.mem); c != 0 {
				return c
			}
			if c := cmp.Compare(b.cpu, a.cpu); c != 0 {
				return c
			}
			return cmp.Compare(a.id, b.id)
		})
		for _, it := range items {
			placed := false
			for i := range rooms {
				r := &rooms[i]
				if r.mem >= it.mem && r.cpu >= it.cpu {
					if r.mem != math.MaxInt {
						r.mem -= it.mem
					}
					if r.cpu != math.MaxInt {
						r.cpu -= it.cpu
					}
					placed = true
					break
				}
			}
			if !placed {
				return it, false
			}
		}
		return demand{}, true
	}
	rng := rand.New(rand.NewPCG(1, 2))
	refused := 0
	for round := range 3000 {
		var items []demand
		for i := range rng.IntN(40) {
			items = append(items, demand{id: VMID(fmt.Sprintf("vm%03d", rng.IntN(1000)*1000+i)),
				mem: []int{0, 512, 1024, 2048}[rng.IntN(4)], cpu: []int{0, 1, 2}[rng.IntN(3)]})
		}
		rooms := make([]room, 1+rng.IntN(6))
		for i := range rooms {
			rooms[i] = room{mem: []int{math.MaxInt, -512, 0, 1024, 4096, 8192}[rng.IntN(6)], cpu: []int{math.MaxInt, -1, 0, 2, 8}[rng.IntN(5)]}
		}
		want := slices.Clone(rooms)
		wit, wok := plain(items, want)
		got := slices.Clone(rooms)
		git, gok := firstFitDecreasing(items, got)
		if gok != wok || git != wit || !slices.Equal(got, want) {
			t.Fatalf("round %d: %v %+v, rooms %v; one at a time: %v %+v, rooms %v", round, gok, git, got, wok, wit, want)
		}
		if !wok {
			refused++
		}
	}
	if refused < 300 || refused > 2700 {
		t.Fatalf("%d of 3000 refused: the cases do not test both verdicts", refused)
	}
}
