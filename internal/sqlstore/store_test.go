package sqlstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

func TestUsers(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		before := time.Now().UTC().Add(-time.Second)
		u := &mulchat.User{Username: "alice", Email: "alice@example.com", HashedPassword: "hash1", IsActive: true, MustRotatePassword: true}
		mustNil(t, db.CreateUser(ctx, u))
		if u.ID == 0 || u.CreatedAt.Before(before) || u.CreatedAt.Location() != time.UTC {
			t.Fatalf("CreateUser set ID=%d CreatedAt=%v", u.ID, u.CreatedAt)
		}
		bob := newUser(t, db, "bob")

		got, err := db.UserByID(ctx, u.ID)
		mustNil(t, err)
		if got.Username != "alice" || got.Email != "alice@example.com" || got.HashedPassword != "hash1" ||
			!got.IsActive || !got.MustRotatePassword || !got.CreatedAt.Equal(u.CreatedAt) {
			t.Fatalf("UserByID = %+v, want %+v", got, u)
		}
		if got.NATS.Status(time.Now()) != mulchat.CredentialNone {
			t.Fatalf("new user credential status = %s", got.NATS.Status(time.Now()))
		}
		got, err = db.UserByUsername(ctx, "bob")
		mustNil(t, err)
		if got.ID != bob.ID || got.Email != "" {
			t.Fatalf("UserByUsername(bob) = %+v", got)
		}

		all, err := db.ListUsers(ctx)
		mustNil(t, err)
		if got := usernames(all); strings.Join(got, ",") != "alice,bob" {
			t.Fatalf("ListUsers = %v", got)
		}

		mustNil(t, db.UpdateUserActive(ctx, u.ID, false))
		mustNil(t, db.UpdateUserPassword(ctx, u.ID, "hash2"))
		got, err = db.UserByID(ctx, u.ID)
		mustNil(t, err)
		if got.IsActive || got.HashedPassword != "hash2" || got.MustRotatePassword {
			t.Fatalf("after updates: %+v", got)
		}

		// Not found, everywhere.
		_, err = db.UserByID(ctx, 999999)
		wantCode(t, err, mulchat.ENOTFOUND)
		if mulchat.ErrorMessage(err) != "user not found" {
			t.Fatalf("message = %q", mulchat.ErrorMessage(err))
		}
		_, err = db.UserByUsername(ctx, "nobody")
		wantCode(t, err, mulchat.ENOTFOUND)
		_, err = db.UserByNATSPublicKey(ctx, "UNOBODY")
		wantCode(t, err, mulchat.ENOTFOUND)
		_, err = db.UserByNATSPublicKey(ctx, "")
		wantCode(t, err, mulchat.ENOTFOUND)
		wantCode(t, db.UpdateUserActive(ctx, 999999, true), mulchat.ENOTFOUND)
		wantCode(t, db.UpdateUserPassword(ctx, 999999, "x"), mulchat.ENOTFOUND)
		_, err = db.GetUserNATSCredential(ctx, 999999)
		wantCode(t, err, mulchat.ENOTFOUND)
		wantCode(t, db.UpdateUserNATSCredential(ctx, 999999, mulchat.NATSCredential{JWT: "x"}), mulchat.ENOTFOUND)

		// Bad input.
		wantCode(t, db.CreateUser(ctx, &mulchat.User{Username: "", HashedPassword: "h"}), mulchat.EINVALID)
		wantCode(t, db.CreateUser(ctx, &mulchat.User{Username: "nohash"}), mulchat.EINVALID)
		wantCode(t, db.CreateUser(ctx, &mulchat.User{Username: "x", HashedPassword: "h",
			NATS: mulchat.NATSCredential{AccountID: 424242}}), mulchat.EINVALID)
	})
}

func TestUniqueConflicts(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		acc := newAccount(t, db, "chat")
		alice := &mulchat.User{Username: "alice", Email: "a@example.com", HashedPassword: "h",
			NATS: mulchat.NATSCredential{PublicKey: "UALICE", JWT: "jwt", AccountID: acc.ID}}
		mustNil(t, db.CreateUser(ctx, alice))
		bob := newUser(t, db, "bob")
		room := newRoom(t, db, "general", true, alice.ID)
		mustNil(t, db.CreateNATSOperator(ctx, &mulchat.NATSOperator{Name: "op", PublicKey: "OKEY", JWT: "jwt"}))
		mustNil(t, db.CreateAPIToken(ctx, &mulchat.APIToken{UserID: alice.ID, TokenHash: "abc", ExpiresAt: time.Now().Add(time.Hour)}))

		tests := []struct {
			name    string
			do      func() error
			message string
		}{
			{"username", func() error {
				return db.CreateUser(ctx, &mulchat.User{Username: "alice", HashedPassword: "h"})
			}, "username already taken"},
			{"email", func() error {
				return db.CreateUser(ctx, &mulchat.User{Username: "alice2", Email: "a@example.com", HashedPassword: "h"})
			}, "email already registered"},
			{"nats public key on create", func() error {
				return db.CreateUser(ctx, &mulchat.User{Username: "alice3", HashedPassword: "h",
					NATS: mulchat.NATSCredential{PublicKey: "UALICE"}})
			}, "NATS public key already in use"},
			{"nats public key on update", func() error {
				return db.UpdateUserNATSCredential(ctx, bob.ID, mulchat.NATSCredential{PublicKey: "UALICE", JWT: "j"})
			}, "NATS public key already in use"},
			{"room name", func() error {
				return db.CreateRoom(ctx, &mulchat.Room{Name: "general"}, bob.ID)
			}, "room name already taken"},
			{"account name", func() error {
				return db.CreateNATSAccount(ctx, &mulchat.NATSAccount{Name: "chat", PublicKey: "AOTHER"})
			}, "NATS account name already exists"},
			{"account public key", func() error {
				return db.CreateNATSAccount(ctx, &mulchat.NATSAccount{Name: "other", PublicKey: acc.PublicKey})
			}, "NATS account public key already exists"},
			{"membership", func() error {
				return db.AddRoomMember(ctx, room.ID, alice.ID, mulchat.RoleMember)
			}, "user is already a member of this room"},
			{"second operator", func() error {
				return db.CreateNATSOperator(ctx, &mulchat.NATSOperator{Name: "op2", PublicKey: "OKEY2", JWT: "jwt"})
			}, "a NATS operator already exists"},
			{"token hash", func() error {
				return db.CreateAPIToken(ctx, &mulchat.APIToken{UserID: bob.ID, TokenHash: "abc", ExpiresAt: time.Now()})
			}, "API token already exists"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.do()
				wantCode(t, err, mulchat.ECONFLICT)
				if got := mulchat.ErrorMessage(err); got != tt.message {
					t.Fatalf("message = %q, want %q", got, tt.message)
				}
			})
		}

		// Several users may have no email and no credential: NULLs do not
		// collide.
		newUser(t, db, "carol")
		newUser(t, db, "dave")
		users, err := db.ListUsers(ctx)
		mustNil(t, err)
		if len(users) != 4 {
			t.Fatalf("users = %v", usernames(users))
		}
	})
}

func TestCreateUserConcurrentSameUsername(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		const n = 16
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = db.CreateUser(context.Background(), &mulchat.User{Username: "racer", HashedPassword: "h"})
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch mulchat.ErrorCode(err) {
			case "":
				ok++
			case mulchat.ECONFLICT:
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d creations succeeded, want exactly 1", ok)
		}
		users, err := db.ListUsers(context.Background())
		mustNil(t, err)
		if len(users) != 1 {
			t.Fatalf("users = %v", usernames(users))
		}
	})
}

func TestConcurrentWriters(t *testing.T) {
	// Distinct writers, in and out of transactions, must all succeed: on
	// SQLite they queue on the write lock instead of failing with SQLITE_BUSY.
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		owner := newUser(t, db, "owner")
		const n = 12
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		for i := range n {
			wg.Add(2)
			go func() {
				defer wg.Done()
				errs <- db.CreateUser(ctx, &mulchat.User{Username: "user" + strings.Repeat("x", i), HashedPassword: "h"})
			}()
			go func() {
				defer wg.Done()
				errs <- db.InTx(ctx, func(q mulchat.Queries) error {
					if _, err := q.UserByID(ctx, owner.ID); err != nil {
						return err
					}
					return q.CreateRoom(ctx, &mulchat.Room{Name: "room" + strings.Repeat("y", i)}, owner.ID)
				})
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		rooms, err := db.ListRooms(ctx)
		mustNil(t, err)
		if len(rooms) != n {
			t.Fatalf("%d rooms, want %d", len(rooms), n)
		}
	})
}

func TestTextRoundTrip(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		owner := newUser(t, db, "owner")
		tests := []struct {
			name string
			text string
			code string // "" when the text must round-trip
		}{
			{"sql quote", `o'brien"; DROP TABLE users; --`, ""},
			{"sql wildcards", `100% _match_ \ back\slash`, ""},
			{"placeholders", `$1 ? :name @p`, ""},
			{"unicode", "Zoë 日本語 🙂 مرحبا \u200d\u202e", ""},
			{"long unicode", strings.Repeat("€🙂", 100), ""},
			{"control chars", "tab\there\nnewline\x7f", ""},
			{"nul", "a\x00b", mulchat.EINVALID},
			{"invalid utf-8", "a\xffb", mulchat.EINVALID},
			{"too long for a unique column", strings.Repeat("🙂", 300), mulchat.EINVALID},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				u := &mulchat.User{Username: tt.text, Email: tt.text, HashedPassword: tt.text}
				err := db.CreateUser(ctx, u)
				if tt.code != "" {
					wantCode(t, err, tt.code)
					_, err = db.UserByUsername(ctx, tt.text)
					if code := mulchat.ErrorCode(err); code != tt.code && code != mulchat.ENOTFOUND {
						t.Fatalf("lookup: %v", err)
					}
					return
				}
				mustNil(t, err)
				got, err := db.UserByUsername(ctx, tt.text)
				mustNil(t, err)
				if got.ID != u.ID || got.Username != tt.text || got.Email != tt.text || got.HashedPassword != tt.text {
					t.Fatalf("round trip: got %+v", got)
				}
				r := &mulchat.Room{Name: "room-" + tt.name, Description: tt.text}
				mustNil(t, db.CreateRoom(ctx, r, owner.ID))
				gotRoom, err := db.RoomByID(ctx, r.ID)
				mustNil(t, err)
				if gotRoom.Description != tt.text {
					t.Fatalf("description round trip: %q", gotRoom.Description)
				}
			})
		}
		// A long description (not a unique column) round-trips at any length.
		long := strings.Repeat("naïve café ", 2000)
		r := &mulchat.Room{Name: "long", Description: long}
		mustNil(t, db.CreateRoom(ctx, r, owner.ID))
		got, err := db.RoomByName(ctx, "long")
		mustNil(t, err)
		if got.Description != long {
			t.Fatal("long description did not round-trip")
		}
		// The bad-input cases left nothing behind: owner, 6 round-tripped
		// users.
		users, err := db.ListUsers(ctx)
		mustNil(t, err)
		if len(users) != 7 {
			t.Fatalf("%d users, want 7", len(users))
		}
	})
}

func TestInTx(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		boom := errors.New("boom")

		// fn's error rolls everything back.
		err := db.InTx(ctx, func(q mulchat.Queries) error {
			u := &mulchat.User{Username: "ghost", HashedPassword: "h"}
			if err := q.CreateUser(ctx, u); err != nil {
				return err
			}
			if err := q.CreateRoom(ctx, &mulchat.Room{Name: "ghost-room"}, u.ID); err != nil {
				return err
			}
			// Inside the transaction the writes are visible.
			if _, err := q.UserByUsername(ctx, "ghost"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v, want boom", err)
		}
		_, err = db.UserByUsername(ctx, "ghost")
		wantCode(t, err, mulchat.ENOTFOUND)
		_, err = db.RoomByName(ctx, "ghost-room")
		wantCode(t, err, mulchat.ENOTFOUND)

		// A failed statement whose error fn swallows still rolls back, on
		// both databases.
		newUser(t, db, "taken")
		err = db.InTx(ctx, func(q mulchat.Queries) error {
			if err := q.CreateUser(ctx, &mulchat.User{Username: "first", HashedPassword: "h"}); err != nil {
				return err
			}
			err := q.CreateUser(ctx, &mulchat.User{Username: "taken", HashedPassword: "h"})
			wantCode(t, err, mulchat.ECONFLICT)
			_, err = q.UserByUsername(ctx, "first")
			if err == nil {
				t.Error("statement after a failed one succeeded")
			}
			return nil
		})
		if err == nil {
			t.Fatal("InTx with a failed statement committed")
		}
		_, err = db.UserByUsername(ctx, "first")
		wantCode(t, err, mulchat.ENOTFOUND)

		// A not-found lookup does not fail the transaction.
		err = db.InTx(ctx, func(q mulchat.Queries) error {
			if _, err := q.UserByUsername(ctx, "nobody"); mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
				t.Errorf("lookup: %v", err)
			}
			return q.CreateUser(ctx, &mulchat.User{Username: "committed", HashedPassword: "h"})
		})
		mustNil(t, err)
		_, err = db.UserByUsername(ctx, "committed")
		mustNil(t, err)

		// A panic rolls back and propagates.
		func() {
			defer func() {
				if recover() == nil {
					t.Error("panic did not propagate")
				}
			}()
			_ = db.InTx(ctx, func(q mulchat.Queries) error {
				_ = q.CreateUser(ctx, &mulchat.User{Username: "panicker", HashedPassword: "h"})
				panic("boom")
			})
		}()
		_, err = db.UserByUsername(ctx, "panicker")
		wantCode(t, err, mulchat.ENOTFOUND)
	})
}

func TestContextCanceled(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := db.ListUsers(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("ListUsers on a canceled context = %v", err)
		}
		err = db.InTx(ctx, func(q mulchat.Queries) error { return nil })
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("InTx on a canceled context = %v", err)
		}
	})
}

func TestNATSCredential(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		acc := newAccount(t, db, "chat")
		u := newUser(t, db, "alice")
		nobody := newUser(t, db, "nobody")

		c, err := db.GetUserNATSCredential(ctx, u.ID)
		mustNil(t, err)
		if c != (mulchat.NATSCredential{}) {
			t.Fatalf("fresh credential = %+v", c)
		}

		want := mulchat.NATSCredential{
			JWT:              "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.sig",
			SeedHash:         strings.Repeat("ab", 32),
			PublicKey:        "UALICEPUBLICKEY",
			AccountID:        acc.ID,
			AccountPublicKey: acc.PublicKey,
			ExpiresAt:        ptr(ts("2030-01-02T03:04:05.123456Z")),
			ExpiredAt:        ptr(ts("2029-12-31T23:59:59.999999Z")),
		}
		mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, want))
		got, err := db.GetUserNATSCredential(ctx, u.ID)
		mustNil(t, err)
		if got.JWT != want.JWT || got.SeedHash != want.SeedHash || got.PublicKey != want.PublicKey ||
			got.AccountID != want.AccountID || got.AccountPublicKey != want.AccountPublicKey ||
			!eqTimePtr(got.ExpiresAt, want.ExpiresAt) || !eqTimePtr(got.ExpiredAt, want.ExpiredAt) {
			t.Fatalf("credential round trip:\n got %+v\nwant %+v", got, want)
		}
		byKey, err := db.UserByNATSPublicKey(ctx, "UALICEPUBLICKEY")
		mustNil(t, err)
		if byKey.ID != u.ID || byKey.NATS.JWT != want.JWT || !eqTimePtr(byKey.NATS.ExpiresAt, want.ExpiresAt) {
			t.Fatalf("UserByNATSPublicKey = %+v", byKey)
		}

		// Sub-microsecond precision is dropped identically on both.
		mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, mulchat.NATSCredential{
			PublicKey: "UALICEPUBLICKEY", ExpiresAt: ptr(ts("2030-01-02T03:04:05.123456789Z"))}))
		got, err = db.GetUserNATSCredential(ctx, u.ID)
		mustNil(t, err)
		if !got.ExpiresAt.Equal(ts("2030-01-02T03:04:05.123456Z")) || got.JWT != "" || got.AccountID != 0 || got.ExpiredAt != nil {
			t.Fatalf("after partial update: %+v", got)
		}

		// Expire (revoke).
		at := ts("2026-05-06T07:08:09.5Z")
		mustNil(t, db.ExpireUserNATSCredential(ctx, u.ID, at))
		mustNil(t, db.ExpireUserNATSCredential(ctx, u.ID, at.Add(time.Hour)))
		got, err = db.GetUserNATSCredential(ctx, u.ID)
		mustNil(t, err)
		if !eqTimePtr(got.ExpiredAt, &at) || got.Status(at) != mulchat.CredentialRevoked {
			t.Fatalf("after expire: %+v", got)
		}
		wantCode(t, db.ExpireUserNATSCredential(ctx, nobody.ID, at), mulchat.ENOTFOUND)
		wantCode(t, db.ExpireUserNATSCredential(ctx, 999999, at), mulchat.ENOTFOUND)

		// The zero credential clears all seven columns.
		mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, mulchat.NATSCredential{}))
		got, err = db.GetUserNATSCredential(ctx, u.ID)
		mustNil(t, err)
		if got != (mulchat.NATSCredential{}) {
			t.Fatalf("cleared credential = %+v", got)
		}
		// An account that does not exist is refused.
		err = db.UpdateUserNATSCredential(ctx, u.ID, mulchat.NATSCredential{PublicKey: "U1", AccountID: 777})
		wantCode(t, err, mulchat.EINVALID)
	})
}

func TestListUsersWithActiveNATSCredentials(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		now := ts("2027-03-04T05:06:07.000001Z")
		creds := []struct {
			user string
			c    mulchat.NATSCredential
		}{
			{"none", mulchat.NATSCredential{}},
			{"no-expiry", mulchat.NATSCredential{PublicKey: "U1", JWT: "j"}},
			{"future", mulchat.NATSCredential{PublicKey: "U2", JWT: "j", ExpiresAt: ptr(now.Add(time.Microsecond))}},
			{"exactly-now", mulchat.NATSCredential{PublicKey: "U3", JWT: "j", ExpiresAt: ptr(now)}},
			{"past", mulchat.NATSCredential{PublicKey: "U4", JWT: "j", ExpiresAt: ptr(now.Add(-time.Hour))}},
			{"revoked", mulchat.NATSCredential{PublicKey: "U5", JWT: "j", ExpiresAt: ptr(now.Add(time.Hour)), ExpiredAt: ptr(now.Add(-time.Minute))}},
			{"jwt-only", mulchat.NATSCredential{JWT: "j", ExpiresAt: ptr(now.Add(24 * time.Hour))}},
		}
		var want []string
		for _, c := range creds {
			u := newUser(t, db, c.user)
			mustNil(t, db.UpdateUserNATSCredential(ctx, u.ID, c.c))
			if c.c.Status(now) == mulchat.CredentialActive {
				want = append(want, c.user)
			}
		}
		// An inactive user with an active credential is still listed.
		disabled := newUser(t, db, "disabled")
		mustNil(t, db.UpdateUserNATSCredential(ctx, disabled.ID, mulchat.NATSCredential{PublicKey: "U6"}))
		mustNil(t, db.UpdateUserActive(ctx, disabled.ID, false))
		want = append(want, "disabled")

		got, err := db.ListUsersWithActiveNATSCredentials(ctx, now)
		mustNil(t, err)
		if fmtSlice(usernames(got)) != fmtSlice(want) {
			t.Fatalf("active = %v, want %v", usernames(got), want)
		}
		if fmtSlice(want) != "[no-expiry future jwt-only disabled]" {
			t.Fatalf("test table drifted from Status: %v", want)
		}
	})
}

func TestAPITokens(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		u := newUser(t, db, "alice")
		exp := ts("2026-12-01T00:00:00Z")
		tok := &mulchat.APIToken{UserID: u.ID, TokenHash: "hash-1", ExpiresAt: exp, UserAgent: "curl/8", IPAddress: "2001:db8::1"}
		mustNil(t, db.CreateAPIToken(ctx, tok))
		old := &mulchat.APIToken{UserID: u.ID, TokenHash: "hash-old", ExpiresAt: exp.Add(-48 * time.Hour)}
		mustNil(t, db.CreateAPIToken(ctx, old))

		got, err := db.APITokenByHash(ctx, "hash-1")
		mustNil(t, err)
		if got.ID != tok.ID || got.UserID != u.ID || !got.ExpiresAt.Equal(exp) || got.RevokedAt != nil ||
			got.UserAgent != "curl/8" || got.IPAddress != "2001:db8::1" || !got.CreatedAt.Equal(tok.CreatedAt) {
			t.Fatalf("APITokenByHash = %+v, want %+v", got, tok)
		}
		_, err = db.APITokenByHash(ctx, "nope")
		wantCode(t, err, mulchat.ENOTFOUND)

		at := ts("2026-11-01T10:00:00Z")
		mustNil(t, db.RevokeAPIToken(ctx, tok.ID, at))
		mustNil(t, db.RevokeAPIToken(ctx, tok.ID, at.Add(time.Hour))) // keeps the first time
		got, err = db.APITokenByHash(ctx, "hash-1")
		mustNil(t, err)
		if !eqTimePtr(got.RevokedAt, &at) {
			t.Fatalf("RevokedAt = %v, want %v", got.RevokedAt, at)
		}
		wantCode(t, db.RevokeAPIToken(ctx, 999999, at), mulchat.ENOTFOUND)

		n, err := db.DeleteExpiredAPITokens(ctx, exp.Add(-time.Hour))
		mustNil(t, err)
		if n != 1 {
			t.Fatalf("deleted %d, want 1", n)
		}
		_, err = db.APITokenByHash(ctx, "hash-old")
		wantCode(t, err, mulchat.ENOTFOUND)
		_, err = db.APITokenByHash(ctx, "hash-1")
		mustNil(t, err)

		err = db.CreateAPIToken(ctx, &mulchat.APIToken{UserID: 999999, TokenHash: "orphan", ExpiresAt: exp})
		wantCode(t, err, mulchat.EINVALID)
	})
}

func TestOperatorAndAccounts(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		_, err := db.NATSOperator(ctx)
		wantCode(t, err, mulchat.ENOTFOUND)
		seed := []byte{0, 1, 2, 0xff, 0xfe, 0}
		op := &mulchat.NATSOperator{Name: "mulchat", PublicKey: "OPUB", JWT: "opjwt", SeedEncrypted: seed}
		mustNil(t, db.CreateNATSOperator(ctx, op))
		got, err := db.NATSOperator(ctx)
		mustNil(t, err)
		if got.ID != op.ID || got.Name != "mulchat" || got.PublicKey != "OPUB" || got.JWT != "opjwt" ||
			string(got.SeedEncrypted) != string(seed) || !got.CreatedAt.Equal(op.CreatedAt) || !got.UpdatedAt.Equal(op.UpdatedAt) {
			t.Fatalf("NATSOperator = %+v, want %+v", got, op)
		}

		sys := &mulchat.NATSAccount{Name: mulchat.SystemAccountName, PublicKey: "ASYS", Description: "system",
			JWT: "sysjwt", SeedEncrypted: []byte("enc-seed"), SigningPublicKey: "ASIGN", SigningKeyEncrypted: []byte("enc-sk")}
		mustNil(t, db.CreateNATSAccount(ctx, sys))
		// An imported account: public key only.
		imported := &mulchat.NATSAccount{Name: "legacy", PublicKey: "ALEGACY"}
		mustNil(t, db.CreateNATSAccount(ctx, imported))

		for _, lookup := range []func() (*mulchat.NATSAccount, error){
			func() (*mulchat.NATSAccount, error) { return db.NATSAccountByID(ctx, sys.ID) },
			func() (*mulchat.NATSAccount, error) { return db.NATSAccountByName(ctx, "SYS") },
			func() (*mulchat.NATSAccount, error) { return db.NATSAccountByPublicKey(ctx, "ASYS") },
		} {
			a, err := lookup()
			mustNil(t, err)
			if a.ID != sys.ID || a.Description != "system" || a.JWT != "sysjwt" || string(a.SeedEncrypted) != "enc-seed" ||
				a.SigningPublicKey != "ASIGN" || string(a.SigningKeyEncrypted) != "enc-sk" || !a.CreatedAt.Equal(sys.CreatedAt) {
				t.Fatalf("account = %+v", a)
			}
		}
		a, err := db.NATSAccountByName(ctx, "legacy")
		mustNil(t, err)
		if a.SeedEncrypted != nil || a.SigningKeyEncrypted != nil || a.JWT != "" || a.Description != "" {
			t.Fatalf("imported account = %+v", a)
		}

		accounts, err := db.ListNATSAccounts(ctx)
		mustNil(t, err)
		if len(accounts) != 2 || accounts[0].Name != "SYS" || accounts[1].Name != "legacy" {
			t.Fatalf("ListNATSAccounts = %v", accounts)
		}

		mustNil(t, db.UpdateNATSAccountJWT(ctx, sys.ID, "newjwt"))
		a, err = db.NATSAccountByID(ctx, sys.ID)
		mustNil(t, err)
		if a.JWT != "newjwt" || a.UpdatedAt.Before(sys.UpdatedAt) {
			t.Fatalf("after UpdateNATSAccountJWT: %+v", a)
		}
		wantCode(t, db.UpdateNATSAccountJWT(ctx, 999999, "x"), mulchat.ENOTFOUND)
		for _, lookup := range []func() (*mulchat.NATSAccount, error){
			func() (*mulchat.NATSAccount, error) { return db.NATSAccountByID(ctx, 999999) },
			func() (*mulchat.NATSAccount, error) { return db.NATSAccountByName(ctx, "none") },
			func() (*mulchat.NATSAccount, error) { return db.NATSAccountByPublicKey(ctx, "ANONE") },
		} {
			_, err := lookup()
			wantCode(t, err, mulchat.ENOTFOUND)
		}
	})
}

func TestRooms(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		alice := newUser(t, db, "alice")
		bob := newUser(t, db, "bob")
		carol := newUser(t, db, "carol")
		acc := newAccount(t, db, "chat")

		general := &mulchat.Room{Name: "general", Description: "everyone", AccountID: acc.ID, IsPublic: true}
		mustNil(t, db.CreateRoom(ctx, general, alice.ID))
		if general.ID == 0 || general.SubjectPrefix != mulchat.RoomSubject(general.ID) || general.CreatedAt.IsZero() {
			t.Fatalf("CreateRoom set %+v", general)
		}
		got, err := db.RoomByID(ctx, general.ID)
		mustNil(t, err)
		if *got != *general {
			t.Fatalf("RoomByID = %+v, want %+v", got, general)
		}
		got, err = db.RoomByName(ctx, "general")
		mustNil(t, err)
		if got.ID != general.ID {
			t.Fatalf("RoomByName = %+v", got)
		}
		owner, err := db.RoomMember(ctx, general.ID, alice.ID)
		mustNil(t, err)
		if owner.Role != mulchat.RoleOwner || owner.Username != "alice" || !owner.JoinedAt.Equal(general.CreatedAt) {
			t.Fatalf("owner membership = %+v", owner)
		}

		secret := newRoom(t, db, "secret", false, bob.ID)
		zoo := newRoom(t, db, "zoo", true, carol.ID)
		// Code-point order on both databases (COLLATE "C" on PostgreSQL).
		newRoom(t, db, "Zebra", true, carol.ID)
		mustNil(t, db.AddRoomMember(ctx, secret.ID, alice.ID, mulchat.RoleReader))

		rooms, err := db.ListRooms(ctx)
		mustNil(t, err)
		if fmtSlice(roomNames(rooms)) != "[Zebra general secret zoo]" {
			t.Fatalf("ListRooms = %v", roomNames(rooms))
		}
		rooms, err = db.ListRoomsForUser(ctx, alice.ID)
		mustNil(t, err)
		if fmtSlice(roomNames(rooms)) != "[Zebra general secret zoo]" {
			t.Fatalf("ListRoomsForUser(alice) = %v", roomNames(rooms))
		}
		rooms, err = db.ListRoomsForUser(ctx, carol.ID)
		mustNil(t, err)
		if fmtSlice(roomNames(rooms)) != "[Zebra general zoo]" {
			t.Fatalf("ListRoomsForUser(carol) = %v", roomNames(rooms))
		}

		mustNil(t, db.AddRoomMember(ctx, general.ID, carol.ID, mulchat.RoleMember))
		mustNil(t, db.AddRoomMember(ctx, general.ID, bob.ID, mulchat.RoleReader))
		members, err := db.ListRoomMembers(ctx, general.ID)
		mustNil(t, err)
		var summary []string
		for _, m := range members {
			summary = append(summary, m.Username+":"+m.Role)
		}
		if fmtSlice(summary) != "[alice:owner bob:reader carol:member]" {
			t.Fatalf("ListRoomMembers = %v", summary)
		}
		ids, err := db.ListUserRoomIDs(ctx, alice.ID)
		mustNil(t, err)
		if fmtSlice(ids) != fmtSlice([]int64{general.ID, secret.ID}) {
			t.Fatalf("ListUserRoomIDs = %v", ids)
		}

		wantCode(t, db.AddRoomMember(ctx, general.ID, alice.ID, "admin"), mulchat.EINVALID)
		wantCode(t, db.AddRoomMember(ctx, 999999, alice.ID, mulchat.RoleMember), mulchat.EINVALID)
		wantCode(t, db.AddRoomMember(ctx, general.ID, 999999, mulchat.RoleMember), mulchat.EINVALID)

		mustNil(t, db.RemoveRoomMember(ctx, general.ID, carol.ID))
		wantCode(t, db.RemoveRoomMember(ctx, general.ID, carol.ID), mulchat.ENOTFOUND)
		_, err = db.RoomMember(ctx, general.ID, carol.ID)
		wantCode(t, err, mulchat.ENOTFOUND)

		// Deleting a room deletes its memberships and room-scoped grants.
		mustNil(t, db.CreatePermission(ctx, &mulchat.Permission{UserID: bob.ID, RoomID: zoo.ID, Type: mulchat.PermSub, Subject: "x.>"}))
		mustNil(t, db.AddRoomMember(ctx, zoo.ID, bob.ID, mulchat.RoleMember))
		mustNil(t, db.DeleteRoom(ctx, zoo.ID))
		_, err = db.RoomByID(ctx, zoo.ID)
		wantCode(t, err, mulchat.ENOTFOUND)
		members, err = db.ListRoomMembers(ctx, zoo.ID)
		mustNil(t, err)
		if len(members) != 0 {
			t.Fatalf("members of a deleted room: %v", members)
		}
		perms, err := db.ListUserPermissions(ctx, bob.ID)
		mustNil(t, err)
		if len(perms) != 0 {
			t.Fatalf("grants on a deleted room: %v", perms)
		}
		ids, err = db.ListUserRoomIDs(ctx, carol.ID)
		mustNil(t, err)
		if len(ids) != 1 { // the "Zebra" room only
			t.Fatalf("carol's rooms after delete: %v", ids)
		}
		wantCode(t, db.DeleteRoom(ctx, zoo.ID), mulchat.ENOTFOUND)

		// A room whose owner does not exist is not created at all.
		err = db.CreateRoom(ctx, &mulchat.Room{Name: "orphan"}, 999999)
		wantCode(t, err, mulchat.EINVALID)
		_, err = db.RoomByName(ctx, "orphan")
		wantCode(t, err, mulchat.ENOTFOUND)

		for _, lookup := range []func() error{
			func() error { _, err := db.RoomByID(ctx, 999999); return err },
			func() error { _, err := db.RoomByName(ctx, "none"); return err },
		} {
			err := lookup()
			wantCode(t, err, mulchat.ENOTFOUND)
			if mulchat.ErrorMessage(err) != "room not found" {
				t.Fatalf("message = %q", mulchat.ErrorMessage(err))
			}
		}
	})
}

func TestPermissions(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		u := newUser(t, db, "bot")
		room := newRoom(t, db, "ops", false, u.ID)
		p1 := &mulchat.Permission{UserID: u.ID, Type: mulchat.PermPub, Subject: "metrics.>"}
		p2 := &mulchat.Permission{UserID: u.ID, RoomID: room.ID, Type: mulchat.PermBoth, Subject: "ops.*"}
		mustNil(t, db.CreatePermission(ctx, p1))
		mustNil(t, db.CreatePermission(ctx, p2))
		perms, err := db.ListUserPermissions(ctx, u.ID)
		mustNil(t, err)
		if len(perms) != 2 || *perms[0] != *p1 || *perms[1] != *p2 {
			t.Fatalf("ListUserPermissions = %+v %+v", perms[0], perms[1])
		}
		wantCode(t, db.CreatePermission(ctx, &mulchat.Permission{UserID: u.ID, Type: "PUB", Subject: "x"}), mulchat.EINVALID)
		wantCode(t, db.CreatePermission(ctx, &mulchat.Permission{UserID: 999999, Type: "sub", Subject: "x"}), mulchat.EINVALID)
		wantCode(t, db.CreatePermission(ctx, &mulchat.Permission{UserID: u.ID, RoomID: 999999, Type: "sub", Subject: "x"}), mulchat.EINVALID)
		mustNil(t, db.DeletePermission(ctx, p1.ID))
		wantCode(t, db.DeletePermission(ctx, p1.ID), mulchat.ENOTFOUND)
		perms, err = db.ListUserPermissions(ctx, u.ID)
		mustNil(t, err)
		if len(perms) != 1 || perms[0].ID != p2.ID {
			t.Fatalf("after delete: %v", perms)
		}
	})
}

func TestAuthSessions(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		u := newUser(t, db, "alice")
		other := newUser(t, db, "bob")
		t0 := ts("2026-01-01T00:00:00Z")
		s1 := &mulchat.AuthSession{UserID: u.ID, ClientID: "SRV1/7", IPAddress: "192.0.2.1", UserAgent: "nats.go",
			PublicKey: "UALICE", ServerID: "SRV1", CID: 7, CreatedAt: t0, ExpiresAt: ptr(t0.Add(24 * time.Hour))}
		s2 := &mulchat.AuthSession{UserID: u.ID, ServerID: "SRV2", CID: 1 << 40, CreatedAt: t0.Add(time.Minute)}
		s3 := &mulchat.AuthSession{UserID: other.ID, ServerID: "SRV1", CID: 8}
		for _, s := range []*mulchat.AuthSession{s1, s2, s3} {
			mustNil(t, db.CreateAuthSession(ctx, s))
			if s.ID == 0 || !s.Active || s.LastActivity.IsZero() {
				t.Fatalf("CreateAuthSession set %+v", s)
			}
		}
		got, err := db.AuthSessionByID(ctx, s1.ID)
		mustNil(t, err)
		if got.ClientID != "SRV1/7" || got.IPAddress != "192.0.2.1" || got.UserAgent != "nats.go" || got.PublicKey != "UALICE" ||
			got.ServerID != "SRV1" || got.CID != 7 || !got.CreatedAt.Equal(t0) || !got.LastActivity.Equal(t0) ||
			!eqTimePtr(got.ExpiresAt, s1.ExpiresAt) || !got.Active || got.ClosedAt != nil || got.CloseReason != "" {
			t.Fatalf("AuthSessionByID = %+v", got)
		}
		_, err = db.AuthSessionByID(ctx, 999999)
		wantCode(t, err, mulchat.ENOTFOUND)

		mustNil(t, db.TouchAuthSession(ctx, s1.ID, t0.Add(time.Hour)))
		wantCode(t, db.TouchAuthSession(ctx, 999999, t0), mulchat.ENOTFOUND)

		closedAt := t0.Add(2 * time.Hour)
		mustNil(t, db.CloseAuthSession(ctx, "SRV1", 7, closedAt, "kicked"))
		wantCode(t, db.CloseAuthSession(ctx, "SRV1", 7, closedAt, "again"), mulchat.ENOTFOUND)
		wantCode(t, db.CloseAuthSession(ctx, "SRV9", 7, closedAt, ""), mulchat.ENOTFOUND)
		got, err = db.AuthSessionByID(ctx, s1.ID)
		mustNil(t, err)
		if got.Active || !eqTimePtr(got.ClosedAt, &closedAt) || got.CloseReason != "kicked" || !got.LastActivity.Equal(t0.Add(time.Hour)) {
			t.Fatalf("closed session = %+v", got)
		}

		all, err := db.ListUserAuthSessions(ctx, u.ID, false)
		mustNil(t, err)
		if len(all) != 2 || all[0].ID != s2.ID || all[1].ID != s1.ID {
			t.Fatalf("ListUserAuthSessions(all) = %v", all)
		}
		if all[0].CID != 1<<40 {
			t.Fatalf("cid = %d", all[0].CID)
		}
		active, err := db.ListUserAuthSessions(ctx, u.ID, true)
		mustNil(t, err)
		if len(active) != 1 || active[0].ID != s2.ID {
			t.Fatalf("ListUserAuthSessions(active) = %v", active)
		}
		active, err = db.ListActiveAuthSessions(ctx)
		mustNil(t, err)
		if len(active) != 2 || active[0].ID != s2.ID || active[1].ID != s3.ID {
			t.Fatalf("ListActiveAuthSessions = %v", active)
		}
		err = db.CreateAuthSession(ctx, &mulchat.AuthSession{UserID: 999999})
		wantCode(t, err, mulchat.EINVALID)
		err = db.CreateAuthSession(ctx, &mulchat.AuthSession{UserID: u.ID, CID: 1 << 63})
		wantCode(t, err, mulchat.EINVALID)
	})
}
