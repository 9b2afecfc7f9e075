package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/sqlstore"
)

// addCredentialMigrationCommands adds the legacy credential migration commands
// (adopt, nats-credentials, verify-nats-credentials, ...) to `mulchat migrate`.
// They follow the steps of the original NATS Credential Migration Guide; see
// docs/credential-migration.md.
func addCredentialMigrationCommands(migrate *cobra.Command, g *globals) {
	migrate.AddCommand(
		newAdoptCommand(g),
		newNATSCredentialsCommand(g),
		newVerifyNATSCredentialsCommand(g),
		newDropNATSUserCredentialTableCommand(g),
		newRollbackNATSCredentialsCommand(g),
	)
}

// credFlags are the flags the credential migration commands share.
type credFlags struct {
	report   string
	debug    bool
	dryRun   bool
	lockWait time.Duration
}

func (f *credFlags) add(cmd *cobra.Command, dryRun bool) {
	cmd.Flags().StringVar(&f.report, "report", "", "write a JSON report to this file")
	cmd.Flags().BoolVar(&f.debug, "debug", false, "log every decision (no secrets)")
	if dryRun {
		// The commands with --dry-run are the ones that write, and hold the
		// database's migration lock.
		cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "do everything inside transactions that are rolled back, and print what would change")
		cmd.Flags().DurationVar(&f.lockWait, "lock-wait", credmigrate.DefaultLockWait,
			"how long to wait for another credential migration command working on the same database (0: fail at once)")
	}
}

// lockWaitOption maps --lock-wait to the options' convention (0: default,
// negative: do not wait).
func (f *credFlags) lockWaitOption() time.Duration {
	if f.lockWait <= 0 {
		return -1
	}
	return f.lockWait
}

// withMigrator opens the database without migrating it and runs fn.
func withMigrator(cmd *cobra.Command, g *globals, f *credFlags, opts credmigrate.Options, fn func(ctx context.Context, db *sqlstore.DB, m *credmigrate.Migrator) (any, error)) error {
	ctx := cmd.Context()
	db, err := app.OpenDatabase(ctx, appConfig(g, nil))
	if err != nil {
		return err
	}
	defer db.Close()
	logger := cliLogger(cmd, g)
	if f.debug {
		logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	opts.Logger = logger
	opts.Debug = f.debug
	opts.DryRun = f.dryRun
	opts.LockWait = f.lockWaitOption()
	if w := cmd.ErrOrStderr(); w == os.Stderr && term.IsTerminal(int(os.Stderr.Fd())) {
		opts.Progress = w
	}
	m, err := credmigrate.New(db.SQL(), db.Dialect(), opts)
	if err != nil {
		return err
	}
	report, runErr := fn(ctx, db, m)
	if f.report != "" && report != nil {
		if err := writeCredReport(f.report, report); err != nil {
			if runErr == nil {
				runErr = err
			}
		}
	}
	return runErr
}

func writeCredReport(path string, report any) error {
	b, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return mulchat.WrapError(mulchat.EINTERNAL, err, "encoding the report")
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return mulchat.WrapError(mulchat.EINVALID, err, "cannot write the report")
	}
	return nil
}

func newAdoptCommand(g *globals) *cobra.Command {
	var f credFlags
	cmd := &cobra.Command{
		Use:   "adopt",
		Short: "take a legacy Mul-Chat database to mulchat's schema without touching its data",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			db, err := app.OpenDatabase(ctx, appConfig(g, nil))
			if err != nil {
				return err
			}
			defer db.Close()
			r, err := credmigrate.Adopt(ctx, db.SQL(), db.Dialect(), credmigrate.AdoptOptions{
				Migrations: sqlstore.Migrations(db.Dialect()), VersionTable: sqlstore.GooseTable, DryRun: f.dryRun,
				LockWait: f.lockWaitOption(), Logger: cliLogger(cmd, g)})
			if err != nil {
				return err
			}
			if f.report != "" {
				if err := writeCredReport(f.report, r); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			if r.AlreadyAdopted {
				fmt.Fprintln(out, "already adopted: nothing to do")
			} else {
				printAdopt(out, r, f.dryRun)
			}
			if f.dryRun {
				return nil
			}
			// Later mulchat migrations continue from the baseline.
			if err := db.Migrate(ctx); err != nil {
				return err
			}
			fmt.Fprintln(out, "database is up to date; next: mulchat migrate nats-credentials")
			return nil
		},
	}
	f.add(cmd, true)
	cmd.Flags().Lookup("debug").Hidden = true
	return cmd
}

func printAdopt(w io.Writer, r *credmigrate.AdoptReport, dry bool) {
	if dry {
		fmt.Fprintln(w, "dry run: nothing was changed; a real run would:")
	}
	fmt.Fprintf(w, "baseline: schema version %d\n", r.BaselineVersion)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LEGACY TABLE\tROWS")
	for _, t := range slices.Sorted(maps.Keys(r.LegacyTables)) {
		fmt.Fprintf(tw, "%s\t%d\n", t, r.LegacyTables[t])
	}
	tw.Flush()
	list := func(name string, v []string) {
		if len(v) > 0 {
			fmt.Fprintf(w, "%s: %s\n", name, strings.Join(v, ", "))
		}
	}
	list("created tables", r.CreatedTables)
	list("added columns", r.AddedColumns)
	list("created indexes", r.CreatedIndexes)
	for _, k := range slices.Sorted(maps.Keys(r.Normalized)) {
		fmt.Fprintf(w, "normalized: %s (%d rows)\n", k, r.Normalized[k])
	}
	list("left untouched (never dropped)", r.Untouched)
}

func newNATSCredentialsCommand(g *globals) *cobra.Command {
	var f credFlags
	var opts credmigrate.Options
	cmd := &cobra.Command{
		Use:   "nats-credentials",
		Short: "move credentials from nats_user_credentials to users.nats_* (checkpointed, verified)",
		Long: `Pre-check, copy in checkpointed batches, catch up and verify field by field,
scrub raw seeds and plaintext passwords, then back up and remove
nats_auth_sessions.credential_id. A killed run resumes where it stopped; a
finished run, rerun, changes nothing. Exits non-zero if any user is unverified.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withMigrator(cmd, g, &f, opts, func(ctx context.Context, _ *sqlstore.DB, m *credmigrate.Migrator) (any, error) {
				r, err := m.Run(ctx)
				printCredReport(cmd.OutOrStdout(), r)
				return r, err
			})
		},
	}
	f.add(cmd, true)
	cmd.Flags().IntVar(&opts.BatchSize, "batch-size", 2000, "users per batch (one transaction each)")
	cmd.Flags().StringVar(&opts.OnConflict, "on-conflict", "newest", "when users.nats_* already holds a different credential: newest, legacy or fail")
	cmd.Flags().DurationVar(&opts.LockTimeout, "lock-timeout", 0, "PostgreSQL lock_timeout per statement (default 2s)")
	cmd.Flags().BoolVar(&opts.KeepSessionColumn, "keep-session-column", false, "do not remove nats_auth_sessions.credential_id yet (on SQLite its removal rebuilds the table under the write lock)")
	return cmd
}

func newVerifyNATSCredentialsCommand(g *globals) *cobra.Command {
	var f credFlags
	cmd := &cobra.Command{
		Use:   "verify-nats-credentials",
		Short: "verify users.nats_* against nats_user_credentials, field by field (writes nothing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withMigrator(cmd, g, &f, credmigrate.Options{}, func(ctx context.Context, _ *sqlstore.DB, m *credmigrate.Migrator) (any, error) {
				r, err := m.Verify(ctx)
				printCredReport(cmd.OutOrStdout(), r)
				return r, err
			})
		},
	}
	f.add(cmd, false)
	return cmd
}

func newDropNATSUserCredentialTableCommand(g *globals) *cobra.Command {
	var f credFlags
	var backup string
	var yes bool
	cmd := &cobra.Command{
		Use:   "drop-nats-user-credential-table",
		Short: "back up and drop nats_user_credentials once the migration verifies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withMigrator(cmd, g, &f, credmigrate.Options{}, func(ctx context.Context, _ *sqlstore.DB, m *credmigrate.Migrator) (any, error) {
				confirm := func(summary string) (bool, error) {
					if yes {
						return true, nil
					}
					in, ok := cmd.InOrStdin().(*os.File)
					if !ok || !term.IsTerminal(int(in.Fd())) {
						return false, mulchat.Errorf(mulchat.EINVALID, "refusing to drop without --yes: stdin is not a terminal (the backup %s is kept)", backup)
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "About to %s.\nType \"drop\" to confirm: ", summary)
					line, _ := bufio.NewReader(in).ReadString('\n')
					return strings.TrimSpace(line) == "drop", nil
				}
				r, err := m.DropTable(ctx, credmigrate.DropOptions{BackupPath: backup, Confirm: confirm})
				printCredReport(cmd.OutOrStdout(), r)
				return r, err
			})
		},
	}
	f.add(cmd, true)
	cmd.Flags().StringVar(&backup, "backup", "", "write the whole table here first (required; restorable by rollback-nats-credentials)")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation (required when stdin is not a terminal)")
	return cmd
}

func newRollbackNATSCredentialsCommand(g *globals) *cobra.Command {
	var f credFlags
	var from string
	cmd := &cobra.Command{
		Use:   "rollback-nats-credentials",
		Short: "recreate nats_user_credentials and nats_auth_sessions.credential_id (from a backup, or from users.nats_*)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withMigrator(cmd, g, &f, credmigrate.Options{}, func(ctx context.Context, _ *sqlstore.DB, m *credmigrate.Migrator) (any, error) {
				r, err := m.Rollback(ctx, credmigrate.RollbackOptions{FromBackup: from})
				printCredReport(cmd.OutOrStdout(), r)
				return r, err
			})
		},
	}
	f.add(cmd, true)
	cmd.Flags().StringVar(&from, "from-backup", "", "backup file written by drop-nats-user-credential-table (exact restore); empty: rebuild from users.nats_*")
	return cmd
}

// printCredReport prints a human summary of a report.
func printCredReport(w io.Writer, r *credmigrate.Report) {
	if r == nil {
		return
	}
	if r.DryRun {
		fmt.Fprintln(w, "DRY RUN: every change below was rolled back")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	if p := r.Precheck; p != nil {
		fmt.Fprintln(tw, "PRE-CHECK\t")
		row("  legacy credential rows", p.LegacyRows)
		row("  user ids with rows", p.LegacyUsers)
		row("  users with several rows (newest by JWT iat, then id, wins)", p.UsersWithSeveralRows)
		row("  superseded rows", p.SupersededRows)
		row("  rows of users that do not exist", p.OrphanRows)
		row("  JWTs that do not parse", p.InvalidJWTRows)
		row("  JWTs whose subject is not the row's key", p.SubjectMismatchRows)
		row("  already migrated", p.AlreadyMigrated)
		row("  users.nats_* holding another credential", fmt.Sprintf("%d (keep users' %d, take legacy %d)", p.Conflicts, p.ConflictsKeepUsers, p.ConflictsTakeLegacy))
		row("  public keys held by several users", p.ContestedKeys)
		row("  users to write", p.ToWrite)
		row("  raw seeds in clear", fmt.Sprintf("%d legacy, %d users", p.RawSeedsLegacy, p.RawSeedsUsers))
		row("  plaintext passwords", p.PlaintextPasswords)
		row("  sessions with credential_id", fmt.Sprintf("%d (%d pointing at missing rows)", p.SessionCredentialRefs, p.DanglingSessionRefs))
	}
	if c := r.Copy; c != nil && r.Command == "nats-credentials" {
		fmt.Fprintln(tw, "COPY\t")
		row("  batches", c.Batches)
		row("  decisions", credFormatCounts(c.Actions))
		row("  written", c.Written)
	}
	if v := r.Verify; v != nil {
		fmt.Fprintln(tw, "VERIFY (all seven columns, every user)\t")
		row("  users checked", v.Users)
		row("  verified", credFormatCounts(v.Verified))
		row("  caught up in the final pass", v.Written)
		row("  UNVERIFIED", v.Unverified)
		row("  source digest", v.SourceDigest)
		row("  target digest", v.TargetDigest)
		for _, mm := range v.Mismatches {
			row(fmt.Sprintf("  user %d", mm.UserID), mm.Reason+" "+strings.Join(mm.Columns, ","))
		}
	}
	if s := r.Seeds; s != nil {
		row("raw seeds replaced by SHA-256 (EXPOSED: revoke these keys)", fmt.Sprintf("%d legacy, %d users", s.LegacyRows, s.UserRows))
	}
	if p := r.Passwords; p != nil {
		row("plaintext passwords rehashed (argon2id, must rotate)", p.Rehashed)
		if p.OtherSchemes > 0 {
			row("passwords in another hash scheme (left as they are)", p.OtherSchemes)
		}
	}
	if s := r.Sessions; s != nil {
		if s.AlreadyDropped {
			row("nats_auth_sessions.credential_id", "already removed")
		} else {
			row("nats_auth_sessions.credential_id", fmt.Sprintf("backed up (%d rows, digest %s) and removed", s.BackedUp, s.Digest))
		}
	}
	if b := r.Backup; b != nil {
		row("backup", fmt.Sprintf("%s (%d rows, %d session refs, sha256 %s)", b.Path, b.Credentials, b.Sessions, b.SHA256))
	}
	if rb := r.Rollback; rb != nil {
		row("rollback", fmt.Sprintf("from %s: %d rows, %d session refs, round trip verified: %v", rb.Source, rb.Credentials, rb.Sessions, rb.RoundTripVerified))
	}
	for _, k := range slices.Sorted(maps.Keys(r.Timings)) {
		row("time "+k, r.Timings[k])
	}
	tw.Flush()
	for _, msg := range r.Messages {
		fmt.Fprintln(w, msg)
	}
}

func credFormatCounts(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
