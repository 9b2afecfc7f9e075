package authority

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/nats-io/jwt/v2"
)

// TestRevocationCachesTheClaimsItSigned: after a revocation the claims cache
// holds, for the stored account JWT, claims equal to what decoding that JWT
// gives; readers of the cache (propagateRevocation, keyRevoked, VerifyCreds)
// see exactly the stored JWT.
func TestRevocationCachesTheClaimsItSigned(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	a := openAuthority(t, db, randomMasterKey(t))
	u := createUser(t, db, "cached")
	for range 3 {
		// Each generated credential revokes the previous one.
		if _, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	acct, err := db.NATSAccountByID(ctx, a.chat.id)
	if err != nil {
		t.Fatal(err)
	}
	a.claims.mu.Lock()
	cachedToken, cached := a.claims.token, a.claims.claims
	a.claims.mu.Unlock()
	if cachedToken != acct.JWT {
		t.Fatal("the cache does not hold the stored account JWT")
	}
	fresh, err := jwt.DecodeAccountClaims(acct.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cached, fresh) {
		t.Fatalf("cached claims differ from the decoded JWT:\ncached %+v\ndecoded %+v", cached, fresh)
	}
	if len(fresh.Revocations) != 3 {
		t.Fatalf("%d revocations, want 3", len(fresh.Revocations))
	}
}
