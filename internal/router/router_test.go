package router

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

func TestTwoUsersExchangeMessages(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		startRouter(t, st, nil)
		alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
		room := st.NewRoom(t, "general", alice, bob)
		ca, cb := connectClient(t, st, alice), connectClient(t, st, bob)

		s1 := ca.mustSend(room.ID, "hello bob")
		s2 := cb.mustSend(room.ID, "hi alice ✓")
		if s2 <= s1 {
			t.Fatalf("seqs %d then %d, want increasing", s1, s2)
		}
		for _, c := range []*client{ca, cb} {
			got := c.waitMessages(2)
			if len(got) != 2 {
				t.Fatalf("%s got %d messages, want 2", c.u.Username, len(got))
			}
			want := []struct {
				seq    uint64
				sender string
				text   string
			}{{s1, "alice", "hello bob"}, {s2, "bob", "hi alice ✓"}}
			for i, w := range want {
				m := got[i]
				if m.Seq != w.seq || m.Sender.Username != w.sender || m.Text != w.text || m.RoomID != room.ID || m.SentAt.IsZero() {
					t.Errorf("%s message %d = %+v, want seq %d from %s %q", c.u.Username, i, m, w.seq, w.sender, w.text)
				}
			}
		}
	})
}

func TestNonMember(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		r := startRouter(t, st, nil)
		alice, bob, carol := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0), st.NewUser(t, "carol", 0)
		room := st.NewRoom(t, "private", alice, bob)
		ca, cc := connectClient(t, st, alice), connectClient(t, st, carol)

		t.Run("send refused by the router", func(t *testing.T) {
			rep := cc.send(room.ID, "let me in", "")
			if rep.Error == nil || rep.Error.Code != mulchat.EFORBIDDEN {
				t.Fatalf("reply %+v, want error %s", rep, mulchat.EFORBIDDEN)
			}
			if n := streamMsgs(t, st, room.ID); n != 0 {
				t.Fatalf("%d messages stored, want 0", n)
			}
		})
		t.Run("history refused by the router", func(t *testing.T) {
			_, err := r.History(context.Background(), room.ID, carol.ID, 0, 10)
			if mulchat.ErrorCode(err) != mulchat.EFORBIDDEN {
				t.Fatalf("History err %v, want %s", err, mulchat.EFORBIDDEN)
			}
			data, _ := json.Marshal(mulchat.HistoryRequest{RoomID: room.ID})
			m, err := cc.nc.Request(mulchat.APISubject(carol.ID, "history"), data, wait)
			if err != nil {
				t.Fatal(err)
			}
			var rep mulchat.HistoryReply
			if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error == nil || rep.Error.Code != mulchat.EFORBIDDEN {
				t.Fatalf("history reply %s, want %s", m.Data, mulchat.EFORBIDDEN)
			}
		})
		for _, subject := range []string{
			mulchat.UserSubject(alice.ID, "msg"),     // a member's deliveries
			mulchat.RoomSubject(room.ID),             // the stored room subject
			"chat.user.>",                            // everyone's deliveries
			mulchat.UserInboxPrefix(alice.ID) + ".>", // a member's replies
		} {
			t.Run("subscribe denied by NATS: "+subject, func(t *testing.T) {
				errs := len(cc.errors())
				sub, err := cc.nc.SubscribeSync(subject)
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Unsubscribe()
				_ = cc.nc.Flush()
				cc.waitFor("permission violation", func([]mulchat.Message, []mulchat.Event) bool {
					for _, e := range cc.errors()[errs:] {
						if strings.Contains(strings.ToLower(e.Error()), "permissions violation for subscription") {
							return true
						}
					}
					return false
				})
				ca.mustSend(room.ID, "secret "+subject)
				if m, err := sub.NextMsg(200 * time.Millisecond); err == nil {
					t.Fatalf("non-member received %s", m.Data)
				}
			})
		}
	})
}

func TestJoinAndRemove(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		r := startRouter(t, st, nil)
		ctx := context.Background()
		alice, carol := st.NewUser(t, "alice", 0), st.NewUser(t, "carol", 0)
		room := st.NewRoom(t, "lobby", alice)
		ca, cc := connectClient(t, st, alice), connectClient(t, st, carol)

		ca.mustSend(room.ID, "before carol")
		// Delivered before carol joins: delivery follows membership at the
		// message's position in the stream or later (docs/realtime.md), so a
		// message still in flight at the join could reach her too.
		ca.waitMessages(1)
		// Prime the caches with carol as a non-member.
		if rep := cc.send(room.ID, "early", ""); rep.Error == nil {
			t.Fatal("non-member could send")
		}

		if err := st.Store.AddRoomMember(ctx, room.ID, carol.ID, mulchat.RoleMember); err != nil {
			t.Fatal(err)
		}
		if err := r.MembershipChanged(ctx, room.ID, carol.ID, mulchat.MembershipJoined); err != nil {
			t.Fatal(err)
		}
		cc.waitFor("joined event", func(_ []mulchat.Message, ev []mulchat.Event) bool {
			return len(ev) > 0 && ev[0].Type == mulchat.EventMembership && ev[0].Change == mulchat.MembershipJoined && ev[0].RoomID == room.ID
		})
		seq := ca.mustSend(room.ID, "welcome carol")
		got := cc.waitMessages(1)
		if got[0].Text != "welcome carol" || got[0].Seq != seq {
			t.Fatalf("carol got %+v, want only the message sent after joining", got)
		}
		cc.mustSend(room.ID, "thanks")

		if err := st.Store.RemoveRoomMember(ctx, room.ID, carol.ID); err != nil {
			t.Fatal(err)
		}
		if err := r.MembershipChanged(ctx, room.ID, carol.ID, mulchat.MembershipRemoved); err != nil {
			t.Fatal(err)
		}
		ca.mustSend(room.ID, "after carol")
		ca.waitFor("after carol", func(m []mulchat.Message, _ []mulchat.Event) bool {
			return len(m) > 0 && m[len(m)-1].Text == "after carol"
		})
		barrier(t, r, cc)
		for _, m := range cc.messages() {
			if m.Text == "after carol" {
				t.Fatal("removed member received a message sent after removal")
			}
		}
		if rep := cc.send(room.ID, "still here?", ""); rep.Error == nil || rep.Error.Code != mulchat.EFORBIDDEN {
			t.Fatalf("removed member's send: %+v, want %s", rep, mulchat.EFORBIDDEN)
		}
	})
}

func TestSpoofing(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		startRouter(t, st, nil)
		alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
		room := st.NewRoom(t, "spoof", alice, bob)
		ca, cb := connectClient(t, st, alice), connectClient(t, st, bob)

		t.Run("publishing on another user's send subject is denied by the server", func(t *testing.T) {
			data, _ := json.Marshal(mulchat.SendRequest{Text: "I am bob"})
			_, err := ca.nc.Request(mulchat.SendSubject(room.ID, bob.ID), data, 500*time.Millisecond)
			if err == nil {
				t.Fatal("request on bob's send subject was answered")
			}
			ca.waitFor("permission violation", func([]mulchat.Message, []mulchat.Event) bool {
				for _, e := range ca.errors() {
					if strings.Contains(strings.ToLower(e.Error()), "permissions violation for publish") {
						return true
					}
				}
				return false
			})
			if n := streamMsgs(t, st, room.ID); n != 0 {
				t.Fatalf("%d messages stored, want 0", n)
			}
		})
		t.Run("a payload naming another sender shows the true sender", func(t *testing.T) {
			payload := fmt.Sprintf(`{"text":"from bob, honest","sender":{"id":%d,"username":"bob"},"sender_id":%d}`, bob.ID, bob.ID)
			rep := ca.sendRaw(room.ID, []byte(payload))
			if rep.Error != nil {
				t.Fatalf("send: %+v", rep.Error)
			}
			got := cb.waitMessages(1)
			if got[0].Sender.ID != alice.ID || got[0].Sender.Username != "alice" {
				t.Fatalf("sender %+v, want alice", got[0].Sender)
			}
		})
	})
}

func TestDuplicateClientMsgIDStoredOnce(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		r := startRouter(t, st, nil)
		alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
		room := st.NewRoom(t, "dups", alice, bob)
		ca, cb := connectClient(t, st, alice), connectClient(t, st, bob)

		first := ca.send(room.ID, "once", "m-1")
		again := ca.send(room.ID, "once", "m-1")
		if first.Error != nil || again.Error != nil {
			t.Fatalf("replies %+v %+v", first, again)
		}
		if first.Seq != again.Seq || !first.SentAt.Equal(*again.SentAt) {
			t.Fatalf("retry answered seq %d at %v, first was %d at %v", again.Seq, again.SentAt, first.Seq, first.SentAt)
		}
		// The same client id from another user is another message.
		other := cb.send(room.ID, "once", "m-1")
		if other.Seq == first.Seq {
			t.Fatal("bob's message deduplicated against alice's")
		}
		if n := streamMsgs(t, st, room.ID); n != 2 {
			t.Fatalf("%d messages stored, want 2", n)
		}
		cb.waitMessages(2)
		barrier(t, r, cb)
		if got := cb.messages(); len(got) != 2 || got[0].ClientMsgID != "m-1" {
			t.Fatalf("bob got %+v, want 2 messages", got)
		}
	})
}

func TestBadInput(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		startRouter(t, st, nil)
		alice := st.NewUser(t, "alice", 0)
		reader := st.NewUser(t, "rita", 0)
		room := st.NewRoom(t, "strict", alice)
		if err := st.Store.AddRoomMember(context.Background(), room.ID, reader.ID, mulchat.RoleReader); err != nil {
			t.Fatal(err)
		}
		ca, cr := connectClient(t, st, alice), connectClient(t, st, reader)

		cases := []struct {
			name string
			c    *client
			room int64
			data []byte
			code string
		}{
			{"empty", ca, room.ID, nil, mulchat.EINVALID},
			{"empty text", ca, room.ID, []byte(`{"text":""}`), mulchat.EINVALID},
			{"oversize", ca, room.ID, mustJSON(mulchat.SendRequest{Text: strings.Repeat("é", mulchat.MessageMaxChars+1)}), mulchat.ETOOLARGE},
			{"invalid UTF-8", ca, room.ID, []byte("{\"text\":\"bad \xff\xfe\"}"), mulchat.EINVALID},
			{"invalid JSON", ca, room.ID, []byte(`{"text":`), mulchat.EINVALID},
			{"not an object", ca, room.ID, []byte(`"hello"`), mulchat.EINVALID},
			{"NUL", ca, room.ID, []byte(`{"text":"a\u0000b"}`), mulchat.EINVALID},
			{"client_msg_id too long", ca, room.ID, mustJSON(mulchat.SendRequest{Text: "x", ClientMsgID: strings.Repeat("i", 65)}), mulchat.EINVALID},
			{"unknown room", ca, room.ID + 1000, []byte(`{"text":"hello"}`), mulchat.ENOTFOUND},
			{"reader may not send", cr, room.ID, []byte(`{"text":"hello"}`), mulchat.EFORBIDDEN},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				rep := tc.c.sendRaw(tc.room, tc.data)
				if rep.Error == nil || rep.Error.Code != tc.code {
					t.Fatalf("reply %+v, want error %s", rep, tc.code)
				}
				if rep.Error.Message == "" {
					t.Fatal("error without a message")
				}
			})
		}
		t.Run("4000 characters is accepted", func(t *testing.T) {
			rep := ca.sendRaw(room.ID, mustJSON(mulchat.SendRequest{Text: strings.Repeat("é", mulchat.MessageMaxChars)}))
			if rep.Error != nil {
				t.Fatalf("reply %+v", rep.Error)
			}
		})
		t.Run("wrong account", func(t *testing.T) {
			// A SYS-account connection cannot reach the chat account's
			// router at all: its request has no responders.
			sys := st.ServiceConn(t, "intruder", true)
			_, err := sys.Request(mulchat.SendSubject(room.ID, alice.ID), []byte(`{"text":"hello"}`), time.Second)
			if err == nil {
				t.Fatal("a request from another account was answered")
			}
		})
		if n := streamMsgs(t, st, room.ID); n != 1 {
			t.Fatalf("%d messages stored, want only the valid 4000-character one", n)
		}
	})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestWrongCredentialAccount: a user whose stored credential names another
// account is refused by the router even on the right subject.
func TestWrongCredentialAccount(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		startRouter(t, st, func(c *Config) { c.AccountPublicKey = st.Authority.SystemAccountPublicKey() })
		alice := st.NewUser(t, "alice", 0)
		room := st.NewRoom(t, "acct", alice)
		ca := connectClient(t, st, alice)
		rep := ca.send(room.ID, "hello", "")
		if rep.Error == nil || rep.Error.Code != mulchat.EFORBIDDEN {
			t.Fatalf("reply %+v, want %s", rep, mulchat.EFORBIDDEN)
		}
	})
}

func TestRateLimit(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	startRouter(t, st, func(c *Config) { c.RateLimit, c.RateBurst = 0.001, 3 })
	alice := st.NewUser(t, "alice", 0)
	room := st.NewRoom(t, "slow", alice)
	ca := connectClient(t, st, alice)
	for i := 0; i < 3; i++ {
		ca.mustSend(room.ID, fmt.Sprint("m", i))
	}
	if rep := ca.send(room.ID, "one too many", ""); rep.Error == nil || rep.Error.Code != mulchat.ERATELIMITED {
		t.Fatalf("reply %+v, want %s", rep, mulchat.ERATELIMITED)
	}
}

// TestRenewalKeepsClientConnected: the server closes a connection when its JWT
// expires; a client that renews its credential and hands the fresh JWT to
// nats.go's reconnect keeps working with the same key.
func TestRenewalKeepsClientConnected(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	startRouter(t, st, nil)
	ctx := context.Background()
	// Signed "an hour minus 3 seconds ago" for an hour: expires in 3 seconds.
	st.ShiftClock(-time.Hour + 3*time.Second)
	alice := st.NewUser(t, "alice", time.Hour)
	st.ShiftClock(0)
	room := st.NewRoom(t, "renew", alice)

	jwtNow := make(chan string, 1)
	jwtNow <- alice.Cred.JWT
	current := func() (string, error) {
		j := <-jwtNow
		jwtNow <- j
		return j, nil
	}
	reconnected := make(chan struct{}, 4)
	nc, err := nats.Connect(st.URL,
		nats.UserJWT(current, func(nonce []byte) ([]byte, error) { return signWithSeed(alice.Cred.Seed, nonce) }),
		nats.CustomInboxPrefix(mulchat.UserInboxPrefix(alice.ID)),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	renewed, err := st.Authority.RenewUserCredential(ctx, alice.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.PublicKey != alice.Cred.PublicKey {
		t.Fatal("renewal changed the key")
	}
	<-jwtNow
	jwtNow <- renewed.JWT
	select {
	case <-reconnected:
	case <-time.After(wait):
		t.Fatal("client did not reconnect after its first JWT expired")
	}
	data, _ := json.Marshal(mulchat.SendRequest{Text: "still here"})
	m, err := nc.Request(mulchat.SendSubject(room.ID, alice.ID), data, wait)
	if err != nil {
		t.Fatal(err)
	}
	var rep mulchat.SendReply
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error != nil {
		t.Fatalf("send after renewal: %s", m.Data)
	}
}

func TestExpiredCredentialRefused(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	st.ShiftClock(-2 * time.Hour)
	alice := st.NewUser(t, "alice", time.Hour)
	st.ShiftClock(0)
	if nc, err := st.TryConnect(alice); err == nil {
		nc.Close()
		t.Fatal("an expired credential connected")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("connect error %v, want an authorization error", err)
	}
}

// TestRoomDeleted: after a room is deleted and announced, sends are refused
// as to an unknown room, also for a user cached as a non-member.
func TestRoomDeleted(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	r := startRouter(t, st, nil)
	ctx := context.Background()
	alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
	room := st.NewRoom(t, "doomed", alice)
	ca, cb := connectClient(t, st, alice), connectClient(t, st, bob)
	ca.mustSend(room.ID, "last words")
	if rep := cb.send(room.ID, "hi", ""); rep.Error == nil || rep.Error.Code != mulchat.EFORBIDDEN {
		t.Fatalf("bob: %+v", rep)
	}
	if err := st.Store.DeleteRoom(ctx, room.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.MembershipChanged(ctx, room.ID, alice.ID, mulchat.MembershipDeleted); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{ca, cb} {
		if rep := c.send(room.ID, "anyone?", ""); rep.Error == nil || rep.Error.Code != mulchat.ENOTFOUND {
			t.Fatalf("%s after deletion: %+v, want %s", c.u.Username, rep, mulchat.ENOTFOUND)
		}
	}
	ca.waitFor("deleted event", func(_ []mulchat.Message, ev []mulchat.Event) bool {
		return len(ev) > 0 && ev[len(ev)-1].Change == mulchat.MembershipDeleted
	})
}
