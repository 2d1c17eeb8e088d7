package daemon

import (
	"bytes"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenUnix(t *testing.T) {
	// Without a group hass the default socket is root's alone (0600); where the group
	// exists (an operator made it) it is 0660 with that group. Either way is checked.
	wantPerm, wantLog := fs.FileMode(0o600), []string{"only", "groupadd --system hass"}
	if _, err := exec.Command("getent", "group", DefaultSocketGroup).Output(); err == nil {
		wantPerm, wantLog = 0o660, []string{"members of group " + DefaultSocketGroup}
	}
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil))
	sock := filepath.Join(t.TempDir(), "run", "hass.sock")

	ln, err := listenAPI("unix://"+sock, "", logger)
	if err != nil {
		t.Fatal(err)
	}
	if ln.addr != "unix://"+sock {
		t.Errorf("addr %q", ln.addr)
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != wantPerm {
		t.Errorf("socket mode %v, want a socket with %04o", fi.Mode(), wantPerm)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("socket dir: %v %v", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(sock)); len(ents) != 1 {
		t.Errorf("socket dir holds %v", ents)
	}
	for _, w := range wantLog {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q: %s", w, log.String())
		}
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Close()

	// A second listener on a live socket is refused, and leaves it alone.
	if _, err := listenAPI("unix://"+sock, "", logger); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second listen: %v", err)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("the live socket was removed: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(sock); err == nil {
		t.Error("Close left the socket behind")
	}

	// A stale socket (its process died) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err = listenAPI("unix://"+sock, "", logger)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ln.Close()

	// Not a socket: left alone.
	if err := os.WriteFile(sock, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenAPI("unix://"+sock, "", logger); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a file: %v", err)
	}
}

func TestListenBadAddresses(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	for _, a := range []string{"unix://relative/hass.sock", "unix:", "http://127.0.0.1:0"} {
		if _, err := listenAPI(a, "", logger); err == nil {
			t.Errorf("%q: accepted", a)
		}
	}
	if _, err := listenAPI("unix://"+filepath.Join(t.TempDir(), "s"), "no-such-group-hass-test", logger); err == nil ||
		!strings.Contains(err.Error(), "no-such-group-hass-test") {
		t.Errorf("an unknown --socket-group: %v", err)
	}
}

func TestListenTCPWarns(t *testing.T) {
	var log bytes.Buffer
	ln, err := listenAPI("127.0.0.1:0", "", slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "any user of this host") {
		t.Errorf("log: %s", log.String())
	}
}
