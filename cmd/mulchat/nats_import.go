package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/credmigrate"
)

// addNATSImportCommand adds `mulchat nats import-nsc`.
func addNATSImportCommand(nats *cobra.Command, g *globals) {
	var opts credmigrate.NSCImportOptions
	cmd := &cobra.Command{
		Use:   "import-nsc",
		Short: "import the operator and account keys of the legacy app's nsc environment",
		Long: `Imports the operator and account keys and JWTs of an nsc environment into
nats_operators and nats_accounts (seeds encrypted with the master key), so
that credentials issued by the legacy app stay valid and mulchat signs new
ones for the same accounts. Run it on the adopted legacy database before the
first 'mulchat serve' (which would otherwise create an operator of its own).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.KeystoreDir == "" || opts.StoreDir == "" {
				return mulchat.Errorf(mulchat.EINVALID, "--keystore and --store are required")
			}
			ctx := cmd.Context()
			db, err := app.OpenDatabase(ctx, appConfig(g, nil))
			if err != nil {
				return err
			}
			defer db.Close()
			mk, err := authority.LoadMasterKey(g.dataDir, true)
			if err != nil {
				return err
			}
			opts.MasterKey, opts.Encrypt = mk, authority.EncryptSeed
			opts.Logger = cliLogger(cmd, g)
			if opts.LockWait <= 0 {
				opts.LockWait = -1 // --lock-wait 0: fail at once
			}
			r, err := credmigrate.ImportNSC(ctx, db.SQL(), db.Dialect(), opts)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "operator %s imported\n", r.Operator)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ACCOUNT\tNSC NAME\tPUBLIC KEY\tSIGNS USERS WITH\tROW")
			for _, a := range r.Accounts {
				row := "new"
				if a.Existing {
					row = "completed"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Name, a.NSCName, a.PublicKey, a.Signer, row)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&opts.KeystoreDir, "keystore", "", "nsc key store directory (holding keys/O, keys/A, …)")
	cmd.Flags().StringVar(&opts.StoreDir, "store", "", "nsc JWT store directory (holding <operator>/<operator>.jwt)")
	cmd.Flags().StringVar(&opts.Operator, "operator", "", "operator name in the store (default: the only one)")
	cmd.Flags().DurationVar(&opts.LockWait, "lock-wait", credmigrate.DefaultLockWait,
		"how long to wait for a credential migration command working on the same database (0: fail at once)")
	cmd.Flags().StringVar(&opts.ChatAccount, "chat-account", "", "nsc account that becomes mulchat's chat account (default: the legacy database's chat account, or the only one)")
	nats.AddCommand(cmd)
}
