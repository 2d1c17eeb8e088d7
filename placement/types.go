package placement

import "fmt"

// Purpose says why a VM is being placed; reserved hosts take only recoveries.
type Purpose uint8

// Purposes.
const (
	// Recovery: an evacuation of a lost host, or a relocation after the VM's restarts in
	// place were spent. The only purpose that may use a reserved host.
	Recovery Purpose = iota
	// User: a user's start of a VM whose home cannot take it, or a migration with no host
	// named.
	User
	// Maintenance: a move off a host put in maintenance. A planned move is no failure: it
	// leaves the spare for the failures that may come while the host is away.
	Maintenance
)

var purposeNames = [...]string{"recovery", "user", "maintenance"}

func (p Purpose) String() string {
	if int(p) < len(purposeNames) {
		return purposeNames[p]
	}
	return fmt.Sprintf("purpose(%d)", p)
}

// VM is the VM being placed.
type VM struct {
	Name    string
	Cluster string
	MemMiB  int
	VCPUs   int
	// Group is its anti-affinity group ("" for none); Hard makes the group a feasibility rule
	// instead of a preference.
	Group   string
	Hard    bool
	Purpose Purpose
}

// Host is one candidate, with the numbers as they stand with the VM itself left out (what
// the VM counts where it is homed now is not subtracted twice).
type Host struct {
	Name        string
	Cluster     string
	Up          bool // its lease is held (not suspect, not fenced)
	Maintenance bool
	Reserved    bool
	Excluded    bool // the caller rules it out: the host the VM leaves
	MemMiB      int  // capacity; 0 = not limited
	VCPUs       int  // capacity; 0 = not limited
	UsedMemMiB  int
	UsedVCPUs   int
	// GroupVMs counts the VMs of the VM's anti-affinity group placed there.
	GroupVMs int
	// HasCopy: a copy of the VM is up there already; never start a second one beside it.
	HasCopy bool
	// Unreached: its hypervisor was just found unreachable.
	Unreached bool
	// FailedLately: the VM failed there (crashed, or a start was refused) within its window.
	FailedLately bool
}

// FreeMemMiB is the host's free memory; -1 when it is not limited.
func (h *Host) FreeMemMiB() int {
	if h.MemMiB == 0 {
		return -1
	}
	return h.MemMiB - h.UsedMemMiB
}

// FreeVCPUs is the host's free vCPUs; -1 when they are not limited.
func (h *Host) FreeVCPUs() int {
	if h.VCPUs == 0 {
		return -1
	}
	return h.VCPUs - h.UsedVCPUs
}
