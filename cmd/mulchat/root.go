package main

import (
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// globals are the flags every command shares. Each flag has a MULCHAT_*
// environment variable (the flag name upper-cased, '-' → '_'); a flag given on
// the command line wins over the environment.
type globals struct {
	databaseURL string
	dataDir     string
	natsURL     string
	logLevel    string
	logFormat   string
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "mulchat",
		Short:         "NATS-native rooms-based chat server",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return applyEnv(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.dataDir, "data-dir", "data", "directory for the SQLite database, NATS data, keys")
	pf.StringVar(&g.databaseURL, "database-url", "", "SQLite file path or postgres://… URL (default: <data-dir>/mulchat.db)")
	pf.StringVar(&g.natsURL, "nats-url", "", "external NATS server URL(s), comma-separated (empty = embedded server)")
	pf.StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error")
	pf.StringVar(&g.logFormat, "log-format", "text", "text or json")

	// Each command group lives in its own file.
	root.AddCommand(
		newServeCommand(g),
		newMigrateCommand(g),
		newUserCommand(g),
		newRoomCommand(g),
		newCredsCommand(g),
		newNATSCommand(g),
		newSessionCommand(g),
		newChatCommand(g),
		newBenchCommand(g),
	)
	return root
}

// envName is the environment variable of a flag.
func envName(flag string) string {
	return "MULCHAT_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its MULCHAT_*
// environment variable.
func applyEnv(cmd *cobra.Command) error {
	var err error
	set := func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			err = f.Value.Set(v)
		}
	}
	cmd.Flags().VisitAll(set)
	cmd.InheritedFlags().VisitAll(set)
	return err
}
