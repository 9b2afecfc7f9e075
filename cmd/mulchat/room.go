package main

import "github.com/spf13/cobra"

func newRoomCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "room", Short: "administer rooms"}
	return cmd
}
