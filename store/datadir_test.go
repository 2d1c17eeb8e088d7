package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tcpListeners lists the TCP addresses (hex, as /proc shows them) process pid listens on.
func tcpListeners(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, f := range []string{"tcp", "tcp6"} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(fs) > 9 && fs[3] == "0A" && inodes[fs[9]] {
				out = append(out, fs[1])
			}
		}
		fh.Close()
	}
	return out
}

// syncBuf is a log destination tests can read while the store writes to it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// openCfg opens a store with c, failing the test if that takes longer than 30 s (the old
// code waited forever on some damaged or locked dirs) or panics.
func openCfg(t *testing.T, c EmbeddedConfig) (*Store, error) {
	t.Helper()
	type result struct {
		s   *Store
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := OpenEmbeddedConfig(context.Background(), c)
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		if r.s != nil {
			t.Cleanup(func() { r.s.Close() })
		}
		return r.s, r.err
	case <-time.After(30 * time.Second):
		t.Fatalf("OpenEmbeddedConfig(%s) still waiting after 30 s", c.Dir)
		return nil, nil
	}
}

// populated returns a data dir holding a closed store with 20 VMs and 300 events.
func populated(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s := open(t, dir)
	ctx := context.Background()
	for i := range 20 {
		if err := s.PutVM(ctx, vm(fmt.Sprintf("vm%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		evs := make([]Event, 100)
		for j := range evs {
			evs[j] = Event{Type: "test", Msg: strings.Repeat("m", 200)}
		}
		if _, err := s.AppendEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func walFile(t *testing.T, dir string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "member", "wal", "*.wal"))
	if err != nil || len(m) != 1 {
		t.Fatalf("wal files %v %v", m, err)
	}
	return m[0]
}

// dataEnd is the offset after the last non-zero byte of a (preallocated) WAL file.
func dataEnd(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(bytes.TrimRight(b, "\x00")))
}

func TestSecondOpenRefusedAtOnce(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	start := time.Now()
	_, err := openCfg(t, EmbeddedConfig{Dir: dir})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), fmt.Sprintf("in use by another hass (pid %d)", os.Getpid())) {
		t.Fatalf("second open: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("second open took %v to fail", took)
	}
	t.Log(err)
}

func TestDamagedFiles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string // in the error; "" means the store opens, with its VMs
	}{
		{"random bytes over the db", func(t *testing.T, dir string) {
			f, err := os.OpenFile(filepath.Join(dir, "member", "snap", "db"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			junk := make([]byte, 64<<10)
			rand.Read(junk)
			f.WriteAt(junk, 0)
			f.Close()
		}, "member/snap/db"},
		{"empty WAL", func(t *testing.T, dir string) {
			os.Truncate(walFile(t, dir), 0)
		}, "member/wal"},
		{"WAL truncated", func(t *testing.T, dir string) {
			w := walFile(t, dir)
			os.Truncate(w, dataEnd(t, w)/3)
		}, "member/wal ends at entry"},
		{"WAL deleted", func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, "member", "wal"))
		}, "member/wal is missing"},
		{"random bytes in the WAL", func(t *testing.T, dir string) {
			w := walFile(t, dir)
			f, err := os.OpenFile(w, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			junk := make([]byte, 4096)
			rand.Read(junk)
			f.WriteAt(junk, dataEnd(t, w)/2)
			f.Close()
		}, "member/wal"},
		{"db deleted, WAL complete", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "member", "snap", "db"))
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := populated(t)
			tc.damage(t, dir)
			s, err := openCfg(t, EmbeddedConfig{Dir: dir})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if vms, err := s.VMs(context.Background()); err != nil || len(vms) != 20 {
					t.Fatalf("rebuilt store: %d VMs, %v", len(vms), err)
				}
				return
			}
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), filepath.Join(dir, tc.want)) {
				t.Fatalf("open: %v\nwant ErrDamaged naming %s", err, filepath.Join(dir, tc.want))
			}
			t.Log(err)
			// Refused, not wedged: the dir is free again.
			if _, err := lockDir(dir); err != nil {
				t.Errorf("after the refusal: %v", err)
			}
		})
	}
}

func TestLostStore(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	marker := MarkerPath(dir)
	var log syncBuf
	logger := slog.New(slog.NewTextHandler(&log, nil))

	s, err := openCfg(t, EmbeddedConfig{Dir: dir, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "initialised a new, empty store") {
		t.Errorf("first start, log:\n%s", log.String())
	}
	if err := s.PutVM(context.Background(), vm("web1")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("marker: %v", err)
	}
	// A restart is not a new store.
	log = syncBuf{}
	s, err = openCfg(t, EmbeddedConfig{Dir: dir, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if strings.Contains(log.String(), "new, empty store") {
		t.Errorf("restart logged a new store:\n%s", log.String())
	}

	// Another store where this one was: refused.
	other := filepath.Join(root, "other")
	s, err = openCfg(t, EmbeddedConfig{Dir: other})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := openCfg(t, EmbeddedConfig{Dir: dir}); !errors.Is(err, ErrStoreLost) || !strings.Contains(err.Error(), "another store") {
		t.Errorf("another store in the dir: %v", err)
	}
	os.RemoveAll(dir)

	// The dir is gone, or empty (its disk not mounted): refused, and nothing is created.
	_, err = openCfg(t, EmbeddedConfig{Dir: dir})
	if !errors.Is(err, ErrStoreLost) || !strings.Contains(err.Error(), marker) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("deleted dir: %v", err)
	}
	t.Log(err)
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("the refused open created %s", dir)
	}
	os.Mkdir(dir, 0o700)
	if _, err := openCfg(t, EmbeddedConfig{Dir: dir}); !errors.Is(err, ErrStoreLost) || !strings.Contains(err.Error(), "holds no store") {
		t.Errorf("empty dir: %v", err)
	}

	// The store is back: it opens, with its VM.
	os.RemoveAll(dir)
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	s, err = openCfg(t, EmbeddedConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.VM(context.Background(), "web1"); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Without the marker, an empty dir gets a new store, said loudly.
	os.RemoveAll(dir)
	os.Remove(marker)
	log = syncBuf{}
	if _, err := openCfg(t, EmbeddedConfig{Dir: dir, Logger: logger}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "initialised a new, empty store") {
		t.Errorf("log:\n%s", log.String())
	}
}

func TestDataDirDeletedWhileOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := open(t, dir)
	ctx := context.Background()
	if err := s.PutVM(ctx, vm("web1")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the store did not notice its data dir was deleted")
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("Err: %v", err)
	}
	if err := s.PutVM(ctx, vm("web2")); err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("write after: %v", err)
	}
	if err := s.Health(ctx); err == nil {
		t.Error("Health: nil")
	}
	t.Log(s.Err())
}

func TestLoadVMsReportsBadRecordsApart(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	for _, n := range []string{"a-good", "z-good"} {
		if err := s.PutVM(ctx, vm(n)); err != nil {
			t.Fatal(err)
		}
	}
	bad := map[string]string{ // name -> the field its error must name ("" for not JSON)
		"garbage":   "",
		"badwindow": "policy.window",
		"badtype":   "policy.max_restarts",
		"invalid":   "desired",
		"wrongname": "name",
	}
	values := map[string]string{
		"garbage":   `{not json`,
		"badwindow": `{"name":"badwindow","desired":"running","policy":{"max_restarts":1,"window":"ten minutes","on_guest_shutdown":"honour"}}`,
		"badtype":   `{"name":"badtype","desired":"running","policy":{"max_restarts":"3","window":"1m","on_guest_shutdown":"honour"}}`,
		"invalid":   `{"name":"invalid","desired":"gone","policy":{"window":"1m","on_guest_shutdown":"honour"}}`,
		"wrongname": `{"name":"other","desired":"running","policy":{"window":"1m","on_guest_shutdown":"honour"}}`,
	}
	for n, v := range values {
		if _, err := s.cli.Put(ctx, vmKey(n), v); err != nil {
			t.Fatal(err)
		}
	}
	vms, badRecs, err := s.LoadVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 2 || vms[0].Name != "a-good" || vms[1].Name != "z-good" {
		t.Errorf("good VMs: %+v", vms)
	}
	if len(badRecs) != len(bad) {
		t.Fatalf("bad records: %+v", badRecs)
	}
	for _, b := range badRecs {
		name := strings.TrimPrefix(b.Key, vmPrefix)
		want, ok := bad[name]
		if !ok || b.Field != want || !strings.Contains(b.Error(), b.Key) || !strings.Contains(b.Error(), want) {
			t.Errorf("bad record %s: field %q, err %v; want field %q", b.Key, b.Field, b.Err, want)
		}
		t.Logf("%s: field %q: %v", b.Key, b.Field, b.Err)
	}
	// VMs stays strict.
	if _, err := s.VMs(ctx); err == nil {
		t.Error("VMs: no error despite bad records")
	}

	if err := s.PutAction(ctx, Action{ID: 1, Kind: "start", VM: "a-good", Host: "h1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Put(ctx, orderKey("h1", 2), `{"id":3}`); err != nil {
		t.Fatal(err)
	}
	as, badActs, err := s.LoadPendingActions(ctx)
	if err != nil || len(as) != 1 || as[0].ID != 1 || len(badActs) != 1 || badActs[0].Key != orderKey("h1", 2) || badActs[0].Field != "id" {
		t.Errorf("actions: %+v, bad %+v, %v", as, badActs, err)
	}
}

// tmpfs mounts a tmpfs of size bytes for the test (root only; skips otherwise, and fails if
// root cannot mount one).
func tmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("cannot mount a tmpfs as root: %v", err)
	}
	// Lazily: an etcd that died of the full disk may still hold its files.
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes a file in dir until only leave bytes are free on its filesystem (0: until it
// is full), and returns its path.
func fill(t *testing.T, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	free, err := freeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for n := free - leave; n > 0; n -= int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(n, int64(len(chunk)))]); err != nil {
			if leave == 0 && errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatal(err)
		}
	}
	return path
}

func TestDiskFullRefusesWritesAndRecovers(t *testing.T) {
	mnt := tmpfs(t, 256<<20)
	var log syncBuf
	s, err := openCfg(t, EmbeddedConfig{Dir: filepath.Join(mnt, "data"), Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.PutVM(ctx, vm("before")); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, mnt, 16<<20)
	for name, write := range map[string]func() error{
		"put vm":        func() error { return s.PutVM(ctx, vm("during")) },
		"append events": func() error { _, err := s.AppendEvents(ctx, []Event{{Type: "x"}}); return err },
		"put action":    func() error { return s.PutAction(ctx, Action{ID: 1, Host: "h1"}) },
		"delete vm":     func() error { return s.DeleteVM(ctx, "before") },
	} {
		if err := write(); !errors.Is(err, ErrNoSpace) {
			t.Errorf("%s on a full disk: %v, want ErrNoSpace", name, err)
		}
	}
	if err := s.Health(ctx); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "MiB free") {
		t.Errorf("Health: %v", err)
	}
	t.Log(s.Health(ctx))
	if _, err := s.VM(ctx, "before"); err != nil {
		t.Errorf("reads go on: %v", err)
	}
	if s.Err() != nil {
		t.Fatalf("the store failed: %v", s.Err())
	}
	// Space is back: so are writes.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := s.PutVM(ctx, vm("after")); err != nil {
		t.Fatal(err)
	}
	if err := s.Health(ctx); err != nil {
		t.Errorf("Health after: %v", err)
	}
	if _, err := s.VM(ctx, "during"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused write was recorded: %v", err)
	}
	if l := log.String(); !strings.Contains(l, "writes refused") || !strings.Contains(l, "writes resume") {
		t.Errorf("log:\n%s", l)
	}
}

// TestDiskFullEtcdFailure: without the free-space margin, etcd fails its write and would
// exit the process; the store fails instead, with the reason, and the process goes on.
func TestDiskFullEtcdFailure(t *testing.T) {
	mnt := tmpfs(t, 256<<20)
	s, err := openCfg(t, EmbeddedConfig{Dir: filepath.Join(mnt, "data"), MinFree: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fill(t, mnt, 0)
	big := strings.Repeat("x", 64<<10)
	var werr error
	for i := 0; i < 200 && werr == nil; i++ {
		_, werr = s.AppendEvents(ctx, []Event{{Type: "x", Msg: big}})
	}
	select {
	case <-s.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("the store did not fail; last write: %v", werr)
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("Err: %v", err)
	}
	t.Logf("last write: %v; store: %v", werr, s.Err())
	start := time.Now()
	if _, err := s.AppendEvents(ctx, []Event{{Type: "x"}}); err == nil || time.Since(start) > time.Second {
		t.Errorf("write after the failure: %v after %v", err, time.Since(start))
	}
}
