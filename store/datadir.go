package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The embedded store's data dir holds, besides etcd's member/ directory:
const (
	lockFile   = "hass.lock"   // flocked by the hass that uses the dir; holds its pid
	clientSock = "client.sock" // etcd's client endpoint (gRPC)
	peerSock   = "peer.sock"   // etcd's raft peer endpoint (a single member has no peers)
)

// maxSockPath is the longest path a unix socket can be bound to on Linux (sun_path is 108
// bytes, NUL included).
const maxSockPath = 107

// ErrStoreLost is returned (wrapped) by OpenEmbeddedConfig when the data dir holds no store
// (or another one) while the marker next to it says a store was created there: the data dir
// was deleted, or its disk is not mounted, or the wrong one is.
var ErrStoreLost = errors.New("the store is not where it was")

// ErrDamaged is returned (wrapped) by OpenEmbeddedConfig when etcd's files in the data dir
// are damaged or inconsistent; the error names the file.
var ErrDamaged = errors.New("damaged store")

// ErrInUse is returned (wrapped) by OpenEmbeddedConfig when another process holds the data
// dir's lock.
var ErrInUse = errors.New("data dir in use")

// kindError is an error of one of the kinds above (errors.Is matches it) with its own message.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func kindErrorf(kind error, format string, a ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, a...)}
}

// MarkerPath is where OpenEmbeddedConfig records the identity of the store it created in dir:
// next to dir, not in it, so that it survives the loss of dir (or dir's disk not being mounted).
func MarkerPath(dir string) string { return filepath.Clean(dir) + ".store-id" }

// marker is what the marker file says.
type marker struct {
	ClusterID string
	Created   string
}

func readMarker(path string) (m marker, exists bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return marker{}, false, nil
	}
	if err != nil {
		return marker{}, true, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		switch {
		case !ok || strings.HasPrefix(k, "#"):
		case k == "cluster_id":
			m.ClusterID = v
		case k == "created":
			m.Created = v
		}
	}
	if err := sc.Err(); err != nil {
		return m, true, err
	}
	if m.ClusterID == "" {
		return m, true, fmt.Errorf("%s: no cluster_id line", path)
	}
	return m, true, nil
}

func writeMarker(path, dir, clusterID string) error {
	body := fmt.Sprintf(`# hass: the embedded etcd store of this host lives in %s.
# hass refuses to start with an empty store there while this file names a store: if %s
# was lost for good and you want hass to start again with an empty store (nothing
# protected), restore it from a backup, or delete this file.
cluster_id=%s
created=%s
`, dir, dir, clusterID, time.Now().UTC().Format(time.RFC3339))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncFile(filepath.Dir(path))
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// lockDir takes the data dir's lock without waiting: a second hass on the same dir is told
// at once who holds it, instead of waiting forever on etcd's own lock of its WAL.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another process"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
					who = fmt.Sprintf("another hass (pid %d)", pid)
				}
			}
			return nil, kindErrorf(ErrInUse, "data dir %s is in use by %s", dir, who)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// ownDir makes dir (created if missing) reachable by its owner only: etcd's files and its
// unix sockets live in it, and a process that can reach them can read and rewrite every
// record. It reports whether dir had to be created.
func ownDir(dir string) (created bool, err error) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, err
		}
		return true, os.Chmod(dir, 0o700) // MkdirAll's mode is subject to the umask
	case err != nil:
		return false, err
	case !fi.IsDir():
		return false, fmt.Errorf("%s is not a directory", dir)
	case fi.Mode().Perm()&0o077 != 0:
		return false, os.Chmod(dir, 0o700)
	}
	return false, nil
}

// dirState is what precheck found in a data dir.
type dirState struct {
	store bool // etcd holds a store there (it will restart it rather than create one)
}

// precheck looks at etcd's files before etcd is started on them, and turns what would make
// etcd panic, exit or wait forever into an error naming the file:
//   - member/snap/db (bbolt) must open and hold a readable consistent index;
//   - member/wal must read to its end (etcd repairs a torn last record itself; so does this
//     read tolerate one);
//   - the db must not have applied entries the WAL no longer has: etcd would then wait
//     forever for its own publish entry, which it skips as already applied;
//   - the db may be missing only while the WAL still starts at the first entry (etcd then
//     rebuilds the db from the WAL); the WAL may be missing only while the db has applied
//     nothing (a first start interrupted between the two).
//
// It runs etcd's own readers, which panic on some garbage: it recovers, and reports the file
// it was reading.
func precheck(dir string) (st dirState, err error) {
	member := filepath.Join(dir, "member")
	walDir := filepath.Join(member, "wal")
	snapDir := filepath.Join(member, "snap")
	dbPath := filepath.Join(snapDir, "db")
	if _, err := os.Stat(member); errors.Is(err, fs.ErrNotExist) {
		return dirState{}, nil
	}
	reading := member
	// A bad mmap'ed page is a panic here, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if v := recover(); v != nil {
			err = kindErrorf(ErrDamaged, "%s is damaged: reading it failed: %v", reading, v)
		}
	}()
	// Readers that panic rather than exit, so that recover above sees it.
	lg := zap.New(zapcore.NewNopCore(), zap.WithFatalHook(zapcore.WriteThenPanic))

	haveDB := exists(dbPath)
	var ci uint64
	if haveDB {
		reading = dbPath
		if ci, err = consistentIndex(dbPath); err != nil {
			return dirState{}, kindErrorf(ErrDamaged, "%s is damaged: %v", dbPath, err)
		}
	}
	haveWAL := wal.Exist(walDir)
	if !haveWAL {
		if haveDB && ci > 0 {
			return dirState{}, kindErrorf(ErrDamaged, "%s is missing (or holds no .wal file) while %s holds a store "+
				"that applied %d entries: etcd cannot tell what was committed", walDir, dbPath, ci)
		}
		return dirState{}, nil // nothing was ever stored: etcd starts afresh
	}

	reading = walDir
	walSnaps, err := wal.ValidSnapshotEntries(lg, walDir)
	if err != nil {
		return dirState{}, kindErrorf(ErrDamaged, "%s is damaged: %v", walDir, err)
	}
	reading = snapDir
	var walsnap walpb.Snapshot
	s, err := snap.New(lg, snapDir).LoadNewestAvailable(walSnaps)
	switch {
	case errors.Is(err, snap.ErrNoSnapshot):
	case err != nil:
		return dirState{}, kindErrorf(ErrDamaged, "%s is damaged: %v", snapDir, err)
	default:
		walsnap.Index, walsnap.Term = s.Metadata.Index, s.Metadata.Term
	}
	if !haveDB && walsnap.Index > 0 {
		return dirState{}, kindErrorf(ErrDamaged, "%s is missing, and %s only holds the entries after %d: the store cannot be rebuilt",
			dbPath, walDir, walsnap.Index)
	}
	reading = walDir
	w, err := wal.OpenForRead(lg, walDir, walsnap)
	if err != nil {
		return dirState{}, kindErrorf(ErrDamaged, "%s is damaged: %v", walDir, err)
	}
	_, _, ents, err := w.ReadAll()
	w.Close()
	if err != nil {
		return dirState{}, kindErrorf(ErrDamaged, "%s is damaged: %v", walDir, err)
	}
	last := walsnap.Index
	if len(ents) > 0 {
		last = ents[len(ents)-1].Index
	}
	if ci > last {
		return dirState{}, kindErrorf(ErrDamaged, "%s ends at entry %d, but %s has applied entries up to %d: "+
			"the WAL was truncated or replaced", walDir, last, dbPath, ci)
	}
	return dirState{store: true}, nil
}

// consistentIndex opens etcd's bbolt db read-only and returns the index of the last raft
// entry applied to it (0 if none).
func consistentIndex(path string) (uint64, error) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var ci uint64
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("meta"))
		if b == nil {
			return nil
		}
		v := b.Get([]byte("consistent_index"))
		switch len(v) {
		case 0:
		case 8:
			ci = binary.BigEndian.Uint64(v)
		default:
			return fmt.Errorf("meta/consistent_index is %d bytes, want 8", len(v))
		}
		return nil
	})
	return ci, err
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// checkDirIntact reports what is missing or replaced in a data dir in use: dir itself (same
// inode as when the store was opened), its lock file (the one this process holds), etcd's WAL
// directory and db.
func checkDirIntact(dir string, dirInfo fs.FileInfo, lock *os.File) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !os.SameFile(fi, dirInfo) {
		return fmt.Errorf("%s was replaced by another directory", dir)
	}
	if lock != nil {
		held, err := lock.Stat()
		if err != nil {
			return err
		}
		fi, err := os.Stat(lock.Name())
		if err != nil {
			return err
		}
		if !os.SameFile(fi, held) {
			return fmt.Errorf("%s was replaced", lock.Name())
		}
	}
	for _, p := range []string{filepath.Join(dir, "member", "wal"), filepath.Join(dir, "member", "snap", "db")} {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	return nil
}

// freeBytes is the space available to this process on the filesystem holding path.
func freeBytes(path string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}
