package sqlstore_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

func TestOpenSQLiteCreatesPrivateFiles(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data", "nested")
	path := filepath.Join(dir, "mulchat.db")
	db, err := sqlstore.Open(ctx, path)
	mustNil(t, err)
	defer db.Close()
	if db.Dialect() != sqlstore.DialectSQLite {
		t.Fatalf("dialect = %q", db.Dialect())
	}
	mustNil(t, db.Migrate(ctx))
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600} {
		fi, err := os.Stat(p)
		mustNil(t, err)
		if fi.Mode() != want {
			t.Errorf("%s mode = %v, want %v", p, fi.Mode(), want)
		}
	}
	var mode string
	mustNil(t, db.SQL().QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode))
	if mode != "wal" {
		t.Errorf("journal_mode = %q", mode)
	}
	var fk int
	mustNil(t, db.SQL().QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk))
	if fk != 1 {
		t.Errorf("foreign_keys = %d", fk)
	}
	// The URL-ish prefixes name the same file.
	for _, prefix := range []string{"sqlite:", "sqlite://", "file:", "file://"} {
		db2, err := sqlstore.Open(ctx, prefix+path)
		mustNil(t, err)
		mustNil(t, db2.CheckSchema(ctx))
		db2.Close()
	}
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tests := []struct {
		name string
		url  string
		code string
	}{
		{"empty", "", mulchat.EINVALID},
		{"question mark in path", filepath.Join(t.TempDir(), "a?b.db"), mulchat.EINVALID},
		{"bad postgres url", "postgres://user:secretpw@host:notaport/db", mulchat.EINVALID},
		{"postgres not listening", "postgres://user:secretpw@127.0.0.1:1/db?sslmode=disable&connect_timeout=5", mulchat.EUNAVAILABLE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := sqlstore.Open(ctx, tt.url)
			if err == nil {
				db.Close()
			}
			wantCode(t, err, tt.code)
			t.Logf("message: %s", mulchat.ErrorMessage(err))
			if strings.Contains(mulchat.ErrorMessage(err), "secretpw") {
				t.Fatalf("message leaks the password: %q", mulchat.ErrorMessage(err))
			}
		})
	}
}

func TestOpenPostgres(t *testing.T) {
	db := sqltest.OpenPostgres(t)
	if db.Dialect() != sqlstore.DialectPostgres {
		t.Fatalf("dialect = %q", db.Dialect())
	}
	var tz string
	mustNil(t, db.SQL().QueryRowContext(context.Background(), `SHOW timezone`).Scan(&tz))
	if tz != "UTC" {
		t.Fatalf("session timezone = %q", tz)
	}
}

func TestParseTime(t *testing.T) {
	want := time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC)
	tests := []struct {
		in   any
		want time.Time
	}{
		{"2024-01-02 03:04:05.123456", want},                // mulchat and SQLAlchemy
		{[]byte("2024-01-02 03:04:05.123456"), want},        // as bytes
		{"2024-01-02T03:04:05.123456Z", want},               // RFC 3339
		{"2024-01-02T04:04:05.123456+01:00", want},          // with an offset
		{"2024-01-02T03:04:05.123456", want},                // Python isoformat()
		{"2024-01-02 03:04:05", want.Truncate(time.Second)}, // CURRENT_TIMESTAMP
		{"2024-01-02 03:04:05.123", want.Truncate(time.Millisecond)},
		{want.In(time.FixedZone("x", 3600)), want},
	}
	for _, tt := range tests {
		got, err := sqlstore.ParseTime(tt.in)
		if err != nil || !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("ParseTime(%v) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if _, err := sqlstore.ParseTime("yesterday"); err == nil {
		t.Error("ParseTime(yesterday) succeeded")
	}
	if got := sqlstore.FormatSQLiteTime(want.Add(789)); got != "2024-01-02 03:04:05.123456" {
		t.Errorf("FormatSQLiteTime = %q", got)
	}
	// The text form sorts as time does, including against the legacy
	// SQLAlchemy text of the same format.
	a, b := sqlstore.FormatSQLiteTime(want), sqlstore.FormatSQLiteTime(want.Add(time.Microsecond))
	if !(a < b) || !("2024-01-02 03:04:05.000000" < a) || !(sqlstore.FormatSQLiteTime(want.AddDate(10, 0, 0)) > b) {
		t.Error("text timestamps do not sort")
	}
	if _, err := sqlstore.TimeValue(sqlstore.DialectSQLite, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)); mulchat.ErrorCode(err) != mulchat.EINVALID {
		t.Errorf("year 10000: %v", err)
	}
}

func TestLegacySQLiteTimestamps(t *testing.T) {
	// SQLAlchemy wrote "YYYY-MM-DD HH:MM:SS.ffffff" text, in columns
	// declared DATETIME (which the driver returns as time.Time) or TEXT.
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	_, err := db.SQL().ExecContext(ctx, `INSERT INTO users (username, hashed_password, is_active, created_at, nats_public_key, nats_expires_at)
		VALUES ('legacy', 'h', 1, '2024-01-02 03:04:05.123456', 'ULEGACY', '2030-01-01 00:00:00.000000')`)
	mustNil(t, err)
	u, err := db.UserByUsername(ctx, "legacy")
	mustNil(t, err)
	if !u.CreatedAt.Equal(time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC)) ||
		!u.NATS.ExpiresAt.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("legacy times read as %v, %v", u.CreatedAt, u.NATS.ExpiresAt)
	}
	active, err := db.ListUsersWithActiveNATSCredentials(ctx, time.Date(2029, 12, 31, 23, 59, 59, 999999000, time.UTC))
	mustNil(t, err)
	if len(active) != 1 {
		t.Fatalf("legacy credential not active before its expiry: %v", usernames(active))
	}
	active, err = db.ListUsersWithActiveNATSCredentials(ctx, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	mustNil(t, err)
	if len(active) != 0 {
		t.Fatalf("legacy credential active at its expiry: %v", usernames(active))
	}

	_, err = db.SQL().ExecContext(ctx, `CREATE TABLE legacy_dt (t DATETIME)`)
	mustNil(t, err)
	_, err = db.SQL().ExecContext(ctx, `INSERT INTO legacy_dt VALUES ('2024-01-02 03:04:05.123456'), (NULL)`)
	mustNil(t, err)
	rows, err := db.SQL().QueryContext(ctx, `SELECT t FROM legacy_dt ORDER BY t IS NULL`)
	mustNil(t, err)
	defer rows.Close()
	var got []sqlstore.NullTime
	for rows.Next() {
		var nt sqlstore.NullTime
		mustNil(t, rows.Scan(&nt))
		got = append(got, nt)
	}
	mustNil(t, rows.Err())
	if len(got) != 2 || !got[0].Valid || !got[0].Time.Equal(time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC)) || got[1].Valid {
		t.Fatalf("DATETIME column read as %+v", got)
	}
}

func TestOpenMissingPostgresDatabase(t *testing.T) {
	url := sqltest.NewPostgresDatabaseURL(t)
	missing := strings.Replace(url, "mulchat_test_", "mulchat_missing_", 1)
	_, err := sqlstore.Open(context.Background(), missing)
	wantCode(t, err, mulchat.EUNAVAILABLE)
	t.Logf("message: %s", mulchat.ErrorMessage(err))
	if msg := mulchat.ErrorMessage(err); !strings.Contains(msg, "does not exist") {
		t.Fatalf("message = %q, want the server's reason", msg)
	}
}

func TestOpenSQLiteMemory(t *testing.T) {
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, ":memory:")
	mustNil(t, err)
	defer db.Close()
	mustNil(t, db.Migrate(ctx))
	mustNil(t, db.CheckSchema(ctx))
	newUser(t, db, "alice")
	mustNil(t, db.InTx(ctx, func(q mulchat.Queries) error {
		_, err := q.UserByUsername(ctx, "alice")
		return err
	}))
}
