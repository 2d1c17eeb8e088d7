package placement

// Score ranks a feasible host; a higher one is preferred. Fields are compared in order.
type Score struct {
	Reached bool // its hypervisor was not just found unreachable
	Fresh   bool // the VM did not fail there lately
	Apart   bool // no VM of the VM's (soft) anti-affinity group runs there
	Spare   bool // a reserved host, for a recovery
	Free    int  // free memory in MiB (not limited: larger than any limited host)
}

// unlimited stands for the free memory of a host whose memory is not limited.
const unlimited = 1 << 40

// Ranker scores one part of a feasible host.
type Ranker func(vm *VM, h *Host, s *Score)

// Rankers fill a host's score.
var Rankers = [...]Ranker{RankReached, RankFresh, RankApart, RankSpare, RankFree}

// RankReached prefers a host whose hypervisor answers.
func RankReached(_ *VM, h *Host, s *Score) { s.Reached = !h.Unreached }

// RankFresh prefers a host the VM did not just fail on: it is used again only when no other
// has room.
func RankFresh(_ *VM, h *Host, s *Score) { s.Fresh = !h.FailedLately }

// RankApart prefers a host that keeps the VM's anti-affinity group apart (a soft group is
// waived when no host satisfies it; a hard one is a checker).
func RankApart(vm *VM, h *Host, s *Score) { s.Apart = vm.Group == "" || h.GroupVMs == 0 }

// RankSpare sends a recovery to a reserved host first, as Masakari's reserved_host and
// vSphere's dedicated failover hosts do: the spare absorbs the failure and the other hosts
// keep their headroom.
func RankSpare(vm *VM, h *Host, s *Score) { s.Spare = h.Reserved && vm.Purpose == Recovery }

// RankFree prefers the host with the most free memory.
func RankFree(_ *VM, h *Host, s *Score) {
	if h.MemMiB == 0 {
		s.Free = unlimited
		return
	}
	s.Free = h.MemMiB - h.UsedMemMiB
}

// Rank scores a feasible host with every ranker of Rankers (called directly: they inline,
// and the score stays on the stack).
func Rank(vm *VM, h *Host) Score {
	var s Score
	RankReached(vm, h, &s)
	RankFresh(vm, h, &s)
	RankApart(vm, h, &s)
	RankSpare(vm, h, &s)
	RankFree(vm, h, &s)
	return s
}

// Better reports whether a ranks above b.
func Better(a, b Score) bool {
	switch {
	case a.Reached != b.Reached:
		return a.Reached
	case a.Fresh != b.Fresh:
		return a.Fresh
	case a.Apart != b.Apart:
		return a.Apart
	case a.Spare != b.Spare:
		return a.Spare
	}
	return a.Free > b.Free
}

// key packs a host's Score into one number that orders hosts as Better does (flags in order
// of importance, then free memory), so the pass over a thousand hosts compares integers.
func key(vm *VM, h *Host) uint64 {
	var k uint64
	if !h.Unreached {
		k |= 1 << 63
	}
	if !h.FailedLately {
		k |= 1 << 62
	}
	if vm.Group == "" || h.GroupVMs == 0 {
		k |= 1 << 61
	}
	if h.Reserved && vm.Purpose == Recovery {
		k |= 1 << 60
	}
	free := unlimited
	if h.MemMiB != 0 {
		free = max(h.MemMiB-h.UsedMemMiB, 0)
	}
	return k | uint64(min(free, unlimited))
}
