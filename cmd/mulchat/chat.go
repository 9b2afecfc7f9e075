package main

import "github.com/spf13/cobra"

func newChatCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "chat", Short: "terminal chat client"}
	return cmd
}
