package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/spf13/cobra"
)

func newMigrateCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "migrate", Short: "database schema migrations"}
	// withDatabase runs fn on the database opened as it is (migrating it is
	// these commands' job, so unlike withStore it does not migrate first) and
	// closes it after.
	withDatabase := func(fn func(cmd *cobra.Command, db *sqlstore.DB) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			db, err := app.OpenDatabase(cmd.Context(), appConfig(g, nil))
			if err != nil {
				return err
			}
			defer db.Close()
			return fn(cmd, db)
		}
	}
	// step is "up" or "down": one change to the schema, then a line saying
	// where it stands.
	step := func(use, short string, run func(*sqlstore.DB, context.Context) error, done string) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: withDatabase(func(cmd *cobra.Command, db *sqlstore.DB) error {
				if err := run(db, cmd.Context()); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), done)
				return nil
			}),
		}
	}
	cmd.AddCommand(
		step("up", "apply every pending migration", (*sqlstore.DB).Migrate, "database is up to date"),
		step("down", "roll back the most recent migration", (*sqlstore.DB).MigrateDown, "rolled back one migration"),
		&cobra.Command{
			Use:   "status",
			Short: "list migrations and whether each is applied",
			Args:  cobra.NoArgs,
			RunE: withDatabase(func(cmd *cobra.Command, db *sqlstore.DB) error {
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
			}),
		},
	)
	addCredentialMigrationCommands(cmd, g)
	return cmd
}
