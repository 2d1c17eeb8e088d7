package sim

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor"
	"github.com/hassproject/hass/lifecycle"
)

// simDriver is one simulated host's hypervisor behind the hypervisor.Driver interface, so
// the agent's orders are carried out by agent.Carry, the executor the daemon runs, and not
// by a copy of it. Its methods act on the host's simulated domains at once and schedule what
// takes time (a guest's shutdown, the second half of a hard reboot) on the virtual clock;
// the lifecycle events they cause reach the agent directly (Connect and Events are trivial:
// the simulator delivers events itself).
//
// A call that takes virtual time (a reboot) leaves its completion in later: the executor's
// runner (agentEnv.Execute) waits for it before it reports the order's outcome, as the real
// agent waits for the libvirt call to return.
type simDriver struct {
	s *Sim
	h *host
	// current says whether the order being carried out is still current (read from the
	// store); a hard reboot checks it again before its second half.
	current func() bool
	later   func(finish func(error))
	// then is what the hypervisor does after the call returned (a guest acting on an ACPI
	// request): the runner runs it once the outcome is reported.
	then []func()
}

var _ hypervisor.Driver = (*simDriver)(nil)

// simError is a driver error with the simulator's wording that still matches the
// hypervisor package's sentinel errors (errors.Is), as libvirt's do.
type simError struct {
	msg  string
	kind error
}

func (e *simError) Error() string { return e.msg }
func (e *simError) Unwrap() error { return e.kind }

var (
	errNoLibvirt  = &simError{"cannot connect to libvirt: daemon not running", hypervisor.ErrNotConnected}
	errNotDefined = &simError{"domain not defined", hypervisor.ErrNotFound}
)

func errState(msg string) error { return &simError{msg, hypervisor.ErrInvalidState} }

// errOf turns the simulated hypervisor's reply ("" for success) into an error.
func errOf(msg string) error {
	if msg == "" {
		return nil
	}
	return errState(msg)
}

// dom returns the named domain, or why it cannot be acted on.
func (d *simDriver) dom(name string) (engine.VMID, *dom, error) {
	if !d.h.libvirtd {
		return "", nil, errNoLibvirt
	}
	id := engine.VMID(name)
	dm := d.h.doms[id]
	if dm == nil {
		return id, nil, errNotDefined
	}
	return id, dm, nil
}

func (d *simDriver) Connect(ctx context.Context) error {
	if !d.h.libvirtd {
		return errNoLibvirt
	}
	return nil
}

// Events is never read: the simulator hands each event to the agent as it happens.
func (d *simDriver) Events() <-chan hypervisor.Event { return nil }

func (d *simDriver) Close() error { return nil }

func (d *simDriver) List(ctx context.Context) ([]hypervisor.Domain, error) {
	if !d.h.libvirtd {
		return nil, errNoLibvirt
	}
	var out []hypervisor.Domain
	for _, id := range d.s.domIDs(d.h) {
		if dm := d.h.doms[id]; dm != nil {
			out = append(out, hypervisor.Domain{Name: string(id), State: hypervisor.DomainState(dm.state), Reason: dm.reason})
		}
	}
	return out, nil
}

// Start boots a defined domain. It is where the simulator checks that hass starts nothing
// the user wants down.
func (d *simDriver) Start(ctx context.Context, name string) error {
	id, dm, err := d.dom(name)
	if err != nil {
		return err
	}
	s := d.s
	t := s.vms[id]
	if t != nil {
		t.attempts = append(t.attempts, s.now)
	}
	if up(dm.state) {
		return errState("domain is already running")
	}
	if t != nil && t.wants != engine.WantRunning && t.wants != engine.WantPaused {
		if t.unseen != "" || t.pending || t.unseenStop {
			// The user's stop happened where no agent could see or store it (a
			// partitioned or agentless host), or is a shutdown the guest had not acted
			// on when the VM failed; nobody could have known. Until the user acts again,
			// every later restart follows from that same unknown stop.
			t.unseenStop = true
			s.res.Ambiguous++
			s.trace("CHECK: ambiguous: hass starts %s, which the user stopped where no agent could see it", id)
		} else {
			s.res.FalseRecoveries++
			s.trace("CHECK: false recovery: hass starts %s, which the user wants %s", id, t.wants)
			s.violation("false_recovery", id, d.h.id)
		}
	}
	s.setDom(d.h, id, dm, lifecycle.StateRunning, 1, lc(lifecycle.EvStarted, lifecycle.StartedBooted))
	return nil
}

// Define defines a domain from its XML (see simDefs).
func (d *simDriver) Define(ctx context.Context, xml string) error {
	if !d.h.libvirtd {
		return errNoLibvirt
	}
	id := engine.VMID(xmlName(xml))
	if id == "" {
		return fmt.Errorf("define: no name in %q", xml)
	}
	if d.h.doms[id] == nil {
		d.h.doms[id] = &dom{state: lifecycle.StateShutoff}
		d.s.defined(d.h, id)
	}
	return nil
}

func (d *simDriver) XML(ctx context.Context, name string) (string, error) {
	if _, _, err := d.dom(name); err != nil {
		return "", err
	}
	return domainXML(engine.VMID(name)), nil
}

func (d *simDriver) Destroy(ctx context.Context, name string) error {
	id, dm, err := d.dom(name)
	if err != nil {
		return err
	}
	if !up(dm.state) {
		return errState("domain is not running")
	}
	d.s.setDom(d.h, id, dm, lifecycle.StateShutoff, lifecycle.ShutoffDestroyed, lc(lifecycle.EvStopped, lifecycle.StoppedDestroyed))
	return nil
}

// Shutdown sends the ACPI power button; the guest (unless it ignores ACPI) shuts down a few
// seconds later.
func (d *simDriver) Shutdown(ctx context.Context, name string) error {
	id, dm, err := d.dom(name)
	if err != nil || dm.state != lifecycle.StateRunning {
		return orState(err, "domain is not running")
	}
	if dm.ignoreACPI {
		return nil
	}
	s, h, g := d.s, d.h, dm.gen
	d.then = append(d.then, func() {
		s.after(s.dur(5e9), func() {
			if dm.gen == g && h.power && dm.state == lifecycle.StateRunning {
				s.setDom(h, id, dm, lifecycle.StateShutoff, lifecycle.ShutoffShutdown,
					lc(lifecycle.EvShutdown, lifecycle.ShutdownHost), lc(lifecycle.EvStopped, lifecycle.StoppedShutdown))
			}
		})
	})
	return nil
}

// Reboot reboots the guest: inside it (a reboot event, the domain stays up), or hard (it
// goes down and boots again 2 s later: see Sim.reboot). The call returns when it is done.
func (d *simDriver) Reboot(ctx context.Context, name string) error {
	id, dm, err := d.dom(name)
	if err != nil {
		return err
	}
	hard := !dm.softReboot
	if d.s.random {
		hard = d.s.rng.IntN(2) == 0
	}
	return d.async(func(done func(string)) { d.s.reboot(d.h, id, dm, hard, d.current, done) })
}

func (d *simDriver) Reset(ctx context.Context, name string) error {
	id, dm, err := d.dom(name)
	if err != nil || !up(dm.state) {
		return orState(err, "domain is not running")
	}
	s := d.s
	s.emit(d.h, id, lifecycle.Event{Kind: lifecycle.KindReboot})
	dm.hung = false
	s.afterChange(id)
	if dm.state == lifecycle.StatePaused {
		s.setDom(d.h, id, dm, lifecycle.StateRunning, 5, lc(lifecycle.EvResumed, lifecycle.ResumedUnpaused))
	}
	return nil
}

func (d *simDriver) Suspend(ctx context.Context, name string) error {
	id, dm, err := d.dom(name)
	if err != nil || dm.state != lifecycle.StateRunning {
		return orState(err, "domain is not running")
	}
	d.s.setDom(d.h, id, dm, lifecycle.StatePaused, lifecycle.PausedUser, lc(lifecycle.EvSuspended, lifecycle.SuspendedPaused))
	return nil
}

func (d *simDriver) Resume(ctx context.Context, name string) error {
	id, dm, err := d.dom(name)
	if err != nil || dm.state != lifecycle.StatePaused {
		return orState(err, "domain is not paused")
	}
	d.s.setDom(d.h, id, dm, lifecycle.StateRunning, 5, lc(lifecycle.EvResumed, lifecycle.ResumedUnpaused))
	return nil
}

// Undefine removes the definition (the simulated hypervisor has no transient domains: hass
// destroys first).
func (d *simDriver) Undefine(ctx context.Context, name string) error {
	id, _, err := d.dom(name)
	if err != nil {
		return err
	}
	d.s.undefine(d.h, id)
	return nil
}

// orState is err, or else an invalid-state error saying msg.
func orState(err error, msg string) error {
	if err != nil {
		if errors.Is(err, hypervisor.ErrNotFound) {
			return errState(msg) // the simulator has always said so
		}
		return err
	}
	return errState(msg)
}

// async runs a hypervisor call that answers through done, now or later. An answer now is
// returned; otherwise the call goes on in virtual time and its answer goes to later's finish.
func (d *simDriver) async(call func(done func(string))) error {
	var now *string
	running := true
	var finish func(error)
	call(func(msg string) {
		if running {
			now = &msg
			return
		}
		finish(errOf(msg))
	})
	running = false
	if now != nil {
		return errOf(*now)
	}
	d.later = func(f func(error)) { finish = f }
	return nil
}

// Migrate live-migrates a domain to the simulated host its URI names (see simDefs): the
// simulated hypervisor's migration, which takes virtual time (Sim.migrate).
func (d *simDriver) Migrate(ctx context.Context, name, destURI string) error {
	if !d.h.libvirtd {
		return errNoLibvirt
	}
	id := engine.VMID(name)
	dst, ok := strings.CutPrefix(destURI, "sim:///")
	if !ok {
		return fmt.Errorf("migrate %s: %q is not a simulated host's URI", name, destURI)
	}
	return d.async(func(done func(string)) {
		d.s.migrate(d.h, id, d.h.doms[id], d.s.hostByID[engine.HostID(dst)], done)
	})
}

// simDefs is the simulated store: a protected VM that was not deleted has a stored
// definition, and every host takes migrations at sim:///NAME.
type simDefs struct{ s *Sim }

func (sd simDefs) MigrationURI(ctx context.Context, host engine.HostID) (string, error) {
	return "sim:///" + string(host), nil
}

func (sd simDefs) DomainXML(ctx context.Context, vm engine.VMID) (string, error) {
	if t := sd.s.vms[vm]; t != nil && !t.gone {
		return domainXML(vm), nil
	}
	return "", fmt.Errorf("%s has no stored definition", vm)
}

func domainXML(vm engine.VMID) string { return "<domain><name>" + string(vm) + "</name></domain>" }

func xmlName(xml string) string {
	_, rest, ok := strings.Cut(xml, "<name>")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "</name>")
	return name
}
