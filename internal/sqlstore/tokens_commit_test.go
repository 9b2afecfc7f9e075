package sqlstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// TestCreateAPITokenRelaxesOnlyItsOwnCommit: on PostgreSQL a new token is
// committed with synchronous_commit off for its own transaction only; the
// pooled connection keeps the server's setting afterwards.
func TestCreateAPITokenRelaxesOnlyItsOwnCommit(t *testing.T) {
	db := sqltest.OpenPostgres(t)
	ctx := context.Background()
	// One connection, so the SHOWs below run where the insert ran.
	db.SQL().SetMaxOpenConns(1)
	u := newUser(t, db, "alice")
	var before, after string
	mustNil(t, db.SQL().QueryRowContext(ctx, `SHOW synchronous_commit`).Scan(&before))

	tok := &mulchat.APIToken{UserID: u.ID, TokenHash: "h1", ExpiresAt: time.Now().Add(time.Hour)}
	mustNil(t, db.CreateAPIToken(ctx, tok))
	got, err := db.APITokenByHash(ctx, "h1")
	mustNil(t, err)
	if got.ID != tok.ID {
		t.Fatalf("token read back has id %d, want %d", got.ID, tok.ID)
	}
	mustNil(t, db.SQL().QueryRowContext(ctx, `SHOW synchronous_commit`).Scan(&after))
	if after != before {
		t.Fatalf("synchronous_commit after CreateAPIToken = %q, want the server's %q", after, before)
	}
	// Inside a caller's transaction the token is written as any statement.
	mustNil(t, db.InTx(ctx, func(q mulchat.Queries) error {
		return q.CreateAPIToken(ctx, &mulchat.APIToken{UserID: u.ID, TokenHash: "h2", ExpiresAt: time.Now().Add(time.Hour)})
	}))
	if _, err := db.APITokenByHash(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	// An unknown user is still refused with the usual code, and a duplicate
	// hash is still a conflict.
	wantCode(t, db.CreateAPIToken(ctx, &mulchat.APIToken{UserID: 999999, TokenHash: "h3", ExpiresAt: time.Now()}), mulchat.EINVALID)
	wantCode(t, db.CreateAPIToken(ctx, &mulchat.APIToken{UserID: u.ID, TokenHash: "h1", ExpiresAt: time.Now()}), mulchat.ECONFLICT)
}
