package main

import "github.com/spf13/cobra"

func newCredsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "creds", Short: "issue, revoke and verify NATS credentials"}
	return cmd
}
