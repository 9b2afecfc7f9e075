package tracker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// TestKickPresence: whichever path closes a user's last session — the kick
// itself or the server's disconnect event that follows it — exactly one
// offline notice is sent, and kicking a session that is not the user's last
// sends none. Each case ends by connecting again and waiting for the online
// notice: the kicked connections' disconnect events are queued before that
// connect, so a duplicate offline notice would show up before it.
func TestKickPresence(t *testing.T) {
	cases := []struct {
		name  string
		conns int
		kick  func(ctx context.Context, tr *Tracker, u *rttest.StackUser, s *mulchat.AuthSession) error
	}{
		{"KickSession of the only session", 1, func(ctx context.Context, tr *Tracker, u *rttest.StackUser, s *mulchat.AuthSession) error {
			return tr.KickSession(ctx, u.ID, s.ID)
		}},
		{"KickSession of one session then the other", 2, func(ctx context.Context, tr *Tracker, u *rttest.StackUser, s *mulchat.AuthSession) error {
			return tr.KickSession(ctx, u.ID, s.ID)
		}},
		{"KickUser by key", 1, func(ctx context.Context, tr *Tracker, u *rttest.StackUser, _ *mulchat.AuthSession) error {
			return tr.KickUser(ctx, u.ID, u.Cred.PublicKey)
		}},
	}
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		ctx := context.Background()
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				u := st.NewUser(t, fmt.Sprintf("kp%d", i), 0)
				// Only u's notices: an earlier case's user may go offline
				// when this case's tracker reconciles on start.
				pn := &notes{}
				tr := startTracker(t, st, func(c *Config) { c.Presence = onlyUser{u.ID, pn}; c.ReconcileInterval = -1 })
				active := func(n int) func() bool {
					return func() bool { return len(sessions(t, st, u.ID, true)) == n }
				}
				var closed []chan struct{}
				var cids []uint64
				for j := 0; j < tc.conns; j++ {
					ch := make(chan struct{})
					closed = append(closed, ch)
					nc := st.Connect(t, u, nats.ClosedHandler(func(*nats.Conn) { close(ch) }))
					cid, err := nc.GetClientID()
					if err != nil {
						t.Fatal(err)
					}
					cids = append(cids, cid)
					eventually(t, "session rows", active(j+1))
				}
				eventually(t, "online notice", func() bool { return len(pn.list()) == 1 })

				// Kick the sessions one at a time, in connection order.
				for j := 0; j < tc.conns; j++ {
					var s *mulchat.AuthSession
					for _, x := range sessions(t, st, u.ID, true) {
						if x.CID == cids[j] {
							s = x
						}
					}
					if s == nil {
						t.Fatalf("no active row for connection %d", cids[j])
					}
					if err := tc.kick(ctx, tr, u, s); err != nil {
						t.Fatal(err)
					}
					if tc.conns == 1 {
						for _, ch := range closed {
							waitClosed(t, ch)
						}
					} else {
						waitClosed(t, closed[j])
					}
					eventually(t, "the kicked row closed", active(tc.conns-j-1))
				}
				eventually(t, "offline notice", func() bool { return len(pn.list()) >= 2 })

				st.Connect(t, u)
				eventually(t, "online again", func() bool { return len(pn.list()) >= 3 })
				got, want := pn.list(), []bool{true, false, true}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("presence notices %v, want %v", got, want)
				}
			})
		}
	})
}

// TestKickPresenceWithoutEvent: a kicked session whose connection is already
// gone (no disconnect event will ever come for it) still sends the offline
// notice, from the kick's own close.
func TestKickPresenceWithoutEvent(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	ctx := context.Background()
	pn := &notes{}
	tr := startTracker(t, st, func(c *Config) { c.Presence = pn; c.ReconcileInterval = -1 })
	u := st.NewUser(t, "ghost", 0)
	// A row for a connection on a server that no longer exists: the kick
	// finds no responder and closes the row itself.
	s := &mulchat.AuthSession{UserID: u.ID, ClientID: "NOSERVER/7", ServerID: "NOSERVER", CID: 7,
		PublicKey: u.Cred.PublicKey, CreatedAt: time.Now()}
	if err := st.Store.CreateAuthSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := tr.KickSession(ctx, u.ID, s.ID); err != nil {
		t.Fatal(err)
	}
	if got := pn.list(); fmt.Sprint(got) != fmt.Sprint([]bool{false}) {
		t.Fatalf("presence notices %v, want one offline", got)
	}
	// Kicking it again finds it closed and sends nothing more.
	if err := tr.KickSession(ctx, u.ID, s.ID); mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
		t.Fatalf("second kick: err %v, want not found", err)
	}
	if got := pn.list(); len(got) != 1 {
		t.Fatalf("presence notices %v after a second kick, want one", got)
	}
}

func waitClosed(t *testing.T, ch chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatal("kicked connection still open")
	}
}

// onlyUser passes on the presence notices of one user.
type onlyUser struct {
	id int64
	n  mulchat.PresenceNotifier
}

func (o onlyUser) PresenceChanged(ctx context.Context, userID int64, online bool) error {
	if userID != o.id {
		return nil
	}
	return o.n.PresenceChanged(ctx, userID, online)
}

// TestKickGoneConnection: kicking a connection the server no longer has (it
// closed between the lookup and the kick, as when the server itself drops a
// revoked connection) is not an error; a kick on a server that answers with
// another error is.
func TestKickGoneConnection(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	tr := startTracker(t, st, func(c *Config) { c.ReconcileInterval = -1 })
	u := st.NewUser(t, "gone", 0)
	nc := st.Connect(t, u)
	cid, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	ns := st.NATS.NATS()
	serverID := ns.ID()
	nc.Close()
	eventually(t, "connection closed on the server", func() bool {
		conns, err := ns.Connz(&server.ConnzOptions{CID: cid})
		return err == nil && len(conns.Conns) == 0
	})
	if err := tr.kick(context.Background(), serverID, cid); err != nil {
		t.Fatalf("kick of a closed connection: %v", err)
	}
	if connectionGone(500, "some other failure") {
		t.Fatal("another error counted as a gone connection")
	}
}
