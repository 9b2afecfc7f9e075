package main

import "github.com/spf13/cobra"

func newUserCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "administer users"}
	return cmd
}
