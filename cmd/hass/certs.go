package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/hassproject/hass/pki"
	"github.com/hassproject/hass/vmname"
)

func certsCmd() *cobra.Command {
	c := &cobra.Command{Use: "certs", Short: "A small certificate authority for sites without their own PKI"}
	var dir string
	var hosts, dns, ips []string
	var days int
	var force bool
	initCmd := &cobra.Command{
		Use:   "init --hosts h1,h2,h3",
		Short: "Make (or reuse) a CA and a key and certificate for each host",
		Long: `Make a CA in --dir (reused if it exists) and, for each of --hosts, a key and a certificate
signed by it, good for serving (hass's API, etcd's client and peer ports) and as a client
(mutual TLS between agents, controllers and etcd). A certificate names its host, localhost,
127.0.0.1 and ::1, and the --dns names and --ip addresses given (for every host alike: give
the addresses a host is reached at when you make its certificate alone). Keys are ECDSA
P-256, written 0600. An existing certificate is kept unless --force. Copy ca.crt to every
host, and each host's own .crt and .key to it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(hosts) == 0 {
				return usageError{errors.New("--hosts: name at least one host")}
			}
			var addrs []net.IP
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return usageError{fmt.Errorf("--ip %q: not an IP address", s)}
				}
				addrs = append(addrs, ip)
			}
			for _, h := range hosts {
				if err := vmname.CheckHost(h); err != nil {
					return usageError{fmt.Errorf("--hosts %q: %w", h, err)}
				}
			}
			if days < 1 || days > 3650 {
				return usageError{fmt.Errorf("--days %d: want 1-3650", days)}
			}
			validity := time.Duration(days) * 24 * time.Hour
			ca, created, err := pki.LoadOrCreateCA(dir, "hass CA", validity)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if created {
				fmt.Fprintf(out, "created the CA: %s (key %s, keep it safe)\n", pki.CAFiles(dir).Cert, pki.CAFiles(dir).Key)
			} else {
				fmt.Fprintf(out, "using the CA in %s\n", pki.CAFiles(dir).Cert)
			}
			for _, h := range hosts {
				f := pki.HostFiles(dir, h)
				if _, err := os.Stat(f.Cert); err == nil && !force {
					fmt.Fprintf(out, "%s: kept %s (--force to replace it)\n", h, f.Cert)
					continue
				}
				if _, err := ca.Issue(dir, h, dns, addrs, validity); err != nil {
					return err
				}
				fmt.Fprintf(out, "%s: %s, %s\n", h, f.Cert, f.Key)
			}
			return nil
		},
	}
	f := initCmd.Flags()
	f.StringVar(&dir, "dir", "/etc/hass/pki", "where the CA and the certificates are")
	f.StringSliceVar(&hosts, "hosts", nil, "the hosts to make certificates for (comma-separated)")
	f.StringSliceVar(&dns, "dns", nil, "more DNS names each certificate names")
	f.StringSliceVar(&ips, "ip", nil, "IP addresses each certificate names")
	f.IntVar(&days, "days", 825, "validity of the CA and the certificates, in days")
	f.BoolVar(&force, "force", false, "replace existing certificates (the CA is always kept)")
	c.AddCommand(initCmd)
	return c
}
