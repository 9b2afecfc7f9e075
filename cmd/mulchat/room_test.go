package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// chatter is a user connected over NATS with a credential issued by the CLI,
// recording what reaches chat.user.<uid>.>.
type chatter struct {
	t      *testing.T
	name   string
	id     int64
	nc     *nats.Conn
	closed chan struct{}

	mu     sync.Mutex
	msgs   []mulchat.Message
	events []mulchat.Event
}

func connectChatter(t *testing.T, c *cli, natsURL, name string, id int64) *chatter {
	t.Helper()
	file := filepath.Join(t.TempDir(), name+".creds")
	c.ok("", "creds", "issue", name, "-o", file, "--ttl", "1h", "--force")
	ch := &chatter{t: t, name: name, id: id, closed: make(chan struct{})}
	nc, err := nats.Connect(natsURL, nats.UserCredentials(file), nats.NoReconnect(),
		nats.CustomInboxPrefix(mulchat.UserInboxPrefix(id)),
		nats.ClosedHandler(func(*nats.Conn) { close(ch.closed) }))
	if err != nil {
		t.Fatalf("%s connects: %v", name, err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe(mulchat.UserSubject(id, ">"), func(m *nats.Msg) {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		if strings.HasSuffix(m.Subject, ".msg") {
			var msg mulchat.Message
			if json.Unmarshal(m.Data, &msg) == nil {
				ch.msgs = append(ch.msgs, msg)
			}
			return
		}
		var ev mulchat.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			ch.events = append(ch.events, ev)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ch.nc = nc
	return ch
}

// send returns the reply's error code, "" for an accepted send.
func (ch *chatter) send(roomID int64, text string) string {
	ch.t.Helper()
	data, _ := json.Marshal(mulchat.SendRequest{Text: text})
	m, err := ch.nc.Request(mulchat.SendSubject(roomID, ch.id), data, 10*time.Second)
	if err != nil {
		ch.t.Fatalf("%s sends %q: %v", ch.name, text, err)
	}
	var rep mulchat.SendReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		ch.t.Fatalf("%s: send reply %s: %v", ch.name, m.Data, err)
	}
	if rep.Error != nil {
		return rep.Error.Code
	}
	return ""
}

// sendAnswersWithin sends until the reply's code is want, for at most d:
// issue 3 wants membership changes enforced by every instance within a
// second.
func (ch *chatter) sendAnswersWithin(d time.Duration, roomID int64, want string) {
	ch.t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := ch.send(roomID, "probe")
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			ch.t.Fatalf("%s's send still answers %q after %v, want %q", ch.name, got, d, want)
		}
		// Probes at the default send rate (20/s) are never rate limited.
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor waits (up to 10 s: deliveries, not the deadline under test) until
// cond holds for what the chatter received.
func (ch *chatter) waitFor(what string, cond func(msgs []mulchat.Message, events []mulchat.Event) bool) {
	ch.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ch.mu.Lock()
		ok := cond(ch.msgs, ch.events)
		ch.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			ch.t.Fatalf("%s: no %s", ch.name, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (ch *chatter) waitText(text string) {
	ch.t.Helper()
	ch.waitFor("message "+text, func(msgs []mulchat.Message, _ []mulchat.Event) bool {
		return hasText(msgs, text)
	})
}

func (ch *chatter) waitEvent(roomID int64, change string) {
	ch.t.Helper()
	ch.waitFor("membership event "+change, func(_ []mulchat.Message, events []mulchat.Event) bool {
		for _, e := range events {
			if e.Type == mulchat.EventMembership && e.RoomID == roomID && e.UserID == ch.id && e.Change == change {
				return true
			}
		}
		return false
	})
}

func hasText(msgs []mulchat.Message, text string) bool {
	for _, m := range msgs {
		if m.Text == text {
			return true
		}
	}
	return false
}

// createdID reads the id out of "created … (id N)…".
func createdID(t *testing.T, out string) int64 {
	t.Helper()
	i := strings.Index(out, "(id ")
	var id int64
	if i < 0 {
		t.Fatalf("no id in %q", out)
	}
	if _, err := fmt.Sscanf(out[i:], "(id %d)", &id); err != nil {
		t.Fatalf("no id in %q: %v", out, err)
	}
	return id
}

const notToldWarning = "running servers were not told"

// TestRoomMembershipReachesRunningServer changes membership with the CLI
// while `mulchat serve` (app.Start) runs on the same data directory: the
// CLI tells the server's router over NATS, so a removed member's sends are
// refused and deliveries stop within a second, and a re-added member sends
// again without reconnecting. Without a running server the change is saved
// and the CLI warns.
func TestRoomMembershipReachesRunningServer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dbURL func(t *testing.T) string
	}{
		{"sqlite", func(*testing.T) string { return "" }},
		{"postgres", func(t *testing.T) string { return sqltest.NewPostgresDatabaseURL(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.dbURL(t)
			env := []string{"MULCHAT_PASSWORD=" + pw}
			if url != "" {
				env = append(env, "MULCHAT_DATABASE_URL="+url)
			}
			c := newCLI(t, env...)
			aliceID := createdID(t, c.ok("", "user", "create", "alice").stdout)
			bobID := createdID(t, c.ok("", "user", "create", "bob").stdout)
			roomID := createdID(t, c.ok("", "room", "create", "general", "--owner", "alice").stdout)
			// No server runs yet: saved, with a warning.
			if r := c.ok("", "room", "add-member", "general", "bob"); !strings.Contains(r.stderr, notToldWarning) {
				t.Fatalf("add-member without a server: stderr %q lacks the warning", r.stderr)
			}

			m := c.serve(url)
			alice := connectChatter(t, c, m.NATSClientURL(), "alice", aliceID)
			bob := connectChatter(t, c, m.NATSClientURL(), "bob", bobID)

			// Both members send and receive (and the router caches bob as
			// a member of general, for its 30 s TTL).
			if code := alice.send(roomID, "one"); code != "" {
				t.Fatalf("alice's send: %s", code)
			}
			if code := bob.send(roomID, "hi"); code != "" {
				t.Fatalf("bob's send: %s", code)
			}
			bob.waitText("one")

			r := c.ok("", "room", "remove-member", "general", "bob")
			if strings.Contains(r.stderr, notToldWarning) {
				t.Fatalf("remove-member with a running server warned: %s", r.stderr)
			}
			bob.sendAnswersWithin(time.Second, roomID, mulchat.EFORBIDDEN)
			bob.waitEvent(roomID, mulchat.MembershipRemoved)
			if code := alice.send(roomID, "two"); code != "" {
				t.Fatalf("alice's send: %s", code)
			}
			// Delivered before bob is added again: a message still being
			// delivered when membership changes may go to either member set.
			alice.waitText("two")

			c.ok("", "room", "add-member", "general", "bob")
			bob.sendAnswersWithin(time.Second, roomID, "")
			bob.waitEvent(roomID, mulchat.MembershipJoined)
			if code := alice.send(roomID, "three"); code != "" {
				t.Fatalf("alice's send: %s", code)
			}
			bob.waitText("three")
			bob.mu.Lock()
			got := hasText(bob.msgs, "two")
			bob.mu.Unlock()
			// Deliveries to bob come in stream order on one connection:
			// had "two" been sent to him, it would be here before "three".
			if got {
				t.Fatal("bob received a message sent while he was not a member")
			}

			// Deleting the room: its members' sends find no room.
			c.ok("", "room", "delete", "general")
			alice.sendAnswersWithin(time.Second, roomID, mulchat.ENOTFOUND)
			alice.waitEvent(roomID, mulchat.MembershipDeleted)
			bob.waitEvent(roomID, mulchat.MembershipDeleted)

			// Disabling a user revokes the credential on the running
			// server: bob is disconnected.
			c.ok("", "user", "disable", "bob")
			select {
			case <-bob.closed:
			case <-time.After(10 * time.Second):
				t.Fatal("a disabled user's connection stayed open")
			}
		})
	}
}
