// Package agent is the per-host part of hass: it turns the hypervisor's events and domain
// lists into reports for the controller (observations with this host's sequence stamps,
// signals, snapshots, action results), carries out the controller's orders only while they
// are current, keeps the host's lease, fences the host itself when the rest of the cluster
// could be restarting its VMs, and pets the watchdog.
//
// Like the engine it decides and never does I/O: every call passes the time, and what the
// agent wants done goes through its Env, a set of one-line delegations (in the manner of
// pve-ha-manager's Env.pm). The real agent runs it over libvirt, etcd and the system clock;
// the simulator over its simulated hypervisor, store and virtual clock, so that both run the
// same agent. It is not safe for concurrent use: its runner serialises calls.
//
// # Self-fencing, and why HA must not cause an outage: the majority rule
//
// An agent that cannot renew its lease for SelfFenceAfter (shorter than the lease's TTL)
// destroys its protected domains before the lease can expire, because once it expires the
// controller may start them elsewhere. But when the control plane is lost for most of the
// cluster (etcd, or every controller) nobody can be restarting anything, and a fence would
// only turn a control-plane outage into a VM outage. So hosts tell each other, over their
// own network, whether they hold their lease (Heartbeat), and both sides follow one rule:
//
//   - The agent holds back its fence while this host and the members it hears from (within
//     PeerTimeout) whose heartbeat says they hold no lease are a strict majority of the
//     cluster's members. As soon as they no longer are (a peer regained its lease, or is no
//     longer heard), it fences, after ReleaseGrace at most: the time its own store client
//     may take to reconnect when the control plane returns for everyone.
//   - The controller (package engine) declares a host fenced by its lease's expiry, and so
//     restarts its VMs elsewhere, only while the hosts without a live lease are not a strict
//     majority of its members (the hosts it has not fenced), and only once that has held for
//     a settle time longer than PeerTimeout plus a heartbeat period plus ReleaseGrace plus
//     the time a fence takes, so that an agent holding back on heartbeats that were about to
//     go stale has fenced by then. An IPMI-confirmed power-off needs no such wait: that host runs nothing.
//
// Why it is safe: the peers an agent counts really have no lease (a heartbeat says the
// sender's most recent renewal attempt failed; SelfFenceAfter is longer than a renewal
// period plus a heartbeat period, so by the time an agent decides, every peer has tried to
// renew since the store was lost), so while the agent holds back, the controller too sees a
// strict majority of hosts without a lease, out of all the members or fewer (it does not
// count the hosts it fenced): it evacuates nobody. A peer that is not heard from is not
// counted, so a dead host never helps anybody hold back, and a host cut off alone finds
// itself in a minority and fences, as before. A peer whose heartbeat says it fenced itself is
// not counted either: it runs nothing, and the controller no longer counts it as a member
// once it has declared it fenced, so counting it could let an agent hold back while the
// controller sees no majority. The agent counts over all the members the store lists,
// fenced or not, which is at least the controller's count: it holds back only where the
// controller must see a majority too.
//
// What it buys: the control plane lost everywhere, or reachable only from a minority of the
// hosts, kills nothing; and with three hosts or more, one host dying while the control plane
// is lost does not make its peers fence themselves (they are still a majority). Its VMs are
// restarted once the control plane is back. A cluster of one host never fences itself:
// nobody else could start its VMs. The price: with two hosts, a host whose peer is silent
// cannot tell a dead peer from one that carries on with the store, and fences (safe, not
// available), as does every host once a majority of the members is dead or cut off (a
// quorum cannot be told from a partition); asking the silent host's BMC whether it is
// powered off would tell the two apart (the fencing work).
//
// # A restarted agent
//
// An agent process that crashed and restarts must not believe it renewed just now: the
// controller counts from the lease its predecessor held, and a migration may have landed
// here while no agent watched (vm32155). So it resumes from what the predecessor kept on
// the host (Past: the last renewal, the fence) and, before it takes a lease of its own, its
// runner asks the store about the predecessor's lease and tells it (Resumed):
//
//  1. The store answers and the old lease is alive: the host was never lost, nothing was
//     started elsewhere. No fence; the runner keeps the host's liveness key alive without a
//     gap (it renews the old lease, then takes a new one or keeps the old), a renewal.
//  2. The store answers and the old lease has expired, or is unknown (none on record): the
//     controller may have declared the host fenced and be starting its VMs elsewhere. The
//     agent fences at once, with no hold-back, before the new lease is granted, so before the
//     host can report itself up.
//  3. The store does not answer: the rule of any agent that cannot renew applies, counted
//     from the predecessor's last renewal: it fences SelfFenceAfter after it, unless the
//     majority rule holds it back. Once the store answers, 1 or 2 applies.
//
// A predecessor's fence stands until a lease is held again (1, or a new lease after 2): the
// agent stays fenced, and at its first Tick, unless Resumed came first, it destroys the
// protected domains that started running since (no hold-back: the host was fenced). A first
// start (no Past) has nothing to fence.
package agent

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/lifecycle"
)

// Config tunes one agent.
type Config struct {
	Host engine.HostID
	// SelfFenceAfter: no lease renewal for this long and the agent fences itself (unless the
	// majority rule holds it back). It must be shorter than the lease's TTL by more than
	// the time a fence takes.
	SelfFenceAfter time.Duration
	// PeerTimeout: a peer whose last heartbeat is older than this is not heard from.
	PeerTimeout time.Duration
	// ReleaseGrace: an agent that was holding back its fence (the control plane lost) and
	// finds that the hosts without a lease are no longer a majority goes on trying its lease
	// this long before it fences. When the control plane returns, every agent's store client
	// reconnects, some a few hundred milliseconds after the others: without it, the last
	// one saw its peers renewed and itself not, and killed its VMs for nothing. The
	// controller's settle time must cover it (see the majority rule). 0: none.
	ReleaseGrace time.Duration
}

// DefaultConfig is what hass runs with for a 10 s lease.
func DefaultConfig(host engine.HostID) Config {
	return Config{Host: host, SelfFenceAfter: 7 * time.Second, PeerTimeout: 3 * time.Second}
}

// Row is one domain as the hypervisor lists it, in libvirt's numeric vocabulary.
type Row struct {
	Name          string
	State, Reason int
}

// Heartbeat is what hosts tell each other over their own network, every second or so.
type Heartbeat struct {
	From    engine.HostID
	At      time.Time // the sender's clock; receivers use their own time of arrival
	LeaseOK bool      // the sender's most recent lease renewal attempt succeeded: it reaches the store
	Fenced  bool      // the sender has fenced itself
}

// Outcome is how an order went, as the executor reports it.
type Outcome struct {
	Err error
	// Unreached: the hypervisor could not be reached at all; nothing was done.
	Unreached bool
	// Row is the domain after the order, when the executor could list it; Absent says the
	// listing worked and the domain is not defined.
	Row    *Row
	Absent bool
}

// Env is the world around an agent. Who writes and who reads is said on each method.
type Env interface {
	// Report sends a report to the controller. Real: written to etcd under this host's
	// prefix, which the leading controller watches. Simulated: the bus and the store.
	Report(in engine.Input)
	// Current says whether an order is still wanted: its VM's intent generation and the
	// leader's term, read from the store (a remote agent cannot ask the controller's memory).
	Current(a engine.Action) bool
	// Execute carries out an order on this host's hypervisor (see Carry) and then calls done
	// with the time and how it went, in the agent's runner (possibly later: a start takes
	// time).
	Execute(a engine.Action, done func(now time.Time, o Outcome))
	// Protected lists the VMs the store says are protected (what a self-fence destroys).
	Protected() []engine.VMID
	// Destroy kills a domain at once, for a self-fence. It reports false only when the
	// hypervisor says the domain was not running here (or is not defined): the fence did
	// not stop it.
	Destroy(vm engine.VMID) bool
	// Members lists the cluster's hosts, as last read from the store.
	Members() []engine.HostID
	// Heard returns the last heartbeat this host received from peer over the hosts' own
	// network, and when it arrived (this host's clock); ok is false if none ever did.
	Heard(peer engine.HostID) (hb Heartbeat, at time.Time, ok bool)
	// PetWatchdog tells the watchdog (hardware, softdog, or a stand-in outside the host)
	// that the agent is alive; a host whose agent stops petting it is reset.
	PetWatchdog()
	// SendHeartbeat sends a heartbeat to every peer over the hosts' own network.
	SendHeartbeat(hb Heartbeat)
	// Log writes a line of the agent's log (scenario logs show them next to the controller's).
	Log(format string, args ...any)
	// Remember keeps what the next agent process on this host must know (see Past), at
	// every renewal that succeeded and every fence and unfence. Real: a small file on the
	// host's disk, written in the background; simulated: the host's.
	Remember(p Past)
}

// Past is what the agent process that ran on this host before knew, kept on the host (see
// Env.Remember) for the next one: a process that crashed and restarts must not believe it
// renewed its lease just now, nor forget that it had fenced the host. The controller counts
// from the lease the last process renewed: once it has expired it may be starting this
// host's VMs elsewhere, while a migration that landed here as the agent was down, or a
// user's start, runs here unseen by any agent (seed 1 at 1,000 hosts, vm32155).
type Past struct {
	// Renewed is the last lease renewal that succeeded; zero: unknown (its record was
	// lost), taken as long ago.
	Renewed time.Time
	// Fenced: it had fenced the host, and no renewal undid that since.
	Fenced bool
	// Holding: it was holding back its fence (the majority rule), and no renewal or fence
	// ended that since.
	Holding bool
	// Stops: who stopped each domain of this host that is down, when its translator knew
	// better than libvirt's shutoff reason (the guest or the host shut it down, its fence,
	// its watchdog, hass's executor as a step of an order), until it is up again. The next
	// process reports those stops as this one would have, never as a user's: a migration
	// that landed on a fenced host, destroyed there by the fence, then an agent crash, was
	// taken for a user's destroy and never restarted (seed 2 at 1,000 hosts x 8 h); so were
	// a hard reboot cut by an agent crash and a guest's own shutdown (its policy: restart)
	// heard just before one (seed 2 at 1,000 hosts x 24 h). The fence's and the executor's
	// are kept before their destroy.
	Stops map[engine.VMID]engine.Reason
}

// Agent is one host's agent.
type Agent struct {
	cfg     Config
	env     Env
	tr      *lifecycle.Translator
	lastSeq uint64
	renewed time.Time // the last lease renewal that succeeded
	failing bool      // the most recent renewal attempt failed
	fenced  bool
	holding bool // holding back a fence: see the majority rule
	// releasing: when the majority rule stopped holding the fence back while holding (zero:
	// it has not); the fence waits ReleaseGrace from then, unless the lease is renewed.
	releasing time.Time
	// resuming: resumed from a Past (New), and not yet told what the store says of the
	// lease the last process held (Resumed); refence: the predecessor had fenced, and what
	// started running since must go at the first Tick unless Resumed came first.
	resuming, refence bool
	// pastHolding: the process before this one was holding back its fence when it ended.
	pastHolding bool
	// stops: see Past (never changed in place: a Past handed to Remember shares it).
	stops map[engine.VMID]engine.Reason
}

// New returns an agent that has just started: it owes a resync (Listed) and a renewal.
// past is what the host kept of the agent process that ran there before (nil: none ever
// did, a first start): the agent takes its last renewal and its fence as its own, and owes
// Resumed before its first renewal (see "A restarted agent" above).
func New(cfg Config, env Env, now time.Time, past *Past) *Agent {
	a := &Agent{cfg: cfg, env: env, tr: lifecycle.NewTranslator(), renewed: now}
	if past != nil {
		a.renewed, a.fenced = past.Renewed, past.Fenced
		a.resuming, a.refence, a.pastHolding = true, past.Fenced, past.Holding
		a.stops = maps.Clone(past.Stops)
		for vm, r := range a.stops {
			a.tr.Stopper(string(vm), r)
		}
	}
	return a
}

// Resumed tells an agent resumed from a Past (New) what the store says, as of now, of the
// lease the last agent process on this host held, before this one takes a lease of its own.
// alive: the store still had it and has just renewed it, so the controller never found the
// host lost: it is a renewal (LeaseRenewed), nothing is fenced. Not alive (expired, or no
// lease on record): the controller may have declared the host fenced and started its VMs
// elsewhere, so the agent fences at once, holding back for no majority (no agent ran here
// to hold back as the lease expired), and the new lease is granted only after. Only the
// first call counts; a renewal before any (LeaseRenewed) counts as Resumed(now, false).
func (a *Agent) Resumed(now time.Time, alive bool) {
	if !a.resuming {
		return
	}
	a.resuming, a.refence = false, false
	if alive {
		a.LeaseRenewed(now)
		return
	}
	if a.alone() {
		// No other host could have started its VMs (hass up): nothing to fence, as an agent
		// alone in its cluster never fences itself.
		return
	}
	if a.pastHolding && a.holding && !a.fenced && a.stillHolding(now) {
		// The process before this one held back its fence as the lease expired, and this one
		// has held it back since (a loss of the control plane: this host and the peers it
		// hears without a lease are a majority). By the same rule the controller declared
		// nobody fenced by lease expiry meanwhile: as for an agent that held back and never
		// crashed, the new lease ends the hold-back, and nothing is fenced. (The moments
		// between the two processes are the watchdog's: a host whose agent stays dead is
		// reset.)
		a.env.Log("the lease its last agent process held expired while it held back its fence, and this one has held it back since: not fencing")
		return
	}
	a.fenced, a.holding = true, false
	a.remember(Past{Renewed: a.renewed, Fenced: true})
	vms := a.protected()
	a.env.Log("fencing this host: the lease its last agent process held is not alive (no lease renewal for %s), the controller may be starting its VMs elsewhere; destroying %d protected domains", a.since(now), len(vms))
	a.destroy(vms)
}

// Fenced reports whether the agent has fenced its host and not regained its lease since. A
// fenced host runs no protected domain: one that starts running there (a user's start or
// migration behind hass's back) is destroyed as the fence destroyed the others.
func (a *Agent) Fenced() bool { return a.fenced }

// stamp is this host's next observation stamp: its clock, strictly increasing.
func (a *Agent) stamp(now time.Time) uint64 {
	n := uint64(now.UnixNano())
	if n <= a.lastSeq {
		n = a.lastSeq + 1
	}
	a.lastSeq = n
	return n
}

// Stamp returns a new observation stamp, for a resync: take it before listing the domains,
// so that any event after the listing is newer than the list.
func (a *Agent) Stamp(now time.Time) uint64 { return a.stamp(now) }

// Event handles one hypervisor event: translated, stamped and reported.
func (a *Agent) Event(now time.Time, ev lifecycle.Event) {
	r := a.tr.Event(ev)
	if r.Skip {
		return
	}
	vm := engine.VMID(ev.Domain)
	if r.Signal {
		a.env.Report(engine.Signal{Host: a.cfg.Host, VM: vm, Seq: a.stamp(now), Kind: r.Sig, Watchdog: r.WD, At: now})
		return
	}
	seq := a.stamp(now)
	if r.State == engine.DomShutoff {
		a.tr.Stopped(ev.Domain, seq)
	}
	a.env.Report(engine.Observe{Host: a.cfg.Host, VM: vm, Seq: seq, State: r.State, Reason: r.Reason, At: now})
	a.noteStop(vm, r.State, r.Reason)
	if a.fenced && r.State == engine.DomRunning && slices.Contains(a.env.Protected(), vm) {
		// The fence holds until the lease is back: the cluster may be running this VM
		// elsewhere already (a user started it here, or migrated it here, behind hass's back).
		a.env.Log("%s runs on this host while it is fenced: destroying it", vm)
		a.fenceVM(vm)
	}
}

// fenceVM destroys vm's domain, its stop marked as the fence's: only if it ran. The mark is
// kept on the host before the destroy (a crash in between must not lose it).
func (a *Agent) fenceVM(vm engine.VMID) {
	undo := a.tr.Fencing(string(vm))
	was, had := a.stops[vm]
	a.setStop(vm, engine.ReasonFenced, true)
	if !a.env.Destroy(vm) {
		undo()
		a.setStop(vm, was, had)
	}
}

// noteStop keeps who stopped vm as the translator read it (a state it reports): a stop
// whose reason libvirt alone cannot give, or none (up, gone, or stopped otherwise).
func (a *Agent) noteStop(vm engine.VMID, st engine.DomState, r engine.Reason) {
	a.setStop(vm, r, st == engine.DomShutoff && lifecycle.KeptStop(r))
}

// setStop keeps r as who stopped vm (keep) or drops what is kept of vm, and has the host
// keep it if that changed.
func (a *Agent) setStop(vm engine.VMID, r engine.Reason, keep bool) {
	was, had := a.stops[vm]
	if keep && had && was == r || !keep && !had {
		return
	}
	m := maps.Clone(a.stops)
	if keep {
		if m == nil {
			m = map[engine.VMID]engine.Reason{}
		}
		m[vm] = r
	} else {
		delete(m, vm)
	}
	a.stops = m
	a.remember(Past{Renewed: a.renewed, Fenced: a.fenced, Holding: a.holding})
}

// remember hands p to Env.Remember with who stopped the host's down domains.
func (a *Agent) remember(p Past) {
	p.Stops = a.stops
	a.env.Remember(p)
}

// Listed reports a complete domain list taken after stamp seq (a resync).
func (a *Agent) Listed(now time.Time, seq uint64, rows []Row) {
	snap := engine.Snapshot{Host: a.cfg.Host, Seq: seq, At: now, Domains: make([]engine.DomainStatus, 0, len(rows))}
	for _, r := range rows {
		st, why := a.tr.Listed(r.Name, r.State, r.Reason, seq)
		if len(a.stops) > 0 || lifecycle.KeptStop(why) {
			a.noteStop(engine.VMID(r.Name), st, why)
		}
		snap.Domains = append(snap.Domains, engine.DomainStatus{VM: engine.VMID(r.Name), State: st, Reason: why})
	}
	a.env.Report(snap)
}

// Row translates one listed domain, as a snapshot row would read.
func (a *Agent) Row(r Row) (engine.DomState, engine.Reason) {
	return a.tr.Row(r.Name, r.State, r.Reason)
}

// Order carries out an order of the controller unless it is no longer current, and reports
// how it went, with how it left the domain.
func (a *Agent) Order(now time.Time, act engine.Action) {
	if act.Host != a.cfg.Host {
		a.env.Log("action %d (%s %s) is for %s, not this host: ignored", act.ID, act.Kind, act.VM, act.Host)
		return
	}
	if a.fenced {
		a.env.Log("action %d (%s %s) dropped: this host has fenced itself", act.ID, act.Kind, act.VM)
		return
	}
	if !a.env.Current(act) {
		a.env.Log("action %d (%s %s) dropped: overtaken by a newer intent", act.ID, act.Kind, act.VM)
		return
	}
	a.env.Execute(act, func(now time.Time, o Outcome) { a.done(now, act, o) })
}

func (a *Agent) done(now time.Time, act engine.Action, o Outcome) {
	res := engine.ActionResult{ID: act.ID, Host: a.cfg.Host, Seq: a.stamp(now), Unreached: o.Unreached}
	if o.Err != nil {
		res.Err = o.Err.Error()
	}
	switch {
	case o.Row != nil:
		res.State, res.Reason = a.tr.Row(o.Row.Name, o.Row.State, o.Row.Reason)
	case o.Absent:
		res.State = engine.DomAbsent
	}
	a.env.Report(res)
}

// GuestFailed reports a guest layer's verified failure for vm (package guest found it:
// engine.SigGuestHung or engine.SigGuestNetDown), stamped like every report of this host. A
// fenced host reports nothing: it runs no protected VM.
func (a *Agent) GuestFailed(now time.Time, vm engine.VMID, kind engine.SignalKind) {
	if a.fenced {
		return
	}
	a.env.Report(engine.Signal{Host: a.cfg.Host, VM: vm, Seq: a.stamp(now), Kind: kind, At: now})
}

// OwnStop tells the agent that its executor is about to stop vm itself as one step of an
// order (a hard reboot done as destroy and start), so that stop is not read as a user's.
// It is kept on the host before the stop (Past.Stops).
func (a *Agent) OwnStop(vm engine.VMID) {
	a.tr.OwnStop(string(vm))
	a.setStop(vm, engine.ReasonOwnStop, true)
}

// LeaseRenewed records a successful renewal. An agent that had fenced itself is back and owes
// a resync.
func (a *Agent) LeaseRenewed(now time.Time) {
	if a.resuming {
		a.Resumed(now, false) // a new lease, the old one's fate unknown: see Resumed
	}
	a.renewed, a.failing = now, false
	if a.fenced {
		// What it fenced stays reported as fenced (a crash to recover), never as a user's stop.
		a.env.Log("lease renewed: no longer fenced")
		a.fenced = false
	}
	if a.holding {
		a.env.Log("lease renewed: the control plane is back")
		a.holding = false
	}
	a.releasing = time.Time{}
	a.remember(Past{Renewed: now})
}

// LeaseFailed records a renewal attempt that failed: the store could not be reached.
func (a *Agent) LeaseFailed(now time.Time) { a.failing = true }

// Tick runs every second or so: it fences the host when the lease is overdue and the rest of
// the cluster could be acting (see the majority rule), pets the watchdog, and sends this
// host's heartbeat.
func (a *Agent) Tick(now time.Time) {
	overdue := a.decide(now)
	a.env.PetWatchdog()
	a.env.SendHeartbeat(Heartbeat{From: a.cfg.Host, At: now, LeaseOK: !a.failing && !overdue, Fenced: a.fenced})
}

// decide fences the host when the lease is overdue and the majority rule does not hold the
// fence back, and says whether the lease is overdue.
func (a *Agent) decide(now time.Time) (overdue bool) {
	overdue = now.Sub(a.renewed) >= a.cfg.SelfFenceAfter
	if a.refence {
		a.refence = false
		vms := a.protected()
		a.env.Log("this host's last agent process had fenced it, and no lease renewal since: destroying its %d protected domains again (any that started running here since)", len(vms))
		a.destroy(vms)
	}
	if overdue && !a.fenced {
		if a.holding && a.stillHolding(now) {
			// Held back, and still a majority: nothing new to say (holdBack's explanation
			// names every member, a thousand of them in a large cluster, every second).
			a.releasing = time.Time{}
		} else if why, hold := a.holdBack(now); hold {
			a.releasing = time.Time{}
			if !a.holding {
				a.env.Log("no lease renewal for %s, but %s: not fencing", a.since(now), why)
				a.holding = true
				a.remember(Past{Renewed: a.renewed, Holding: true})
			}
		} else if a.holding && a.cfg.ReleaseGrace > 0 && (a.releasing.IsZero() || now.Sub(a.releasing) < a.cfg.ReleaseGrace) {
			// The others hold leases again: the control plane is back, for them at least.
			// Still holding, so the lease is tried each tick, for ReleaseGrace at most.
			if a.releasing.IsZero() {
				a.releasing = now
				a.env.Log("no lease renewal for %s and %s: trying this host's lease for %s more before fencing", a.since(now), why, a.cfg.ReleaseGrace)
			}
		} else {
			a.fence(now, why)
		}
	}
	return overdue
}

// Holding reports whether the agent is holding back a fence (its lease is overdue, and it and
// the peers it hears without a lease are a majority).
func (a *Agent) Holding() bool { return a.holding }

// stillHolding is holdBack's verdict without its explanation.
func (a *Agent) stillHolding(now time.Time) bool {
	n, count, self := 0, 1, false
	for _, m := range a.env.Members() {
		n++
		if m == a.cfg.Host {
			self = true
			continue
		}
		hb, at, ok := a.env.Heard(m)
		if ok && now.Sub(at) <= a.cfg.PeerTimeout && !hb.Fenced && !hb.LeaseOK {
			count++
		}
	}
	if !self {
		n++
	}
	return n == 1 || 2*count > n
}

// holdBack applies the majority rule: this host and the members heard from within
// PeerTimeout whose heartbeat says they hold no lease (and have not fenced themselves) must
// be a strict majority of the members. why explains the verdict either way.
func (a *Agent) holdBack(now time.Time) (why string, hold bool) {
	members := a.env.Members()
	n, self := 0, false
	var without, holders, silent []string
	for _, m := range members {
		if m == a.cfg.Host {
			self = true
			n++
			continue
		}
		n++
		hb, at, ok := a.env.Heard(m)
		switch {
		case !ok || now.Sub(at) > a.cfg.PeerTimeout:
			silent = append(silent, string(m))
		case hb.Fenced:
			// it runs nothing: not counted
		case hb.LeaseOK:
			holders = append(holders, string(m))
		default:
			without = append(without, string(m))
		}
	}
	if !self {
		n++ // this host is a member, whatever the list read last says
	}
	if n == 1 {
		return "no other host could start its VMs", true
	}
	count := 1 + len(without)
	if 2*count > n {
		if len(without) == n-1 {
			if n == 2 {
				return "the other host holds no lease either (the control plane is lost everywhere)", true
			}
			return fmt.Sprintf("none of the %d other hosts holds a lease either (the control plane is lost everywhere)", n-1), true
		}
		return fmt.Sprintf("%d of the %d members (this one and %s) are heard without a lease: a majority, so the cluster cannot restart anything", count, n, strings.Join(without, ", ")), true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d of the %d members without a lease (this one", count, n)
	if len(without) > 0 {
		fmt.Fprintf(&b, " and %s", strings.Join(without, ", "))
	}
	b.WriteString("), no majority")
	switch {
	case len(holders) == 1:
		fmt.Fprintf(&b, ": %s holds its lease and the cluster may be restarting this host's VMs", holders[0])
	case len(holders) > 1:
		fmt.Fprintf(&b, ": %s hold their leases and the cluster may be restarting this host's VMs", strings.Join(holders, ", "))
	case len(silent) == 1:
		fmt.Fprintf(&b, ": %s is not heard from and may hold its lease", silent[0])
	case len(silent) > 1:
		fmt.Fprintf(&b, ": %s are not heard from and may hold their leases", strings.Join(silent, ", "))
	}
	return b.String(), false
}

// fence destroys every protected domain of this host, before the lease can expire.
func (a *Agent) fence(now time.Time, why string) {
	a.fenced, a.holding, a.releasing = true, false, time.Time{}
	a.remember(Past{Renewed: a.renewed, Fenced: true})
	vms := a.protected()
	a.env.Log("fencing this host: no lease renewal for %s and %s; destroying %d protected domains", a.since(now), why, len(vms))
	a.destroy(vms)
}

// alone says whether this host is known to be the cluster's only member (members not
// known: not alone).
func (a *Agent) alone() bool {
	members := a.env.Members()
	for _, m := range members {
		if m != a.cfg.Host {
			return false
		}
	}
	return len(members) > 0
}

// since says how long ago the last renewal was, for the log.
func (a *Agent) since(now time.Time) string {
	if a.renewed.IsZero() {
		return "an unknown time (what this host kept of its last agent process was lost)"
	}
	return now.Sub(a.renewed).Round(time.Millisecond).String()
}

// protected lists the protected VMs, in name order.
func (a *Agent) protected() []engine.VMID {
	vms := slices.Clone(a.env.Protected())
	slices.Sort(vms)
	return vms
}

// destroy destroys the domains of vms for a fence.
func (a *Agent) destroy(vms []engine.VMID) {
	for _, vm := range vms {
		a.fenceVM(vm)
	}
}
