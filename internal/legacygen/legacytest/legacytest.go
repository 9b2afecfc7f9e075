// Package legacytest gives tests empty databases to generate legacy Mul-Chat
// databases into: a SQLite file in the test's temporary directory, or a fresh
// PostgreSQL database dropped when the test ends.
package legacytest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/mulchat/mulchat/internal/testenv"
)

// DB is an empty database for a test.
type DB struct {
	Dialect string
	URL     string // the database URL mulchat's --database-url takes
	SQL     *sql.DB
}

// SQLite returns an empty SQLite database file in t.TempDir(), opened the way
// the legacy app used it (foreign keys not enforced).
func SQLite(t testing.TB) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "legacy.db")
	db, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &DB{Dialect: "sqlite", URL: path, SQL: db}
}

// OpenSQLite opens a SQLite file as the legacy app did.
func OpenSQLite(path string) (*sql.DB, error) {
	return sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
}

var seq atomic.Int64

// Postgres returns a fresh, empty PostgreSQL database (skipping the test
// without MULCHAT_TEST_POSTGRES_URL), dropped at cleanup.
func Postgres(t testing.TB) *DB {
	t.Helper()
	base := testenv.PostgresURL(t)
	name := fmt.Sprintf("mulchat_legacy_%d_%d", time.Now().UnixNano(), seq.Add(1))
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	dbURL := u.String()
	db, err := OpenPostgres(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		admin, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	return &DB{Dialect: "postgres", URL: dbURL, SQL: db}
}

// OpenPostgres opens a PostgreSQL database with the session in UTC, as
// mulchat does.
func OpenPostgres(dbURL string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["timezone"] = "UTC"
	return stdlib.OpenDB(*cfg), nil
}

// ForEach runs fn on a fresh SQLite database and a fresh PostgreSQL one.
func ForEach(t *testing.T, fn func(t *testing.T, db *DB)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLite(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, Postgres(t)) })
}

// Dump returns every row of every table of db, in a canonical text form
// ordered by the table's columns, for comparing a database before and after
// an operation. Tables whose name starts with one of skipPrefixes are left
// out.
func Dump(ctx context.Context, db *sql.DB, dialect string, skipPrefixes ...string) (map[string][]string, error) {
	var q string
	if dialect == "sqlite" {
		q = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
	} else {
		q = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
	}
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		skip := false
		for _, p := range skipPrefixes {
			skip = skip || strings.HasPrefix(n, p)
		}
		if !skip {
			tables = append(tables, n)
		}
	}
	rows.Close()
	out := map[string][]string{}
	for _, tbl := range tables {
		// A unique comment keeps pgx from reusing a statement prepared
		// before the table's columns changed ("cached plan must not change
		// result type").
		r, err := db.QueryContext(ctx, fmt.Sprintf("SELECT * FROM %s /* %d */", tbl, seq.Add(1)))
		if err != nil {
			return nil, err
		}
		cols, _ := r.Columns()
		var lines []string
		for r.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := r.Scan(ptrs...); err != nil {
				r.Close()
				return nil, err
			}
			var b strings.Builder
			for i, v := range vals {
				if i > 0 {
					b.WriteString(" | ")
				}
				b.WriteString(cols[i] + "=")
				switch x := v.(type) {
				case nil:
					b.WriteString("NULL")
				case []byte:
					fmt.Fprintf(&b, "%q", x)
				case time.Time:
					b.WriteString(x.UTC().Format(time.RFC3339Nano))
				default:
					fmt.Fprintf(&b, "%v", x)
				}
			}
			lines = append(lines, b.String())
		}
		r.Close()
		slices.Sort(lines)
		out[tbl] = lines
	}
	return out, nil
}

// Clone copies db into a new database of the same dialect, dropped (or
// removed) at cleanup. On PostgreSQL the copy is CREATE DATABASE … TEMPLATE,
// which needs every other connection to db closed: Clone closes and reopens
// db.SQL, and the caller must have closed any other pool on it.
func Clone(t testing.TB, db *DB) *DB {
	t.Helper()
	if db.Dialect == "sqlite" {
		path := filepath.Join(t.TempDir(), "clone.db")
		if _, err := db.SQL.Exec("VACUUM INTO ?", path); err != nil {
			t.Fatal(err)
		}
		c, err := OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &DB{Dialect: "sqlite", URL: path, SQL: c}
	}
	base := testenv.PostgresURL(t)
	src, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	srcName := strings.TrimPrefix(src.Path, "/")
	name := fmt.Sprintf("mulchat_legacy_%d_%d", time.Now().UnixNano(), seq.Add(1))
	db.SQL.Close()
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + name + " TEMPLATE " + srcName); err != nil {
		t.Fatal(err)
	}
	if db.SQL, err = OpenPostgres(db.URL); err != nil {
		t.Fatal(err)
	}
	u := *src
	u.Path = "/" + name
	c, err := OpenPostgres(u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		admin, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	return &DB{Dialect: "postgres", URL: u.String(), SQL: c}
}
