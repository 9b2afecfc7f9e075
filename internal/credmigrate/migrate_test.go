package credmigrate_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat"

	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
	"github.com/mulchat/mulchat/internal/password"
)

func TestAdoptAndMigrate(t *testing.T) {
	legacytest.ForEach(t, func(t *testing.T, db *legacytest.DB) {
		ctx := context.Background()
		e := newEnv(t, db, legacygen.Options{Users: 300, Seed: 1, UserNATSColumns: someNATSColumns})
		credsBefore := e.rows(t, "nats_user_credentials", legacyCredCols...)
		ar := e.adopt(t)
		if ar.BaselineVersion != 1 || len(ar.AddedColumns) == 0 {
			t.Fatalf("adopt report: %+v", ar)
		}
		if err := e.store.Migrate(ctx); err != nil {
			t.Fatalf("migrate up after adopt: %v", err)
		}
		if err := e.store.CheckSchema(ctx); err != nil {
			t.Fatalf("check schema after adopt: %v", err)
		}
		equalRows(t, "legacy credentials after adopt", e.rows(t, "nats_user_credentials", legacyCredCols...), credsBefore)

		// mulchat's store works on the adopted database while
		// nats_auth_sessions still has credential_id.
		users, err := e.store.ListUsers(ctx)
		if err != nil || len(users) != e.res.Users {
			t.Fatalf("store lists %d users (%v), want %d", len(users), err, e.res.Users)
		}
		for _, u := range users {
			if got, err := e.store.UserByUsername(ctx, u.Username); err != nil || got.ID != u.ID {
				t.Fatalf("legacy username %q: %v", u.Username, err)
			}
		}
		sess := &mulchat.AuthSession{UserID: users[0].ID, ClientID: "s1/7", ServerID: "s1", CID: 7, CreatedAt: time.Now(), LastActivity: time.Now()}
		if err := e.store.CreateAuthSession(ctx, sess); err != nil {
			t.Fatalf("store session insert with credential_id present: %v", err)
		}
		var permUser int64
		if err := e.db.QueryRow("SELECT min(user_id) FROM nats_permissions").Scan(&permUser); err != nil {
			t.Fatal(err)
		}
		if perms, err := e.store.ListUserPermissions(ctx, permUser); err != nil || len(perms) == 0 || perms[0].Type != mulchat.PermBoth {
			t.Fatalf("legacy permissions on the adopted database: %+v %v", perms, err)
		}

		// A raw seed an earlier copy of the legacy values left in
		// users.nats_seed_hash, on a user without legacy credentials.
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := kp.Seed()
		if _, err := e.db.Exec(e.placeholders("UPDATE users SET nats_seed_hash = ? WHERE id = (SELECT min(id) FROM users WHERE id NOT IN (SELECT user_id FROM nats_user_credentials))"), string(seed)); err != nil {
			t.Fatal(err)
		}

		var refs, dangling int64
		if err := e.db.QueryRow("SELECT count(*) FROM nats_auth_sessions WHERE credential_id IS NOT NULL").Scan(&refs); err != nil {
			t.Fatal(err)
		}
		if err := e.db.QueryRow("SELECT count(*) FROM nats_auth_sessions s WHERE credential_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nats_user_credentials c WHERE c.id = s.credential_id)").Scan(&dangling); err != nil {
			t.Fatal(err)
		}

		r, err := e.migrator(t, credmigrate.Options{}).Run(ctx)
		if err != nil {
			t.Fatalf("run: %v (report %+v)", err, r.Verify)
		}
		if r.Precheck.SessionCredentialRefs != refs || r.Precheck.DanglingSessionRefs != dangling || refs == 0 {
			t.Errorf("pre-check: %d session references, %d dangling; want %d, %d",
				r.Precheck.SessionCredentialRefs, r.Precheck.DanglingSessionRefs, refs, dangling)
		}
		if r.Verify.Unverified != 0 || r.Verify.SourceDigest != r.Verify.TargetDigest {
			t.Fatalf("verify: %+v", r.Verify)
		}
		if r.Seeds.LegacyRows != int64(e.res.RawSeeds) {
			t.Errorf("seeds scrubbed in legacy rows = %d, want %d", r.Seeds.LegacyRows, e.res.RawSeeds)
		}
		var rawUsers int64
		if err := e.db.QueryRow("SELECT count(*) FROM users WHERE nats_seed_hash LIKE 'S%'").Scan(&rawUsers); err != nil {
			t.Fatal(err)
		}
		if rawUsers != 0 || r.Precheck.RawSeedsUsers == 0 || r.Seeds.UserRows != r.Precheck.RawSeedsUsers {
			t.Errorf("%d raw seeds left in users.nats_seed_hash; scrubbed %d, the pre-check counted %d", rawUsers, r.Seeds.UserRows, r.Precheck.RawSeedsUsers)
		}
		if r.Precheck.PlaintextPasswords != int64(e.res.PlaintextPasswords) || e.res.PlaintextPasswords == 0 {
			t.Errorf("pre-check: %d plaintext passwords, the generator wrote %d", r.Precheck.PlaintextPasswords, e.res.PlaintextPasswords)
		}
		if r.Passwords.Rehashed != int64(e.res.PlaintextPasswords) {
			t.Errorf("passwords rehashed = %d, want %d", r.Passwords.Rehashed, e.res.PlaintextPasswords)
		}
		if r.Sessions == nil || r.Sessions.BackedUp == 0 {
			t.Errorf("sessions: %+v", r.Sessions)
		}
		// Independent check of the winners.
		win := expectedWinners(t, e)
		for uid, cid := range win {
			var got, want, seed string
			q := "SELECT coalesce(u.nats_public_key, ''), coalesce(c.public_key, ''), coalesce(u.nats_seed_hash, '') FROM users u, nats_user_credentials c WHERE u.id = ? AND c.id = ?"
			if e.dialect == "postgres" {
				q = strings.NewReplacer("?", "$1").Replace(q)
				q = strings.Replace(q, "c.id = $1", "c.id = $2", 1)
			}
			if err := e.db.QueryRow(q, uid, cid).Scan(&got, &want, &seed); err != nil {
				t.Fatal(err)
			}
			if got != want && r.Verify.Verified["newer_kept"] == 0 {
				t.Errorf("user %d holds key %q, want %q (credential %d)", uid, got, want, cid)
			}
			if strings.HasPrefix(seed, "S") {
				t.Errorf("user %d has a raw seed", uid)
			}
		}
		// Old plaintext passwords still log in.
		var hash string
		var rotate bool
		if err := e.db.QueryRow("SELECT hashed_password, must_rotate_password FROM users WHERE hashed_password LIKE '$argon2id$%' ORDER BY id LIMIT 1").Scan(&hash, &rotate); err != nil {
			t.Fatal(err)
		}
		if !rotate {
			t.Error("rehashed user not flagged to rotate")
		}
		var uid int64
		e.db.QueryRow("SELECT id FROM users WHERE hashed_password LIKE '$argon2id$%' ORDER BY id LIMIT 1").Scan(&uid)
		if ok, err := password.Verify(hash, legacygen.PlaintextPassword(uid)); err != nil || !ok {
			t.Errorf("old password does not verify after rehash: %v %v", ok, err)
		}

		vr, err := e.migrator(t, credmigrate.Options{}).Verify(ctx)
		if err != nil {
			t.Fatalf("verify: %v %+v", err, vr.Verify.Mismatches)
		}
		// A rerun changes nothing.
		before := e.rows(t, "users", userNATSCols...)
		r2, err := e.migrator(t, credmigrate.Options{}).Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r2.Copy.Written != 0 || r2.Verify.Written != 0 || !r2.Sessions.AlreadyDropped {
			t.Errorf("rerun wrote: copy %d, verify %d, sessions %+v", r2.Copy.Written, r2.Verify.Written, r2.Sessions)
		}
		equalRows(t, "users after rerun", e.rows(t, "users", userNATSCols...), before)
		// A corrupted user fails verification.
		if _, err := e.db.Exec("UPDATE users SET nats_account_public_key = 'AXXX' WHERE id = (SELECT min(user_id) FROM nats_user_credentials c WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = c.user_id))"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.migrator(t, credmigrate.Options{}).Verify(ctx); !errors.Is(err, credmigrate.ErrUnverified) {
			t.Fatalf("verify after corruption: %v", err)
		}
	})
}

// TestSQLiteCopyCheckpointsLazily: on SQLite the copy's commits within a
// lock slice leave the WAL to be checkpointed by the slice's last commit
// or at the pass's end (checkpointAtSliceEnd), so here, where the whole
// copy is one slice (an hour long), the WAL grows batch after batch;
// checkpointed at every commit (each batch here writes more than the
// automatic checkpoint's 1000 pages), it would be reused from its start
// and stay one batch long (measured: 6.0 MB after each of the four
// batches, against 6.0 to 16.5 MB).
func TestSQLiteCopyCheckpointsLazily(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, legacytest.SQLite(t), legacygen.Options{Users: 12000, Seed: 29, FastKeys: true})
	e.adopt(t)
	if _, err := e.db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	wal := e.legacy.URL + "-wal"
	var sizes []int64
	m := e.migrator(t, credmigrate.Options{BatchSize: 3000, BatchHook: func(context.Context, int64) error {
		fi, err := os.Stat(wal)
		if err != nil {
			return err
		}
		sizes = append(sizes, fi.Size())
		return nil
	}})
	credmigrate.SetLockSlice(m, time.Hour) // however slowly it runs, the copy is one slice
	r, err := m.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Verify.Unverified != 0 {
		t.Fatalf("unverified: %+v", r.Verify)
	}
	if len(sizes) < 4 || sizes[0] == 0 || slices.Max(sizes) < 2*sizes[0] {
		t.Errorf("WAL size after each batch: %v; want it to grow to several batches", sizes)
	}
}

// Legacy timestamps on SQLite not in SQLiteTimeFormat (an ISO "T", no
// fraction) are written to users.nats_* in that format, not copied as
// stored: the driver parses any text of a DATETIME column, which must not
// make such text look copyable as it is (text compares as text).
func TestSQLiteNormalizesLegacyTimestamps(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, legacytest.SQLite(t), legacygen.Options{Users: 300, Seed: 31, FastKeys: true, PreexistingRate: -1})
	e.adopt(t)
	for _, q := range []string{
		"UPDATE nats_user_credentials SET expires_at = replace(expires_at, ' ', 'T') WHERE id % 2 = 0",
		"UPDATE nats_user_credentials SET expires_at = substr(expires_at, 1, 19) WHERE id % 2 = 1",
	} {
		if _, err := e.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	r, err := e.migrator(t, credmigrate.Options{BatchSize: 100}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Verify.Unverified != 0 {
		t.Fatalf("unverified: %+v", r.Verify)
	}
	var n, odd int
	if err := e.db.QueryRowContext(ctx, `SELECT count(nats_expires_at), count(*) FILTER (WHERE nats_expires_at NOT GLOB
		'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]') FROM users`).Scan(&n, &odd); err != nil {
		t.Fatal(err)
	}
	if n == 0 || odd != 0 {
		t.Fatalf("%d of %d users.nats_expires_at not in %s", odd, n, credmigrate.SQLiteTimeFormat)
	}
}

// On SQLite a verification pass only reads: it takes no write lock (mulchat
// begins other transactions IMMEDIATE), so it neither waits for the
// application's writers nor holds them up.
func TestVerifyTakesNoWriteLock(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, legacytest.SQLite(t), legacygen.Options{Users: 60, Seed: 23})
	e.adopt(t)
	if _, err := e.migrator(t, credmigrate.Options{}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	app, err := e.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer app.Rollback()
	if _, err := app.ExecContext(ctx, "UPDATE users SET is_active = is_active WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	// Well under the busy timeout, which a pass waiting for the lock would
	// run into.
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := e.migrator(t, credmigrate.Options{}).Verify(vctx)
	if err != nil {
		t.Fatalf("verify while the application holds the write lock: %v", err)
	}
	if r.Verify.Unverified != 0 || r.Verify.Verified["copied"] == 0 {
		t.Errorf("verify: %+v", r.Verify)
	}
}

// The pre-check reads a user whose users.nats_* are all NULL as its id
// alone (SQLite; PostgreSQL reads users whole): it must see the same users
// and columns as a whole read, with users of both kinds in one range.
func TestPrecheckReadsUsersAsAWholeReadDoes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, legacytest.SQLite(t), legacygen.Options{Users: 300, Seed: 43, UserNATSColumns: someNATSColumns, PreexistingRate: 0.3})
	e.adopt(t)
	m := e.migrator(t, credmigrate.Options{})
	held, err := credmigrate.CompareRangeUsers(ctx, m, 0, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	if held == 0 {
		t.Fatal("no user holds a credential in users.nats_*: the test needs some")
	}
	if _, err := credmigrate.CompareRangeUsers(ctx, m, 10, 20); err != nil {
		t.Fatal(err)
	}
}
