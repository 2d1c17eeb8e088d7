package rig_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor"
	hvlibvirt "github.com/hassproject/hass/hypervisor/libvirt"
	"github.com/hassproject/hass/lifecycle"
	"github.com/hassproject/hass/test/rig"
)

// seenAt is one report of a domain on one host, as hass's agent translates it.
type seenAt struct {
	at     time.Time
	event  bool // a lifecycle event; else a row of a domain list
	what   string
	st     engine.DomState
	reason engine.Reason
}

func (s seenAt) String() string {
	kind := "row"
	if s.event {
		kind = "event " + s.what
	}
	return fmt.Sprintf("%s %s: %s/%s", s.at.Format("15:04:05.000"), kind, s.st, s.reason)
}

// watchDomain reports every lifecycle event of vm on h, and a domain list every 20 ms, as
// hass's agent translates them (lifecycle.Translator), until stop is called.
func watchDomain(t *testing.T, r *rig.Rig, h rig.Host, vm string) (stop func() []seenAt) {
	t.Helper()
	d, err := hvlibvirt.New(hvlibvirt.Config{URI: r.URI(h)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := d.Connect(ctx); err != nil {
		cancel()
		t.Fatalf("connect to %s: %v", h, err)
	}
	var (
		mu   sync.Mutex
		seen []seenAt
		wg   sync.WaitGroup
	)
	tr := lifecycle.NewTranslator()
	add := func(s seenAt) { mu.Lock(); seen = append(seen, s); mu.Unlock() }
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ev := range d.Events() {
			if ev.Kind != hypervisor.Lifecycle || ev.Domain != vm {
				continue
			}
			mu.Lock()
			res := tr.Event(lifecycle.Event{Kind: lifecycle.KindLifecycle, Domain: vm, Type: ev.Lifecycle, Detail: ev.Detail})
			mu.Unlock()
			if !res.Skip {
				add(seenAt{at: ev.At, event: true, what: ev.String(), st: res.State, reason: res.Reason})
			}
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			at := time.Now()
			doms, err := d.List(ctx)
			if err == nil {
				for _, dom := range doms {
					if dom.Name == vm {
						mu.Lock()
						st, why := tr.Row(vm, int(dom.State), dom.Reason)
						mu.Unlock()
						add(seenAt{at: at, st: st, reason: why})
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() []seenAt {
		cancel()
		_ = d.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return append([]seenAt(nil), seen...)
	}
}

// TestIncomingCopyReason checks what hass's engine relies on to tell a live migration's
// incoming copy from a copy that lives: real libvirt shows the incoming copy at the
// destination "paused (starting up)", then "paused (migrating)", and never "paused (user)"
// until the destination has finished the migration (it then resumes it: "running
// (migrated)", or, for a guest that was paused, leaves it "paused (user)"). So a copy
// paused by a user at a migration's target is live: the VM landed there.
func TestIncomingCopyReason(t *testing.T) {
	r := rig.Up(t)
	hosts := r.Hosts()
	if len(hosts) < 3 {
		t.Fatalf("the rig has %d hosts, this test needs 3", len(hosts))
	}
	const vm = "incoming1"
	// 256 MiB at a migration bandwidth of 1 MiB/s: the incoming copy lasts a few seconds
	// (mostly zero pages), long enough for lists every 20 ms to see it.
	xml := strings.Replace(rig.GuestXML(vm), "<memory unit='MiB'>32</memory>", "<memory unit='MiB'>256</memory>", 1)
	f, err := os.CreateTemp("", "incoming-*.xml")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(xml); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := r.Virsh(hosts[0], "define", f.Name()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			_, _ = r.Virsh(h, "destroy", vm)
			_, _ = r.Virsh(h, "undefine", vm)
		}
	})
	if _, err := r.Virsh(hosts[0], "start", vm); err != nil {
		t.Fatal(err)
	}

	migrate := func(from, to rig.Host) []seenAt {
		t.Helper()
		stop := watchDomain(t, r, to, vm)
		start := time.Now()
		_, err := r.Virsh(from, "migrate", "--live", "--p2p", "--persistent", "--undefinesource", "--bandwidth", "1", vm, r.TCPURI(to))
		took := time.Since(start)
		time.Sleep(500 * time.Millisecond)
		seen := stop()
		if err != nil {
			t.Fatalf("migrate %s %s -> %s: %v", vm, from, to, err)
		}
		var b strings.Builder
		for i := 0; i < len(seen); {
			j := i + 1 // a run of the same rows is one line
			for j < len(seen) && !seen[i].event && !seen[j].event && seen[j].st == seen[i].st && seen[j].reason == seen[i].reason {
				j++
			}
			b.WriteString("\n  " + seen[i].String())
			if j-i > 1 {
				fmt.Fprintf(&b, " (x%d, to %s)", j-i, seen[j-1].at.Format("15:04:05.000"))
			}
			i = j
		}
		t.Logf("%s -> %s in %s; at %s:%s", from, to, took.Round(time.Millisecond), to, b.String())
		return seen
	}
	// incomingUntil checks the destination's reports up to the one that ends the
	// migration there (done says which), and returns its index.
	incomingUntil := func(seen []seenAt, done func(seenAt) bool) int {
		t.Helper()
		end, paused := -1, 0
		for i, s := range seen {
			if s.event && done(s) {
				end = i
				break
			}
		}
		if end < 0 {
			t.Fatalf("no event ended the migration at the destination")
		}
		for _, s := range seen[:end] {
			switch {
			case s.st == engine.DomPaused && s.reason == engine.ReasonUser:
				t.Errorf("the incoming copy was reported paused by a user before the migration ended: %s", s)
			case s.st == engine.DomPaused && (s.reason == engine.ReasonMigrated || s.reason == engine.ReasonUnknown):
				paused++
			case s.st == engine.DomAbsent:
			default:
				t.Errorf("the incoming copy was reported %s/%s before the migration ended: %s", s.st, s.reason, s)
			}
		}
		if paused == 0 {
			t.Errorf("no report of the incoming copy (paused, migrating or starting up) before the migration ended: the test saw nothing of it")
		}
		return end
	}

	// A running guest: its incoming copy is resumed when the migration ends.
	seen := migrate(hosts[0], hosts[1])
	end := incomingUntil(seen, func(s seenAt) bool { return s.st == engine.DomRunning })
	if s := seen[end]; s.reason != engine.ReasonMigrated {
		t.Errorf("the resume at the destination was reported %s/%s, not running/migrated", s.st, s.reason)
	}
	if last := seen[len(seen)-1]; last.st != engine.DomRunning || last.reason != engine.ReasonMigrated {
		t.Errorf("after the migration the destination reports %s", last)
	}

	// A guest a user paused: it stays paused at the destination, and only then, at the
	// end of the migration, is it reported paused by a user there.
	if _, err := r.Virsh(hosts[1], "suspend", vm); err != nil {
		t.Fatal(err)
	}
	seen = migrate(hosts[1], hosts[2])
	incomingUntil(seen, func(s seenAt) bool { return s.st == engine.DomPaused && s.reason == engine.ReasonUser })
	if last := seen[len(seen)-1]; last.st != engine.DomPaused || last.reason != engine.ReasonUser {
		t.Errorf("after the migration of a paused guest the destination reports %s", last)
	}
	if st, err := r.DomState(hosts[1], vm); err == nil {
		t.Errorf("the source still lists the domain after the migration: %s", st)
	}
}
