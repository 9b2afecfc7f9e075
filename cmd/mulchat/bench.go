package main

import "github.com/spf13/cobra"

func newBenchCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "drive load against a running server"}
	return cmd
}
