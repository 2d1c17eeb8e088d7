package engine

import (
	"fmt"
	"testing"

	"github.com/hassproject/hass/placement"
)

// BenchmarkPlace is one placement over 1,000 hosts (50 VMs each), as an evacuation makes one
// per VM: it must stay O(hosts), with no walk of every VM.
func BenchmarkPlace(b *testing.B) {
	was := checkIndexes
	checkIndexes = false
	defer func() { checkIndexes = was }()
	e := New(DefaultConfig())
	for i := range 1000 {
		e.Step(t0, AddHost{Host: HostID(fmt.Sprintf("h%04d", i)), MemMiB: 262144})
	}
	for i := range 50000 {
		p := DefaultPolicy()
		if i%10 == 0 {
			p.AntiAffinity = fmt.Sprintf("g%d", i/40)
		}
		e.Step(t0, Protect{VM: VMID(fmt.Sprintf("vm%05d", i)), Host: HostID(fmt.Sprintf("h%04d", i%1000)), MemMiB: 2048, Policy: p})
	}
	v := e.vms["vm00010"]
	b.ResetTimer()
	for range b.N {
		if h, _ := e.place(v, v.home, placement.Recovery); h == "" {
			b.Fatal("no host")
		}
	}
}
