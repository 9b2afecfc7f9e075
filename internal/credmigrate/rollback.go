package credmigrate

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

// RollbackOptions configure Rollback.
type RollbackOptions struct {
	// FromBackup is a backup file written by DropTable. Empty: recreate the
	// table from the users.nats_* columns (one row per user holding a
	// credential; superseded and orphaned legacy rows are not recoverable
	// that way, and session references are restored only where their
	// credential id still exists).
	FromBackup string
}

// Rollback performs `mulchat migrate rollback-nats-credentials`: it
// recreates nats_user_credentials (from a backup file, exactly; or from the
// users columns) and nats_auth_sessions.credential_id (its recorded
// definition, values from the backup), in one transaction, checks the round
// trip, then runs the verification. users.nats_* stay as they are, and
// scrubbed seeds and rehashed passwords are not put back in clear.
func (m *Migrator) Rollback(ctx context.Context, opts RollbackOptions) (*Report, error) {
	r := m.newReport("rollback-nats-credentials")
	defer func() { r.FinishedAt = m.opts.Now().UTC() }()
	lock, err := m.lock(ctx)
	if err != nil {
		return r, err
	}
	defer lock.release()
	if err := m.requireLayout(ctx, false); err != nil {
		return r, err
	}
	var b *backup
	if opts.FromBackup != "" {
		var err error
		if b, err = ReadBackup(opts.FromBackup); err != nil {
			return r, err
		}
		if b.header.Dialect != m.dialect {
			return r, errInvalid(fmt.Sprintf("the backup was taken on %s, this database is %s", b.header.Dialect, m.dialect))
		}
	}
	tableThere, err := tableExists(ctx, m.db, m.dialect, LegacyTable)
	if err != nil {
		return r, internal(err, "looking for "+LegacyTable)
	}
	colThere, err := hasColumn(ctx, m.db, m.dialect, SessionsTable, SessionCredColumn)
	if err != nil {
		return r, internal(err, "reading "+SessionsTable)
	}
	if tableThere && !m.opts.DryRun {
		// A killed nats-credentials run may have left its change capture;
		// the legacy application's writes must not keep feeding it.
		if _, err := m.stopCapture(ctx); err != nil {
			return r, err
		}
	}
	if !m.opts.DryRun {
		// Nor the session change log of a removal that did not finish.
		m.removeSessionLog(ctx)
	}
	info := &RollbackInfo{Source: "users"}
	if b != nil {
		info.Source = "backup"
	}
	r.Rollback = info
	if tableThere && colThere {
		r.note("%s and %s.%s exist: nothing to roll back", LegacyTable, SessionsTable, SessionCredColumn)
	} else {
		body := func(tx *sql.Tx) error {
			*info = RollbackInfo{Source: info.Source}
			return m.rollbackTx(ctx, tx, b, !tableThere, !colThere, info)
		}
		if m.dialect == SQLite {
			// Foreign keys off: the legacy sessions may point at credentials
			// deleted long ago, and the rollback restores them as they were.
			err = m.sqliteNoFK(ctx, !m.opts.DryRun, body)
		} else {
			err = m.inTx(ctx, !m.opts.DryRun, body)
		}
		if err != nil {
			return r, internal(err, "rolling back the credential migration")
		}
	}
	if m.opts.DryRun {
		return r, nil
	}
	if err := m.timed(r, "verify", func() (err error) {
		r.Verify, err = m.pass(ctx, "verify", 0, false, true, false, false, 0)
		return err
	}); err != nil {
		return r, err
	}
	if r.Verify.Unverified > 0 {
		return r, errInvalid(fmt.Sprintf("rolled back, but %d users do not verify against the restored table", r.Verify.Unverified))
	}
	return r, nil
}

func (m *Migrator) rollbackTx(ctx context.Context, tx *sql.Tx, b *backup, table, column bool, info *RollbackInfo) error {
	if table {
		info.TableRecreated = true
		var schema *tableSchema
		switch {
		case b != nil:
			schema = b.header.Schema
		default:
			schema = &tableSchema{}
			ok, err := m.getMeta(ctx, tx, "legacy_table", schema)
			if err != nil {
				return err
			}
			if !ok {
				schema = canonicalLegacySchema(m.dialect)
			}
		}
		post, err := m.createLegacyTable(ctx, tx, schema)
		if err != nil {
			return fmt.Errorf("recreating %s: %w", LegacyTable, err)
		}
		if b != nil {
			if err := m.insertRows(ctx, tx, b.header.Columns, b.creds); err != nil {
				return err
			}
			info.Credentials = int64(len(b.creds))
		} else {
			now := nullTime{Time: m.opts.Now().UTC(), Valid: true}.value(m.dialect)
			res, err := tx.ExecContext(ctx, m.q(`INSERT INTO `+LegacyTable+` (user_id, jwt, seed_hash, public_key, account_id, account_public_key, expires_at, expired_at, created_at, updated_at)
SELECT id, nats_jwt, nats_seed_hash, nats_public_key, nats_account_id, nats_account_public_key, nats_expires_at, nats_expired_at, ?, ?
FROM users WHERE nats_jwt IS NOT NULL OR nats_public_key IS NOT NULL ORDER BY id`), now, now)
			if err != nil {
				return fmt.Errorf("recreating rows from users: %w", err)
			}
			info.Credentials, _ = res.RowsAffected()
		}
		for _, s := range post {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("recreating %s: %w", LegacyTable, err)
			}
		}
		// Round trip of the table.
		if b != nil {
			digest, n, err := credentialsDigest(ctx, tx)
			if err != nil {
				return err
			}
			if digest != b.credDigest || n != b.credentialsN {
				return errorf("the restored %s does not match the backup (%d rows vs %d)", LegacyTable, n, b.credentialsN)
			}
		} else {
			eq := "IS"
			if m.dialect == Postgres {
				eq = "IS NOT DISTINCT FROM"
			}
			var conds []string
			for i, f := range fieldNames {
				conds = append(conds, fmt.Sprintf("c.%s %s u.%s", legacyNames[i], eq, f))
			}
			var n int64
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM users u JOIN "+LegacyTable+" c ON c.user_id = u.id WHERE "+strings.Join(conds, " AND ")).Scan(&n); err != nil {
				return err
			}
			if n != info.Credentials {
				return errorf("only %d of %d restored rows equal their users columns", n, info.Credentials)
			}
		}
	}
	if column {
		info.ColumnRecreated = true
		if err := m.restoreSessionColumn(ctx, tx, b, info); err != nil {
			return err
		}
	}
	info.RoundTripVerified = true
	return nil
}

// insertRows inserts backup rows with their original values (ids
// included).
func (m *Migrator) insertRows(ctx context.Context, tx *sql.Tx, cols []string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	ph := make([]string, len(cols))
	for i := range cols {
		ph[i] = m.ph(i + 1)
	}
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = quoteIdent(c)
	}
	st, err := tx.PrepareContext(ctx, "INSERT INTO "+LegacyTable+" ("+strings.Join(quoted, ", ")+") VALUES ("+strings.Join(ph, ", ")+")")
	if err != nil {
		return err
	}
	defer st.Close()
	for _, row := range rows {
		if _, err := st.ExecContext(ctx, row...); err != nil {
			return fmt.Errorf("restoring a row of %s: %w", LegacyTable, err)
		}
	}
	return nil
}

// restoreSessionColumn recreates nats_auth_sessions.credential_id as it was
// recorded when it was dropped, and its values.
func (m *Migrator) restoreSessionColumn(ctx context.Context, tx *sql.Tx, b *backup, info *RollbackInfo) error {
	meta := &sessionMeta{}
	haveMeta := false
	if b != nil && b.header.Sessions != nil {
		meta, haveMeta = b.header.Sessions, true
	} else {
		ok, err := m.getMeta(ctx, tx, "sessions", meta)
		if err != nil {
			return err
		}
		haveMeta = ok
	}
	var pairs [][2]int64
	if b != nil {
		pairs = b.sessions
	} else if ok, err := tableExists(ctx, tx, m.dialect, sessionBackupTable); err != nil {
		return err
	} else if ok {
		rows, err := tx.QueryContext(ctx, backupPairs)
		if err != nil {
			return err
		}
		for rows.Next() {
			var p [2]int64
			if err := rows.Scan(&p[0], &p[1]); err != nil {
				rows.Close()
				return err
			}
			pairs = append(pairs, p)
		}
		rows.Close()
	}
	colType := "INTEGER"
	if haveMeta && meta.ColumnType != "" {
		colType = meta.ColumnType
	}
	current, err := columns(ctx, tx, m.dialect, SessionsTable)
	if err != nil {
		return err
	}
	var post []string
	switch {
	case m.dialect == SQLite && haveMeta && meta.CreateSQL != "" && slices.Equal(current, without(meta.Columns, SessionCredColumn)):
		// Rebuild with the recorded definition: the column comes back in its
		// place, with its foreign key.
		if err := m.sqliteRebuild(ctx, tx, SessionsTable, meta.CreateSQL, current, func(string) bool { return true }); err != nil {
			return err
		}
		post = meta.Indexes
	case m.dialect == SQLite:
		if _, err := tx.ExecContext(ctx, "ALTER TABLE "+SessionsTable+" ADD COLUMN "+SessionCredColumn+" "+colType+" REFERENCES "+LegacyTable+" (id)"); err != nil {
			return err
		}
		post = []string{"CREATE INDEX IF NOT EXISTS ix_nats_auth_sessions_credential_id ON " + SessionsTable + " (" + SessionCredColumn + ")"}
		if haveMeta {
			post = meta.Indexes
		}
	default:
		if _, err := tx.ExecContext(ctx, "ALTER TABLE "+SessionsTable+" ADD COLUMN "+SessionCredColumn+" "+colType); err != nil {
			return err
		}
		if haveMeta {
			post = append(append(post, meta.Constraints...), meta.Indexes...)
		} else {
			post = []string{
				"ALTER TABLE " + SessionsTable + " ADD CONSTRAINT nats_auth_sessions_credential_id_fkey FOREIGN KEY (credential_id) REFERENCES " + LegacyTable + "(id) ON DELETE SET NULL",
				"CREATE INDEX ix_nats_auth_sessions_credential_id ON " + SessionsTable + " (credential_id)",
			}
		}
	}
	st, err := tx.PrepareContext(ctx, m.q("UPDATE "+SessionsTable+" SET "+SessionCredColumn+" = ? WHERE id = ?"))
	if err != nil {
		return err
	}
	defer st.Close()
	restorable := info.Source == "backup"
	for _, p := range pairs {
		if !restorable {
			// From users the credential ids are new: restore a reference
			// only where that id exists and belongs to the session's user.
			var n int
			if err := tx.QueryRowContext(ctx, m.q("SELECT count(*) FROM "+LegacyTable+" c JOIN "+SessionsTable+" s ON s.user_id = c.user_id WHERE c.id = ? AND s.id = ?"), p[1], p[0]).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				continue
			}
		}
		res, err := st.ExecContext(ctx, p[1], p[0])
		if err != nil {
			return err
		}
		k, _ := res.RowsAffected()
		info.Sessions += k
	}
	for _, s := range post {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("recreating the credential_id constraints: %w", err)
		}
	}
	// Round trip: every restored pair reads back.
	var n int64
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+SessionsTable+" WHERE "+SessionCredColumn+" IS NOT NULL").Scan(&n); err != nil {
		return err
	}
	if n != info.Sessions {
		return errorf("restored %d session references but %d read back", info.Sessions, n)
	}
	return nil
}

func without(list []string, s string) []string {
	var out []string
	for _, v := range list {
		if v != s {
			out = append(out, v)
		}
	}
	return out
}
