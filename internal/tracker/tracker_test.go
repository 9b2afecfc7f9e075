package tracker

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
)

const wait = 10 * time.Second

func startTracker(t *testing.T, st *rttest.Stack, mod func(*Config)) *Tracker {
	t.Helper()
	cfg := Config{
		Store:       st.Store,
		SysConn:     st.ServiceConn(t, "tracker", true),
		ChatAccount: st.Authority.ChatAccountPublicKey(),
		ServerWait:  50 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// eventually polls cond until it holds (testenv.Eventually).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, wait, what, cond)
}

func sessions(t *testing.T, st *rttest.Stack, userID int64, activeOnly bool) []*mulchat.AuthSession {
	t.Helper()
	s, err := st.Store.ListUserAuthSessions(context.Background(), userID, activeOnly)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSessionsOpenAndClose(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		// Two instances: each event must be written once.
		startTracker(t, st, nil)
		startTracker(t, st, nil)
		alice := st.NewUser(t, "alice", 0)

		nc, err := st.TryConnect(alice, nats.Name("mulchat-cli"))
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "a session row", func() bool { return len(sessions(t, st, alice.ID, true)) == 1 })
		s := sessions(t, st, alice.ID, true)[0]
		cid, _ := nc.GetClientID()
		serverID := st.NATS.NATS().ID()
		if s.ServerID != serverID || s.CID != cid || s.ClientID != serverID+"/"+itoa(cid) {
			t.Errorf("session server/cid = %s/%d (%s), want %s/%d", s.ServerID, s.CID, s.ClientID, serverID, cid)
		}
		if s.IPAddress != "127.0.0.1" || !strings.HasPrefix(s.UserAgent, "mulchat-cli (go/") {
			t.Errorf("ip %q user agent %q", s.IPAddress, s.UserAgent)
		}
		if s.PublicKey != alice.Cred.PublicKey || s.ExpiresAt == nil || !s.ExpiresAt.Equal(alice.Cred.ExpiresAt.Truncate(time.Second)) {
			t.Errorf("key %s expires %v, want %s %v", s.PublicKey, s.ExpiresAt, alice.Cred.PublicKey, alice.Cred.ExpiresAt)
		}

		// Several connections at once, one row each.
		for i := 0; i < 4; i++ {
			st.Connect(t, alice)
		}
		eventually(t, "five rows", func() bool { return len(sessions(t, st, alice.ID, true)) == 5 })

		nc.Close()
		eventually(t, "the session closed", func() bool {
			all := sessions(t, st, alice.ID, false)
			for _, x := range all {
				if x.ID == s.ID {
					return !x.Active
				}
			}
			return false
		})
		for _, x := range sessions(t, st, alice.ID, false) {
			if x.ID == s.ID && (x.ClosedAt == nil || x.CloseReason == "") {
				t.Errorf("closed session without closed_at/reason: %+v", x)
			}
		}
		if n := len(sessions(t, st, alice.ID, false)); n != 5 {
			t.Fatalf("%d rows in all, want 5 (no duplicates from two trackers)", n)
		}
	})
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestReconcileAfterCrash: rows left active by a crashed tracker are closed,
// and connections opened while no tracker ran get their rows.
func TestReconcileAfterCrash(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		ctx := context.Background()
		alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
		stale := &mulchat.AuthSession{UserID: alice.ID, ClientID: "NOSERVER/7", ServerID: "NOSERVER", CID: 7,
			PublicKey: alice.Cred.PublicKey, CreatedAt: time.Now().Add(-time.Hour)}
		if err := st.Store.CreateAuthSession(ctx, stale); err != nil {
			t.Fatal(err)
		}
		// Also a row for a real server but a connection that no longer exists.
		staleCID := &mulchat.AuthSession{UserID: alice.ID, ServerID: st.NATS.NATS().ID(), CID: 99999,
			PublicKey: alice.Cred.PublicKey, CreatedAt: time.Now().Add(-time.Hour)}
		if err := st.Store.CreateAuthSession(ctx, staleCID); err != nil {
			t.Fatal(err)
		}
		live := st.Connect(t, bob, nats.Name("early-bird"))
		cid, _ := live.GetClientID()

		startTracker(t, st, nil)

		for _, id := range []int64{stale.ID, staleCID.ID} {
			s, err := st.Store.AuthSessionByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if s.Active || s.CloseReason != ReasonReconciled {
				t.Errorf("stale session %d: active %v reason %q", id, s.Active, s.CloseReason)
			}
		}
		got := sessions(t, st, bob.ID, true)
		if len(got) != 1 || got[0].CID != cid || got[0].UserAgent == "" {
			t.Fatalf("bob's sessions %+v, want one for cid %d", got, cid)
		}
		// Reconciling again changes nothing.
		tr2 := startTracker(t, st, nil)
		if err := tr2.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(sessions(t, st, bob.ID, false)); n != 1 {
			t.Fatalf("%d rows for bob after reconciling again, want 1", n)
		}
	})
}

func TestKick(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		tr := startTracker(t, st, nil)
		ctx := context.Background()
		alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
		closed := make(chan struct{})
		st.Connect(t, alice, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
		eventually(t, "a session row", func() bool { return len(sessions(t, st, alice.ID, true)) == 1 })
		s := sessions(t, st, alice.ID, true)[0]

		t.Run("another user's session is not found", func(t *testing.T) {
			if err := tr.KickSession(ctx, bob.ID, s.ID); mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
				t.Fatalf("err %v, want not found", err)
			}
		})
		t.Run("a kick disconnects", func(t *testing.T) {
			if err := tr.KickSession(ctx, alice.ID, s.ID); err != nil {
				t.Fatal(err)
			}
			select {
			case <-closed:
			case <-time.After(wait):
				t.Fatal("kicked connection still open")
			}
			got, err := st.Store.AuthSessionByID(ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Active {
				t.Fatal("kicked session still active")
			}
		})
		t.Run("a closed session is not found", func(t *testing.T) {
			if err := tr.KickSession(ctx, alice.ID, s.ID); mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
				t.Fatalf("err %v, want not found", err)
			}
		})
	})
}

// TestRevocation: the authority's revoke (account JWT push plus the tracker
// as Kicker) closes the live connection and the key cannot connect again.
func TestRevocation(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		tr := startTracker(t, st, nil)
		st.Authority.SetKicker(tr.KickUser)
		ctx := context.Background()
		alice := st.NewUser(t, "alice", 0)
		closed := make(chan struct{})
		st.Connect(t, alice, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
		eventually(t, "a session row", func() bool { return len(sessions(t, st, alice.ID, true)) == 1 })

		if err := st.Authority.RevokeUserCredential(ctx, alice.ID); err != nil {
			t.Fatal(err)
		}
		select {
		case <-closed:
		case <-time.After(wait):
			t.Fatal("revoked user's connection still open")
		}
		if nc, err := st.TryConnect(alice); err == nil {
			nc.Close()
			t.Fatal("revoked credential reconnected")
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("reconnect error %v, want an authorization error", err)
		}
		eventually(t, "session closed", func() bool { return len(sessions(t, st, alice.ID, true)) == 0 })
	})
}

// TestPresence: with the router as presence notifier, a room mate sees the
// user come online and go offline.
func TestPresence(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	r, err := router.New(router.Config{Store: st.Store, Conn: st.ServiceConn(t, "router", false), PinnedTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	startTracker(t, st, func(c *Config) { c.Presence = r })
	alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
	st.NewRoom(t, "friends", alice, bob)

	events := make(chan mulchat.Event, 10)
	bnc := st.Connect(t, bob)
	if _, err := bnc.Subscribe(mulchat.UserSubject(bob.ID, "event"), func(m *nats.Msg) {
		var ev mulchat.Event
		if json.Unmarshal(m.Data, &ev) == nil && ev.Type == mulchat.EventPresence {
			events <- ev
		}
	}); err != nil {
		t.Fatal(err)
	}
	_ = bnc.Flush()
	anc := st.Connect(t, alice)
	for _, want := range []string{mulchat.PresenceOnline, mulchat.PresenceOffline} {
		select {
		case ev := <-events:
			if ev.UserID != alice.ID || ev.Username != "alice" || ev.Status != want {
				t.Fatalf("event %+v, want alice %s", ev, want)
			}
		case <-time.After(wait):
			t.Fatalf("no %s event", want)
		}
		anc.Close()
	}
}

// TestPresenceQuery: chat.api.<uid>.presence lists a room's members with
// their status from the session rows.
func TestPresenceQuery(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		r, err := router.New(router.Config{Store: st.Store, Conn: st.ServiceConn(t, "router", false), PinnedTTL: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		startTracker(t, st, nil)
		alice, bob, carol := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0), st.NewUser(t, "carol", 0)
		room := st.NewRoom(t, "who", alice, bob)
		anc := st.Connect(t, alice)
		cnc := st.Connect(t, carol)
		eventually(t, "alice's session", func() bool { return len(sessions(t, st, alice.ID, true)) == 1 })

		ask := func(nc *nats.Conn, uid int64) mulchat.PresenceReply {
			data, _ := json.Marshal(mulchat.PresenceRequest{RoomID: room.ID})
			m, err := nc.Request(mulchat.APISubject(uid, "presence"), data, wait)
			if err != nil {
				t.Fatal(err)
			}
			var rep mulchat.PresenceReply
			if err := json.Unmarshal(m.Data, &rep); err != nil {
				t.Fatal(err)
			}
			return rep
		}
		rep := ask(anc, alice.ID)
		got := map[string]string{}
		for _, m := range rep.Members {
			got[m.Username] = m.Status
		}
		if rep.Error != nil || got["alice"] != mulchat.PresenceOnline || got["bob"] != mulchat.PresenceOffline || len(got) != 2 {
			t.Fatalf("presence %+v", rep)
		}
		if rep := ask(cnc, carol.ID); rep.Error == nil || rep.Error.Code != mulchat.EFORBIDDEN {
			t.Fatalf("non-member's presence query: %+v", rep)
		}
	})
}
