package sqlstore_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// TestCreateAuthSessions: a batch of 100 sessions (several INSERT sizes) is
// written with every field as CreateAuthSession writes it; the batch queries
// see the rows; a refused row writes none of its batch.
func TestCreateAuthSessions(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		alice, bob, carol := newUser(t, db, "alice"), newUser(t, db, "bob"), newUser(t, db, "carol")
		t0 := ts("2026-01-01T00:00:00.123456789Z")
		var batch []*mulchat.AuthSession
		for i := range 100 {
			s := &mulchat.AuthSession{UserID: alice.ID, ClientID: fmt.Sprintf("SRV1/%d", i+1), IPAddress: "192.0.2.1",
				UserAgent: fmt.Sprint("client ", i), PublicKey: "UALICE", ServerID: "SRV1", CID: uint64(i + 1),
				CreatedAt: t0.Add(time.Duration(i) * time.Second)}
			if i%2 == 0 {
				s.ExpiresAt = ptr(t0.Add(24 * time.Hour))
			}
			if i == 99 {
				s.UserID, s.ServerID, s.CID, s.CreatedAt = bob.ID, "SRV2", 1<<40, time.Time{}
			}
			batch = append(batch, s)
		}
		mustNil(t, db.CreateAuthSessions(ctx, batch))
		for i, s := range batch[:99] {
			want := t0.Add(time.Duration(i) * time.Second).Truncate(time.Microsecond)
			if !s.Active || !s.CreatedAt.Equal(want) || !s.LastActivity.Equal(want) || s.ID != 0 {
				t.Fatalf("session %d set to %+v", i, s)
			}
		}
		if batch[99].CreatedAt.IsZero() || !batch[99].LastActivity.Equal(batch[99].CreatedAt) {
			t.Fatalf("a zero CreatedAt was not set to now: %+v", batch[99])
		}
		got, err := db.ListActiveAuthSessions(ctx)
		mustNil(t, err)
		if len(got) != 100 {
			t.Fatalf("%d active rows, want 100", len(got))
		}
		byCID := map[uint64]*mulchat.AuthSession{}
		for _, g := range got {
			byCID[g.CID] = g
		}
		for i, s := range batch {
			g := byCID[s.CID]
			if g == nil || g.UserID != s.UserID || g.ClientID != s.ClientID || g.IPAddress != s.IPAddress ||
				g.UserAgent != s.UserAgent || g.PublicKey != s.PublicKey || g.ServerID != s.ServerID ||
				!g.CreatedAt.Equal(s.CreatedAt) || !g.LastActivity.Equal(s.LastActivity) ||
				!eqTimePtr(g.ExpiresAt, s.ExpiresAt) || !g.Active || g.ClosedAt != nil {
				t.Fatalf("row %d = %+v, want %+v", i, g, s)
			}
		}

		cids, err := db.ActiveAuthSessionCIDs(ctx, "SRV1", 10, 20)
		mustNil(t, err)
		slices.Sort(cids)
		if want := []uint64{10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}; !slices.Equal(cids, want) {
			t.Fatalf("ActiveAuthSessionCIDs(SRV1, 10, 20) = %v, want %v", cids, want)
		}
		mustNil(t, db.CloseAuthSession(ctx, "SRV1", 15, t0, "gone"))
		cids, err = db.ActiveAuthSessionCIDs(ctx, "SRV1", 15, 16)
		mustNil(t, err)
		if !slices.Equal(cids, []uint64{16}) {
			t.Fatalf("after a close: %v, want [16]", cids)
		}
		cids, err = db.ActiveAuthSessionCIDs(ctx, "SRV2", 0, 1<<41)
		mustNil(t, err)
		if !slices.Equal(cids, []uint64{1 << 40}) {
			t.Fatalf("ActiveAuthSessionCIDs(SRV2) = %v", cids)
		}
		_, err = db.ActiveAuthSessionCIDs(ctx, "SRV1", 0, math.MaxUint64)
		wantCode(t, err, mulchat.EINVALID)

		for _, c := range []struct {
			u    *mulchat.User
			want bool
		}{{alice, true}, {bob, true}, {carol, false}} {
			has, err := db.HasActiveAuthSession(ctx, c.u.ID)
			mustNil(t, err)
			if has != c.want {
				t.Fatalf("HasActiveAuthSession(%s) = %v, want %v", c.u.Username, has, c.want)
			}
		}
		mustNil(t, db.CloseAuthSession(ctx, "SRV2", 1<<40, t0, "gone"))
		if has, err := db.HasActiveAuthSession(ctx, bob.ID); err != nil || has {
			t.Fatalf("HasActiveAuthSession(bob) after his last close = %v, %v", has, err)
		}

		// One refused row (an out-of-range cid, an unknown user, a NUL)
		// writes nothing of its batch.
		for _, bad := range []*mulchat.AuthSession{
			{UserID: carol.ID, ServerID: "SRV3", CID: math.MaxUint64},
			{UserID: 999999, ServerID: "SRV3", CID: 2},
			{UserID: carol.ID, ServerID: "SRV3", CID: 3, UserAgent: "a\x00b"},
		} {
			var b []*mulchat.AuthSession
			for i := range 70 {
				b = append(b, &mulchat.AuthSession{UserID: carol.ID, ServerID: "SRV3", CID: uint64(100 + i)})
			}
			b = append(b, bad)
			err := db.CreateAuthSessions(ctx, b)
			if code := mulchat.ErrorCode(err); code != mulchat.EINVALID {
				t.Fatalf("bad row %+v: error %v, want %s", bad, err, mulchat.EINVALID)
			}
			if has, err := db.HasActiveAuthSession(ctx, carol.ID); err != nil || has {
				t.Fatalf("bad row %+v: carol has rows (%v, %v)", bad, has, err)
			}
		}
		mustNil(t, db.CreateAuthSessions(ctx, nil))
	})
}
