// Package placement chooses the host a VM runs on, in the manner of Nomad's scheduler: small
// feasibility checkers each say no to a host with a reason (checkers.go), rankers score the
// hosts that are left (rank.go), and Place wires them over the candidate hosts in one pass
// (place.go). When no host fits, Explain turns what the checkers said into one line an
// operator understands, with numbers: "no host has room: need 2048 MiB, largest free 1024 MiB
// on h3", "anti-affinity group db: every host of cluster c1 with room runs one", "cluster c1
// has no host up".
//
// The package is pure: no I/O, no clock, no state kept between calls beyond reusable
// buffers. It knows nothing of VMs other than the one being placed: the caller (the engine)
// keeps each host's usage up to date incrementally and hands over, per host, the numbers
// with the VM itself left out, so a placement costs one look at each host and never a walk
// of every VM.
//
// # Rules
//
// Feasibility (a host failing any of these is never chosen):
//
//	usable       the host is up (its lease held), not in maintenance, not excluded
//	cluster      the host is in the VM's cluster: recovery stays inside it
//	copy         no copy of the VM is up there already
//	memory       its free memory holds the VM (a host with 0 MiB is not limited)
//	vcpus        its free vCPUs hold the VM (a host with 0 vCPUs is not limited)
//	reserved     a reserved (spare) host takes only recoveries: evacuations and relocations
//	hard-aa      no VM of the VM's anti-affinity group runs there, when the group is hard
//
// Ranking, most important first (the first host in name order wins a tie):
//
//	reached      its hypervisor was not just found unreachable
//	fresh        the VM did not fail there within its policy window
//	soft-aa      no VM of its (soft) anti-affinity group runs there
//	spare        for a recovery, a reserved host first: that is what the spare is for
//	free         the most free memory
package placement
