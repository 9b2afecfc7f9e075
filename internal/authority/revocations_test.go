package authority

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// chatClaims decodes the stored chat account JWT.
func chatClaims(t testing.TB, db mulchat.Store, a *Authority) *jwt.AccountClaims {
	t.Helper()
	acct, err := db.NATSAccountByPublicKey(context.Background(), a.ChatAccountPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(acct.JWT)
	if err != nil {
		t.Fatal(err)
	}
	return ac
}

// TestRevocationPrunedAtKeyExpiry: the entry of a key whose JWT expires in
// 1 h stays while that JWT is valid and goes with the first account rewrite
// after it, whether the key was replaced or explicitly revoked.
func TestRevocationPrunedAtKeyExpiry(t *testing.T) {
	for _, explicit := range []bool{false, true} {
		t.Run(fmt.Sprintf("explicit=%v", explicit), func(t *testing.T) {
			db := sqltest.OpenSQLite(t)
			ctx := context.Background()
			clk := newClock(time.Now())
			a := openAuthority(t, db, randomMasterKey(t), func(c *Config) { c.Now = clk.Now })
			u := createUser(t, db, "alice")
			other := createUser(t, db, "other")
			first, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if explicit {
				err = a.RevokeUserCredential(ctx, u.ID)
			} else {
				_, err = a.IssueUserCredential(ctx, u.ID, "", time.Hour)
			}
			if err != nil {
				t.Fatal(err)
			}
			ac := chatClaims(t, db, a)
			if ts := ac.Revocations[first.PublicKey]; ts < first.ExpiresAt.Unix() {
				t.Fatalf("entry timestamp %d is before the key's expiry %d", ts, first.ExpiresAt.Unix())
			}
			uc, err := jwt.DecodeUserClaims(first.JWT)
			if err != nil {
				t.Fatal(err)
			}
			if !ac.IsClaimRevoked(uc) {
				t.Fatal("the revoked JWT is not refused by the entry")
			}

			// rewrite makes the authority rewrite the account JWT (another
			// user's key replaced), which is when pruning happens.
			rewrite := func() {
				t.Helper()
				if _, err := a.IssueUserCredential(ctx, other.ID, "", 24*time.Hour); err != nil {
					t.Fatal(err)
				}
			}
			rewrite()
			clk.Add(59 * time.Minute)
			rewrite()
			if _, ok := chatClaims(t, db, a).Revocations[first.PublicKey]; !ok {
				t.Fatal("entry pruned while the key's JWT is still valid")
			}
			clk.Add(2 * time.Minute)
			rewrite()
			if _, ok := chatClaims(t, db, a).Revocations[first.PublicKey]; ok {
				t.Fatal("entry kept after the key's last JWT expired")
			}
		})
	}
}

// TestRevokedCredentialRefusedUntilExpiry: an explicit revoke closes the
// connection and refuses reconnecting with the same JWT.
func TestRevokedCredentialRefusedUntilExpiry(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	a := openAuthority(t, db, randomMasterKey(t))
	u := createUser(t, db, "alice")
	ns := startNATS(t, a)
	wireServices(t, a, ns.ClientURL())
	ic, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := writeCreds(t, ic.Creds)
	nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(path))
	if err != nil {
		t.Fatalf("connect before revoke: %v", err)
	}
	nc.Close()
	if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(path), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("revoked credential accepted")
	}
	if _, err := a.IssueUserCredential(ctx, u.ID, ic.PublicKey, 0); mulchat.ErrorCode(err) != mulchat.EFORBIDDEN {
		t.Errorf("reissuing the revoked key: err = %v, want EFORBIDDEN", err)
	}
}

// TestRevocationListBounded replaces one user's key 5,000 times, a minute of
// simulated time apart, with a 1 h TTL: the list holds the keys of the last
// hour, not of the last MaxTTL.
func TestRevocationListBounded(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	clk := newClock(time.Now())
	a := openAuthority(t, db, randomMasterKey(t), func(c *Config) { c.Now = clk.Now })
	u := createUser(t, db, "alice")
	const n = 5000
	maxEntries := 0
	for i := range n {
		clk.Add(time.Minute)
		if _, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour); err != nil {
			t.Fatal(err)
		}
		if i%500 == 499 {
			maxEntries = max(maxEntries, len(chatRevocations(t, db, a)))
		}
	}
	// The keys revoked in the last 61 minutes, at most.
	if got := len(chatRevocations(t, db, a)); got > 62 || maxEntries > 62 {
		t.Fatalf("%d revocation entries at the end (max %d seen), want at most 62", got, maxEntries)
	}
}

// TestLegacyRevocationsUpgraded: entries written by an older mulchat (the
// revocation time, no tag) keep refusing for MaxTTL after it.
func TestLegacyRevocationsUpgraded(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	clk := newClock(time.Now())
	maxTTL := 4 * time.Hour
	a := openAuthority(t, db, randomMasterKey(t), func(c *Config) { c.Now = clk.Now; c.MaxTTL = maxTTL })
	kp, _ := nkeys.CreateUser()
	legacyKey, _ := kp.PublicKey()
	revokedAt := clk.Now().Add(-time.Hour)

	ac := chatClaims(t, db, a)
	ac.RevokeAt(legacyKey, revokedAt)
	token, err := ac.Encode(a.operatorKP)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := db.NATSAccountByPublicKey(ctx, a.ChatAccountPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.UpdateNATSAccountJWT(ctx, acct.ID, token); err != nil {
		t.Fatal(err)
	}
	u := createUser(t, db, "alice")
	if _, err := a.IssueUserCredential(ctx, u.ID, legacyKey, 0); mulchat.ErrorCode(err) != mulchat.EFORBIDDEN {
		t.Fatalf("legacy-revoked key: err = %v, want EFORBIDDEN", err)
	}
	// A rewrite converts the entry to revocation time + MaxTTL and tags
	// the JWT.
	if _, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	ac = chatClaims(t, db, a)
	if !ac.Tags.Contains(revocationsTag) {
		t.Fatal("rewritten account JWT lacks the tag")
	}
	if got, want := ac.Revocations[legacyKey], revokedAt.Add(maxTTL).Unix(); got != want {
		t.Fatalf("legacy entry = %d, want %d", got, want)
	}
}

// TestRenewNeverShortens: renewing (or re-issuing the same key) with a
// shorter TTL keeps the later expiry, so the recorded expiry is the latest of
// the key's JWTs.
func TestRenewNeverShortens(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		a := openAuthority(t, db, randomMasterKey(t))
		u := createUser(t, db, "alice")
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		long, err := a.IssueUserCredential(ctx, u.ID, pub, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		renewed, err := a.RenewUserCredential(ctx, u.ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		reissued, err := a.IssueUserCredential(ctx, u.ID, pub, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for name, ic := range map[string]*IssuedCredential{"renew": renewed, "re-issue": reissued} {
			uc, err := jwt.DecodeUserClaims(ic.JWT)
			if err != nil {
				t.Fatal(err)
			}
			if !ic.ExpiresAt.Equal(long.ExpiresAt) || uc.Expires != long.ExpiresAt.Unix() {
				t.Errorf("%s with a shorter ttl expires %v (jwt %d), want %v", name, ic.ExpiresAt, uc.Expires, long.ExpiresAt)
			}
		}
		got, err := db.GetUserNATSCredential(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.ExpiresAt.Equal(long.ExpiresAt) {
			t.Errorf("stored expiry %v, want %v", got.ExpiresAt, long.ExpiresAt)
		}
	})
}

// refreshRecorder is the store, noting which credential writes went through
// mulchat.NATSJWTRefresher, the only ones PostgreSQL may commit without
// waiting for durability.
type refreshRecorder struct {
	*sqlstore.DB
	relaxed int
}

func (r *refreshRecorder) RefreshUserNATSJWT(ctx context.Context, userID int64, c mulchat.NATSCredential) (bool, error) {
	wrote, err := r.DB.RefreshUserNATSJWT(ctx, userID, c)
	if wrote {
		r.relaxed++
	}
	return wrote, err
}

// TestLostRefreshStaysRevoked: a database crash loses the writes committed
// since the last durable one (WAL is flushed in order, so a durable commit
// makes every earlier one durable too). Same-key refreshes whose writes were
// relaxed are then lost, while the client holds their JWTs. Revoking the key
// afterwards must refuse each of those JWTs for as long as it is valid: the
// revocation entry, pruned at the recorded expiry, must not be pruned before
// any of them expires, or pruning would bring a revoked JWT back.
func TestLostRefreshStaysRevoked(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		clk := newClock(time.Now())
		store := &refreshRecorder{DB: db}
		a := openAuthority(t, store, randomMasterKey(t), func(c *Config) { c.Now = clk.Now })
		u := createUser(t, db, "alice")
		other := createUser(t, db, "other")
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		// other's key, replaced below to make the authority rewrite (and
		// prune) the account JWT.
		if _, err := a.IssueUserCredential(ctx, other.ID, "", 24*time.Hour); err != nil {
			t.Fatal(err)
		}

		var issued []*jwt.UserClaims
		var durable mulchat.NATSCredential // the row as a crash leaves it
		for i := range 8 {
			relaxed := store.relaxed
			ic, err := a.IssueUserCredential(ctx, u.ID, pub, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			uc, err := jwt.DecodeUserClaims(ic.JWT)
			if err != nil {
				t.Fatal(err)
			}
			issued = append(issued, uc)
			if store.relaxed == relaxed {
				if durable, err = db.GetUserNATSCredential(ctx, u.ID); err != nil {
					t.Fatal(err)
				}
			}
			if i == 0 {
				clk.Add(time.Minute)
			} else {
				clk.Add(20 * time.Second)
			}
		}
		if store.relaxed == 0 {
			t.Fatal("no refresh was written through the relaxed path; the test checks nothing")
		}
		// The crash: the relaxed writes since the last durable one are lost.
		if err := db.UpdateUserNATSCredential(ctx, u.ID, durable); err != nil {
			t.Fatal(err)
		}
		if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		ac := chatClaims(t, db, a)
		last := int64(0)
		for i, uc := range issued {
			last = max(last, uc.Expires)
			if !ac.IsClaimRevoked(uc) {
				t.Errorf("JWT %d not refused after the revocation", i)
			}
			// Pruning drops the entry once its timestamp has passed.
			if ts := ac.Revocations[pub]; ts < uc.Expires {
				t.Errorf("JWT %d expires at %v, after its key's entry can be pruned (%v)", i,
					time.Unix(uc.Expires, 0).UTC(), time.Unix(ts, 0).UTC())
			}
		}
		// Just before the last of them expires, after a rewrite (replacing
		// other's key, which is when pruning happens), the entry must still
		// refuse the ones still valid.
		clk.Add(time.Unix(last, 0).Add(-time.Second).Sub(clk.Now()))
		if _, err := a.IssueUserCredential(ctx, other.ID, "", time.Hour); err != nil {
			t.Fatal(err)
		}
		ac = chatClaims(t, db, a)
		for i, uc := range issued {
			if uc.Expires > clk.Now().Unix() && !ac.IsClaimRevoked(uc) {
				t.Errorf("JWT %d (expires %v) no longer refused at %v", i, time.Unix(uc.Expires, 0).UTC(), clk.Now().UTC())
			}
		}
	})
}

// TestRecentRefreshChecksTheRow: a refresh signed from the user row an
// issuance just read (recentIssues) is still refused at once when the user
// was disabled, or the key revoked by another instance, since then.
func TestRecentRefreshChecksTheRow(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		key := randomMasterKey(t)
		a := openAuthority(t, db, key)
		other := openAuthority(t, db, key) // another instance
		u := createUser(t, db, "alice")
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		for range 3 {
			if _, err := a.IssueUserCredential(ctx, u.ID, pub, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.UpdateUserActive(ctx, u.ID, false); err != nil {
			t.Fatal(err)
		}
		if _, err := a.IssueUserCredential(ctx, u.ID, pub, time.Hour); mulchat.ErrorCode(err) != mulchat.EFORBIDDEN {
			t.Fatalf("refresh for a disabled user: err = %v, want EFORBIDDEN", err)
		}
		if err := db.UpdateUserActive(ctx, u.ID, true); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := a.IssueUserCredential(ctx, u.ID, pub, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		if err := other.RevokeUserCredential(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := a.IssueUserCredential(ctx, u.ID, pub, time.Hour); mulchat.ErrorCode(err) != mulchat.EFORBIDDEN {
			t.Fatalf("refresh of a key revoked elsewhere: err = %v, want EFORBIDDEN", err)
		}
		got, err := db.GetUserNATSCredential(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.ExpiredAt == nil {
			t.Fatal("the revoked credential was brought back")
		}
	})
}
