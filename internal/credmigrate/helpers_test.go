package credmigrate_test

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/mulchat/mulchat"

	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
	"github.com/mulchat/mulchat/internal/password"
	"github.com/mulchat/mulchat/internal/sqlstore"
)

// cheapHash keeps tests fast; the real default is password.Hash.
func cheapHash(pw string) (string, error) {
	return password.HashWith(pw, password.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})
}

type env struct {
	legacy  *legacytest.DB
	store   *sqlstore.DB
	db      *sql.DB
	dialect string
	res     *legacygen.Result
}

var someNATSColumns = []string{"nats_jwt", "nats_public_key", "nats_seed_hash", "nats_expires_at"}

// newEnv generates a legacy database and opens it as mulchat does.
func newEnv(t testing.TB, db *legacytest.DB, opts legacygen.Options) *env {
	t.Helper()
	ctx := context.Background()
	res, err := legacygen.Generate(ctx, db.SQL, db.Dialect, opts)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.Open(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &env{legacy: db, store: st, db: st.SQL(), dialect: st.Dialect(), res: res}
}

// placeholders rewrites a query's "?" placeholders as "$1", "$2", … on
// PostgreSQL.
func (e *env) placeholders(s string) string {
	if e.dialect != "postgres" {
		return s
	}
	for i := 1; strings.Contains(s, "?"); i++ {
		s = strings.Replace(s, "?", "$"+strconv.Itoa(i), 1)
	}
	return s
}

// ids runs a query returning one integer column.
func (e *env) ids(t testing.TB, query string, args ...any) []int64 {
	t.Helper()
	rows, err := e.db.Query(e.placeholders(query), args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) adopt(t testing.TB) *credmigrate.AdoptReport {
	t.Helper()
	r, err := credmigrate.Adopt(context.Background(), e.db, e.dialect, credmigrate.AdoptOptions{
		Migrations: sqlstore.Migrations(e.dialect), VersionTable: sqlstore.GooseTable})
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	return r
}

func (e *env) migrator(t testing.TB, opts credmigrate.Options) *credmigrate.Migrator {
	t.Helper()
	if opts.HashPassword == nil {
		opts.HashPassword = cheapHash
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = 37 // several batches, odd size
	}
	m, err := credmigrate.New(e.db, e.dialect, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// rows returns the given columns of table as canonical strings ordered by
// the first column.
func (e *env) rows(t testing.TB, table string, cols ...string) []string {
	t.Helper()
	r, err := e.db.Query("SELECT " + strings.Join(cols, ", ") + " FROM " + table + " ORDER BY " + cols[0])
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []string
	for r.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := r.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for i, v := range vals {
			b.WriteString(cols[i] + "=")
			switch x := v.(type) {
			case nil:
				b.WriteString("NULL")
			case []byte:
				b.WriteString(string(x))
			case time.Time:
				b.WriteString(x.UTC().Format("2006-01-02 15:04:05.000000"))
			case bool:
				if x {
					b.WriteString("1")
				} else {
					b.WriteString("0")
				}
			default:
				fmt.Fprint(&b, x)
			}
			b.WriteString(" ")
		}
		out = append(out, b.String())
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var legacyCredCols = []string{"id", "user_id", "jwt", "seed_hash", "public_key", "account_id", "account_public_key", "expires_at", "expired_at", "created_at", "updated_at"}
var userNATSCols = []string{"id", "nats_jwt", "nats_seed_hash", "nats_public_key", "nats_account_id", "nats_account_public_key", "nats_expires_at", "nats_expired_at"}

func equalRows(t testing.TB, what string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s differs at row %d:\n got  %s\n want %s", what, i, got[i], want[i])
		}
	}
}

// expectedCredentials computes, independently of the package (with the jwt
// library), what users.nats_* must hold after the migration for every user
// with a usable legacy credential: the row with a valid JWT naming its key,
// latest issued-at, then highest id.
func expectedWinners(t testing.TB, e *env) map[int64]int64 {
	t.Helper()
	r, err := e.db.Query("SELECT c.id, c.user_id, c.jwt, c.public_key FROM nats_user_credentials c JOIN users u ON u.id = c.user_id")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	type best struct {
		id    int64
		valid bool
		iat   int64
	}
	win := map[int64]best{}
	for r.Next() {
		var id, uid int64
		var tok, pub sql.NullString
		if err := r.Scan(&id, &uid, &tok, &pub); err != nil {
			t.Fatal(err)
		}
		b := best{id: id}
		if tok.Valid {
			if uc, err := jwt.DecodeUserClaims(tok.String); err == nil {
				b.iat = uc.IssuedAt
				b.valid = pub.Valid && uc.Subject == pub.String
			}
		}
		cur, ok := win[uid]
		if !ok || b.valid && !cur.valid || b.valid == cur.valid && (b.iat > cur.iat || b.iat == cur.iat && b.id > cur.id) {
			win[uid] = b
		}
	}
	out := map[int64]int64{}
	for uid, b := range win {
		out[uid] = b.id
	}
	return out
}

func slicesSort(s []int64) { slices.Sort(s) }

const versionTable = sqlstore.GooseTable

func migrationsFor(dialect string) fs.FS { return sqlstore.Migrations(dialect) }

func isNotFound(err error) bool { return mulchat.ErrorCode(err) == mulchat.ENOTFOUND }
