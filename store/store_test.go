package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := OpenEmbedded(ctx, dir, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func vm(name string) VM {
	return VM{
		Name: name, Host: "h1", MemMiB: 2048, Desired: "running",
		Policy: Policy{MaxRestarts: 3, Window: Duration(10 * time.Minute), MaxRelocations: 1, OnGuestShutdown: "honour"},
	}
}

func TestVMs(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())

	if _, err := s.VM(ctx, "web1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v, want ErrNotFound", err)
	}
	for _, n := range []string{"web2", "db:1", "web1"} {
		if err := s.PutVM(ctx, vm(n)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.VM(ctx, "web1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Rev == 0 {
		t.Errorf("Rev not set")
	}
	want := vm("web1")
	want.Rev = got.Rev
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}

	// Replace.
	want.Desired, want.Policy.AntiAffinity = "stopped", "db"
	if err := s.PutVM(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err = s.VM(ctx, "web1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Desired != "stopped" || got.Policy.AntiAffinity != "db" || got.Rev <= want.Rev {
		t.Errorf("after replace: %+v (old rev %d)", got, want.Rev)
	}

	list, err := s.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range list {
		names = append(names, v.Name)
	}
	if !slices.Equal(names, []string{"db:1", "web1", "web2"}) {
		t.Errorf("VMs = %v", names)
	}

	if err := s.DeleteVM(ctx, "web2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, "web2"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "web2") {
		t.Errorf("delete twice: %v", err)
	}
	if _, err := s.VM(ctx, "web2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get deleted: %v", err)
	}
}

func TestVMValidation(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	for _, tc := range []struct {
		field string
		edit  func(*VM)
	}{
		{"name", func(v *VM) { v.Name = "" }},
		{"name", func(v *VM) { v.Name = "a/b" }},
		{"name", func(v *VM) { v.Name = "a\x00b" }},
		{"name", func(v *VM) { v.Name = "a\nb" }},
		{"name", func(v *VM) { v.Name = "\xff" }},
		{"name", func(v *VM) { v.Name = strings.Repeat("a", 1025) }},
		{"desired", func(v *VM) { v.Desired = "" }},
		{"desired", func(v *VM) { v.Desired = "Running" }},
		{"policy.max_restarts", func(v *VM) { v.Policy.MaxRestarts = -1 }},
		{"policy.window", func(v *VM) { v.Policy.Window = 0 }},
		{"policy.window", func(v *VM) { v.Policy.Window = Duration(-time.Second) }},
		{"policy.on_guest_shutdown", func(v *VM) { v.Policy.OnGuestShutdown = "" }},
		{"policy.on_guest_shutdown", func(v *VM) { v.Policy.OnGuestShutdown = "ignore" }},
	} {
		v := vm("bad")
		tc.edit(&v)
		err := s.PutVM(ctx, v)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: error %v, want one naming %s", v, err, tc.field)
		}
	}
	if err := s.PutVM(ctx, vm(strings.Repeat("é", 1024))); err != nil {
		t.Errorf("1024-character name: %v", err)
	}
	// Nothing invalid was written: the prefix holds exactly the one good VM.
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		for _, kv := range resp.Kvs {
			t.Errorf("stored: %s", kv.Key)
		}
	}
}

func TestSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.PutVM(ctx, vm("web1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendEvents(ctx, []Event{{Type: "a"}, {Type: "b"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAction(ctx, Action{ID: 7, Kind: "start", VM: "web1", Host: "h1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = open(t, dir)
	if _, err := s.VM(ctx, "web1"); err != nil {
		t.Fatal(err)
	}
	as, err := s.PendingActions(ctx)
	if err != nil || len(as) != 1 || as[0].ID != 7 {
		t.Fatalf("actions after restart: %v %+v", err, as)
	}
	evs, err := s.AppendEvents(ctx, []Event{{Type: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	if evs[0].Seq != 3 {
		t.Errorf("seq after restart = %d, want 3", evs[0].Seq)
	}
}

func TestTwoStoresInOneProcess(t *testing.T) {
	ctx := context.Background()
	a, b := open(t, t.TempDir()), open(t, t.TempDir())
	if err := a.PutVM(ctx, vm("only-a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.VM(ctx, "only-a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("b sees a's VM: %v", err)
	}
	if slices.Equal(a.Endpoints(), b.Endpoints()) {
		t.Errorf("same endpoints %v", a.Endpoints())
	}
}

func TestAppendEventsConcurrent(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	const writers, batches = 4, 25
	var (
		mu   sync.Mutex
		seqs []uint64
		wg   sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for i := range batches {
				evs := make([]Event, 1+i%3)
				for j := range evs {
					evs[j] = Event{At: time.Now().UTC(), Type: "test", VM: fmt.Sprintf("w%d", w), Msg: fmt.Sprintf("%d.%d", i, j)}
				}
				out, err := s.AppendEvents(ctx, evs)
				if err != nil {
					t.Error(err)
					return
				}
				for j := 1; j < len(out); j++ {
					if out[j].Seq != out[j-1].Seq+1 {
						t.Errorf("batch not contiguous: %d then %d", out[j-1].Seq, out[j].Seq)
					}
				}
				mu.Lock()
				for _, e := range out {
					seqs = append(seqs, e.Seq)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(seqs)
	for i, q := range seqs {
		if q != uint64(i+1) {
			t.Fatalf("seqs[%d] = %d: duplicate or gap", i, q)
		}
	}
	stored, err := s.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(seqs) {
		t.Fatalf("stored %d events, appended %d", len(stored), len(seqs))
	}
	for i, e := range stored {
		if e.Seq != uint64(i+1) || e.Type != "test" {
			t.Fatalf("stored[%d] = %+v", i, e)
		}
	}
}

func TestEventsPaginationAndTrim(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	if evs, err := s.Events(ctx, 0, 10); err != nil || len(evs) != 0 {
		t.Fatalf("empty log: %v %v", evs, err)
	}
	if err := s.TrimEvents(ctx, 3); err != nil {
		t.Fatalf("trim empty log: %v", err)
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	in := make([]Event, 250) // more than one transaction's worth
	for i := range in {
		in[i] = Event{At: at, Type: "fault", VM: "v", Msg: strconv.Itoa(i)}
	}
	in[1].FaultAt, in[1].RecoveredAt = &at, &at
	out, err := s.AppendEvents(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 250 || out[0].Seq != 1 || out[249].Seq != 250 {
		t.Fatalf("out: %d events, %d..%d", len(out), out[0].Seq, out[len(out)-1].Seq)
	}

	page, err := s.Events(ctx, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || page[0].Seq != 1 || page[1].Seq != 2 {
		t.Fatalf("first page: %+v", page)
	}
	if page[1].FaultAt == nil || !page[1].FaultAt.Equal(at) || page[1].DetectAt != nil || !page[1].At.Equal(at) || page[1].Msg != "1" {
		t.Errorf("round trip: %+v", page[1])
	}
	page, err = s.Events(ctx, 248, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || page[0].Seq != 249 || page[1].Seq != 250 {
		t.Fatalf("last page: %+v", page)
	}
	if page, _ := s.Events(ctx, 250, 10); len(page) != 0 {
		t.Errorf("after the end: %+v", page)
	}
	// Walk the whole log in pages.
	var n int
	for after := uint64(0); ; {
		page, err := s.Events(ctx, after, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			n++
			if e.Seq != uint64(n) {
				t.Fatalf("walk: got seq %d, want %d", e.Seq, n)
			}
		}
		after = page[len(page)-1].Seq
	}
	if n != 250 {
		t.Errorf("walked %d events", n)
	}

	if err := s.TrimEvents(ctx, 300); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.Events(ctx, 0, 0); len(all) != 250 {
		t.Errorf("trim above count kept %d", len(all))
	}
	if err := s.TrimEvents(ctx, 5); err != nil {
		t.Fatal(err)
	}
	all, err := s.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 || all[0].Seq != 246 || all[4].Seq != 250 {
		t.Fatalf("after trim to 5: %d events starting %d", len(all), all[0].Seq)
	}
	// Numbering continues after a trim.
	out, err = s.AppendEvents(ctx, []Event{{Type: "x"}})
	if err != nil || out[0].Seq != 251 {
		t.Fatalf("append after trim: %v %+v", err, out)
	}
	if err := s.TrimEvents(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.Events(ctx, 0, 0); len(all) != 0 {
		t.Errorf("trim to 0 kept %d", len(all))
	}
	if err := s.TrimEvents(ctx, -1); err == nil {
		t.Error("trim -1: no error")
	}
	if out, err := s.AppendEvents(ctx, nil); err != nil || len(out) != 0 {
		t.Errorf("append nothing: %v %v", out, err)
	}
}

func TestActions(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	a1 := Action{ID: 12, Kind: "start", VM: "web1", Host: "h1", Why: "crashed", Gen: 4, At: at}
	a2 := Action{ID: 3, Kind: "migrate", VM: "db", Host: "h1", Target: "h2", Why: "evacuate", Gen: 1, At: at}
	for _, a := range []Action{a1, a2} {
		if err := s.PutAction(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.PendingActions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []Action{a2, a1}) {
		t.Errorf("pending = %+v", got)
	}
	if err := s.DeleteAction(ctx, "h1", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAction(ctx, "h1", 3); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete twice: %v", err)
	}
	got, err = s.PendingActions(ctx)
	if err != nil || !slices.Equal(got, []Action{a1}) {
		t.Errorf("pending after delete = %+v %v", got, err)
	}
	b, _ := json.Marshal(a2)
	for _, f := range []string{`"id"`, `"kind"`, `"vm"`, `"host"`, `"target"`, `"why"`, `"gen"`, `"at"`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("action JSON %s lacks %s", b, f)
		}
	}
}

func TestCorruptRecords(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	if err := s.PutVM(ctx, vm("good")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, value, want string
	}{
		{"garbage", `{not json`, ""},
		{"badwindow", `{"name":"badwindow","desired":"running","policy":{"max_restarts":1,"window":"ten minutes","on_guest_shutdown":"honour"}}`, "policy.window"},
		{"badtype", `{"name":"badtype","desired":"running","policy":{"max_restarts":"3","window":"1m","on_guest_shutdown":"honour"}}`, "policy.max_restarts"},
		{"invalid", `{"name":"invalid","desired":"gone","policy":{"window":"1m","on_guest_shutdown":"honour"}}`, "desired"},
		{"wrongname", `{"name":"other","desired":"running","policy":{"window":"1m","on_guest_shutdown":"honour"}}`, "name"},
	} {
		key := vmKey(tc.name)
		if _, err := s.cli.Put(ctx, key, tc.value); err != nil {
			t.Fatal(err)
		}
		_, err := s.VM(ctx, tc.name)
		if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: get: %v, want an error naming %s and %q", tc.name, err, key, tc.want)
		}
		_, err = s.VMs(ctx)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: list: %v, want an error naming %s", tc.name, err, key)
		}
		t.Logf("%s: %v", tc.name, err)
		if _, err := s.cli.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}

	key := eventKey(1)
	if _, err := s.cli.Put(ctx, key, `{"seq":1,"at":"yesterday"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Events(ctx, 0, 0); err == nil || !strings.Contains(err.Error(), key) {
		t.Errorf("corrupt event: %v", err)
	}
	key = orderKey("h1", 5)
	if _, err := s.cli.Put(ctx, key, `{"id":6}`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PendingActions(ctx); err == nil || !strings.Contains(err.Error(), key) {
		t.Errorf("corrupt action: %v", err)
	}
	if _, err := s.cli.Put(ctx, eventSeqKey, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendEvents(ctx, []Event{{}}); err == nil || !strings.Contains(err.Error(), eventSeqKey) {
		t.Errorf("corrupt counter: %v", err)
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(Policy{Window: Duration(10 * time.Minute)})
	if err != nil || !strings.Contains(string(b), `"window":"10m0s"`) {
		t.Errorf("marshal: %s %v", b, err)
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"90s"`), &d); err != nil || d != Duration(90*time.Second) {
		t.Errorf("unmarshal 90s: %v %v", d, err)
	}
	if err := json.Unmarshal([]byte(`null`), &d); err != nil || d != Duration(90*time.Second) {
		t.Errorf("unmarshal null: %v %v, want the value left alone", d, err)
	}
	for _, bad := range []string{`"forever"`, `600`, `""`, `"1x"`} {
		err := json.Unmarshal([]byte(bad), &d)
		if err == nil || !strings.Contains(err.Error(), strings.Trim(bad, `"`)) {
			t.Errorf("unmarshal %s: %v, want an error naming the value", bad, err)
		}
	}
}

func TestEmbeddedListensOnlyInItsDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir)
	if want := "unix://" + filepath.Join(dir, clientSock); !slices.Equal(s.Endpoints(), []string{want}) {
		t.Errorf("endpoints %v, want [%s]", s.Endpoints(), want)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", fi.Mode().Perm())
	}
	for _, n := range []string{clientSock, peerSock} {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want a socket with 0600", n, fi.Mode())
		}
	}
	// This process (the test) listens on no TCP port at all.
	if ports := tcpListeners(t, os.Getpid()); len(ports) > 0 {
		t.Errorf("listening on TCP %v", ports)
	}
}

func TestConnect(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	c, err := Connect(ctx, s.Endpoints(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.PutVM(ctx, vm("via-connect")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VM(ctx, "via-connect"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := Connect(short, []string{"127.0.0.1:1"}, nil); err == nil {
		t.Error("connect to a dead endpoint: no error")
	}
}

// TestOpenTiming reports how long OpenEmbedded takes and what it costs in memory
// (go test -run OpenTiming -v).
func TestOpenTiming(t *testing.T) {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	rss0 := rssKiB()
	for i := range 3 {
		dir := t.TempDir()
		start := time.Now()
		s, err := OpenEmbedded(context.Background(), dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		first := time.Since(start)
		if i == 0 {
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			t.Logf("one open store: heap in use +%d KiB, RSS +%d KiB", (int64(after.HeapInuse)-int64(before.HeapInuse))/1024, rssKiB()-rss0)
		}
		s.Close()
		start = time.Now()
		s, err = OpenEmbedded(context.Background(), dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("OpenEmbedded: fresh dir %v, reopen %v", first.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		s.Close()
	}
}

func rssKiB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func FuzzVMJSON(f *testing.F) {
	good, _ := json.Marshal(vm("web1"))
	f.Add(good)
	f.Add([]byte(`{"name":"web1","desired":"running","policy":{"window":"1m","on_guest_shutdown":"restart"}}`))
	f.Add([]byte(`{"name":"web1","policy":{"window":"-1m"}}`))
	f.Add([]byte(`{"name":"web1","policy":{"window":12}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeVM(vmKey("web1"), b)
		if err != nil {
			if !strings.Contains(err.Error(), vmKey("web1")) {
				t.Fatalf("error does not name the key: %v", err)
			}
			return
		}
		if err := v.Validate(); err != nil {
			t.Fatalf("decoded an invalid VM %+v: %v", v, err)
		}
		if v.Name != "web1" {
			t.Fatalf("decoded name %q under key web1", v.Name)
		}
	})
}

func TestOptOuts(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := t.Context()
	if err := s.SetOptOut(ctx, "web1", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetOptOut(ctx, "web2", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetOptOut(ctx, "web2", false); err != nil {
		t.Fatal(err)
	}
	got, err := s.OptOuts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got["web1"] {
		t.Fatalf("opt-outs %v, want only web1", got)
	}
	if err := s.SetOptOut(ctx, "", true); err == nil {
		t.Fatal("an empty name was accepted")
	}
}

func TestRecordBatch(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	if _, err := s.AppendEvents(ctx, []Event{{Type: "op", Msg: "before"}}); err != nil {
		t.Fatal(err)
	}
	b := Batch{
		Events:  []Event{{Type: "detect", VM: "web1", Msg: "crash"}, {Type: "action", VM: "web1", Msg: "start"}},
		PutVMs:  []VM{vm("web1")},
		Actions: []Action{{ID: 7, Kind: "start", VM: "web1", Host: "h1", Why: "recovery:vm-crash", Gen: 1}},
		IDFloor: 1007,
	}
	out, err := s.Record(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Seq != 2 || out[1].Seq != 3 {
		t.Fatalf("events numbered %+v, want 2 and 3", out)
	}
	if _, err := s.VM(ctx, "web1"); err != nil {
		t.Fatal(err)
	}
	if acts, err := s.PendingActions(ctx); err != nil || len(acts) != 1 || acts[0].ID != 7 {
		t.Fatalf("actions %+v %v", acts, err)
	}
	if f, err := s.IDFloor(ctx); err != nil || f != 1007 {
		t.Fatalf("id floor %d %v", f, err)
	}
	// Another writer appends in between: the cached counter is stale, numbers still follow.
	if _, err := s.AppendEvents(ctx, []Event{{Type: "op", Msg: "other"}}); err != nil {
		t.Fatal(err)
	}
	out, err = s.Record(ctx, Batch{Events: []Event{{Type: "op", Msg: "after"}}, DeleteVMs: []string{"web1"}})
	if err != nil || len(out) != 1 || out[0].Seq != 5 {
		t.Fatalf("after another writer: %+v %v", out, err)
	}
	if _, err := s.VM(ctx, "web1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("web1 not deleted: %v", err)
	}
	// An invalid VM: nothing of the batch is written.
	bad := vm("web2")
	bad.Desired = "sideways"
	if _, err := s.Record(ctx, Batch{Events: []Event{{Type: "op"}}, PutVMs: []VM{bad}}); err == nil || !strings.Contains(err.Error(), "desired") {
		t.Fatalf("invalid vm: %v", err)
	}
	if evs, _ := s.Events(ctx, 0, 0); len(evs) != 5 {
		t.Fatalf("%d events after a refused batch, want 5", len(evs))
	}
	// Too large for one transaction: written in parts, in order, all of it.
	var big Batch
	for i := range 130 {
		big.Events = append(big.Events, Event{Type: "op", Msg: fmt.Sprint(i)})
	}
	big.PutVMs = []VM{vm("web3")}
	if out, err := s.Record(ctx, big); err != nil || len(out) != 130 || out[129].Seq != 135 {
		t.Fatalf("big batch: %d events, %v", len(out), err)
	}
}

// TestLibvirtNames: any libvirt domain name hass takes (see package vmname) is a key, read
// back, listed, opted out and deleted as it is.
func TestLibvirtNames(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir())
	names := []string{"a+b", "a b", "café", "日本語", "🙂", "50%", ".", "..", "-x", `a\b`, "a?b#c", "a\u00a0b"}
	for _, n := range names {
		if err := s.PutVM(ctx, vm(n)); err != nil {
			t.Fatalf("put %q: %v", n, err)
		}
		got, err := s.VM(ctx, n)
		if err != nil || got.Name != n {
			t.Fatalf("get %q: %+v, %v", n, got, err)
		}
		if err := s.SetOptOut(ctx, n, true); err != nil {
			t.Fatalf("opt out %q: %v", n, err)
		}
	}
	vms, err := s.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	outs, err := s.OptOuts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != len(names) || len(outs) != len(names) {
		t.Fatalf("%d VMs, %d opt-outs, want %d", len(vms), len(outs), len(names))
	}
	for _, v := range vms {
		if !slices.Contains(names, v.Name) || !outs[v.Name] {
			t.Errorf("listed %q", v.Name)
		}
	}
	for _, n := range names {
		if err := s.DeleteVM(ctx, n); err != nil {
			t.Fatalf("delete %q: %v", n, err)
		}
	}
}
