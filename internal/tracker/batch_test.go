package tracker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// userNotes records presence notices with their users.
type userNotes struct {
	mu  sync.Mutex
	got []string
}

func (n *userNotes) PresenceChanged(_ context.Context, userID int64, online bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, fmt.Sprint(userID, map[bool]string{true: " online", false: " offline"}[online]))
	return nil
}

// TestBatchFollowsEventOrder: one batch that mixes connects and disconnects
// writes the rows and sends the notices the events give one at a time: a
// connection closed within the batch keeps its closed row, a user whose
// connections all close and who connects again is offline then online, a
// connection that already has a row (from a reconcile) gets no second one
// and its user no online notice, and a repeated connect event writes one row.
func TestBatchFollowsEventOrder(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		pn := &userNotes{}
		tr, err := New(Config{Store: st.Store, SysConn: st.ServiceConn(t, "tracker", true), Presence: pn})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		alice, bob, carol := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0), st.NewUser(t, "carol", 0)
		// carol's connection S1/50 already has its row.
		pre := &mulchat.AuthSession{UserID: carol.ID, ClientID: "S1/50", PublicKey: carol.Cred.PublicKey, ServerID: "S1", CID: 50}
		if err := st.Store.CreateAuthSession(ctx, pre); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		connect := func(u *rttest.StackUser, cid uint64) *connectEvent {
			ev := &connectEvent{Type: connectEventType, Time: now, Server: serverInfo{ID: "S1"}}
			ev.Client = clientInfo{Start: &now, Host: "127.0.0.1", ID: cid, User: u.Cred.PublicKey, Name: "c", JWT: u.Cred.JWT}
			return ev
		}
		disconnect := func(u *rttest.StackUser, cid uint64) *connectEvent {
			ev := connect(u, cid)
			ev.Type, ev.Reason = disconnectEventType, "Client Closed"
			return ev
		}
		tr.writeBatch([]*connectEvent{
			connect(alice, 1), connect(alice, 2), connect(bob, 3), connect(carol, 50), connect(bob, 3),
			disconnect(alice, 1), disconnect(alice, 2), connect(alice, 4), connect(carol, 51), connect(bob, 5),
		})
		got := map[string]bool{}
		all, err := st.Store.ListActiveAuthSessions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range all {
			got[s.ClientID] = true
			if s.UserID == alice.ID && (s.ExpiresAt == nil || s.ExpiresAt.Unix() != alice.Cred.ExpiresAt.Unix()) {
				t.Errorf("alice's row expires at %v, want the JWT's %v", s.ExpiresAt, alice.Cred.ExpiresAt)
			}
		}
		if want := []string{"S1/3", "S1/4", "S1/5", "S1/50", "S1/51"}; !slices.Equal(slices.Sorted(maps.Keys(got)), want) {
			t.Errorf("active rows %v, want %v", slices.Sorted(maps.Keys(got)), want)
		}
		for _, u := range []*rttest.StackUser{alice, bob, carol} {
			n := map[*rttest.StackUser]int{alice: 3, bob: 2, carol: 2}[u]
			if ss := sessions(t, st, u.ID, false); len(ss) != n {
				t.Errorf("%s: %d rows, want %d", u.Username, len(ss), n)
			}
		}
		for _, s := range sessions(t, st, alice.ID, false) {
			if (s.CID == 1 || s.CID == 2) && (s.Active || s.CloseReason != "Client Closed" || s.ClosedAt == nil) {
				t.Errorf("alice's %s: %+v, want closed", s.ClientID, s)
			}
		}
		a, b := fmt.Sprint(alice.ID), fmt.Sprint(bob.ID)
		if want := []string{a + " online", b + " online", a + " offline", a + " online"}; !slices.Equal(pn.got, want) {
			t.Errorf("notices %v, want %v", pn.got, want)
		}
	})
}
