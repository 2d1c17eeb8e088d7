// Package daemon is `hass up`: everything for one host in one process — the decision
// engine, this host's agent (package agent, the same code the simulator runs: it translates
// libvirt's events, stamps and reports them, and carries out orders through agent.Carry), the
// libvirt driver and its event stream, the state in etcd, and the HTTP API. It is wiring
// only: decisions stay in package engine and the agent, I/O in the driver and the store.
//
// Every engine step runs under one mutex, and what a step decides is written to the store
// (event log, VM records, the actions about to be carried out) in one transaction before the
// step's actions are carried out. The agent carries an order out only while the order's
// intent generation matches the one recorded in the store (its fencing token).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor"
	"github.com/hassproject/hass/lifecycle"
	"github.com/hassproject/hass/store"
	"github.com/hassproject/hass/vmname"
)

// Config configures a daemon.
type Config struct {
	HostName    string   // this host's name in hass; default: the OS host name
	DataDir     string   // embedded etcd's data directory
	Etcd        []string // an external etcd cluster instead of the embedded one
	Listen      string   // the API's address, unix:///path or host:port; default DefaultListen
	ResyncEvery time.Duration
	TickEvery   time.Duration
	Engine      engine.Config
	Logger      *slog.Logger
	// Driver talks to the hypervisor; the caller builds it (libvirt in production).
	Driver hypervisor.Driver
	// Ready, if set, is called once the API listens, with its address.
	Ready func(addr string)
	// ProtectAll protects, with the default policy, every domain of this host that is not
	// protected yet when the daemon first sees it (at start, and when one is defined later).
	ProtectAll bool
	// KeepEvents bounds the event log; older entries are trimmed every ten minutes.
	KeepEvents int
	// SocketGroup is the group let into the API's unix socket; "" means DefaultSocketGroup
	// if it exists (else only the socket's owner can use it).
	SocketGroup string
	// StoreMinFree is the free space (bytes) the embedded store keeps on its data dir's
	// filesystem, refusing writes below it; 0 means store.DefaultMinFree, < 0 none.
	StoreMinFree int64
}

// Daemon is one running `hass up`.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	drv     hypervisor.Driver
	st      *store.Store
	started time.Time

	mu        sync.Mutex // guards everything below, and every engine step
	eng       *engine.Engine
	ag        *agent.Agent // this host's agent: the same code the simulator runs
	exec      *pendingExec // the order the agent just asked to carry out (under mu)
	resultVM  engine.VMID  // the VM whose order result the agent is reporting (under mu)
	libvirt   string       // "connected" or why not
	persisted map[engine.VMID]store.VM
	idFloor   uint64 // the store's ID floor: IDs up to it may be handed out
	// firstCall is when the hypervisor was first asked to recover each VM being recovered:
	// the recovered event's action time.
	firstCall map[engine.VMID]time.Time
	// recordFailed: the last step's decisions could not be written to the store.
	recordFailed bool
	dirty        map[engine.VMID]bool // VMs whose last change could not be written yet
	// unfinished holds the user operations a previous run ordered but did not see done;
	// they are ordered again after the first resync, once the engine knows the domains.
	unfinished []engine.Request
	seen       map[string]bool // domains already offered to ProtectAll, or unprotected by a user

	vmLocks sync.Map // engine.VMID -> *sync.Mutex: one action at a time per VM
	wg      sync.WaitGroup
	ctx     context.Context
}

// Run starts the daemon and blocks until ctx ends or it cannot go on.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Driver == nil {
		return errors.New("daemon: no hypervisor driver")
	}
	if cfg.HostName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("daemon: host name: %w", err)
		}
		cfg.HostName = h
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.ResyncEvery <= 0 {
		cfg.ResyncEvery = 30 * time.Second
	}
	if cfg.TickEvery <= 0 {
		cfg.TickEvery = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.KeepEvents <= 0 {
		cfg.KeepEvents = 100000
	}
	if cfg.Engine == (engine.Config{}) {
		cfg.Engine = engine.DefaultConfig()
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, drv: cfg.Driver, started: time.Now(), ctx: ctx,
		eng: engine.New(cfg.Engine), libvirt: "connecting",
		persisted: map[engine.VMID]store.VM{}, firstCall: map[engine.VMID]time.Time{},
		dirty: map[engine.VMID]bool{}}
	d.ag = agent.New(agent.DefaultConfig(engine.HostID(cfg.HostName)), daemonEnv{d}, time.Now())

	ln, err := listenAPI(cfg.Listen, cfg.SocketGroup, d.log)
	if err != nil {
		return fmt.Errorf("daemon: listen on %s: %w", cfg.Listen, err)
	}
	defer ln.Close()

	if len(cfg.Etcd) > 0 {
		d.st, err = store.Connect(ctx, cfg.Etcd, d.log)
	} else {
		if cfg.DataDir == "" {
			return errors.New("daemon: no data directory for the embedded etcd")
		}
		d.st, err = store.OpenEmbeddedConfig(ctx, store.EmbeddedConfig{Dir: cfg.DataDir, Logger: d.log, MinFree: cfg.StoreMinFree})
	}
	if err != nil {
		return fmt.Errorf("daemon: state store: %w", err)
	}
	defer d.st.Close()

	if err := d.restore(ctx); err != nil {
		return err
	}

	srv := &http.Server{Handler: api.NewServer(d, d.log), ReadHeaderTimeout: 10 * time.Second}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	d.log.Info("hass is up", "host", cfg.HostName, "api", ln.addr, "vms", len(d.eng.Status()))
	if cfg.Ready != nil {
		cfg.Ready(ln.addr)
	}

	loopCtx, stop := context.WithCancel(ctx)
	defer stop()
	d.wg.Add(2)
	go d.watch(loopCtx)
	go d.clock(loopCtx)

	select {
	case <-ctx.Done():
	case err = <-srvErr:
		err = fmt.Errorf("daemon: API server: %w", err)
	case <-d.st.Done(): // nothing can be recorded any more, so nothing may be done
		err = fmt.Errorf("daemon: the state store failed: %w", d.st.Err())
	}
	stop()
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	_ = d.drv.Close()
	d.wg.Wait()
	if err != nil {
		d.log.Error("hass is down", "err", err)
	} else {
		d.log.Info("hass is down")
	}
	return err
}

// restore rebuilds the engine from the store: this host, and every protected VM with what
// the engine held about it (desired state, the operation in flight and its deadline, the
// failure being recovered, restart history), so that a restart of hass neither undoes a
// user's operation nor forgets a recovery. Operations whose action was recorded but not
// seen answered are issued again by the engine once the first resync shows the VM; a
// recovery attempt in flight is judged by that resync (running: recovered; down: retried).
// A stored record that cannot be read is reported (log and event log) and left in the
// store untouched; every other VM is protected as usual.
func (d *Daemon) restore(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	host := engine.HostID(d.cfg.HostName)
	d.eng.Step(time.Now(), engine.AddHost{Host: host})
	floor, err := d.st.IDFloor(ctx)
	if err != nil {
		return fmt.Errorf("daemon: load the ID floor: %w", err)
	}
	vms, unreadable, err := d.st.LoadVMs(ctx)
	if err != nil {
		return fmt.Errorf("daemon: load protected VMs: %w", err)
	}
	var states []engine.VMState
	var bad []engine.Record
	for _, b := range unreadable {
		bad = append(bad, d.badRecord(strings.TrimPrefix(b.Key, "/hass/v1/vms/"), b.Err))
	}
	for _, r := range vms {
		st, err := fromRecord(r, host)
		if err != nil {
			bad = append(bad, d.badRecord(r.Name, err))
			continue
		}
		states = append(states, st)
		d.persisted[engine.VMID(r.Name)] = r
	}
	// IDs of this run start above anything the last run may have handed out.
	d.idFloor = floor
	if err := d.reserveIDs(ctx, floor); err != nil {
		return err
	}
	out := d.stepLocked(ctx, engine.Restore{NextID: floor, VMs: states})
	if out.Err != nil {
		return fmt.Errorf("daemon: restore protected VMs: %w", out.Err)
	}
	if len(bad) > 0 {
		d.appendEvents(ctx, bad)
	}
	if d.seen, err = d.st.OptOuts(ctx); err != nil {
		return fmt.Errorf("daemon: load opt-outs: %w", err)
	}
	pending, badActions, err := d.st.LoadPendingActions(ctx)
	if err != nil {
		return fmt.Errorf("daemon: load pending actions: %w", err)
	}
	for _, b := range badActions {
		d.log.Error("a stored action record cannot be read; left as it is", "key", b.Key, "err", b.Err)
	}
	for _, a := range pending {
		// The engine's restored state decides what is done again; the old records go.
		d.log.Info("an action of the last run was not seen finished", "id", a.ID, "kind", a.Kind, "vm", a.VM, "why", a.Why)
		if err := d.st.DeleteAction(ctx, a.ID); err != nil {
			return fmt.Errorf("daemon: clear pending action %d: %w", a.ID, err)
		}
	}
	return nil
}

// badRecord reports a stored VM record that cannot be read. The VM is not protected until
// an operator fixes or removes the record (`hass vm protect` writes a new one).
func (d *Daemon) badRecord(name string, err error) engine.Record {
	d.log.Error("a stored vm record cannot be read: that vm is not protected; the others are", "vm", name, "err", err)
	return engine.Record{At: time.Now(), Type: engine.RecAlert, VM: engine.VMID(name), Host: engine.HostID(d.cfg.HostName),
		Msg: fmt.Sprintf("stored record unreadable (%v): not protected until it is fixed or the vm is protected again", err)}
}

// idBlock is how many IDs are reserved in the store at a time.
const idBlock = 1000

// reserveIDs makes sure the store's ID floor is above last, writing it before anything that
// carries an ID is recorded. Callers hold d.mu.
func (d *Daemon) reserveIDs(ctx context.Context, last uint64) error {
	if last < d.idFloor && d.idFloor != 0 {
		return nil
	}
	n := last + idBlock
	if err := d.st.SetIDFloor(ctx, n); err != nil {
		return fmt.Errorf("daemon: reserve IDs: %w", err)
	}
	d.idFloor = n
	return nil
}

// step runs one engine step and everything that follows from it.
func (d *Daemon) step(ctx context.Context, in engine.Input) engine.Output {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stepLocked(ctx, in)
}

// stepLocked steps the engine, records what it decided, then starts its actions. Everything
// a step decided (event log entries, the engine state of the VMs it changed, its actions, a
// new ID floor) is written in one etcd transaction, and nothing is carried out unless that
// write succeeded: a failed write means no action (the engine's timers try again).
func (d *Daemon) stepLocked(ctx context.Context, in engine.Input, also ...engine.VMID) engine.Output {
	arrived := time.Now()
	out := d.eng.Step(arrived, in)
	decided := time.Now()
	res := engine.Output{Actions: slices.Clone(out.Actions), Log: slices.Clone(out.Log), Err: out.Err}
	var b store.Batch
	for i, r := range res.Log {
		d.log.Info(r.String(), "type", string(r.Type))
		if r.VM != "" {
			switch r.Type {
			case engine.RecRecovered:
				// Acted: when libvirt was asked to restart it, not when the engine decided.
				if t, ok := d.firstCall[r.VM]; ok && !r.ActionAt.IsZero() && !t.Before(r.ActionAt) && !t.After(r.RecoveredAt) {
					res.Log[i].ActionAt = t
				}
				delete(d.firstCall, r.VM)
			case engine.RecGaveUp, engine.RecForget, engine.RecDetect:
				delete(d.firstCall, r.VM)
			}
		}
		b.Events = append(b.Events, toStoreEvent(res.Log[i]))
	}
	changed := d.changedVMs(in, res, also)
	for _, c := range changed {
		if c.gone {
			b.DeleteVMs = append(b.DeleteVMs, c.name)
		} else {
			b.PutVMs = append(b.PutVMs, c.rec)
		}
	}
	if last := d.eng.LastID(); last >= d.idFloor {
		b.IDFloor = last + idBlock
	}
	for _, a := range res.Actions {
		b.Actions = append(b.Actions, store.Action{ID: a.ID, Kind: a.Kind.String(), VM: string(a.VM), Host: string(a.Host),
			Target: string(a.Target), Why: a.Why, Gen: a.Gen, At: decided})
	}
	if _, err := d.st.Record(ctx, b); err != nil {
		d.log.Error("what the engine decided could not be recorded: nothing of it is carried out", "err", err,
			"events", len(b.Events), "vms", len(b.PutVMs)+len(b.DeleteVMs), "actions", len(b.Actions))
		d.recordFailed = true
		for _, c := range changed {
			d.dirty[engine.VMID(c.name)] = true // written with the next step that succeeds
		}
		return res
	}
	d.recordFailed = false
	clear(d.dirty)
	if b.IDFloor != 0 {
		d.idFloor = b.IDFloor
	}
	for _, c := range changed {
		if c.gone {
			delete(d.persisted, engine.VMID(c.name))
		} else {
			d.persisted[engine.VMID(c.name)] = c.rec
		}
	}
	t := timing{arrived: arrived, decided: decided, recorded: time.Now()}
	for _, a := range res.Actions {
		d.wg.Add(1)
		go d.execute(a, t)
	}
	return res
}

// timing is when an action's input arrived, was decided on, and was recorded.
type timing struct{ arrived, decided, recorded time.Time }

// appendEvents writes records to the event log; false if it could not.
func (d *Daemon) appendEvents(ctx context.Context, recs []engine.Record) bool {
	evs := make([]store.Event, 0, len(recs))
	for _, r := range recs {
		evs = append(evs, toStoreEvent(r))
	}
	if _, err := d.st.AppendEvents(ctx, evs); err != nil {
		d.log.Error("event log write failed", "err", err)
		return false
	}
	return true
}

// vmChange is a VM record to write (or, gone, to delete).
type vmChange struct {
	name string
	rec  store.VM
	gone bool
}

// changedVMs returns the stored records that differ from the engine state of the VMs the
// step may have changed (named by its input, its log or its actions).
func (d *Daemon) changedVMs(in engine.Input, out engine.Output, also []engine.VMID) []vmChange {
	ids := slices.Clone(also)
	for id := range d.dirty {
		ids = append(ids, id)
	}
	switch in := in.(type) {
	case engine.Observe:
		ids = append(ids, in.VM)
	case engine.Request:
		ids = append(ids, in.VM)
	case engine.Protect:
		ids = append(ids, in.VM)
	case engine.Unprotect:
		ids = append(ids, in.VM)
	case engine.Signal:
		ids = append(ids, in.VM)
	}
	for _, r := range out.Log {
		ids = append(ids, r.VM)
	}
	for _, a := range out.Actions {
		ids = append(ids, a.VM)
	}
	var changes []vmChange
	seen := map[engine.VMID]bool{}
	for _, id := range ids {
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		s, protected := d.eng.State(id)
		if !protected {
			if _, had := d.persisted[id]; had {
				changes = append(changes, vmChange{name: string(id), gone: true})
			}
			continue
		}
		rec := toRecord(s)
		if old, had := d.persisted[id]; had && sameRecord(old, rec) {
			continue
		}
		if err := rec.Validate(); err != nil {
			// Never let one VM's record keep every other decision from being recorded.
			d.log.Error("the engine state of a vm cannot be stored: it is kept in memory only", "vm", id, "err", err)
			continue
		}
		changes = append(changes, vmChange{name: string(id), rec: rec})
	}
	return changes
}

// watch follows the hypervisor's events, resyncing after every (re)connect.
func (d *Daemon) watch(ctx context.Context) {
	defer d.wg.Done()
	for ev := range hypervisor.Watch(ctx, d.drv, hypervisor.Backoff{}, d.log) {
		if ev.Kind == hypervisor.Resync {
			d.setLibvirt("connected")
			d.resync(ctx)
			d.mu.Lock()
			for _, r := range d.unfinished {
				if out := d.stepLocked(ctx, r); out.Err != nil {
					d.log.Warn("could not finish an operation of the last run", "vm", r.VM, "op", r.Op, "err", out.Err)
				}
			}
			d.unfinished = nil
			d.mu.Unlock()
			continue
		}
		d.onEvent(ctx, ev)
	}
}

func (d *Daemon) setLibvirt(s string) {
	d.mu.Lock()
	d.libvirt = s
	d.mu.Unlock()
}

// onEvent translates one hypervisor event and steps the engine with it.
func (d *Daemon) onEvent(ctx context.Context, ev hypervisor.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.ProtectAll && ev.Kind == hypervisor.Lifecycle && !d.seen[ev.Domain] &&
		(ev.Lifecycle == hypervisor.EventDefined || ev.Lifecycle == hypervisor.EventStarted) {
		// A domain defined or started just now: protect it at once, not at the next resync.
		seq := d.ag.Stamp(time.Now())
		if doms, err := d.drv.List(ctx); err == nil {
			d.protectNew(ctx, doms, seq)
		} else {
			d.log.Warn("protect-all: cannot list the new domain", "vm", ev.Domain, "err", err)
		}
	}
	le := toLifecycle(ev)
	d.ag.Event(ev.At, le)
}

func toLifecycle(ev hypervisor.Event) lifecycle.Event {
	le := lifecycle.Event{Domain: ev.Domain, Type: ev.Lifecycle, Detail: ev.Detail}
	switch ev.Kind {
	case hypervisor.Reboot:
		le.Kind = lifecycle.KindReboot
	case hypervisor.Watchdog:
		le.Kind, le.Watchdog = lifecycle.KindWatchdog, ev.Action
	case hypervisor.IOError:
		le.Kind = lifecycle.KindIOError
	case hypervisor.AgentLifecycle:
		le.Kind, le.Detail = lifecycle.KindAgentLifecycle, ev.AgentState
	default:
		le.Kind = lifecycle.KindLifecycle
	}
	return le
}

// resync lists every domain and gives the engine the complete picture.
func (d *Daemon) resync(ctx context.Context) {
	d.mu.Lock()
	seq := d.ag.Stamp(time.Now()) // before the list: any event after it is newer than the list
	d.mu.Unlock()
	doms, err := d.drv.List(ctx)
	if err != nil {
		d.setLibvirt(err.Error())
		d.log.Warn("resync failed", "err", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.libvirt = "connected"
	if d.cfg.ProtectAll {
		d.protectNew(ctx, doms, seq)
	}
	rows := make([]agent.Row, 0, len(doms))
	for _, dom := range doms {
		rows = append(rows, rowOf(dom))
	}
	d.ag.Listed(time.Now(), seq, rows)
}

// protectNew protects the domains this daemon has not seen before (ProtectAll). A domain
// seen once and then unprotected by a user stays unprotected for the rest of this run.
// Callers hold d.mu.
func (d *Daemon) protectNew(ctx context.Context, doms []hypervisor.Domain, seq uint64) {
	if d.seen == nil {
		d.seen = map[string]bool{}
	}
	for _, dom := range doms {
		if d.seen[dom.Name] {
			continue
		}
		d.seen[dom.Name] = true
		if err := vmname.Check(dom.Name); err != nil {
			d.log.Warn("protect-all: a domain whose name hass cannot take is left unprotected", "vm", dom.Name, "err", err)
			continue
		}
		if d.eng.Protected(engine.VMID(dom.Name)) {
			continue
		}
		st, r := d.ag.Row(rowOf(dom))
		in := engine.Protect{VM: engine.VMID(dom.Name), Host: engine.HostID(d.cfg.HostName),
			MemMiB: int(dom.MemoryKiB / 1024), Policy: engine.DefaultPolicy(), Desired: desiredOf(st)}
		if out := d.stepLocked(ctx, in); out.Err != nil {
			d.log.Warn("protect-all: cannot protect", "vm", dom.Name, "err", out.Err)
			continue
		}
		d.stepLocked(ctx, engine.Observe{Host: in.Host, VM: in.VM, Seq: seq, State: st, Reason: r, At: time.Now()})
	}
}

// desiredOf is what protecting a domain found in state st keeps it as: running or
// suspended if it is up, stopped otherwise.
func desiredOf(st engine.DomState) engine.Desired {
	switch st {
	case engine.DomRunning:
		return engine.WantRunning
	case engine.DomPaused:
		return engine.WantPaused
	}
	return engine.WantStopped
}

// clock ticks the engine and resyncs periodically.
func (d *Daemon) clock(ctx context.Context) {
	defer d.wg.Done()
	tick := time.NewTicker(d.cfg.TickEvery)
	defer tick.Stop()
	resync := time.NewTicker(d.cfg.ResyncEvery)
	defer resync.Stop()
	trim := time.NewTicker(10 * time.Minute)
	defer trim.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-trim.C:
			if err := d.st.TrimEvents(ctx, d.cfg.KeepEvents); err != nil {
				d.log.Warn("trim the event log", "err", err)
			}
		case <-tick.C:
			d.mu.Lock()
			if w := d.eng.NextWake(); !w.IsZero() && !w.After(time.Now()) {
				d.stepLocked(ctx, engine.Tick{})
			}
			d.mu.Unlock()
		case <-resync.C:
			d.resync(ctx)
		}
	}
}

// execute hands one order to this host's agent, which carries it out only while it is
// current, then reports how it went. It logs how long each stage took: the engine's
// decision, the record-before-act writes to the store, and the wait until the hypervisor
// call was made.
func (d *Daemon) execute(a engine.Action, t timing) {
	defer d.wg.Done()
	ctx := d.ctx
	l, _ := d.vmLocks.LoadOrStore(a.VM, &sync.Mutex{})
	lock := l.(*sync.Mutex)
	lock.Lock()
	defer lock.Unlock()
	defer func() {
		if err := d.st.DeleteAction(context.WithoutCancel(ctx), a.ID); err != nil {
			d.log.Warn("clear action record", "id", a.ID, "err", err)
		}
	}()
	d.mu.Lock()
	d.exec = nil
	d.ag.Order(time.Now(), a) // checks the order's fencing token, then asks daemonEnv.Execute
	p := d.exec
	d.exec = nil
	d.mu.Unlock()
	if p == nil {
		return // dropped: the agent said why
	}
	issued := time.Now()
	if strings.HasPrefix(a.Why, "recovery:") {
		d.mu.Lock()
		if _, ok := d.firstCall[a.VM]; !ok {
			d.firstCall[a.VM] = issued
		}
		d.mu.Unlock()
	}
	actx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err := agent.Carry(actx, d.drv, a, nil)
	cancel()
	d.log.Info("action carried out", "action", a.String(), "id", a.ID,
		"decide", t.decided.Sub(t.arrived), "record", t.recorded.Sub(t.decided),
		"dispatch", issued.Sub(t.recorded), "input_to_call", issued.Sub(t.arrived),
		"call", time.Since(issued), "err", err)
	o := agent.Outcome{Err: err, Unreached: agent.Unreached(err)}
	if doms, lerr := d.drv.List(ctx); lerr == nil {
		o.Absent = true
		for _, dom := range doms {
			if dom.Name == string(a.VM) {
				r := rowOf(dom)
				o.Row, o.Absent = &r, false
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resultVM = a.VM
	p.done(time.Now(), o)
	d.resultVM = ""
}

// pendingExec is an order the agent asked to carry out, and where its outcome goes.
type pendingExec struct {
	a    engine.Action
	done func(time.Time, agent.Outcome)
}

func rowOf(dom hypervisor.Domain) agent.Row {
	return agent.Row{Name: dom.Name, State: int(dom.State), Reason: dom.Reason}
}

// daemonEnv is the world around the daemon's agent: libvirt on this host and, in `hass up`,
// the controller in the same process. Its methods run with d.mu held.
type daemonEnv struct{ d *Daemon }

var _ agent.Env = daemonEnv{}

// Report hands a report to the engine (the controller in this process).
func (e daemonEnv) Report(in engine.Input) {
	var also []engine.VMID
	if _, ok := in.(engine.ActionResult); ok && e.d.resultVM != "" {
		also = append(also, e.d.resultVM)
	}
	e.d.stepLocked(e.d.ctx, in, also...)
}

// Current checks the order's fencing token against the store: the VM's intent generation
// as last recorded there.
func (e daemonEnv) Current(a engine.Action) bool {
	r, ok := e.d.persisted[a.VM]
	return ok && r.Gen == a.Gen
}

// Execute takes the order; execute carries it out once the lock is released.
func (e daemonEnv) Execute(a engine.Action, done func(time.Time, agent.Outcome)) {
	e.d.exec = &pendingExec{a: a, done: done}
}

// Protected lists the VMs the engine protects.
func (e daemonEnv) Protected() []engine.VMID {
	var out []engine.VMID
	for _, s := range e.d.eng.Status() {
		out = append(out, s.VM)
	}
	return out
}

// Destroy kills a domain for a self-fence (not used while hass up runs alone: a cluster of
// one host never fences itself).
func (e daemonEnv) Destroy(vm engine.VMID) {
	if err := e.d.drv.Destroy(e.d.ctx, string(vm)); err != nil {
		e.d.log.Error("self-fence: destroy failed", "vm", vm, "err", err)
	}
}

// Members is this host alone: `hass up` is a cluster of one.
func (e daemonEnv) Members() []engine.HostID { return []engine.HostID{engine.HostID(e.d.cfg.HostName)} }

// Heard: a cluster of one has no peers.
func (e daemonEnv) Heard(engine.HostID) (agent.Heartbeat, time.Time, bool) {
	return agent.Heartbeat{}, time.Time{}, false
}

// PetWatchdog: hass up arms no watchdog.
func (e daemonEnv) PetWatchdog() {}

// SendHeartbeat: a cluster of one has no peers.
func (e daemonEnv) SendHeartbeat(agent.Heartbeat) {}

// Log writes an agent line to the daemon's log.
func (e daemonEnv) Log(format string, args ...any) {
	e.d.log.Info("agent: " + fmt.Sprintf(format, args...))
}
