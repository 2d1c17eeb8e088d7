package store

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// readyTimeout bounds each wait of OpenEmbedded: for etcd's files to be checked, for etcd to
// start, and for it to serve.
const readyTimeout = 60 * time.Second

// closeTimeout bounds how long Close waits for the embedded etcd to stop, and
// failedCloseTimeout how long once the store failed: an etcd that hit a fatal error may never.
const (
	closeTimeout       = 10 * time.Second
	failedCloseTimeout = 2 * time.Second
)

// watchEvery is how often an open embedded store checks that its data dir is still there.
const watchEvery = time.Second

// DefaultMinFree is the free space an embedded store keeps on its data dir's filesystem
// unless told otherwise: etcd's next WAL segment (64 MiB, allocated whole) and room for its db
// to grow. etcd exits the process when a write to its WAL or db fails; below this, the store
// refuses writes instead.
const DefaultMinFree = 128 << 20

// EmbeddedConfig configures OpenEmbeddedConfig.
type EmbeddedConfig struct {
	Dir    string       // data directory, created (0700) if missing, made 0700 if wider
	Logger *slog.Logger // etcd's errors and the store's own notices go here; nil discards them
	// MinFree is the free space (bytes) kept on Dir's filesystem: below it, every write is
	// refused with ErrNoSpace until space is freed. 0 means DefaultMinFree; < 0 disables it.
	MinFree int64
	// Member, when set, makes this etcd one member of a cluster of several (three
	// controllers, each with its member): its peers and other hosts' agents reach it over
	// TCP. Without it, etcd is a single member reachable only through its unix sockets.
	Member *MemberConfig
}

// MemberConfig is this member's place in a multi-member embedded etcd cluster.
type MemberConfig struct {
	Name string // this member's name, as in InitialCluster
	// PeerURL and ClientURL are where this member listens for its peers and for clients
	// (http://IP:2380, http://IP:2379); they are also what it advertises.
	PeerURL, ClientURL string
	// InitialCluster names every member: "c1=http://10.0.0.1:2380,c2=...".
	InitialCluster string
	// Token is the cluster's token, the same on every member (it makes the cluster ID).
	Token string
	// Existing: join a cluster that already runs (a replaced member), not form a new one.
	Existing bool
	// TLS, when set, makes the member serve its clients and peers over mutual TLS (then the
	// URLs are https://): a client or peer without a certificate signed by the CA is
	// refused. Nil: plain http, for a network that nobody else can reach.
	TLS *TLSFiles
}

// OpenEmbedded starts an embedded single-node etcd with its data in dir and returns a Store
// using a clientv3 client to it; see OpenEmbeddedConfig.
func OpenEmbedded(ctx context.Context, dir string, logger *slog.Logger) (*Store, error) {
	return OpenEmbeddedConfig(ctx, EmbeddedConfig{Dir: dir, Logger: logger})
}

// OpenEmbeddedConfig starts an embedded single-node etcd with its data in c.Dir and returns a
// Store using a clientv3 client to it. State survives a restart with the same dir. Close stops
// both.
//
// Only the user running hass can reach the store: etcd serves its clients and its (unused)
// raft peer endpoint on unix sockets inside the data dir, which is made 0700; nothing listens
// on TCP.
//
// It fails with an error, never a panic or an endless wait:
//   - ErrInUse when another process uses the dir (its lock file is held);
//   - ErrDamaged, naming the file, when etcd's files are damaged or inconsistent;
//   - ErrStoreLost when the marker next to the dir (MarkerPath) records a store created
//     there, but the dir holds none (deleted, or its disk not mounted) or another one.
//
// A dir without a store (and without a marker) gets a new, empty one, which is logged as a
// warning, and the marker is written. Once open, the store fails (Done, Err) if etcd hits a
// fatal error (a failed disk write) or the dir is deleted.
func OpenEmbeddedConfig(ctx context.Context, c EmbeddedConfig) (*Store, error) {
	if c.Dir == "" {
		return nil, errors.New("store: open embedded etcd: no data dir")
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return nil, fmt.Errorf("store: open embedded etcd in %s: %w", c.Dir, err)
	}
	failf := func(format string, a ...any) error {
		return fmt.Errorf("store: open embedded etcd in %s: %w", dir, fmt.Errorf(format, a...))
	}
	if p := filepath.Join(dir, clientSock); len(p) > maxSockPath {
		return nil, failf("%s is too long for a unix socket (%d bytes, at most %d): use a shorter data dir", p, len(p), maxSockPath)
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	markerPath := MarkerPath(dir)
	mk, hadMarker, markerErr := readMarker(markerPath)
	lost := func(what string) error {
		id := ""
		if markerErr == nil {
			id = fmt.Sprintf(" (etcd cluster %s, created %s)", mk.ClusterID, mk.Created)
		}
		return kindErrorf(ErrStoreLost, "%s records that the store of this host%s lives in %s, but %s. "+
			"If its disk is not mounted, mount it; if it was lost, restore it from a backup; "+
			"to start over with a new, empty store (no VM protected), delete %s",
			markerPath, id, dir, what, markerPath)
	}
	if hadMarker && !exists(dir) {
		return nil, fmt.Errorf("store: %w", lost("it does not exist"))
	}
	created, err := ownDir(dir)
	if err != nil {
		return nil, failf("%w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	keepLock := false // set when an etcd we could not stop may still hold its files
	defer func() {
		if lock != nil && !keepLock {
			lock.Close()
		}
	}()

	state, err := bounded(ctx, func() (dirState, error) { return precheck(dir) })
	if err != nil {
		return nil, fmt.Errorf("store: %w (hass does not start on a damaged store: restore %s from a backup, "+
			"or move it away and delete %s to start over with a new, empty one)", err, dir, markerPath)
	}
	if hadMarker && !state.store {
		return nil, fmt.Errorf("store: %w", lost("it holds no store"))
	}

	life, fail := context.WithCancelCause(context.Background())
	closing := new(atomic.Bool)
	zl := zapLogger(c.Logger, closing, func(err error) { fail(err) })
	ecfg := etcdConfig(dir, zl)
	if c.Member != nil {
		if err := memberConfig(ecfg, *c.Member); err != nil {
			fail(err)
			return nil, failf("%w", err)
		}
	}
	e, held, err := startEtcd(ctx, life, ecfg)
	if err != nil {
		keepLock = held // an unfinished start may hold etcd's files: a new open must not wait on them
		fail(err)
		return nil, failf("%w", err)
	}
	stop := func(err error) (*Store, error) {
		closing.Store(true)
		fail(err)
		keepLock = !closeEtcd(e, closeTimeout)
		return nil, failf("%w", err)
	}
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return stop(err)
	case <-e.Server.StopNotify():
		return stop(errors.New("etcd stopped before it was ready"))
	case <-life.Done():
		return stop(context.Cause(life))
	case <-timer.C:
		return stop(fmt.Errorf("etcd not ready after %s", readyTimeout))
	case <-ctx.Done():
		return stop(ctx.Err())
	}

	cid := e.Server.Cluster().ID().String()
	switch {
	case hadMarker && markerErr == nil && mk.ClusterID != cid:
		return stop(lost(fmt.Sprintf("it holds another store (etcd cluster %s): is the wrong disk mounted?", cid)))
	case hadMarker && markerErr == nil:
	default:
		if markerErr != nil {
			log.Warn("store: the marker of the store is unreadable: writing it again", "marker", markerPath, "err", markerErr)
		}
		if err := writeMarker(markerPath, dir, cid); err != nil {
			log.Warn("store: cannot record the store's identity next to its data dir: a lost data dir will not be told from a first start",
				"marker", markerPath, "err", err)
		}
	}
	if !state.store {
		how := "the data dir was empty"
		if created {
			how = "the data dir did not exist"
		}
		log.Warn("store: initialised a new, empty store: no VM is protected until one is protected again. "+
			"On a first start this is expected; if hass ran on this host before, its store is lost "+
			"(from now on, "+markerPath+" makes hass refuse to start with an empty store)",
			"dir", dir, "why", how, "etcd_cluster", cid)
	}
	for _, n := range []string{clientSock, peerSock} {
		_ = os.Chmod(filepath.Join(dir, n), 0o600) // the dir (0700) already keeps others out
	}

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"unix://" + filepath.Join(dir, clientSock)},
		DialTimeout: 5 * time.Second,
		Logger:      zl,
	})
	if err != nil {
		return stop(fmt.Errorf("client: %w", err))
	}
	dirInfo, err := os.Stat(dir)
	if err != nil {
		cli.Close()
		return stop(err)
	}
	minFree := c.MinFree
	if minFree == 0 {
		minFree = DefaultMinFree
	}
	s := &Store{cli: cli, etcd: e, closing: closing, dir: dir, lock: lock, minFree: minFree, log: log, bigTxns: true,
		life: life, fail: fail}
	lock = nil // the store owns it now
	s.wg.Add(1)
	go s.watch(dirInfo)
	return s, nil
}

// etcdConfig is the embedded etcd's configuration: one member, reachable only through unix
// sockets inside dir.
//
// etcd names unix socket URLs unusually: a client listener binds to the URL's host and path
// joined (so unix:///abs/path binds /abs/path), a peer listener to its host alone (so
// unix:///abs/path would bind "", and etcd's own tests' unix://localhost:2380 binds a file
// named "localhost:2380" in the working directory); the peer URL is therefore built with the
// absolute path as its host. Advertised URLs must look like host:port; a single member never
// dials them, so they are a placeholder.
func etcdConfig(dir string, zl *zap.Logger) *embed.Config {
	curl := url.URL{Scheme: "unix", Path: filepath.Join(dir, clientSock)}
	purl := url.URL{Scheme: "unix", Host: filepath.Join(dir, peerSock)}
	adv := url.URL{Scheme: "unix", Host: "localhost:0"}

	cfg := embed.NewConfig()
	cfg.Name = "hass"
	cfg.Dir = dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{curl}, []url.URL{adv}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{purl}, []url.URL{adv}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Used only when a new store is created: a random token gives every store its own
	// cluster ID, which the marker next to the data dir records.
	cfg.InitialClusterToken = "hass-" + randomHex(8)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zl)
	cfg.LogLevel = "error"
	cfg.EnableGRPCGateway = false
	// Small: hass keeps little state. Without compaction every append and CAS would grow the
	// history until the backend quota raised a NOSPACE alarm and refused writes.
	cfg.SnapshotCount = 5000
	cfg.SnapshotCatchUpEntries = 1000
	cfg.MaxSnapFiles = 2
	cfg.MaxWalFiles = 2
	cfg.QuotaBackendBytes = 256 << 20
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "10m"
	cfg.MaxTxnOps = embeddedMaxTxnOps
	// One member has no peers to wait for: short ticks make the first election (and so
	// OpenEmbedded) take ~0.1 s instead of ~1 s.
	cfg.TickMs, cfg.ElectionMs = 25, 250
	return cfg
}

// memberConfig makes cfg one member of a cluster of several.
func memberConfig(cfg *embed.Config, m MemberConfig) error {
	scheme := "http"
	if m.TLS != nil {
		scheme = "https"
		if err := m.TLS.Validate(); err != nil {
			return err
		}
	}
	peer, err := url.Parse(m.PeerURL)
	if err != nil || peer.Scheme != scheme || peer.Host == "" {
		return fmt.Errorf("etcd peer URL %q: want %s://IP:PORT", m.PeerURL, scheme)
	}
	client, err := url.Parse(m.ClientURL)
	if err != nil || client.Scheme != scheme || client.Host == "" {
		return fmt.Errorf("etcd client URL %q: want %s://IP:PORT", m.ClientURL, scheme)
	}
	if m.TLS != nil {
		// Clients on the network and peers: mutual TLS. The unix socket inside the data dir
		// (0700) stays as it is: only this process reaches it.
		cfg.ClientTLSInfo = m.TLS.serverInfo()
		cfg.PeerTLSInfo = m.TLS.serverInfo()
	}
	if m.Name == "" || m.InitialCluster == "" || m.Token == "" {
		return errors.New("etcd member: name, initial cluster and token are all needed")
	}
	if !strings.Contains(m.InitialCluster, m.Name+"="+m.PeerURL) {
		return fmt.Errorf("etcd initial cluster %q does not name this member as %s=%s", m.InitialCluster, m.Name, m.PeerURL)
	}
	cfg.Name = m.Name
	cfg.ListenClientUrls = append(cfg.ListenClientUrls, *client)
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = m.InitialCluster
	cfg.InitialClusterToken = m.Token
	cfg.ClusterState = embed.ClusterStateFlagNew
	if m.Existing {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	// Members talk over a network: etcd's default timing, a little quicker (a lost etcd
	// leader is replaced within about a second).
	cfg.TickMs, cfg.ElectionMs = 50, 500
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// bounded runs f in its own goroutine and waits for it at most readyTimeout (or until ctx
// ends).
func bounded[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	var zero T
	select {
	case r := <-ch:
		return r.v, r.err
	case <-timer.C:
		return zero, fmt.Errorf("gave up after %s", readyTimeout)
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// startEtcd runs embed.StartEtcd, turning its panics into errors, and waits for it at most
// readyTimeout, or until ctx ends or a fatal error of etcd is reported (life ends). On an
// error, held says that the start neither finished nor cleaned up after itself: it may still
// hold etcd's files.
func startEtcd(ctx context.Context, life context.Context, cfg *embed.Config) (e *embed.Etcd, held bool, err error) {
	type result struct {
		e        *embed.Etcd
		err      error
		panicked bool
	}
	ch := make(chan result, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				ch <- result{err: fmt.Errorf("etcd panicked while opening its files: %v", v), panicked: true}
			}
		}()
		e, err := embed.StartEtcd(cfg)
		ch <- result{e: e, err: err}
	}()
	abandon := func(err error) (*embed.Etcd, bool, error) {
		go func() { // if the start ever finishes, stop what it started
			if r := <-ch; r.e != nil {
				closeEtcd(r.e, closeTimeout)
			}
		}()
		return nil, true, err
	}
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		// After an error, StartEtcd has closed what it opened; after a panic, maybe not.
		return r.e, r.panicked, r.err
	case <-life.Done():
		return abandon(context.Cause(life))
	case <-timer.C:
		return abandon(fmt.Errorf("etcd did not start within %s", readyTimeout))
	case <-ctx.Done():
		return abandon(ctx.Err())
	}
}

// closeEtcd stops e, waiting at most timeout; it reports whether e stopped.
func closeEtcd(e *embed.Etcd, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = recover() }() // an etcd that failed may panic on its way down
		e.Close()
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// watch fails the store when etcd stops on its own, or when its data dir is deleted or
// replaced under it: what etcd writes from then on goes to files that are gone.
func (s *Store) watch(dirInfo fs.FileInfo) {
	defer s.wg.Done()
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.life.Done():
			return
		case err, ok := <-s.etcd.Err():
			if s.closing.Load() {
				return
			}
			if !ok {
				err = errors.New("closed")
			}
			s.fail(fmt.Errorf("etcd stopped serving: %v", err))
			return
		case <-s.etcd.Server.StopNotify():
			if !s.closing.Load() {
				s.fail(errors.New("etcd stopped"))
			}
			return
		case <-tick.C:
			if err := checkDirIntact(s.dir, dirInfo, s.lock); err != nil {
				s.fail(fmt.Errorf("the data dir %s was deleted or replaced while hass was running (%v): "+
					"nothing recorded from now on would survive a restart", s.dir, err))
				return
			}
		}
	}
}

// Connect returns a Store using an external etcd cluster. It fails unless the cluster
// answers a read within ctx (or 10 s if ctx has no deadline).
func Connect(ctx context.Context, endpoints []string, logger *slog.Logger) (*Store, error) {
	return ConnectTLS(ctx, endpoints, nil, logger)
}

// ConnectTLS is Connect over mutual TLS (https:// endpoints) when tlsf is set.
func ConnectTLS(ctx context.Context, endpoints []string, tlsf *TLSFiles, logger *slog.Logger) (*Store, error) {
	var tc *tls.Config
	if tlsf != nil {
		var err error
		if tc, err = tlsf.clientConfig(); err != nil {
			return nil, fmt.Errorf("store: connect to etcd %v: %w", endpoints, err)
		}
	}
	life, fail := context.WithCancelCause(context.Background())
	cli, err := clientv3.New(clientv3.Config{
		TLS:         tc,
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		// A member that vanished without closing its connections (a host that lost power,
		// or was cut off) is noticed within about a second and requests go to the others:
		// an agent must renew its lease through a live member well within its self-fence
		// time, whichever member dies.
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		PermitWithoutStream:  true,
		// When every member was gone (the control plane lost) and comes back, reconnect
		// within half a second, not after gRPC's default backoff (up to two minutes): an
		// agent holding back its fence must renew its lease as soon as the store answers.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
		Logger: zapLogger(logger, new(atomic.Bool), func(err error) { fail(err) }),
	})
	if err != nil {
		return nil, fmt.Errorf("store: connect to etcd %v: %w", endpoints, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if _, err := cli.Get(ctx, eventSeqKey); err != nil {
		cli.Close()
		return nil, fmt.Errorf("store: connect to etcd %v: %w", endpoints, err)
	}
	log := logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{cli: cli, life: life, fail: fail, log: log}, nil
}

// zapLogger returns a zap logger that forwards errors (and worse) to l; nil discards them.
// Once closing is set, they are logged at debug level: etcd reports its listeners being
// closed on shutdown as errors.
//
// etcd logs at fatal level (zap then exits the process) or panic level (zap then panics, in
// whatever goroutine, often one etcd started, where no recover can reach) when it cannot go
// on: a failed WAL or db write, a damaged file. This logger does neither: it reports the
// entry to fatal, as an error, and ends the goroutine that logged it. The store then fails,
// and its user (the daemon) stops with that error, instead of the process dying without a
// word.
func zapLogger(l *slog.Logger, closing *atomic.Bool, fatal func(error)) *zap.Logger {
	var core zapcore.Core = zapcore.NewNopCore()
	if l != nil {
		core = &slogCore{l: l.With("component", "etcd"), closing: closing}
	}
	h := terminalHook{report: fatal}
	return zap.New(core, zap.WithFatalHook(h), zap.WithPanicHook(h))
}

// terminalHook is zap's action after a fatal or panic entry: see zapLogger.
type terminalHook struct{ report func(error) }

func (h terminalHook) OnWrite(ce *zapcore.CheckedEntry, fields []zapcore.Field) {
	h.report(fmt.Errorf("etcd: %s", describe(ce.Entry, fields)))
	runtime.Goexit()
}

// describe is a log entry as one line: its message, then its fields (key=value, sorted).
func describe(e zapcore.Entry, fields []zapcore.Field) string {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(e.Message)
	for i, k := range keys {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%v", k, enc.Fields[k])
	}
	return b.String()
}

// slogCore is a zapcore.Core writing to a slog.Logger, enabled at error level and above.
type slogCore struct {
	l       *slog.Logger
	closing *atomic.Bool
	fields  []zapcore.Field
}

func (c *slogCore) Enabled(lvl zapcore.Level) bool { return lvl >= zapcore.ErrorLevel }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{l: c.l, closing: c.closing, fields: append(c.fields[:len(c.fields):len(c.fields)], fields...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys)+1)
	if e.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", e.LoggerName))
	}
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, enc.Fields[k]))
	}
	lvl := slog.LevelError
	switch {
	case c.closing.Load():
		lvl = slog.LevelDebug
	case e.Message == "failed to update storage version" && strings.Contains(fmt.Sprint(enc.Fields["error"]), "missing term information"):
		// A fresh data dir races etcd's storage-version monitor, which retries every few
		// seconds: not an error.
		lvl = slog.LevelWarn
	}
	c.l.LogAttrs(context.Background(), lvl, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
