package credmigrate

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mulchat/mulchat"
)

// PostgreSQL advisory lock keys ("mulchat\x01" and "mulchat\x02" as
// big-endian integers), so they cannot collide with the application's.
//
// Two keys, because a SIGKILLed client leaves two kinds of backend behind:
// its idle connections, which PostgreSQL closes (releasing their locks) as
// soon as it reads the socket's EOF, and the backend that was running a
// statement, which goes on until the statement ends — and may commit it. A
// session lock on a dedicated connection (runLockKey) keeps live runs apart
// but is released by the first kind right away, so it cannot wait for the
// second. Every transaction of the migration therefore also holds
// workLockKey shared; a new run, once it holds runLockKey, takes workLockKey
// exclusively for an instant, which waits until no backend of an earlier
// run is still working.
const (
	runLockKey  int64 = 0x6d756c6368617401
	workLockKey int64 = 0x6d756c6368617402
)

// DefaultLockWait is how long a writing command waits for another one
// working on the same database before it gives up.
const DefaultLockWait = 10 * time.Minute

// ErrLocked is returned (wrapped, with code ECONFLICT) when another
// credential migration command still holds the database after the wait.
var ErrLocked = errors.New("another credential migration command is working on this database")

// runLock is held for the whole of a writing command (nats-credentials, drop,
// rollback, adopt, nsc import). On PostgreSQL it is a session-level advisory
// lock on a connection of its own; on SQLite, which serializes writers but
// not commands made of many transactions, an exclusive flock on a file next
// to the database (the kernel releases it when the process dies).
type runLock struct {
	conn *sql.Conn
	file *os.File
}

// acquireRunLock takes the run lock of db, waiting up to wait (0: the
// default; negative: not at all) and saying so on log while it waits.
func acquireRunLock(ctx context.Context, db *sql.DB, dialect string, wait time.Duration, log *slog.Logger) (*runLock, error) {
	if wait == 0 {
		wait = DefaultLockWait
	}
	wait = max(wait, 0)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dialect == SQLite {
		return acquireFileLock(ctx, db, wait, log)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, internal(err, "connecting for the migration lock")
	}
	l := &runLock{conn: conn}
	if err := l.pgAcquire(ctx, wait, log); err != nil {
		discard(conn) // it may hold a lock the failure left behind
		return nil, err
	}
	return l, nil
}

// discard closes conn's session instead of returning it to the pool, so no
// advisory lock can outlive the command on a pooled connection.
func discard(conn *sql.Conn) {
	conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

func (l *runLock) pgAcquire(ctx context.Context, wait time.Duration, log *slog.Logger) error {
	deadline := time.Now().Add(wait)
	var got bool
	if err := l.conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", runLockKey).Scan(&got); err != nil {
		return internal(err, "taking the migration lock")
	}
	if !got {
		holder := l.pgHolders(ctx, runLockKey)
		if wait == 0 {
			return mulchat.WrapError(mulchat.ECONFLICT, ErrLocked, fmt.Sprintf("%v (%s); not waiting", ErrLocked, holder))
		}
		log.Warn("credential migration: another credential migration command is working on this database; waiting for it to finish",
			"holder", holder, "max_wait", wait)
		if err := l.pgWait(ctx, runLockKey, time.Until(deadline)); err != nil {
			return l.waitErr(err, wait, fmt.Sprintf("%v (%s)", ErrLocked, holder))
		}
		log.Info("credential migration: the other command finished; continuing")
	}
	// Backends of a killed run may still be executing (and about to commit)
	// a statement: wait until none holds workLockKey.
	if err := l.conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", workLockKey).Scan(&got); err != nil {
		return internal(err, "waiting for an interrupted run")
	}
	if !got {
		holder := l.pgHolders(ctx, workLockKey)
		log.Warn("credential migration: the database is still running statements of an interrupted run; waiting for them to end",
			"backends", holder, "max_wait", wait)
		if err := l.pgWait(ctx, workLockKey, max(time.Until(deadline), time.Second)); err != nil {
			return l.waitErr(err, wait, "statements of an interrupted credential migration are still running ("+holder+")")
		}
	}
	if _, err := l.conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", workLockKey); err != nil {
		return internal(err, "waiting for an interrupted run")
	}
	return nil
}

// pgWait blocks on the advisory lock key, bounded by lock_timeout.
func (l *runLock) pgWait(ctx context.Context, key int64, d time.Duration) error {
	if _, err := l.conn.ExecContext(ctx, fmt.Sprintf("SET lock_timeout = %d", max(d.Milliseconds(), 1))); err != nil {
		return err
	}
	_, err := l.conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", key)
	if _, rerr := l.conn.ExecContext(context.WithoutCancel(ctx), "RESET lock_timeout"); err == nil {
		err = rerr
	}
	return err
}

func (l *runLock) waitErr(err error, wait time.Duration, what string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
		return mulchat.WrapError(mulchat.ECONFLICT, ErrLocked, fmt.Sprintf("gave up after waiting %v: %s", wait, what))
	}
	return internal(err, "waiting for the migration lock")
}

// pgHolders describes the backends holding key, for the waiting message.
func (l *runLock) pgHolders(ctx context.Context, key int64) string {
	var s sql.NullString
	l.conn.QueryRowContext(ctx, `SELECT string_agg(format('backend pid %s (%s, %s since %s)', a.pid, coalesce(nullif(a.application_name, ''), 'no application name'),
	CASE WHEN a.xact_start IS NULL THEN 'connected' ELSE 'in a transaction' END,
	to_char(coalesce(a.xact_start, a.backend_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')), '; ')
FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid
WHERE k.locktype = 'advisory' AND k.granted AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND k.classid = ($1::bigint >> 32)::oid AND k.objid = ($1::bigint & 4294967295)::oid AND k.objsubid = 1`, key).Scan(&s)
	if !s.Valid {
		return "holder unknown"
	}
	return s.String
}

// release gives the lock up; a process that dies releases it too (its
// connection closes, or the kernel drops its flock).
func (l *runLock) release() {
	if l == nil {
		return
	}
	if l.conn != nil {
		var unlocked bool
		err := l.conn.QueryRowContext(context.Background(), "SELECT pg_advisory_unlock($1)", runLockKey).Scan(&unlocked)
		if err != nil || !unlocked {
			discard(l.conn)
		} else {
			l.conn.Close()
		}
	}
	if l.file != nil {
		l.file.Close() // closing the descriptor drops the flock
	}
}

// acquireFileLock locks <database file>.credmigrate.lock. An in-memory
// database has no file and no other process to exclude.
func acquireFileLock(ctx context.Context, db *sql.DB, wait time.Duration, log *slog.Logger) (*runLock, error) {
	var seq int
	var name, file string
	if err := db.QueryRowContext(ctx, "SELECT seq, name, file FROM pragma_database_list WHERE name = 'main'").Scan(&seq, &name, &file); err != nil {
		return nil, internal(err, "locating the database file")
	}
	if file == "" {
		return &runLock{}, nil
	}
	path := file + ".credmigrate.lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "creating the migration lock file next to the database")
	}
	ok, err := tryFlock(f)
	if err != nil {
		f.Close()
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "locking "+path)
	}
	if !ok {
		if wait == 0 {
			f.Close()
			return nil, mulchat.WrapError(mulchat.ECONFLICT, ErrLocked, fmt.Sprintf("%v (%s is locked); not waiting", ErrLocked, path))
		}
		log.Warn("credential migration: another credential migration command is working on this database; waiting for it to finish",
			"lock_file", path, "max_wait", wait)
		deadline := time.Now().Add(wait)
		for !ok {
			if time.Now().After(deadline) {
				f.Close()
				return nil, mulchat.WrapError(mulchat.ECONFLICT, ErrLocked, fmt.Sprintf("gave up after waiting %v: %v (%s is locked)", wait, ErrLocked, path))
			}
			select {
			case <-ctx.Done():
				f.Close()
				return nil, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			if ok, err = tryFlock(f); err != nil {
				f.Close()
				return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "locking "+path)
			}
		}
		log.Info("credential migration: the other command finished; continuing")
	}
	return &runLock{file: f}, nil
}
