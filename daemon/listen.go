package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultListen is where `hass up` serves its API unless told otherwise, and where the CLI
// looks for it: a unix socket, which only root and the members of SocketGroup can use.
const DefaultListen = "unix:///run/hass/hass.sock"

// DefaultSocketGroup is the group let into the API socket when it exists, as libvirt lets
// group libvirt into its socket.
const DefaultSocketGroup = "hass"

// maxSockPath is the longest path a unix socket can be bound to on Linux.
const maxSockPath = 107

// apiListener is the API's listener, and what it takes to clean up after it.
type apiListener struct {
	net.Listener
	addr    string // for Ready and the log: unix:///path or host:port
	cleanup func()
	once    sync.Once
}

// Close closes the listener and removes the socket (if it is still the one it created).
func (l *apiListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(l.cleanup)
	return err
}

// listenAPI listens where --listen says: "unix:///path" (the default, DefaultListen) or
// "host:port". Every request needs a token (package auth); the unix socket is a second fence
// that keeps users without rights away even from the token check: it is owned by hass's user, mode 0660 with group (DefaultSocketGroup
// when group is "" and that group exists), else 0600. On TCP, any local user (any host, off
// loopback) can reach it: that is logged as a warning (an error off loopback).
func listenAPI(listen, group string, log *slog.Logger) (*apiListener, error) {
	return listenAPITLS(listen, group, nil, log)
}

// listenAPITLS is listenAPI, serving TLS on a TCP address when t is set.
func listenAPITLS(listen, group string, t *APITLS, log *slog.Logger) (*apiListener, error) {
	if rest, ok := strings.CutPrefix(listen, "unix:"); ok {
		path := strings.TrimPrefix(rest, "//")
		if !filepath.IsAbs(path) {
			return nil, fmt.Errorf("%q: want unix:// and an absolute path, e.g. %s", listen, DefaultListen)
		}
		if t != nil {
			return nil, fmt.Errorf("%q: TLS is for a TCP address (a unix socket is guarded by its mode and group)", listen)
		}
		return listenUnix(filepath.Clean(path), group, log)
	}
	if strings.Contains(listen, "://") {
		return nil, fmt.Errorf("%q: want host:port or unix:///path", listen)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	if t != nil {
		tl, err := t.serverListener(ln)
		if err != nil {
			ln.Close()
			return nil, err
		}
		log.Info("the API serves TLS", "api", addr, "cert", t.Cert)
		return &apiListener{Listener: tl, addr: addr, cleanup: func() {}}, nil
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; ip.IsLoopback() {
		log.Warn("the API listens on TCP without TLS: every request needs a token, but any user of this host who "+
			"holds one can reach it, and tokens cross the loopback in clear; use --listen "+DefaultListen+" (the default) "+
			"to also allow only root and group "+DefaultSocketGroup+", or --tls-cert/--tls-key/--tls-ca", "api", addr)
	} else {
		log.Error("THE API LISTENS ON A NON-LOOPBACK ADDRESS WITHOUT TLS: every request needs a token, but tokens "+
			"cross the network in clear, where anyone on the path can take one; use --listen "+DefaultListen+
			" (the default), or serve TLS (--tls-cert, --tls-key, --tls-ca; hass certs init makes them)", "api", addr)
	}
	return &apiListener{Listener: ln, addr: addr, cleanup: func() {}}, nil
}

func listenUnix(path, group string, log *slog.Logger) (*apiListener, error) {
	gid, groupName, err := socketGroup(group)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// A socket left behind by a hass that died is replaced; one that answers is not.
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another process (another hass up?) is serving on %s", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s exists and cannot be checked: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	// The socket is bound in a private (0700) directory, given its owner group and mode, and
	// only then linked where clients look: no one connects before its mode applies.
	tmpDir, err := os.MkdirTemp(dir, ".h")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if len(tmp) > maxSockPath || len(path) > maxSockPath {
		return nil, fmt.Errorf("%s: too long for a unix socket: use a path of at most %d bytes", path, maxSockPath-(len(tmp)-len(path)))
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // tmp is gone by then; path is removed by cleanup
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(tmp, -1, gid); err != nil {
			ln.Close()
			return nil, err
		}
	}
	if err := os.Chmod(tmp, mode); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Link(tmp, path); err != nil {
		ln.Close()
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("another process (another hass up?) created %s just now", path)
		}
		return nil, err
	}
	mine, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, err
	}
	cleanup := func() {
		if fi, err := os.Lstat(path); err == nil && os.SameFile(fi, mine) {
			os.Remove(path)
		}
	}
	owner := "its owner"
	if u, err := user.Current(); err == nil {
		owner = u.Username
	}
	if gid >= 0 {
		log.Info("the API listens on a unix socket that "+owner+" and the members of group "+groupName+" can use",
			"api", path, "mode", fmt.Sprintf("%04o", mode), "group", groupName)
	} else {
		log.Info("the API listens on a unix socket that only "+owner+" can use (there is no group "+DefaultSocketGroup+
			": create it, e.g. groupadd --system "+DefaultSocketGroup+", add operators to it and restart hass to let them in)",
			"api", path, "mode", fmt.Sprintf("%04o", mode))
	}
	return &apiListener{Listener: ln, addr: "unix://" + path, cleanup: cleanup}, nil
}

// socketGroup resolves the API socket's group: group if given (it must exist), else
// DefaultSocketGroup if it exists, else none (gid -1).
func socketGroup(group string) (gid int, name string, err error) {
	name = group
	if name == "" {
		name = DefaultSocketGroup
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		var unknown user.UnknownGroupError
		if group == "" && errors.As(err, &unknown) {
			return -1, "", nil
		}
		return 0, "", fmt.Errorf("socket group %q: %w", name, err)
	}
	gid, err = strconv.Atoi(g.Gid)
	if err != nil {
		return 0, "", fmt.Errorf("socket group %q: gid %q: %w", name, g.Gid, err)
	}
	return gid, name, nil
}
