// Package credmigrate moves a legacy Mul-Chat database from its credential
// layout (a nats_user_credentials table, referenced by
// nats_auth_sessions.credential_id) to mulchat's (the seven users.nats_*
// columns), verified and reversible: adopt the legacy schema, plan, copy in
// checkpointed batches, verify field by field, scrub secrets left in clear,
// back up and drop what the new layout no longer needs, and roll it all back
// from a backup.
//
// Everything works on a *sql.DB of either dialect ("sqlite", "postgres") so
// that the commands, the tests and the benchmarks share one implementation.
// See docs/credential-migration.md for the procedure and its decisions.
package credmigrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mulchat/mulchat"
)

// Dialects.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Conflict policies for a user whose users.nats_* columns already hold a
// different credential than the legacy table's newest row.
const (
	OnConflictNewest = "newest" // keep whichever was issued later (default)
	OnConflictLegacy = "legacy" // the legacy row always wins
	OnConflictFail   = "fail"   // refuse to migrate while any such user exists
)

// Table and column names the migration relies on.
const (
	LegacyTable       = "nats_user_credentials"
	SessionsTable     = "nats_auth_sessions"
	SessionCredColumn = "credential_id"
	// checkpointTable records how far the copy got, so a killed run resumes.
	checkpointTable = "mulchat_credmigrate_checkpoint"
	// sessionBackupTable keeps nats_auth_sessions (id, credential_id), written
	// and verified in the transaction that drops the column.
	sessionBackupTable = "mulchat_credmigrate_session_credentials"
	// baselineTable records what adopt found.
	baselineTable = "mulchat_legacy_baseline"
	// userIndex is the index on nats_user_credentials(user_id) the batches
	// need; the legacy schema had none.
	userIndex = "mulchat_credmigrate_user_id_idx"
)

// Options configure a Migrator. The zero value of each field has a working
// default.
type Options struct {
	Logger     *slog.Logger
	BatchSize  int    // users per batch; default 2000
	OnConflict string // OnConflict*; default newest
	DryRun     bool
	// Debug logs every per-user decision (at debug level, without secrets).
	Debug bool
	// Progress receives a progress line with ETA, rewritten in place; nil for
	// none. The command passes stderr only when it is a terminal.
	Progress io.Writer
	// LockTimeout and StatementTimeout bound every statement on PostgreSQL so
	// the migration never queues behind the application for long; a batch
	// that hits either is retried. Defaults 2 s and 60 s.
	LockTimeout      time.Duration
	StatementTimeout time.Duration
	// Retries is how many times a batch is retried after a lock or statement
	// timeout (or SQLITE_BUSY); default 10.
	Retries int
	// HashPassword turns a plaintext legacy password into a PHC string;
	// default password.Hash (argon2id).
	HashPassword func(string) (string, error)
	Now          func() time.Time
	// KeepSessionColumn skips the backup and removal of
	// nats_auth_sessions.credential_id (a rerun without it does them). On
	// SQLite the removal rebuilds the table and holds the write lock while it
	// does (about 6 s per 700 000 sessions here): schedule it.
	KeepSessionColumn bool
	// BatchHook, when set, runs after each committed copy batch, in user-id
	// order (tests use it to write concurrently between batches). On
	// PostgreSQL the next batch may be running, and may commit, meanwhile
	// (see copyPipelined); an error from the hook ends the run after it.
	BatchHook func(ctx context.Context, lastUserID int64) error
	// LockWait is how long a writing command (Run, DropTable, Rollback) waits
	// for another one holding the database's migration lock; default
	// DefaultLockWait, negative: fail at once.
	LockWait time.Duration
}

// Migrator runs the credential migration on one database.
type Migrator struct {
	db      *sql.DB
	dialect string
	opts    Options
	log     *slog.Logger
	// contested are public keys that several users hold or claim (see
	// Precheck); set by Run before the copy.
	contested map[string]bool
	// capturing is set while Run's change capture is installed (SQLite's
	// batches then remove what the trigger recorded of their own writes).
	capturing bool
	// lockHeld is how long SQLite's write lock has been held since the
	// last gap (leaveGap), lockSlice how long it may be (sqliteLockSlice;
	// tests set it); checkpointDeferred, that the last batch's commit left
	// its checkpoint to a later one (checkpointAtSliceEnd).
	lockHeld, lockSlice time.Duration
	checkpointDeferred  bool
}

// New returns a Migrator for db in dialect.
func New(db *sql.DB, dialect string, opts Options) (*Migrator, error) {
	if dialect != SQLite && dialect != Postgres {
		return nil, mulchat.Errorf(mulchat.EINVALID, "unknown dialect %q", dialect)
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = 2000
	}
	if opts.BatchSize < 1 || opts.BatchSize > 100000 {
		return nil, mulchat.Errorf(mulchat.EINVALID, "batch size must be 1 to 100000")
	}
	switch opts.OnConflict {
	case "":
		opts.OnConflict = OnConflictNewest
	case OnConflictNewest, OnConflictLegacy, OnConflictFail:
	default:
		return nil, mulchat.Errorf(mulchat.EINVALID, "--on-conflict must be newest, legacy or fail")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if opts.StatementTimeout == 0 {
		opts.StatementTimeout = 60 * time.Second
	}
	if opts.LockTimeout < time.Millisecond || opts.StatementTimeout < time.Millisecond {
		// PostgreSQL takes whole milliseconds, and 0 turns a timeout off.
		return nil, mulchat.Errorf(mulchat.EINVALID, "lock and statement timeouts must be at least 1ms")
	}
	if opts.Retries == 0 {
		opts.Retries = 10
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HashPassword == nil {
		opts.HashPassword = defaultHash
	}
	return &Migrator{db: db, dialect: dialect, opts: opts, log: opts.Logger, lockSlice: sqliteLockSlice}, nil
}

// ph returns the n-th (1-based) placeholder of the dialect.
func (m *Migrator) ph(n int) string {
	if m.dialect == Postgres {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}

// q rewrites "?" placeholders to the dialect's.
func (m *Migrator) q(s string) string {
	if m.dialect != Postgres {
		return s
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// inTx runs fn in one transaction. On PostgreSQL the transaction carries
// lock_timeout and statement_timeout; a failure from either (or a
// serialization failure, or SQLITE_BUSY) rolls back and retries fn with
// backoff. commit false rolls back even when fn succeeds (dry runs).
func (m *Migrator) inTx(ctx context.Context, commit bool, fn func(tx *sql.Tx) error) error {
	return m.retryTx(ctx, nil, commit, fn)
}

// inReadTx is inTx for a transaction that only reads, always rolled back.
// On SQLite it takes no write lock (mulchat opens SQLite so that every
// other transaction begins IMMEDIATE), so a verification pass never holds
// up the application's writes.
func (m *Migrator) inReadTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return m.retryTx(ctx, &sql.TxOptions{ReadOnly: true}, false, fn)
}

func (m *Migrator) retryTx(ctx context.Context, opts *sql.TxOptions, commit bool, fn func(tx *sql.Tx) error) error {
	var err error
	for attempt := 0; ; attempt++ {
		err = m.tryTx(ctx, opts, commit, fn)
		if err == nil || !retryable(err) || attempt >= m.opts.Retries {
			return err
		}
		wait := time.Duration(50<<min(attempt, 6)) * time.Millisecond
		m.log.Warn("credential migration: transaction hit a lock or timeout, retrying", "attempt", attempt+1, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

func (m *Migrator) tryTx(ctx context.Context, opts *sql.TxOptions, commit bool, fn func(tx *sql.Tx) error) error {
	tx, err := m.beginTx(ctx, opts)
	if err != nil {
		return err
	}
	return endTx(tx, commit, fn)
}

// sqlitePragmas are set on each SQLite connection a migration transaction
// runs on. A batch touches more pages than SQLite's default 2 MB cache
// holds (its users' rows, and most leaves of the random-keyed
// nats_public_key index), so without a larger cache it writes pages to the
// WAL in the middle of the transaction and again at its commit; and as
// another connection's commit empties a connection's cache, every batch
// reads its pages again, which a memory map makes cheaper than a read call
// each. 128 MB of cache and a map of the file's first 2 GB (the most
// SQLite's build allows): the copy ran about 8 % faster at 200 000 users
// (BENCHMARKS.md, session 5). They also set SQLite's default automatic
// checkpoint, which a copy batch may have turned off on the connection
// (checkpointAtSliceEnd).
const sqlitePragmas = "PRAGMA cache_size = -131072; PRAGMA mmap_size = 2147418112; PRAGMA wal_autocheckpoint = 1000"

// setSQLitePragmas sets sqlitePragmas in tx, which it rolls back if that
// fails.
func setSQLitePragmas(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, sqlitePragmas); err != nil {
		tx.Rollback()
		return err
	}
	return nil
}

// beginTx begins a transaction; on PostgreSQL with the migration's lock
// and statement timeouts and its shared work lock, on SQLite with
// sqlitePragmas.
func (m *Migrator) beginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	tx, err := m.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	if m.dialect == SQLite {
		if err := setSQLitePragmas(ctx, tx); err != nil {
			return nil, err
		}
	}
	if m.dialect == Postgres {
		// workLockKey shared: a later run waits until this transaction has
		// ended even if this process is killed meanwhile (see lock.go).
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d; SET LOCAL statement_timeout = %d; SELECT pg_advisory_xact_lock_shared(%d)",
			m.opts.LockTimeout.Milliseconds(), m.opts.StatementTimeout.Milliseconds(), workLockKey)); err != nil {
			tx.Rollback()
			return nil, err
		}
	}
	return tx, nil
}

// endTx runs fn in tx and commits (commit set) or rolls back; a failing fn
// rolls back.
func endTx(tx *sql.Tx, commit bool, fn func(tx *sql.Tx) error) error {
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if !commit {
		return tx.Rollback()
	}
	return tx.Commit()
}

// retryable reports whether err is a lock timeout, statement timeout,
// deadlock or serialization failure (PostgreSQL) or SQLITE_BUSY.
func retryable(err error) bool {
	if errors.Is(err, errBatchRaced) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "55P03", "57014", "40001", "40P01":
			return true
		}
		return false
	}
	s := err.Error()
	return strings.Contains(s, "SQLITE_BUSY") || strings.Contains(s, "database is locked")
}

// queryer is what both *sql.DB and *sql.Tx offer.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// tableExists reports whether table exists.
func tableExists(ctx context.Context, q queryer, dialect, table string) (bool, error) {
	var n int
	var err error
	if dialect == SQLite {
		err = q.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", table).Scan(&n)
	} else {
		err = q.QueryRowContext(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1", table).Scan(&n)
	}
	return n > 0, err
}

// columns returns the column names of table, in order.
func columns(ctx context.Context, q queryer, dialect, table string) ([]string, error) {
	var rows *sql.Rows
	var err error
	if dialect == SQLite {
		rows, err = q.QueryContext(ctx, "SELECT name FROM pragma_table_info(?) ORDER BY cid", table)
	} else {
		rows, err = q.QueryContext(ctx, "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position", table)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

func hasColumn(ctx context.Context, q queryer, dialect, table, column string) (bool, error) {
	cols, err := columns(ctx, q, dialect, table)
	if err != nil {
		return false, err
	}
	for _, c := range cols {
		if c == column {
			return true, nil
		}
	}
	return false, nil
}

// internal wraps a database error for the CLI.
func internal(err error, what string) error {
	if err == nil {
		return nil
	}
	var me *mulchat.Error
	if errors.As(err, &me) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return mulchat.WrapError(mulchat.EINTERNAL, err, what)
}

func errorf(format string, args ...any) error {
	return mulchat.Errorf(mulchat.EINTERNAL, format, args...)
}

func errInvalid(msg string) error  { return mulchat.Errorf(mulchat.EINVALID, "%s", msg) }
func errNotFound(msg string) error { return mulchat.Errorf(mulchat.ENOTFOUND, "%s", msg) }
func errConflict(msg string) error { return mulchat.Errorf(mulchat.ECONFLICT, "%s", msg) }

func errInvalidWrap(err error, msg string) error {
	return mulchat.WrapError(mulchat.EINVALID, err, msg)
}
