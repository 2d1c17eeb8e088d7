package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/auth"
)

func tokenCmd() *cobra.Command {
	cf := &clientFlags{}
	c := &cobra.Command{
		Use:   "token",
		Short: "Manage API tokens (admin only)",
		Long: `Every API request carries a token; each token has a role:

  viewer    read only: every GET, /metrics and the event log
  operator  and protect, unprotect and operate VMs (start, stop, migrate, ...)
  admin     and everything else: tokens, clusters, hosts, maintenance

A token is shown once, when it is created: keep it in a file (mode 0600) and give it to the
CLI with --token-file FILE, or in HASS_TOKEN or HASS_TOKEN_FILE. The store keeps only its hash.`,
	}
	cf.add(c)
	var role string
	create := &cobra.Command{
		Use:   "create NAME --role viewer|operator|admin",
		Short: "Create a token; it is printed once and never again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.CheckName(args[0]); err != nil {
				return usageError{err}
			}
			if _, err := auth.ParseRole(role); err != nil {
				return usageError{fmt.Errorf("--role: %w", err)}
			}
			cl, err := cf.client()
			if err != nil {
				return err
			}
			nt, err := cl.CreateToken(cmd.Context(), api.TokenRequest{Name: args[0], Role: role})
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), nt)
			}
			fmt.Fprintln(cmd.OutOrStdout(), nt.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s (role %s) created: this is the only time it is shown; keep it in a file readable by its user only\n", nt.Name, nt.Role)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "viewer, operator or admin (required)")
	_ = create.MarkFlagRequired("role")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tokens: names, roles, when and by whom created (never secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			ts, err := cl.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json() {
				if ts == nil {
					ts = []api.TokenInfo{}
				}
				return printJSON(cmd.OutOrStdout(), ts)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tROLE\tCREATED\tBY")
			for _, t := range ts {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.Name, t.Role, t.Created.Local().Format(time.DateTime), t.CreatedBy)
			}
			return w.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token: refused at once by the controller that revoked it, by the others within 2 s",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.CheckName(args[0]); err != nil {
				return usageError{err}
			}
			cl, err := cf.client()
			if err != nil {
				return err
			}
			if err := cl.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked\n", args[0])
			return nil
		},
	}
	c.AddCommand(create, list, revoke)
	return c
}
