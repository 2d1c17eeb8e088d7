// Package daemon runs hass's processes: `hass up` (a controller and this host's agent in one
// process, over an embedded single-member etcd: a cluster of one), `hass controller` and
// `hass agent`. It is wiring only: the controller (package controller) decides, the agent
// (package node, running package agent) observes and acts, and they talk only through the
// store (etcd), in `hass up` as across hosts.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/controller"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor"
	"github.com/hassproject/hass/metrics"
	"github.com/hassproject/hass/node"
	"github.com/hassproject/hass/openstack/nova"
	"github.com/hassproject/hass/store"
	"github.com/hassproject/hass/ui"
)

// Config configures a daemon: `hass up` runs both roles; `hass controller` only the
// controller (Driver nil, NoAgent); `hass agent` only the agent (NoController).
type Config struct {
	HostName string   // this host's name in hass; default: the OS host name
	DataDir  string   // embedded etcd's data directory
	Etcd     []string // an external etcd cluster instead of the embedded one
	// Member makes the embedded etcd a member of a cluster of several (hass controller).
	Member *store.MemberConfig
	// EtcdTLS, when set, is the mutual TLS of etcd across the network: the connection to
	// Etcd, and what an embedded Member serves its clients and peers with.
	EtcdTLS *store.TLSFiles
	// Nova, when set, follows Nova's notifications (hass under OpenStack).
	Nova *Nova
	// APITLS, when set, serves the API over TLS on a TCP listener (https://).
	APITLS      *APITLS
	Listen      string // the API's address, unix:///path or host:port; default DefaultListen
	ResyncEvery time.Duration
	TickEvery   time.Duration
	Engine      engine.Config
	Logger      *slog.Logger
	// Driver talks to the hypervisor; the caller builds it (libvirt in production).
	Driver hypervisor.Driver
	// Ready, if set, is called once the API listens and this controller leads, with the
	// API's address.
	Ready func(addr string)
	// ProtectAll protects, with the default policy, every domain of this host that is not
	// protected yet when the agent first sees it (at start, and when one is defined later).
	ProtectAll bool
	// KeepEvents bounds the event log; older entries are trimmed every ten minutes.
	KeepEvents int
	// SocketGroup is the group let into the API's unix socket; "" means DefaultSocketGroup
	// if it exists (else only the socket's owner can use it).
	SocketGroup string
	// StoreMinFree is the free space (bytes) the embedded store keeps on its data dir's
	// filesystem, refusing writes below it; 0 means store.DefaultMinFree, < 0 none.
	StoreMinFree int64
	// NoAgent runs no agent (hass controller); NoController runs no controller and no API
	// (hass agent).
	NoAgent, NoController bool
	// Agent tunes the agent (lease, heartbeats, watchdog, fencing, capacity, its state
	// directory); Host, Store, Driver, Logger, ResyncEvery and ProtectAll are filled in from
	// the fields above, and StateDir, if empty, from DataDir.
	Agent node.Config
	// ControllerName names the controller in the election (default: HostName).
	ControllerName string
	// APIAdvertise is the API address published with leadership (default: the listener's).
	APIAdvertise string
	// Power tunes the host power layer and the fence through BMCs (the controller's
	// BMCPoll, PowerRecheck, BMCTimeout, FenceTries, FenceConfirm, PowerOnAfter); the
	// other fields are ignored.
	Power controller.Config
	// AdminTokenFile is where the first admin token is written (or read from, if it exists)
	// when the store holds no token; default DataDir/admin.token ("" without a DataDir: no
	// token is created).
	AdminTokenFile string
}

// Run starts the daemon and blocks until ctx ends or it cannot go on.
func Run(ctx context.Context, cfg Config) error {
	if cfg.HostName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("daemon: host name: %w", err)
		}
		cfg.HostName = h
	}
	if !cfg.NoAgent && cfg.Driver == nil {
		return errors.New("daemon: no hypervisor driver")
	}
	if cfg.NoAgent && cfg.NoController {
		return errors.New("daemon: nothing to run")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Engine == (engine.Config{}) {
		cfg.Engine = engine.DefaultConfig()
	}
	log := cfg.Logger

	var ln *apiListener
	if !cfg.NoController {
		var err error
		if ln, err = listenAPITLS(cfg.Listen, cfg.SocketGroup, cfg.APITLS, log); err != nil {
			return fmt.Errorf("daemon: listen on %s: %w", cfg.Listen, err)
		}
		defer ln.Close()
	}

	var st *store.Store
	var err error
	if len(cfg.Etcd) > 0 {
		st, err = store.ConnectTLS(ctx, cfg.Etcd, cfg.EtcdTLS, log)
	} else {
		if cfg.DataDir == "" {
			return errors.New("daemon: no data directory for the embedded etcd")
		}
		st, err = store.OpenEmbeddedConfig(ctx, store.EmbeddedConfig{Dir: cfg.DataDir, Logger: log, MinFree: cfg.StoreMinFree, Member: cfg.Member})
	}
	if err != nil {
		return fmt.Errorf("daemon: state store: %w", err)
	}
	defer st.Close()
	met := metrics.New(nil)
	st.Observe(met)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 4)

	var srv *http.Server
	if !cfg.NoController {
		name := cfg.ControllerName
		if name == "" {
			name = cfg.HostName
		}
		adv := cfg.APIAdvertise
		if adv == "" {
			adv = ln.addr
		}
		local := cfg.HostName
		if cfg.NoAgent {
			local = ""
		}
		var novaClient *nova.Client
		if cfg.Nova != nil && cfg.Nova.Cloud != "" {
			if novaClient, err = nova.Open(ctx, cfg.Nova.CloudsFile, cfg.Nova.Cloud); err != nil {
				return fmt.Errorf("daemon: OpenStack: %w", err)
			}
			if cfg.Nova.Self == "" {
				cfg.Nova.Self = novaClient.UserID
			}
			log.Info("under OpenStack: instances are operated and recovered through Nova", "cloud", cfg.Nova.Cloud, "user", cfg.Nova.Self)
		}
		ctl, err := controller.New(controller.Config{Name: name, Nova: novaClient, NovaAggregate: novaAggregate(cfg.Nova), Store: st, Engine: cfg.Engine, Logger: log, API: adv,
			TickEvery: cfg.TickEvery, KeepEvents: cfg.KeepEvents, LeaseTTL: cfg.Agent.LeaseTTL, LocalHost: local,
			BMCPoll: cfg.Power.BMCPoll, PowerRecheck: cfg.Power.PowerRecheck, BMCTimeout: cfg.Power.BMCTimeout,
			FenceTries: cfg.Power.FenceTries, FenceConfirm: cfg.Power.FenceConfirm, PowerOnAfter: cfg.Power.PowerOnAfter})
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		met.SetSource(ctl)
		tokFile := cfg.AdminTokenFile
		if tokFile == "" && cfg.DataDir != "" {
			tokFile = filepath.Join(cfg.DataDir, AdminTokenFile)
		}
		// The first admin token is made in the background, as the store allows (it may be
		// unreachable for now, as at any time); Ready waits for it.
		booted := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := bootstrapLoop(runCtx, st, tokFile, log, booted); err != nil {
				errs <- fmt.Errorf("daemon: %w", err)
			}
		}()
		if cfg.Nova != nil && cfg.Nova.URL != "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				consumeNova(runCtx, ctl, *cfg.Nova, log)
			}()
		}
		srv = &http.Server{Handler: followerProxy(ctl, name, cfg.APITLS, api.NewServer(ctl, log, api.WithMetrics(met.Handler()), api.WithAuth(ctl), api.WithUI(ui.Handler("/ui/"))), log), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("daemon: API server: %w", err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := ctl.Run(runCtx); err != nil {
				errs <- err
			}
		}()
		go func() {
			select {
			case <-ctl.Leading():
			case <-runCtx.Done():
				return
			}
			select {
			case <-booted:
			case <-runCtx.Done():
				return
			}
			log.Info("hass is up", "host", cfg.HostName, "api", ln.addr, "controller", name)
			if cfg.Ready != nil {
				cfg.Ready(ln.addr)
			}
		}()
	}
	if !cfg.NoAgent {
		ac := cfg.Agent
		ac.Host, ac.Store, ac.Driver, ac.Logger, ac.ProtectAll = cfg.HostName, st, cfg.Driver, log, cfg.ProtectAll
		if ac.ResyncEvery == 0 {
			ac.ResyncEvery = cfg.ResyncEvery
		}
		if ac.StateDir == "" {
			ac.StateDir = cfg.DataDir // hass up: beside the embedded etcd's data
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := node.Run(runCtx, ac); err != nil {
				errs <- err
			}
		}()
	}

	select {
	case <-ctx.Done():
	case err = <-errs:
	case <-st.Done(): // nothing can be recorded any more, so nothing may be done
		err = fmt.Errorf("daemon: the state store failed: %w", st.Err())
	}
	stop()
	if srv != nil {
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(shut)
		cancel()
	}
	if cfg.Driver != nil {
		_ = cfg.Driver.Close() // unblocks a hypervisor call in flight
	}
	wg.Wait()
	if err != nil {
		log.Error("hass is down", "err", err)
	} else {
		log.Info("hass is down")
	}
	return err
}

func novaAggregate(n *Nova) string {
	if n == nil {
		return ""
	}
	return n.Aggregate
}
