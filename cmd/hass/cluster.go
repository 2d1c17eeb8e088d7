package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hassproject/hass/daemon"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor/libvirt"
	"github.com/hassproject/hass/node"
	"github.com/hassproject/hass/store"
)

func newLogger(cmd *cobra.Command, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl})), nil
}

// storeMinFree turns --store-min-free (MiB, 0: no check) into the daemon's setting.
func storeMinFree(mib int64) (int64, error) {
	switch {
	case mib < 0:
		return 0, usageError{fmt.Errorf("--store-min-free %d: want 0 (no check) or more", mib)}
	case mib == 0:
		return -1, nil
	}
	return mib << 20, nil
}

// runDaemon runs a daemon until SIGINT or SIGTERM.
func runDaemon(cmd *cobra.Command, cfg daemon.Config) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return daemon.Run(ctx, cfg)
}

func controllerCmd() *cobra.Command {
	var (
		cfg                          daemon.Config
		etcd, logLevel               string
		member                       store.MemberConfig
		etcdCert, etcdKey, etcdCA    string
		tlsCert, tlsKey, tlsCA       string
		nova                         daemon.Nova
		minFreeMiB                   int64
		shutdownTimeout, leaseTTL    time.Duration
		selfFenceMargin, startTimout time.Duration
		majoritySettle               time.Duration
	)
	c := &cobra.Command{
		Use:   "controller",
		Short: "Run a controller: the decision engine, led by one of several controllers",
		Long: `Run a controller. Several may run (three is usual); they campaign in an etcd election and
the leader decides: it takes its state from etcd, follows what the hosts' agents report, and
gives orders that the agents carry out. When the leader dies or is cut off, another takes over
within a few seconds and continues from what the last one recorded.

The state lives in etcd: an external cluster (--etcd), or an embedded member of a cluster
formed by the controllers themselves (--etcd-name, --etcd-peer-url, --etcd-client-url,
--etcd-initial-cluster, --etcd-token, the same cluster on each). Every controller serves the
API; one that does not lead forwards each request to the leader's (a TCP --listen), or answers
503 naming the leader and its address.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd, logLevel)
			if err != nil {
				return err
			}
			if cfg.EtcdTLS, err = etcdTLS(etcdCert, etcdKey, etcdCA); err != nil {
				return err
			}
			if etcd != "" {
				cfg.Etcd = strings.Split(etcd, ",")
			} else if member.Name != "" || member.InitialCluster != "" {
				m := member
				m.TLS = cfg.EtcdTLS
				cfg.Member = &m
			}
			cfg.Logger, cfg.Engine, cfg.NoAgent = log, engine.DefaultConfig(), true
			cfg.Engine.ShutdownTimeout = shutdownTimeout
			cfg.Engine.SelfFenceMargin = selfFenceMargin
			cfg.Engine.MajoritySettle = majoritySettle
			cfg.Engine.StartTimeout = startTimout
			cfg.Agent.LeaseTTL = leaseTTL
			if cfg.StoreMinFree, err = storeMinFree(minFreeMiB); err != nil {
				return err
			}
			if cfg.APITLS, err = apiTLS(tlsCert, tlsKey, tlsCA); err != nil {
				return err
			}
			if nova.URL != "" && !strings.HasPrefix(nova.URL, "amqp://") && !strings.HasPrefix(nova.URL, "amqps://") {
				return usageError{fmt.Errorf("--nova-notifications %q: want amqp://user:password@host:5672/", nova.URL)}
			}
			if nova.Aggregate != "" && nova.Cloud == "" {
				return usageError{errors.New("--nova-aggregate: needs --openstack-cloud (hass asks Nova which hosts the aggregate holds)")}
			}
			if nova.URL != "" || nova.Cloud != "" {
				n := nova
				cfg.Nova = &n
			}
			return runDaemon(cmd, cfg)
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.HostName, "name", "", "this controller's name (default: the OS host name)")
	f.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "where the first admin token is written when the store holds no token (mode 0600; if the file exists, the token in it is the one stored); default DATA-DIR/"+daemon.AdminTokenFile)
	f.StringVar(&cfg.DataDir, "data-dir", daemon.DefaultDataDir, "where the embedded etcd member keeps its data")
	f.Int64Var(&minFreeMiB, "store-min-free", store.DefaultMinFree>>20, "MiB kept free on the data dir's filesystem (0: no check)")
	f.StringVar(&etcd, "etcd", "", "comma-separated endpoints of an external etcd cluster, instead of an embedded member")
	f.StringVar(&member.Name, "etcd-name", "", "this embedded etcd member's name")
	f.StringVar(&member.PeerURL, "etcd-peer-url", "", "where this member listens for its peers, http://IP:2380")
	f.StringVar(&member.ClientURL, "etcd-client-url", "", "where this member listens for agents and tools, http://IP:2379")
	f.StringVar(&member.InitialCluster, "etcd-initial-cluster", "", "every member: NAME=PEER_URL,...")
	f.StringVar(&member.Token, "etcd-token", "hass", "the cluster's token (the same on every member)")
	f.BoolVar(&member.Existing, "etcd-existing", false, "join a running cluster (a replaced member) instead of forming a new one")
	etcdTLSFlags(f, &etcdCert, &etcdKey, &etcdCA)
	f.StringVar(&cfg.Listen, "listen", daemon.DefaultListen, "the API's address: unix:///path, or host:port")
	apiTLSFlags(f, &tlsCert, &tlsKey, &tlsCA)
	f.StringVar(&nova.URL, "nova-notifications", "", "follow Nova's versioned notifications on this RabbitMQ (amqp://user:password@host:5672/): OpenStack users' operations as intent")
	f.StringVar(&nova.Self, "nova-user", "", "the OpenStack user (id) hass acts as (what Nova does at its request is not a user's intent); default: the one --openstack-cloud authenticates as")
	f.StringVar(&nova.Cloud, "openstack-cloud", "", "under OpenStack: the cloud (in clouds.yaml) whose Nova hass operates and recovers instances through: never behind Nova's back")
	f.StringVar(&nova.CloudsFile, "openstack-config", "", "the clouds.yaml to read (default: ./clouds.yaml, ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml)")
	f.StringVar(&nova.Aggregate, "nova-aggregate", "", "protect every Nova instance on a host of this host aggregate (instances whose metadata has HA_Enabled=True are protected in any case)")
	f.StringVar(&cfg.APIAdvertise, "api-advertise", "", "the API address published while this controller leads (default: --listen)")
	f.StringVar(&cfg.SocketGroup, "socket-group", "", "the group let into the API's unix socket")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.IntVar(&cfg.KeepEvents, "keep-events", 100000, "how many event log entries to keep")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 2*time.Minute, "how long a graceful shutdown may take before the VM is destroyed")
	f.DurationVar(&leaseTTL, "lease-ttl", node.DefaultLeaseTTL, "the agents' lease TTL (as they are run with)")
	f.DurationVar(&selfFenceMargin, "self-fence-margin", time.Second, "how long after a host's lease expired its VMs may be started elsewhere: its agent fenced itself --lease-ttl minus --self-fence-after (2 s) before the lease expired; this covers a late tick and a slow destroy")
	f.DurationVar(&majoritySettle, "majority-settle", 4*time.Second, "a lost host is declared fenced by its lease's expiry only once the hosts without a lease have been no majority for this long: longer than the agents' peer timeout (1.5 s), a tick (0.25 s), the lease tries of an agent that stops holding back (0.75 s) and a self-fence")
	f.DurationVar(&startTimout, "start-timeout", engine.DefaultConfig().StartTimeout, "a start not answered by then counts as failed")
	f.DurationVar(&cfg.Power.BMCPoll, "bmc-poll", time.Second, "how often every host's BMC is asked for its chassis power (the host power layer: a host seen off twice is taken for lost at once); 0: only to fence")
	f.DurationVar(&cfg.Power.PowerRecheck, "power-recheck", 500*time.Millisecond, "how long after a BMC said off it is asked again before the host is taken for off")
	f.DurationVar(&cfg.Power.PowerOnAfter, "power-on-after", 20*time.Second, "how long after a host was fenced (powered off through its BMC) it is powered on again; 0: never")
	f.IntVar(&cfg.Power.FenceTries, "fence-tries", 3, "how many times a fence's power-off is tried before the fence has failed (an alert)")
	return c
}

func agentCmd() *cobra.Command {
	var (
		cfg                       daemon.Config
		uri                       string
		etcd, logLevel            string
		etcdCert, etcdKey, etcdCA string
	)
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run this host's agent: watch libvirt, report to the controllers, carry out their orders",
		Long: `Run the agent of one hypervisor host. It reports what libvirt says to the leading controller
through etcd (--etcd), holds this host's lease, carries out the leader's orders while they are
current, and sends heartbeats to the other hosts' agents (--heartbeat, UDP).

When it cannot renew its lease for --self-fence-after, it fences this host itself: it destroys
the protected VMs running here before the lease can expire, because once it has, the
controller may start them elsewhere. It holds back while it and the hosts it hears without a
lease are a strict majority of the cluster (the control plane is lost for most hosts: the
controller restarts nothing then). A watchdog (--watchdog, /dev/watchdog or a stand-in) resets the host
if the agent itself stops.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd, logLevel)
			if err != nil {
				return err
			}
			if etcd == "" {
				return usageError{fmt.Errorf("--etcd: the cluster's etcd endpoints are needed")}
			}
			cfg.Etcd = strings.Split(etcd, ",")
			if cfg.EtcdTLS, err = etcdTLS(etcdCert, etcdKey, etcdCA); err != nil {
				return err
			}
			if cfg.ResyncEvery < time.Second {
				return usageError{fmt.Errorf("--resync %s: want at least 1s", cfg.ResyncEvery)}
			}
			drv, err := libvirt.New(libvirt.Config{URI: uri, Logger: log})
			if err != nil {
				return usageError{fmt.Errorf("--libvirt-uri %q: %w", uri, err)}
			}
			cfg.Driver, cfg.Logger, cfg.NoController = drv, log, true
			return runDaemon(cmd, cfg)
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.HostName, "host-name", "", "this host's name in hass (default: the OS host name)")
	f.StringVar(&etcd, "etcd", "", "comma-separated endpoints of the cluster's etcd (required)")
	etcdTLSFlags(f, &etcdCert, &etcdKey, &etcdCA)
	f.StringVar(&uri, "libvirt-uri", libvirt.DefaultURI, "libvirt connection URI (local unix socket)")
	f.StringVar(&cfg.Agent.Heartbeat, "heartbeat", "", "UDP address to receive the other agents' heartbeats on, IP:PORT")
	f.StringVar(&cfg.Agent.HeartbeatAdvertise, "heartbeat-advertise", "", "the address the other agents send to (default: --heartbeat)")
	f.StringVar(&cfg.Agent.Watchdog, "watchdog", "", "a watchdog device petted every tick (/dev/watchdog, or a stand-in's file)")
	f.StringVar(&cfg.Agent.StateDir, "state-dir", daemon.DefaultDataDir, "where the agent keeps its state file (its last lease renewal, whether it fenced this host), for the agent that runs here after it")
	f.DurationVar(&cfg.Agent.LeaseTTL, "lease-ttl", node.DefaultLeaseTTL, "the lease's time to live")
	f.DurationVar(&cfg.Agent.RenewEvery, "renew", node.DefaultRenewEvery, "how often the lease is renewed")
	f.DurationVar(&cfg.Agent.SelfFenceAfter, "self-fence-after", node.DefaultSelfFenceAfter, "no renewal for this long and the agent fences this host (shorter than --lease-ttl)")
	f.IntVar(&cfg.Agent.MemMiB, "mem-mib", 0, "memory this host offers to VMs, MiB (default: all of it)")
	f.IntVar(&cfg.Agent.VCPUs, "vcpus", 0, "vCPUs this host offers to VMs (default: its CPUs)")
	f.StringVar(&cfg.Agent.MigrateURI, "migrate-uri", "", "the libvirt URI at which the other hosts' libvirtds reach this one for live migrations, e.g. qemu+tcp://10.0.1.5/system (default: none, this host takes no migrations)")
	f.DurationVar(&cfg.ResyncEvery, "resync", 30*time.Second, "how often the whole domain list is read again")
	f.BoolVar(&cfg.ProtectAll, "protect-all", false, "protect every domain of this host with the default policy")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return c
}

// tlsFlags are the three flags of a TLS setting, prefix-cert, prefix-key and prefix-ca
// (hass certs init makes the files).
func tlsFlags(f *pflag.FlagSet, prefix, certUse, caUse string, cert, key, ca *string) {
	f.StringVar(cert, prefix+"-cert", "", certUse)
	f.StringVar(key, prefix+"-key", "", "its key")
	f.StringVar(ca, prefix+"-ca", "", caUse)
}

// tlsFiles is what the three flags give: none, or all three files, each readable.
func tlsFiles(prefix, cert, key, ca string) (*store.TLSFiles, error) {
	if cert == "" && key == "" && ca == "" {
		return nil, nil
	}
	t := &store.TLSFiles{Cert: cert, Key: key, CA: ca}
	if err := t.Validate(); err != nil {
		return nil, usageError{fmt.Errorf("--%s-cert, --%s-key, --%s-ca: %w", prefix, prefix, prefix, err)}
	}
	return t, nil
}

// apiTLSFlags are the flags of the API's TLS.
func apiTLSFlags(f *pflag.FlagSet, cert, key, ca *string) {
	tlsFlags(f, "tls", "serve the API over TLS (https://) with this certificate (TCP --listen only)",
		"the CA of the controllers' certificates (a follower checks the leader's, and shows its own, when it forwards)", cert, key, ca)
}

// apiTLS is the API TLS the flags give: none, or all three files.
func apiTLS(cert, key, ca string) (*daemon.APITLS, error) {
	t, err := tlsFiles("tls", cert, key, ca)
	if t == nil || err != nil {
		return nil, err
	}
	return &daemon.APITLS{Cert: t.Cert, Key: t.Key, CA: t.CA}, nil
}

// etcdTLSFlags are the flags of etcd's mutual TLS.
func etcdTLSFlags(f *pflag.FlagSet, cert, key, ca *string) {
	tlsFlags(f, "etcd", "this host's certificate for etcd's mutual TLS (then every etcd URL is https://)",
		"the CA that signs every etcd member's and client's certificate", cert, key, ca)
}

// etcdTLS is the etcd TLS the flags give: none, or all three files.
func etcdTLS(cert, key, ca string) (*store.TLSFiles, error) { return tlsFiles("etcd", cert, key, ca) }
