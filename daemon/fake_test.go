package daemon

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hassproject/hass/hypervisor"
)

// fakeDriver is a hypervisor stand-in for the daemon's own tests: domains in memory that
// emit libvirt's events. The real driver is tested against real libvirtd in
// hypervisor/libvirt and test/e2e; this one lets the daemon's restart and storage paths be
// tested quickly and deterministically over a real embedded etcd.
type fakeDriver struct {
	mu        sync.Mutex
	doms      map[string]*fakeDom
	events    chan hypervisor.Event
	connected bool
	down      bool          // "libvirtd" is not running: Connect and every call fail
	startGate chan struct{} // when set, Start blocks until it is closed
	startedAt []time.Time   // when Start was called, each time
	calls     []string      // "start name", "destroy name", ...
}

type fakeDom struct {
	state      hypervisor.DomainState
	reason     int
	ignoreACPI bool
}

func newFakeDriver() *fakeDriver { return &fakeDriver{doms: map[string]*fakeDom{}} }

func (f *fakeDriver) add(name string, running bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := &fakeDom{state: hypervisor.Shutoff, reason: hypervisor.ShutoffUnknown, ignoreACPI: true}
	if running {
		d.state, d.reason = hypervisor.Running, hypervisor.RunningBooted
	}
	f.doms[name] = d
}

func (f *fakeDriver) callsOf(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if len(c) >= len(prefix) && c[:len(prefix)] == prefix {
			n++
		}
	}
	return n
}

func (f *fakeDriver) state(name string) hypervisor.DomainState {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.doms[name]; d != nil {
		return d.state
	}
	return hypervisor.NoState
}

// emit sends a lifecycle event if connected. Callers hold f.mu.
func (f *fakeDriver) emit(name string, typ, detail int) {
	if !f.connected || f.events == nil {
		return
	}
	f.events <- hypervisor.Event{Kind: hypervisor.Lifecycle, Domain: name, Lifecycle: typ, Detail: detail, At: time.Now()}
}

// crash kills a running domain's emulator, as kill -9 does.
func (f *fakeDriver) crash(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.doms[name]
	d.state, d.reason = hypervisor.Shutoff, hypervisor.ShutoffFailed
	f.emit(name, hypervisor.EventStopped, hypervisor.StoppedFailed)
}

// setDown stops or starts "libvirtd": stopping it drops the connection.
func (f *fakeDriver) startCalls() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.startedAt)
}

func (f *fakeDriver) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	if down && f.connected {
		f.connected = false
		close(f.events)
		f.events = nil
	}
}

func (f *fakeDriver) Connect(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return fmt.Errorf("connect: %w", hypervisor.ErrNotConnected)
	}
	if f.connected {
		close(f.events)
	}
	f.events = make(chan hypervisor.Event, 1024)
	f.connected = true
	return nil
}

func (f *fakeDriver) Events() <-chan hypervisor.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events
}

func (f *fakeDriver) List(ctx context.Context) ([]hypervisor.Domain, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.connected {
		return nil, hypervisor.ErrNotConnected
	}
	var out []hypervisor.Domain
	for n, d := range f.doms {
		out = append(out, hypervisor.Domain{Name: n, UUID: fakeUUID(n), State: d.state, Reason: d.reason, MemoryKiB: 32 << 10})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// op runs fn on a domain under the lock, recording the call.
func (f *fakeDriver) op(kind, name string, fn func(d *fakeDom) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.connected {
		return &hypervisor.OpError{Op: kind, Domain: name, Err: hypervisor.ErrNotConnected}
	}
	f.calls = append(f.calls, kind+" "+name)
	d := f.doms[name]
	if d == nil {
		return &hypervisor.OpError{Op: kind, Domain: name, Err: hypervisor.ErrNotFound}
	}
	return fn(d)
}

func (f *fakeDriver) Start(ctx context.Context, name string) error {
	f.mu.Lock()
	gate := f.startGate
	f.startedAt = append(f.startedAt, time.Now())
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.op("start", name, func(d *fakeDom) error {
		if d.state == hypervisor.Running {
			return &hypervisor.OpError{Op: "start", Domain: name, Err: hypervisor.ErrInvalidState}
		}
		d.state, d.reason = hypervisor.Running, hypervisor.RunningBooted
		f.emit(name, hypervisor.EventStarted, hypervisor.StartedBooted)
		return nil
	})
}

func (f *fakeDriver) Destroy(ctx context.Context, name string) error {
	return f.op("destroy", name, func(d *fakeDom) error {
		if d.state != hypervisor.Running && d.state != hypervisor.Paused {
			return &hypervisor.OpError{Op: "destroy", Domain: name, Err: hypervisor.ErrInvalidState}
		}
		d.state, d.reason = hypervisor.Shutoff, hypervisor.ShutoffDestroyed
		f.emit(name, hypervisor.EventStopped, hypervisor.StoppedDestroyed)
		return nil
	})
}

func (f *fakeDriver) Shutdown(ctx context.Context, name string) error {
	return f.op("shutdown", name, func(d *fakeDom) error {
		if d.state != hypervisor.Running {
			return &hypervisor.OpError{Op: "shutdown", Domain: name, Err: hypervisor.ErrInvalidState}
		}
		if !d.ignoreACPI {
			d.state, d.reason = hypervisor.Shutoff, hypervisor.ShutoffShutdown
			f.emit(name, hypervisor.EventShutdown, hypervisor.ShutdownHost)
			f.emit(name, hypervisor.EventStopped, hypervisor.StoppedShutdown)
		}
		return nil
	})
}

func (f *fakeDriver) Reboot(ctx context.Context, name string) error {
	return f.op("reboot", name, func(d *fakeDom) error { return nil })
}

func (f *fakeDriver) Reset(ctx context.Context, name string) error {
	return f.op("reset", name, func(d *fakeDom) error { return nil })
}

func (f *fakeDriver) Suspend(ctx context.Context, name string) error {
	return f.op("suspend", name, func(d *fakeDom) error {
		d.state, d.reason = hypervisor.Paused, hypervisor.PausedUser
		f.emit(name, hypervisor.EventSuspended, hypervisor.SuspendedPaused)
		return nil
	})
}

func (f *fakeDriver) Resume(ctx context.Context, name string) error {
	return f.op("resume", name, func(d *fakeDom) error {
		d.state, d.reason = hypervisor.Running, hypervisor.RunningUnpaused
		f.emit(name, hypervisor.EventResumed, hypervisor.ResumedUnpaused)
		return nil
	})
}

func (f *fakeDriver) Undefine(ctx context.Context, name string) error {
	return f.op("undefine", name, func(d *fakeDom) error {
		delete(f.doms, name)
		f.emit(name, hypervisor.EventUndefined, hypervisor.UndefinedRemoved)
		return nil
	})
}

func (f *fakeDriver) Define(ctx context.Context, xml string) error { return nil }

func (f *fakeDriver) XML(ctx context.Context, name string) (string, error) { return "", nil }

func (f *fakeDriver) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.connected {
		f.connected = false
		close(f.events)
		f.events = nil
	}
	return nil
}

func (f *fakeDriver) Migrate(ctx context.Context, name, destURI string) error {
	return errors.New("the fake hypervisor does not migrate")
}

// fakeUUID is a domain's uuid, made from its name (as a Nova instance's domain has the
// instance's uuid).
func fakeUUID(name string) string {
	h := sha256.Sum256([]byte(name))
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}
