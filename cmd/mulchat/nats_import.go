package main

import "github.com/spf13/cobra"

// addNATSImportCommand adds `mulchat nats import-nsc`.
func addNATSImportCommand(nats *cobra.Command, g *globals) {}
