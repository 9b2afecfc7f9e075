package router

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
)

// wait is how long a test waits for something that should happen at once; it
// bounds a hang, it does not measure speed.
const wait = 10 * time.Second

// startRouter starts a router on a fresh service connection of the stack.
func startRouter(t *testing.T, st *rttest.Stack, mod func(*Config)) *Router {
	t.Helper()
	nc := st.ServiceConn(t, "router", false)
	return startRouterOn(t, st, nc, mod)
}

func startRouterOn(t *testing.T, st *rttest.Stack, nc *nats.Conn, mod func(*Config)) *Router {
	t.Helper()
	return startRouterHooked(t, st, nc, mod, nil)
}

// startRouterHooked is startRouterOn with hooks set before Start.
func startRouterHooked(t *testing.T, st *rttest.Stack, nc *nats.Conn, mod func(*Config), hooks func(*Router)) *Router {
	t.Helper()
	cfg := Config{
		Store:            st.Store,
		Conn:             nc,
		AccountPublicKey: st.Authority.ChatAccountPublicKey(),
		PinnedTTL:        time.Second,
		DeliveryAckWait:  2 * time.Second,
		RateLimit:        -1,
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if hooks != nil {
		hooks(r)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// client is a connected test user that records everything delivered to it,
// messages and events, in arrival order on one subscription.
type client struct {
	t  *testing.T
	u  *rttest.StackUser
	nc *nats.Conn

	mu     sync.Mutex
	msgs   []mulchat.Message
	events []mulchat.Event
	errs   []error
	notify chan struct{}
}

func connectClient(t *testing.T, st *rttest.Stack, u *rttest.StackUser) *client {
	t.Helper()
	c := &client{t: t, u: u, notify: make(chan struct{}, 1)}
	c.nc = st.Connect(t, u, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		c.mu.Lock()
		c.errs = append(c.errs, err)
		c.mu.Unlock()
		c.poke()
	}))
	_, err := c.nc.Subscribe(mulchat.UserSubject(u.ID, ">"), func(m *nats.Msg) {
		c.mu.Lock()
		switch {
		case strings.HasSuffix(m.Subject, ".msg"):
			var msg mulchat.Message
			if err := json.Unmarshal(m.Data, &msg); err != nil {
				t.Errorf("bad delivery: %v", err)
			}
			c.msgs = append(c.msgs, msg)
		case strings.HasSuffix(m.Subject, ".event"):
			var ev mulchat.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Errorf("bad event: %v", err)
			}
			c.events = append(c.events, ev)
		}
		c.mu.Unlock()
		c.poke()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *client) poke() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// send sends text to room and returns the router's reply.
func (c *client) send(roomID int64, text, clientMsgID string) mulchat.SendReply {
	c.t.Helper()
	data, _ := json.Marshal(mulchat.SendRequest{Text: text, ClientMsgID: clientMsgID})
	return c.sendRaw(roomID, data)
}

func (c *client) sendRaw(roomID int64, data []byte) mulchat.SendReply {
	c.t.Helper()
	m, err := c.nc.Request(mulchat.SendSubject(roomID, c.u.ID), data, wait)
	if err != nil {
		c.t.Fatalf("send: %v", err)
	}
	var rep mulchat.SendReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		c.t.Fatalf("send reply %q: %v", m.Data, err)
	}
	return rep
}

// mustSend sends and fails the test on an error reply.
func (c *client) mustSend(roomID int64, text string) uint64 {
	c.t.Helper()
	rep := c.send(roomID, text, "")
	if rep.Error != nil {
		c.t.Fatalf("send %q: %s: %s", text, rep.Error.Code, rep.Error.Message)
	}
	return rep.Seq
}

// waitFor waits until cond holds over the client's state.
func (c *client) waitFor(what string, cond func(msgs []mulchat.Message, events []mulchat.Event) bool) {
	c.t.Helper()
	deadline := time.After(wait)
	for {
		c.mu.Lock()
		msgs := append([]mulchat.Message(nil), c.msgs...)
		events := append([]mulchat.Event(nil), c.events...)
		c.mu.Unlock()
		if cond(msgs, events) {
			return
		}
		select {
		case <-c.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			c.t.Fatalf("%s: timed out waiting for %s; have %d messages %v, events %v", c.u.Username, what, len(c.msgs), texts(c.msgs), c.events)
		}
	}
}

func (c *client) waitMessages(n int) []mulchat.Message {
	c.t.Helper()
	c.waitFor("messages", func(m []mulchat.Message, _ []mulchat.Event) bool { return len(m) >= n })
	return c.messages()
}

func (c *client) messages() []mulchat.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]mulchat.Message(nil), c.msgs...)
}

func (c *client) errors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

// dedup drops, per room, messages whose seq is not above the last seen: what
// docs/realtime.md tells clients to do.
func dedup(msgs []mulchat.Message) []mulchat.Message {
	last := map[int64]uint64{}
	var out []mulchat.Message
	for _, m := range msgs {
		if m.Seq <= last[m.RoomID] {
			continue
		}
		last[m.RoomID] = m.Seq
		out = append(out, m)
	}
	return out
}

func texts(msgs []mulchat.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Text
	}
	return out
}

// streamMsgs counts the chat messages stored for roomID.
func streamMsgs(t *testing.T, st *rttest.Stack, roomID int64) uint64 {
	t.Helper()
	nc := st.ServiceConn(t, "counter", false)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(mulchat.RoomSubject(roomID)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[mulchat.RoomSubject(roomID)]
}

// barrier makes sure every delivery the router published before now has
// reached c: a marker event goes out on each connection the router delivers
// on (its own and each delivery worker's), after what was published there,
// and the server keeps one publisher's order towards one subscriber.
func barrier(t *testing.T, r *Router, c *client) {
	t.Helper()
	conns := []*nats.Conn{r.nc}
	if r.deliverer != nil {
		for _, w := range r.deliverer.workers {
			if !slices.Contains(conns, w.nc) {
				conns = append(conns, w.nc)
			}
		}
	}
	c.mu.Lock()
	n := len(c.events)
	c.mu.Unlock()
	for _, nc := range conns {
		if err := publishUserEvent(nc, time.Now(), c.u.ID, &mulchat.Event{Type: mulchat.EventCredential, Change: "barrier"}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	c.waitFor("barrier", func(_ []mulchat.Message, ev []mulchat.Event) bool {
		seen := 0
		for _, e := range ev[n:] {
			if e.Change == "barrier" {
				seen++
			}
		}
		return seen == len(conns)
	})
}

func signWithSeed(seed, nonce []byte) ([]byte, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, err
	}
	defer kp.Wipe()
	return kp.Sign(nonce)
}
