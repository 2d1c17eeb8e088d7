package sim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/lifecycle"
	"github.com/hassproject/hass/vmname"
)

// A scenario is a folder with four files:
//
//	README      one line: what the scenario shows
//	start       the starting cluster: "cluster NAME [tolerate=N]",
//	            "host NAME [mem=MiB] [fencing=yes] [cluster=NAME] [reserved]
//	            [knows=HOST,...]" (knows: the hosts its agent counts as members,
//	            itself among them; every host when left out) and
//	            "vm NAME host=HOST [mem=MiB] [stopped] [max-restarts=N] [window=D]
//	            [max-relocations=N] [on-guest-shutdown=honour|restart] [priority=N]
//	            [anti-affinity=GROUP] [anti-affinity-hard] [ignore-acpi] [soft-reboot]" lines
//	cmdlist     the timeline: "OFFSET COMMAND ..." lines, and "end OFFSET"
//	log.expect  the exact story the run must print
//
// Commands (OFFSET is a Go duration from the start, such as 5s or 1m30s):
//
//	vm NAME crash|panic|guest-shutdown|hang|io-error|reboot-hang
//	api start|shutdown|stop|reboot|delete|suspend|resume NAME
//	api migrate NAME HOST
//	virsh start|shutdown|destroy|undefine|reboot|suspend|resume NAME
//	virsh migrate NAME HOST
//	host NAME power-off|power-on|partition|heal|agent-crash|agent-start|libvirtd-stop|libvirtd-start
//	                    |store-cut|store-heal  (store-cut: cut off from the store and the
//	                    controller only; it still exchanges heartbeats with its peers)
//	                    |maintenance-on|maintenance-on-no-migrate|maintenance-off
//	                    |admin-shutdown  (the admin powers the host off: no fault)
//	control-plane lost|back  the store and every controller go down (hosts still see each
//	                    other), or come back
//	etcd lose|back eN   the store's etcd member N (1-3; e1 leads at the start) is lost or
//	                    comes back (see etcdLose)
//	controller crash    the leading controller dies; a new one is elected 2 s later and
//	                    restores its engine from the store
//	controller crash-after-record  the leading controller dies in its next step that orders
//	                    something, after recording the step and before carrying it out
//	bus drop N          the next N agent messages are lost
//	bus hold N D        the next N agent messages arrive D late (reordering them)
//	fault NAME KIND WHEN  aim a fault at the switch-over of the VM's next migration:
//	                    KIND dest-agent-crash|lost-resume|lost-stop, WHEN before|at|after
//	                    (see MigFault)
//	end OFFSET          stop the run (default 10m)

// Scenario is a parsed scenario folder.
type Scenario struct {
	Name     string
	Title    string
	clusters []engine.ClusterState
	hosts    []hostSpec
	vms      []vmSpec
	cmds     []command
	end      time.Duration
	Expect   string
}

type hostSpec struct {
	id       engine.HostID
	mem      int
	vcpus    int
	fencing  bool
	cluster  string
	reserved bool
	// knows: the hosts its agent counts as members (nil: every host). An agent that read
	// the host list once, before its peers joined, and then lost the store.
	knows []engine.HostID
}

type vmSpec struct {
	id         engine.VMID
	host       engine.HostID
	mem        int
	stopped    bool
	ignoreACPI bool
	softReboot bool
	policy     engine.Policy
}

type command struct {
	at   time.Duration
	line int
	args []string
}

// LoadScenario reads and checks a scenario folder. Errors name the file and line.
func LoadScenario(dir string) (*Scenario, error) {
	sc := &Scenario{Name: filepath.Base(dir), end: 10 * time.Minute}
	readme, err := os.ReadFile(filepath.Join(dir, "README"))
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
	}
	sc.Title = strings.TrimSpace(string(readme))
	if sc.Title == "" || strings.Contains(sc.Title, "\n") {
		return nil, fmt.Errorf("scenario %s: README must be exactly one non-empty line", sc.Name)
	}
	if err := sc.parseStart(filepath.Join(dir, "start")); err != nil {
		return nil, err
	}
	if err := sc.parseCmds(filepath.Join(dir, "cmdlist")); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "log.expect")); err == nil {
		sc.Expect = string(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
	}
	return sc, nil
}

func lines(path string, fn func(n int, f []string) error) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if err := fn(n, f); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	return sc.Err()
}

func kv(f string) (string, string) {
	k, v, _ := strings.Cut(f, "=")
	return k, v
}

func (sc *Scenario) parseStart(path string) error {
	hosts := map[engine.HostID]bool{}
	vms := map[engine.VMID]bool{}
	err := lines(path, func(n int, f []string) error {
		switch f[0] {
		case "cluster":
			if len(f) < 2 {
				return errors.New("cluster: missing name")
			}
			c := engine.ClusterState{Name: f[1]}
			for _, a := range f[2:] {
				k, v := kv(a)
				if k != "tolerate" {
					return fmt.Errorf("cluster %s: unknown field %q", c.Name, k)
				}
				t, err := strconv.Atoi(v)
				if err != nil || t < 0 {
					return fmt.Errorf("cluster %s: tolerate %q: want a number >= 0", c.Name, v)
				}
				c.TolerateHostFailures = t
			}
			sc.clusters = append(sc.clusters, c)
		case "host":
			if len(f) < 2 {
				return errors.New("host: missing name")
			}
			h := hostSpec{id: engine.HostID(f[1]), mem: 16384}
			if hosts[h.id] {
				return fmt.Errorf("host %s: defined twice", h.id)
			}
			for _, a := range f[2:] {
				k, v := kv(a)
				switch k {
				case "mem":
					m, err := strconv.Atoi(v)
					if err != nil || m < 0 {
						return fmt.Errorf("host %s: mem %q: want a number of MiB", h.id, v)
					}
					h.mem = m
				case "fencing":
					if v != "yes" && v != "no" {
						return fmt.Errorf("host %s: fencing %q: want yes or no", h.id, v)
					}
					h.fencing = v == "yes"
				case "cluster":
					if !slices.ContainsFunc(sc.clusters, func(c engine.ClusterState) bool { return c.Name == v }) {
						return fmt.Errorf("host %s: cluster %q: unknown (clusters come first)", h.id, v)
					}
					h.cluster = v
				case "reserved":
					h.reserved = true
				case "knows":
					for _, m := range strings.Split(v, ",") {
						if vmname.CheckHost(m) != nil || slices.Contains(h.knows, engine.HostID(m)) {
							return fmt.Errorf("host %s: knows %q: want distinct host names, comma-separated", h.id, v)
						}
						h.knows = append(h.knows, engine.HostID(m))
					}
					if !slices.Contains(h.knows, h.id) {
						return fmt.Errorf("host %s: knows %q: an agent always counts its own host", h.id, v)
					}
				default:
					return fmt.Errorf("host %s: unknown field %q", h.id, k)
				}
			}
			hosts[h.id] = true
			sc.hosts = append(sc.hosts, h)
		case "vm":
			if len(f) < 2 {
				return errors.New("vm: missing name")
			}
			v := vmSpec{id: engine.VMID(f[1]), mem: 512, policy: engine.DefaultPolicy()}
			if vms[v.id] {
				return fmt.Errorf("vm %s: defined twice", v.id)
			}
			for _, a := range f[2:] {
				k, val := kv(a)
				var err error
				switch k {
				case "host":
					v.host = engine.HostID(val)
					if !hosts[v.host] {
						err = fmt.Errorf("unknown host %q (hosts come first)", val)
					}
				case "mem":
					v.mem, err = strconv.Atoi(val)
					if err == nil && v.mem < 0 {
						err = fmt.Errorf("%d: want a number of MiB >= 0", v.mem)
					}
				case "stopped":
					v.stopped = true
				case "ignore-acpi":
					v.ignoreACPI = true
				case "soft-reboot":
					v.softReboot = true
				case "max-restarts":
					v.policy.MaxRestarts, err = strconv.Atoi(val)
				case "max-relocations":
					v.policy.MaxRelocations, err = strconv.Atoi(val)
				case "priority":
					v.policy.Priority, err = strconv.Atoi(val)
				case "window":
					v.policy.Window, err = time.ParseDuration(val)
				case "on-guest-shutdown":
					v.policy.OnGuestShutdown, err = engine.ParseGuestShutdownPolicy(val)
				case "anti-affinity":
					v.policy.AntiAffinity = val
				case "anti-affinity-hard":
					v.policy.AntiAffinityHard = true
				default:
					err = errors.New("unknown field")
				}
				if err != nil {
					return fmt.Errorf("vm %s: %s: %w", v.id, k, err)
				}
			}
			if v.host == "" {
				return fmt.Errorf("vm %s: missing host=", v.id)
			}
			if err := v.policy.Validate(); err != nil {
				return fmt.Errorf("vm %s: %w", v.id, err)
			}
			vms[v.id] = true
			sc.vms = append(sc.vms, v)
		default:
			return fmt.Errorf("unknown line %q: want cluster, host or vm", f[0])
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scenario %s: start: %w", sc.Name, err)
	}
	if len(sc.hosts) == 0 {
		return fmt.Errorf("scenario %s: start: no hosts", sc.Name)
	}
	return nil
}

var cmdArity = map[string]map[string]int{
	"vm":    {"crash": 0, "panic": 0, "guest-shutdown": 0, "hang": 0, "io-error": 0, "reboot-hang": 0},
	"api":   {"start": 1, "shutdown": 1, "stop": 1, "reboot": 1, "delete": 1, "suspend": 1, "resume": 1, "migrate": 2},
	"virsh": {"start": 1, "shutdown": 1, "destroy": 1, "undefine": 1, "reboot": 1, "suspend": 1, "resume": 1, "migrate": 2},
	"host": {"power-off": 0, "power-on": 0, "partition": 0, "heal": 0, "agent-crash": 0, "agent-start": 0,
		"libvirtd-stop": 0, "libvirtd-start": 0, "store-cut": 0, "store-heal": 0, "maintenance-on": 0,
		"maintenance-on-no-migrate": 0, "maintenance-off": 0, "admin-shutdown": 0},
}

func keys(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

func (sc *Scenario) parseCmds(path string) error {
	hosts := map[string]bool{}
	for _, h := range sc.hosts {
		hosts[string(h.id)] = true
	}
	vms := map[string]bool{}
	for _, v := range sc.vms {
		vms[string(v.id)] = true
	}
	var last time.Duration
	err := lines(path, func(n int, f []string) error {
		if f[0] == "end" {
			if len(f) != 2 {
				return errors.New("end: want end OFFSET")
			}
			d, err := time.ParseDuration(f[1])
			if err != nil || d <= 0 {
				return fmt.Errorf("end %q: want a positive duration", f[1])
			}
			sc.end = d
			return nil
		}
		at, err := time.ParseDuration(f[0])
		if err != nil || at < 0 {
			return fmt.Errorf("offset %q: want a duration such as 5s or 1m30s", f[0])
		}
		if at < last {
			return fmt.Errorf("offset %s is before the previous command's %s", at, last)
		}
		last = at
		if len(f) < 2 {
			return errors.New("missing command")
		}
		c := command{at: at, line: n, args: f[1:]}
		a := c.args
		switch a[0] {
		case "bus":
			if len(a) < 3 || (a[1] != "drop" && a[1] != "hold") {
				return errors.New("bus: want 'bus drop N' or 'bus hold N DURATION'")
			}
			if k, err := strconv.Atoi(a[2]); err != nil || k < 1 {
				return fmt.Errorf("bus %s: count %q: want a positive number", a[1], a[2])
			}
			if a[1] == "hold" {
				if len(a) != 4 {
					return errors.New("bus hold: want 'bus hold N DURATION'")
				}
				if _, err := time.ParseDuration(a[3]); err != nil {
					return fmt.Errorf("bus hold: duration %q: %v", a[3], err)
				}
			}
		case "control-plane":
			if len(a) != 2 || (a[1] != "lost" && a[1] != "back") {
				return errors.New("control-plane: want 'control-plane lost' or 'control-plane back'")
			}
		case "etcd":
			if len(a) != 3 || (a[1] != "lose" && a[1] != "back") || !slices.Contains([]string{"e1", "e2", "e3"}, a[2]) {
				return errors.New("etcd: want 'etcd lose eN' or 'etcd back eN' (N 1 to 3)")
			}
		case "controller":
			if len(a) != 2 || (a[1] != "crash" && a[1] != "crash-after-record") {
				return errors.New("controller: want 'controller crash' or 'controller crash-after-record'")
			}
		case "fault":
			if len(a) != 4 {
				return errors.New("fault: want 'fault NAME KIND WHEN'")
			}
			if !vms[a[1]] {
				return fmt.Errorf("fault: unknown vm %q", a[1])
			}
			if !slices.Contains(migFaultKinds, a[2]) {
				return fmt.Errorf("fault %s: unknown kind %q (want one of %s)", a[1], a[2], strings.Join(migFaultKinds, ", "))
			}
			if !slices.Contains(migFaultWhens, a[3]) {
				return fmt.Errorf("fault %s: unknown time %q (want one of %s)", a[1], a[3], strings.Join(migFaultWhens, ", "))
			}
		case "vm", "host":
			if len(a) != 3 {
				return fmt.Errorf("%s: want '%s NAME ACTION'", a[0], a[0])
			}
			if a[0] == "vm" && !vms[a[1]] {
				return fmt.Errorf("vm: unknown vm %q", a[1])
			}
			if a[0] == "host" && !hosts[a[1]] {
				return fmt.Errorf("host: unknown host %q", a[1])
			}
			if _, ok := cmdArity[a[0]][a[2]]; !ok {
				return fmt.Errorf("%s %s: unknown action %q (want one of %s)", a[0], a[1], a[2], keys(cmdArity[a[0]]))
			}
		case "api", "virsh":
			if len(a) < 2 {
				return fmt.Errorf("%s: missing operation", a[0])
			}
			ar, ok := cmdArity[a[0]][a[1]]
			if !ok {
				return fmt.Errorf("%s: unknown operation %q (want one of %s)", a[0], a[1], keys(cmdArity[a[0]]))
			}
			if len(a)-2 != ar {
				return fmt.Errorf("%s %s: want %d argument(s), got %d", a[0], a[1], ar, len(a)-2)
			}
			if !vms[a[2]] {
				return fmt.Errorf("%s %s: unknown vm %q", a[0], a[1], a[2])
			}
			if ar == 2 && !hosts[a[3]] {
				return fmt.Errorf("%s %s: unknown host %q", a[0], a[1], a[3])
			}
		default:
			return fmt.Errorf("unknown command %q (want vm, api, virsh, host, bus, fault, control-plane, controller, etcd or end)", a[0])
		}
		sc.cmds = append(sc.cmds, c)
		return nil
	})
	if err != nil {
		return fmt.Errorf("scenario %s: cmdlist: %w", sc.Name, err)
	}
	for _, c := range sc.cmds {
		if c.at > sc.end {
			return fmt.Errorf("scenario %s: cmdlist:%d: offset %s is after the end %s", sc.Name, c.line, c.at, sc.end)
		}
	}
	return nil
}

// ScenarioConfig is the simulator configuration scenarios run with: no randomness on the
// bus, fixed durations.
func ScenarioConfig() Config {
	c := DefaultConfig()
	c.BusDelay, c.BusJitter, c.ReorderProb, c.DropProb = 10*time.Millisecond, 0, 0, 0
	return c
}

// Run plays the scenario and returns its story.
func (sc *Scenario) Run(naive bool) (string, Result) {
	cfg := ScenarioConfig()
	cfg.Naive = naive
	cfg.Duration = sc.end
	var out bytes.Buffer
	s := newSim(cfg, &out)
	s.checkStoreEach = true
	s.res.Hosts, s.res.VMs = len(sc.hosts), len(sc.vms)
	for _, c := range sc.clusters {
		s.step(engine.SetCluster{Name: c.Name, TolerateHostFailures: c.TolerateHostFailures})
	}
	for _, h := range sc.hosts {
		s.addHostIn(h)
	}
	for _, v := range sc.vms {
		if s.addVM(v.id, s.hostByID[v.host], v.mem, v.policy, !v.stopped) {
			d := s.hostByID[v.host].doms[v.id]
			d.ignoreACPI, d.softReboot = v.ignoreACPI, v.softReboot
		}
	}
	for _, c := range sc.cmds {
		s.at(s.start.Add(c.at), func() { s.command(c.args) })
	}
	s.run()
	r := s.res
	fmt.Fprintf(&out, "result: faults=%d recoveries=%d false_recoveries=%d missed_failures=%d split_brain=%d gave_up=%d ambiguous=%d\n",
		r.Faults, r.Recoveries, r.FalseRecoveries, r.MissedFailures, r.SplitBrain, r.GaveUp, r.Ambiguous)
	return out.String(), r
}

var virshOps = map[string]engine.OpKind{"start": engine.OpStart, "shutdown": engine.OpShutdown,
	"destroy": engine.OpStop, "undefine": engine.OpDelete, "reboot": engine.OpReboot,
	"suspend": engine.OpSuspend, "resume": engine.OpResume, "migrate": engine.OpMigrate}

func (s *Sim) command(a []string) {
	switch a[0] {
	case "bus":
		n, _ := strconv.Atoi(a[2])
		if a[1] == "drop" {
			s.dropNext = n
		} else {
			s.holdNext = n
			s.holdFor, _ = time.ParseDuration(a[3])
		}
	case "etcd":
		i := int(a[2][1] - '1')
		if a[1] == "lose" {
			s.etcdLose(i)
		} else {
			s.etcdBack(i)
		}
	case "controller":
		if a[1] == "crash" {
			s.controllerCrash("")
		} else {
			s.ctl.crashArmed = true
		}
	case "control-plane":
		if a[1] == "lost" {
			s.controlPlaneLost(cpLostEverywhere)
		} else {
			s.controlPlaneBack(cpLostEverywhere)
		}
	case "fault":
		id := engine.VMID(a[1])
		s.migFaults[id] = append(s.migFaults[id], MigFault{Kind: a[2], When: a[3]})
	case "vm":
		id := engine.VMID(a[1])
		switch a[2] {
		case "reboot-hang":
			if _, d := s.hostOf(id); d != nil {
				d.rebootHang = true
			}
		case "io-error":
			h, d := s.hostOf(id)
			if h != nil && d.state == lifecycle.StateRunning {
				s.trace("truth: %s hits a disk I/O error and is paused", id)
				s.emit(h, id, lifecycle.Event{Kind: lifecycle.KindIOError})
				s.setDom(h, id, d, lifecycle.StatePaused, lifecycle.PausedIOError, lc(lifecycle.EvSuspended, lifecycle.SuspendedIOError))
			}
		default:
			s.trace("truth: vm %s %s", id, a[2])
			s.vmFault(id, a[2])
		}
	case "host":
		h := s.hostByID[engine.HostID(a[1])]
		switch a[2] {
		case "power-off":
			s.powerOff(h, "power loss")
		case "power-on":
			s.powerOn(h)
		case "partition":
			s.partition(h)
		case "heal":
			s.heal(h)
		case "agent-crash":
			s.agentCrash(h)
		case "agent-start":
			s.agentStart(h)
		case "libvirtd-stop":
			s.libvirtdStop(h)
		case "libvirtd-start":
			s.libvirtdStart(h)
		case "store-cut":
			s.cutStore(h)
		case "store-heal":
			s.healStore(h)
		case "maintenance-on", "maintenance-on-no-migrate":
			migrate := a[2] == "maintenance-on"
			flag := ""
			if !migrate {
				flag = " --no-migrate"
			}
			s.trace("admin: hass host maintenance on %s%s", h.id, flag)
			if out := s.step(engine.Maintenance{Host: h.id, On: true, Migrate: migrate}); out.Err != nil {
				s.trace("admin: refused: %v", out.Err)
				return
			}
			h.maint = true
			h.maintEpoch++
			s.res.Maintenance++
		case "maintenance-off":
			s.maintenanceOff(h, h.maintEpoch)
		case "admin-shutdown":
			s.res.AdminShutdowns++
			s.powerOff(h, adminShutdown)
		}
	case "api", "virsh":
		op := virshOps[a[1]]
		if a[0] == "api" {
			op, _ = engine.ParseOpKind(a[1])
		}
		target := engine.HostID("")
		if len(a) == 4 {
			target = engine.HostID(a[3])
		}
		s.res.Operations++
		ok := false
		if a[0] == "api" {
			ok = s.api(op, engine.VMID(a[2]), target)
		} else {
			ok = s.virsh(op, engine.VMID(a[2]), target)
			if !ok {
				s.trace("user: virsh %s %s failed", a[1], a[2])
			}
		}
		if !ok {
			s.res.Refused++
		}
	}
}
