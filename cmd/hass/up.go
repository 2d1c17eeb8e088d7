package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hassproject/hass/daemon"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor/libvirt"
	"github.com/hassproject/hass/store"
)

func upCmd() *cobra.Command {
	var (
		cfg                    daemon.Config
		uri                    string
		etcd                   string
		logLevel               string
		shutdownTimeout        time.Duration
		minFreeMiB             int64
		tlsCert, tlsKey, tlsCA string
	)
	c := &cobra.Command{
		Use:   "up",
		Short: "Run hass for this host: embedded etcd, controller and agent in one process",
		Long: `Run everything hass needs to protect the VMs of this host, in one process: the
decision engine, the libvirt driver and its event stream, the state in an embedded etcd (or an
external cluster with --etcd), and the HTTP API the other commands talk to.

Every API request needs a token (roles admin, operator, viewer; see hass token). On first
start, when the store holds no token, hass up creates an admin token and writes it to
DATA-DIR/` + daemon.AdminTokenFile + ` (mode 0600): the CLI run as root reads it from there by itself.
The API is served on the unix socket ` + daemon.DefaultListen + ` by default, which only root and the
members of group ` + daemon.DefaultSocketGroup + ` (if that group exists) can use. The embedded etcd listens
only on unix sockets inside --data-dir (made 0700). --listen host:port serves the API on TCP
instead, without TLS: tokens cross it in clear, and hass warns about it.

Then protect VMs with 'hass vm protect NAME'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)}
			}
			if cfg.ResyncEvery < time.Second {
				return usageError{fmt.Errorf("--resync %s: want at least 1s", cfg.ResyncEvery)}
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
			drv, err := libvirt.New(libvirt.Config{URI: uri, Logger: log})
			if err != nil {
				return usageError{fmt.Errorf("--libvirt-uri %q: %w", uri, err)}
			}
			if etcd != "" {
				cfg.Etcd = strings.Split(etcd, ",")
			}
			cfg.Driver, cfg.Logger, cfg.Engine = drv, log, engine.DefaultConfig()
			if shutdownTimeout < time.Second {
				return usageError{fmt.Errorf("--shutdown-timeout %s: want at least 1s", shutdownTimeout)}
			}
			cfg.Engine.ShutdownTimeout = shutdownTimeout
			if cfg.StoreMinFree, err = storeMinFree(minFreeMiB); err != nil {
				return err
			}
			if cfg.APITLS, err = apiTLS(tlsCert, tlsKey, tlsCA); err != nil {
				return err
			}
			return runDaemon(cmd, cfg)
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "where the first admin token is written when the store holds no token (mode 0600; if the file exists, the token in it is the one stored); default DATA-DIR/"+daemon.AdminTokenFile)
	f.StringVar(&cfg.DataDir, "data-dir", daemon.DefaultDataDir, "where the embedded etcd keeps hass's state (DIR.store-id, next to it, records which store it holds)")
	f.Int64Var(&minFreeMiB, "store-min-free", store.DefaultMinFree>>20, "MiB kept free on the data dir's filesystem: below it, nothing is recorded and so nothing is done (0: no check)")
	f.StringVar(&cfg.Listen, "listen", daemon.DefaultListen, "the API's address: unix:///path, or host:port (TCP: any local user can reach it)")
	apiTLSFlags(f, &tlsCert, &tlsKey, &tlsCA)
	f.StringVar(&cfg.SocketGroup, "socket-group", "", "the group let into the API's unix socket (mode 0660); default: "+daemon.DefaultSocketGroup+" if it exists, else none (mode 0600)")
	f.StringVar(&cfg.HostName, "host-name", "", "this host's name in hass (default: the OS host name)")
	f.StringVar(&uri, "libvirt-uri", libvirt.DefaultURI, "libvirt connection URI (local unix socket)")
	f.StringVar(&etcd, "etcd", "", "comma-separated endpoints of an external etcd cluster, instead of the embedded one")
	f.DurationVar(&cfg.ResyncEvery, "resync", 30*time.Second, "how often the whole domain list is read again")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&cfg.ProtectAll, "protect-all", false, "protect every domain of this host (running ones as running, others as stopped) with the default policy, including domains defined later")
	f.IntVar(&cfg.KeepEvents, "keep-events", 100000, "how many event log entries to keep")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 2*time.Minute, "how long a graceful shutdown may take before the VM is destroyed")
	return c
}
