package main

import "github.com/spf13/cobra"

func newMigrateCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "migrate", Short: "database schema migrations"}
	addCredentialMigrationCommands(cmd, g)
	return cmd
}
