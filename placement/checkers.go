package placement

import "fmt"

// Reject is why a checker said no to a host (OK when it said yes). Checkers return a code,
// not a sentence: a placement over a thousand hosts formats nothing unless nothing fits.
type Reject uint8

// Rejections, in the order Checkers tries them.
const (
	OK               Reject = iota
	NotUp                   // suspect or fenced
	InMaintenance           // in maintenance: it takes no new placements
	Excluded                // ruled out by the caller (the host the VM leaves)
	OtherCluster            // in another cluster than the VM's
	NoMemory                // not enough free memory
	NoVCPUs                 // not enough free vCPUs
	ReservedHost            // a spare, and this is no recovery
	HardAntiAffinity        // a VM of the VM's hard anti-affinity group runs there
	CopyUp                  // a copy of the VM is up there already
	nRejects
)

var rejectNames = [...]string{"ok", "not up", "in maintenance", "excluded", "in another cluster",
	"not enough memory", "not enough vCPUs", "reserved for recoveries", "hard anti-affinity",
	"a copy is up there"}

func (r Reject) String() string {
	if int(r) < len(rejectNames) {
		return rejectNames[r]
	}
	return fmt.Sprintf("reject(%d)", r)
}

// Checker is one feasibility rule.
type Checker func(vm *VM, h *Host) Reject

// Checkers are the feasibility rules, in the order they are tried; a host's first rejection
// is the one counted for it.
var Checkers = [...]Checker{CheckUp, CheckMaintenance, CheckExcluded, CheckCluster, CheckMemory,
	CheckVCPUs, CheckReserved, CheckHardAntiAffinity, CheckCopy}

// CheckUp: the host holds its lease.
func CheckUp(_ *VM, h *Host) Reject {
	if !h.Up {
		return NotUp
	}
	return OK
}

// CheckMaintenance: a host in maintenance takes no new placements.
func CheckMaintenance(_ *VM, h *Host) Reject {
	if h.Maintenance {
		return InMaintenance
	}
	return OK
}

// CheckExcluded: the caller ruled the host out.
func CheckExcluded(_ *VM, h *Host) Reject {
	if h.Excluded {
		return Excluded
	}
	return OK
}

// CheckCluster: a VM runs only in its own cluster.
func CheckCluster(vm *VM, h *Host) Reject {
	if h.Cluster != vm.Cluster {
		return OtherCluster
	}
	return OK
}

// CheckCopy: never start a second copy beside one that is up.
func CheckCopy(_ *VM, h *Host) Reject {
	if h.HasCopy {
		return CopyUp
	}
	return OK
}

// CheckMemory: the host's free memory holds the VM.
func CheckMemory(vm *VM, h *Host) Reject {
	if h.MemMiB > 0 && h.UsedMemMiB+vm.MemMiB > h.MemMiB {
		return NoMemory
	}
	return OK
}

// CheckVCPUs: the host's free vCPUs hold the VM.
func CheckVCPUs(vm *VM, h *Host) Reject {
	if h.VCPUs > 0 && h.UsedVCPUs+vm.VCPUs > h.VCPUs {
		return NoVCPUs
	}
	return OK
}

// CheckReserved: a reserved host takes recoveries only.
func CheckReserved(vm *VM, h *Host) Reject {
	if h.Reserved && vm.Purpose != Recovery {
		return ReservedHost
	}
	return OK
}

// CheckHardAntiAffinity: with a hard group, no two of its VMs share a host.
func CheckHardAntiAffinity(vm *VM, h *Host) Reject {
	if vm.Hard && vm.Group != "" && h.GroupVMs > 0 {
		return HardAntiAffinity
	}
	return OK
}

// Feasible runs every checker, in the order of Checkers, and returns the first rejection,
// OK if none. (It calls them directly rather than through the slice: a placement asks it
// once per host, and direct calls inline.)
func Feasible(vm *VM, h *Host) Reject {
	if r := feasibleCheap(vm, h); r != OK {
		return r
	}
	return CheckCopy(vm, h)
}

// feasibleCheap runs every checker but the last, which needs Host's details (Hosts.Detail).
func feasibleCheap(vm *VM, h *Host) Reject {
	if r := CheckUp(vm, h); r != OK {
		return r
	}
	if r := CheckMaintenance(vm, h); r != OK {
		return r
	}
	if r := CheckExcluded(vm, h); r != OK {
		return r
	}
	if r := CheckCluster(vm, h); r != OK {
		return r
	}
	if r := CheckMemory(vm, h); r != OK {
		return r
	}
	if r := CheckVCPUs(vm, h); r != OK {
		return r
	}
	if r := CheckReserved(vm, h); r != OK {
		return r
	}
	return CheckHardAntiAffinity(vm, h)
}
