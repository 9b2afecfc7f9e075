package main

import "github.com/spf13/cobra"

func newServeCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "serve", Short: "run the chat server (API, web page, NATS authority, router, tracker)"}
	return cmd
}
