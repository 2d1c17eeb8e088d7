package vclock

import (
	"testing"
	"time"
)

func TestOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var a Agenda
	var got []int
	a.At(t0.Add(2*time.Second), func() { got = append(got, 3) })
	a.At(t0.Add(time.Second), func() { got = append(got, 1) })
	a.At(t0.Add(time.Second), func() { got = append(got, 2) }) // same time: scheduling order
	a.At(t0, func() { got = append(got, 0) })
	var last time.Time
	for a.Len() > 0 {
		at, fn := a.Next()
		if at.Before(last) {
			t.Fatalf("%s came after %s", at, last)
		}
		last = at
		fn()
	}
	if len(got) != 4 || got[0] != 0 || got[1] != 1 || got[2] != 2 || got[3] != 3 {
		t.Fatalf("order %v, want [0 1 2 3]", got)
	}
}
