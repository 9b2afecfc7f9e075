package sqlstore_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// TestAPITokenWithUser: the joined lookup returns exactly what APITokenByHash
// and UserByID return, and ENOTFOUND for an unknown hash.
func TestAPITokenWithUser(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		u := &mulchat.User{Username: "alice", Email: "a@example.com", HashedPassword: "h", IsActive: true}
		if err := db.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		exp := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)
		if err := db.UpdateUserNATSCredential(ctx, u.ID, mulchat.NATSCredential{JWT: "jwt", PublicKey: "UKEY", ExpiresAt: &exp}); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		tok := &mulchat.APIToken{UserID: u.ID, TokenHash: "abc123", CreatedAt: now, ExpiresAt: now.Add(time.Hour), UserAgent: "ua", IPAddress: "127.0.0.1"}
		if err := db.CreateAPIToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if err := db.RevokeAPIToken(ctx, tok.ID, now); err != nil {
			t.Fatal(err)
		}

		gotT, gotU, err := db.APITokenWithUser(ctx, "abc123")
		if err != nil {
			t.Fatal(err)
		}
		wantT, err := db.APITokenByHash(ctx, "abc123")
		if err != nil {
			t.Fatal(err)
		}
		wantU, err := db.UserByID(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotT, wantT) {
			t.Fatalf("token = %+v\nwant %+v", gotT, wantT)
		}
		if !reflect.DeepEqual(gotU, wantU) {
			t.Fatalf("user = %+v\nwant %+v", gotU, wantU)
		}
		if _, _, err := db.APITokenWithUser(ctx, "nope"); mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
			t.Fatalf("unknown hash: %v", err)
		}
		// Inside a transaction too.
		err = db.InTx(ctx, func(q mulchat.Queries) error {
			r, ok := q.(mulchat.APITokenUserReader)
			if !ok {
				t.Fatal("transaction queries lack APITokenWithUser")
			}
			_, _, err := r.APITokenWithUser(ctx, "abc123")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
