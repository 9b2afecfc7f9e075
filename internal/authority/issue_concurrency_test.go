package authority

import (
	"context"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/nats-io/nkeys"
)

// TestConcurrentIssuesKeepOneActiveKey issues client keys for one user from
// two authorities at once. Each issue either writes without a transaction
// (nothing to revoke) or replaces and revokes the stored key; whichever path
// each took, exactly one key may stay active: the stored one, and every other
// key issued must be on the account's revocation list.
func TestConcurrentIssuesKeepOneActiveKey(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		key := randomMasterKey(t)
		auths := []*Authority{openAuthority(t, db, key), openAuthority(t, db, key)}
		u := createUser(t, db, "racer")
		const n = 10
		keys := make([]string, n)
		for i := range keys {
			kp, err := nkeys.CreateUser()
			if err != nil {
				t.Fatal(err)
			}
			keys[i], _ = kp.PublicKey()
		}
		errs := make(chan error, n)
		for i, k := range keys {
			go func() {
				_, err := auths[i%2].IssueUserCredential(ctx, u.ID, k, time.Hour)
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		cur, err := db.GetUserNATSCredential(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.ExpiredAt != nil {
			t.Fatalf("the stored credential is revoked: %+v", cur)
		}
		revs := chatRevocations(t, db, auths[0])
		for _, k := range keys {
			if k == cur.PublicKey {
				if revs[k] {
					t.Errorf("the stored key %s is on the revocation list", k)
				}
			} else if !revs[k] {
				t.Errorf("replaced key %s is not revoked", k)
			}
		}
	})
}
