package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/auth"
	"github.com/hassproject/hass/daemon"
	"github.com/hassproject/hass/vmname"
)

// clientFlags are shared by every command that talks to the daemon.
type clientFlags struct {
	server    string
	output    string
	tokenFile string
	ca        string
}

func (cf *clientFlags) add(c *cobra.Command) {
	def := os.Getenv("HASS_SERVER")
	if def == "" {
		def = daemon.DefaultListen
	}
	c.PersistentFlags().StringVar(&cf.server, "server", def, "the hass daemon's API: unix:///path or http://host:port (env HASS_SERVER)")
	c.PersistentFlags().StringVarP(&cf.output, "output", "o", "table", "table or json")
	c.PersistentFlags().StringVar(&cf.ca, "ca", os.Getenv("HASS_CA"), "the CA that signed an https:// daemon's certificate (env HASS_CA; default: the system's)")
	c.PersistentFlags().StringVar(&cf.tokenFile, "token-file", "", "a file holding the API token (else env HASS_TOKEN, else env HASS_TOKEN_FILE, else "+defaultTokenFile()+" if readable)")
}

// defaultTokenFile is the admin token hass up writes on first start, in its default data dir.
func defaultTokenFile() string { return filepath.Join(daemon.DefaultDataDir, daemon.AdminTokenFile) }

// token finds the API token: --token-file, else HASS_TOKEN, else HASS_TOKEN_FILE, else the
// admin token file of hass up's default data dir if this user can read it.
func (cf *clientFlags) token() (string, error) {
	if cf.tokenFile != "" {
		t, err := auth.ReadFile(cf.tokenFile)
		if err != nil {
			return "", usageError{fmt.Errorf("--token-file: %w", err)}
		}
		return t.String(), nil
	}
	if v := os.Getenv("HASS_TOKEN"); v != "" {
		t, err := auth.Parse(strings.TrimSpace(v))
		if err != nil {
			return "", usageError{fmt.Errorf("HASS_TOKEN: %w", err)}
		}
		return t.String(), nil
	}
	if p := os.Getenv("HASS_TOKEN_FILE"); p != "" {
		t, err := auth.ReadFile(p)
		if err != nil {
			return "", usageError{fmt.Errorf("HASS_TOKEN_FILE: %w", err)}
		}
		return t.String(), nil
	}
	def := defaultTokenFile()
	t, err := auth.ReadFile(def)
	if err == nil {
		return t.String(), nil
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return "", usageError{fmt.Errorf("no API token: give --token-file FILE, or set HASS_TOKEN or HASS_TOKEN_FILE "+
			"(hass up writes an admin token to %s on first start, readable by root only; hass token create makes others)", def)}
	}
	return "", usageError{err}
}

func (cf *clientFlags) client() (*api.Client, error) {
	if cf.output != "table" && cf.output != "json" {
		return nil, usageError{fmt.Errorf("--output %q: want table or json", cf.output)}
	}
	tok, err := cf.token()
	if err != nil {
		return nil, err
	}
	var hc *http.Client
	if cf.ca != "" {
		pem, err := os.ReadFile(cf.ca)
		if err != nil {
			return nil, usageError{fmt.Errorf("--ca: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageError{fmt.Errorf("--ca %s: no certificate in it", cf.ca)}
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		hc = &http.Client{Timeout: api.DefaultTimeout, Transport: tr}
	}
	return api.NewClient(cf.server, hc).WithToken(tok), nil
}

func (cf *clientFlags) json() bool { return cf.output == "json" }

// printJSON prints v as indented JSON, ending with a newline; strings are as they are ("a<b>",
// not "a\u003cb\u003e"): this is for people and programs, not for an HTML page.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func vmCmd() *cobra.Command {
	cf := &clientFlags{}
	c := &cobra.Command{Use: "vm", Short: "Protect VMs and operate them through hass"}
	cf.add(c)

	var pol api.Policy
	var maxRestarts, maxRelocations, priority int
	var hardAffinity, noGuest, novaScheduler bool
	var guest api.GuestPolicy
	var probe string
	protect := &cobra.Command{
		Use:   "protect NAME",
		Short: "Protect a VM of this host: hass restarts it when it fails",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("max-restarts") {
				pol.MaxRestarts = &maxRestarts
			}
			if f.Changed("max-relocations") {
				pol.MaxRelocations = &maxRelocations
			}
			if f.Changed("priority") {
				pol.Priority = &priority
			}
			if cmd.Flags().Changed("anti-affinity-hard") {
				pol.AntiAffinityHard = &hardAffinity
			}
			if f.Changed("nova-scheduler") {
				pol.NovaScheduler = &novaScheduler
			}
			if g, set, err := guestFlags(f, &guest, probe, noGuest); err != nil {
				return usageError{err}
			} else if set {
				pol.Guest = g
			}
			if err := pol.Validate(); err != nil {
				return usageError{err}
			}
			vm, err := cl.Protect(cmd.Context(), args[0], api.ProtectRequest{Policy: pol})
			if err != nil {
				return err
			}
			return printVMs(cmd.OutOrStdout(), cf, []api.VM{vm})
		},
	}
	pf := protect.Flags()
	pf.IntVar(&maxRestarts, "max-restarts", 3, "restarts in place allowed within the window")
	pf.StringVar(&pol.Window, "window", "", "the window max-restarts counts in (default 10m)")
	pf.IntVar(&maxRelocations, "max-relocations", 1, "restarts on another host once restarts are spent")
	pf.StringVar(&pol.OnGuestShutdown, "on-guest-shutdown", "", "what a shutdown from inside the guest means: honour (default) or restart")
	pf.IntVar(&priority, "priority", 0, "higher is relocated first")
	pf.StringVar(&pol.AntiAffinity, "anti-affinity", "", "VMs in the same group avoid sharing a host")
	pf.BoolVar(&novaScheduler, "nova-scheduler", false, "under OpenStack: leave an evacuation's target to Nova's scheduler (default: hass's placement names the host)")
	pf.BoolVar(&hardAffinity, "anti-affinity-hard", false, "make the group a rule: never two of its VMs on one host (a VM waits rather than break it)")
	pf.BoolVar(&guest.Heartbeat, "guest-heartbeat", false, "watch the guest OS layer: guest-ping through the QEMU guest agent; a hung guest is reset")
	pf.StringVar(&guest.HeartbeatInterval, "guest-heartbeat-interval", "", "how often the guest agent is pinged (default 2s)")
	pf.StringVar(&guest.HeartbeatTimeout, "guest-heartbeat-timeout", "", "how long a ping may take (default 1s)")
	pf.IntVar(&guest.HeartbeatMisses, "guest-heartbeat-misses", 0, "unanswered pings in a row that start a check (default 3)")
	pf.StringVar(&probe, "guest-probe", "", "watch the guest network layer: icmp, or tcp:PORT; a guest whose network is down is rebooted")
	pf.StringVar(&guest.Address, "guest-address", "", "the guest's address to probe (default: the first one its guest agent reports)")
	pf.StringVar(&guest.ProbeInterval, "guest-probe-interval", "", "how often the address is probed (default 2s)")
	pf.StringVar(&guest.ProbeTimeout, "guest-probe-timeout", "", "how long a probe may take (default 1s)")
	pf.IntVar(&guest.ProbeMisses, "guest-probe-misses", 0, "unanswered probes in a row that start a check (default 3)")
	pf.StringVar(&guest.Recheck, "guest-recheck", "", "how long after a check found a failure every layer is checked again (default 2s)")
	pf.BoolVar(&noGuest, "no-guest-layers", false, "stop watching the guest layers")

	unprotect := &cobra.Command{
		Use:   "unprotect NAME",
		Short: "Stop protecting a VM; it is left as it is",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			if err := cl.Unprotect(cmd.Context(), args[0]); err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), map[string]any{"name": args[0], "protected": false})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is no longer protected\n", cell(args[0]))
			return nil
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List protected VMs and their state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			vms, err := cl.VMs(cmd.Context())
			if err != nil {
				return err
			}
			return printVMs(cmd.OutOrStdout(), cf, vms)
		},
	}

	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one protected VM",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			vm, err := cl.VM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printVMs(cmd.OutOrStdout(), cf, []api.VM{vm})
		},
	}
	c.AddCommand(protect, unprotect, list, show)

	for _, op := range []struct{ name, short string }{
		{"start", "Start a VM; it is protected again"},
		{"shutdown", "Shut a VM down gracefully (destroyed if it does not stop in time); hass leaves it stopped"},
		{"stop", "Stop (destroy) a VM; hass leaves it stopped"},
		{"reboot", "Reboot a VM; the reboot is not taken for a failure"},
		{"delete", "Delete (undefine) a VM; hass forgets it"},
		{"suspend", "Suspend (pause) a VM"},
		{"resume", "Resume a suspended VM"},
	} {
		opName := op.name
		use := opName + " NAME"
		nargs := cobra.ExactArgs(1)
		c.AddCommand(&cobra.Command{
			Use:   use,
			Short: op.short,
			Args:  nargs,
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, err := cf.client()
				if err != nil {
					return err
				}
				req := api.OperationRequest{Op: opName}
				o, err := cl.Operate(cmd.Context(), args[0], req)
				if err != nil {
					return err
				}
				if cf.json() {
					return printJSON(cmd.OutOrStdout(), o)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s: accepted (operation %d, %s)\n", opName, cell(args[0]), o.ID, cell(o.Phase))
				return nil
			},
		})
	}
	c.AddCommand(migrateCmd(cf))
	return c
}

// migrateCmd is `hass vm migrate NAME --to HOST | --auto [--wait]`.
func migrateCmd(cf *clientFlags) *cobra.Command {
	var to string
	var auto bool
	var wait time.Duration
	c := &cobra.Command{
		Use:   "migrate NAME (--to HOST | --auto)",
		Short: "Live-migrate a VM to another host of its cluster (--auto: hass places it, as it would an evacuation)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 { // the older form: migrate NAME HOST
				if to != "" && to != args[1] {
					return fmt.Errorf("migrate: the host is given twice (%s and --to %s)", args[1], to)
				}
				to = args[1]
			}
			switch {
			case to == "" && !auto:
				return errors.New("migrate: say where: --to HOST, or --auto to let hass place it")
			case to != "" && auto:
				return errors.New("migrate: --to and --auto exclude each other")
			}
			cl, err := cf.client()
			if err != nil {
				return err
			}
			o, err := cl.Operate(cmd.Context(), args[0], api.OperationRequest{Op: "migrate", Target: to})
			if err != nil {
				return err
			}
			if wait <= 0 {
				if cf.json() {
					return printJSON(cmd.OutOrStdout(), o)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "migrate %s: accepted (operation %d, %s)\n", cell(args[0]), o.ID, cell(o.Phase))
				return nil
			}
			return waitMigration(cmd, cl, args[0], o, wait)
		},
	}
	c.Flags().StringVar(&to, "to", "", "the host to move it to")
	c.Flags().BoolVar(&auto, "auto", false, "let hass choose the host (capacity, anti-affinity, spares kept for recoveries)")
	c.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the migration to end, showing its progress (0: return once accepted)")
	return c
}

// waitMigration follows a migration until the VM has no operation in flight, and says where
// the VM runs.
func waitMigration(cmd *cobra.Command, cl *api.Client, name string, o api.Operation, limit time.Duration) error {
	out := cmd.OutOrStdout()
	from := ""
	if v, err := cl.VM(cmd.Context(), name); err == nil {
		from = v.Host
	}
	fmt.Fprintf(out, "migrate %s: operation %d accepted\n", cell(name), o.ID)
	start := time.Now()
	deadline := start.Add(limit)
	for {
		v, err := cl.VM(cmd.Context(), name)
		if err != nil {
			return err
		}
		if v.Operation == nil || v.Operation.ID != o.ID {
			if o.Target != "" && v.Host != o.Target || v.Host == from && from != "" {
				return fmt.Errorf("migrate %s: did not move: it runs on %s (%s, %s); see hass events --vm %s", cell(name), cell(v.Host), v.Observed, v.State, cell(name))
			}
			fmt.Fprintf(out, "migrate %s: done in %s: runs on %s (%s)\n", cell(name), time.Since(start).Round(100*time.Millisecond), cell(v.Host), v.Observed)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("migrate %s: still in progress after %s (operation %d, %s)", cell(name), limit, o.ID, v.Operation.Phase)
		}
		fmt.Fprintf(out, "  %s: %s, %s\n", time.Since(start).Round(time.Second), v.Operation.Phase, v.Observed)
		time.Sleep(time.Second)
	}
}

// cell makes s fit one table cell or one line: control characters (a newline or a carriage
// return in a libvirt error message, a tab, an escape sequence) are shown escaped as in Go
// ("\n", "\x1b"), so that a row stays one line, the columns stay aligned, the table ends
// with its newline where the terminal's cursor is, and the terminal is never driven.
func cell(s string) string {
	if !strings.ContainsFunc(s, vmname.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if vmname.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func printVMs(w io.Writer, cf *clientFlags, vms []api.VM) error {
	if cf.json() {
		return printJSON(w, vms)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tHOST\tDESIRED\tOBSERVED\tSTATE\tRESTARTS\tPOLICY")
	for _, v := range vms {
		state := v.State
		if v.Failure != "" {
			state += " (" + v.Failure + ")"
		}
		if v.Operation != nil {
			state += " (" + v.Operation.Op + ")"
		}
		if v.Waiting != "" {
			state += ": " + v.Waiting
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s/%s\t%s\t%d\tmax %d in %s, guest shutdown: %s\n", cell(v.Name), cell(v.Host), cell(v.Desired),
			cell(v.Observed), cell(v.Reason), cell(state), v.Restarts, v.Policy.MaxRestarts, cell(v.Policy.Window), cell(v.Policy.OnGuestShutdown))
	}
	return tw.Flush()
}

func statusCmd() *cobra.Command {
	cf := &clientFlags{}
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's health",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			s, err := cl.Status(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "host %s: libvirt %s, store %s; %d VMs protected (%d healthy, %d recovering, %d in error, %d in an operation, %d unknown); up %s\n",
				cell(s.Host), cell(s.Libvirt), cell(s.Store), s.VMs, s.Healthy, s.Recovering, s.Error, s.Operating, s.Unknown, cell(s.Uptime))
			leader := "none (an election is under way, or the store is unreachable)"
			if s.Leader != "" {
				leader = fmt.Sprintf("%s (term %d)", cell(s.Leader), s.Term)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster: leader %s, answered by %s; %d of %d hosts hold their lease; etcd members: %s\n",
				leader, cell(s.Controller), s.HostsUp, s.Hosts, cell(strings.Join(s.StoreMembers, ", ")))
			return nil
		},
	}
	cf.add(c)
	return c
}

// guestFlags builds the guest layers the --guest-* flags give; set is false when none was
// given (the VM's guest layers stay as they are).
func guestFlags(f *pflag.FlagSet, g *api.GuestPolicy, probe string, off bool) (*api.GuestPolicy, bool, error) {
	given := false
	f.Visit(func(fl *pflag.Flag) {
		if strings.HasPrefix(fl.Name, "guest-") {
			given = true
		}
	})
	if off {
		if given {
			return nil, false, errors.New("--no-guest-layers: cannot be given with --guest-* flags")
		}
		return &api.GuestPolicy{}, true, nil
	}
	if !given {
		return nil, false, nil
	}
	out := *g
	switch kind, port, hasPort := strings.Cut(probe, ":"); {
	case probe == "":
	case kind == "icmp" && !hasPort:
		out.Probe = "icmp"
	case kind == "tcp" && hasPort:
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return nil, false, fmt.Errorf("--guest-probe %q: the port must be 1-65535", probe)
		}
		out.Probe, out.Port = "tcp", n
	default:
		return nil, false, fmt.Errorf("--guest-probe %q: want icmp or tcp:PORT", probe)
	}
	return &out, true, nil
}
