package sim

import (
	"fmt"
	"strings"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/guest"
	"github.com/hassproject/hass/lifecycle"
)

// ---- the virtual clock -----------------------------------------------------------------

func (s *Sim) at(t time.Time, fn func()) {
	if t.Before(s.now) {
		t = s.now
	}
	s.q.At(t, fn)
}

func (s *Sim) after(d time.Duration, fn func()) { s.at(s.now.Add(d), fn) }

// ---- simulated hosts and their hypervisors ---------------------------------------------

type dom struct {
	state, reason int
	gen           int  // bumps on every state change: a pending completion checks it
	ignoreACPI    bool // the guest ignores ACPI shutdown requests
	rebootHang    bool // the next hard reboot does not come back
	softReboot    bool // scenarios: reboots happen inside the guest (reboot event, no stop)
	hung          bool // the guest hangs: up, but not doing its job
	// The guest layers' truth (guest.go): when the guest last booted (its agent and network
	// answer guestBoot later), its network is down, its agent is restarting.
	bootedAt  time.Time
	netDown   bool
	agentGone bool
}

type host struct {
	id          engine.HostID
	mem         int
	fencing     bool
	cluster     string
	reserved    bool
	lease       int64 // the store's lease ID the agent holds (random workload; 0 in scenarios)
	maint       bool  // in maintenance, as hass accepted it
	maintEpoch  int   // bumps at each maintenance cycle: a step scheduled for an older one is void
	power       bool
	offTold     bool // the BMC poll reported it off since it last reported it on
	agent       bool
	libvirtd    bool
	partitioned bool
	storeCut    bool            // cut off from the store and the controller only: it still hears its peers
	knows       []engine.HostID // the members its agent counts (nil: every host)
	doms        map[engine.VMID]*dom
	ag          *agent.Agent // the same agent the daemon runs
	cpLost      bool         // the control plane (store and controllers) is down: nobody reaches it
	failedAt    time.Time    // when the host last failed (power loss or network cut)
	agentDiedAt time.Time    // when its agent last crashed (a watchdog reset follows)
	renewed     time.Time    // the store's view: last lease renewal it received
	leaseAlive  bool         // what the controller was last told
	// past is what the agent process remembered on the host's disk (agent.Past: its last
	// renewal that succeeded, whether it had fenced), for the next one. It survives an agent
	// crash, and a power loss too: what the host runs after one was started since (nothing
	// protected, or what hass restarted there after a renewal), so keeping it is harmless.
	past    agent.Past
	lastPet time.Time // hardware watchdog
	armed   bool      // the agent armed the hardware watchdog
	epoch   int       // bumps when the host loses power or the agent restarts
	// stored is what the agent last wrote to the store for each VM. Writes are reliable
	// while the agent can reach the store; the bus may still lose the notification of one.
	stored map[engine.VMID]engine.Observe
	// storedLive counts the entries of stored whose state is not absent (see putStored).
	storedLive int
	// lose counts the host's next messages about a VM (observations, and the results of
	// actions on it) that the bus will lose: a fault aimed at a migration's switch-over.
	lose map[engine.VMID]int
	// mon is the guest monitor of the host's agent process (guest.go); guestAt when it is
	// next ticked.
	mon     *guest.Monitor
	guestAt time.Time
	// freshLease: the agent process started while it could not reach the store; its first
	// renewal grants it a lease of its own. resuming: that process has not yet asked the
	// store about its predecessor's lease (agent.Resumed): it does before that renewal.
	freshLease, resuming bool
}

// listening: the agent receives libvirt events.
func (h *host) listening() bool { return h.power && h.agent && h.libvirtd }

// reachable: the agent can talk to the controller and the store.
func (h *host) reachable() bool {
	return h.power && h.agent && !h.partitioned && !h.storeCut && !h.cpLost
}

func up(st int) bool {
	return st == lifecycle.StateRunning || st == lifecycle.StatePaused
}

// setDom changes a domain's state and emits the libvirt events that go with it.
func (s *Sim) setDom(h *host, id engine.VMID, d *dom, state, reason int, evs ...lifecycle.Event) {
	d.state, d.reason, d.hung = state, reason, false
	d.gen++
	for _, ev := range evs {
		ev.Domain = string(id)
		s.emit(h, id, ev)
	}
	s.afterChange(id)
}

func lc(typ, detail int) lifecycle.Event {
	return lifecycle.Event{Kind: lifecycle.KindLifecycle, Type: typ, Detail: detail}
}

// emit passes one libvirt event through the host's agent to the controller.
func (s *Sim) emit(h *host, id engine.VMID, ev lifecycle.Event) {
	s.guestTruth(h, id, ev)
	if !h.listening() {
		return // nobody is subscribed: the event is lost
	}
	ev.Domain = string(id)
	h.ag.Event(s.now, ev)
	s.guestEvent(h, id, ev)
}

// snapshot sends the host's full domain list (a resync).
func (s *Sim) snapshot(h *host) {
	if !h.listening() || !h.reachable() {
		return
	}
	seq := h.ag.Stamp(s.now)
	// The host's domains in name order (every one is a VM of s.vmIDs, which is sorted).
	ids := s.domIDs(h)
	rows := make([]agent.Row, 0, len(ids))
	for _, id := range ids {
		if d := h.doms[id]; d != nil {
			rows = append(rows, agent.Row{Name: string(id), State: d.state, Reason: d.reason})
		}
	}
	h.ag.Listed(s.now, seq, rows)
}

// send puts an agent message on the bus to the controller: delayed, maybe reordered, maybe lost.
func (s *Sim) send(h *host, in engine.Input) {
	if !h.reachable() {
		return
	}
	s.store(h, in)
	if id := aboutVM(in); id != "" && h.lose[id] > 0 {
		h.lose[id]--
		if h.lose[id] == 0 {
			delete(h.lose, id)
		}
		s.trace("bus: lost %s", describe(in))
		return
	}
	if s.dropNext > 0 {
		s.dropNext--
		s.trace("bus: dropped %s", describe(in))
		return
	}
	if s.cfg.DropProb > 0 && s.rng.Float64() < s.cfg.DropProb {
		s.res.Dropped++
		return
	}
	d := s.busDelay()
	if s.holdNext > 0 {
		s.holdNext--
		d += s.holdFor
		s.trace("bus: holding %s for %s", describe(in), s.holdFor)
	}
	s.after(d, func() { s.step(in) })
}

// store records an agent's observations in the store, as the agent writes them.
func (s *Sim) store(h *host, in engine.Input) {
	seen := func(id engine.VMID) {
		if s.unseenOn[h.id] == 0 {
			return // no VM's last act is unseen on this host: nothing to look up
		}
		if t := s.vms[id]; t != nil && t.unseen == h.id && !t.unseenLost {
			s.setUnseen(t, "") // the agent where it happened has written it down now
		}
	}
	switch in := in.(type) {
	case engine.Observe:
		h.putStored(in)
		seen(in.VM)
	case engine.Snapshot:
		// A complete list: what it lacks is absent from the host now.
		listedLive, distinct := 0, true
		for i, d := range in.Domains {
			h.putStored(engine.Observe{Host: h.id, VM: d.VM, Seq: in.Seq, State: d.State, Reason: d.Reason, At: in.At})
			seen(d.VM)
			if d.State != engine.DomAbsent {
				listedLive++
			}
			distinct = distinct && (i == 0 || in.Domains[i-1].VM < d.VM)
		}
		if distinct && h.storedLive == listedLive {
			return // every VM stored as present is listed: nothing to mark absent
		}
		listed := listedIn(in.Domains)
		for id, o := range h.stored {
			if o.State != engine.DomAbsent && !listed(id) {
				h.putStored(engine.Observe{Host: h.id, VM: id, Seq: in.Seq, State: engine.DomAbsent, At: in.At})
			}
		}
	}
}

// putStored writes what the agent stored of one VM, keeping the count of VMs stored as
// present on the host.
func (h *host) putStored(o engine.Observe) {
	if old, ok := h.stored[o.VM]; ok && old.State != engine.DomAbsent {
		h.storedLive--
	}
	if o.State != engine.DomAbsent {
		h.storedLive++
	}
	h.stored[o.VM] = o
}

// readStore gives the controller what a host's agent last wrote, before the controller
// declares the host failed: a notification lost on the bus is not lost information.
func (s *Sim) readStore(h *host) {
	if s.eng != nil && s.eng.HostState(h.id) == "fenced" {
		return // what a fenced host's agent stored is void: its domains died with the fence
	}
	for _, id := range storedIDs(h) {
		if o, ok := h.stored[id]; ok {
			s.step(o)
		}
	}
}

func (s *Sim) busDelay() time.Duration {
	d := s.cfg.BusDelay
	if s.cfg.BusJitter > 0 {
		d += time.Duration(s.rng.Int64N(int64(s.cfg.BusJitter)))
	}
	if s.cfg.ReorderProb > 0 && s.rng.Float64() < s.cfg.ReorderProb {
		d += time.Duration(s.rng.Int64N(int64(3 * time.Second)))
	}
	return d
}

// aboutVM names the VM an observation is about ("" for anything else).
func aboutVM(in engine.Input) engine.VMID {
	switch in := in.(type) {
	case engine.Observe:
		return in.VM
	}
	return ""
}

func describe(in engine.Input) string {
	switch in := in.(type) {
	case engine.Observe:
		return fmt.Sprintf("%s %s %s/%s", in.Host, in.VM, in.State, in.Reason)
	case engine.Signal:
		return fmt.Sprintf("%s %s signal %s", in.Host, in.VM, in.Kind)
	case engine.Snapshot:
		return fmt.Sprintf("%s snapshot", in.Host)
	case engine.ActionResult:
		return fmt.Sprintf("result of action %d", in.ID)
	}
	return fmt.Sprintf("%T", in)
}

// ---- host-level faults and their cures ------------------------------------------------

func (s *Sim) powerOff(h *host, why string) {
	if !h.power {
		return
	}
	s.trace("truth: %s loses power (%s)", h.id, why)
	admin := why == adminShutdown
	if why != "fenced over IPMI" && !admin {
		s.res.HostFailures++
		h.failedAt = s.now
		if strings.HasPrefix(why, "hardware watchdog") && !h.agentDiedAt.IsZero() {
			h.failedAt = h.agentDiedAt // the host failed when its agent did
		}
	}
	h.power, h.agent, h.libvirtd, h.armed, h.storeCut = false, false, false, false, false
	h.epoch++
	for _, id := range s.domIDs(h) {
		if d := h.doms[id]; d != nil && d.state != lifecycle.StateShutoff {
			if t := s.vms[id]; admin && t != nil && (t.wants == engine.WantRunning || t.wants == engine.WantPaused) {
				t.maintDown = h.id
			}
			if !(d.state == lifecycle.StatePaused && d.reason == lifecycle.PausedMigration) && !admin {
				// (The admin's shutdown of a host in maintenance stops its VMs on purpose:
				// they are owed again when maintenance ends, see maintenanceOff.)
				s.faultIfWanted(id, "host "+string(h.id)+" lost power")
				s.lostWithHost(id, h)
			}
			s.setDom(h, id, d, lifecycle.StateShutoff, lifecycle.ShutoffUnknown)
		}
	}
}

func (s *Sim) powerOn(h *host) {
	if h.power {
		return
	}
	s.trace("truth: %s powers on", h.id)
	h.power, h.libvirtd, h.partitioned = true, true, false
	ep := h.epoch
	s.after(s.cfg.AgentBoot, func() {
		if h.epoch == ep && h.power {
			s.agentStart(h)
		}
	})
}

func (s *Sim) agentStart(h *host) {
	if h.agent || !h.power {
		return
	}
	s.trace("truth: agent on %s starts", h.id)
	h.agent, h.armed = true, true
	h.lastPet = s.now
	past := h.past
	h.ag = s.newAgent(h, &past) // a new process: it resumes from what the last one kept
	h.resuming = true
	if h.reachable() {
		s.resume(h)
	}
	if s.random && h.leaseAlive && h.reachable() {
		// A new process grants itself a new lease; the old one lapses. (Cut off from the
		// store it cannot: the old lease expires there as it would.)
		h.lease = s.newLease()
		s.step(engine.HostLease{Host: h.id, Alive: true, Lease: h.lease})
	} else if s.random {
		// Cut off from the store, it grants its new lease as soon as it reaches it (hass
		// agent retries its grant until the store answers): it never renews its dead
		// predecessor's lease, which may be the one the host was fenced under.
		h.freshLease = true
	}
	s.renew(h)
	s.snapshot(h)
}

// resume has h's new agent process, reaching the store, learn whether its predecessor's
// lease is still alive there (agent.Resumed), before it takes a lease of its own: it fences
// at once if not.
func (s *Sim) resume(h *host) {
	h.resuming = false
	fenced := h.ag.Fenced()
	h.ag.Resumed(s.now, h.leaseAlive)
	if h.ag.Fenced() && !fenced {
		s.res.SelfFences++
	}
}

func (s *Sim) agentCrash(h *host) {
	if !h.agent {
		return
	}
	s.trace("truth: agent on %s crashes", h.id)
	h.agent = false
	h.agentDiedAt = s.now
	h.epoch++
}

func (s *Sim) libvirtdStop(h *host) {
	if !h.libvirtd || !h.power {
		return
	}
	s.trace("truth: libvirtd on %s stops", h.id)
	h.libvirtd = false
}

func (s *Sim) libvirtdStart(h *host) {
	if h.libvirtd || !h.power {
		return
	}
	s.trace("truth: libvirtd on %s starts", h.id)
	h.libvirtd = true
	s.snapshot(h) // the agent reconnects and resyncs
}

func (s *Sim) partition(h *host) {
	if h.partitioned || !h.power {
		return
	}
	s.trace("truth: %s is cut off from the controller and the store", h.id)
	h.partitioned = true
	s.res.HostFailures++
	h.failedAt = s.now
}

// cutStore cuts a host off from the store and the controller, while it still exchanges
// heartbeats with its peers over the hosts' own network.
func (s *Sim) cutStore(h *host) {
	if h.storeCut || !h.power {
		return
	}
	s.trace("truth: %s is cut off from the store and the controller (it still hears its peers)", h.id)
	h.storeCut = true
	s.res.HostFailures++
	h.failedAt = s.now
}

func (s *Sim) healStore(h *host) {
	if !h.storeCut {
		return
	}
	s.trace("truth: %s reaches the store again", h.id)
	h.storeCut = false
	s.renew(h)
	s.snapshot(h)
}

func (s *Sim) heal(h *host) {
	if !h.partitioned {
		return
	}
	s.trace("truth: %s can reach the controller again", h.id)
	h.partitioned = false
	s.renew(h)
	s.snapshot(h)
}

// controlPlaneLost takes the store and every controller down at once, while the hosts still
// see each other: nobody can renew a lease, and nobody can restart anything. why is one of
// the causes (the scenario's or random workload's "lost everywhere", or etcd without a
// leader); the control plane is back when every cause is gone.
func (s *Sim) controlPlaneLost(why string) {
	if s.cpWhy[why] {
		return
	}
	s.cpWhy[why] = true
	if s.cpDown {
		return
	}
	if why == cpLostEverywhere {
		s.trace("truth: the control plane (store and controllers) is lost everywhere")
		s.res.ControlPlaneLosses++
	}
	s.cpDown = true
	s.noteCP()
	for _, h := range s.hosts {
		h.cpLost = true
	}
}

// The causes of a control-plane outage.
const (
	cpLostEverywhere = "lost"
	cpEtcd           = "etcd"
)

// controlPlaneBack brings it back: etcd gives every lease a fresh TTL when it elects a
// leader, a controller takes over from the store, and the agents renew and resync.
func (s *Sim) controlPlaneBack(why string) {
	if !s.cpWhy[why] {
		return
	}
	delete(s.cpWhy, why)
	if !s.cpDown || len(s.cpWhy) > 0 {
		return
	}
	if why == cpLostEverywhere {
		s.trace("truth: the control plane is back")
	}
	s.cpDown = false
	s.noteCP()
	for _, h := range s.hosts {
		h.cpLost = false
		if h.leaseAlive {
			h.renewed = s.now
		}
	}
	for _, h := range s.hosts {
		s.readStore(h)
		if h.listening() && h.reachable() {
			s.renew(h)
			s.snapshot(h)
		}
	}
	if s.ctl.down && s.ctl.electLater {
		s.ctl.electLater = false
		s.elect()
	}
}

// renew is the agent renewing its lease.
func (s *Sim) renew(h *host) {
	if !h.reachable() {
		return
	}
	if h.resuming {
		s.resume(h)
	}
	h.renewed = s.now
	h.ag.LeaseRenewed(s.now) // remembers it: agentEnv.Remember
	if !h.leaseAlive || h.freshLease {
		h.leaseAlive, h.freshLease = true, false
		if s.random {
			h.lease = s.newLease() // an expired lease cannot be kept alive: a new one
		}
		s.step(engine.HostLease{Host: h.id, Alive: true, Lease: h.lease})
	}
}

// heartbeat runs every second on every host: the agent renews its lease every
// RenewEvery, fences itself when it could not renew for SelfFenceAfter, pets the hardware
// watchdog; the store expires leases; the watchdog resets a host whose agent died.
func (s *Sim) heartbeat() {
	for _, h := range s.hosts {
		if !h.power {
			continue
		}
		if h.agent {
			if s.now.Sub(h.renewed) >= s.cfg.RenewEvery {
				if h.reachable() {
					s.renew(h)
				} else {
					h.ag.LeaseFailed(s.now)
				}
			}
			fenced, holding := h.ag.Fenced(), h.ag.Holding()
			h.ag.Tick(s.now) // self-fence when due, pet the watchdog, heartbeat to the peers
			if h.ag.Fenced() && !fenced {
				s.res.SelfFences++
			}
			if h.ag.Holding() && !holding {
				s.res.HoldBacks++
			}
		}
		if h.armed && s.now.Sub(h.lastPet) >= s.cfg.WatchdogTimeout {
			s.powerOff(h, "hardware watchdog reset: the agent stopped petting it")
			hh := h
			s.after(s.cfg.HostReboot, func() { s.powerOn(hh) })
		}
	}
	for _, h := range s.hosts {
		if s.cpDown {
			break // the store is down: no lease can expire
		}
		if h.leaseAlive && s.now.Sub(h.renewed) >= s.cfg.LeaseTTL {
			s.readStore(h)
			h.leaseAlive = false
			s.step(engine.HostLease{Host: h.id, Alive: false, Since: h.renewed, Lease: h.lease})
		}
	}
	if s.now.Before(s.end) {
		s.after(time.Second, s.heartbeat)
	}
}

// resync sends every host's domain list, staggered, every ResyncEvery.
func (s *Sim) resync(h *host) {
	s.snapshot(h)
	if s.now.Before(s.end) {
		s.after(s.cfg.ResyncEvery, func() { s.resync(h) })
	}
}
