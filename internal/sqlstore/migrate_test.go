package sqlstore_test

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// forEachEmptyDB runs fn on an empty, unmigrated SQLite file and PostgreSQL
// database.
func forEachEmptyDB(t *testing.T, fn func(t *testing.T, db *sqlstore.DB)) {
	t.Helper()
	open := func(t *testing.T, url string) *sqlstore.DB {
		db, err := sqlstore.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	t.Run("sqlite", func(t *testing.T) { fn(t, open(t, filepath.Join(t.TempDir(), "empty.db"))) })
	t.Run("postgres", func(t *testing.T) { fn(t, open(t, sqltest.NewPostgresDatabaseURL(t))) })
}

func wantMessage(t *testing.T, err error, code, message string) {
	t.Helper()
	wantCode(t, err, code)
	if got := mulchat.ErrorMessage(err); got != message {
		t.Fatalf("message = %q, want %q", got, message)
	}
}

func TestMigrateUpDownStatus(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		mustNil(t, db.CheckSchema(ctx))
		status, err := db.MigrationStatus(ctx)
		mustNil(t, err)
		if len(status) == 0 || status[0].Version != 1 || status[0].Name != "00001_initial.sql" {
			t.Fatalf("status = %+v", status)
		}
		for _, s := range status {
			if !s.Applied || s.AppliedAt.IsZero() {
				t.Fatalf("not applied after Migrate: %+v", s)
			}
		}
		newUser(t, db, "alice")

		// Down all the way: every table goes, and the schema is "older".
		for range status {
			mustNil(t, db.MigrateDown(ctx))
		}
		wantMessage(t, db.MigrateDown(ctx), mulchat.EINVALID, "no migration to roll back")
		status, err = db.MigrationStatus(ctx)
		mustNil(t, err)
		for _, s := range status {
			if s.Applied {
				t.Fatalf("applied after down: %+v", s)
			}
		}
		wantMessage(t, db.CheckSchema(ctx), mulchat.EINVALID,
			"database schema version 0 is older than this mulchat (needs 1): run `mulchat migrate up`")
		if _, err := db.ListUsers(ctx); err == nil {
			t.Fatal("users table survived migrate down")
		}

		// Up again, twice: the second is a no-op.
		mustNil(t, db.Migrate(ctx))
		mustNil(t, db.Migrate(ctx))
		mustNil(t, db.CheckSchema(ctx))
		users, err := db.ListUsers(ctx)
		mustNil(t, err)
		if len(users) != 0 {
			t.Fatalf("users after down/up: %v", usernames(users))
		}
		newUser(t, db, "alice")
	})
}

func TestCheckSchemaRefusesNewerVersion(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		_, err := db.SQL().ExecContext(ctx,
			`INSERT INTO `+sqlstore.GooseTable+` (version_id, is_applied) VALUES ($1, $2)`, int64(99999), true)
		mustNil(t, err)
		const want = "database schema version 99999 is newer than this mulchat (knows up to 1); upgrade mulchat"
		wantMessage(t, db.CheckSchema(ctx), mulchat.EINVALID, want)
		wantMessage(t, db.Migrate(ctx), mulchat.EINVALID, want)
		wantMessage(t, db.MigrateDown(ctx), mulchat.EINVALID, want)
		status, err := db.MigrationStatus(ctx)
		mustNil(t, err)
		last := status[len(status)-1]
		if last.Version != 99999 || !last.Applied {
			t.Fatalf("status does not show the unknown version: %+v", status)
		}
	})
}

func TestEmptyDatabase(t *testing.T) {
	forEachEmptyDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		wantMessage(t, db.CheckSchema(ctx), mulchat.EINVALID,
			"database schema version 0 is older than this mulchat (needs 1): run `mulchat migrate up`")
		legacy, err := sqlstore.IsLegacy(ctx, db.SQL(), db.Dialect())
		mustNil(t, err)
		if legacy {
			t.Fatal("an empty database is not legacy")
		}
		status, err := db.MigrationStatus(ctx)
		mustNil(t, err)
		if len(status) == 0 || status[0].Applied {
			t.Fatalf("status of an empty database = %+v", status)
		}
		mustNil(t, db.Migrate(ctx))
		mustNil(t, db.CheckSchema(ctx))
		newUser(t, db, "first")
	})
}

func TestLegacyDatabase(t *testing.T) {
	forEachEmptyDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		_, err := db.SQL().ExecContext(ctx, `CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(50) NOT NULL)`)
		mustNil(t, err)
		legacy, err := sqlstore.IsLegacy(ctx, db.SQL(), db.Dialect())
		mustNil(t, err)
		if !legacy {
			t.Fatal("a database with only a users table is legacy")
		}
		const want = "legacy Mul-Chat database detected: run `mulchat migrate adopt` first"
		wantMessage(t, db.Migrate(ctx), mulchat.EINVALID, want)
		wantMessage(t, db.MigrateDown(ctx), mulchat.EINVALID, want)
		wantMessage(t, db.CheckSchema(ctx), mulchat.EINVALID, want)
		// Status reads without writing: the database stays legacy.
		_, err = db.MigrationStatus(ctx)
		mustNil(t, err)
		legacy, err = sqlstore.IsLegacy(ctx, db.SQL(), db.Dialect())
		mustNil(t, err)
		if !legacy {
			t.Fatal("MigrationStatus created the version table")
		}
	})
}

func TestMigrationsFS(t *testing.T) {
	for _, dialect := range []string{sqlstore.DialectSQLite, sqlstore.DialectPostgres} {
		names, err := fs.Glob(sqlstore.Migrations(dialect), "*.sql")
		mustNil(t, err)
		if len(names) == 0 || names[0] != "00001_initial.sql" {
			t.Fatalf("%s migrations = %v", dialect, names)
		}
		b, err := fs.ReadFile(sqlstore.Migrations(dialect), names[0])
		mustNil(t, err)
		// The credential columns and the session table without credential_id.
		for _, col := range []string{"nats_jwt", "nats_seed_hash", "nats_public_key", "nats_account_id",
			"nats_account_public_key", "nats_expires_at", "nats_expired_at", "nats_auth_sessions"} {
			if !strings.Contains(string(b), col) {
				t.Errorf("%s migration lacks %s", dialect, col)
			}
		}
		if strings.Contains(string(b), "credential_id") {
			t.Errorf("%s migration has credential_id", dialect)
		}
	}
	if sqlstore.Migrations("mysql") != nil {
		t.Fatal("Migrations(mysql) is not nil")
	}
}
