package engine

import (
	"testing"
	"time"
)

// A Nova instance (its policy names the instance) is operated by Nova, whose hard reboot,
// start, evacuation and migration destroy, undefine and define its domain again: none of
// that is a user's delete or stop.
func TestNovaInstanceLifecycle(t *testing.T) {
	s := time.Second
	nova := DefaultPolicy()
	nova.Instance = "6a1b7c9e-0000-4000-8000-000000000001"
	fromNova := func(op OpKind) Request { return Request{Op: op, VM: "v1", Source: SrcOpenStack} }
	tests := []struct {
		name  string
		steps []ev
	}{
		{name: "a user's hard reboot through Nova: destroyed, undefined, defined, running: not a stop, not a delete", steps: cat(std(nova), []ev{
			{at: 10 * s, in: fromNova(OpReboot), nrecs: recs(RecDetect)},
			{at: 11 * s, in: obs(2, DomShutoff, ReasonDestroyed), nrecs: recs(RecDetect, RecForget)},
			{at: 11 * s, in: obs(3, DomAbsent, ReasonUndefined), nrecs: recs(RecDetect, RecForget), check: wantDesired(WantRunning)},
			{at: 12 * s, in: obs(4, DomShutoff, ReasonUnknown), nrecs: recs(RecDetect, RecForget)},
			{at: 13 * s, in: obs(5, DomRunning, ReasonBooted), nrecs: recs(RecDetect, RecForget), check: all(wantDesired(WantRunning), wantState("healthy"))},
		})},
		{name: "a user's start through Nova of a stopped instance", steps: cat(std(nova), []ev{
			{at: 5 * s, in: fromNova(OpStop)},
			{at: 6 * s, in: obs(2, DomShutoff, ReasonDestroyed), check: wantDesired(WantStopped)},
			{at: 10 * s, in: fromNova(OpStart)},
			{at: 11 * s, in: obs(3, DomAbsent, ReasonUndefined), nrecs: recs(RecForget)},
			{at: 12 * s, in: obs(4, DomRunning, ReasonBooted), nrecs: recs(RecDetect, RecForget), check: all(wantDesired(WantRunning), wantState("healthy"))},
		})},
		{name: "a plain libvirt domain undefined behind hass's back is forgotten, as before", steps: cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: obs(2, DomShutoff, ReasonDestroyed)},
			{at: 11 * s, in: obs(3, DomAbsent, ReasonUndefined), recs: recs(RecForget)},
		})},
		{name: "hass's own reboot of a plain domain, destroyed by somebody meanwhile, still fails", steps: cat(std(DefaultPolicy()), []ev{
			{at: 10 * s, in: req(OpReboot), acts: acts("reboot@h1")},
			{at: 11 * s, in: obs(2, DomShutoff, ReasonDestroyed), check: wantLogMsg("stopped by somebody during the reboot")},
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			newHarness(t, DefaultConfig()).run(tc.steps)
		})
	}
}

// A start elsewhere that Nova's scheduler placed on another host than the one hass chose
// (the policy leaves the choice to Nova): the VM's home is where it landed.
func TestStartLandedElsewhere(t *testing.T) {
	s := time.Second
	nova := DefaultPolicy()
	nova.Instance = "6a1b7c9e-0000-4000-8000-000000000001"
	nova.NovaScheduler = true
	three := cat(std(nova), []ev{{in: AddHost{Host: "h3", MemMiB: 4096}, recs: recs(RecHost)}})
	t.Run("on a host of hass's", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(three, []ev{
			{at: 10 * s, in: HostPower{Host: "h1", Off: true}, acts: acts("start@h2"), any: true},
			{at: 15 * s, in: result{kind: ActStart, host: "h3"}, check: all(wantHome("h3"), wantLogMsg("its executor chose the host"))},
			{at: 16 * s, in: obsAt("h3", 1, DomRunning, ReasonBooted), check: all(wantHome("h3"), wantState("healthy"))},
			{at: 17 * s, in: obsAt("h2", 1, DomAbsent, ReasonUnknown), check: all(wantHome("h3"), wantState("healthy"))},
		}))
	})
	t.Run("restarts spent: relocated, but started again where it was, passing through a pause", func(t *testing.T) {
		spent := nova
		spent.NovaScheduler, spent.MaxRestarts, spent.MaxRelocations = false, 0, 1
		newHarness(t, DefaultConfig()).run(cat(std(spent), []ev{{in: AddHost{Host: "h3", MemMiB: 4096}, recs: recs(RecHost)},
			{at: 10 * s, in: obs(2, DomShutoff, ReasonFailed), acts: acts("start@h2"), any: true},
			// Nova restarts it on h1 (hass does not force a healthy compute down): first paused
			// as its start passes through, then running; the result comes last.
			{at: 11 * s, in: obsAt("h2", 1, DomAbsent, ReasonUnknown), check: wantHome("h2")},
			{at: 12 * s, in: obs(3, DomPaused, ReasonUnknown), check: all(wantHome("h1"), wantState("recovering"))},
			{at: 13 * s, in: obs(4, DomRunning, ReasonBooted), check: all(wantHome("h1"), wantState("healthy"))},
			{at: 14 * s, in: result{kind: ActStart, host: "h1"}, check: all(wantHome("h1"), wantState("healthy"))},
		}))
	})
	t.Run("on a host hass does not know", func(t *testing.T) {
		newHarness(t, DefaultConfig()).run(cat(three, []ev{
			{at: 10 * s, in: HostPower{Host: "h1", Off: true}, acts: acts("start@h2"), any: true},
			{at: 15 * s, in: result{kind: ActStart, host: "h9"}, check: all(wantState("recovering"), wantLogMsg("not a host of hass's"))},
		}))
	})
}
