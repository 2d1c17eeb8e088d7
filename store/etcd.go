package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// readyTimeout bounds how long OpenEmbedded waits for the embedded etcd to serve.
const readyTimeout = 60 * time.Second

// EmbeddedConfig configures OpenEmbeddedConfig.
type EmbeddedConfig struct {
	Dir        string       // data directory, created (0700) if missing
	ClientPort int          // 127.0.0.1 port for clients; 0 picks a free one
	PeerPort   int          // 127.0.0.1 port for raft peers; 0 picks a free one
	Logger     *slog.Logger // etcd's errors go here; nil discards them
}

// OpenEmbedded starts an embedded single-node etcd with its data in dir (created if
// missing), listening only on 127.0.0.1 on ports chosen free at start, and returns a Store
// using a clientv3 client to it. State survives a restart with the same dir. Close stops
// both. etcd's own logs are forwarded to logger at error level only (nil discards them).
func OpenEmbedded(ctx context.Context, dir string, logger *slog.Logger) (*Store, error) {
	return OpenEmbeddedConfig(ctx, EmbeddedConfig{Dir: dir, Logger: logger})
}

// OpenEmbeddedConfig is OpenEmbedded with the ports given.
func OpenEmbeddedConfig(ctx context.Context, c EmbeddedConfig) (*Store, error) {
	if c.Dir == "" {
		return nil, errors.New("store: open embedded etcd: no data dir")
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: open embedded etcd: %w", err)
	}
	closing := new(atomic.Bool)
	zl := zapLogger(c.Logger, closing)
	var e *embed.Etcd
	var err error
	// A port picked free may be taken before etcd binds it: try again with new ones.
	for attempt := 0; ; attempt++ {
		e, err = startEtcd(c, zl)
		picked := c.ClientPort == 0 || c.PeerPort == 0
		if err == nil || !picked || !errors.Is(err, syscall.EADDRINUSE) || attempt == 4 {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: start embedded etcd in %s: %w", c.Dir, err)
	}
	fail := func(err error) (*Store, error) {
		e.Close()
		return nil, fmt.Errorf("store: start embedded etcd in %s: %w", c.Dir, err)
	}
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fail(err)
	case <-e.Server.StopNotify():
		return fail(errors.New("server stopped before it was ready"))
	case <-timer.C:
		return fail(fmt.Errorf("not ready after %s", readyTimeout))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{e.Clients[0].Addr().String()},
		DialTimeout: 5 * time.Second,
		Logger:      zl,
	})
	if err != nil {
		return fail(fmt.Errorf("client: %w", err))
	}
	return &Store{cli: cli, etcd: e, closing: closing}, nil
}

func startEtcd(c EmbeddedConfig, zl *zap.Logger) (*embed.Etcd, error) {
	clientPort, peerPort := c.ClientPort, c.PeerPort
	var err error
	if clientPort == 0 {
		if clientPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	if peerPort == 0 {
		if peerPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	curl := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))}
	purl := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))}

	cfg := embed.NewConfig()
	cfg.Name = "hass"
	cfg.Dir = c.Dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{curl}, []url.URL{curl}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{purl}, []url.URL{purl}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.InitialClusterToken = "hass"
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
	// One member has no peers to wait for: short ticks make the first election (and so
	// OpenEmbedded) take ~0.1 s instead of ~1 s.
	cfg.TickMs, cfg.ElectionMs = 25, 250
	return embed.StartEtcd(cfg)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Connect returns a Store using an external etcd cluster. It fails unless the cluster
// answers a read within ctx (or 10 s if ctx has no deadline).
func Connect(ctx context.Context, endpoints []string, logger *slog.Logger) (*Store, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zapLogger(logger, new(atomic.Bool)),
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
	return &Store{cli: cli}, nil
}

// zapLogger returns a zap logger that forwards errors (and worse) to l; nil discards all.
// Once closing is set, they are logged at debug level: etcd reports its listeners being
// closed on shutdown as errors.
func zapLogger(l *slog.Logger, closing *atomic.Bool) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	return zap.New(&slogCore{l: l.With("component", "etcd"), closing: closing})
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
