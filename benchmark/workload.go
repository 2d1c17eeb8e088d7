package benchmark

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/vclock"
)

// This file is the engine benchmark's workload: a cluster's life on a virtual clock, as the
// engine's driver would see it. Hosts renew their leases and resync their domain lists,
// guests crash, hang, panic and shut themselves down, users operate VMs through hass (and
// now and then behind its back), and hosts are lost and repaired. Every action the engine
// orders is carried out by the host's agent after a realistic delay and answered the way the
// daemon's executor answers it: an ActionResult stamped with the host's sequence number and
// the state the action left the domain in, next to the libvirt event it caused. The inputs
// are recorded as they are fed to a live engine, so they can be replayed, timed, into a
// fresh engine built the same way (see Replay): the replay does exactly the work the
// recording did, and no generator code runs while the clock is on.

// Shape is a cluster and how long a stretch of its life the workload covers.
type Shape struct {
	VMs, Hosts int
	Window     time.Duration // virtual time covered
	Seed       uint64
}

// The shapes `hass bench` measures by default: 50 VMs per host.
var (
	Small = Shape{VMs: 1000, Hosts: 20, Window: 2 * time.Hour, Seed: 1}
	Large = Shape{VMs: 50000, Hosts: 1000, Window: 30 * time.Second, Seed: 1}
)

func (s Shape) String() string {
	return fmt.Sprintf("%s VMs on %s hosts, %s of virtual time", commas(s.VMs), commas(s.Hosts), s.Window)
}

// Validate names the first bad field.
func (s Shape) Validate() error {
	switch {
	case s.Hosts < 2 || s.Hosts > 10000:
		return fmt.Errorf("hosts %d: want 2 to 10000 (a host loss needs somewhere to go)", s.Hosts)
	case s.VMs < s.Hosts || s.VMs > 1000000:
		return fmt.Errorf("vms %d: want %d (one per host) to 1000000", s.VMs, s.Hosts)
	case s.VMs/s.Hosts > hostMemMiB/vmMemMiB*3/4:
		return fmt.Errorf("%d VMs on %d hosts: at most %d per host leave room to evacuate one", s.VMs, s.Hosts, hostMemMiB/vmMemMiB*3/4)
	case s.Window < 30*time.Second || s.Window > 30*24*time.Hour:
		return fmt.Errorf("window %s: want 30s (a resync of every host, a host loss and its evacuation) to 720h", s.Window)
	}
	return nil
}

// Rates is the workload's mix. Per-VM rates are per hour of a VM's life.
type Rates struct {
	RenewEvery  time.Duration // each host's agent renews its lease (HostLease{Alive: true})
	LeaseTTL    time.Duration // the store expires a lease not renewed for this long
	ResyncEvery time.Duration // each host sends its complete domain list (Snapshot)
	PollEvery   time.Duration // the driver asks NextWake and ticks when it is due (the daemon's TickEvery)
	BusDelay    time.Duration // agent <-> controller, plus up to BusJitter
	BusJitter   time.Duration

	FaultsPerVMHour  float64 // emulator crash 50%, guest panic 15%, guest hang 15%, guest shutdown 10%, I/O error 10%
	OpsPerVMHour     float64 // a user's operation on a running VM (see userOp for the split)
	SignalsPerVMHour float64 // guest agent down and up again 70%, a reboot inside the guest 30%
	HostLossPerHour  float64 // per host: power loss, so lease expiry, fence and evacuation
	FirstHostLoss    time.Duration
	HostDown         time.Duration // power loss to power back
	AgentBoot        time.Duration // power back to the agent renewing its lease and resyncing
	RestartAfter     time.Duration // mean delay before a user starts a VM that was stopped
	ResumeAfter      time.Duration // mean delay before a user (or operator) resumes a paused VM
	RecreateAfter    time.Duration // mean delay before a deleted VM is replaced by a new one
	StartErrProb     float64       // a start fails (qemu refused): the engine retries
	MigrateErrProb   float64       // a migration fails
	IgnoreACPIProb   float64       // a guest ignores shutdown requests (escalated to destroy)
}

// DefaultRates is the mix `hass bench` measures. The per-VM fault and operation rates are
// the simulator's (sim.DefaultConfig); the host loss rate is higher than a healthy
// cluster's so that every run, even a short one, loses and evacuates hosts.
func DefaultRates() Rates {
	return Rates{
		RenewEvery: 2 * time.Second, LeaseTTL: 10 * time.Second, ResyncEvery: 30 * time.Second,
		PollEvery: 200 * time.Millisecond, BusDelay: time.Millisecond, BusJitter: 20 * time.Millisecond,
		FaultsPerVMHour: 0.02, OpsPerVMHour: 0.3, SignalsPerVMHour: 0.05,
		HostLossPerHour: 0.05, FirstHostLoss: 5 * time.Second, HostDown: 30 * time.Second, AgentBoot: 15 * time.Second,
		RestartAfter: 10 * time.Minute, ResumeAfter: 5 * time.Minute, RecreateAfter: 5 * time.Minute,
		StartErrProb: 0.02, MigrateErrProb: 0.05, IgnoreACPIProb: 0.05,
	}
}

const (
	hostMemMiB = 96 * 1024
	vmMemMiB   = 1024
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func hostID(i int) engine.HostID { return engine.HostID(fmt.Sprintf("h%04d", i)) }
func vmID(i int) engine.VMID     { return engine.VMID(fmt.Sprintf("vm%07d", i)) }

// Cluster returns the engine the workload starts from: s.Hosts hosts and s.VMs protected VMs
// spread over them, each seen running once.
func (s Shape) Cluster() *engine.Engine {
	e := engine.New(engine.DefaultConfig())
	for h := range s.Hosts {
		e.Step(t0, engine.AddHost{Host: hostID(h), MemMiB: hostMemMiB})
	}
	for v := range s.VMs {
		h := hostID(v % s.Hosts)
		e.Step(t0, engine.Protect{VM: vmID(v), Host: h, MemMiB: vmMemMiB, Policy: engine.DefaultPolicy()})
		e.Step(t0, engine.Observe{Host: h, VM: vmID(v), Seq: 1, State: engine.DomRunning, Reason: engine.ReasonBooted, At: t0})
	}
	return e
}

// ---- the recording -------------------------------------------------------------------------

// entry is one call the driver made: a Step, or (in == nil) a NextWake poll.
type entry struct {
	at time.Time
	in engine.Input
}

// Recording is a workload as it was fed to a live engine, and what it made the engine do.
type Recording struct {
	Shape   Shape
	Rates   Rates
	Mix     Mix
	entries []entry
	actions int    // actions the engine ordered
	digest  uint64 // of those actions, to check that a replay did the same

	// Set by EngineMix: CPU time of one replay of the inputs, and of one NextWake.
	stepsCPU, pollCPU time.Duration
}

// Inputs is the number of engine inputs (Steps) recorded.
func (r *Recording) Inputs() int { return r.Mix.Inputs }

// Polls is the number of NextWake calls recorded.
func (r *Recording) Polls() int { return r.Mix.wakePolls }

// Replay feeds the recording's inputs to e, which must be r.Shape.Cluster(), and reports
// whether e ordered exactly the actions the recorded engine did. With polls it also makes
// the recorded NextWake calls; without, it leaves them out, which changes nothing else
// (NextWake decides nothing). It is the timed loop of the engine benchmark: nothing but engine
// calls.
func (r *Recording) Replay(e *engine.Engine, polls bool) bool {
	n, d := 0, uint64(0)
	for i := range r.entries {
		en := &r.entries[i]
		if en.in == nil {
			if polls {
				e.NextWake()
			}
			continue
		}
		out := e.Step(en.at, en.in)
		for _, a := range out.Actions {
			n++
			d = digest(d, a)
		}
	}
	return n == r.actions && d == r.digest
}

func digest(d uint64, a engine.Action) uint64 {
	d ^= a.ID*0x9e3779b97f4a7c15 + uint64(a.Kind)<<56 + a.Gen<<32 + uint64(len(a.Host))
	return d*0x100000001b3 + 1
}

// Record runs the workload against a live engine and records it. It also times each Step
// and NextWake by input kind (the Mix's breakdown); the benchmark's figure comes from Replay.
func Record(s Shape, r Rates) (*Recording, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	g := newGen(s, r)
	g.run()
	return g.rec, nil
}

// ---- the simulated cluster -----------------------------------------------------------------

type gdom struct {
	vm     *gvm
	h      *ghost
	pos    int // index in h.doms
	state  engine.DomState
	reason engine.Reason
	hung   bool // the guest hangs: the agent's translator reports running/watchdog until a reset
	gen    int  // bumps on every change: a pending completion checks it
}

type gvm struct {
	id         engine.VMID
	copies     []*gdom
	wants      engine.Desired // what its user wants, as far as the workload knows
	gone       bool
	ignoreACPI bool
}

type ghost struct {
	id         engine.HostID
	doms       []*gdom
	lastSeq    uint64
	up         bool // powered, agent running
	epoch      int  // bumps when it loses power
	renewed    time.Time
	leaseAlive bool // what the controller was last told
}

type gen struct {
	s      Shape
	r      Rates
	rng    *rand.Rand
	now    time.Time
	end    time.Time
	q      vclock.Agenda
	e      *engine.Engine
	hosts  []*ghost
	byHost map[engine.HostID]*ghost
	vms    []*gvm // every VM ever created; deleted ones stay, marked gone
	byVM   map[engine.VMID]*gvm
	rec    *Recording
	m      *Mix
	clock  time.Duration // what reading the clock around a call costs by itself
}

func newGen(s Shape, r Rates) *gen {
	g := &gen{s: s, r: r, rng: rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15)),
		now: t0, end: t0.Add(s.Window), e: s.Cluster(),
		byHost: map[engine.HostID]*ghost{}, byVM: map[engine.VMID]*gvm{},
		rec: &Recording{Shape: s, Rates: r}}
	g.m = &g.rec.Mix
	const n = 10000
	t := time.Now()
	for range n {
		_ = time.Since(time.Now())
	}
	g.clock = time.Since(t) / n
	for i := range s.Hosts {
		h := &ghost{id: hostID(i), up: true, renewed: t0, leaseAlive: true}
		g.hosts = append(g.hosts, h)
		g.byHost[h.id] = h
	}
	for i := range s.VMs {
		v := &gvm{id: vmID(i), ignoreACPI: g.rng.Float64() < r.IgnoreACPIProb}
		g.vms = append(g.vms, v)
		g.byVM[v.id] = v
		g.define(g.hosts[i%s.Hosts], v, engine.DomRunning, engine.ReasonBooted)
	}
	return g
}

func (g *gen) at(t time.Time, fn func()) {
	if t.Before(g.now) {
		t = g.now
	}
	g.q.At(t, fn)
}

func (g *gen) after(d time.Duration, fn func()) { g.at(g.now.Add(d), fn) }

// every calls fn every period, from first on, until the end of the window.
func (g *gen) every(first, period time.Duration, fn func()) {
	var tick func()
	tick = func() {
		fn()
		g.after(period, tick)
	}
	g.after(first, tick)
}

// poisson calls fn at exponentially spaced times, perHour times an hour on average.
func (g *gen) poisson(perHour float64, fn func()) {
	if perHour <= 0 {
		return
	}
	var next func()
	next = func() {
		fn()
		g.after(g.exp(time.Duration(float64(time.Hour)/perHour)), next)
	}
	g.after(g.exp(time.Duration(float64(time.Hour)/perHour)), next)
}

func (g *gen) exp(mean time.Duration) time.Duration {
	return time.Duration(-math.Log(1-g.rng.Float64()) * float64(mean))
}

// dur is a duration spread around base (from half to one and a half times it).
func (g *gen) dur(base time.Duration) time.Duration {
	return base/2 + time.Duration(g.rng.Int64N(int64(base)))
}

func (g *gen) bus() time.Duration {
	return g.r.BusDelay + time.Duration(g.rng.Int64N(int64(g.r.BusJitter)))
}

func (g *gen) run() {
	r, n := g.r, len(g.hosts)
	for i, h := range g.hosts {
		// Each host renews and resyncs on its own phase.
		g.every(time.Duration(i)*r.RenewEvery/time.Duration(n), r.RenewEvery, func() { g.renew(h) })
		g.every(time.Duration(i+1)*r.ResyncEvery/time.Duration(n+1), r.ResyncEvery, func() {
			if h.up {
				g.snapshot(h)
			}
		})
	}
	g.every(r.PollEvery, r.PollEvery, g.poll)
	vms := float64(g.s.VMs)
	g.poisson(r.FaultsPerVMHour*vms, g.fault)
	g.poisson(r.OpsPerVMHour*vms, g.userOp)
	g.poisson(r.SignalsPerVMHour*vms, g.guestSignal)
	if r.HostLossPerHour > 0 {
		g.every(r.FirstHostLoss, time.Duration(float64(time.Hour)/(r.HostLossPerHour*float64(n))), g.hostLoss)
	}
	for g.q.Len() > 0 {
		at, fn := g.q.Next()
		if at.After(g.end) {
			break
		}
		g.now = at
		fn()
	}
}

// ---- the driver: every engine call goes through here -----------------------------------------

func (g *gen) step(in engine.Input) engine.Output {
	g.rec.entries = append(g.rec.entries, entry{at: g.now, in: in})
	k := kindOf(in)
	t := time.Now()
	out := g.e.Step(g.now, in)
	dt := max(time.Since(t)-g.clock, 0)
	g.m.count(k, dt, out)
	for _, a := range out.Actions {
		g.rec.actions++
		g.rec.digest = digest(g.rec.digest, a)
		g.execute(a)
	}
	return out
}

// poll is the daemon's clock: ask the engine when it next has something to do; tick if now.
func (g *gen) poll() {
	g.rec.entries = append(g.rec.entries, entry{at: g.now})
	t := time.Now()
	w := g.e.NextWake()
	g.m.polled(max(time.Since(t)-g.clock, 0))
	if !w.IsZero() && !w.After(g.now) {
		g.step(engine.Tick{})
	}
}

// send puts an agent's message on the bus to the controller.
func (g *gen) send(h *ghost, in engine.Input) {
	if !h.up {
		return
	}
	g.after(g.bus(), func() { g.step(in) })
}

func (g *gen) stamp(h *ghost) uint64 {
	n := uint64(g.now.UnixNano())
	if n <= h.lastSeq {
		n = h.lastSeq + 1
	}
	h.lastSeq = n
	return n
}

// ---- hosts -----------------------------------------------------------------------------------

func (g *gen) renew(h *ghost) {
	if !h.up {
		return
	}
	h.renewed, h.leaseAlive = g.now, true
	g.step(engine.HostLease{Host: h.id, Alive: true})
}

// row is what the agent's translator reports for a domain in a listing.
func row(d *gdom) (engine.DomState, engine.Reason) {
	if d.hung && d.state == engine.DomRunning {
		return engine.DomRunning, engine.ReasonWatchdog
	}
	return d.state, d.reason
}

func (g *gen) snapshot(h *ghost) {
	s := engine.Snapshot{Host: h.id, Seq: g.stamp(h), At: g.now, Domains: make([]engine.DomainStatus, 0, len(h.doms))}
	for _, d := range h.doms {
		st, r := row(d)
		s.Domains = append(s.Domains, engine.DomainStatus{VM: d.vm.id, State: st, Reason: r})
	}
	g.send(h, s)
}

// hostLoss powers a host off: its guests die with no event, its lease runs out, the store
// tells the controller, and the engine fences the host once the self-fence margin passed
// and evacuates it. It comes back HostDown + AgentBoot later.
func (g *gen) hostLoss() {
	var h *ghost
	for range 10 {
		if c := g.hosts[g.rng.IntN(len(g.hosts))]; c.up {
			h = c
			break
		}
	}
	if h == nil {
		return
	}
	g.m.HostLosses++
	h.up = false
	h.epoch++
	for _, d := range h.doms {
		if d.state != engine.DomShutoff {
			d.state, d.reason, d.hung = engine.DomShutoff, engine.ReasonUnknown, false
			d.gen++
		}
	}
	renewed := h.renewed
	g.at(renewed.Add(g.r.LeaseTTL), func() {
		if !h.up && h.renewed.Equal(renewed) && h.leaseAlive {
			h.leaseAlive = false
			g.step(engine.HostLease{Host: h.id, Alive: false, Since: renewed})
		}
	})
	ep := h.epoch
	g.after(g.r.HostDown+g.r.AgentBoot, func() {
		if h.epoch != ep {
			return
		}
		g.m.HostRepairs++
		h.up = true
		g.renew(h)
		g.snapshot(h)
	})
}

// ---- domains ---------------------------------------------------------------------------------

func (g *gen) define(h *ghost, v *gvm, st engine.DomState, r engine.Reason) *gdom {
	d := &gdom{vm: v, h: h, pos: len(h.doms), state: st, reason: r}
	h.doms = append(h.doms, d)
	v.copies = append(v.copies, d)
	return d
}

func (g *gen) undefine(d *gdom) {
	h := d.h
	last := h.doms[len(h.doms)-1]
	h.doms[d.pos], last.pos = last, d.pos
	h.doms = h.doms[:len(h.doms)-1]
	v := d.vm
	for i, c := range v.copies {
		if c == d {
			v.copies = append(v.copies[:i], v.copies[i+1:]...)
			break
		}
	}
	d.gen++
	g.send(h, engine.Observe{Host: h.id, VM: v.id, Seq: g.stamp(h), State: engine.DomAbsent, Reason: engine.ReasonUndefined, At: g.now})
}

// set changes a domain's state and sends the event libvirt emits for it.
func (g *gen) set(d *gdom, st engine.DomState, r engine.Reason) {
	d.state, d.reason, d.hung = st, r, false
	d.gen++
	g.send(d.h, engine.Observe{Host: d.h.id, VM: d.vm.id, Seq: g.stamp(d.h), State: st, Reason: r, At: g.now})
}

func (g *gen) signal(d *gdom, k engine.SignalKind, wd engine.WatchdogAction) {
	g.send(d.h, engine.Signal{Host: d.h.id, VM: d.vm.id, Seq: g.stamp(d.h), Kind: k, Watchdog: wd, At: g.now})
}

func (v *gvm) on(h *ghost) *gdom {
	for _, d := range v.copies {
		if d.h == h {
			return d
		}
	}
	return nil
}

// incoming: the paused copy a live migration starts on its destination.
func (d *gdom) incoming() bool {
	return d.state == engine.DomPaused && d.reason == engine.ReasonMigrated
}

func (d *gdom) upState() bool { return d.state == engine.DomRunning || d.state == engine.DomPaused }

// live is the copy where the VM's guest is up, on a host that is up.
func (v *gvm) live() *gdom {
	for _, d := range v.copies {
		if d.h.up && d.upState() && !d.incoming() {
			return d
		}
	}
	return nil
}

// running is the VM's live copy if it is running.
func (g *gen) running(v *gvm) *gdom {
	if v.gone {
		return nil
	}
	if d := v.live(); d != nil && d.state == engine.DomRunning {
		return d
	}
	return nil
}

// ---- the agent: carrying out the engine's actions ---------------------------------------------

// execute is the agent on the action's host receiving it, checking it is still current (as
// the daemon's executor does), and carrying it out.
func (g *gen) execute(a engine.Action) {
	h := g.byHost[a.Host]
	v := g.byVM[a.VM]
	if h == nil || v == nil {
		g.m.ActionsLost++
		return
	}
	g.after(g.bus(), func() {
		switch {
		case !h.up:
			g.m.ActionsLost++ // the host is down: no answer comes; the engine times it out
		case !g.e.Current(a):
			g.m.ActionsOvertaken++
		default:
			g.carryOut(h, v, a)
		}
	})
}

// reply is the executor's ActionResult. As the daemon's executor does, it lists the host's
// domains once the action returned and answers with the host's stamp and how the action
// left the domain, so the result usually follows the libvirt event the action caused.
func (g *gen) reply(h *ghost, v *gvm, a engine.Action, err string) {
	g.finish(h, g.dur(4*time.Millisecond), func() {
		r := engine.ActionResult{ID: a.ID, Err: err, Host: h.id, Seq: g.stamp(h), State: engine.DomAbsent}
		if d := v.on(h); d != nil {
			r.State, r.Reason = row(d)
		}
		g.m.Answered++
		if err != "" {
			g.m.ActionErrors++
		}
		g.send(h, r)
	})
}

// later runs fn after d, unless the host lost power meanwhile.
func (g *gen) later(h *ghost, d time.Duration, fn func()) {
	ep := h.epoch
	g.after(d, func() {
		if h.epoch == ep && h.up {
			fn()
		}
	})
}

// finish completes an action after d, unless the host lost power meanwhile: then the
// action is lost with it and nobody answers.
func (g *gen) finish(h *ghost, d time.Duration, fn func()) {
	ep := h.epoch
	g.after(d, func() {
		if h.epoch == ep && h.up {
			fn()
			return
		}
		g.m.ActionsLost++
	})
}

func (g *gen) carryOut(h *ghost, v *gvm, a engine.Action) {
	d := v.on(h)
	switch a.Kind {
	case engine.ActStart:
		if d == nil {
			d = g.define(h, v, engine.DomShutoff, engine.ReasonUnknown) // its XML comes from the store
		}
		g.finish(h, g.dur(1500*time.Millisecond), func() {
			switch {
			case d.upState():
			case g.rng.Float64() < g.r.StartErrProb:
				g.reply(h, v, a, "internal error: qemu unexpectedly closed the monitor")
				return
			default:
				if o := v.live(); o != nil && o != d {
					g.m.SplitBrain++
				}
				g.set(d, engine.DomRunning, engine.ReasonBooted)
			}
			g.reply(h, v, a, "")
		})
	case engine.ActDestroy:
		g.finish(h, g.dur(300*time.Millisecond), func() {
			if d != nil && d.upState() {
				g.set(d, engine.DomShutoff, engine.ReasonDestroyed)
			}
			g.reply(h, v, a, "")
		})
	case engine.ActShutdown:
		if d == nil || d.state != engine.DomRunning {
			g.reply(h, v, a, "domain is not running")
			return
		}
		g.reply(h, v, a, "") // the ACPI request was sent; the guest takes its time
		if v.ignoreACPI {
			return
		}
		gen := d.gen
		g.later(h, g.dur(5*time.Second), func() {
			if d.gen == gen && d.state == engine.DomRunning {
				g.set(d, engine.DomShutoff, engine.ReasonShutdownHost)
			}
		})
	case engine.ActReboot:
		if d == nil || d.state != engine.DomRunning {
			g.reply(h, v, a, "domain is not running")
			return
		}
		gen := d.gen
		if g.rng.IntN(2) == 0 { // inside the guest: libvirt reports a reboot event
			g.finish(h, g.dur(3*time.Second), func() {
				if d.gen != gen || d.state != engine.DomRunning {
					g.reply(h, v, a, "domain went down during the reboot")
					return
				}
				g.signal(d, engine.SigReboot, 0)
				g.reply(h, v, a, "")
			})
			return
		}
		g.set(d, engine.DomShutoff, engine.ReasonOwnStop) // hard: the executor's own destroy, then a start
		gen = d.gen
		g.finish(h, g.dur(2*time.Second), func() {
			if d.gen != gen || !g.e.Current(a) {
				g.reply(h, v, a, "reboot overtaken")
				return
			}
			g.set(d, engine.DomRunning, engine.ReasonBooted)
			g.reply(h, v, a, "")
		})
	case engine.ActReset:
		g.finish(h, g.dur(500*time.Millisecond), func() {
			if d == nil || !d.upState() {
				g.reply(h, v, a, "domain is not running")
				return
			}
			g.signal(d, engine.SigReboot, 0)
			d.hung = false
			if d.state == engine.DomPaused {
				g.set(d, engine.DomRunning, engine.ReasonResumed)
			}
			g.reply(h, v, a, "")
		})
	case engine.ActDelete:
		g.finish(h, g.dur(500*time.Millisecond), func() {
			if d := v.on(h); d != nil {
				if d.upState() {
					g.set(d, engine.DomShutoff, engine.ReasonDestroyed)
				}
				g.undefine(d)
			}
			g.reply(h, v, a, "")
			if !v.gone {
				v.gone = true
				g.after(g.exp(g.r.RecreateAfter), g.create)
			}
		})
	case engine.ActMigrate:
		g.migrate(h, v, d, g.byHost[a.Target], a)
	case engine.ActSuspend:
		g.finish(h, g.dur(100*time.Millisecond), func() {
			if d == nil || d.state != engine.DomRunning {
				g.reply(h, v, a, "domain is not running")
				return
			}
			g.set(d, engine.DomPaused, engine.ReasonUser)
			g.reply(h, v, a, "")
		})
	case engine.ActResume:
		g.finish(h, g.dur(100*time.Millisecond), func() {
			if d == nil || d.state != engine.DomPaused {
				g.reply(h, v, a, "domain is not paused")
				return
			}
			g.set(d, engine.DomRunning, engine.ReasonResumed)
			g.reply(h, v, a, "")
		})
	default:
		g.reply(h, v, a, "not supported here")
	}
}

// migrate is a live migration as libvirt does it: a paused incoming copy on the destination,
// then the switch-over (destination resumes, source stops), or an abort.
func (g *gen) migrate(src *ghost, v *gvm, d *gdom, dst *ghost, a engine.Action) {
	if d == nil || d.state != engine.DomRunning {
		g.reply(src, v, a, "domain is not running")
		return
	}
	if dst == nil || !dst.up {
		g.reply(src, v, a, "cannot reach the destination's libvirt")
		return
	}
	nd := v.on(dst)
	if nd == nil {
		nd = g.define(dst, v, engine.DomShutoff, engine.ReasonUnknown)
	}
	g.set(nd, engine.DomPaused, engine.ReasonMigrated)
	gen, ngen := d.gen, nd.gen
	fail := g.rng.Float64() < g.r.MigrateErrProb
	g.finish(src, g.dur(4*time.Second), func() {
		ok := d.gen == gen && d.state == engine.DomRunning && dst.up && nd.gen == ngen && !fail
		if !ok {
			if dst.up && nd.gen == ngen {
				g.set(nd, engine.DomShutoff, engine.ReasonFailed)
			}
			g.reply(src, v, a, "migration failed")
			return
		}
		g.set(nd, engine.DomRunning, engine.ReasonMigrated)
		g.set(d, engine.DomShutoff, engine.ReasonMigrated)
		g.reply(src, v, a, "")
	})
}

// create defines a new VM on a random host that is up, and protects it, as `hass up
// --protect-all` does for a domain it has not seen: Protect, then what it saw.
func (g *gen) create() {
	h := g.hosts[g.rng.IntN(len(g.hosts))]
	if !h.up {
		g.after(time.Minute, g.create)
		return
	}
	v := &gvm{id: vmID(len(g.vms)), ignoreACPI: g.rng.Float64() < g.r.IgnoreACPIProb}
	g.vms = append(g.vms, v)
	g.byVM[v.id] = v
	d := g.define(h, v, engine.DomRunning, engine.ReasonBooted)
	g.m.Created++
	g.step(engine.Protect{VM: v.id, Host: h.id, MemMiB: vmMemMiB, Policy: engine.DefaultPolicy()})
	g.step(engine.Observe{Host: h.id, VM: v.id, Seq: g.stamp(h), State: d.state, Reason: d.reason, At: g.now})
}

// ---- faults, users, guests -----------------------------------------------------------------

func (g *gen) pickVM() *gvm { return g.vms[g.rng.IntN(len(g.vms))] }

// fault strikes a random running guest or its emulator.
func (g *gen) fault() {
	v := g.pickVM()
	d := g.running(v)
	if d == nil {
		return
	}
	switch p := g.rng.IntN(100); {
	case p < 50:
		g.m.Faults[faultCrash]++
		g.set(d, engine.DomShutoff, engine.ReasonFailed) // qemu killed, OOM
	case p < 65:
		g.m.Faults[faultPanic]++
		g.set(d, engine.DomCrashed, engine.ReasonPanicked)
	case p < 80:
		// The guest hangs and its watchdog fires with action none: only hass can reset it.
		g.m.Faults[faultHang]++
		d.hung = true
		d.gen++
		g.signal(d, engine.SigWatchdog, engine.WatchdogNone)
	case p < 90:
		// The guest shuts itself down; the default policy honours it, so its user starts it
		// again later.
		g.m.Faults[faultGuestOff]++
		v.wants = engine.WantStopped
		g.set(d, engine.DomShutoff, engine.ReasonShutdownGuest)
		g.followUp(v, engine.OpStart, g.r.RestartAfter)
	default:
		// A disk error pauses it; hass alerts and does not restart it; an operator fixes the
		// storage and resumes it.
		g.m.Faults[faultIOError]++
		g.signal(d, engine.SigIOError, 0)
		g.set(d, engine.DomPaused, engine.ReasonIOError)
		g.followUp(v, engine.OpResume, g.r.ResumeAfter)
	}
}

// userOp is a user doing something to a random running VM: through hass's API, or (a virsh
// destroy) behind its back.
func (g *gen) userOp() {
	v := g.pickVM()
	d := g.running(v)
	if d == nil || v.wants != engine.WantRunning {
		return
	}
	var op engine.OpKind
	switch p := g.rng.IntN(100); {
	case p < 30:
		op = engine.OpReboot
	case p < 50:
		op = engine.OpMigrate // to a host the engine chooses: placement
	case p < 65:
		op = engine.OpSuspend
	case p < 75:
		op = engine.OpShutdown
	case p < 85:
		op = engine.OpStop
	case p < 90:
		op = engine.OpDelete
	default:
		g.m.Virsh++
		v.wants = engine.WantStopped
		g.set(d, engine.DomShutoff, engine.ReasonDestroyed)
		g.followUp(v, engine.OpStart, g.r.RestartAfter)
		return
	}
	g.request(v, op)
}

// request is a user's operation through hass, and the user's follow-up: a stopped VM is
// started again later, a suspended one resumed, a deleted one replaced.
func (g *gen) request(v *gvm, op engine.OpKind) {
	prev := v.wants
	switch op {
	case engine.OpStart, engine.OpResume:
		v.wants = engine.WantRunning
	case engine.OpStop, engine.OpShutdown:
		v.wants = engine.WantStopped
	case engine.OpSuspend:
		v.wants = engine.WantPaused
	case engine.OpDelete:
		v.wants = engine.WantAbsent
	}
	g.m.Ops[op]++
	out := g.step(engine.Request{Op: op, VM: v.id, Source: engine.SrcAPI})
	if out.Err != nil {
		g.m.Refused++
		v.wants = prev
		return
	}
	switch op {
	case engine.OpStop, engine.OpShutdown:
		g.followUp(v, engine.OpStart, g.r.RestartAfter)
	case engine.OpSuspend:
		g.followUp(v, engine.OpResume, g.r.ResumeAfter)
	}
}

func (g *gen) followUp(v *gvm, op engine.OpKind, mean time.Duration) {
	want := v.wants
	g.after(g.exp(mean), func() {
		if v.gone || v.wants != want {
			return
		}
		if op == engine.OpResume {
			if d := v.live(); d == nil || d.state != engine.DomPaused {
				return
			}
		}
		g.request(v, op)
	})
}

// guestSignal: a guest's agent goes away and comes back, or the guest reboots itself.
func (g *gen) guestSignal() {
	v := g.pickVM()
	d := g.running(v)
	if d == nil {
		return
	}
	if g.rng.IntN(10) < 3 {
		g.signal(d, engine.SigReboot, 0)
		return
	}
	g.signal(d, engine.SigAgentDown, 0)
	gen := d.gen
	g.later(d.h, g.dur(30*time.Second), func() {
		if d.gen == gen {
			g.signal(d, engine.SigAgentUp, 0)
		}
	})
}

// ParseShape reads VMS/HOSTS/WINDOW, such as 50000/1000/30s, as hass bench's --shape takes it.
func ParseShape(v string) (Shape, error) {
	f := strings.Split(v, "/")
	if len(f) != 3 {
		return Shape{}, fmt.Errorf("shape %q: want VMS/HOSTS/WINDOW, such as 50000/1000/30s", v)
	}
	s := Shape{Seed: 1}
	var err error
	if s.VMs, err = strconv.Atoi(f[0]); err != nil {
		return Shape{}, fmt.Errorf("shape %q: vms: %w", v, err)
	}
	if s.Hosts, err = strconv.Atoi(f[1]); err != nil {
		return Shape{}, fmt.Errorf("shape %q: hosts: %w", v, err)
	}
	if s.Window, err = time.ParseDuration(f[2]); err != nil {
		return Shape{}, fmt.Errorf("shape %q: window: %w", v, err)
	}
	if err := s.Validate(); err != nil {
		return Shape{}, fmt.Errorf("shape %q: %w", v, err)
	}
	return s, nil
}
