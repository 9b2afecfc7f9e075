package main

import "github.com/spf13/cobra"

func newNATSCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "nats", Short: "NATS server configuration and key import"}
	addNATSImportCommand(cmd, g)
	return cmd
}
