package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/spf13/cobra"
)

func newMigrateCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "migrate", Short: "database schema migrations"}
	open := func(cmd *cobra.Command) (*sqlstore.DB, error) {
		return app.OpenDatabase(cmd.Context(), appConfig(g, nil))
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "up",
			Short: "apply every pending migration",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				db, err := open(cmd)
				if err != nil {
					return err
				}
				defer db.Close()
				if err := db.Migrate(cmd.Context()); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "database is up to date")
				return nil
			},
		},
		&cobra.Command{
			Use:   "down",
			Short: "roll back the most recent migration",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				db, err := open(cmd)
				if err != nil {
					return err
				}
				defer db.Close()
				if err := db.MigrateDown(cmd.Context()); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "rolled back one migration")
				return nil
			},
		},
		&cobra.Command{
			Use:   "status",
			Short: "list migrations and whether each is applied",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				db, err := open(cmd)
				if err != nil {
					return err
				}
				defer db.Close()
				list, err := db.MigrationStatus(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED")
				for _, m := range list {
					applied := "pending"
					if m.Applied {
						applied = m.AppliedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\n", m.Version, m.Name, applied)
				}
				return tw.Flush()
			},
		},
	)
	addCredentialMigrationCommands(cmd, g)
	return cmd
}
