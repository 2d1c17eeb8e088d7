package placement

import (
	"strings"
	"testing"
)

// up is a usable host of cluster c1 with 4 GiB and 4 vCPUs, nothing used.
func up(name string) Host {
	return Host{Name: name, Cluster: "c1", Up: true, MemMiB: 4096, VCPUs: 4}
}

func vm1() VM { return VM{Name: "v1", Cluster: "c1", MemMiB: 1024, VCPUs: 2, Purpose: Recovery} }

func TestCheckers(t *testing.T) {
	tests := []struct {
		name  string
		check Checker
		vm    func(*VM)
		host  func(*Host)
		want  Reject
	}{
		{"up", CheckUp, nil, nil, OK},
		{"suspect or fenced", CheckUp, nil, func(h *Host) { h.Up = false }, NotUp},
		{"out of maintenance", CheckMaintenance, nil, nil, OK},
		{"in maintenance", CheckMaintenance, nil, func(h *Host) { h.Maintenance = true }, InMaintenance},
		{"not excluded", CheckExcluded, nil, nil, OK},
		{"excluded", CheckExcluded, nil, func(h *Host) { h.Excluded = true }, Excluded},
		{"same cluster", CheckCluster, nil, nil, OK},
		{"other cluster", CheckCluster, nil, func(h *Host) { h.Cluster = "c2" }, OtherCluster},
		{"no copy", CheckCopy, nil, nil, OK},
		{"copy up", CheckCopy, nil, func(h *Host) { h.HasCopy = true }, CopyUp},
		{"memory fits exactly", CheckMemory, nil, func(h *Host) { h.UsedMemMiB = 3072 }, OK},
		{"memory short by 1", CheckMemory, nil, func(h *Host) { h.UsedMemMiB = 3073 }, NoMemory},
		{"memory not limited", CheckMemory, nil, func(h *Host) { h.MemMiB, h.UsedMemMiB = 0, 1<<20 }, OK},
		{"vcpus fit exactly", CheckVCPUs, nil, func(h *Host) { h.UsedVCPUs = 2 }, OK},
		{"vcpus short", CheckVCPUs, nil, func(h *Host) { h.UsedVCPUs = 3 }, NoVCPUs},
		{"vcpus not limited", CheckVCPUs, nil, func(h *Host) { h.VCPUs, h.UsedVCPUs = 0, 99 }, OK},
		{"reserved takes a recovery", CheckReserved, nil, func(h *Host) { h.Reserved = true }, OK},
		{"reserved refuses a user's placement", CheckReserved, func(v *VM) { v.Purpose = User }, func(h *Host) { h.Reserved = true }, ReservedHost},
		{"reserved refuses a maintenance move", CheckReserved, func(v *VM) { v.Purpose = Maintenance }, func(h *Host) { h.Reserved = true }, ReservedHost},
		{"regular host takes a user's placement", CheckReserved, func(v *VM) { v.Purpose = User }, nil, OK},
		{"hard group apart", CheckHardAntiAffinity, func(v *VM) { v.Group, v.Hard = "db", true }, nil, OK},
		{"hard group together", CheckHardAntiAffinity, func(v *VM) { v.Group, v.Hard = "db", true }, func(h *Host) { h.GroupVMs = 1 }, HardAntiAffinity},
		{"soft group together is feasible", CheckHardAntiAffinity, func(v *VM) { v.Group = "db" }, func(h *Host) { h.GroupVMs = 1 }, OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, h := vm1(), up("h1")
			if tc.vm != nil {
				tc.vm(&v)
			}
			if tc.host != nil {
				tc.host(&h)
			}
			if got := tc.check(&v, &h); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
			// The base host passes every other checker: Feasible says the same.
			if got := Feasible(&v, &h); got != tc.want {
				t.Fatalf("Feasible says %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRankers(t *testing.T) {
	v := vm1()
	v.Group = "web"
	base := Rank(&v, ptr(up("h1")))
	if !base.Reached || !base.Fresh || !base.Apart || base.Spare || base.Free != 4096 {
		t.Fatalf("base score %+v", base)
	}
	tests := []struct {
		name  string
		host  func(*Host)
		vm    func(*VM)
		worse bool // the modified host ranks below the base one
	}{
		{"unreached ranks lower", func(h *Host) { h.Unreached = true }, nil, true},
		{"failed lately ranks lower", func(h *Host) { h.FailedLately = true }, nil, true},
		{"a soft group member there ranks lower", func(h *Host) { h.GroupVMs = 2 }, nil, true},
		{"less free memory ranks lower", func(h *Host) { h.UsedMemMiB = 1 }, nil, true},
		{"a spare ranks higher for a recovery", func(h *Host) { h.Reserved = true }, nil, false},
		{"not limited ranks higher", func(h *Host) { h.MemMiB = 0 }, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vv := v
			if tc.vm != nil {
				tc.vm(&vv)
			}
			h := up("h2")
			tc.host(&h)
			s := Rank(&vv, &h)
			if Better(s, base) == tc.worse || Better(base, s) != tc.worse {
				t.Fatalf("score %+v against base %+v: want worse=%t", s, base, tc.worse)
			}
		})
	}
	// Order of importance: reachability over freshness over apartness over the spare over memory.
	a, b := Score{Reached: true}, Score{Fresh: true, Apart: true, Spare: true, Free: 1 << 30}
	if !Better(a, b) {
		t.Fatal("reachability must come first")
	}
	a, b = Score{Fresh: true}, Score{Apart: true, Spare: true, Free: 1 << 30}
	if !Better(a, b) {
		t.Fatal("freshness must come before apartness")
	}
	a, b = Score{Apart: true}, Score{Spare: true, Free: 1 << 30}
	if !Better(a, b) {
		t.Fatal("apartness must come before the spare")
	}
	a, b = Score{Spare: true}, Score{Free: 1 << 30}
	if !Better(a, b) {
		t.Fatal("the spare must come before free memory")
	}
}

func ptr(h Host) *Host { return &h }

type hostList []Host

func (l hostList) Len() int { return len(l) }

// Fill gives everything but the details, which come with Detail.
func (l hostList) Fill(i int, h *Host) {
	*h = l[i]
	h.HasCopy, h.FailedLately = false, false
}

func (l hostList) Detail(i int, h *Host) { h.HasCopy, h.FailedLately = l[i].HasCopy, l[i].FailedLately }
func (l hostList) name(i int, ok bool) string {
	if !ok {
		return ""
	}
	return l[i].Name
}

func TestPlace(t *testing.T) {
	with := func(h Host, f func(*Host)) Host { f(&h); return h }
	tests := []struct {
		name  string
		vm    func(*VM)
		hosts hostList
		want  string // host chosen; "" none
		why   string // when none: a part of Explain's line
	}{
		{"most free memory", nil, hostList{with(up("h1"), func(h *Host) { h.UsedMemMiB = 2048 }), up("h2"), with(up("h3"), func(h *Host) { h.UsedMemMiB = 1024 })}, "h2", ""},
		{"ties go to the first name", nil, hostList{up("h1"), up("h2")}, "h1", ""},
		{"a spare first for a recovery", nil, hostList{up("h1"), with(up("h2"), func(h *Host) { h.Reserved, h.UsedMemMiB = true, 2048 })}, "h2", ""},
		{"never a spare for a user", func(v *VM) { v.Purpose = User }, hostList{with(up("h1"), func(h *Host) { h.UsedMemMiB = 3500 }), with(up("h2"), func(h *Host) { h.Reserved = true })},
			"", "only reserved hosts of cluster c1 have room"},
		{"only its cluster", nil, hostList{with(up("h1"), func(h *Host) { h.Cluster = "c2" }), with(up("h2"), func(h *Host) { h.UsedMemMiB = 3072 })}, "h2", ""},
		{"soft group waived", func(v *VM) { v.Group = "db" }, hostList{with(up("h1"), func(h *Host) { h.GroupVMs = 1 }), with(up("h2"), func(h *Host) { h.GroupVMs = 1; h.UsedMemMiB = 1 })}, "h1", ""},
		{"soft group kept apart", func(v *VM) { v.Group = "db" }, hostList{with(up("h1"), func(h *Host) { h.GroupVMs = 1 }), with(up("h2"), func(h *Host) { h.UsedMemMiB = 3000 })}, "h2", ""},
		{"hard group never waived", func(v *VM) { v.Group, v.Hard = "db", true }, hostList{with(up("h1"), func(h *Host) { h.GroupVMs = 1 }), with(up("h2"), func(h *Host) { h.GroupVMs = 2 })},
			"", "anti-affinity group db: every host of cluster c1 with room runs one"},
		{"not where it just failed while another fits", nil, hostList{with(up("h1"), func(h *Host) { h.FailedLately = true }), with(up("h2"), func(h *Host) { h.UsedMemMiB = 3000 })}, "h2", ""},
		{"where it failed when nothing else fits", nil, hostList{with(up("h1"), func(h *Host) { h.FailedLately = true }), with(up("h2"), func(h *Host) { h.UsedMemMiB = 3500 })}, "h1", ""},
		{"no memory anywhere", func(v *VM) { v.MemMiB = 2048 }, hostList{with(up("h1"), func(h *Host) { h.UsedMemMiB = 3500 }), with(up("h3"), func(h *Host) { h.UsedMemMiB = 3072 })},
			"", "no host has room: need 2048 MiB, largest free 1024 MiB on h3"},
		{"no vcpus anywhere", func(v *VM) { v.VCPUs = 4 }, hostList{with(up("h1"), func(h *Host) { h.UsedVCPUs = 1 }), with(up("h2"), func(h *Host) { h.UsedVCPUs = 2 })},
			"", "no host has room: need 4 vCPUs, most free 3 on h1"},
		{"neither", func(v *VM) { v.VCPUs = 4 }, hostList{with(up("h1"), func(h *Host) { h.UsedVCPUs = 1 }), with(up("h2"), func(h *Host) { h.UsedMemMiB = 4000 })},
			"", "no host has room: need 1024 MiB and 4 vCPUs; largest free 4096 MiB on h1, most free vCPUs 4 on h2"},
		{"room only beside a hard group member", func(v *VM) { v.Group, v.Hard = "db", true },
			hostList{with(up("h1"), func(h *Host) { h.UsedMemMiB = 4000 }), with(up("h2"), func(h *Host) { h.GroupVMs = 1 })},
			"", "anti-affinity group db: every host of cluster c1 with room runs one"},
		{"nothing up", nil, hostList{with(up("h1"), func(h *Host) { h.Up = false }), with(up("h2"), func(h *Host) { h.Maintenance = true }), with(up("h3"), func(h *Host) { h.Excluded = true })},
			"", "cluster c1 has no host up (of 3: 1 excluded, 1 not up, 1 in maintenance)"},
		{"no host in the cluster", nil, hostList{with(up("h1"), func(h *Host) { h.Cluster = "c2" })}, "", "cluster c1 has no host"},
		{"a copy everywhere", nil, hostList{with(up("h1"), func(h *Host) { h.HasCopy = true })}, "", "a copy of it is up on every usable host"},
		{"unlimited host", func(v *VM) { v.MemMiB = 1 << 20 }, hostList{up("h1"), with(up("h2"), func(h *Host) { h.MemMiB = 0 })}, "h2", ""},
	}
	var p Planner
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := vm1()
			if tc.vm != nil {
				tc.vm(&v)
			}
			i, ok := p.Place(v, tc.hosts)
			if got := tc.hosts.name(i, ok); got != tc.want {
				t.Fatalf("placed on %q, want %q (why: %s)", got, tc.want, p.Explain())
			}
			if !ok && !strings.Contains(p.Explain(), tc.why) {
				t.Fatalf("Explain() = %q, want it to contain %q", p.Explain(), tc.why)
			}
		})
	}
}

// TestFeasibleAndRankUseEveryPiece: Feasible and Rank (which call the pieces directly) say
// what running Checkers and Rankers in order says.
func TestFeasibleAndRankUseEveryPiece(t *testing.T) {
	hosts := []Host{up("h1"), {Name: "h2", Cluster: "c2"}, {Name: "h3", Cluster: "c1", Up: true, MemMiB: 512},
		{Name: "h4", Cluster: "c1", Up: true, Reserved: true, GroupVMs: 1, Unreached: true, FailedLately: true}}
	for _, purpose := range []Purpose{Recovery, User} {
		v := vm1()
		v.Group, v.Hard, v.Purpose = "g", purpose == User, purpose
		for i := range hosts {
			h := &hosts[i]
			want := OK
			for _, c := range Checkers {
				if r := c(&v, h); r != OK {
					want = r
					break
				}
			}
			if got := Feasible(&v, h); got != want {
				t.Errorf("%s %s: Feasible %s, the checkers %s", purpose, h.Name, got, want)
			}
			var s Score
			for _, r := range Rankers {
				r(&v, h, &s)
			}
			if got := Rank(&v, h); got != s {
				t.Errorf("%s %s: Rank %+v, the rankers %+v", purpose, h.Name, got, s)
			}
			// The packed key orders hosts as Better does.
			for j := range hosts {
				o := &hosts[j]
				if a, b := key(&v, h) > key(&v, o), Better(Rank(&v, h), Rank(&v, o)); a != b {
					t.Errorf("%s: key says %s above %s is %t, Better %t", purpose, h.Name, o.Name, a, b)
				}
			}
		}
	}
}

func TestRejectedCounts(t *testing.T) {
	var p Planner
	v := vm1()
	v.Purpose = User
	hosts := hostList{up("h1"), func() Host { h := up("h2"); h.Reserved = true; return h }(), func() Host { h := up("h3"); h.Up = false; return h }()}
	hosts[0].Up = false
	if _, ok := p.Place(v, hosts); ok {
		t.Fatal("h1 is down and h2 a spare: nothing fits")
	}
	if p.Rejected(ReservedHost) != 1 || p.Rejected(NotUp) != 2 || p.Rejected(OK) != 0 {
		t.Fatalf("counts: reserved %d not-up %d ok %d", p.Rejected(ReservedHost), p.Rejected(NotUp), p.Rejected(OK))
	}
	if Purpose(9).String() != "purpose(9)" || Reject(99).String() != "reject(99)" || User.String() != "user" || NoMemory.String() != "not enough memory" {
		t.Fatal("names")
	}
}
