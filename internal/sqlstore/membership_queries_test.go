package sqlstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// owners returns the user IDs of the room's owners.
func owners(t *testing.T, db *sqlstore.DB, roomID int64) []int64 {
	t.Helper()
	members, err := db.ListRoomMembers(context.Background(), roomID)
	mustNil(t, err)
	var out []int64
	for _, m := range members {
		if m.Role == mulchat.RoleOwner {
			out = append(out, m.UserID)
		}
	}
	return out
}

// TestRemoveRoomMemberKeepingOwner: members and one of several owners go,
// the only owner stays (ECONFLICT, row untouched), a non-member or a missing
// room is ENOTFOUND, and the method works inside a caller's transaction.
func TestRemoveRoomMemberKeepingOwner(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		alice, bob, carol, dave := newUser(t, db, "alice"), newUser(t, db, "bob"), newUser(t, db, "carol"), newUser(t, db, "dave")
		room := &mulchat.Room{Name: "general", IsPublic: true}
		mustNil(t, db.CreateRoom(ctx, room, alice.ID))
		mustNil(t, db.AddRoomMember(ctx, room.ID, bob.ID, mulchat.RoleOwner))
		mustNil(t, db.AddRoomMember(ctx, room.ID, carol.ID, mulchat.RoleMember))

		mustNil(t, db.RemoveRoomMemberKeepingOwner(ctx, room.ID, carol.ID))
		wantCode(t, db.RemoveRoomMemberKeepingOwner(ctx, room.ID, carol.ID), mulchat.ENOTFOUND)
		wantCode(t, db.RemoveRoomMemberKeepingOwner(ctx, room.ID, dave.ID), mulchat.ENOTFOUND)
		wantCode(t, db.RemoveRoomMemberKeepingOwner(ctx, room.ID+1000, alice.ID), mulchat.ENOTFOUND)

		mustNil(t, db.RemoveRoomMemberKeepingOwner(ctx, room.ID, bob.ID))
		err := db.RemoveRoomMemberKeepingOwner(ctx, room.ID, alice.ID)
		wantCode(t, err, mulchat.ECONFLICT)
		if got := mulchat.ErrorMessage(err); got != mulchat.LastOwnerMessage {
			t.Fatalf("last owner: message %q, want %q", got, mulchat.LastOwnerMessage)
		}
		if got := owners(t, db, room.ID); len(got) != 1 || got[0] != alice.ID {
			t.Fatalf("owners after refusal = %v, want [%d]", got, alice.ID)
		}

		// Inside a transaction: the refusal rolls it back, the removal of a
		// member commits with it.
		mustNil(t, db.AddRoomMember(ctx, room.ID, dave.ID, mulchat.RoleReader))
		err = db.InTx(ctx, func(q mulchat.Queries) error {
			r, ok := q.(mulchat.OwnerKeepingRemover)
			if !ok {
				t.Fatal("transaction queries lack RemoveRoomMemberKeepingOwner")
			}
			if err := r.RemoveRoomMemberKeepingOwner(ctx, room.ID, dave.ID); err != nil {
				return err
			}
			return r.RemoveRoomMemberKeepingOwner(ctx, room.ID, alice.ID)
		})
		wantCode(t, err, mulchat.ECONFLICT)
		if _, err := db.RoomMember(ctx, room.ID, dave.ID); err != nil {
			t.Fatalf("dave's removal was not rolled back: %v", err)
		}
		err = db.InTx(ctx, func(q mulchat.Queries) error {
			return q.(mulchat.OwnerKeepingRemover).RemoveRoomMemberKeepingOwner(ctx, room.ID, dave.ID)
		})
		mustNil(t, err)
		wantCode(t, func() error { _, err := db.RoomMember(ctx, room.ID, dave.ID); return err }(), mulchat.ENOTFOUND)
	})
}

// TestConcurrentOwnersLeave: two owners of a room leave at the same moment,
// many times over; each time exactly one succeeds, the other gets ECONFLICT,
// and the room keeps exactly one owner.
func TestConcurrentOwnersLeave(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		alice, bob, carol := newUser(t, db, "alice"), newUser(t, db, "bob"), newUser(t, db, "carol")
		const rounds = 20
		for i := range rounds {
			room := &mulchat.Room{Name: fmt.Sprintf("room-%d", i), IsPublic: true}
			mustNil(t, db.CreateRoom(ctx, room, alice.ID))
			mustNil(t, db.AddRoomMember(ctx, room.ID, bob.ID, mulchat.RoleOwner))
			mustNil(t, db.AddRoomMember(ctx, room.ID, carol.ID, mulchat.RoleMember))

			start := make(chan struct{})
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for j, u := range []*mulchat.User{alice, bob} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[j] = db.RemoveRoomMemberKeepingOwner(ctx, room.ID, u.ID)
				}()
			}
			close(start)
			wg.Wait()

			ok, conflict := 0, 0
			for _, err := range errs {
				switch {
				case err == nil:
					ok++
				case mulchat.ErrorCode(err) == mulchat.ECONFLICT:
					conflict++
				default:
					t.Fatalf("round %d: unexpected error %v", i, err)
				}
			}
			if ok != 1 || conflict != 1 {
				t.Fatalf("round %d: %d succeeded, %d refused (%v); want 1 and 1", i, ok, conflict, errs)
			}
			if got := owners(t, db, room.ID); len(got) != 1 {
				t.Fatalf("round %d: owners = %v, want exactly one", i, got)
			}
			if _, err := db.RoomMember(ctx, room.ID, carol.ID); err != nil {
				t.Fatalf("round %d: carol: %v", i, err)
			}
		}
	})
}
