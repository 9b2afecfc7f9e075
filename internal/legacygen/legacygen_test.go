package legacygen_test

import (
	"context"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
	"github.com/nats-io/jwt/v2"
)

func TestGenerate(t *testing.T) {
	legacytest.ForEach(t, func(t *testing.T, db *legacytest.DB) {
		ctx := context.Background()
		opts := legacygen.Options{Users: 500, Seed: 7, UserNATSColumns: []string{"nats_jwt", "nats_public_key", "nats_seed_hash"}}
		res, err := legacygen.Generate(ctx, db.SQL, db.Dialect, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.Users+res.DeletedUsers != 500 || res.DeletedUsers == 0 || res.OrphanCredentials == 0 ||
			res.RawSeeds == 0 || res.PlaintextPasswords == 0 || res.Preexisting == 0 {
			t.Fatalf("not messy enough: %+v", res)
		}
		count := func(q string) int {
			var n int
			if err := db.SQL.QueryRowContext(ctx, q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := count("SELECT count(*) FROM users"); n != res.Users {
			t.Errorf("users = %d, want %d", n, res.Users)
		}
		if n := count("SELECT count(*) FROM nats_user_credentials"); n != res.Credentials {
			t.Errorf("credentials = %d, want %d", n, res.Credentials)
		}
		if n := count("SELECT count(*) FROM (SELECT user_id FROM nats_user_credentials GROUP BY user_id HAVING count(*) > 1) d"); n == 0 {
			t.Error("no user has several credential rows")
		}
		if n := count("SELECT count(*) FROM nats_user_credentials c WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = c.user_id)"); n != res.OrphanCredentials {
			t.Errorf("orphans = %d, want %d", n, res.OrphanCredentials)
		}
		if n := count("SELECT count(*) FROM nats_user_credentials WHERE seed_hash LIKE 'SU%'"); n != res.RawSeeds {
			t.Errorf("raw seeds = %d, want %d", n, res.RawSeeds)
		}
		if n := count("SELECT count(*) FROM users WHERE hashed_password LIKE 'legacy password%'"); n != res.PlaintextPasswords {
			t.Errorf("plaintext = %d, want %d", n, res.PlaintextPasswords)
		}
		// Every JWT that parses is signed by the legacy account.
		rows, err := db.SQL.QueryContext(ctx, "SELECT jwt FROM nats_user_credentials WHERE jwt IS NOT NULL AND jwt <> 'not-a-jwt'")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			var tok string
			if err := rows.Scan(&tok); err != nil {
				t.Fatal(err)
			}
			uc, err := jwt.DecodeUserClaims(tok)
			if err != nil {
				t.Fatalf("JWT does not verify: %v", err)
			}
			if uc.IssuedAt > time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix() {
				t.Fatalf("JWT issued at %d, after the generator's reference time", uc.IssuedAt)
			}
			if uc.Issuer != res.AccountPublicKey {
				t.Fatalf("JWT issuer %s, want the legacy account", uc.Issuer)
			}
			n++
		}
		if n == 0 {
			t.Fatal("no JWTs")
		}
	})
}

// The same seed gives the same database.
func TestGenerateDeterministic(t *testing.T) {
	ctx := context.Background()
	var dumps []map[string][]string
	for range 2 {
		db := legacytest.SQLite(t)
		if _, err := legacygen.Generate(ctx, db.SQL, db.Dialect, legacygen.Options{Users: 200, Seed: 3}); err != nil {
			t.Fatal(err)
		}
		d, err := legacytest.Dump(ctx, db.SQL, db.Dialect)
		if err != nil {
			t.Fatal(err)
		}
		dumps = append(dumps, d)
	}
	for tbl, rows := range dumps[0] {
		if len(rows) != len(dumps[1][tbl]) {
			t.Fatalf("%s: %d vs %d rows", tbl, len(rows), len(dumps[1][tbl]))
		}
		for i := range rows {
			if rows[i] != dumps[1][tbl][i] {
				t.Fatalf("%s differs:\n%s\n%s", tbl, rows[i], dumps[1][tbl][i])
			}
		}
	}
}
