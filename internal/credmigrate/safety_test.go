package credmigrate_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
)

// issue signs a fresh user credential with the legacy account key, issued
// at iat, as mulchat serve (holding the imported key) or the legacy app would.
func issue(t testing.TB, res *legacygen.Result, iat time.Time) (pub, token string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ = kp.PublicKey()
	acct, err := nkeys.FromSeed(res.AccountSeed)
	if err != nil {
		t.Fatal(err)
	}
	if token, err = legacygen.EncodeUserJWT(jwt.NewUserClaims(pub), acct, iat); err != nil {
		t.Fatal(err)
	}
	return pub, token
}

// Credentials written to users.nats_* while the migration runs (as mulchat
// serve would, with a later issued-at) are not overwritten by older legacy
// rows; legacy rows written meanwhile are picked up by the final pass.
func TestConcurrentWrites(t *testing.T) {
	legacytest.ForEach(t, func(t *testing.T, db *legacytest.DB) {
		ctx := context.Background()
		e := newEnv(t, db, legacygen.Options{Users: 200, Seed: 4, PreexistingRate: -1, BadJWTRate: -1, SubjectMismatchRate: -1})
		e.adopt(t)
		win := expectedWinners(t, e)
		var ids []int64
		for uid := range win {
			ids = append(ids, uid)
		}
		slicesSort(ids)
		early, catch, late := ids[0], ids[1], ids[len(ids)-1]
		now := time.Now().UTC().Truncate(time.Second)
		lateKey, lateJWT := issue(t, e.res, now)
		earlyKey, earlyJWT := issue(t, e.res, now)
		catchKey, catchJWT := issue(t, e.res, now)
		calls := 0
		hook := func(ctx context.Context, last int64) error {
			calls++
			if calls != 1 {
				return nil
			}
			if last < catch || last >= late {
				t.Fatalf("first batch ended at %d; test needs early users in it", last)
			}
			// mulchat serve issues credentials to a user not yet migrated
			// and to one already migrated.
			for _, c := range []struct {
				id       int64
				pub, tok string
			}{{late, lateKey, lateJWT}, {early, earlyKey, earlyJWT}} {
				exp := now.Add(24 * time.Hour)
				if err := e.store.UpdateUserNATSCredential(ctx, c.id, mulchat.NATSCredential{JWT: c.tok, PublicKey: c.pub, AccountID: e.res.AccountID, AccountPublicKey: e.res.AccountPublicKey, ExpiresAt: &exp}); err != nil {
					t.Fatal(err)
				}
			}
			// The legacy app, still running, writes a new row for a
			// migrated user.
			q := "INSERT INTO nats_user_credentials (user_id, jwt, public_key, account_id, account_public_key, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
			var ts any = now.Format(credmigrate.SQLiteTimeFormat)
			if e.dialect == "postgres" {
				q = "INSERT INTO nats_user_credentials (user_id, jwt, public_key, account_id, account_public_key, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
				ts = now
			}
			if _, err := e.db.ExecContext(ctx, q, catch, catchJWT, catchKey, e.res.AccountID, e.res.AccountPublicKey, ts, ts); err != nil {
				t.Fatal(err)
			}
			return nil
		}
		r, err := e.migrator(t, credmigrate.Options{BatchSize: 5, BatchHook: hook}).Run(ctx)
		if err != nil {
			t.Fatalf("run: %v %+v", err, r.Verify)
		}
		for _, c := range []struct {
			id  int64
			pub string
		}{{late, lateKey}, {early, earlyKey}, {catch, catchKey}} {
			u, err := e.store.UserByID(ctx, c.id)
			if err != nil {
				t.Fatal(err)
			}
			if u.NATS.PublicKey != c.pub {
				t.Errorf("user %d holds %s, want the newer %s", c.id, u.NATS.PublicKey, c.pub)
			}
		}
		if r.Verify.Written != 1 || r.Verify.Verified["newer_kept"] != 2 {
			t.Errorf("final pass: written %d (want 1 caught up), verified %v", r.Verify.Written, r.Verify.Verified)
		}
	})
}

// A dry run changes nothing, and says what a real run would change.
func TestDryRunChangesNothing(t *testing.T) {
	legacytest.ForEach(t, func(t *testing.T, db *legacytest.DB) {
		ctx := context.Background()
		e := newEnv(t, db, legacygen.Options{Users: 150, Seed: 5, UserNATSColumns: someNATSColumns})
		before, err := legacytest.Dump(ctx, e.db, e.dialect)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := credmigrate.Adopt(ctx, e.db, e.dialect, credmigrate.AdoptOptions{DryRun: true,
			Migrations: migrationsFor(e.dialect), VersionTable: versionTable}); err != nil {
			t.Fatal(err)
		}
		after, err := legacytest.Dump(ctx, e.db, e.dialect)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatal("adopt --dry-run changed the database")
		}
		e.adopt(t)
		if before, err = legacytest.Dump(ctx, e.db, e.dialect); err != nil {
			t.Fatal(err)
		}
		r, err := e.migrator(t, credmigrate.Options{DryRun: true}).Run(ctx)
		if err != nil {
			t.Fatalf("dry run: %v", err)
		}
		if after, err = legacytest.Dump(ctx, e.db, e.dialect); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(before, after) {
			for tbl := range before {
				if !reflect.DeepEqual(before[tbl], after[tbl]) {
					t.Errorf("dry run changed %s: %d rows before, %d after", tbl, len(before[tbl]), len(after[tbl]))
				}
			}
			for tbl := range after {
				if _, ok := before[tbl]; !ok {
					t.Errorf("dry run created %s", tbl)
				}
			}
			t.Fatal("dry run changed the database")
		}
		if r.Copy.Written != r.Precheck.ToWrite || r.Copy.Written == 0 || r.Verify.Unverified != 0 ||
			r.Seeds.LegacyRows != int64(e.res.RawSeeds) || r.Passwords.Rehashed != int64(e.res.PlaintextPasswords) ||
			r.Sessions == nil || r.Sessions.BackedUp == 0 {
			t.Fatalf("dry run report: copy %+v seeds %+v passwords %+v sessions %+v", r.Copy, r.Seeds, r.Passwords, r.Sessions)
		}
	})
}

// The drop refuses on a failed verification, without a backup, without
// confirmation, and while something still depends on the table.
func TestDropRefuses(t *testing.T) {
	legacytest.ForEach(t, func(t *testing.T, db *legacytest.DB) {
		ctx := context.Background()
		e := newEnv(t, db, legacygen.Options{Users: 120, Seed: 6})
		e.adopt(t)
		m := e.migrator(t, credmigrate.Options{})
		dir := t.TempDir()
		// Before the migration: verification fails.
		if _, err := m.DropTable(ctx, credmigrate.DropOptions{BackupPath: filepath.Join(dir, "a"), Confirm: yes}); !errors.Is(err, credmigrate.ErrUnverified) {
			t.Fatalf("drop before migrating: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "a")); err == nil {
			t.Error("a backup was written although verification failed")
		}
		if _, err := m.Run(ctx); err != nil {
			t.Fatal(err)
		}
		for name, opts := range map[string]credmigrate.DropOptions{
			"no backup":       {Confirm: yes},
			"no confirmation": {BackupPath: filepath.Join(dir, "b")},
			"declined":        {BackupPath: filepath.Join(dir, "c"), Confirm: func(string) (bool, error) { return false, nil }},
		} {
			if _, err := m.DropTable(ctx, opts); err == nil {
				t.Fatalf("%s: drop succeeded", name)
			}
			if !e.tableExists(t, "nats_user_credentials") {
				t.Fatalf("%s: table dropped", name)
			}
		}
		// A dependency stops the drop (RESTRICT).
		if _, err := e.db.Exec("CREATE VIEW legacy_report AS SELECT user_id, public_key FROM nats_user_credentials"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.DropTable(ctx, credmigrate.DropOptions{BackupPath: filepath.Join(dir, "d"), Confirm: yes}); err == nil {
			t.Fatal("drop with a dependent view succeeded")
		}
		if !e.tableExists(t, "nats_user_credentials") {
			t.Fatal("table dropped despite a dependent view")
		}
		if _, err := e.db.Exec("DROP VIEW legacy_report"); err != nil {
			t.Fatal(err)
		}
		// A corrupted user fails verification, so the drop refuses.
		if _, err := e.db.Exec("UPDATE users SET nats_jwt = 'x' WHERE id = (SELECT min(c.user_id) FROM nats_user_credentials c JOIN users u ON u.id = c.user_id)"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.DropTable(ctx, credmigrate.DropOptions{BackupPath: filepath.Join(dir, "e"), Confirm: yes}); !errors.Is(err, credmigrate.ErrUnverified) {
			t.Fatalf("drop after corruption: %v", err)
		}
		if !e.tableExists(t, "nats_user_credentials") {
			t.Fatal("table dropped despite failed verification")
		}
	})
}
