package controller

// The host power layer and the power fence, over each host's BMC (package ipmi).
//
// A fence (the engine's ActFence, for a suspect host that has a BMC) is carried out here,
// not by an agent: power off, then read the chassis status until the BMC says off. Only a
// confirmed "off" is reported to the engine as a fence (FenceResult OK); anything else is a
// failed fence, with an alert, and the engine falls back on the lease's expiry plus the
// self-fence margin. Each step is retried. Once a fence is confirmed and recorded, the host
// is powered on again after PowerOnAfter (as HASS does), so that a host with a transient
// fault comes back: its agent joins with a new lease, and the engine takes it as a new host
// state (nothing of what ran there before runs any more).
//
// The power layer: while leading, the controller reads every BMC's chassis status every
// BMCPoll. A host whose BMC says off, and says it again after a short recheck, is reported
// to the engine (HostPower Off): it runs nothing, so its VMs are restarted elsewhere at once,
// without waiting for its lease to expire. A BMC that does not answer is only logged (the
// lease decides then); a host in maintenance is not reported.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/ipmi"
)

// Power states as the hosts API shows them.
const (
	powerOn      = "on"
	powerOff     = "off"
	powerUnknown = "unknown"
)

// bmc returns the power control of h's BMC, or an error saying why there is none.
func (c *Controller) bmc(ctx context.Context, h engine.HostID) (*ipmi.Client, error) {
	c.mu.Lock()
	hc, ok := c.hostCfg[h]
	c.mu.Unlock()
	if !ok || hc.BMC == nil {
		return nil, fmt.Errorf("host %s has no BMC configured", h)
	}
	pw, err := c.st.BMCPassword(ctx, string(h))
	if err != nil {
		return nil, err
	}
	return ipmi.New(ipmi.BMC{Addr: hc.BMC.Addr, User: hc.BMC.User, Password: pw, Cipher: hc.BMC.Cipher, Timeout: c.cfg.BMCTimeout})
}

// fence carries out a fence action: power off, confirmed. It runs in its own goroutine.
func (c *Controller) fence(ctx context.Context, a engine.Action) {
	h := a.Host
	if !c.startFencing(h) {
		return // a power cycle of h is under way already
	}
	defer c.endFencing(h)
	start := time.Now()
	err := c.powerOffConfirmed(ctx, h, func() bool { return c.eng.Current(a) })
	if errors.Is(err, errFenceNotCurrent) {
		c.log.Info("fence not carried out: the host is no longer suspect", "host", h)
		return
	}
	if ctx.Err() != nil {
		return // deposed: the next leader decides again
	}
	if err != nil {
		c.log.Error("fence failed", "host", h, "err", err, "took", time.Since(start).Round(time.Millisecond))
		if _, serr := c.step(ctx, engine.FenceResult{Host: h, OK: false, Err: err.Error()}); serr != nil {
			c.log.Warn("fence result not taken", "host", h, "err", serr)
		}
		return
	}
	c.log.Info("fenced: the BMC confirms power off", "host", h, "took", time.Since(start).Round(time.Millisecond))
	c.setPower(h, powerOff)
	if _, serr := c.step(ctx, engine.FenceResult{Host: h, OK: true}); serr != nil {
		c.log.Warn("fence result not taken", "host", h, "err", serr)
		return
	}
	c.powerOnLater(ctx, h)
}

// powerCycle powers off, confirmed, a host the engine declared fenced without its BMC
// (its lease expired and its agent had time to fence itself; or its BMC said off), then
// powers it on again later: belt and braces, as HASS does, and the way back for a host
// whose OS hung. It runs in its own goroutine.
func (c *Controller) powerCycle(ctx context.Context, h engine.HostID, alreadyOff bool) {
	if !c.startFencing(h) {
		return
	}
	defer c.endFencing(h)
	if !alreadyOff {
		err := c.powerOffConfirmed(ctx, h, func() bool { return c.eng.HostState(h) == "fenced" })
		if ctx.Err() != nil || errors.Is(err, errFenceNotCurrent) {
			return
		}
		msg := "powered off through its BMC (confirmed) after it was declared fenced"
		if err != nil {
			msg = fmt.Sprintf("its power off through its BMC failed (its VMs run elsewhere already: its lease expired and its agent fenced itself): %v", err)
			c.log.Error("power off of a fenced host failed", "host", h, "err", err)
		} else {
			c.setPower(h, powerOff)
		}
		c.note(ctx, h, msg, err != nil)
		if err != nil {
			return
		}
	}
	c.powerOnLater(ctx, h)
}

// note appends a host event (an alert if alert) while leading.
func (c *Controller) note(ctx context.Context, h engine.HostID, msg string, alert bool) {
	t := engine.RecHost
	if alert {
		t = engine.RecAlert
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leading {
		c.appendEvents(ctx, []engine.Record{{At: time.Now(), Type: t, Host: h, Msg: msg}})
	}
}

func (c *Controller) startFencing(h engine.HostID) bool {
	c.powerMu.Lock()
	defer c.powerMu.Unlock()
	if c.cycling[h] {
		return false
	}
	c.cycling[h] = true
	return true
}

func (c *Controller) endFencing(h engine.HostID) {
	c.powerMu.Lock()
	delete(c.cycling, h)
	c.powerMu.Unlock()
}

var errFenceNotCurrent = errors.New("the fence is no longer wanted")

// powerOffConfirmed powers h off and reads its status until the BMC says off, retrying
// each step; it checks that the power-off is still wanted (wanted, called under c.mu)
// right before it.
func (c *Controller) powerOffConfirmed(ctx context.Context, h engine.HostID, wanted func() bool) error {
	cl, err := c.bmc(ctx, h)
	if err != nil {
		return err
	}
	c.mu.Lock()
	current := c.leading && c.eng != nil && wanted()
	c.mu.Unlock()
	if !current {
		return errFenceNotCurrent
	}
	// Off already (power lost): that is the fence, confirmed; no command needed.
	if on, err := cl.PowerStatus(ctx); err == nil && !on {
		return nil
	}
	var last error
	for try := 1; try <= c.cfg.FenceTries; try++ {
		if try > 1 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
		if err := cl.PowerOff(ctx); err != nil {
			last = fmt.Errorf("power off (try %d of %d): %w", try, c.cfg.FenceTries, err)
			c.log.Warn("fence: power off failed", "host", h, "try", try, "err", err)
			continue
		}
		// Confirm: the BMC must say off.
		deadline := time.Now().Add(c.cfg.FenceConfirm)
		for {
			on, err := cl.PowerStatus(ctx)
			if err == nil && !on {
				return nil
			}
			if err != nil {
				last = fmt.Errorf("confirm power off: %w", err)
			} else {
				last = errors.New("the BMC still says power on")
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	return fmt.Errorf("%s's power off not confirmed: %w", h, last)
}

// powerOnLater powers a fenced host on again after PowerOnAfter, if it is still fenced
// and this controller still leads.
func (c *Controller) powerOnLater(ctx context.Context, h engine.HostID) {
	if c.cfg.PowerOnAfter <= 0 {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(c.cfg.PowerOnAfter):
	}
	// Under OpenStack, not before the evacuations through Nova from it are done (a failed
	// one tried again too): a host whose nova-compute starts while its instances are still
	// being evacuated keeps them as Nova's records of evacuation it has to clean up, and
	// Nova keeps it forced down until it is restarted once more.
	if err := c.novaEvacuated(ctx, h, 10*time.Minute); err != nil {
		return
	}
	c.mu.Lock()
	still := c.leading && c.eng != nil && c.eng.HostState(h) == "fenced"
	c.mu.Unlock()
	if !still {
		return
	}
	cl, err := c.bmc(ctx, h)
	if err == nil {
		for try := 1; try <= c.cfg.FenceTries; try++ {
			if err = cl.PowerOn(ctx); err == nil {
				break
			}
			time.Sleep(time.Second)
		}
	}
	msg := fmt.Sprintf("powered on again through its BMC, %s after its fence: its agent rejoins with a new lease", c.cfg.PowerOnAfter)
	if err != nil {
		msg = fmt.Sprintf("could not power it on again after its fence: %v", err)
		c.log.Error("power on after fence failed", "host", h, "err", err)
	} else {
		c.log.Info("powered on again after its fence", "host", h)
		c.setPower(h, powerOn)
		c.mu.Lock()
		if c.leading && c.eng != nil && c.eng.HostState(h) == "fenced" {
			c.stepLocked(ctx, engine.HostPower{Host: h}) // a VM may land there from now on
		}
		c.mu.Unlock()
	}
	c.note(ctx, h, msg, err != nil)
}

func (c *Controller) setPower(h engine.HostID, s string) {
	c.powerMu.Lock()
	c.power[h] = s
	c.powerMu.Unlock()
}

func (c *Controller) powerOf(h engine.HostID) string {
	c.powerMu.Lock()
	defer c.powerMu.Unlock()
	return c.power[h]
}

// pollPower is the host power layer: it reads every BMC every BMCPoll while ctx lasts.
func (c *Controller) pollPower(ctx context.Context) {
	if c.cfg.BMCPoll <= 0 {
		return
	}
	t := time.NewTicker(c.cfg.BMCPoll)
	defer t.Stop()
	busy := map[engine.HostID]bool{}
	done := make(chan engine.HostID, 16)
	for {
		select {
		case <-ctx.Done():
			return
		case h := <-done:
			delete(busy, h)
		case <-t.C:
			c.mu.Lock()
			var hosts []engine.HostID
			for h, hc := range c.hostCfg {
				if hc.BMC != nil && !busy[h] {
					hosts = append(hosts, h)
				}
			}
			c.mu.Unlock()
			for _, h := range hosts {
				busy[h] = true
				go func() {
					defer func() { done <- h }()
					c.readPower(ctx, h)
				}()
			}
		}
	}
}

// readPower reads h's chassis status; an "off" read twice, a recheck apart, goes to the
// engine.
func (c *Controller) readPower(ctx context.Context, h engine.HostID) {
	cl, err := c.bmc(ctx, h)
	if err != nil {
		return
	}
	on, err := cl.PowerStatus(ctx)
	if err != nil {
		if c.powerOf(h) != powerUnknown {
			c.log.Warn("the BMC does not answer: the host power layer is blind for this host (its lease still counts)", "host", h, "err", err)
		}
		c.setPower(h, powerUnknown)
		return
	}
	if on {
		was := c.powerOf(h)
		c.setPower(h, powerOn)
		c.mu.Lock()
		switch {
		case !c.leading || c.eng == nil:
		case c.eng.HostState(h) == "fenced":
			// Powered on again while fenced (by hass after its fence, by its admin, by
			// the power coming back): a VM may land there before its agent starts and
			// fences it. Told once (stored: a new leader knows it).
			if hs, _ := c.eng.Host(h); !hs.PoweredOn {
				c.stepLocked(ctx, engine.HostPower{Host: h})
			}
		case was == powerOff && c.inMaintenance(h):
			// A host in maintenance noted off is on again: the note is undone (the engine
			// ignores this for any other host, which comes back with a new lease).
			c.stepLocked(ctx, engine.HostPower{Host: h})
		}
		c.mu.Unlock()
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(c.cfg.PowerRecheck):
	}
	if on, err = cl.PowerStatus(ctx); err != nil || on {
		return // a transient reading: nothing is concluded from it
	}
	was := c.powerOf(h)
	c.setPower(h, powerOff)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leading || c.eng == nil {
		return
	}
	st := c.eng.HostState(h)
	if st == "fenced" {
		if hs, _ := c.eng.Host(h); hs.PoweredOn {
			// Off again after it was on: whatever landed there runs no more, and no proof
			// waits for its list.
			c.stepLocked(ctx, engine.HostPower{Host: h, Off: true})
		}
		return
	}
	if c.inMaintenance(h) {
		// Not fenced: noted. Its admin shut it down, and the engine takes that as proof that
		// nothing runs there (a VM that migrated away from it and was lost on the way is
		// then known to run nowhere); it is fenced if still off when maintenance ends.
		if was != powerOff {
			c.log.Info("the BMC says a host in maintenance is powered off (read twice)", "host", h)
			c.stepLocked(ctx, engine.HostPower{Host: h, Off: true})
		}
		return
	}
	if was != powerOff {
		c.log.Warn("the BMC says the host is powered off (read twice): its VMs are restarted elsewhere", "host", h, "engine_state", st)
	}
	c.stepLocked(ctx, engine.HostPower{Host: h, Off: true})
}

// fenceInFlight: h is being fenced through its BMC, or the step was that fence's result
// (the fence goroutine powers it on again itself).
func (c *Controller) fenceInFlight(h engine.HostID, in engine.Input) bool {
	if fr, ok := in.(engine.FenceResult); ok && fr.Host == h {
		return true
	}
	c.powerMu.Lock()
	defer c.powerMu.Unlock()
	return c.cycling[h]
}

// diagnose checks the other layers when a host's lease expired, to tell a dead host from a
// cut-off one, and says so in the event log: the BMC's chassis power (off: power lost; on:
// the host hangs or is cut off from the control plane, and its agent, if it runs, fenced
// itself; no answer: the BMC is unreachable too, the lease decides). It runs in its own
// goroutine; what it finds changes no decision by itself (the power layer reports an "off").
func (c *Controller) diagnose(ctx context.Context, h engine.HostID) {
	cl, err := c.bmc(ctx, h)
	if err != nil {
		return
	}
	on, err := cl.PowerStatus(ctx)
	var msg string
	switch {
	case err != nil:
		msg = "lease expired and its BMC does not answer either (host and BMC unreachable: a network or site failure?): the lease's expiry decides"
		c.setPower(h, powerUnknown)
	case on:
		msg = "lease expired but its BMC says power on: the host hangs or is cut off from the control plane (its agent, if it runs, fenced itself); it is powered off through its BMC once declared fenced"
		c.setPower(h, powerOn)
	default:
		msg = "lease expired and its BMC says power off: the host lost power"
	}
	c.note(ctx, h, msg, false)
}

// resumePowerOns is a new leader's share of its predecessors' fences: a host fenced under
// an earlier leader that its BMC says is off is powered on again (PowerOnAfter from now),
// since that leader's wait for it ended with its leadership. A host that is on is left
// alone (it may be booting), and so is a host in maintenance.
func (c *Controller) resumePowerOns(ctx context.Context) {
	if c.cfg.PowerOnAfter <= 0 {
		return
	}
	c.mu.Lock()
	var hosts []engine.HostID
	for h, hc := range c.hostCfg {
		if hc.BMC != nil && c.eng != nil && c.eng.HostState(h) == "fenced" && !c.inMaintenance(h) {
			hosts = append(hosts, h)
		}
	}
	c.mu.Unlock()
	for _, h := range hosts {
		go func() {
			if !c.startFencing(h) {
				return
			}
			defer c.endFencing(h)
			cl, err := c.bmc(ctx, h)
			if err != nil {
				return
			}
			if on, err := cl.PowerStatus(ctx); err != nil || on {
				return
			}
			c.setPower(h, powerOff)
			c.powerOnLater(ctx, h)
		}()
	}
}
