package sqlstore_test

import (
	"context"
	"sync"
	"testing"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// TestStatementsReusedInAndOutOfTransactions runs the same statements many
// times inside and outside transactions, first seen inside transactions that
// hold every pool connection: with the SQLite statement cache they must give
// the same results as ever, and the cache must not wait for a connection
// that a transaction holds.
func TestStatementsReusedInAndOutOfTransactions(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		users := make([]*mulchat.User, 24)
		for i := range users {
			users[i] = newUser(t, db, "user"+string(rune('a'+i)))
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(users))
		for _, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- db.InTx(ctx, func(q mulchat.Queries) error {
					got, err := q.UserByUsername(ctx, u.Username)
					if err != nil {
						return err
					}
					if got.ID != u.ID {
						t.Errorf("UserByUsername(%q).ID = %d, want %d", u.Username, got.ID, u.ID)
					}
					return q.UpdateUserActive(ctx, u.ID, false)
				})
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			mustNil(t, err)
		}
		for round := range 3 {
			for _, u := range users {
				active := round%2 == 1
				if round == 1 {
					mustNil(t, db.UpdateUserActive(ctx, u.ID, active))
				} else {
					mustNil(t, db.InTx(ctx, func(q mulchat.Queries) error { return q.UpdateUserActive(ctx, u.ID, active) }))
				}
				got, err := db.UserByUsername(ctx, u.Username)
				mustNil(t, err)
				if got.IsActive != active {
					t.Fatalf("round %d: %s active = %v, want %v", round, u.Username, got.IsActive, active)
				}
			}
		}
		// A query that found no row runs again afterwards.
		_, err := db.UserByUsername(ctx, "nobody")
		wantCode(t, err, mulchat.ENOTFOUND)
		if _, err := db.UserByUsername(ctx, users[0].Username); err != nil {
			t.Fatal(err)
		}
	})
}

// TestClosedStoreStatements checks that a closed store reports an error
// instead of using a cached statement of the closed pool.
func TestClosedStoreStatements(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		u := newUser(t, db, "alice")
		if _, err := db.UserByID(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		mustNil(t, db.Close())
		if _, err := db.UserByID(ctx, u.ID); err == nil {
			t.Fatal("UserByID on a closed store succeeded")
		}
	})
}
