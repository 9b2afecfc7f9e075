package sqlstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// TestLockNATSAccountSerialisesRewrites checks that two transactions that
// lock the account and rewrite its JWT from what they read never lose an
// update: the second waits for the first and reads its commit.
func TestLockNATSAccountSerialisesRewrites(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		acct := &mulchat.NATSAccount{Name: "locktest", PublicKey: "ALOCKTEST", JWT: "v"}
		if err := db.CreateNATSAccount(ctx, acct); err != nil {
			t.Fatal(err)
		}
		appendTo := func(suffix string, hold time.Duration) error {
			return db.InTx(ctx, func(q mulchat.Queries) error {
				l, ok := q.(mulchat.NATSAccountLocker)
				if !ok {
					t.Fatal("transaction queries do not implement NATSAccountLocker")
				}
				a, err := l.LockNATSAccount(ctx, acct.ID)
				if err != nil {
					return err
				}
				time.Sleep(hold) // widen the window a lost update needs
				return q.UpdateNATSAccountJWT(ctx, acct.ID, a.JWT+suffix)
			})
		}
		done := make(chan error, 4)
		for _, s := range []string{"a", "b", "c", "d"} {
			go func() { done <- appendTo(s, 20*time.Millisecond) }()
		}
		for range 4 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		got, err := db.NATSAccountByID(ctx, acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.JWT) != 5 {
			t.Fatalf("JWT %q: a concurrent rewrite was lost", got.JWT)
		}
		err = db.InTx(ctx, func(q mulchat.Queries) error {
			_, err := q.(mulchat.NATSAccountLocker).LockNATSAccount(ctx, 999999)
			return err
		})
		if mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
			t.Errorf("missing account: err = %v, want ENOTFOUND", err)
		}
	})
}
