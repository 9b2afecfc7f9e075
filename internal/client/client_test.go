package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/client"
	"github.com/mulchat/mulchat/internal/client/clienttest"
)

const password = "correct horse battery"

// inbox collects what a client receives.
type inbox struct {
	mu     sync.Mutex
	msgs   []mulchat.Message
	events []client.Event
	states []client.Status
	signal chan struct{}
}

func newInbox() *inbox { return &inbox{signal: make(chan struct{}, 1)} }

func (b *inbox) poke() {
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

func (b *inbox) config(cfg *client.Config) {
	cfg.OnMessage = func(m mulchat.Message) { b.mu.Lock(); b.msgs = append(b.msgs, m); b.mu.Unlock(); b.poke() }
	cfg.OnEvent = func(e client.Event) { b.mu.Lock(); b.events = append(b.events, e); b.mu.Unlock(); b.poke() }
	cfg.OnStatus = func(s client.Status) { b.mu.Lock(); b.states = append(b.states, s); b.mu.Unlock(); b.poke() }
}

// waitFor waits until cond holds over the inbox (under its lock) or fails.
func (b *inbox) waitFor(t *testing.T, what string, cond func(b *inbox) bool) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		b.mu.Lock()
		ok := cond(b)
		b.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-b.signal:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			b.mu.Lock()
			defer b.mu.Unlock()
			t.Fatalf("timed out waiting for %s; have %d messages %v, states %v", what, len(b.msgs), texts(b.msgs), b.states)
		}
	}
}

func (b *inbox) texts() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return texts(b.msgs)
}

func (b *inbox) count(state string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.states {
		if s.State == state {
			n++
		}
	}
	return n
}

func texts(msgs []mulchat.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Text
	}
	return out
}

// newUser registers and logs in a user; mod may change the config.
func newUser(t *testing.T, srv *clienttest.Server, name string, mod func(*client.Config)) (*client.Client, *inbox) {
	t.Helper()
	b := newInbox()
	cfg := client.Config{ServerURL: srv.URL(), Name: "test-" + name}
	b.config(&cfg)
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	if _, err := c.Register(ctx, name, password, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Login(ctx, name, password); err != nil {
		t.Fatal(err)
	}
	return c, b
}

func connect(t *testing.T, c *client.Client) {
	t.Helper()
	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("connect: %v", err)
	}
}

// roomWith creates a public room owned by owner and joins the others.
func roomWith(t *testing.T, name string, owner *client.Client, others ...*client.Client) *client.Room {
	t.Helper()
	ctx := context.Background()
	r, err := owner.CreateRoom(ctx, name, "", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range others {
		if err := o.JoinRoom(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestTwoUsersChat(t *testing.T) {
	for _, db := range []struct {
		name     string
		postgres bool
	}{{"sqlite", false}, {"postgres", true}} {
		t.Run(db.name, func(t *testing.T) {
			testTwoUsersChat(t, clienttest.Start(t, clienttest.Options{Postgres: db.postgres}))
		})
	}
}

func testTwoUsersChat(t *testing.T, srv *clienttest.Server) {
	alice, aliceIn := newUser(t, srv, "alice", nil)
	bob, bobIn := newUser(t, srv, "bob", nil)
	room := roomWith(t, "lobby", alice, bob)
	connect(t, alice)
	connect(t, bob)
	ctx := context.Background()

	ack, err := alice.Send(ctx, room.ID, "hello bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, room.ID, "hi alice"); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*inbox{aliceIn, bobIn} {
		in.waitFor(t, "both messages", func(b *inbox) bool { return len(b.msgs) >= 2 })
	}
	bobIn.mu.Lock()
	first := bobIn.msgs[0]
	bobIn.mu.Unlock()
	if first.Text != "hello bob" || first.Sender.Username != "alice" || first.Sender.ID != alice.UserID() ||
		first.Seq != ack.Seq || first.RoomID != room.ID || first.ClientMsgID != ack.ClientMsgID {
		t.Errorf("bob got %+v, want alice's message with seq %d", first, ack.Seq)
	}
	for name, in := range map[string]*inbox{"alice": aliceIn, "bob": bobIn} {
		if got := strings.Join(in.texts(), "|"); got != "hello bob|hi alice" {
			t.Errorf("%s received %q", name, got)
		}
	}

	hist, err := bob.History(ctx, room.ID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(texts(hist), "|"); got != "hello bob|hi alice" {
		t.Errorf("history = %q", got)
	}
}

func TestSendErrors(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	alice, _ := newUser(t, srv, "alice", nil)
	carol, _ := newUser(t, srv, "carol", nil)
	room := roomWith(t, "private-ish", alice)
	connect(t, carol)
	ctx := context.Background()

	tests := []struct {
		name string
		room int64
		text string
		code string
	}{
		{"empty text", room.ID, "", mulchat.EINVALID},
		{"invalid UTF-8", room.ID, "\xff\xfe", mulchat.EINVALID},
		{"too long", room.ID, strings.Repeat("x", mulchat.MessageMaxChars+1), mulchat.ETOOLARGE},
		{"not a member", room.ID, "let me in", mulchat.EFORBIDDEN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := carol.Send(ctx, tt.room, tt.text)
			if got := mulchat.ErrorCode(err); got != tt.code {
				t.Fatalf("Send: code %q (%v), want %q", got, err, tt.code)
			}
		})
	}
	if _, err := carol.History(ctx, room.ID, 0, 10); mulchat.ErrorCode(err) != mulchat.EFORBIDDEN {
		t.Errorf("History of a room carol is not in: %v, want forbidden", err)
	}
}

func TestLoginErrors(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	newUser(t, srv, "alice", nil)
	ctx := context.Background()
	c, err := client.New(client.Config{ServerURL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(ctx, "alice", "wrong password!"); mulchat.ErrorCode(err) != mulchat.EUNAUTHORIZED {
		t.Errorf("wrong password: %v, want unauthorized", err)
	}
	if err := c.Connect(ctx); mulchat.ErrorCode(err) != mulchat.EUNAUTHORIZED {
		t.Errorf("connect before login: %v, want unauthorized", err)
	}
	if _, err := c.Register(ctx, "alice", password, ""); mulchat.ErrorCode(err) != mulchat.ECONFLICT {
		t.Errorf("register a taken name: %v, want conflict", err)
	}
	for _, bad := range []string{"", "ftp://x", "http://", "http://u:p@host"} {
		if _, err := client.New(client.Config{ServerURL: bad}); mulchat.ErrorCode(err) != mulchat.EINVALID {
			t.Errorf("New(%q): %v, want invalid", bad, err)
		}
	}
	down, _ := client.New(client.Config{ServerURL: "http://127.0.0.1:1"})
	if err := down.Login(ctx, "alice", password); mulchat.ErrorCode(err) != mulchat.EUNAVAILABLE {
		t.Errorf("unreachable server: %v, want unavailable", err)
	}
}

// A message delivered twice (a retried send, an overlapping reconnect) is
// handed to the application once, and an older seq after a newer one is
// dropped.
func TestDuplicateDeliveriesDropped(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	bob, bobIn := newUser(t, srv, "bob", nil)
	connect(t, bob)
	pub := func(seq uint64, text string) {
		b, _ := json.Marshal(mulchat.Message{RoomID: 7, Seq: seq, Sender: mulchat.Sender{ID: 1, Username: "x"}, Text: text, SentAt: time.Now()})
		if err := srv.Service.Publish(mulchat.UserSubject(bob.UserID(), "msg"), b); err != nil {
			t.Fatal(err)
		}
	}
	pub(1, "one")
	pub(1, "one again")
	pub(3, "three")
	pub(2, "two, late")
	pub(3, "three again")
	pub(4, "four")
	if err := srv.Service.Flush(); err != nil {
		t.Fatal(err)
	}
	bobIn.waitFor(t, "four", func(b *inbox) bool { return len(b.msgs) > 0 && b.msgs[len(b.msgs)-1].Text == "four" })
	if got := strings.Join(bobIn.texts(), "|"); got != "one|three|four" {
		t.Errorf("delivered %q, want one|three|four", got)
	}
}

// A retried send with the same client_msg_id is stored once.
func TestSendSameClientMsgIDStoredOnce(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	alice, aliceIn := newUser(t, srv, "alice", nil)
	room := roomWith(t, "dedup", alice)
	connect(t, alice)
	ctx := context.Background()
	a1, err := alice.SendMessage(ctx, room.ID, "once", "fixed-id-1")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := alice.SendMessage(ctx, room.ID, "once", "fixed-id-1")
	if err != nil {
		t.Fatal(err)
	}
	if a1.Seq != a2.Seq {
		t.Errorf("retry got seq %d, first %d: stored twice", a2.Seq, a1.Seq)
	}
	if _, err := alice.Send(ctx, room.ID, "after"); err != nil {
		t.Fatal(err)
	}
	aliceIn.waitFor(t, "after", func(b *inbox) bool { return len(b.msgs) > 0 && b.msgs[len(b.msgs)-1].Text == "after" })
	if got := strings.Join(aliceIn.texts(), "|"); got != "once|after" {
		t.Errorf("delivered %q", got)
	}
	hist, err := alice.History(ctx, room.ID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(texts(hist), "|"); got != "once|after" {
		t.Errorf("history %q", got)
	}
}

// Messages sent while a client was cut off are fetched from history after it
// reconnects by itself, before and in order with the live ones.
func TestGapFilledAfterReconnect(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	proxy := clienttest.StartProxy(t, srv.Main.NATSClientURL())
	alice, _ := newUser(t, srv, "alice", nil)
	bob, bobIn := newUser(t, srv, "bob", func(c *client.Config) { c.NATSURLs = []string{proxy.URL()} })
	room := roomWith(t, "gaps", alice, bob)
	connect(t, alice)
	connect(t, bob)
	ctx := context.Background()

	if _, err := alice.Send(ctx, room.ID, "before"); err != nil {
		t.Fatal(err)
	}
	bobIn.waitFor(t, "before", func(b *inbox) bool { return len(b.msgs) == 1 })

	proxy.Cut()
	bobIn.waitFor(t, "disconnect", func(b *inbox) bool { return bobCount(b, client.StateDisconnected) > 0 })
	for _, text := range []string{"missed 1", "missed 2", "missed 3"} {
		if _, err := alice.Send(ctx, room.ID, text); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Resume()
	bobIn.waitFor(t, "gap fill", func(b *inbox) bool { return bobCount(b, client.StateGapFilled) > 0 })
	if _, err := alice.Send(ctx, room.ID, "live"); err != nil {
		t.Fatal(err)
	}
	bobIn.waitFor(t, "live", func(b *inbox) bool { return len(b.msgs) > 0 && b.msgs[len(b.msgs)-1].Text == "live" })
	if got := strings.Join(bobIn.texts(), "|"); got != "before|missed 1|missed 2|missed 3|live" {
		t.Errorf("bob received %q", got)
	}
	// bob can send again over the new connection.
	if _, err := bob.Send(ctx, room.ID, "back"); err != nil {
		t.Fatalf("send after reconnect: %v", err)
	}
}

func bobCount(b *inbox, state string) int {
	n := 0
	for _, s := range b.states {
		if s.State == state {
			n++
		}
	}
	return n
}

// The client renews its JWT in the background and reconnects with the new
// one, staying usable.
func TestRenewalKeepsClientConnected(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	alice, aliceIn := newUser(t, srv, "alice", func(c *client.Config) {
		c.CredentialTTL = time.Minute
		c.RenewAt = 0.03 // about two seconds into the minute
	})
	room := roomWith(t, "renew", alice)
	connect(t, alice)
	firstExpiry := alice.CredentialExpiresAt()
	aliceIn.waitFor(t, "two renewals", func(b *inbox) bool { return bobCount(b, client.StateRenewed) >= 2 })
	aliceIn.waitFor(t, "reconnected with the new JWT", func(b *inbox) bool { return bobCount(b, client.StateReconnected) >= 1 })
	if !alice.CredentialExpiresAt().After(firstExpiry) {
		t.Errorf("expiry %v not after the first %v", alice.CredentialExpiresAt(), firstExpiry)
	}
	if _, err := alice.Send(context.Background(), room.ID, "still here"); err != nil {
		t.Fatalf("send after renewals: %v", err)
	}
	aliceIn.waitFor(t, "own message", func(b *inbox) bool { return len(b.msgs) == 1 })
	if n := aliceIn.count(client.StateClosed); n != 0 {
		t.Errorf("client closed %d times", n)
	}
}

// A revoked credential closes the client instead of reconnecting forever.
func TestRevocationClosesClient(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	alice, aliceIn := newUser(t, srv, "alice", nil)
	connect(t, alice)
	if err := alice.RevokeCredential(context.Background()); err != nil {
		t.Fatal(err)
	}
	aliceIn.waitFor(t, "closed", func(b *inbox) bool { return bobCount(b, client.StateClosed) > 0 })
	aliceIn.mu.Lock()
	defer aliceIn.mu.Unlock()
	for _, s := range aliceIn.states {
		if s.State == client.StateClosed && mulchat.ErrorCode(s.Err) != mulchat.EUNAUTHORIZED {
			t.Errorf("closed with %v, want an unauthorized error; states %+v", s.Err, aliceIn.states)
		}
	}
}

// No seed, token, password or JWT reaches the log, even at debug level.
func TestSecretsNeverLogged(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := clienttest.Start(t, clienttest.Options{})
	alice, _ := newUser(t, srv, "alice", func(c *client.Config) { c.Logger = logger })
	room := roomWith(t, "secrets", alice)
	connect(t, alice)
	ctx := context.Background()
	if _, err := alice.Send(ctx, room.ID, "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.RenewCredential(ctx); err != nil {
		t.Fatal(err)
	}
	secrets := client.SecretsForTest(alice)
	secrets["password"] = password
	_ = alice.Close()
	mu.Lock()
	defer mu.Unlock()
	if logs.Len() == 0 {
		t.Fatal("nothing was logged; the test would prove nothing")
	}
	for name, s := range secrets {
		if s == "" {
			t.Fatalf("secret %s is empty", name)
		}
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log contains the %s", name)
		}
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Membership changes reach the affected user as events, without
// reconnecting, and a joined member receives the room's new messages.
func TestMembershipEvents(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	alice, _ := newUser(t, srv, "alice", nil)
	bob, bobIn := newUser(t, srv, "bob", nil)
	room := roomWith(t, "events", alice)
	connect(t, alice)
	connect(t, bob)
	ctx := context.Background()

	if err := bob.JoinRoom(ctx, room.ID); err != nil {
		t.Fatal(err)
	}
	bobIn.waitFor(t, "joined event", func(b *inbox) bool { return hasEvent(b, mulchat.EventMembership, room.ID, mulchat.MembershipJoined) })
	if _, err := alice.Send(ctx, room.ID, "welcome"); err != nil {
		t.Fatal(err)
	}
	bobIn.waitFor(t, "welcome", func(b *inbox) bool { return len(b.msgs) == 1 })

	if err := bob.LeaveRoom(ctx, room.ID); err != nil {
		t.Fatal(err)
	}
	bobIn.waitFor(t, "left event", func(b *inbox) bool { return hasEvent(b, mulchat.EventMembership, room.ID, mulchat.MembershipLeft) })
	if _, err := bob.Send(ctx, room.ID, "still there?"); mulchat.ErrorCode(err) != mulchat.EFORBIDDEN {
		t.Errorf("send after leaving: %v, want forbidden", err)
	}
}

func hasEvent(b *inbox, typ string, roomID int64, change string) bool {
	for _, e := range b.events {
		if e.Type == typ && e.RoomID == roomID && e.Change == change {
			return true
		}
	}
	return false
}

// What docs/client.md shows with the nats CLI, done with nats.go: a .creds
// file from the API, the custom inbox prefix, a request on the send subject
// and a subscription to the user's deliveries.
func TestPlainNATSWithCredsFile(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	alice, _ := newUser(t, srv, "alice", nil)
	room := roomWith(t, "cli", alice)
	ctx := context.Background()
	creds, err := alice.ServerGeneratedCreds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/alice.creds"
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	uid := alice.UserID()
	nc, err := nats.Connect(srv.Main.NATSClientURL(), nats.UserCredentials(path),
		nats.CustomInboxPrefix(mulchat.UserInboxPrefix(uid)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(mulchat.UserSubject(uid, ">"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	reply, err := nc.Request(mulchat.SendSubject(room.ID, uid), []byte(`{"text":"hi"}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ack struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(reply.Data, &ack); err != nil || ack.Seq == 0 {
		t.Fatalf("reply %s: %v", reply.Data, err)
	}
	for {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no delivery: %v", err)
		}
		if m.Subject != mulchat.UserSubject(uid, "msg") {
			continue // an event
		}
		var msg mulchat.Message
		if err := json.Unmarshal(m.Data, &msg); err != nil {
			t.Fatal(err)
		}
		if msg.Text != "hi" || msg.Seq != ack.Seq || msg.Sender.Username != "alice" {
			t.Errorf("delivery %+v", msg)
		}
		break
	}
	// Without the custom inbox prefix the reply cannot reach the user.
	plain, err := nats.Connect(srv.Main.NATSClientURL(), nats.UserCredentials(path),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // the denied inbox is expected
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Request(mulchat.SendSubject(room.ID, uid), []byte(`{"text":"lost"}`), time.Second); err == nil {
		t.Error("a request with the default _INBOX prefix got a reply")
	}
}

// The data model holds one credential per user: a second client of the same
// user takes it over, and the first closes with a clear reason instead of
// fighting for it.
func TestSecondClientOfSameUserTakesOver(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	first, firstIn := newUser(t, srv, "alice", nil)
	room := roomWith(t, "takeover", first)
	connect(t, first)

	b := newInbox()
	cfg := client.Config{ServerURL: srv.URL()}
	b.config(&cfg)
	second, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	ctx := context.Background()
	if err := second.Login(ctx, "alice", password); err != nil {
		t.Fatal(err)
	}
	connect(t, second)

	firstIn.waitFor(t, "first client closed", func(b *inbox) bool { return bobCount(b, client.StateClosed) > 0 })
	firstIn.mu.Lock()
	var reason error
	for _, s := range firstIn.states {
		if s.State == client.StateClosed {
			reason = s.Err
		}
	}
	firstIn.mu.Unlock()
	if mulchat.ErrorCode(reason) != mulchat.EUNAUTHORIZED || !strings.Contains(mulchat.ErrorMessage(reason), "another client") {
		t.Errorf("first client closed with %v", reason)
	}
	if _, err := second.Send(ctx, room.ID, "mine now"); err != nil {
		t.Fatalf("second client cannot send: %v", err)
	}
	b.waitFor(t, "own message", func(b *inbox) bool { return len(b.msgs) == 1 })
}

// When the server comes back with NATS on another port, the client learns
// the new URL from the API, connects there and recovers what it missed.
func TestClientFollowsMovedNATS(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	alice, _ := newUser(t, srv, "alice", nil)
	bob, bobIn := newUser(t, srv, "bob", nil)
	room := roomWith(t, "moved", alice, bob)
	connect(t, bob)
	oldURL := srv.Main.NATSClientURL()

	srv.Restart(t)
	if srv.Main.NATSClientURL() == oldURL {
		t.Skip("the restarted server got the same NATS port")
	}
	ctx := context.Background()
	if _, err := alice.Send(ctx, room.ID, "after the move"); mulchat.ErrorCode(err) != mulchat.EUNAVAILABLE {
		t.Fatalf("alice (never connected) sent without NATS: %v", err)
	}
	if err := alice.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, room.ID, "after the move"); err != nil {
		t.Fatal(err)
	}
	bobIn.waitFor(t, "the message sent while bob was away", func(b *inbox) bool {
		return len(b.msgs) == 1 && b.msgs[0].Text == "after the move"
	})
	if got := bob.Conn().ConnectedUrl(); got != srv.Main.NATSClientURL() {
		t.Errorf("bob is connected to %s, want %s", got, srv.Main.NATSClientURL())
	}
}
