package credmigrate

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/mulchat/mulchat"
)

// DropOptions configure DropTable.
type DropOptions struct {
	// BackupPath is the file the whole table is written to first; required.
	BackupPath string
	// Confirm is asked after the backup is written and verified; the command
	// prompts on a terminal, and without one answers --yes. nil refuses.
	Confirm func(summary string) (bool, error)
}

// DropTable performs `mulchat migrate drop-nats-user-credential-table`. It
// refuses unless the verification passes at that moment,
// nats_auth_sessions.credential_id has been removed with its verified
// backup, a backup file of the whole table has been written and verified,
// and Confirm agrees. The drop has RESTRICT semantics: anything still
// depending on the table stops it.
func (m *Migrator) DropTable(ctx context.Context, opts DropOptions) (*Report, error) {
	r := m.newReport("drop-nats-user-credential-table")
	defer func() { r.FinishedAt = m.opts.Now().UTC() }()
	lock, err := m.lock(ctx)
	if err != nil {
		return r, err
	}
	defer lock.release()
	if err := m.requireLayout(ctx, true); err != nil {
		return r, err
	}
	if err := m.timed(r, "verify", func() (err error) {
		r.Verify, err = m.pass(ctx, "verify", 0, false, true, false, false, 0)
		return err
	}); err != nil {
		return r, err
	}
	if r.Verify.Unverified > 0 {
		return r, mulchat.WrapError(mulchat.EINVALID, ErrUnverified, fmt.Sprintf(
			"refusing to drop %s: %d users do not verify (run `mulchat migrate nats-credentials`)", LegacyTable, r.Verify.Unverified))
	}
	if ok, err := hasColumn(ctx, m.db, m.dialect, SessionsTable, SessionCredColumn); err != nil {
		return r, internal(err, "reading nats_auth_sessions")
	} else if ok {
		return r, errConflict("refusing to drop " + LegacyTable + ": nats_auth_sessions.credential_id still references it (run `mulchat migrate nats-credentials`, which backs it up and removes it)")
	}
	if ok, err := tableExists(ctx, m.db, m.dialect, sessionBackupTable); err != nil {
		return r, internal(err, "looking for the credential_id backup")
	} else if !ok {
		return r, errConflict("refusing to drop " + LegacyTable + ": the backup of nats_auth_sessions.credential_id (" + sessionBackupTable + ") is missing")
	}
	if opts.BackupPath == "" {
		return r, errInvalid("refusing to drop " + LegacyTable + " without a backup: give --backup FILE")
	}
	if m.opts.DryRun {
		r.note("dry run: would write the backup %s and drop %s", opts.BackupPath, LegacyTable)
		return r, nil
	}
	// A killed nats-credentials run may have left its change capture on the
	// table; everything just verified, so what it recorded is moot.
	if _, err := m.stopCapture(ctx); err != nil {
		return r, err
	}
	if err := m.timed(r, "backup", func() (err error) {
		r.Backup, err = m.WriteBackup(ctx, opts.BackupPath)
		return err
	}); err != nil {
		return r, err
	}
	summary := fmt.Sprintf("drop %s (%d rows, backed up to %s, sha256 %s)", LegacyTable, r.Backup.Credentials, r.Backup.Path, r.Backup.SHA256)
	if opts.Confirm == nil {
		return r, errInvalid("refusing to drop without confirmation: give --yes")
	}
	ok, err := opts.Confirm(summary)
	if err != nil {
		return r, err
	}
	if !ok {
		return r, errInvalid("not confirmed: nothing dropped (the backup is kept)")
	}
	schema, err := m.legacySchema(ctx, m.db)
	if err != nil {
		return r, internal(err, "reading the definition of "+LegacyTable)
	}
	err = m.timed(r, "drop", func() error {
		return m.inTx(ctx, true, func(tx *sql.Tx) error {
			if m.dialect == Postgres {
				// Keep writers out between the last check and the drop.
				if _, err := tx.ExecContext(ctx, "LOCK TABLE "+LegacyTable+" IN ACCESS EXCLUSIVE MODE"); err != nil {
					return err
				}
			} else if err := sqliteDependents(ctx, tx, LegacyTable); err != nil {
				return err
			}
			digest, nc, ns, err := m.tableDigest(ctx, tx)
			if err != nil {
				return err
			}
			b, err := ReadBackup(opts.BackupPath)
			if err != nil {
				return err
			}
			if digest != b.rowsDigest || nc != b.credentialsN || ns != b.sessionsN {
				return errConflict(LegacyTable + " changed after the backup was written; nothing dropped, run the command again")
			}
			if err := m.ensureMetaTables(ctx, tx); err != nil {
				return err
			}
			if err := m.putMeta(ctx, tx, "legacy_table", schema); err != nil {
				return err
			}
			stmt := "DROP TABLE " + LegacyTable
			if m.dialect == Postgres {
				stmt += " RESTRICT"
			}
			_, err = tx.ExecContext(ctx, stmt)
			return err
		})
	})
	if err != nil {
		return r, internal(err, "dropping "+LegacyTable)
	}
	r.note("dropped %s; restore with `mulchat migrate rollback-nats-credentials --from-backup %s`", LegacyTable, opts.BackupPath)
	return r, nil
}

// sqliteDependents refuses when another table's foreign key, a view or a
// trigger refers to table: SQLite's DROP TABLE would otherwise delete
// referencing rows or leave a broken view, where RESTRICT must stop.
func sqliteDependents(ctx context.Context, q queryer, table string) error {
	rows, err := q.QueryContext(ctx, `SELECT m.name FROM sqlite_master m, pragma_foreign_key_list(m.name) f
WHERE m.type = 'table' AND m.name <> ? AND f."table" = ?`, table, table)
	if err != nil {
		return err
	}
	var deps []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		deps = append(deps, "table "+n+" (foreign key)")
	}
	rows.Close()
	rows, err = q.QueryContext(ctx, "SELECT type, name, sql FROM sqlite_master WHERE type IN ('view', 'trigger') AND tbl_name <> ?", table)
	if err != nil {
		return err
	}
	for rows.Next() {
		var typ, name string
		var s sql.NullString
		if err := rows.Scan(&typ, &name, &s); err != nil {
			rows.Close()
			return err
		}
		if mentions(s.String, table) {
			deps = append(deps, typ+" "+name)
		}
	}
	rows.Close()
	if len(deps) > 0 {
		return errConflict(fmt.Sprintf("cannot drop %s: %s depend on it (RESTRICT)", table, strings.Join(deps, ", ")))
	}
	return nil
}
