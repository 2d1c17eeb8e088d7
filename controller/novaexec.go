package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/openstack/nova"
)

// Recovery through Nova. Under OpenStack (Config.Nova set), a protected VM that is a Nova
// instance (its policy names the instance) is never started, stopped or moved behind Nova's
// back: the leading controller carries out the engine's orders for it through Nova's API
// (package nova: start or hard reboot in place, evacuate to the host hass's placement chose,
// live migration, stop, suspend, resume, delete), in the order the engine gave them, and
// tells the engine how each went. The orders are decided and recorded exactly as for libvirt
// (the VM's record names the action before anything is asked of Nova); only the executor
// differs. A destroy still goes to the host's agent: it removes a copy Nova does not know of
// (or pulls the plug of an escalated stop), which Nova's own power-state sync then notes.
//
// A host fenced under OpenStack has its nova-compute service forced down (Nova evacuates
// nothing before that), and the mark is cleared when the host is back up under a new lease.

// novaWorkers is how many orders are carried out through Nova at once.
const novaWorkers = 4

// novaJob is one order for Nova.
type novaJob struct {
	a        engine.Action
	instance string
	// scheduler: the VM's policy leaves an evacuation's target to Nova's scheduler.
	scheduler bool
}

// novaQueue holds a term's orders for Nova, first in first out (the engine gives a host's
// evacuations in priority order).
type novaQueue struct {
	mu   sync.Mutex
	jobs []novaJob
	busy int // orders being carried out
	wake chan struct{}
	// running holds the cancel of the order being carried out for each VM: a newer order for
	// the VM (the engine gave up waiting for the earlier one) ends the earlier's wait.
	running map[engine.VMID]context.CancelFunc
}

// idle says whether no order is queued or being carried out.
func (q *novaQueue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.jobs) == 0 && q.busy == 0
}

func (q *novaQueue) done() {
	q.mu.Lock()
	q.busy--
	q.mu.Unlock()
}

func newNovaQueue() *novaQueue {
	return &novaQueue{wake: make(chan struct{}, 1), running: map[engine.VMID]context.CancelFunc{}}
}

// begin notes that j is carried out under ctx, ending the wait of an earlier order for the
// same VM; end undoes it.
func (q *novaQueue) begin(ctx context.Context, j novaJob) (context.Context, func()) {
	jctx, cancel := context.WithCancelCause(ctx)
	q.mu.Lock()
	if prev := q.running[j.a.VM]; prev != nil {
		prev()
	}
	q.running[j.a.VM] = func() { cancel(fmt.Errorf("a newer order for %s (action %d)", j.a.VM, j.a.ID)) }
	q.mu.Unlock()
	return jctx, func() {
		q.mu.Lock()
		if jctx.Err() == nil {
			delete(q.running, j.a.VM)
		}
		q.mu.Unlock()
		cancel(nil)
	}
}

func (q *novaQueue) push(j novaJob) {
	q.mu.Lock()
	q.jobs = append(q.jobs, j)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *novaQueue) pop(ctx context.Context) (novaJob, bool) {
	for {
		q.mu.Lock()
		if len(q.jobs) > 0 {
			j := q.jobs[0]
			q.jobs = q.jobs[1:]
			q.busy++
			more := len(q.jobs) > 0
			q.mu.Unlock()
			if more {
				select {
				case q.wake <- struct{}{}:
				default:
				}
			}
			return j, true
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return novaJob{}, false
		case <-q.wake:
		}
	}
}

// novaOf is the order for Nova an action is, or ok false when it goes to the host's agent.
// Callers hold c.mu.
func (c *Controller) novaOf(a engine.Action) (j novaJob, ok bool) {
	if c.cfg.Nova == nil || a.Kind == engine.ActFence || a.Kind == engine.ActDestroy {
		return j, false
	}
	s, found := c.eng.Get(a.VM)
	if !found || s.Policy.Instance == "" {
		return j, false
	}
	return novaJob{a: a, instance: s.Policy.Instance, scheduler: s.Policy.NovaScheduler}, true
}

// runNova carries out this term's orders for Nova until ctx ends.
func (c *Controller) runNova(ctx context.Context, q *novaQueue) {
	for range novaWorkers {
		go func() {
			for {
				j, ok := q.pop(ctx)
				if !ok {
					return
				}
				jctx, end := q.begin(ctx, j)
				c.carryNova(jctx, j)
				end()
				q.done()
			}
		}()
	}
}

// carryNova carries out one order through Nova, then steps the engine with its result.
func (c *Controller) carryNova(ctx context.Context, j novaJob) {
	a := j.a
	c.mu.Lock()
	current := c.leading && c.eng != nil && int64(a.Term) == c.term && c.eng.Current(a)
	c.mu.Unlock()
	if !current {
		c.log.Info("an order for Nova was overtaken before it was carried out: dropped", "action", a.String(), "instance", j.instance)
		return
	}
	start := time.Now()
	c.log.Info("carrying out through Nova", "action", a.String(), "instance", j.instance)
	landed, err := nova.Carry(ctx, c.cfg.Nova, a, j.instance, nova.Timing{
		Scheduler: j.scheduler,
		Poll:      c.cfg.NovaPoll,
		Runs:      func(h string) bool { return c.runsOn(a.VM, engine.HostID(h)) },
		Fenced: func(h string) bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.eng != nil && c.eng.HostState(engine.HostID(h)) == "fenced"
		},
		OnStart: func() {
			c.mu.Lock()
			if _, ok := c.firstCall[a.VM]; !ok {
				c.firstCall[a.VM] = time.Now()
			}
			c.mu.Unlock()
		},
	})
	if ctx.Err() != nil {
		// Deposed (the next leader decides again), or a newer order for the VM took over.
		c.log.Info("an order carried out through Nova was given up", "action", a.String(), "instance", j.instance, "why", context.Cause(ctx))
		return
	}
	res := engine.ActionResult{ID: a.ID, Host: a.Host}
	if err == nil && landed != "" && landed != string(a.Host) {
		// Nova's scheduler chose another host, or the instance was started again where it
		// was (its host not fenced): the engine follows it there.
		res.Host = engine.HostID(landed)
		c.log.Info("nova: the instance runs on another host than the order's", "instance", j.instance, "ordered", a.Host, "runs_on", landed)
	}
	if err != nil {
		res.Err = err.Error()
		c.log.Warn("an order carried out through Nova failed", "action", a.String(), "instance", j.instance, "err", err, "took", time.Since(start).Round(time.Millisecond))
	} else {
		c.log.Info("carried out through Nova", "action", a.String(), "instance", j.instance, "took", time.Since(start).Round(time.Millisecond))
	}
	if _, err := c.step(ctx, res); err != nil && !errors.Is(err, errNotLeading) {
		c.log.Warn("the result of an order carried out through Nova", "action", a.String(), "err", err)
	}
}

// runsOn says whether hass sees vm running on host now (its agent's latest word).
func (c *Controller) runsOn(vm engine.VMID, host engine.HostID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.eng == nil {
		return false
	}
	s, ok := c.eng.Get(vm)
	return ok && s.Home == host && s.Observed == engine.DomRunning
}

// novaForceDown marks a fenced host's nova-compute service forced down, or clears the mark
// once the host is back, logging what failed (Carry forces it down again before an
// evacuation in any case).
func (c *Controller) novaForceDown(ctx context.Context, h engine.HostID, down bool) {
	if c.cfg.Nova == nil || ctx == nil {
		return
	}
	if !down {
		// Not while an order runs: an evacuation from this host may be under way, and Nova
		// must not take the host's service for up before it is done.
		if err := c.novaSettled(ctx); err != nil {
			return
		}
	}
	for tries := 0; ; tries++ {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := c.cfg.Nova.ForceDown(cctx, string(h), down)
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, nova.ErrNotFound) {
			return // not a compute host of Nova's
		}
		if !errors.Is(err, nova.ErrNotYet) || tries >= 180 {
			c.log.Warn("nova: the compute service's forced_down mark", "host", h, "down", down, "err", err)
			return
		}
		// Its nova-compute has not started and cleaned up yet: again in a while, while the
		// host stays up.
		if err := sleepCtx(ctx, 5*time.Second); err != nil {
			return
		}
		c.mu.Lock()
		up := c.hostStates[h].State == "up"
		c.mu.Unlock()
		if !up {
			return
		}
	}
	what := "forced its nova-compute service down"
	if !down {
		what = "cleared its nova-compute service's forced_down mark"
	}
	c.log.Info(fmt.Sprintf("nova: host %s: %s", h, what), "host", h)
	c.appendEvents(ctx, []engine.Record{{At: time.Now(), Type: engine.RecHost, Host: h, Msg: "nova: " + what}})
}

// novaResolve names the libvirt domain of a VM to protect under OpenStack, and the Nova
// instance it is: ref may be the instance's uuid, its name, or its domain's name. A ref
// Nova does not know is a plain libvirt domain ("" instance).
func (c *Controller) novaResolve(ctx context.Context, ref string) (domain, instance string, err error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := c.cfg.Nova.Find(cctx, ref)
	switch {
	case errors.Is(err, nova.ErrNotFound):
		return ref, "", nil
	case err != nil:
		return "", "", api.Unavailable("cannot ask Nova whether %q is one of its instances: %v", ref, err)
	case s.InstanceName == "":
		return "", "", api.Unavailable("Nova's instance %s (%s) has no libvirt domain yet (status %s)", s.ID, s.Name, s.Status)
	}
	return s.InstanceName, s.ID, nil
}

// novaReconcileEvery is how often the leader compares Nova's instances with what it protects.
const novaReconcileEvery = 30 * time.Second

// reconcileNova protects, while this controller leads, every Nova instance that asks for it
// (metadata HA_Enabled=True, Masakari's convention) or lives on a host of the aggregate
// Config.NovaAggregate, unless a user unprotected it; and forgets a protected instance Nova
// no longer has (its delete notification was missed). Notifications do the same as they
// come; this catches what they cannot say (metadata set later, an aggregate's hosts) and what
// was lost.
func (c *Controller) reconcileNova(ctx context.Context) {
	for {
		if err := c.reconcileNovaOnce(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("nova: cannot compare Nova's instances with the protected VMs", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(novaReconcileEvery):
		}
	}
}

func (c *Controller) reconcileNovaOnce(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	all, err := c.cfg.Nova.List(cctx)
	if err != nil {
		return err
	}
	inAggregate := map[string]bool{}
	if c.cfg.NovaAggregate != "" {
		hosts, err := c.cfg.Nova.AggregateHosts(cctx, c.cfg.NovaAggregate)
		if err != nil {
			return err
		}
		for _, h := range hosts {
			inAggregate[h] = true
		}
	}
	exists := map[string]bool{}
	var want []nova.Server
	c.mu.Lock()
	if !c.leading {
		c.mu.Unlock()
		return nil
	}
	for _, s := range all {
		exists[s.ID] = true
		asks := strings.EqualFold(s.Metadata[NovaHAMetadata], "true") || inAggregate[s.Host]
		if !asks || s.InstanceName == "" || c.optOut[s.InstanceName] || c.eng.Protected(engine.VMID(s.InstanceName)) {
			continue
		}
		if s.Status == "ERROR" || s.Status == "DELETED" || s.Status == "BUILD" {
			continue
		}
		want = append(want, s)
	}
	var gone []engine.VMID
	for _, v := range c.eng.Status() {
		if v.Policy.Instance != "" && !exists[v.Policy.Instance] {
			gone = append(gone, v.VM)
		}
	}
	c.mu.Unlock()
	for _, s := range want {
		if _, err := c.Protect(ctx, s.ID, api.ProtectRequest{}); err != nil {
			c.log.Warn("nova: cannot protect an instance that asks for it", "instance", s.ID, "name", s.Name, "err", err)
			continue
		}
		why := NovaHAMetadata + "=True"
		if inAggregate[s.Host] {
			why = "in host aggregate " + c.cfg.NovaAggregate
		}
		c.log.Info("nova: protected an instance ("+why+")", "instance", s.ID, "name", s.Name, "domain", s.InstanceName)
	}
	for _, vm := range gone {
		c.mu.Lock()
		if c.leading && c.eng.Protected(vm) {
			c.log.Info("nova: a protected instance is gone from Nova: forgotten", "vm", vm)
			c.stepLocked(ctx, engine.Unprotect{VM: vm})
		}
		c.mu.Unlock()
	}
	return nil
}

// novaSettled waits until no order for Nova is queued or carried out (at once when not under
// OpenStack).
func (c *Controller) novaSettled(ctx context.Context) error {
	for {
		c.mu.Lock()
		q := c.novaq
		c.mu.Unlock()
		if q == nil || q.idle() {
			return nil
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
	}
}

// novaEvacuated waits until the evacuations through Nova from fenced host h are over: no
// order for Nova runs or is queued, and no protected instance that hass still recovers is on
// h in Nova's records (an evacuation that failed leaves it there while the engine waits to
// try again, and the queue is idle in between). It gives up waiting after limit, and at once
// when not under OpenStack.
func (c *Controller) novaEvacuated(ctx context.Context, h engine.HostID, limit time.Duration) error {
	if c.cfg.Nova == nil {
		return nil
	}
	end := time.Now().Add(limit)
	for {
		if err := c.novaSettled(ctx); err != nil {
			return err
		}
		left := c.novaStillOn(ctx, h)
		if left == "" {
			return nil
		}
		if time.Now().After(end) {
			c.log.Warn("nova: evacuations from a fenced host still not done: it is powered on all the same", "host", h, "instance", left, "waited", limit)
			return nil
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return err
		}
	}
}

// novaStillOn names a protected Nova instance that hass still recovers (or that waits for a
// host) and that Nova still has on h, or "".
func (c *Controller) novaStillOn(ctx context.Context, h engine.HostID) string {
	var pending []string
	c.mu.Lock()
	if c.eng != nil {
		for _, v := range c.eng.Status() {
			if v.Policy.Instance != "" && (v.State == "recovering" || v.Waiting != "") {
				pending = append(pending, v.Policy.Instance)
			}
		}
	}
	c.mu.Unlock()
	for _, id := range pending {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s, err := c.cfg.Nova.Get(cctx, id)
		cancel()
		if errors.Is(err, nova.ErrNotFound) {
			continue
		}
		if err != nil || s.Host == string(h) {
			return id // unknown counts as still there: the wait is bounded
		}
	}
	return ""
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
