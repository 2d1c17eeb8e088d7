package nova

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hassproject/hass/engine"
)

// Nova's power states (nova/compute/power_state.py).
const (
	PowerRunning  = 1
	PowerPaused   = 3
	PowerShutdown = 4
	PowerCrashed  = 6
)

// Timing bounds how long Carry waits for Nova.
type Timing struct {
	Poll    time.Duration // how often the instance is read while waiting (default 500 ms)
	Settle  time.Duration // how long a task Nova runs on the instance is waited out first (default 2 min)
	Done    time.Duration // how long an action may take to show (default 5 min)
	OnStart func()        // called when the first call that starts the instance is made (may be nil)
	// Runs says whether hass sees the instance's domain running on host now (may be nil).
	// Nova's own word lags a crash by seconds (its lifecycle events are delayed), so a start
	// in place of an instance Nova calls ACTIVE and running is left alone only when hass sees
	// it run too: an order repeated after it was done restarts nothing.
	Runs func(host string) bool
	// Fenced says whether hass has fenced host (may be nil: taken as yes). A start on
	// another host evacuates the instance from the host Nova has it on, after forcing that
	// host's nova-compute down: only from a host hass fenced. No healthy compute is ever
	// forced down: an instance on a host hass has not fenced (a crash loop's relocation, or
	// an operator moved it meanwhile) is started again where Nova has it, and Carry says so.
	// (Moving it off a healthy compute would take a cold migration, which copies its disks
	// host to host over SSH: not done.)
	Fenced func(host string) bool
	// Scheduler leaves an evacuation's target to Nova's scheduler: the instance is
	// evacuated with no host named.
	Scheduler bool
}

func (t Timing) withDefaults() Timing {
	if t.Poll <= 0 {
		t.Poll = 500 * time.Millisecond
	}
	if t.Settle <= 0 {
		t.Settle = 2 * time.Minute
	}
	if t.Done <= 0 {
		t.Done = 5 * time.Minute
	}
	return t
}

// Carry carries out an order of hass's engine on a Nova instance through Nova's API, and
// returns once Nova shows it done, or why not; for a start, it returns the host the instance
// runs on (the order's, unless Nova's scheduler chose another or it was started again where
// it was). It is the executor of instances under OpenStack, as agent.Carry is libvirt's: hass
// never starts, stops or moves a Nova instance behind Nova's back.
//   - start on the instance's own host: a SHUTOFF instance is started (os-start); any other
//     (ACTIVE with its domain crashed, Nova not told yet; ERROR) is hard rebooted.
//   - start on another host, the instance's host fenced: its compute service is forced down,
//     and the instance evacuated to the order's host (or where Nova's scheduler chooses). It
//     is then checked ACTIVE there. With the instance's host not fenced (a crash loop's
//     relocation, or an operator moved it), a start in place there (see Timing.Fenced).
//   - reset: a hard reboot; reboot: a soft one; shutdown: os-stop; suspend, resume; migrate:
//     a live migration to the order's target; delete: the instance deleted.
//
// A task Nova already runs on the instance (its own power-state sync stopping it, say) is
// waited out first.
func Carry(ctx context.Context, c *Client, a engine.Action, instance string, t Timing) (string, error) {
	t = t.withDefaults()
	for try := 1; ; try++ {
		// Each try reads the instance afresh and decides again: a call Nova failed inside
		// (HTTP 5xx) may or may not have taken effect.
		on, err := carry(ctx, c, a, instance, t)
		if !errors.Is(err, ErrTransient) || try == transientTries {
			return on, err
		}
		if err := sleep(ctx, time.Second); err != nil {
			return "", err
		}
	}
}

// transientTries is how many times an order is tried while Nova fails inside.
const transientTries = 3

func carry(ctx context.Context, c *Client, a engine.Action, instance string, t Timing) (string, error) {
	s, err := settled(ctx, c, instance, t)
	if err != nil {
		return "", err
	}
	if a.Kind == engine.ActStart {
		return startInstance(ctx, c, a, instance, s, t)
	}
	return "", act(ctx, c, a, instance, s, t)
}

// startInstance carries out a start (s is the instance as Nova has it now) and returns the host the
// instance runs on.
func startInstance(ctx context.Context, c *Client, a engine.Action, instance string, s Server, t Timing) (string, error) {
	host := string(a.Host)
	if s.Host != host && t.Fenced != nil && !t.Fenced(s.Host) && s.Host != "" {
		host = s.Host // started again where it is (see Fenced)
	}
	if s.Host != host {
		if err := c.ForceDown(ctx, s.Host, true); err != nil {
			return "", fmt.Errorf("evacuate %s from %s: %w", instance, s.Host, err)
		}
		called(t)
		to, want := host, "ACTIVE and running on "+host
		if t.Scheduler {
			to, want = "", "ACTIVE and running on the host Nova's scheduler chose"
		}
		if err := c.Evacuate(ctx, instance, to); err != nil {
			return "", err
		}
		from, on := s.Host, ""
		err := waitFor(ctx, c, instance, t, want, func(s Server) bool {
			if (s.Host == host || (t.Scheduler && s.Host != from && s.Host != "")) &&
				s.Status == "ACTIVE" && s.PowerState == PowerRunning && s.TaskState == "" {
				on = s.Host
			}
			return on != ""
		}, func(s Server) error {
			// Nova sets the task before it answers: no task and the old host means the
			// evacuation failed and was rolled back.
			if s.TaskState == "" && s.Host == from {
				return fmt.Errorf("nova: the evacuation of %s from %s to %s failed (it is %s on %s again)", instance, from, host, s.Status, s.Host)
			}
			return nil
		})
		return on, err
	}
	if s.Status == "ACTIVE" && s.PowerState == PowerRunning && t.Runs != nil && t.Runs(host) {
		return host, nil // done already
	}
	called(t)
	var err error
	if s.Status == "SHUTOFF" {
		err = c.Start(ctx, instance)
	} else {
		err = c.Reboot(ctx, instance, true)
	}
	if err != nil {
		return "", err
	}
	return host, waitRunning(ctx, c, instance, host, t)
}

// act carries out any order but a start (s is the instance as Nova has it now).
func act(ctx context.Context, c *Client, a engine.Action, instance string, s Server, t Timing) error {
	host := string(a.Host)
	switch a.Kind {
	case engine.ActReset:
		called(t)
		if err := c.Reboot(ctx, instance, true); err != nil {
			return err
		}
		return waitRunning(ctx, c, instance, host, t)
	case engine.ActReboot:
		if err := c.Reboot(ctx, instance, false); err != nil {
			return err
		}
		return waitRunning(ctx, c, instance, host, t)
	case engine.ActShutdown, engine.ActDestroy:
		if s.Status == "SHUTOFF" {
			return nil
		}
		if err := c.Stop(ctx, instance); err != nil {
			return err
		}
		return waitFor(ctx, c, instance, t, "SHUTOFF", func(s Server) bool { return s.Status == "SHUTOFF" && s.TaskState == "" })
	case engine.ActSuspend:
		if err := c.Suspend(ctx, instance); err != nil {
			return err
		}
		return waitFor(ctx, c, instance, t, "SUSPENDED", func(s Server) bool { return s.Status == "SUSPENDED" && s.TaskState == "" })
	case engine.ActResume:
		if err := c.Resume(ctx, instance); err != nil {
			return err
		}
		return waitRunning(ctx, c, instance, host, t)
	case engine.ActMigrate:
		target := string(a.Target)
		if err := c.LiveMigrate(ctx, instance, target); err != nil {
			return err
		}
		return waitFor(ctx, c, instance, t, "ACTIVE on "+target, func(s Server) bool {
			return s.Host == target && s.Status == "ACTIVE" && s.TaskState == ""
		})
	case engine.ActDelete:
		if err := c.Delete(ctx, instance); err != nil {
			return err
		}
		return waitFor(ctx, c, instance, t, "deleted", func(Server) bool { return false })
	}
	return fmt.Errorf("nova: hass does not carry out %s through Nova", a.Kind)
}

func called(t Timing) {
	if t.OnStart != nil {
		t.OnStart()
	}
}

// settled reads the instance once no task of Nova's runs on it.
func settled(ctx context.Context, c *Client, instance string, t Timing) (Server, error) {
	end := time.Now().Add(t.Settle)
	for {
		s, err := c.Get(ctx, instance)
		if err != nil {
			return s, err
		}
		if s.TaskState == "" {
			return s, nil
		}
		if time.Now().After(end) {
			return s, fmt.Errorf("nova: instance %s: task %q still runs after %s", instance, s.TaskState, t.Settle)
		}
		if err := sleep(ctx, t.Poll); err != nil {
			return s, err
		}
	}
}

func waitRunning(ctx context.Context, c *Client, instance, host string, t Timing) error {
	return waitFor(ctx, c, instance, t, "ACTIVE and running", func(s Server) bool {
		return s.Status == "ACTIVE" && s.PowerState == PowerRunning && s.TaskState == "" && (host == "" || s.Host == host)
	})
}

// waitFor polls the instance until ok says it is done (a deleted instance is done only when
// ok is asked of nothing: a delete), ERROR, or the time is up.
func waitFor(ctx context.Context, c *Client, instance string, t Timing, what string, ok func(Server) bool, failed ...func(Server) error) error {
	end := time.Now().Add(t.Done)
	var last Server
	for {
		if err := sleep(ctx, t.Poll); err != nil {
			return err
		}
		s, err := c.Get(ctx, instance)
		switch {
		case errors.Is(err, ErrNotFound) && what == "deleted":
			return nil
		case err != nil:
			return err
		case ok(s):
			return nil
		case s.Status == "ERROR" && s.TaskState == "":
			return fmt.Errorf("nova: instance %s went to ERROR, not %s", instance, what)
		}
		for _, f := range failed {
			if err := f(s); err != nil {
				return err
			}
		}
		last = s
		if time.Now().After(end) {
			return fmt.Errorf("nova: instance %s not %s after %s (status %s, task %q, power %d, host %s)", instance, what, t.Done, last.Status, last.TaskState, last.PowerState, last.Host)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
