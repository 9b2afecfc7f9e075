package router

import (
	"context"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// sendCode is the error code of a send ("" when it is accepted).
func sendCode(c *client, roomID int64, text string) string {
	rep := c.send(roomID, text, "")
	if rep.Error != nil {
		return rep.Error.Code
	}
	return ""
}

// waitSendCode sends until the reply's code is want, for at most a second:
// the router applies an invalidation on its own subscription, a moment after
// the notifier's flush returned.
func waitSendCode(t *testing.T, c *client, roomID int64, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		got := sendCode(c, roomID, "probe")
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's send still answers %q a second after the change, want %q", c.u.Username, got, want)
		}
		// Probes at the default send rate (20/s) are never rate limited.
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNotifierWithoutRouter changes membership and a user's row in the
// database and announces it with a Notifier on its own service connection,
// as the admin CLI does: the running router enforces both at once, although
// its cache (TTL one hour here) still holds the old state.
func TestNotifierWithoutRouter(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		startRouter(t, st, func(c *Config) { c.CacheTTL = time.Hour })
		ctx := context.Background()
		alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
		room := st.NewRoom(t, "lobby", alice, bob)
		ca, cb := connectClient(t, st, alice), connectClient(t, st, bob)
		n, err := NewNotifier(st.ServiceConn(t, "admin", false))
		if err != nil {
			t.Fatal(err)
		}

		cb.mustSend(room.ID, "bob is here") // caches bob as a member
		if err := db.RemoveRoomMember(ctx, room.ID, bob.ID); err != nil {
			t.Fatal(err)
		}
		if err := n.MembershipChanged(ctx, room.ID, bob.ID, mulchat.MembershipRemoved); err != nil {
			t.Fatal(err)
		}
		cb.waitFor("removed event", func(_ []mulchat.Message, ev []mulchat.Event) bool {
			return len(ev) > 0 && ev[len(ev)-1].Change == mulchat.MembershipRemoved && ev[len(ev)-1].RoomID == room.ID
		})
		waitSendCode(t, cb, room.ID, mulchat.EFORBIDDEN)
		ca.mustSend(room.ID, "after bob left")
		// Delivered (to alice) before bob rejoins: delivery reads the member
		// list when it reaches a message, so one still in flight at the
		// rejoin could reach him (docs/realtime.md).
		ca.waitFor("after bob left", func(m []mulchat.Message, _ []mulchat.Event) bool {
			return len(m) > 0 && m[len(m)-1].Text == "after bob left"
		})

		if err := db.AddRoomMember(ctx, room.ID, bob.ID, mulchat.RoleMember); err != nil {
			t.Fatal(err)
		}
		if err := n.MembershipChanged(ctx, room.ID, bob.ID, mulchat.MembershipJoined); err != nil {
			t.Fatal(err)
		}
		waitSendCode(t, cb, room.ID, "")
		ca.mustSend(room.ID, "welcome back")
		cb.waitFor("welcome back", func(m []mulchat.Message, _ []mulchat.Event) bool {
			return len(m) > 0 && m[len(m)-1].Text == "welcome back"
		})
		for _, m := range cb.messages() {
			if m.Text == "after bob left" {
				t.Fatal("bob received a message stored while he was not a member")
			}
		}

		// Disabling a user is a change of their row: refused at once.
		if err := db.UpdateUserActive(ctx, alice.ID, false); err != nil {
			t.Fatal(err)
		}
		if err := n.UserChanged(ctx, alice.ID); err != nil {
			t.Fatal(err)
		}
		waitSendCode(t, ca, room.ID, mulchat.EFORBIDDEN)
		if err := db.UpdateUserActive(ctx, alice.ID, true); err != nil {
			t.Fatal(err)
		}
		if err := n.UserChanged(ctx, alice.ID); err != nil {
			t.Fatal(err)
		}
		waitSendCode(t, ca, room.ID, "")
	})
}

func TestNotifierInvalid(t *testing.T) {
	if _, err := NewNotifier(nil); mulchat.ErrorCode(err) != mulchat.EINVALID {
		t.Fatalf("NewNotifier(nil): %v, want %s", err, mulchat.EINVALID)
	}
}
