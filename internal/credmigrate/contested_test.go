package credmigrate_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
)

// Public keys that several users hold or would hold are found exactly (the
// pre-check narrows the search by hash), and their users are not written
// but reported.
func TestContestedKeys(t *testing.T) {
	legacytest.ForEach(t, func(t *testing.T, db *legacytest.DB) {
		ctx := context.Background()
		e := newEnv(t, db, legacygen.Options{Users: 150, Seed: 11, PreexistingRate: -1, DeletedUserRate: 0.1})
		e.adopt(t)
		q := e.placeholders
		users := e.ids(t, "SELECT DISTINCT c.user_id FROM nats_user_credentials c JOIN users u ON u.id = c.user_id WHERE c.public_key IS NOT NULL ORDER BY c.user_id")
		orphans := e.ids(t, "SELECT DISTINCT user_id FROM nats_user_credentials c WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = c.user_id) AND public_key IS NOT NULL ORDER BY user_id")
		if len(users) < 12 || len(orphans) < 3 {
			t.Fatalf("%d users, %d orphan user ids", len(users), len(orphans))
		}
		exec := func(s string, args ...any) {
			t.Helper()
			if _, err := e.db.ExecContext(ctx, q(s), args...); err != nil {
				t.Fatal(err)
			}
		}
		key := func(uid int64) string {
			var k string
			if err := e.db.QueryRow(q("SELECT public_key FROM nats_user_credentials WHERE user_id = ? AND public_key IS NOT NULL ORDER BY id LIMIT 1"), uid).Scan(&k); err != nil {
				t.Fatal(err)
			}
			return k
		}
		// Rows of two users with one key; an orphan row sharing a key with
		// one user only (not contested); a user holding another user's
		// legacy key; a user holding an orphan row's key.
		exec("UPDATE nats_user_credentials SET public_key = ? WHERE user_id = ?", key(users[0]), users[1])
		exec("UPDATE nats_user_credentials SET public_key = ? WHERE user_id = ?", key(users[2]), orphans[0])
		exec("UPDATE users SET nats_public_key = ? WHERE id = ?", key(users[3]), users[4])
		exec("UPDATE users SET nats_public_key = ? WHERE id = ?", key(orphans[1]), users[5])
		// The definition, in SQL.
		oracle := map[string]bool{}
		r, err := e.db.Query(`SELECT public_key FROM nats_user_credentials c
WHERE public_key IS NOT NULL AND EXISTS (SELECT 1 FROM users u WHERE u.id = c.user_id)
GROUP BY public_key HAVING min(user_id) <> max(user_id)
UNION
SELECT c.public_key FROM nats_user_credentials c JOIN users u ON u.nats_public_key = c.public_key AND u.id <> c.user_id`)
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var k string
			r.Scan(&k)
			oracle[k] = true
		}
		r.Close()
		if len(oracle) < 3 || oracle[key(users[2])] {
			t.Fatalf("test setup: %d contested keys", len(oracle))
		}
		p, err := e.migrator(t, credmigrate.Options{}).Precheck(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p.ContestedKeys != int64(len(oracle)) {
			t.Errorf("pre-check finds %d contested keys, want %d", p.ContestedKeys, len(oracle))
		}
		// Users whose winning key is contested (and not already theirs) are
		// not written, and reported.
		var want []int64
		for uid, cid := range expectedWinners(t, e) {
			var k, held string
			if err := e.db.QueryRow(q("SELECT coalesce(public_key, '') FROM nats_user_credentials WHERE id = ?"), cid).Scan(&k); err != nil {
				t.Fatal(err)
			}
			if err := e.db.QueryRow(q("SELECT coalesce(nats_public_key, '') FROM users WHERE id = ?"), uid).Scan(&held); err != nil {
				t.Fatal(err)
			}
			if oracle[k] && k != held {
				want = append(want, uid)
			}
		}
		slices.Sort(want)
		rep, err := e.migrator(t, credmigrate.Options{KeepSessionColumn: true}).Run(ctx)
		if !errors.Is(err, credmigrate.ErrUnverified) {
			t.Fatalf("run: %v", err)
		}
		var got []int64
		for _, m := range rep.Verify.Mismatches {
			if strings.Contains(m.Reason, "held or claimed by another user") {
				got = append(got, m.UserID)
			}
		}
		slices.Sort(got)
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("users skipped for a contested key: %v, want %v", got, want)
		}
	})
}
