// Package vclock is a virtual clock's agenda: functions due at virtual times, taken in time
// order, and those due at the same time in the order they were scheduled, so that a run
// replays exactly. The simulator and the benchmark's workload generator share it. It never
// reads the real clock.
package vclock

import (
	"container/heap"
	"time"
)

// Agenda holds what is due. Its zero value is empty and ready to use.
type Agenda struct {
	q   queue
	seq uint64
}

// At schedules fn at t.
func (a *Agenda) At(t time.Time, fn func()) {
	a.seq++
	heap.Push(&a.q, &item{at: t, seq: a.seq, fn: fn})
}

// Len is how many functions are scheduled.
func (a *Agenda) Len() int { return a.q.Len() }

// Next removes the earliest entry and returns its time and function. The agenda must not
// be empty.
func (a *Agenda) Next() (time.Time, func()) {
	it := heap.Pop(&a.q).(*item)
	return it.at, it.fn
}

type item struct {
	at  time.Time
	seq uint64
	fn  func()
}

type queue []*item

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*item)) }
func (q *queue) Pop() any {
	old := *q
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return it
}
