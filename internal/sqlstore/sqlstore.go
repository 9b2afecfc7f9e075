// Package sqlstore is mulchat's one store: it implements mulchat.Store over
// database/sql on SQLite (modernc.org/sqlite, pure Go) and PostgreSQL (pgx v5),
// with identical behaviour on both. The schema is versioned with goose
// migrations embedded per dialect (migrations/sqlite, migrations/postgres), and
// driver errors are translated at this package's edge into mulchat error codes.
//
// See docs/storage.md for the schema and timestamp decisions.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/mulchat/mulchat"
)

// Dialect names returned by (*DB).Dialect.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
)

// Connection pool sizes. SQLite in WAL mode lets readers run beside the one
// writer, so a few connections help reads; write transactions start with
// BEGIN IMMEDIATE and wait on the busy timeout, so concurrent writers queue
// instead of failing with SQLITE_BUSY.
const (
	sqliteMaxConns   = 8
	postgresMaxConns = 16
	// sqliteBusyTimeout is how long a connection waits for SQLite's write
	// lock before giving up with SQLITE_BUSY.
	sqliteBusyTimeout = 10 * time.Second
)

// DB is mulchat's store on one database. It implements mulchat.Store.
type DB struct {
	*queries // the Queries methods, run outside any transaction
	sql      *sql.DB
	dialect  string
	stmts    *stmtCache    // SQLite only; nil on PostgreSQL
	refresh  *refreshGroup // PostgreSQL's same-key refreshes, written in groups; nil on SQLite
	// sqliteRefresh lets one same-key refresh write at a time on SQLite
	// (RefreshUserNATSJWT); nil on PostgreSQL.
	sqliteRefresh chan struct{}
}

var _ mulchat.Store = (*DB)(nil)

// Open connects to the database named by databaseURL: a "postgres://" or
// "postgresql://" URL selects PostgreSQL through pgx; anything else is the
// path of a SQLite file (an optional "sqlite://", "sqlite:", "file://" or
// "file:" prefix is dropped), whose parent directory is created with mode
// 0700 and which is created with mode 0600. Open checks that the database
// answers but does not migrate it; call Migrate or CheckSchema next.
func Open(ctx context.Context, databaseURL string) (*DB, error) {
	if databaseURL == "" {
		return nil, mulchat.Errorf(mulchat.EINVALID, "database URL is empty")
	}
	var (
		db  *DB
		err error
	)
	if strings.HasPrefix(databaseURL, "postgres://") || strings.HasPrefix(databaseURL, "postgresql://") {
		db, err = openPostgres(databaseURL)
	} else {
		db, err = openSQLite(databaseURL)
	}
	if err != nil {
		return nil, err
	}
	if err := db.sql.PingContext(ctx); err != nil {
		db.sql.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("sqlstore: open: %w", ctx.Err())
		}
		return nil, mulchat.WrapError(mulchat.EUNAVAILABLE, err, "cannot connect to the database: "+innermost(err))
	}
	return db, nil
}

// innermost returns the text of the last error in err's chain: the server's
// or the operating system's own reason ("connection refused", "database
// \"x\" does not exist"), which names no secret (pgx redacts passwords from
// its connection errors) and tells the operator what to fix.
func innermost(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

func newDB(sqlDB *sql.DB, dialect string) *DB {
	db := &DB{sql: sqlDB, dialect: dialect}
	if dialect == DialectSQLite {
		db.stmts = newStmtCache(sqlDB)
		db.sqliteRefresh = make(chan struct{}, 1)
	}
	db.queries = &queries{x: db.execer(nil), dialect: dialect, db: db}
	if dialect == DialectPostgres {
		db.refresh = &refreshGroup{q: db.queries}
	}
	return db
}

// execer returns what runs this store's statements: the pool or tx, through
// the statement cache where there is one.
func (db *DB) execer(tx *sql.Tx) execer {
	if db.stmts != nil {
		return stmtExecer{cache: db.stmts, db: db.sql, tx: tx}
	}
	if tx != nil {
		return tx
	}
	return db.sql
}

func openPostgres(databaseURL string) (*DB, error) {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		// pgx redacts the password from its parse errors, but the message
		// shown to the operator names only the problem's kind.
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "invalid PostgreSQL database URL")
	}
	// Every session runs in UTC, so that now() and timestamp casts agree
	// with the UTC times mulchat writes.
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["timezone"] = "UTC"
	sqlDB := stdlib.OpenDB(*cfg)
	sqlDB.SetMaxOpenConns(postgresMaxConns)
	sqlDB.SetMaxIdleConns(postgresMaxConns)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	return newDB(sqlDB, DialectPostgres), nil
}

func openSQLite(databaseURL string) (*DB, error) {
	path := databaseURL
	for _, prefix := range []string{"sqlite://", "sqlite:", "file://", "file:"} {
		if p, ok := strings.CutPrefix(path, prefix); ok {
			path = p
			break
		}
	}
	if path == "" {
		return nil, mulchat.Errorf(mulchat.EINVALID, "SQLite database path is empty")
	}
	// The driver splits its DSN at '?', so a path holding one would be cut.
	if strings.ContainsAny(path, "?\x00") {
		return nil, mulchat.Errorf(mulchat.EINVALID, "SQLite database path must not contain '?' or NUL")
	}
	memory := path == ":memory:"
	if !memory {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, mulchat.WrapError(mulchat.EINVALID, err, "cannot create the database directory")
		}
		// The file holds password hashes and encrypted seeds: create it
		// private. SQLite gives its -wal and -shm files the same mode.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, mulchat.WrapError(mulchat.EINVALID, err, "cannot open the SQLite database file")
		}
		f.Close()
	}
	dsn := path + "?_pragma=busy_timeout(" + fmt.Sprint(sqliteBusyTimeout.Milliseconds()) + ")" +
		"&_pragma=foreign_keys(1)" +
		"&_pragma=synchronous(NORMAL)" +
		"&_txlock=immediate"
	if !memory {
		dsn += "&_pragma=journal_mode(WAL)"
	}
	sqlDB, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot open the SQLite database")
	}
	if memory {
		// Each connection to ":memory:" is its own database: keep exactly
		// one, forever.
		sqlDB.SetMaxOpenConns(1)
		sqlDB.SetMaxIdleConns(1)
	} else {
		sqlDB.SetMaxOpenConns(sqliteMaxConns)
		sqlDB.SetMaxIdleConns(sqliteMaxConns)
	}
	return newDB(sqlDB, DialectSQLite), nil
}

// Dialect returns "sqlite" or "postgres".
func (db *DB) Dialect() string { return db.dialect }

// SQL returns the underlying connection pool, for tools (the credential
// migration, tests) that run their own statements.
func (db *DB) SQL() *sql.DB { return db.sql }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.sql.PingContext(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("sqlstore: ping: %w", ctx.Err())
		}
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "database is unavailable")
	}
	return nil
}

// Close closes the connection pool.
func (db *DB) Close() error {
	if db.stmts != nil {
		db.stmts.close()
	}
	return db.sql.Close()
}

// InTx runs fn in one transaction; see mulchat.Store. On SQLite the
// transaction begins with BEGIN IMMEDIATE (the DSN's _txlock), so it holds the
// write lock from its start and concurrent InTx calls queue on the busy
// timeout.
//
// A statement that fails inside the transaction marks it failed: later
// statements in fn return an error at once and the transaction rolls back even
// if fn returns nil. PostgreSQL aborts a transaction on any error anyway; doing
// the same on SQLite keeps the two databases' behaviour identical.
func (db *DB) InTx(ctx context.Context, fn func(q mulchat.Queries) error) error {
	return db.inTx(ctx, func(q *queries) error { return fn(q) })
}

// inTx is InTx for this package's own code (CreateRoom, feature query files),
// whose fn wants the concrete *queries.
func (db *DB) inTx(ctx context.Context, fn func(q *queries) error) (err error) {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return db.queries.translate(ctx, err, errMsgs{})
	}
	q := &queries{x: db.execer(tx), dialect: db.dialect, db: db, tx: &txState{}}
	committed := false
	defer func() {
		if !committed {
			// The rollback's own error adds nothing: the transaction is
			// gone either way, and err already says why.
			_ = tx.Rollback()
		}
	}()
	if err := fn(q); err != nil {
		return err
	}
	if failed := q.tx.failed.Load(); failed != nil {
		return mulchat.WrapError(mulchat.EINTERNAL, *failed, "transaction rolled back: a statement in it failed")
	}
	if err := tx.Commit(); err != nil {
		committed = true // a failed commit ends the transaction too
		if errors.Is(err, sql.ErrTxDone) {
			return mulchat.WrapError(mulchat.EINTERNAL, err, "transaction already ended")
		}
		return db.queries.translate(ctx, err, errMsgs{})
	}
	committed = true
	return nil
}
