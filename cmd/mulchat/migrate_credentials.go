package main

import "github.com/spf13/cobra"

// addCredentialMigrationCommands adds the legacy credential migration commands
// (adopt, nats-credentials, verify-nats-credentials, ...) to `mulchat migrate`.
func addCredentialMigrationCommands(migrate *cobra.Command, g *globals) {}
