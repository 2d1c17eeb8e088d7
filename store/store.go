// Package store keeps hass's state in etcd, under the prefix /hass/v1/: the VMs hass
// protects (with their policy and desired state), the event log, and the actions a
// controller has recorded before carrying them out.
//
// The store never decides anything: it does not classify, recover, place or fence. It only
// stores, validates what it is given, and reports what it finds, including records it cannot
// read (it never silently drops or repairs data). Every key it touches lives under /hass/v1/.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/hassproject/hass/vmname"
)

// ErrNotFound is returned (wrapped) when a VM or action does not exist.
var ErrNotFound = errors.New("not found")

// Keys. Sequence numbers and action IDs are zero-padded to 20 digits so that key order is
// numeric order.
const (
	prefix          = "/hass/v1/"
	vmPrefix        = prefix + "vms/"
	eventPrefix     = prefix + "events/"
	optOutPrefix    = prefix + "optout/"
	eventSeqKey     = prefix + "meta/event_seq"
	maxEventsPerTxn = 100 // etcd's default max-txn-ops is 128; one op is the counter
)

// defaultOpTimeout bounds a store call whose context has no deadline: clientv3 otherwise
// retries forever while etcd is unreachable.
const defaultOpTimeout = 15 * time.Second

func vmKey(name string) string   { return vmPrefix + name }
func eventKey(seq uint64) string { return fmt.Sprintf("%s%020d", eventPrefix, seq) }

// Store is hass's state in etcd. It is safe for concurrent use.
type Store struct {
	cli  *clientv3.Client
	etcd *embed.Etcd // nil when connected to an external cluster
	// closing quiets the errors etcd logs while it shuts down.
	closing *atomic.Bool
	log     *slog.Logger

	// Embedded only: the data dir, the lock on it, the free space writes need.
	dir     string
	lock    *os.File
	minFree int64
	low     atomic.Bool // writes are being refused for want of space

	// life ends, with the cause, when the store fails or is closed.
	life context.Context
	fail context.CancelCauseFunc
	wg   sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	// The event counter as this store last wrote it, to append without reading it first.
	counterMu    sync.Mutex
	counterKnown bool
	counterLast  uint64
	counterRev   int64

	// bigTxns: every etcd member is one hass embeds, which takes embeddedMaxTxnOps
	// operations per transaction (see txn.go).
	bigTxns bool

	// obs, if set, is told of every event-log write (see observe.go).
	obs atomic.Pointer[Observer]
	// opTimeout bounds a call whose context has no deadline (0: defaultOpTimeout).
	opTimeout time.Duration
}

// ErrClosed is the cause Err reports once Close was called (and nothing failed before).
var ErrClosed = errors.New("store: closed")

// ErrNoSpace is returned (wrapped) by every write while the data dir's filesystem has less
// free space than the store keeps (EmbeddedConfig.MinFree): nothing is written, and so the
// daemon carries nothing out, until space is freed.
var ErrNoSpace = errors.New("not enough free disk space to record anything")

// Done is closed when the store can no longer be used: the embedded etcd hit a fatal error
// (a failed disk write) or stopped, or its data dir was deleted, or Close was called. Err
// then says why. A daemon should stop when it is closed.
func (s *Store) Done() <-chan struct{} { return s.life.Done() }

// Err is nil while the store is usable, then why it is not (ErrClosed after Close).
func (s *Store) Err() error {
	if s.life.Err() == nil {
		return nil
	}
	return context.Cause(s.life)
}

// Close closes the client and, for an embedded etcd, stops the server (waiting for it at
// most 10 s, or 2 s once the store failed) and releases the data dir. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.closing != nil {
			s.closing.Store(true)
		}
		timeout := closeTimeout
		if s.Err() != nil {
			timeout = failedCloseTimeout
		}
		s.fail(ErrClosed)
		if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			s.closeErr = fmt.Errorf("store: close client: %w", err)
		}
		stopped := true
		if s.etcd != nil {
			stopped = closeEtcd(s.etcd, timeout)
		}
		s.wg.Wait()
		if !stopped {
			// Keep the lock: etcd may still hold its files.
			s.closeErr = errors.Join(s.closeErr, fmt.Errorf("store: embedded etcd did not stop within %s", timeout))
			return
		}
		if s.lock != nil {
			s.lock.Close()
		}
	})
	return s.closeErr
}

// Endpoints returns the client endpoints the store talks to; for an embedded etcd, its unix
// socket, unix:///DATADIR/client.sock (etcdctl --endpoints takes it, as root, for debugging).
func (s *Store) Endpoints() []string { return s.cli.Endpoints() }

// Health is nil when the store can be read and written, else why not: it failed (Err), or
// writes are refused for want of disk space (ErrNoSpace), or a read failed.
func (s *Store) Health(ctx context.Context) error {
	if err := s.writable(); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if _, err := s.cli.Get(ctx, eventSeqKey); err != nil {
		return fmt.Errorf("store: read: %w", s.cause(err))
	}
	return nil
}

// Writable is nil when a write may be attempted now, else why not (a failed store, or
// ErrNoSpace): callers refuse a user's request up front rather than accept what cannot be
// recorded.
func (s *Store) Writable() error { return s.writable() }

// writable is nil when a write may be attempted: the store has not failed, and (embedded)
// its filesystem has the free space it keeps. It logs when writes stop and resume.
func (s *Store) writable() error {
	if err := s.Err(); err != nil {
		return err
	}
	if s.minFree <= 0 || s.dir == "" {
		return nil
	}
	free, err := freeBytes(s.dir)
	if err != nil {
		return nil // the dir is gone or unreadable: watch reports it
	}
	if free < s.minFree {
		err := kindErrorf(ErrNoSpace, "writes refused: %d MiB free on the filesystem of %s, and hass keeps %d MiB free "+
			"there so that etcd never fails a write (it cannot go on after one); free some space", free>>20, s.dir, s.minFree>>20)
		if !s.low.Swap(true) {
			s.log.Error("store: writes refused until disk space is freed: nothing is recorded, so nothing is carried out", "err", err)
		}
		return err
	}
	if s.low.Swap(false) {
		s.log.Info("store: disk space is back: writes resume", "dir", s.dir, "free_mib", free>>20)
	}
	return nil
}

// opCtx bounds a store call: by defaultOpTimeout when ctx has no deadline (clientv3 otherwise
// retries forever while etcd is unreachable), and by the store's life.
func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	cancelTimeout := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		d := s.opTimeout
		if d <= 0 {
			d = defaultOpTimeout
		}
		ctx, cancelTimeout = context.WithTimeout(ctx, d)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.life, func() { cancel(context.Cause(s.life)) })
	return ctx, func() {
		stop()
		cancel(nil)
		cancelTimeout()
	}
}

// cause is err, or why the store failed if it did: a call cut short by the failure reports
// the failure, not "context canceled".
func (s *Store) cause(err error) error {
	if f := s.Err(); f != nil && errors.Is(err, context.Canceled) {
		return f
	}
	return err
}

// Duration is a time.Duration that is JSON-encoded as a Go duration string ("10m0s").
type Duration time.Duration

// MarshalJSON encodes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts a Go duration string. The error names the bad value; inside a
// struct, encoding/json also names the field (it is a *json.UnmarshalTypeError).
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // encoding/json's convention: null leaves the value alone
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: "duration " + string(b), Type: durationType}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("duration %q", s), Type: durationType}
	}
	*d = Duration(v)
	return nil
}

var durationType = reflect.TypeFor[Duration]()

// String is the Go duration string.
func (d Duration) String() string { return time.Duration(d).String() }

// Policy is how a VM is protected.
type Policy struct {
	MaxRestarts     int      `json:"max_restarts"`
	Window          Duration `json:"window"`
	MaxRelocations  int      `json:"max_relocations"`
	OnGuestShutdown string   `json:"on_guest_shutdown"` // honour | restart
	Priority        int      `json:"priority"`
	AntiAffinity    string   `json:"anti_affinity,omitempty"`
	// AntiAffinityHard: the group is a rule (never two on one host), not a preference.
	AntiAffinityHard bool `json:"anti_affinity_hard,omitempty"`
	// Guest: the guest layers the host's agent watches (nil: none).
	Guest *GuestPolicy `json:"guest,omitempty"`
	// Instance: under OpenStack, the Nova instance (uuid) the VM is, operated through Nova.
	Instance string `json:"nova_instance,omitempty"`
	// NovaScheduler: an evacuation's target is left to Nova's scheduler.
	NovaScheduler bool `json:"nova_scheduler,omitempty"`
}

// VM is one protected VM: the user's intent and policy, and what the engine needs to go on
// after a restart (the operation in flight, the failure being recovered, restart history).
type VM struct {
	Name    string `json:"name"`
	Host    string `json:"host"`
	MemMiB  int    `json:"mem_mib"`
	VCPUs   int    `json:"vcpus,omitempty"`
	Cluster string `json:"cluster,omitempty"` // the cluster it belongs to ("" in records from before clusters: its home's)
	Policy  Policy `json:"policy"`
	Desired string `json:"desired"` // running | paused | stopped | absent (only with a delete in flight)

	Gen         uint64      `json:"gen,omitempty"` // intent generation (fencing token of its actions)
	Op          *Op         `json:"op,omitempty"`
	Failure     *Failure    `json:"failure,omitempty"`
	Restarts    []time.Time `json:"restarts,omitempty"`  // restarts in place within the policy window
	FailedOn    []FailedOn  `json:"failed_on,omitempty"` // hosts it failed on lately, for placement
	Relocations int         `json:"relocations,omitempty"`
	Errored     bool        `json:"errored,omitempty"` // hass gave up on it until a user acts
	IntentSeq   uint64      `json:"intent_seq,omitempty"`
	Ambiguous   bool        `json:"ambiguous,omitempty"`

	Rev int64 `json:"-"` // etcd mod revision, set on read
}

// FailedOn is a failure of the VM on a host.
type FailedOn struct {
	Host string    `json:"host"`
	At   time.Time `json:"at"`
}

// Op is a user operation in flight, with its deadline.
type Op struct {
	ID        uint64    `json:"id"`
	Kind      string    `json:"kind"`   // start | shutdown | stop | reboot | delete | migrate | suspend | resume
	Source    string    `json:"source"` // api | libvirt | openstack | guest
	Target    string    `json:"target,omitempty"`
	Started   time.Time `json:"started"`
	Deadline  time.Time `json:"deadline"`
	Escalated bool      `json:"escalated,omitempty"` // a shutdown turned into a destroy
	Prev      string    `json:"prev"`                // desired state before it
	BaseSeq   uint64    `json:"base_seq,omitempty"`
	Home      string    `json:"home"`
	SawDown   bool      `json:"saw_down,omitempty"`
	Pending   bool      `json:"pending,omitempty"` // its action was issued and not answered
	Tries     int       `json:"tries,omitempty"`   // times its action was issued again after its deadline
}

// Failure is a failure being recovered.
type Failure struct {
	Kind              string    `json:"kind"`
	FaultAt           time.Time `json:"fault_at"`
	DetectAt          time.Time `json:"detect_at"`
	ActionAt          time.Time `json:"action_at,omitzero"`
	Attempts          int       `json:"attempts"`
	Next              time.Time `json:"next,omitzero"`
	InFlight          bool      `json:"in_flight,omitempty"`
	ActHost           string    `json:"act_host,omitempty"`
	Evacuate          bool      `json:"evacuate,omitempty"`
	NoCapacityAlerted bool      `json:"no_capacity_alerted,omitempty"`
}

var (
	opKinds   = []string{"start", "shutdown", "stop", "reboot", "delete", "migrate", "suspend", "resume"}
	opSources = []string{"api", "libvirt", "openstack", "guest", "maintenance"}
	desireds  = []string{"running", "paused", "stopped"}
)

// validName checks a VM name by hass's one rule (package vmname), the API's: a libvirt domain
// name, which holds no '/', so a VM's key is one level under vmPrefix.
func validName(name string) error {
	if err := vmname.Check(name); err != nil {
		return fieldErr("name", "%q: %v (want %s)", name, err, vmname.Rule)
	}
	return nil
}

// FieldError says which field of a record is bad, and why.
type FieldError struct {
	Field string // the field's JSON path, e.g. "policy.window"
	Msg   string // its value and what is wrong with it, e.g. `"0s": must be > 0`
}

func (e *FieldError) Error() string { return e.Field + " " + e.Msg }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Validate names the first bad field (a *FieldError).
func (v VM) Validate() error {
	if err := validName(v.Name); err != nil {
		return err
	}
	switch {
	case v.Desired == "absent" && (v.Op == nil || v.Op.Kind != "delete"):
		return fieldErr("desired", "%q: only with a delete in flight", v.Desired)
	case v.Desired != "absent" && !slices.Contains(desireds, v.Desired):
		return fieldErr("desired", "%q: want running, paused or stopped", v.Desired)
	case v.MemMiB < 0:
		return fieldErr("mem_mib", "%d: must be >= 0", v.MemMiB)
	case v.VCPUs < 0:
		return fieldErr("vcpus", "%d: must be >= 0", v.VCPUs)
	case v.Cluster != "" && CheckClusterName(v.Cluster) != nil:
		return fieldErr("cluster", "%v", CheckClusterName(v.Cluster))
	case v.Policy.MaxRestarts < 0:
		return fieldErr("policy.max_restarts", "%d: must be >= 0", v.Policy.MaxRestarts)
	case v.Policy.Window <= 0:
		return fieldErr("policy.window", "%s: must be > 0", v.Policy.Window)
	case v.Policy.MaxRelocations < 0:
		return fieldErr("policy.max_relocations", "%d: must be >= 0", v.Policy.MaxRelocations)
	case v.Policy.OnGuestShutdown != "honour" && v.Policy.OnGuestShutdown != "restart":
		return fieldErr("policy.on_guest_shutdown", "%q: want honour or restart", v.Policy.OnGuestShutdown)
	case v.Relocations < 0:
		return fieldErr("relocations", "%d: must be >= 0", v.Relocations)
	}
	if g := v.Policy.Guest; g != nil {
		if err := g.Validate(); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return fieldErr("policy.guest."+fe.Field, "%s", fe.Msg)
			}
			return err
		}
	}
	if op := v.Op; op != nil {
		switch {
		case op.ID == 0:
			return fieldErr("op.id", "must be >= 1")
		case !slices.Contains(opKinds, op.Kind):
			return fieldErr("op.kind", "%q: want one of %s", op.Kind, strings.Join(opKinds, ", "))
		case !slices.Contains(opSources, op.Source):
			return fieldErr("op.source", "%q: want one of %s", op.Source, strings.Join(opSources, ", "))
		case !slices.Contains(desireds, op.Prev) && op.Prev != "absent":
			return fieldErr("op.prev", "%q: want running, paused, stopped or absent", op.Prev)
		case op.Deadline.IsZero():
			return fieldErr("op.deadline", "missing")
		case op.Home == "":
			return fieldErr("op.home", "missing")
		case op.Tries < 0:
			return fieldErr("op.tries", "%d: must be >= 0", op.Tries)
		}
	}
	if f := v.Failure; f != nil {
		switch {
		case f.Kind == "":
			return fieldErr("failure.kind", "missing")
		case f.Attempts < 0:
			return fieldErr("failure.attempts", "%d: must be >= 0", f.Attempts)
		case f.DetectAt.IsZero():
			return fieldErr("failure.detect_at", "missing")
		}
	}
	return nil
}

// decodeVM decodes and validates the record stored under key. It either errors (naming the
// key, and the field when there is one to name) or returns a valid VM whose name matches key.
func decodeVM(key string, value []byte) (VM, error) {
	var v VM
	if err := json.Unmarshal(value, &v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return VM{}, fmt.Errorf("decode %s: not a JSON record: %w", key, err)
		}
		return VM{}, fmt.Errorf("decode %s: %w", key, err)
	}
	if err := v.Validate(); err != nil {
		return VM{}, fmt.Errorf("decode %s: %w", key, err)
	}
	if want := strings.TrimPrefix(key, vmPrefix); v.Name != want {
		return VM{}, fmt.Errorf("decode %s: %w", key, fieldErr("name", "%q: does not match the key", v.Name))
	}
	return v, nil
}

// BadRecord is a stored record that cannot be used, and why.
type BadRecord struct {
	Key string // its etcd key, e.g. /hass/v1/vms/web1
	// Field is the bad field's JSON path ("policy.window"), or "" when the record is not
	// JSON at all.
	Field string
	Err   error // what is wrong; its message names the key, and the field if there is one
}

func (b BadRecord) Error() string { return b.Err.Error() }

func badRecord(key string, err error) BadRecord {
	b := BadRecord{Key: key, Err: err}
	var fe *FieldError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &fe):
		b.Field = fe.Field
	case errors.As(err, &te):
		b.Field = te.Field
	}
	return b
}

// PutVM creates or replaces a VM. Nothing is written if v is invalid.
func (s *Store) PutVM(ctx context.Context, v VM) error {
	if err := v.Validate(); err != nil {
		return fmt.Errorf("store: put vm %q: %w", v.Name, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: put vm %q: %w", v.Name, err)
	}
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: put vm %q: %w", v.Name, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if _, err := s.cli.Put(ctx, vmKey(v.Name), string(b)); err != nil {
		return fmt.Errorf("store: put vm %q: %w", v.Name, s.cause(err))
	}
	return nil
}

// DeleteVM deletes a VM; ErrNotFound if there was none.
func (s *Store) DeleteVM(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return fmt.Errorf("store: delete vm %q: %w", name, err)
	}
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: delete vm %q: %w", name, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Delete(ctx, vmKey(name))
	if err != nil {
		return fmt.Errorf("store: delete vm %q: %w", name, s.cause(err))
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("store: delete vm %q: %w", name, ErrNotFound)
	}
	return nil
}

// SetOptOut records (out=true) or clears that a user unprotected a VM on purpose, so that
// protecting every domain of a host (hass up --protect-all) leaves it alone, across restarts.
func (s *Store) SetOptOut(ctx context.Context, name string, out bool) error {
	if err := validName(name); err != nil {
		return fmt.Errorf("store: opt-out %q: %w", name, err)
	}
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: opt-out %q: %w", name, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var err error
	if out {
		_, err = s.cli.Put(ctx, optOutPrefix+name, "1")
	} else {
		_, err = s.cli.Delete(ctx, optOutPrefix+name)
	}
	if err != nil {
		return fmt.Errorf("store: opt-out %q: %w", name, s.cause(err))
	}
	return nil
}

// OptOuts lists the VMs users unprotected on purpose.
func (s *Store) OptOuts(ctx context.Context) (map[string]bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, optOutPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("store: list opt-outs: %w", s.cause(err))
	}
	out := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), optOutPrefix)] = true
	}
	return out, nil
}

// VM returns one VM; ErrNotFound if there is none.
func (s *Store) VM(ctx context.Context, name string) (VM, error) {
	if err := validName(name); err != nil {
		return VM{}, fmt.Errorf("store: get vm %q: %w", name, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, vmKey(name))
	if err != nil {
		return VM{}, fmt.Errorf("store: get vm %q: %w", name, s.cause(err))
	}
	if len(resp.Kvs) == 0 {
		return VM{}, fmt.Errorf("store: get vm %q: %w", name, ErrNotFound)
	}
	kv := resp.Kvs[0]
	v, err := decodeVM(string(kv.Key), kv.Value)
	if err != nil {
		return VM{}, fmt.Errorf("store: get vm %q: %w", name, err)
	}
	v.Rev = kv.ModRevision
	return v, nil
}

// VMs lists every VM, sorted by name. A record that cannot be decoded fails the whole
// listing with an error naming its key; LoadVMs loads the others and reports it apart.
func (s *Store) VMs(ctx context.Context) ([]VM, error) {
	vms, bad, err := s.LoadVMs(ctx)
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("store: list vms: %w", bad[0].Err)
	}
	return vms, nil
}

// LoadVMs lists every VM record: the valid ones, sorted by name, and apart from them each
// record that cannot be used (not JSON, a field of the wrong type or out of range, a name
// that does not match its key), with its key and the bad field, sorted by key. One bad record
// never hides the others: a daemon protects the VMs it can and reports the rest. err is only
// for the store itself (unreachable, failed); both lists are then nil.
func (s *Store) LoadVMs(ctx context.Context) (vms []VM, bad []BadRecord, err error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, vmPrefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, nil, fmt.Errorf("store: list vms: %w", s.cause(err))
	}
	vms = make([]VM, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v, err := decodeVM(string(kv.Key), kv.Value)
		if err != nil {
			bad = append(bad, badRecord(string(kv.Key), err))
			continue
		}
		v.Rev = kv.ModRevision
		vms = append(vms, v)
	}
	return vms, bad, nil
}

// Event is one entry of hass's event log.
type Event struct {
	Seq         uint64     `json:"seq"`
	At          time.Time  `json:"at"`
	Type        string     `json:"type"`
	VM          string     `json:"vm"`
	Host        string     `json:"host"`
	Kind        string     `json:"kind"`
	Msg         string     `json:"msg"`
	FaultAt     *time.Time `json:"fault_at,omitempty"`
	DetectAt    *time.Time `json:"detect_at,omitempty"`
	ActionAt    *time.Time `json:"action_at,omitempty"`
	RecoveredAt *time.Time `json:"recovered_at,omitempty"`
}

// appendEvents gives each event the next sequence number and stores it. The counter and
// the events are written in one transaction, conditional on the counter's mod revision, so
// numbers never repeat or skip, even with concurrent writers. Batches above 100 events (1,000
// on an embedded etcd, see txn.go) are written in several transactions (each gap-free, but another writer's events may land in
// between). It returns the events with Seq set; on an error, those already stored.
func (s *Store) appendEvents(ctx context.Context, evs []Event) ([]Event, error) {
	out := make([]Event, 0, len(evs))
	for len(evs) > 0 {
		n := min(len(evs), s.eventsPerTxn())
		done, err := s.appendBatch(ctx, evs[:n])
		if err != nil {
			return out, err
		}
		out = append(out, done...)
		evs = evs[n:]
	}
	return out, nil
}

func (s *Store) appendBatch(ctx context.Context, evs []Event) ([]Event, error) {
	if err := s.writable(); err != nil {
		return nil, fmt.Errorf("store: append events: %w", err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	for {
		resp, err := s.cli.Get(ctx, eventSeqKey)
		if err != nil {
			return nil, fmt.Errorf("store: append events: get %s: %w", eventSeqKey, s.cause(err))
		}
		var last uint64
		var rev int64 // 0: the counter does not exist yet
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
			last, err = strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("store: append events: decode %s: %w", eventSeqKey, err)
			}
		}
		out := make([]Event, len(evs))
		ops := make([]clientv3.Op, 0, len(evs)+1)
		for i, e := range evs {
			e.Seq = last + uint64(i) + 1
			b, err := json.Marshal(e)
			if err != nil {
				return nil, fmt.Errorf("store: append events: encode event: %w", err)
			}
			out[i] = e
			ops = append(ops, clientv3.OpPut(eventKey(e.Seq), string(b)))
		}
		next := last + uint64(len(evs))
		ops = append(ops, clientv3.OpPut(eventSeqKey, strconv.FormatUint(next, 10)))
		tresp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(eventSeqKey), "=", rev)).
			Then(ops...).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("store: append events %d..%d: %w", last+1, next, s.cause(err))
		}
		if tresp.Succeeded {
			return out, nil
		}
		// Another writer took these numbers first: read the counter again.
	}
}

// Events returns up to limit events with Seq > afterSeq, ascending. limit <= 0 means all.
func (s *Store) Events(ctx context.Context, afterSeq uint64, limit int) ([]Event, error) {
	if afterSeq == ^uint64(0) {
		return nil, nil
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	opts := []clientv3.OpOption{
		clientv3.WithRange(clientv3.GetPrefixRangeEnd(eventPrefix)),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend),
	}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := s.cli.Get(ctx, eventKey(afterSeq+1), opts...)
	if err != nil {
		return nil, fmt.Errorf("store: list events after %d: %w", afterSeq, s.cause(err))
	}
	evs := make([]Event, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		e, err := decodeEvent(string(kv.Key), kv.Value)
		if err != nil {
			return nil, fmt.Errorf("store: list events after %d: %w", afterSeq, err)
		}
		evs = append(evs, e)
	}
	return evs, nil
}

func decodeEvent(key string, value []byte) (Event, error) {
	seq, err := strconv.ParseUint(strings.TrimPrefix(key, eventPrefix), 10, 64)
	if err != nil {
		return Event{}, fmt.Errorf("decode %s: bad sequence number in the key", key)
	}
	var e Event
	if err := json.Unmarshal(value, &e); err != nil {
		return Event{}, fmt.Errorf("decode %s: %w", key, err)
	}
	if e.Seq != seq {
		return Event{}, fmt.Errorf("decode %s: seq %d does not match the key", key, e.Seq)
	}
	return e, nil
}

// TrimEvents deletes all but the newest keep events.
func (s *Store) TrimEvents(ctx context.Context, keep int) error {
	if keep < 0 {
		return fmt.Errorf("store: trim events: keep %d: must be >= 0", keep)
	}
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: trim events to %d: %w", keep, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	// The newest keep+1 keys; the last of them is the newest one to delete.
	resp, err := s.cli.Get(ctx, eventPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(keep)+1))
	if err != nil {
		return fmt.Errorf("store: trim events to %d: %w", keep, s.cause(err))
	}
	if len(resp.Kvs) <= keep {
		return nil
	}
	end := string(resp.Kvs[keep].Key) + "\x00"
	if _, err := s.cli.Delete(ctx, eventPrefix, clientv3.WithRange(end)); err != nil {
		return fmt.Errorf("store: trim events to %d: %w", keep, s.cause(err))
	}
	return nil
}

// Action is something a controller is about to do, recorded before it is carried out
// (PutAction) and deleted once done (DeleteAction), so that a controller that crashed in
// between finds it with PendingActions.
type Action struct {
	ID     uint64    `json:"id"`
	Kind   string    `json:"kind"`
	VM     string    `json:"vm"`
	Host   string    `json:"host"`
	Target string    `json:"target"`
	Why    string    `json:"why"`
	Gen    uint64    `json:"gen"`
	Term   int64     `json:"term,omitempty"` // the leading controller's term (its election key's create revision)
	At     time.Time `json:"at"`
	Rev    int64     `json:"-"` // the store revision it was written at (when read back)
}

// PutAction records an action (creating or replacing the one with the same ID).
func (s *Store) PutAction(ctx context.Context, a Action) error {
	if err := vmname.CheckHost(a.Host); err != nil {
		return fmt.Errorf("store: put action %d: %w", a.ID, fieldErr("host", "%v", err))
	}
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("store: put action %d: %w", a.ID, err)
	}
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: put action %d: %w", a.ID, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if _, err := s.cli.Put(ctx, orderKey(a.Host, a.ID), string(b)); err != nil {
		return fmt.Errorf("store: put action %d: %w", a.ID, s.cause(err))
	}
	return nil
}

// DeleteAction deletes a recorded action; ErrNotFound if there was none.
func (s *Store) DeleteAction(ctx context.Context, host string, id uint64) error {
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: delete action %d: %w", id, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Delete(ctx, orderKey(host, id))
	if err != nil {
		return fmt.Errorf("store: delete action %d: %w", id, s.cause(err))
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("store: delete action %d: %w", id, ErrNotFound)
	}
	return nil
}

// PendingActions lists the recorded actions, by ID. A record that cannot be decoded fails
// the whole listing with an error naming its key; LoadPendingActions reports it apart.
func (s *Store) PendingActions(ctx context.Context) ([]Action, error) {
	as, bad, err := s.LoadPendingActions(ctx)
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("store: list actions: %w", bad[0].Err)
	}
	return as, nil
}

// LoadPendingActions lists the recorded actions that can be decoded, by ID, and apart from
// them each record that cannot, with its key (as LoadVMs does for VMs). err is only for the
// store itself.
func (s *Store) LoadPendingActions(ctx context.Context) (as []Action, bad []BadRecord, err error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, orderPrefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, nil, fmt.Errorf("store: list actions: %w", s.cause(err))
	}
	as = make([]Action, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		a, err := DecodeOrder(key, kv.Value)
		if err != nil {
			bad = append(bad, badRecord(key, err))
			continue
		}
		as = append(as, a)
	}
	return as, bad, nil
}

const idFloorKey = prefix + "meta/id_floor"

// IDFloor returns the largest action or operation ID an earlier run may have handed out
// (0 on a new store): a new run hands out only larger ones, so IDs never repeat.
func (s *Store) IDFloor(ctx context.Context) (uint64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, idFloorKey)
	if err != nil {
		return 0, fmt.Errorf("store: read %s: %w", idFloorKey, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("store: read %s: value %q is not a number", idFloorKey, resp.Kvs[0].Value)
	}
	return n, nil
}

// SetIDFloor records that IDs up to n may be handed out. It never lowers the floor.
func (s *Store) SetIDFloor(ctx context.Context, n uint64) error {
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: write %s: %w", idFloorKey, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	v := strconv.FormatUint(n, 10)
	// Read, then write if higher, guarded by the key's revision so that two writers cannot
	// lower it.
	for range 5 {
		resp, err := s.cli.Get(ctx, idFloorKey)
		if err != nil {
			return fmt.Errorf("store: write %s: %w", idFloorKey, err)
		}
		var rev int64
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
			if cur, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64); err == nil && cur >= n {
				return nil
			}
		}
		tx, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(idFloorKey), "=", rev)).
			Then(clientv3.OpPut(idFloorKey, v)).Commit()
		if err != nil {
			return fmt.Errorf("store: write %s: %w", idFloorKey, err)
		}
		if tx.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("store: write %s: too much contention", idFloorKey)
}

// Batch is what one decision changed, to be written at once: event log entries, VM records
// to put or delete, actions about to be carried out (orders), host states, agents' reports
// it consumed (their keys, deleted), and a new ID floor (0: unchanged).
type Batch struct {
	Events    []Event
	PutVMs    []VM
	DeleteVMs []string
	// Probes are the changes of the guest layers the agents watch (probes/<vm>), written
	// where a VM's guest policy changed, or it was forgotten.
	Probes        []ProbeChange
	Actions       []Action
	PutHostStates []HostState
	DeleteKeys    []string // keys under agents/inbox/ that this decision consumed
	// Config is an administrator's change of clusters or hosts that the step took in.
	Config  []ConfigChange
	IDFloor uint64
	// Guard, when set, makes the write conditional on leadership: nothing is written unless
	// the key still exists with that create revision (the writer's election key), and the
	// write fails with ErrNotLeader. A deposed leader's write never lands.
	Guard *Guard
}

// Guard is a leader's election key and its create revision (the leader's term).
type Guard struct {
	Key string
	Rev int64
	// Keep, when set, renews the leader's election lease. A write in several transactions
	// calls it between them: a takeover writes 50,000 events and more at once, and etcd
	// answers a lease renewal only once it has applied what it committed (within a second),
	// so the leader's own keepalive, queued behind those transactions, could fail until its
	// session expired in the middle of its takeover. Right after a transaction returns, its
	// writes are applied and a renewal is answered at once. An error is logged by Keep
	// itself and does not stop the write: the guard still decides whether it lands.
	Keep func(context.Context) `json:"-"`
}

// ErrNotLeader is returned (wrapped) by a guarded write whose writer no longer leads.
var ErrNotLeader = errors.New("no longer the leading controller: nothing was written")

// maxTxnOps stays below etcd's default limit of 128 operations per transaction.
const maxTxnOps = 120

// record writes a batch in one etcd transaction, so a decision costs one disk sync and is
// stored whole or not at all. Events get the next sequence numbers, as AppendEvents gives
// them. A batch too large for one transaction is written in several, in this order: ID
// floor, events, VMs, host states, consumed reports, actions (so an action is never stored
// before what decided it), each guarded. Nothing is written when a record is invalid. It
// returns the events with Seq set.
func (s *Store) record(ctx context.Context, b Batch) ([]Event, error) {
	if err := s.writable(); err != nil {
		return nil, fmt.Errorf("store: record: %w", err)
	}
	var puts, acts []clientv3.Op
	for _, v := range b.PutVMs {
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("store: record: vm %q: %w", v.Name, err)
		}
		data, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("store: record: vm %q: %w", v.Name, err)
		}
		puts = append(puts, clientv3.OpPut(vmKey(v.Name), string(data)))
	}
	for _, name := range b.DeleteVMs {
		if err := validName(name); err != nil {
			return nil, fmt.Errorf("store: record: delete vm: %w", err)
		}
		puts = append(puts, clientv3.OpDelete(vmKey(name)))
	}
	for _, p := range b.Probes {
		op, err := p.op()
		if err != nil {
			return nil, fmt.Errorf("store: record: %w", err)
		}
		puts = append(puts, op)
	}
	for _, h := range b.PutHostStates {
		if err := h.Validate(); err != nil {
			return nil, fmt.Errorf("store: record: host state %q: %w", h.Host, err)
		}
		data, _ := json.Marshal(h)
		puts = append(puts, clientv3.OpPut(hostStateKey(h.Host), string(data)))
	}
	for _, k := range b.DeleteKeys {
		if !strings.HasPrefix(k, inboxPrefix) {
			return nil, fmt.Errorf("store: record: delete %q: only agents' reports are consumed", k)
		}
		puts = append(puts, clientv3.OpDelete(k))
	}
	for _, a := range b.Actions {
		data, err := json.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("store: record: action %d: %w", a.ID, err)
		}
		if err := vmname.CheckHost(a.Host); err != nil {
			return nil, fmt.Errorf("store: record: action %d: %w", a.ID, fieldErr("host", "%v", err))
		}
		acts = append(acts, clientv3.OpPut(orderKey(a.Host, a.ID), string(data)))
	}
	for _, c := range b.Config {
		ops, err := c.ops()
		if err != nil {
			return nil, fmt.Errorf("store: record: %w", err)
		}
		puts = append(puts, ops...)
	}
	if b.IDFloor != 0 {
		puts = append([]clientv3.Op{clientv3.OpPut(idFloorKey, strconv.FormatUint(b.IDFloor, 10))}, puts...)
	}
	puts = append(puts, acts...)
	var guard []clientv3.Cmp
	if b.Guard != nil {
		guard = append(guard, clientv3.Compare(clientv3.CreateRevision(b.Guard.Key), "=", b.Guard.Rev))
	}
	if len(puts)+len(b.Events)+1 > s.txnOps() {
		return s.recordInParts(ctx, b, guard, puts) // each transaction bounded on its own
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if len(b.Events) == 0 {
		if len(puts) == 0 {
			return nil, nil
		}
		return nil, s.guardedTxn(ctx, b.Guard, guard, puts)
	}
	return s.appendGuarded(ctx, b.Events, b.Guard, guard, puts)
}

// guardedTxn writes ops under the guard (if any).
func (s *Store) guardedTxn(ctx context.Context, g *Guard, guard []clientv3.Cmp, ops []clientv3.Op) error {
	r, err := s.cli.Txn(ctx).If(guard...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("store: record: %w", s.cause(err))
	}
	if !r.Succeeded {
		return fmt.Errorf("store: record (term %d): %w", g.Rev, ErrNotLeader)
	}
	return nil
}

// appendGuarded appends events (with the next sequence numbers) and writes puts with them,
// in one transaction under the guard.
func (s *Store) appendGuarded(ctx context.Context, evs []Event, g *Guard, guard []clientv3.Cmp, puts []clientv3.Op) ([]Event, error) {
	for {
		last, rev, err := s.eventCounter(ctx)
		if err != nil {
			return nil, fmt.Errorf("store: record: %w", err)
		}
		out := make([]Event, len(evs))
		ops := make([]clientv3.Op, 0, len(evs)+1+len(puts))
		for i, e := range evs {
			e.Seq = last + uint64(i) + 1
			data, err := json.Marshal(e)
			if err != nil {
				return nil, fmt.Errorf("store: record: encode event: %w", err)
			}
			out[i] = e
			ops = append(ops, clientv3.OpPut(eventKey(e.Seq), string(data)))
		}
		next := last + uint64(len(evs))
		ops = append(ops, clientv3.OpPut(eventSeqKey, strconv.FormatUint(next, 10)))
		ops = append(ops, puts...)
		cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(eventSeqKey), "=", rev)}, guard...)
		tresp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			s.forgetCounter()
			return nil, fmt.Errorf("store: record: %w", s.cause(err))
		}
		if tresp.Succeeded {
			s.setCounter(next, tresp.Header.Revision)
			return out, nil
		}
		s.forgetCounter() // another writer appended, or the guard failed: find out which
		if g != nil {
			r, err := s.cli.Get(ctx, g.Key)
			if err != nil {
				return nil, fmt.Errorf("store: record: %w", s.cause(err))
			}
			if len(r.Kvs) == 0 || r.Kvs[0].CreateRevision != g.Rev {
				return nil, fmt.Errorf("store: record (term %d): %w", g.Rev, ErrNotLeader)
			}
		}
	}
}

// recordInParts writes a batch too large for one transaction: events in chunks, then the
// other writes in chunks (orders last), every chunk under the guard.
func (s *Store) recordInParts(ctx context.Context, b Batch, guard []clientv3.Cmp, puts []clientv3.Op) ([]Event, error) {
	// Each transaction has its own timeout (opCtx), not one for the whole batch: a new
	// leader's takeover writes 50,000 events and more at once, which on a starved machine
	// took longer than one call's timeout; the takeover then failed, started again and
	// wrote them all again, and so on: the leader never decided anything.
	var out []Event
	for evs := b.Events; len(evs) > 0; {
		n := min(len(evs), s.eventsPerTxn())
		pctx, cancel := s.opCtx(ctx)
		part, err := s.appendGuarded(pctx, evs[:n], b.Guard, guard, nil)
		cancel()
		out = append(out, part...)
		if err != nil {
			return out, err
		}
		evs = evs[n:]
		keepLease(ctx, b.Guard, len(evs) > 0 || len(puts) > 0)
	}
	for len(puts) > 0 {
		n := min(len(puts), s.txnOps()-len(guard))
		pctx, cancel := s.opCtx(ctx)
		err := s.guardedTxn(pctx, b.Guard, guard, puts[:n])
		cancel()
		if err != nil {
			return out, err
		}
		puts = puts[n:]
		keepLease(ctx, b.Guard, len(puts) > 0)
	}
	return out, nil
}

// keepLease renews the guard's lease between two parts of a write (more is true when a
// part follows).
func keepLease(ctx context.Context, g *Guard, more bool) {
	if more && g != nil && g.Keep != nil {
		g.Keep(ctx)
	}
}

// eventCounter returns the event counter and its mod revision, from memory when this store
// wrote it last (a failed conditional write makes it read again).
func (s *Store) eventCounter(ctx context.Context) (uint64, int64, error) {
	s.counterMu.Lock()
	known, last, rev := s.counterKnown, s.counterLast, s.counterRev
	s.counterMu.Unlock()
	if known {
		return last, rev, nil
	}
	resp, err := s.cli.Get(ctx, eventSeqKey)
	if err != nil {
		return 0, 0, fmt.Errorf("get %s: %w", eventSeqKey, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, 0, nil
	}
	last, err = strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("decode %s: %w", eventSeqKey, err)
	}
	return last, resp.Kvs[0].ModRevision, nil
}

func (s *Store) setCounter(last uint64, rev int64) {
	s.counterMu.Lock()
	s.counterKnown, s.counterLast, s.counterRev = true, last, rev
	s.counterMu.Unlock()
}

func (s *Store) forgetCounter() {
	s.counterMu.Lock()
	s.counterKnown = false
	s.counterMu.Unlock()
}
