package credmigrate

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// metaTable keeps what the drop of nats_auth_sessions.credential_id removed
// (the definitions of the column, its foreign key and indexes), so that the
// rollback recreates exactly that.
const metaTable = "mulchat_credmigrate_meta"

// SessionColumn reports the backup and removal of
// nats_auth_sessions.credential_id.
type SessionColumn struct {
	AlreadyDropped bool     `json:"already_dropped,omitempty"`
	BackedUp       int64    `json:"backed_up_rows"`
	Digest         string   `json:"digest"`
	Rebuilt        bool     `json:"sqlite_table_rebuilt,omitempty"`
	DroppedIndexes []string `json:"dropped_indexes,omitempty"`
	// ForeignKeyViolations is PRAGMA foreign_key_check's count after the
	// rebuild (SQLite); any not present before fails the drop.
	ForeignKeyViolations int64 `json:"foreign_key_violations,omitempty"`
}

// sessionMeta is what metaTable records about the dropped column.
type sessionMeta struct {
	ColumnType  string   `json:"column_type"`
	Constraints []string `json:"constraints,omitempty"` // PostgreSQL: "ALTER TABLE … ADD CONSTRAINT …"
	Indexes     []string `json:"indexes,omitempty"`     // CREATE INDEX statements
	CreateSQL   string   `json:"create_sql,omitempty"`  // SQLite: the table's CREATE TABLE before the drop
	Columns     []string `json:"columns,omitempty"`     // the columns before the drop
}

func (m *Migrator) ensureMetaTables(ctx context.Context, q queryer) error {
	if _, err := q.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+metaTable+" (name TEXT PRIMARY KEY, value TEXT NOT NULL)"); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+sessionBackupTable+" (session_id BIGINT PRIMARY KEY, credential_id BIGINT NOT NULL)")
	return err
}

func (m *Migrator) putMeta(ctx context.Context, q queryer, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := q.ExecContext(ctx, m.q("DELETE FROM "+metaTable+" WHERE name = ?"), name); err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, m.q("INSERT INTO "+metaTable+" (name, value) VALUES (?, ?)"), name, string(b))
	return err
}

func (m *Migrator) getMeta(ctx context.Context, q queryer, name string, v any) (bool, error) {
	if ok, err := tableExists(ctx, q, m.dialect, metaTable); err != nil || !ok {
		return false, err
	}
	var s string
	err := q.QueryRowContext(ctx, m.q("SELECT value FROM "+metaTable+" WHERE name = ?"), name).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, json.Unmarshal([]byte(s), v)
}

// pairDigest hashes (id, credential_id) pairs read in id order.
func pairDigest(ctx context.Context, q queryer, query string) (string, int64, error) {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return "", 0, err
	}
	defer rows.Close()
	h := sha256.New()
	var n int64
	var buf [16]byte
	for rows.Next() {
		var id, cred int64
		if err := rows.Scan(&id, &cred); err != nil {
			return "", 0, err
		}
		binary.BigEndian.PutUint64(buf[:8], uint64(id))
		binary.BigEndian.PutUint64(buf[8:], uint64(cred))
		h.Write(buf[:])
		n++
	}
	return hex.EncodeToString(h.Sum(nil)), n, rows.Err()
}

const (
	sourcePairs = "SELECT id, credential_id FROM " + SessionsTable + " WHERE credential_id IS NOT NULL ORDER BY id"
	backupPairs = "SELECT session_id, credential_id FROM " + sessionBackupTable + " ORDER BY session_id"
)

// backupSessionPairs copies (id, credential_id) into the backup table and
// verifies the copy, inside tx.
func (m *Migrator) backupSessionPairs(ctx context.Context, tx queryer, r *SessionColumn) error {
	if err := m.ensureMetaTables(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM "+sessionBackupTable); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO "+sessionBackupTable+" (session_id, credential_id) "+
		"SELECT id, credential_id FROM "+SessionsTable+" WHERE credential_id IS NOT NULL"); err != nil {
		return err
	}
	src, n, err := pairDigest(ctx, tx, sourcePairs)
	if err != nil {
		return err
	}
	ok, err := m.backupMatches(ctx, tx, n)
	if err != nil {
		return err
	}
	if !ok {
		return errorf("the backup of nats_auth_sessions.credential_id does not match its source")
	}
	r.BackedUp, r.Digest = n, src
	return nil
}

// backupMatches reports whether the backup table holds exactly the n
// (id, credential_id) pairs the table holds (the caller knows the table's
// count): n of them, each in the table (session ids are unique on both
// sides). Checked in the database rather than by reading every pair again.
// (NOT EXISTS in WHERE, where PostgreSQL plans an anti-join; inside an
// aggregate's FILTER it would probe the index once per pair.)
func (m *Migrator) backupMatches(ctx context.Context, tx queryer, n int64) (bool, error) {
	var k, missing int64
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+sessionBackupTable).Scan(&k); err != nil {
		return false, err
	}
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+sessionBackupTable+" b WHERE NOT EXISTS (SELECT 1 FROM "+SessionsTable+
		" s WHERE s.id = b.session_id AND s.credential_id = b.credential_id)").Scan(&missing); err != nil {
		return false, err
	}
	return missing == 0 && k == n, nil
}

// DropSessionCredentialColumn backs up nats_auth_sessions (id,
// credential_id) into a table of its own, verifies the backup, and drops the
// column, all in one transaction. On SQLite, which refuses DROP COLUMN for an
// indexed column or one in a foreign key, the table is rebuilt without it
// (with foreign keys off for the rebuild and PRAGMA foreign_key_check
// after). The caller must have verified the credential migration first.
func (m *Migrator) DropSessionCredentialColumn(ctx context.Context) (*SessionColumn, error) {
	r := &SessionColumn{}
	ok, err := hasColumn(ctx, m.db, m.dialect, SessionsTable, SessionCredColumn)
	if err != nil {
		return nil, internal(err, "reading nats_auth_sessions")
	}
	if !ok {
		r.AlreadyDropped = true
		return r, nil
	}
	if m.dialect == Postgres {
		err = m.inTx(ctx, !m.opts.DryRun, func(tx *sql.Tx) error {
			*r = SessionColumn{}
			if err := m.backupSessionPairs(ctx, tx, r); err != nil {
				return err
			}
			meta, err := m.pgSessionMeta(ctx, tx)
			if err != nil {
				return err
			}
			if err := m.putMeta(ctx, tx, "sessions", meta); err != nil {
				return err
			}
			// RESTRICT: a view or other object using the column stops the
			// drop instead of disappearing with it. The column's own foreign
			// key and indexes go with it (recorded above).
			_, err = tx.ExecContext(ctx, "ALTER TABLE "+SessionsTable+" DROP COLUMN "+SessionCredColumn+" RESTRICT")
			return err
		})
		if err != nil {
			return nil, internal(err, "dropping nats_auth_sessions.credential_id")
		}
		return r, nil
	}
	// On SQLite the removal rebuilds the table under the write lock, which
	// every application write then waits for: what can be done before it is.
	// The backup is copied in short transactions and verified, and the
	// foreign-key violations already there are counted, outside the lock;
	// inside it the session change log tells whether the backup still
	// matches the table (else it is redone there).
	fkTables, err := fkTablesOf(ctx, m.db, SessionsTable)
	if err != nil {
		return nil, internal(err, "reading foreign keys")
	}
	// The count only reads, on a connection of its own (WAL): it runs
	// while the backup is staged.
	var before int64
	fkDone := make(chan error, 1)
	go func() {
		fkDone <- m.inReadTx(ctx, func(tx *sql.Tx) (err error) {
			before, err = fkViolations(ctx, tx, fkTables)
			return err
		})
	}()
	staged, err := m.stageSessionBackup(ctx)
	fkErr := <-fkDone
	if err == nil && fkErr != nil {
		err = fkErr
	}
	if err != nil {
		m.removeSessionLog(ctx)
		return nil, internal(err, "backing up nats_auth_sessions.credential_id")
	}
	if err := m.sqliteNoFK(ctx, !m.opts.DryRun, func(tx *sql.Tx) error {
		*r = SessionColumn{}
		if err := m.checkStagedBackup(ctx, tx, staged, r); err != nil {
			return err
		}
		meta, err := m.sqliteTableMeta(ctx, tx, SessionsTable)
		if err != nil {
			return err
		}
		r.DroppedIndexes = append(r.DroppedIndexes, meta.Indexes...)
		if err := m.putMeta(ctx, tx, "sessions", meta); err != nil {
			return err
		}
		if err := m.sqliteRemoveColumn(ctx, tx, meta, r); err != nil {
			return err
		}
		after, err := fkViolations(ctx, tx, fkTables)
		if err != nil {
			return err
		}
		r.ForeignKeyViolations = after
		if after > before {
			// New, or written by the application since they were counted:
			// nothing is dropped either way, and a rerun counts again.
			return errorf("PRAGMA foreign_key_check reports %d more violations after rebuilding %s than before it; nothing was changed, run the command again", after-before, SessionsTable)
		}
		return nil
	}); err != nil {
		m.removeSessionLog(ctx)
		return nil, internal(err, "dropping nats_auth_sessions.credential_id")
	}
	return r, nil
}

// sqliteRemoveColumn drops the credential column in tx: with the plain
// statement where SQLite allows it, else (an indexed column, or one in a
// foreign key, as the legacy column is) by rebuilding the table.
func (m *Migrator) sqliteRemoveColumn(ctx context.Context, tx *sql.Tx, meta *sessionMeta, r *SessionColumn) error {
	if _, err := tx.ExecContext(ctx, "SAVEPOINT drop_column"); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "ALTER TABLE "+SessionsTable+" DROP COLUMN "+SessionCredColumn); err == nil {
		_, err := tx.ExecContext(ctx, "RELEASE drop_column")
		return err
	}
	if _, err := tx.ExecContext(ctx, "ROLLBACK TO drop_column"); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "RELEASE drop_column"); err != nil {
		return err
	}
	newSQL, ok := withoutColumn(meta.CreateSQL, SessionsTable, SessionCredColumn)
	if !ok {
		return errorf("cannot rewrite the definition of %s without %s", SessionsTable, SessionCredColumn)
	}
	var keep []string
	for _, c := range meta.Columns {
		if c != SessionCredColumn {
			keep = append(keep, c)
		}
	}
	if err := m.sqliteRebuild(ctx, tx, SessionsTable, newSQL, keep, func(ixSQL string) bool { return !mentions(ixSQL, SessionCredColumn) }); err != nil {
		return err
	}
	r.Rebuilt = true
	return nil
}

// stagedBackup is the session backup copied and verified before the
// removal's transaction (SQLite): its row count and digest, and the count of
// the session change log when the copy began.
type stagedBackup struct {
	n       int64
	digest  string
	changes int64
}

// The session change log (SQLite): while the backup is staged and until the
// removal's transaction, triggers on nats_auth_sessions count every insert,
// update or delete that can change its (id, credential_id) pairs in
// sessionLogTable. The removal's transaction then knows from one row whether
// the staged backup, verified outside the write lock, still matches the
// table. The triggers and the table go in that transaction, or after a
// removal that failed, or in a rollback (removeSessionLog); a killed run
// leaves them (they count and do nothing else) for the next run to reuse
// and remove.
const (
	sessionLogTable   = "mulchat_credmigrate_session_log"
	sessionLogTrigger = "mulchat_credmigrate_session_log"
)

// startSessionLog creates the change log (idempotent) and returns its count.
func startSessionLog(ctx context.Context, tx *sql.Tx) (int64, error) {
	bump := " BEGIN UPDATE " + sessionLogTable + " SET n = n + 1; END"
	for _, stmt := range []string{
		"CREATE TABLE IF NOT EXISTS " + sessionLogTable + " (n INTEGER NOT NULL)",
		"INSERT INTO " + sessionLogTable + " (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM " + sessionLogTable + ")",
		"CREATE TRIGGER IF NOT EXISTS " + sessionLogTrigger + "_ins AFTER INSERT ON " + SessionsTable + " WHEN NEW." + SessionCredColumn + " IS NOT NULL" + bump,
		"CREATE TRIGGER IF NOT EXISTS " + sessionLogTrigger + "_upd AFTER UPDATE ON " + SessionsTable +
			" WHEN OLD.id IS NOT NEW.id OR OLD." + SessionCredColumn + " IS NOT NEW." + SessionCredColumn + bump,
		"CREATE TRIGGER IF NOT EXISTS " + sessionLogTrigger + "_del AFTER DELETE ON " + SessionsTable + " WHEN OLD." + SessionCredColumn + " IS NOT NULL" + bump,
		// INSERT OR REPLACE deletes the row it replaces without firing
		// DELETE triggers (recursive_triggers is off): counted before.
		"CREATE TRIGGER IF NOT EXISTS " + sessionLogTrigger + "_rep BEFORE INSERT ON " + SessionsTable + " WHEN EXISTS (SELECT 1 FROM " +
			SessionsTable + " WHERE id = NEW.id AND " + SessionCredColumn + " IS NOT NULL)" + bump,
	} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return 0, err
		}
	}
	var n int64
	err := tx.QueryRowContext(ctx, "SELECT n FROM "+sessionLogTable).Scan(&n)
	return n, err
}

// endSessionLog removes the change log's triggers and table, in tx,
// returning its count (-1 if there was none). Triggers left without their
// table would make every session write fail: they go in the same
// transaction, and even where the table is already gone.
func endSessionLog(ctx context.Context, tx *sql.Tx) (int64, error) {
	ok, err := tableExists(ctx, tx, SQLite, sessionLogTable)
	if err != nil {
		return 0, err
	}
	n := int64(-1)
	if ok {
		if err := tx.QueryRowContext(ctx, "SELECT n FROM "+sessionLogTable).Scan(&n); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return 0, err
		}
	}
	for _, stmt := range []string{
		"DROP TRIGGER IF EXISTS " + sessionLogTrigger + "_ins",
		"DROP TRIGGER IF EXISTS " + sessionLogTrigger + "_upd",
		"DROP TRIGGER IF EXISTS " + sessionLogTrigger + "_del",
		"DROP TRIGGER IF EXISTS " + sessionLogTrigger + "_rep",
		"DROP TABLE IF EXISTS " + sessionLogTable,
	} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// removeSessionLog removes the session change log after a removal that
// failed (or before a rollback), so that it does not outlive the step that
// needed it. One that cannot be removed is left to the next run, which
// reuses and removes it.
func (m *Migrator) removeSessionLog(ctx context.Context) {
	if m.dialect != SQLite {
		return
	}
	// Also after a removal that failed because ctx ended.
	ctx = context.WithoutCancel(ctx)
	err := m.inTx(ctx, true, func(tx *sql.Tx) error {
		_, err := endSessionLog(ctx, tx)
		return err
	})
	if err != nil {
		m.log.Warn("credential migration: could not remove the session change log; the next run removes it", "table", sessionLogTable, "err", err)
	}
}

// stageSessionBackup starts the session change log, copies (id,
// credential_id) into the backup table in batches of BatchSize×10 sessions,
// each its own short transaction, and verifies the copy: the digests of the
// table's pairs and of the backup's, read beside each other, must be equal.
// It returns nil when they differ (a session changed meanwhile: the removal
// backs up again under its lock) and for a dry run, which stages nothing.
func (m *Migrator) stageSessionBackup(ctx context.Context) (*stagedBackup, error) {
	if m.opts.DryRun {
		return nil, nil
	}
	st := &stagedBackup{}
	if err := m.inTx(ctx, true, func(tx *sql.Tx) (err error) {
		if err := m.ensureMetaTables(ctx, tx); err != nil {
			return err
		}
		if st.changes, err = startSessionLog(ctx, tx); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM "+sessionBackupTable)
		return err
	}); err != nil {
		return nil, err
	}
	var hi sql.NullInt64
	if err := m.db.QueryRowContext(ctx, "SELECT max(id) FROM "+SessionsTable).Scan(&hi); err != nil {
		return nil, err
	}
	step := int64(m.opts.BatchSize) * 10
	for lo := int64(0); hi.Valid && lo < hi.Int64; lo += step {
		start := time.Now()
		err := m.inTx(ctx, true, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO "+sessionBackupTable+" (session_id, credential_id) SELECT id, credential_id FROM "+
				SessionsTable+" WHERE credential_id IS NOT NULL AND id > ? AND id <= ?", lo, lo+step)
			return err
		})
		m.leaveGap(start)
		if err != nil {
			return nil, err
		}
	}
	var src string
	var srcN int64
	srcDone := make(chan error, 1)
	go func() {
		srcDone <- m.inReadTx(ctx, func(tx *sql.Tx) (err error) {
			src, srcN, err = pairDigest(ctx, tx, sourcePairs)
			return err
		})
	}()
	err := m.inReadTx(ctx, func(tx *sql.Tx) (err error) {
		st.digest, st.n, err = pairDigest(ctx, tx, backupPairs)
		return err
	})
	if srcErr := <-srcDone; err == nil {
		err = srcErr
	}
	if err != nil {
		return nil, err
	}
	if src != st.digest || srcN != st.n {
		return nil, nil
	}
	return st, nil
}

// checkStagedBackup, in the removal's transaction, ends the session change
// log and keeps the staged backup if no session changed since its copy
// began; else (or if nothing was staged) it backs the pairs up again in tx
// (backupSessionPairs).
func (m *Migrator) checkStagedBackup(ctx context.Context, tx *sql.Tx, st *stagedBackup, r *SessionColumn) error {
	changes, err := endSessionLog(ctx, tx)
	if err != nil {
		return err
	}
	if st != nil && changes == st.changes {
		r.BackedUp, r.Digest = st.n, st.digest
		return nil
	}
	if st != nil {
		m.log.Info("credential migration: sessions changed since their backup was staged; backing them up again")
	}
	return m.backupSessionPairs(ctx, tx, r)
}

// sqliteNoFK runs fn in a transaction on one connection with foreign keys
// off, as SQLite's table-rebuild procedure requires, and turns them back on.
func (m *Migrator) sqliteNoFK(ctx context.Context, commit bool, fn func(tx *sql.Tx) error) error {
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var fk int
	if err := conn.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA foreign_keys = OFF"); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), fmt.Sprintf("PRAGMA foreign_keys = %d", fk))
	for attempt := 0; ; attempt++ {
		err = func() error {
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			// The rebuild's copy and index builds: with SQLite's default
			// 2 MB cache the copy spills pages before its commit and each
			// index is sorted through temporary files.
			if err := setSQLitePragmas(ctx, tx); err != nil {
				return err
			}
			return endTx(tx, commit, fn)
		}()
		if err == nil || !retryable(err) || attempt >= m.opts.Retries {
			return err
		}
		time.Sleep(time.Duration(50<<min(attempt, 6)) * time.Millisecond)
	}
}

// fkTablesOf returns table and the tables whose foreign keys reference it:
// the only ones a rebuild of table can give new violations (it keeps every
// row and id), so the only ones PRAGMA foreign_key_check needs to read.
func fkTablesOf(ctx context.Context, q queryer, table string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT DISTINCT m.name FROM sqlite_master m, pragma_foreign_key_list(m.name) f
WHERE m.type = 'table' AND lower(f."table") = lower(?) AND m.name <> ? ORDER BY m.name`, table, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{table}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// fkViolations counts PRAGMA foreign_key_check's rows for tables, leaving
// out those of nats_auth_sessions' foreign keys on the credential column
// when the column is still there: the removal takes them away with it, so
// they must not make up for violations it would bring (a count before the
// removal is compared with one after it).
func fkViolations(ctx context.Context, q queryer, tables []string) (int64, error) {
	ids, err := queryIDs(ctx, q, `SELECT id FROM pragma_foreign_key_list(?) WHERE "from" = ?`, SessionsTable, SessionCredColumn)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, t := range tables {
		rows, err := q.QueryContext(ctx, "PRAGMA foreign_key_check("+quoteIdent(t)+")")
		if err != nil {
			return 0, err
		}
		for rows.Next() {
			var table, parent string
			var rowid sql.NullInt64
			var fkid int64
			if err := rows.Scan(&table, &rowid, &parent, &fkid); err != nil {
				rows.Close()
				return 0, err
			}
			if !(strings.EqualFold(table, SessionsTable) && slices.Contains(ids, fkid)) {
				n++
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// sqliteTableMeta records a table's definition, columns and the indexes
// and triggers that mention the credential column.
func (m *Migrator) sqliteTableMeta(ctx context.Context, q queryer, table string) (*sessionMeta, error) {
	meta := &sessionMeta{}
	if err := q.QueryRowContext(ctx, "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", table).Scan(&meta.CreateSQL); err != nil {
		return nil, err
	}
	if err := q.QueryRowContext(ctx, "SELECT type FROM pragma_table_info(?) WHERE name = ?", table, SessionCredColumn).Scan(&meta.ColumnType); err != nil {
		return nil, err
	}
	cols, err := columns(ctx, q, SQLite, table)
	if err != nil {
		return nil, err
	}
	meta.Columns = cols
	rows, err := q.QueryContext(ctx, "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = ? AND sql IS NOT NULL ORDER BY name", table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		if mentions(s, SessionCredColumn) {
			meta.Indexes = append(meta.Indexes, s)
		}
	}
	return meta, rows.Err()
}

// sqliteRebuild replaces table by one created with createSQL (which must
// name the table itself), copying the columns cols, keeping the indexes and
// triggers that keepIndex accepts and the AUTOINCREMENT sequence.
func (m *Migrator) sqliteRebuild(ctx context.Context, tx *sql.Tx, table, createSQL string, cols []string, keepIndex func(string) bool) error {
	var extras []string
	rows, err := tx.QueryContext(ctx, "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = ? AND sql IS NOT NULL ORDER BY type, name", table)
	if err != nil {
		return err
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return err
		}
		if keepIndex(s) {
			extras = append(extras, s)
		}
	}
	rows.Close()
	var seq sql.NullInt64
	if ok, _ := tableExists(ctx, tx, SQLite, "sqlite_sequence"); ok {
		tx.QueryRowContext(ctx, "SELECT seq FROM sqlite_sequence WHERE name = ?", table).Scan(&seq)
	}
	head, _, _, ok := tableBody(createSQL)
	if !ok || !strings.Contains(strings.ToUpper(head), "CREATE TABLE") {
		return errorf("cannot read the definition of %s", table)
	}
	// The old table moves aside and the new one is created under the final
	// name, so its stored definition is exactly createSQL. legacy_alter_table
	// keeps the rename from rewriting other tables' references to table.
	old := "mulchat_old_" + table
	colList := strings.Join(cols, ", ")
	for _, stmt := range []string{
		"PRAGMA legacy_alter_table = ON",
		"ALTER TABLE " + table + " RENAME TO " + old,
		createSQL,
		"INSERT INTO " + table + " (" + colList + ") SELECT " + colList + " FROM " + old,
		"DROP TABLE " + old,
		"PRAGMA legacy_alter_table = OFF",
	} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("rebuilding %s: %w", table, err)
		}
	}
	for _, s := range extras {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("recreating an index of %s: %w", table, err)
		}
	}
	if seq.Valid {
		if _, err := tx.ExecContext(ctx, "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", seq.Int64, table); err != nil {
			return err
		}
	}
	return nil
}

// pgSessionMeta records the credential column's type, constraints and
// indexes on PostgreSQL.
func (m *Migrator) pgSessionMeta(ctx context.Context, q queryer) (*sessionMeta, error) {
	meta := &sessionMeta{}
	if err := q.QueryRowContext(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = $1::regclass AND attname = $2`, SessionsTable, SessionCredColumn).Scan(&meta.ColumnType); err != nil {
		return nil, err
	}
	cols, err := columns(ctx, q, Postgres, SessionsTable)
	if err != nil {
		return nil, err
	}
	meta.Columns = cols
	rows, err := q.QueryContext(ctx, `SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
WHERE c.conrelid = $1::regclass AND a.attname = $2 ORDER BY conname`, SessionsTable, SessionCredColumn)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			rows.Close()
			return nil, err
		}
		meta.Constraints = append(meta.Constraints, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", SessionsTable, quoteIdent(name), def))
	}
	rows.Close()
	rows, err = q.QueryContext(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1 ORDER BY indexname`, SessionsTable)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var def string
		if err := rows.Scan(&def); err != nil {
			return nil, err
		}
		if mentions(def, SessionCredColumn) {
			meta.Indexes = append(meta.Indexes, def)
		}
	}
	return meta, rows.Err()
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
