package engine

import (
	"strings"
	"testing"
	"time"
)

// The guest layers' verified failures (package guest reports them): a hang is reset, a dead
// network rebooted, each counted against MaxRestarts; nothing is done while an operation, a
// pause, a stop or another recovery explains the silence.
func TestGuestLayers(t *testing.T) {
	s := time.Second
	def := DefaultPolicy()
	hung := func(seq uint64) Signal { return Signal{Host: "h1", VM: "v1", Seq: seq, Kind: SigGuestHung} }
	netDown := func(seq uint64) Signal { return Signal{Host: "h1", VM: "v1", Seq: seq, Kind: SigGuestNetDown} }
	tests := []struct {
		name  string
		steps []ev
	}{
		{name: "hung guest: reset, recovered when the reset is done", steps: cat(std(def), []ev{
			{at: 10 * s, in: hung(2), acts: acts("reset@h1"), recs: recs(RecDetect, RecAction), check: wantFailure(FailGuestHang)},
			{at: 11 * s, in: result{kind: ActReset}, recs: recs(RecRecovered), check: wantRecovered(FailGuestHang)},
		})},
		{name: "guest network down: reboot, recovered when the reboot is done", steps: cat(std(def), []ev{
			{at: 10 * s, in: netDown(2), acts: acts("reboot@h1"), recs: recs(RecDetect, RecAction), check: wantFailure(FailGuestNetwork)},
			{at: 11 * s, in: result{kind: ActReboot}, recs: recs(RecRecovered), check: wantRecovered(FailGuestNetwork)},
			// the reboot's own event afterwards is the guest rebooting, not a failure
			{at: 12 * s, in: Signal{Host: "h1", VM: "v1", Seq: 3, Kind: SigReboot}, nrecs: recs(RecDetect), check: wantState("healthy")},
		})},
		{name: "silence during a reboot the user asked for is expected", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpReboot), acts: acts("reboot@h1")},
			{at: 15 * s, in: hung(2), recs: recs(RecExpected), nrecs: recs(RecDetect), check: wantLogMsg("during reboot")},
			{at: 16 * s, in: netDown(3), nrecs: recs(RecDetect)},
		})},
		{name: "silence during a migration is expected", steps: cat(std(def), []ev{
			{at: 10 * s, in: Request{Op: OpMigrate, VM: "v1", Target: "h2"}, acts: acts("migrate@h1")},
			{at: 12 * s, in: hung(2), nrecs: recs(RecDetect), check: wantLogMsg("during migrate")},
		})},
		{name: "silence during a shutdown is expected", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpShutdown), acts: acts("shutdown@h1")},
			{at: 12 * s, in: netDown(2), nrecs: recs(RecDetect)},
		})},
		{name: "a vm the user suspended is not hung", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpSuspend), acts: acts("suspend@h1")},
			{at: 11 * s, in: result{kind: ActSuspend, seq: 2, state: DomPaused, reason: ReasonUser}},
			{at: 20 * s, in: hung(3), nrecs: recs(RecDetect), check: all(wantLogMsg("wants it paused"), wantNotRecovering)},
		})},
		{name: "a vm seen paused behind hass's back is not hung", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(2, DomPaused, ReasonUser)},
			{at: 20 * s, in: hung(3), nrecs: recs(RecDetect), check: wantNotRecovering},
		})},
		{name: "a stopped vm is not hung", steps: cat(std(def), []ev{
			{at: 10 * s, in: req(OpStop), acts: acts("destroy@h1")},
			{at: 11 * s, in: result{kind: ActDestroy, seq: 2, state: DomShutoff, reason: ReasonDestroyed}},
			{at: 20 * s, in: hung(3), nrecs: recs(RecDetect), check: wantNotRecovering},
		})},
		{name: "a report older than what is known is dropped", steps: cat(std(def), []ev{
			{at: 10 * s, in: obs(5, DomRunning, ReasonBooted)},
			{at: 11 * s, in: hung(4), nrecs: recs(RecDetect), recs: recs(RecStale)},
		})},
		{name: "a guest that hangs again and again is given up on after MaxRestarts", steps: cat(std(def), []ev{
			{at: 10 * s, in: hung(2), acts: acts("reset@h1")},
			{at: 11 * s, in: result{kind: ActReset}, recs: recs(RecRecovered)},
			// the second waits for the restart backoff (5 s), as a second restart would
			{at: 60 * s, in: hung(4), recs: recs(RecDetect)},
			{at: 65 * s, in: Tick{}, acts: acts("reset@h1")},
			{at: 66 * s, in: result{kind: ActReset}, recs: recs(RecRecovered)},
			{at: 120 * s, in: hung(6), any: true},
			{at: 180 * s, in: Tick{}, any: true},
			{at: 200 * s, in: result{kind: ActReset}, any: true},
			{at: 240 * s, in: hung(8), recs: recs(RecDetect), nacts: []ActKind{ActReset}},
			{at: 280 * s, in: Tick{}, nacts: []ActKind{ActReset}, recs: recs(RecGaveUp), check: wantLogMsg("again after 3")},
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			newHarness(t, DefaultConfig()).run(tc.steps)
		})
	}
}

func TestGuestPolicyValidate(t *testing.T) {
	ok := []GuestPolicy{
		{},
		{Heartbeat: true},
		{Probe: ProbeICMP},
		{Probe: ProbeTCP, Port: 22, Address: "10.0.0.2", ProbeInterval: time.Second, ProbeTimeout: 500 * time.Millisecond, ProbeMisses: 2},
		{Heartbeat: true, HeartbeatInterval: 3 * time.Second, HeartbeatTimeout: time.Second, HeartbeatMisses: 5, Recheck: time.Second},
	}
	for _, g := range ok {
		if err := g.Validate(); err != nil {
			t.Errorf("%+v: %v", g, err)
		}
	}
	bad := []struct {
		g     GuestPolicy
		field string
	}{
		{GuestPolicy{Probe: "udp"}, "guest-probe"},
		{GuestPolicy{Probe: ProbeTCP}, "guest-probe-port"},
		{GuestPolicy{Probe: ProbeICMP, Port: 22}, "guest-probe-port"},
		{GuestPolicy{Address: "10.0.0.2"}, "guest-address"},
		{GuestPolicy{Probe: ProbeICMP, Address: "not-an-ip"}, "guest-address"},
		{GuestPolicy{HeartbeatInterval: time.Second}, "guest-heartbeat"},
		{GuestPolicy{ProbeMisses: 2}, "guest-probe"},
		{GuestPolicy{Recheck: time.Second}, "guest-recheck"},
		{GuestPolicy{Heartbeat: true, HeartbeatInterval: time.Second, HeartbeatTimeout: 2 * time.Second}, "guest-heartbeat-timeout"},
		{GuestPolicy{Heartbeat: true, HeartbeatInterval: 10 * time.Millisecond, HeartbeatTimeout: time.Millisecond}, "guest-heartbeat-interval"},
		{GuestPolicy{Heartbeat: true, HeartbeatMisses: -1}, "guest misses"},
	}
	for _, b := range bad {
		err := b.g.Validate()
		if err == nil || !strings.Contains(err.Error(), b.field) {
			t.Errorf("%+v: got %v, want an error naming %s", b.g, err, b.field)
		}
	}
	if d := (GuestPolicy{Heartbeat: true}).WithDefaults(); d.HeartbeatInterval != 2*time.Second || d.HeartbeatMisses != 3 || d.Recheck != 2*time.Second || d.ProbeInterval != 0 {
		t.Errorf("defaults: %+v", d)
	}
}
