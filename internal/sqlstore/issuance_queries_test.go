package sqlstore_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

func TestUserWithPermissions(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		acc := newAccount(t, db, "chat")
		bot := newUser(t, db, "bot")
		plain := newUser(t, db, "plain")
		mustNil(t, db.UpdateUserNATSCredential(ctx, bot.ID, mulchat.NATSCredential{
			JWT: "jwt", PublicKey: "UBOT", AccountID: acc.ID, AccountPublicKey: acc.PublicKey,
			ExpiresAt: ptr(ts("2030-01-02T03:04:05.123456Z"))}))
		room := newRoom(t, db, "ops", false, bot.ID)
		p1 := &mulchat.Permission{UserID: bot.ID, Type: mulchat.PermPub, Subject: "metrics.>"}
		p2 := &mulchat.Permission{UserID: bot.ID, RoomID: room.ID, Type: mulchat.PermBoth, Subject: "ops.*"}
		mustNil(t, db.CreatePermission(ctx, p1))
		mustNil(t, db.CreatePermission(ctx, p2))

		for _, tc := range []struct {
			name string
			id   int64
		}{{"with grants", bot.ID}, {"without grants", plain.ID}} {
			t.Run(tc.name, func(t *testing.T) {
				u, perms, err := db.UserWithPermissions(ctx, tc.id)
				mustNil(t, err)
				wantUser, err := db.UserByID(ctx, tc.id)
				mustNil(t, err)
				wantPerms, err := db.ListUserPermissions(ctx, tc.id)
				mustNil(t, err)
				if !reflect.DeepEqual(u, wantUser) {
					t.Fatalf("user = %+v\nwant %+v", u, wantUser)
				}
				if !reflect.DeepEqual(perms, wantPerms) {
					t.Fatalf("grants = %+v\nwant %+v", perms, wantPerms)
				}
			})
		}
		_, _, err := db.UserWithPermissions(ctx, 999999)
		wantCode(t, err, mulchat.ENOTFOUND)
	})
}

func TestSetUserNATSCredentialIfNothingToRevoke(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		acc := newAccount(t, db, "chat")
		legacy := newAccount(t, db, "legacy")
		revokedAt := ptr(ts("2026-01-01T00:00:00Z"))
		expires := ptr(ts("2030-01-01T00:00:00Z"))
		newCred := mulchat.NATSCredential{JWT: "new-jwt", PublicKey: "UNEW", AccountID: acc.ID,
			AccountPublicKey: acc.PublicKey, ExpiresAt: ptr(ts("2031-01-01T00:00:00Z"))}
		for i, tc := range []struct {
			name     string
			inactive bool
			stored   mulchat.NATSCredential
			want     bool
		}{
			{"no credential", false, mulchat.NATSCredential{}, true},
			{"legacy JWT without key", false, mulchat.NATSCredential{JWT: "old"}, true},
			{"same key refreshed", false, mulchat.NATSCredential{JWT: "old", PublicKey: "UNEW", ExpiresAt: expires}, true},
			{"same key refreshed in its account", false, mulchat.NATSCredential{JWT: "old", PublicKey: "UNEW",
				AccountID: acc.ID, AccountPublicKey: acc.PublicKey, ExpiresAt: expires}, true},
			{"same key moved from another account", false, mulchat.NATSCredential{JWT: "old", PublicKey: "UNEW",
				AccountID: legacy.ID, AccountPublicKey: legacy.PublicKey, ExpiresAt: expires}, true},
			{"same key revoked in its account", false, mulchat.NATSCredential{JWT: "old", PublicKey: "UNEW",
				AccountID: acc.ID, ExpiredAt: revokedAt}, false},
			{"other key revoked", false, mulchat.NATSCredential{JWT: "old", PublicKey: "UOLD", ExpiredAt: revokedAt}, true},
			{"other key active", false, mulchat.NATSCredential{JWT: "old", PublicKey: "UOLD", ExpiresAt: expires}, false},
			{"same key revoked", false, mulchat.NATSCredential{JWT: "old", PublicKey: "UNEW", ExpiredAt: revokedAt}, false},
			{"user disabled", true, mulchat.NATSCredential{}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// Public keys are unique: give each case its own.
				suffix := string(rune('A' + i))
				u := newUser(t, db, "user"+suffix)
				if tc.stored.PublicKey != "" {
					tc.stored.PublicKey += suffix
				}
				newCred := newCred
				newCred.PublicKey += suffix
				mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, tc.stored))
				if tc.inactive {
					mustNil(t, db.UpdateUserActive(ctx, u.ID, false))
				}
				before, err := db.GetUserNATSCredential(ctx, u.ID)
				mustNil(t, err)
				wrote, err := db.SetUserNATSCredentialIfNothingToRevoke(ctx, u.ID, newCred)
				mustNil(t, err)
				if wrote != tc.want {
					t.Fatalf("wrote = %v, want %v", wrote, tc.want)
				}
				got, err := db.GetUserNATSCredential(ctx, u.ID)
				mustNil(t, err)
				want := before
				if tc.want {
					want = newCred
				}
				if got.JWT != want.JWT || got.PublicKey != want.PublicKey || got.AccountID != want.AccountID ||
					!eqTimePtr(got.ExpiresAt, want.ExpiresAt) || !eqTimePtr(got.ExpiredAt, want.ExpiredAt) {
					t.Fatalf("stored credential = %+v, want %+v", got, want)
				}
			})
		}
		wrote, err := db.SetUserNATSCredentialIfNothingToRevoke(ctx, 999999, newCred)
		if err != nil || wrote {
			t.Fatalf("missing user: wrote %v, err %v", wrote, err)
		}
		_, err = db.SetUserNATSCredentialIfNothingToRevoke(ctx, 1, mulchat.NATSCredential{})
		wantCode(t, err, mulchat.EINVALID)
		u := newUser(t, db, "fk")
		_, err = db.SetUserNATSCredentialIfNothingToRevoke(ctx, u.ID, mulchat.NATSCredential{PublicKey: "U1", AccountID: 777})
		wantCode(t, err, mulchat.EINVALID)
	})
}

// TestRefreshUserNATSJWT: the JWT of the current key is replaced only when
// the recorded expiry covers the new one, and nothing else changes; on
// PostgreSQL the relaxed commit does not outlive the statement.
func TestRefreshUserNATSJWT(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		// One connection, so a setting left behind by the statement would be
		// seen by the checks below.
		db.SQL().SetMaxOpenConns(1)
		acc := newAccount(t, db, "chat")
		other := newAccount(t, db, "other")
		u := newUser(t, db, "alice")
		expires := ts("2030-01-01T00:00:00Z")
		stored := mulchat.NATSCredential{JWT: "old-jwt", PublicKey: "UKEY", AccountID: acc.ID,
			AccountPublicKey: acc.PublicKey, ExpiresAt: ptr(expires)}
		mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, stored))
		refresh := func(c mulchat.NATSCredential) bool {
			t.Helper()
			wrote, err := db.RefreshUserNATSJWT(ctx, u.ID, c)
			mustNil(t, err)
			return wrote
		}
		with := func(f func(c *mulchat.NATSCredential)) mulchat.NATSCredential {
			c := stored
			c.JWT = "new-jwt"
			f(&c)
			return c
		}
		for name, c := range map[string]mulchat.NATSCredential{
			"later expiry":  with(func(c *mulchat.NATSCredential) { c.ExpiresAt = ptr(expires.Add(time.Second)) }),
			"other key":     with(func(c *mulchat.NATSCredential) { c.PublicKey = "UOTHER" }),
			"other account": with(func(c *mulchat.NATSCredential) { c.AccountID = other.ID }),
			"no expiry":     with(func(c *mulchat.NATSCredential) { c.ExpiresAt = nil }),
		} {
			if refresh(c) {
				t.Errorf("%s: written", name)
			}
		}
		got, err := db.GetUserNATSCredential(ctx, u.ID)
		mustNil(t, err)
		if got.JWT != "old-jwt" {
			t.Fatalf("a refused refresh wrote: %+v", got)
		}

		if !refresh(with(func(c *mulchat.NATSCredential) { c.ExpiresAt = ptr(expires.Add(-time.Hour)) })) {
			t.Fatal("covered refresh not written")
		}
		got, err = db.GetUserNATSCredential(ctx, u.ID)
		mustNil(t, err)
		if got.JWT != "new-jwt" || got.PublicKey != "UKEY" || got.AccountID != acc.ID ||
			got.ExpiresAt == nil || !got.ExpiresAt.Equal(expires) || got.ExpiredAt != nil {
			t.Fatalf("after refresh: %+v (the expiry must stay %v)", got, expires)
		}
		if db.Dialect() == sqlstore.DialectPostgres {
			var sc string
			mustNil(t, db.SQL().QueryRowContext(ctx, `SHOW synchronous_commit`).Scan(&sc))
			if sc != "on" {
				t.Fatalf("synchronous_commit = %q after a refresh, want on", sc)
			}
		}

		// Revoked or disabled: never written.
		mustNil(t, db.ExpireUserNATSCredential(ctx, u.ID, ts("2026-06-01T00:00:00Z")))
		if refresh(with(func(c *mulchat.NATSCredential) { c.JWT = "after-revoke" })) {
			t.Error("refresh of a revoked key written")
		}
		v := newUser(t, db, "bob")
		mustNil(t, db.UpdateUserNATSCredential(ctx, v.ID, mulchat.NATSCredential{JWT: "bob-jwt", PublicKey: "UBOB",
			AccountID: acc.ID, AccountPublicKey: acc.PublicKey, ExpiresAt: ptr(expires)}))
		mustNil(t, db.UpdateUserActive(ctx, v.ID, false))
		if wrote, err := db.RefreshUserNATSJWT(ctx, v.ID, mulchat.NATSCredential{JWT: "x", PublicKey: "UBOB",
			AccountID: acc.ID, AccountPublicKey: acc.PublicKey, ExpiresAt: ptr(expires)}); err != nil || wrote {
			t.Errorf("refresh of a disabled user: wrote %v, err %v", wrote, err)
		}
	})
}

// TestSetCredentialKeepsLaterExpiry: a refresh of the same unrevoked key
// written after a concurrent one with a longer TTL keeps the later recorded
// expiry (the key's revocation entry is pruned at it), on both statements of
// SetUserNATSCredentialIfNothingToRevoke and on UpdateUserNATSCredential; a
// new key or a revoked one takes the expiry given.
func TestSetCredentialKeepsLaterExpiry(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		acc := newAccount(t, db, "chat")
		long, short := ts("2030-01-01T00:00:00Z"), ts("2029-06-01T00:00:00Z")
		for _, accountID := range []int64{acc.ID, 0} { // 0: the general statement on SQLite too
			u := newUser(t, db, fmt.Sprintf("keep%d", accountID))
			key, newKey := fmt.Sprintf("UKEEP%d", accountID), fmt.Sprintf("UNEW%d", accountID)
			c := mulchat.NATSCredential{JWT: "long", PublicKey: key, AccountID: accountID,
				AccountPublicKey: acc.PublicKey, ExpiresAt: ptr(long)}
			mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, c))
			c.JWT, c.ExpiresAt = "short", ptr(short)
			wrote, err := db.SetUserNATSCredentialIfNothingToRevoke(ctx, u.ID, c)
			mustNil(t, err)
			got, err := db.UserByID(ctx, u.ID)
			mustNil(t, err)
			if !wrote || got.NATS.JWT != "short" || got.NATS.ExpiresAt == nil || !got.NATS.ExpiresAt.Equal(long) {
				t.Fatalf("account %d: wrote %v, stored %q expiring %v; want the new JWT with the later expiry %v",
					accountID, wrote, got.NATS.JWT, got.NATS.ExpiresAt, long)
			}
			// So does the general write (UpdateUserNATSCredential).
			c.JWT = "short again"
			mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, c))
			got, err = db.UserByID(ctx, u.ID)
			mustNil(t, err)
			if got.NATS.JWT != "short again" || got.NATS.ExpiresAt == nil || !got.NATS.ExpiresAt.Equal(long) {
				t.Fatalf("account %d, UpdateUserNATSCredential: stored %q expiring %v; want the later expiry %v",
					accountID, got.NATS.JWT, got.NATS.ExpiresAt, long)
			}
			// Another key takes the expiry it is given.
			c.PublicKey, c.ExpiresAt = newKey, ptr(short)
			mustNil(t, db.ExpireUserNATSCredential(ctx, u.ID, ts("2026-01-01T00:00:00Z")))
			_, err = db.SetUserNATSCredentialIfNothingToRevoke(ctx, u.ID, c)
			mustNil(t, err)
			got, err = db.UserByID(ctx, u.ID)
			mustNil(t, err)
			if got.NATS.PublicKey != newKey || !got.NATS.ExpiresAt.Equal(short) {
				t.Fatalf("new key: stored %q expiring %v, want %s expiring %v", got.NATS.PublicKey, got.NATS.ExpiresAt, newKey, short)
			}
		}
	})
}

// TestRefreshUserNATSJWTConcurrent: refreshes racing for many users (written
// in groups on PostgreSQL) each get their own row's outcome: written for a
// covered key, refused for a revoked key or a disabled user, EINVALID for bad
// text without failing the others, and every row ends up holding a JWT
// written for it.
func TestRefreshUserNATSJWTConcurrent(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		acc := newAccount(t, db, "chat")
		expires := ts("2030-01-01T00:00:00Z")
		const users = 24
		ids := make([]int64, users)
		for i := range ids {
			u := newUser(t, db, fmt.Sprintf("user%d", i))
			ids[i] = u.ID
			mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, mulchat.NATSCredential{JWT: "old",
				PublicKey: fmt.Sprintf("UKEY%d", i), AccountID: acc.ID, AccountPublicKey: acc.PublicKey, ExpiresAt: ptr(expires)}))
			switch i % 6 {
			case 1:
				mustNil(t, db.ExpireUserNATSCredential(ctx, u.ID, ts("2026-06-01T00:00:00Z")))
			case 2:
				mustNil(t, db.UpdateUserActive(ctx, u.ID, false))
			}
		}
		const rounds = 5
		var wg sync.WaitGroup
		for r := range rounds {
			for i, id := range ids {
				// Two refreshes per user and round, racing each other too.
				for dup := range 2 {
					wg.Go(func() {
						c := mulchat.NATSCredential{JWT: fmt.Sprintf("jwt-%d-%d-%d", i, r, dup), PublicKey: fmt.Sprintf("UKEY%d", i),
							AccountID: acc.ID, AccountPublicKey: acc.PublicKey, ExpiresAt: ptr(expires.Add(-time.Hour))}
						if i%6 == 3 && dup == 1 {
							c.JWT = "bad\x00text"
						}
						wrote, err := db.RefreshUserNATSJWT(ctx, id, c)
						switch {
						case i%6 == 3 && dup == 1:
							if err == nil || wrote {
								t.Errorf("user %d: bad text: wrote %v, err %v", i, wrote, err)
							} else {
								wantCode(t, err, mulchat.EINVALID)
							}
						case err != nil:
							t.Errorf("user %d: %v", i, err)
						case wrote != (i%6 != 1 && i%6 != 2):
							t.Errorf("user %d (case %d): wrote %v", i, i%6, wrote)
						}
					})
				}
			}
		}
		wg.Wait()
		for i, id := range ids {
			got, err := db.GetUserNATSCredential(ctx, id)
			mustNil(t, err)
			if i%6 == 1 || i%6 == 2 {
				if got.JWT != "old" {
					t.Errorf("user %d (case %d): JWT %q written", i, i%6, got.JWT)
				}
				continue
			}
			if !strings.HasPrefix(got.JWT, fmt.Sprintf("jwt-%d-", i)) || got.PublicKey != fmt.Sprintf("UKEY%d", i) ||
				got.ExpiresAt == nil || !got.ExpiresAt.Equal(expires) || got.ExpiredAt != nil {
				t.Errorf("user %d: %+v", i, got)
			}
		}
	})
}

// TestRefreshSkipsLockedRow: on PostgreSQL a refresh whose row another
// transaction holds locked reports "not written" at once (its caller then
// takes the durable path, which waits for the lock under its own context),
// and never holds up the refreshes of other users grouped with it.
func TestRefreshSkipsLockedRow(t *testing.T) {
	db := sqltest.OpenPostgres(t)
	ctx := context.Background()
	acc := newAccount(t, db, "chat")
	expires := ts("2030-01-01T00:00:00Z")
	cred := func(i int) mulchat.NATSCredential {
		return mulchat.NATSCredential{JWT: fmt.Sprintf("jwt-%d", i), PublicKey: fmt.Sprintf("UKEY%d", i), AccountID: acc.ID,
			AccountPublicKey: acc.PublicKey, ExpiresAt: ptr(expires)}
	}
	var ids []int64
	for i := range 6 {
		u := newUser(t, db, fmt.Sprintf("user%d", i))
		mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, cred(i)))
		ids = append(ids, u.ID)
	}
	tx, err := db.SQL().BeginTx(ctx, nil)
	mustNil(t, err)
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT id FROM users WHERE id = $1 FOR UPDATE`, ids[0]); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	var wg sync.WaitGroup
	for round := range 3 {
		for i, id := range ids {
			wg.Go(func() {
				c := cred(i)
				c.JWT = fmt.Sprintf("new-%d-%d", i, round)
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				ok, err := db.RefreshUserNATSJWT(rctx, id, c)
				if err != nil {
					t.Errorf("user %d: %v", i, err)
				}
				if i == 0 && ok {
					t.Error("the locked row was written")
				}
				if i > 0 && !ok {
					t.Errorf("user %d: not written beside a locked row", i)
				}
			})
		}
	}
	wg.Wait()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("refreshes beside a locked row took %v", d)
	}
	mustNil(t, tx.Rollback())
	for i, id := range ids[1:] {
		got, err := db.GetUserNATSCredential(ctx, id)
		mustNil(t, err)
		if !strings.HasPrefix(got.JWT, fmt.Sprintf("new-%d-", i+1)) {
			t.Errorf("user %d: JWT %q", i+1, got.JWT)
		}
	}
	got, err := db.GetUserNATSCredential(ctx, ids[0])
	mustNil(t, err)
	if got.JWT != "jwt-0" {
		t.Errorf("locked user: JWT %q", got.JWT)
	}
}

// TestSQLiteRefreshQueueHonoursContext: on SQLite refreshes write one at a
// time; one queued behind a refresh that waits for the database's write lock
// gives up when its own context ends instead of waiting its turn. (With a
// queue that ignored the context, a plain mutex, it waits out the other's
// 10 s busy timeout and this test fails; without any queue it passes, as the
// driver's busy wait ends with the context too.)
func TestSQLiteRefreshQueueHonoursContext(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	acc := newAccount(t, db, "chat")
	expires := ts("2030-01-01T00:00:00Z")
	var creds []mulchat.NATSCredential
	var ids []int64
	for i := range 2 {
		u := newUser(t, db, fmt.Sprintf("user%d", i))
		c := mulchat.NATSCredential{JWT: "old", PublicKey: fmt.Sprintf("UKEY%d", i), AccountID: acc.ID,
			AccountPublicKey: acc.PublicKey, ExpiresAt: ptr(expires)}
		mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, c))
		c.JWT = "new"
		creds = append(creds, c)
		ids = append(ids, u.ID)
	}
	// Hold SQLite's write lock (BEGIN IMMEDIATE).
	tx, err := db.SQL().BeginTx(ctx, nil)
	mustNil(t, err)
	defer tx.Rollback()

	first := make(chan error, 1)
	go func() {
		ok, err := db.RefreshUserNATSJWT(ctx, ids[0], creds[0])
		if err == nil && !ok {
			err = fmt.Errorf("not written")
		}
		first <- err
	}()
	time.Sleep(100 * time.Millisecond) // the first refresh now waits for the lock
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if ok, err := db.RefreshUserNATSJWT(short, ids[1], creds[1]); err == nil || ok {
		t.Fatalf("queued refresh: wrote %v, err %v; want the context's error", ok, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("queued refresh gave up after %v", d)
	}
	mustNil(t, tx.Rollback())
	if err := <-first; err != nil {
		t.Fatalf("first refresh: %v", err)
	}
}
