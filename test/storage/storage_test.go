// Package storage tests `hass up`, as a process, against what can happen to its storage
// (a second instance, damaged or deleted files, a lost data dir, a full disk) and against
// users without rights (the API's socket, the embedded etcd).
//
// It never touches libvirt: every `hass up` is given a libvirt socket that does not exist,
// so libvirt stays "connecting". Most tests need root (users, groups, a tmpfs); they skip
// without it. HASS_BIN runs them against a given hass binary (e.g. an older build) instead of
// one built from this tree.
package storage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/auth"
)

// noLibvirt is a libvirt URI whose socket does not exist.
const noLibvirt = "qemu+unix:///system?socket=/nonexistent/hass-storage-test/libvirt-sock"

var (
	hassBin string // the hass binary under test
	testBin string // a copy of this test binary that any user can run (for helperDial)
	binDir  string
)

func TestMain(m *testing.M) {
	if addrs := os.Getenv("HASS_TEST_DIAL"); addrs != "" {
		os.Exit(helperDial(addrs))
	}
	var err error
	binDir, err = os.MkdirTemp("", "hass-storage-bin")
	if err != nil {
		panic(err)
	}
	os.Chmod(binDir, 0o755) // other users run these binaries
	hassBin = os.Getenv("HASS_BIN")
	if hassBin == "" {
		hassBin = filepath.Join(binDir, "hass")
		if out, err := exec.Command("go", "build", "-o", hassBin, "../../cmd/hass").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "storage: build hass: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	if self, err := os.Executable(); err == nil {
		testBin = filepath.Join(binDir, "storage.test")
		if b, err := os.ReadFile(self); err == nil && os.WriteFile(testBin, b, 0o755) == nil {
			os.Chmod(testBin, 0o755)
		} else {
			testBin = ""
		}
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// helperDial runs as another user: it dials each address (unix:/path or tcp:host:port) and
// prints what happened; it exits 0 only if every dial was refused.
func helperDial(addrs string) int {
	code := 0
	for _, a := range strings.Split(addrs, ",") {
		network, addr, _ := strings.Cut(a, ":")
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err == nil {
			c.Close()
			fmt.Printf("%s: CONNECTED\n", a)
			code = 1
			continue
		}
		fmt.Printf("%s: refused: %v\n", a, err)
	}
	return code
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// workDir is a directory every user can traverse (t.TempDir's are 0700), removed after the
// test.
func workDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "hass-storage-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o755)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// proc is one `hass up`.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	server string // for the CLI's --server
	data   string
}

// up starts `hass up` with data as its data dir and the API at listen (host:port or
// unix:///path); it is stopped when the test ends.
func up(t *testing.T, data, listen string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"up", "--data-dir", data, "--listen", listen, "--host-name", "storage-test",
		"--libvirt-uri", noLibvirt, "--resync", "1s"}, extra...)
	p := &proc{t: t, out: &syncBuffer{}, done: make(chan struct{}), data: data, server: listen}
	if !strings.HasPrefix(listen, "unix:") {
		p.server = "http://" + listen
	}
	p.cmd = exec.Command(hassBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("hass up %s:\n%s", strings.Join(args[1:], " "), p.out.String())
		}
	})
	return p
}

// exits waits at most d for the process to exit, and reports whether it did.
func (p *proc) exits(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (p *proc) exitCode() int { return p.cmd.ProcessState.ExitCode() }

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if !p.exits(15 * time.Second) {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// mustFail expects `hass up` to exit, non-zero, within d, with a message containing each of
// want and no panic.
func (p *proc) mustFail(d time.Duration, want ...string) {
	p.t.Helper()
	if !p.exits(d) {
		p.t.Fatalf("hass up still running after %s; want it to exit with an error naming %q", d, want)
	}
	out := p.out.String()
	if p.exitCode() == 0 {
		p.t.Errorf("exit code 0, want an error")
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			p.t.Errorf("output lacks %q", w)
		}
	}
	if strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") {
		p.t.Errorf("output holds a panic")
	}
	if p.t.Failed() {
		p.t.Logf("output:\n%s", out)
	}
}

// cli runs the hass CLI against p as the given user ("" for this one), with at most 20 s.
func (p *proc) cli(user string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args = append(args, "--server", p.server)
	var cmd *exec.Cmd
	if user == "" {
		cmd = exec.CommandContext(ctx, hassBin, args...)
	} else {
		cmd = exec.CommandContext(ctx, "setpriv", append([]string{"--reuid=" + user, "--regid=nogroup", "--init-groups", hassBin}, args...)...)
	}
	// The admin token hass up bootstrapped (root-only file): handed over in the environment,
	// so that another user's request is judged by the socket's permissions, not by the
	// token file's. Before hass up wrote it, the CLI says it has no token (and callers retry).
	if tok, err := auth.ReadFile(filepath.Join(p.data, "admin.token")); err == nil {
		cmd.Env = append(os.Environ(), "HASS_TOKEN="+tok.String())
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// status is the daemon's status, once it answers (at most 30 s).
func (p *proc) status() api.Status {
	p.t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-p.done:
			p.t.Fatalf("hass up exited (%d) before it answered:\n%s", p.exitCode(), p.out.String())
		default:
		}
		out, err := p.cli("", "status", "-o", "json")
		last = out
		var s api.Status
		if err == nil && json.Unmarshal([]byte(out), &s) == nil {
			return s
		}
	}
	p.t.Fatalf("hass up does not answer: %s", last)
	return api.Status{}
}

// waitStore waits at most 15 s for `hass status` to report a store state containing want.
func (p *proc) waitStore(want string) api.Status {
	p.t.Helper()
	var s api.Status
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if s = p.status(); strings.Contains(s.Store, want) {
			return s
		}
	}
	p.t.Fatalf("status: store %q, want it to contain %q", s.Store, want)
	return s
}

// tcpListeners lists the TCP ports process pid listens on.
func tcpListeners(t *testing.T, pid int) []int {
	t.Helper()
	inodes := map[string]bool{}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, f := range []string{"tcp", "tcp6"} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text()) // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if len(fs) > 9 && fs[3] == "0A" && inodes[fs[9]] {
				_, port, _ := strings.Cut(fs[1], ":")
				if n, err := strconv.ParseInt(port, 16, 32); err == nil {
					ports = append(ports, int(n))
				}
			}
		}
		fh.Close()
	}
	return ports
}

// etcdClient connects to the embedded etcd of p as root: through its unix socket in the data
// dir, or (an older hass) whichever of its TCP ports answers.
func (p *proc) etcdClient() *clientv3.Client {
	p.t.Helper()
	eps := []string{"unix://" + filepath.Join(p.data, "client.sock")}
	if _, err := os.Stat(filepath.Join(p.data, "client.sock")); err != nil {
		eps = nil
		for _, port := range tcpListeners(p.t, p.cmd.Process.Pid) {
			if !strings.HasSuffix(p.server, ":"+strconv.Itoa(port)) {
				eps = append(eps, "127.0.0.1:"+strconv.Itoa(port))
			}
		}
	}
	for _, ep := range eps {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 2 * time.Second, Logger: nopLogger()})
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = cli.Get(ctx, "/hass/v1/meta/event_seq")
		cancel()
		if err == nil {
			p.t.Cleanup(func() { cli.Close() })
			return cli
		}
		cli.Close()
	}
	p.t.Fatalf("no etcd client endpoint among %v", eps)
	return nil
}

// populate writes 20 VM records and 300 events into p's store, as root through etcd.
func (p *proc) populate() {
	p.t.Helper()
	cli := p.etcdClient()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		v := fmt.Sprintf(`{"name":"vm%d","host":"storage-test","mem_mib":64,"desired":"stopped","policy":{"max_restarts":3,"window":"10m0s","max_relocations":1,"on_guest_shutdown":"honour","priority":0}}`, i)
		if _, err := cli.Put(ctx, fmt.Sprintf("/hass/v1/vms/vm%d", i), v); err != nil {
			p.t.Fatal(err)
		}
	}
	for i := range 300 {
		e := fmt.Sprintf(`{"seq":%d,"at":"2026-01-01T00:00:00Z","type":"test","vm":"","host":"","kind":"","msg":"%s"}`, i+1, strings.Repeat("m", 200))
		if _, err := cli.Put(ctx, fmt.Sprintf("/hass/v1/events/%020d", i+1), e); err != nil {
			p.t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "/hass/v1/meta/event_seq", "300"); err != nil {
		p.t.Fatal(err)
	}
}

func nopLogger() *zap.Logger { return zap.NewNop() }

func randomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// ---- item 7: users without rights ---------------------------------------------------------

// TestAPISocket: the API's unix socket lets root and the members of its group in, and no
// one else; without a group it is root's only.
func TestAPISocket(t *testing.T) {
	needRoot(t)
	w := workDir(t)
	group, user := randomName("hasst"), randomName("hasstu")
	sh(t, "groupadd", group)
	t.Cleanup(func() { exec.Command("groupdel", group).Run() })
	sh(t, "useradd", "--no-create-home", "--no-user-group", "--gid", "nogroup", "--groups", group,
		"--shell", "/usr/sbin/nologin", user)
	t.Cleanup(func() { exec.Command("userdel", user).Run() })

	sock := filepath.Join(w, "run", "hass.sock")
	p := up(t, filepath.Join(w, "data"), "unix://"+sock, "--socket-group", group)
	if s := p.status(); s.Store != "ok" {
		t.Errorf("root: status %+v", s)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o660 || st.Uid != 0 || strconv.Itoa(int(st.Gid)) != lookupGID(t, group) {
		t.Errorf("socket %s: mode %v, uid %d, gid %d; want a socket, 0660, root, group %s", sock, fi.Mode(), st.Uid, st.Gid, group)
	}
	if out, err := p.cli(user, "status"); err != nil || !strings.Contains(out, "store ok") {
		t.Errorf("a member of group %s: %v\n%s", group, err, out)
	}
	if out, err := p.cli(user, "vm", "list"); err != nil {
		t.Errorf("a member of group %s: vm list: %v\n%s", group, err, out)
	}
	out, err := p.cli("nobody", "vm", "stop", "web1")
	if err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("nobody: vm stop: %v\n%s; want permission denied", err, out)
	}
	t.Logf("nobody: %s", strings.TrimSpace(out))

	// Without --socket-group (and no group hass on this machine): root's only.
	if _, err := exec.Command("getent", "group", "hass").Output(); err == nil {
		t.Log("a group hass exists here: the 0600 default is not checked")
		return
	}
	sock2 := filepath.Join(w, "run2", "hass.sock")
	p2 := up(t, filepath.Join(w, "data2"), "unix://"+sock2)
	p2.status()
	if fi, err := os.Stat(sock2); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("default socket: %v %v, want 0600", fi.Mode(), err)
	}
	if out, err := p2.cli(user, "status"); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("group %s member, socket without group: %v\n%s", group, err, out)
	}
	if !strings.Contains(p2.out.String(), "only root can use") {
		t.Errorf("the log does not say who can use the socket:\n%s", p2.out.String())
	}
	// Stopped, hass removes its socket.
	p2.stop()
	if _, err := os.Lstat(sock2); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

func lookupGID(t *testing.T, group string) string {
	out, err := exec.Command("getent", "group", group).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Split(strings.TrimSpace(string(out)), ":")
	return f[2]
}

// TestEmbeddedEtcdUnreachable: a user without rights cannot reach the embedded etcd: it
// listens on no TCP port, and its unix sockets are in a directory only root can enter. (The
// API is on TCP here, which hass warns about.)
func TestEmbeddedEtcdUnreachable(t *testing.T) {
	needRoot(t)
	if testBin == "" {
		t.Fatal("could not copy the test binary to a place another user can run it (see TestMain)")
	}
	w := workDir(t)
	apiAddr := freeAddr(t)
	p := up(t, filepath.Join(w, "data"), apiAddr)
	p.status()
	var targets []string
	for _, port := range tcpListeners(t, p.cmd.Process.Pid) {
		if a := "127.0.0.1:" + strconv.Itoa(port); a != apiAddr {
			t.Errorf("hass up listens on TCP port %d besides the API", port)
			targets = append(targets, "tcp:"+a)
		}
	}
	socks, _ := filepath.Glob(filepath.Join(w, "data", "*.sock"))
	for _, s := range socks {
		targets = append(targets, "unix:"+s)
	}
	if len(targets) == 0 {
		t.Fatal("found no etcd endpoint to try")
	}
	cmd := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", testBin)
	cmd.Env = append(os.Environ(), "HASS_TEST_DIAL="+strings.Join(targets, ","))
	out, err := cmd.CombinedOutput()
	t.Logf("as nobody:\n%s", out)
	if err != nil {
		t.Errorf("nobody reached the embedded etcd: %v", err)
	}
	if log := p.out.String(); !strings.Contains(log, "the API listens on TCP without TLS") {
		t.Errorf("no warning about the API on TCP:\n%s", log)
	}
}

// TestNonLoopbackWarning: an API off loopback is logged as an error.
func TestNonLoopbackWarning(t *testing.T) {
	w := workDir(t)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	p := up(t, filepath.Join(w, "data"), "0.0.0.0:"+port)
	p.server = "http://127.0.0.1:" + port
	p.status()
	if log := p.out.String(); !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "NON-LOOPBACK") {
		t.Errorf("log:\n%s", log)
	}
}

// ---- item 8: storage -----------------------------------------------------------------------

func TestSecondInstanceRefused(t *testing.T) {
	w := workDir(t)
	data := filepath.Join(w, "data")
	first := up(t, data, freeAddr(t))
	first.status()
	second := up(t, data, freeAddr(t))
	second.mustFail(10*time.Second, fmt.Sprintf("data dir %s is in use by another hass (pid %d)", data, first.cmd.Process.Pid))
	if s := first.status(); s.Store != "ok" {
		t.Errorf("the first hass after the second's attempt: %+v", s)
	}
}

// populated returns a data dir (in w) holding a stopped hass's store with 20 VMs and 300
// events.
func populated(t *testing.T, w string) string {
	t.Helper()
	data := filepath.Join(w, "data")
	p := up(t, data, freeAddr(t))
	p.status()
	p.populate()
	p.stop()
	return data
}

func walFile(t *testing.T, data string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(data, "member", "wal", "*.wal"))
	if len(m) != 1 {
		t.Fatalf("WAL files: %v", m)
	}
	return m[0]
}

func TestDamagedStorage(t *testing.T) {
	w := workDir(t)
	base := populated(t, w)
	for i, tc := range []struct {
		name   string
		damage func(t *testing.T, data string)
		want   string
	}{
		{"random bytes over the db", func(t *testing.T, data string) {
			junk := make([]byte, 64<<10)
			rand.Read(junk)
			f, err := os.OpenFile(filepath.Join(data, "member", "snap", "db"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(junk, 0)
			f.Close()
		}, "member/snap/db is damaged"},
		{"empty WAL", func(t *testing.T, data string) {
			os.Truncate(walFile(t, data), 0)
		}, "member/wal is damaged"},
		{"truncated WAL", func(t *testing.T, data string) {
			wf := walFile(t, data)
			b, _ := os.ReadFile(wf)
			os.Truncate(wf, int64(len(bytes.TrimRight(b, "\x00"))/3))
		}, "member/wal ends at entry"},
		{"WAL deleted", func(t *testing.T, data string) {
			os.RemoveAll(filepath.Join(data, "member", "wal"))
		}, "member/wal is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(w, fmt.Sprintf("case%d", i))
			sh(t, "cp", "-a", "--sparse=always", base, data)
			tc.damage(t, data)
			p := up(t, data, freeAddr(t))
			p.mustFail(30*time.Second, filepath.Join(data, tc.want))
		})
	}
}

func TestDataDirLost(t *testing.T) {
	w := workDir(t)
	data := filepath.Join(w, "data")
	p := up(t, data, freeAddr(t))
	p.status()
	p.stop()
	if !strings.Contains(p.out.String(), "initialised a new, empty store") {
		t.Errorf("first start: not said that the store is new:\n%s", p.out.String())
	}
	p = up(t, data, freeAddr(t))
	p.status()
	p.stop()
	if strings.Contains(p.out.String(), "new, empty store") {
		t.Errorf("a restart said the store is new:\n%s", p.out.String())
	}

	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	p = up(t, data, freeAddr(t))
	p.mustFail(20*time.Second, data+".store-id records that the store of this host", "but it does not exist")
	if _, err := os.Stat(data); err == nil {
		t.Errorf("the refused start created %s", data)
	}
	os.Mkdir(data, 0o700) // a mount point whose disk is not mounted
	p = up(t, data, freeAddr(t))
	p.mustFail(20*time.Second, "but it holds no store")

	// The operator says so: a new, empty store.
	os.Remove(data + ".store-id")
	p = up(t, data, freeAddr(t))
	p.status()
	if !strings.Contains(p.out.String(), "initialised a new, empty store") {
		t.Errorf("start after the marker was deleted:\n%s", p.out.String())
	}
}

func TestDataDirDeletedWhileRunning(t *testing.T) {
	w := workDir(t)
	data := filepath.Join(w, "data")
	p := up(t, data, freeAddr(t))
	p.status()
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	p.mustFail(15*time.Second, "hass is down", "was deleted")
}

// tmpfs mounts a tmpfs of size bytes in w for the test.
func tmpfs(t *testing.T, w string, size int64) string {
	t.Helper()
	needRoot(t)
	mnt := filepath.Join(w, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("cannot mount a tmpfs as root: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	return mnt
}

// fill writes a file in dir until only leave bytes are free on its filesystem (0: until
// it is full), and returns its path.
func fill(t *testing.T, dir string, leave int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for n := int64(st.Bavail)*st.Bsize - leave; n > 0; n -= int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(n, int64(len(chunk)))]); err != nil {
			if leave == 0 && errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatal(err)
		}
	}
	return path
}

// TestDiskFull: with too little space left to record anything, hass stays up, says so in
// its status, and records nothing; when space is back, so is the store.
func TestDiskFull(t *testing.T) {
	w := workDir(t)
	mnt := tmpfs(t, w, 320<<20)
	p := up(t, filepath.Join(mnt, "data"), freeAddr(t))
	if s := p.status(); s.Store != "ok" {
		t.Fatalf("status before: %+v", s)
	}
	filler := fill(t, mnt, 16<<20)
	s := p.waitStore("writes refused")
	t.Logf("store: %s", s.Store)
	if !strings.Contains(s.Store, "MiB free") {
		t.Errorf("store %q does not say how much is free", s.Store)
	}
	if p.exits(2 * time.Second) {
		t.Fatalf("hass up exited on a full disk")
	}
	os.Remove(filler)
	p.waitStore("ok")
	log := p.out.String()
	if !strings.Contains(log, "writes refused until disk space is freed") || !strings.Contains(log, "writes resume") {
		t.Errorf("log:\n%s", log)
	}
}

// TestDiskFullEtcdFails: when etcd itself fails a write (here a root process writes to it
// directly on a full disk), hass stops with "hass is down" and the cause, instead of dying
// without a word.
func TestDiskFullEtcdFails(t *testing.T) {
	w := workDir(t)
	mnt := tmpfs(t, w, 320<<20)
	p := up(t, filepath.Join(mnt, "data"), freeAddr(t))
	p.status()
	cli := p.etcdClient()
	fill(t, mnt, 0)
	big := strings.Repeat("x", 64<<10)
	for i := 0; i < 200; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Put(ctx, fmt.Sprintf("/fill/%d", i), big)
		cancel()
		if err != nil {
			break
		}
	}
	p.mustFail(20*time.Second, "hass is down", "no space left on device")
}
