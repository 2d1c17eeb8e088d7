package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hassproject/hass/api"
)

// hostCmd is `hass host`: list, add, remove, maintenance.
func hostCmd() *cobra.Command {
	c := &cobra.Command{Use: "host", Short: "The cluster's hosts: list, add, remove, maintenance"}
	cf := &clientFlags{}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the hosts: state, lease, cluster, VMs, capacity, fencing, power",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			hs, err := cl.Hosts(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), hs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tSTATE\tLEASE\tLEASE AGE\tCLUSTER\tVMS\tMEM MIB\tVCPUS\tFENCING\tPOWER\tHEARS\tLIBVIRT")
			for _, h := range hs {
				age := "-"
				if !h.LeaseSince.IsZero() && h.Lease == "held" {
					age = time.Since(h.LeaseSince).Round(time.Second).String()
				}
				fence := "none (self-fence only)"
				if h.Fencing {
					fence = "ipmi " + h.BMC
				}
				state := h.State
				if h.Maintenance {
					state += ",maintenance"
				}
				if h.Reserved {
					state += ",spare"
				}
				power := h.Power
				if power == "" {
					power = "-"
				}
				// HEARS: of the other members its agent counts, how many it heard (a
				// heartbeat network that misses a host shows before the control plane is
				// lost and that host's agent fences it for want of a majority it can hear).
				hears := "-"
				if h.Members > 0 && h.Lease == "held" {
					hears = fmt.Sprintf("%d/%d", len(h.Hears), h.Members-1)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", cell(h.Name), cell(state), cell(h.Lease), age,
					cell(h.Cluster), h.VMs, h.MemMiB, h.VCPUs, cell(fence), cell(power), hears, cell(h.Libvirt))
			}
			return tw.Flush()
		},
	}
	cf.add(list)
	c.AddCommand(list, hostAddCmd(), hostRemoveCmd(), maintenanceCmd())
	return c
}

func hostAddCmd() *cobra.Command {
	cf := &clientFlags{}
	var cluster, bmc, bmcUser, passFile string
	var mem, vcpus, cipher int
	var reserved bool
	c := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a host, or change its configuration: cluster, capacity, spare flag, BMC (IPMI over LAN)",
		Long: `Add a host, or change its configuration. Flags left out keep their value.

The BMC's password is read from --bmc-password-file, or else from the environment variable
HASS_BMC_PASSWORD; it is never printed, logged or returned by the API.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.HostRequest{Cluster: cluster}
			f := cmd.Flags()
			if f.Changed("mem-mib") {
				req.MemMiB = &mem
			}
			if f.Changed("vcpus") {
				req.VCPUs = &vcpus
			}
			if f.Changed("reserved") {
				req.Reserved = &reserved
			}
			if bmc != "" {
				pw, err := bmcPassword(passFile)
				if err != nil {
					return err
				}
				if bmcUser == "" {
					return errors.New("host add: --bmc needs --bmc-user")
				}
				req.BMC = &api.BMCRequest{Addr: bmc, User: bmcUser, Password: pw, Cipher: cipher}
			} else if bmcUser != "" || passFile != "" {
				return errors.New("host add: --bmc-user and --bmc-password-file need --bmc ADDR")
			}
			cl, err := cf.client()
			if err != nil {
				return err
			}
			h, err := cl.PutHost(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), h)
			}
			fence := "no power fence"
			if h.Fencing {
				fence = "IPMI fencing through " + h.BMC
			}
			fmt.Fprintf(cmd.OutOrStdout(), "host %s: cluster %s, %s, %s\n", cell(h.Name), cell(h.Cluster), cell(h.State), fence)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&cluster, "cluster", "", "the cluster it belongs to (default: default)")
	f.IntVar(&mem, "mem-mib", 0, "memory for protected VMs, MiB (0: what its agent reports)")
	f.IntVar(&vcpus, "vcpus", 0, "vCPUs for protected VMs (0: what its agent reports)")
	f.BoolVar(&reserved, "reserved", false, "a spare host: only VMs of failed hosts are restarted on it")
	f.StringVar(&bmc, "bmc", "", "its BMC's address, host or host:port (IPMI v2.0 lanplus)")
	f.StringVar(&bmcUser, "bmc-user", "", "the BMC user")
	f.StringVar(&passFile, "bmc-password-file", "", "a file holding the BMC password (default: $HASS_BMC_PASSWORD)")
	f.IntVar(&cipher, "bmc-cipher", 0, "the RMCP+ cipher suite (default 3)")
	cf.add(c)
	return c
}

// bmcPassword reads the BMC password from a file (its first line) or HASS_BMC_PASSWORD.
func bmcPassword(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("host add: the BMC password file: %w", err)
		}
		pw, _, _ := strings.Cut(string(b), "\n")
		pw = strings.TrimSuffix(pw, "\r")
		if pw == "" {
			return "", fmt.Errorf("host add: the BMC password file %s is empty", file)
		}
		return pw, nil
	}
	if pw := os.Getenv("HASS_BMC_PASSWORD"); pw != "" {
		return pw, nil
	}
	return "", errors.New("host add: --bmc needs a password: --bmc-password-file FILE, or HASS_BMC_PASSWORD in the environment")
}

func hostRemoveCmd() *cobra.Command {
	cf := &clientFlags{}
	c := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a host (refused while it is home to a protected VM or its agent runs)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			if err := cl.RemoveHost(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "host %s: removed\n", cell(args[0]))
			return nil
		},
	}
	cf.add(c)
	return c
}

func maintenanceCmd() *cobra.Command {
	c := &cobra.Command{Use: "maintenance", Short: "Put a host in maintenance, or take it out"}
	for _, on := range []bool{true, false} {
		cf := &clientFlags{}
		var noMigrate bool
		var wait time.Duration
		use, short := "off NAME", "Take a host out of maintenance: hass watches, fences and places VMs on it again"
		if on {
			use, short = "on NAME", "Put a host in maintenance: its protected VMs are live-migrated away (placed as an evacuation), then no recovery and no fencing for it"
		}
		sub := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, err := cf.client()
				if err != nil {
					return err
				}
				migrate := !noMigrate
				h, err := cl.Maintenance(cmd.Context(), args[0], api.MaintenanceRequest{On: on, Migrate: &migrate})
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if !on {
					fmt.Fprintf(out, "host %s: out of maintenance (%s)\n", cell(h.Name), cell(h.State))
					return nil
				}
				if noMigrate || wait <= 0 {
					fmt.Fprintf(out, "host %s: in maintenance; %d protected VMs have it as their home\n", cell(h.Name), h.VMs)
					return nil
				}
				// Progress: how many protected VMs still run there.
				start, deadline := time.Now(), time.Now().Add(wait)
				for {
					vms, err := cl.VMs(cmd.Context())
					if err != nil {
						return err
					}
					left, moving := 0, 0
					for _, v := range vms {
						if v.Host == h.Name && v.Observed == "running" {
							left++
							if v.Operation != nil && v.Operation.Op == "migrate" {
								moving++
							}
						}
					}
					if left == 0 {
						fmt.Fprintf(out, "host %s: in maintenance, no protected VM runs there (%s)\n", cell(h.Name), time.Since(start).Round(100*time.Millisecond))
						return nil
					}
					if time.Now().After(deadline) {
						return fmt.Errorf("host %s: in maintenance, but %d protected VMs still run there after %s (hass vm list says why)", h.Name, left, wait)
					}
					fmt.Fprintf(out, "  %s: %d protected VMs still on %s, %d migrating\n", time.Since(start).Round(time.Second), left, cell(h.Name), moving)
					time.Sleep(time.Second)
				}
			},
		}
		if on {
			sub.Flags().BoolVar(&noMigrate, "no-migrate", false, "leave its VMs where they are (they stop with the host, and are not restarted elsewhere)")
			sub.Flags().DurationVar(&wait, "wait", 0, "wait up to this long until no protected VM runs there, showing progress")
		}
		cf.add(sub)
		c.AddCommand(sub)
	}
	return c
}

// clusterCmd is `hass cluster`: create, delete, list.
func clusterCmd() *cobra.Command {
	c := &cobra.Command{Use: "cluster", Short: "Clusters of hosts: recovery stays inside a VM's cluster"}
	cf := &clientFlags{}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the clusters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			cs, err := cl.Clusters(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), cs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "CLUSTER\tHOSTS\tTOLERATE HOST FAILURES\tGUEST LAYERS")
			for _, c := range cs {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", cell(c.Name), c.Hosts, c.TolerateHostFailures, c.GuestLayers)
			}
			return tw.Flush()
		},
	}
	cf.add(list)
	ccf := &clientFlags{}
	var tolerate int
	var layers string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a cluster, or change its admission control (--tolerate-host-failures)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := ccf.client()
			if err != nil {
				return err
			}
			req := api.ClusterRequest{}
			if cmd.Flags().Changed("tolerate-host-failures") {
				req.TolerateHostFailures = &tolerate
			}
			req.GuestLayers = layers
			if err := req.Validate(); err != nil {
				return usageError{err}
			}
			got, err := cl.PutCluster(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if ccf.json() {
				return printJSON(cmd.OutOrStdout(), got)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s: tolerates %d host failures, guest layers %s\n", cell(got.Name), got.TolerateHostFailures, got.GuestLayers)
			return nil
		},
	}
	create.Flags().IntVar(&tolerate, "tolerate-host-failures", 0, "refuse to protect a VM that could not be restarted after any N host losses (admission control)")
	create.Flags().StringVar(&layers, "guest-layers", "", "the guest layers active for the VMs of its hosts: all (what each VM's policy turns on), os, network or none")
	ccf.add(create)
	dcf := &clientFlags{}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a cluster (refused while a host is in it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := dcf.client()
			if err != nil {
				return err
			}
			if err := cl.DeleteCluster(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s: deleted\n", cell(args[0]))
			return nil
		},
	}
	dcf.add(del)
	c.AddCommand(list, create, del)
	return c
}
