package controller

import (
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
)

// Every operation source and kind the engine knows can be stored and read back: a value
// the store's validation does not know would leave that VM's state unstored (and its orders
// unrunnable, their token older than the order).
func TestEveryEngineOperationIsStorable(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	n := 0
	for src := engine.Source(0); ; src++ {
		if _, err := engine.ParseSource(src.String()); err != nil {
			break
		}
		for kind := engine.OpKind(0); ; kind++ {
			if _, err := engine.ParseOpKind(kind.String()); err != nil {
				break
			}
			s := engine.VMState{VM: "v1", Home: "h1", MemMiB: 64, VCPUs: 2, Cluster: "c1", Policy: engine.DefaultPolicy(),
				Desired: engine.WantRunning, Gen: 3,
				Op: &engine.OpState{ID: 7, Kind: kind, Source: src, Started: now, Deadline: now.Add(time.Minute), Home: "h1"}}
			if kind == engine.OpMigrate {
				s.Op.Target = "h2"
			}
			s.Policy.Instance, s.Policy.NovaScheduler = "6a1b7c9e-0000-4000-8000-000000000001", true
			r := ToRecord(s)
			if err := r.Validate(); err != nil {
				t.Errorf("%s by %s: the store refuses it: %v", kind, src, err)
				continue
			}
			back, err := FromRecord(r)
			if err != nil {
				t.Errorf("%s by %s: read back: %v", kind, src, err)
				continue
			}
			if back.Op.Source != src || back.Op.Kind != kind || back.VCPUs != 2 || back.Cluster != "c1" || back.Policy != s.Policy {
				t.Errorf("%s by %s: read back as %+v", kind, src, back)
			}
			n++
		}
	}
	if n < 8*4 {
		t.Fatalf("only %d source and kind pairs tried", n)
	}
}
