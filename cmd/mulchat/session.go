package main

import "github.com/spf13/cobra"

func newSessionCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "session", Short: "list and kick NATS sessions"}
	return cmd
}
