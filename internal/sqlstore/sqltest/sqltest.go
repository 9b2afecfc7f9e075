// Package sqltest gives tests a fresh, real mulchat database: a SQLite file in
// the test's temporary directory, or a new PostgreSQL database on the server
// named by MULCHAT_TEST_POSTGRES_URL, created for the test and dropped after
// it. ForEachDB runs one test body on both, so every store behaviour is
// checked on SQLite and PostgreSQL alike.
package sqltest

import (
	"context"
	"crypto/rand"
	"database/sql"
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
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("sqltest: migrate: %v", err)
	}
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

	admin, err := openAdmin(serverURL)
	if err != nil {
		t.Fatalf("sqltest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		admin.Close()
		t.Fatalf("sqltest: create database: %v", err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		// FORCE ends connections a test leaked, so the drop never hangs.
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("sqltest: drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

func openAdmin(serverURL string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(serverURL)
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(1)
	return db, nil
}
