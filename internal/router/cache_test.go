package router

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// pausingStore holds ListRoomMembers after it has read, until released.
type pausingStore struct {
	mulchat.Store
	read    chan struct{}
	release chan struct{}
}

func (s *pausingStore) ListRoomMembers(ctx context.Context, roomID int64) ([]*mulchat.Member, error) {
	ms, err := s.Store.ListRoomMembers(ctx, roomID)
	if s.read != nil {
		s.read <- struct{}{}
		<-s.release
	}
	return ms, err
}

// TestRoomMembersReadRacingInvalidation: a member list read from the store
// before a membership change, and returned after the change's invalidation,
// is not cached, so the next delivery reads the new list.
func TestRoomMembersReadRacingInvalidation(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		ctx := context.Background()
		alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
		room := st.NewRoom(t, "race", alice)
		ps := &pausingStore{Store: st.Store, read: make(chan struct{}), release: make(chan struct{})}
		c := newCache(ps, time.Hour, time.Now)

		done := make(chan []int64)
		go func() {
			ids, err := c.roomMembers(ctx, room.ID)
			if err != nil {
				t.Error(err)
			}
			done <- ids
		}()
		<-ps.read // the old list (alice) has been read
		if err := st.Store.AddRoomMember(ctx, room.ID, bob.ID, mulchat.RoleMember); err != nil {
			t.Fatal(err)
		}
		c.invalidateRoomMembers(room.ID) // the marker reaches the deliverer
		close(ps.release)
		if ids := <-done; !slices.Equal(ids, []int64{alice.ID}) {
			t.Fatalf("racing read returned %v, want the old list [%d]", ids, alice.ID)
		}
		ps.read = nil
		ids, err := c.roomMembers(ctx, room.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(slices.Sorted(slices.Values(ids)), []int64{alice.ID, bob.ID}) {
			t.Fatalf("after the invalidation the members are %v, want alice and bob", ids)
		}
	})
}
