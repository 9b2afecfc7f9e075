// Package sqltest gives tests a fresh, real mulchat database: a SQLite file in
// the test's temporary directory, or a new PostgreSQL database on the server
// named by MULCHAT_TEST_POSTGRES_URL, created for the test and dropped after
// it. ForEachDB runs one test body on both, so every store behaviour is
// checked on SQLite and PostgreSQL alike.
package sqltest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/testenv"
)

// setupTimeout bounds creating, migrating and dropping a test database.
const setupTimeout = time.Minute

// OpenSQLite returns a migrated SQLite database in t.TempDir(), closed when
// the test ends.
func OpenSQLite(t testing.TB) *sqlstore.DB {
	t.Helper()
	return openMigrated(t, filepath.Join(t.TempDir(), "mulchat.db"))
}

// OpenPostgres returns a migrated PostgreSQL database created for this test
// (mulchat_test_<random>) on the server of MULCHAT_TEST_POSTGRES_URL, closed
// and dropped when the test ends. Without that variable the test is skipped
// (see testenv.PostgresURL).
func OpenPostgres(t testing.TB) *sqlstore.DB {
	t.Helper()
	return openMigrated(t, NewPostgresDatabaseURL(t))
}

func openMigrated(t testing.TB, databaseURL string) *sqlstore.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	db, err := sqlstore.Open(ctx, databaseURL)
	if err != nil {
		t.Fatalf("sqltest: open: %v", err)
	}
	// Registered after NewPostgresDatabaseURL's drop, so it runs before it.
	t.Cleanup(func() { db.Close() })
	// Tests open many databases, possibly in parallel: keep few idle
	// connections to each.
	db.SQL().SetMaxIdleConns(2)
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("sqltest: migrate: %v", err)
	}
	return db
}

// ServePool gives db back the connection pool `serve` runs with (as many
// idle connections as open ones), undoing the test helpers' small idle
// limit. Benchmarks with concurrent clients need it: with two idle
// connections kept, every request beyond two opens a new connection (a
// process fork on PostgreSQL) and the figure measures connection set-up.
func ServePool(db *sqlstore.DB) *sqlstore.DB {
	db.SQL().SetMaxIdleConns(db.SQL().Stats().MaxOpenConnections)
	return db
}

// ForEachDB runs fn as the subtests "sqlite" and "postgres", each on its own
// fresh migrated database. The postgres subtest skips when
// MULCHAT_TEST_POSTGRES_URL is unset.
func ForEachDB(t *testing.T, fn func(t *testing.T, db *sqlstore.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, OpenSQLite(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, OpenPostgres(t)) })
}

// NewPostgresDatabaseURL creates an empty PostgreSQL database on the server of
// MULCHAT_TEST_POSTGRES_URL and returns its URL; the database is dropped when
// the test ends (after any cleanup registered later, such as closing a
// connection to it). It skips like testenv.PostgresURL.
func NewPostgresDatabaseURL(t testing.TB) string {
	t.Helper()
	serverURL := testenv.PostgresURL(t)
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatalf("sqltest: MULCHAT_TEST_POSTGRES_URL: %v", err)
	}
	var b [8]byte
	rand.Read(b[:])
	name := "mulchat_test_" + hex.EncodeToString(b[:])

	if err := adminExec(serverURL, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("sqltest: create database: %v", err)
	}
	t.Cleanup(func() {
		// FORCE ends connections a test leaked, so the drop never hangs.
		if err := adminExec(serverURL, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("sqltest: drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// adminExec runs one statement on the server's maintenance database, on a
// connection opened for it alone: tests hold no idle admin connections, since
// many test databases may exist at once and the server's connections are few.
func adminExec(serverURL, statement string) error {
	cfg, err := pgx.ParseConfig(serverURL)
	if err != nil {
		return err
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	_, err = db.ExecContext(ctx, statement)
	return err
}
