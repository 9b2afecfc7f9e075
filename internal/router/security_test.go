package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
)

// counter reads a counter of reg whose only label has value label ("" for a
// counter without labels).
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ls := m.GetLabel()
			if (label == "" && len(ls) == 0) || (len(ls) == 1 && ls[0].GetValue() == label) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// eventually polls cond until it holds (testenv.Eventually).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, wait, what, cond)
}

func TestReplyAllowed(t *testing.T) {
	cases := []struct {
		reply string
		ok    bool
	}{
		{"_INBOX.7.abc.1", true},
		{"_INBOX.7.x", true},
		{"", false},
		{"_INBOX.7", false},
		{"_INBOX.7.", false},
		{"_INBOX.70.x", false},
		{"_INBOX.8.x", false},
		{"_INBOX.7.>", false},
		{"_INBOX.7.*.x", false},
		{"_INBOX.7.a..b", false},
		{"_INBOX.abc.x", false},
		{"chat.room.3", false},
		{"chat.user.8.msg", false},
		{"$JS.API.STREAM.PURGE.CHAT", false},
		{"x._INBOX.7.y", false},
	}
	for _, c := range cases {
		if got := replyAllowed(c.reply, 7); got != c.ok {
			t.Errorf("replyAllowed(%q, 7) = %v, want %v", c.reply, got, c.ok)
		}
	}
}

// TestReplySubjectHijack: a user who sets the reply subject of a send or API
// request to anything but their own inbox (another room's stream subject,
// another user's delivery, event or inbox subject, the JetStream API) gets
// nothing published there: the router drops the request before any work,
// without spending the user's rate limit, and still answers requests that
// name the user's own inbox.
func TestReplySubjectHijack(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	reg := prometheus.NewRegistry()
	r := startRouter(t, st, func(c *Config) {
		c.Registerer = reg
		// One token and (practically) no refill: the legitimate send at the
		// end succeeds only if the dropped requests spent none.
		c.RateLimit, c.RateBurst = 0.0001, 1
	})
	alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
	mine := st.NewRoom(t, "mine", alice)
	secret := st.NewRoom(t, "secret", bob)
	ca, cb := connectClient(t, st, alice), connectClient(t, st, bob)
	cb.mustSend(secret.ID, "bob's secret")
	cb.waitMessages(1)
	bobInbox, err := cb.nc.SubscribeSync(mulchat.UserInboxPrefix(bob.ID) + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := cb.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	svc := st.ServiceConn(t, "probe", false)
	js, err := jetstream.New(svc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	before := info.State.Msgs

	targets := []string{
		mulchat.RoomSubject(secret.ID),
		mulchat.RoomSubject(mine.ID),
		mulchat.UserSubject(bob.ID, "msg"),
		mulchat.UserSubject(bob.ID, "event"),
		mulchat.UserInboxPrefix(bob.ID) + ".x",
		"$JS.API.STREAM.PURGE." + StreamName,
		"$JS.API.STREAM.DELETE." + StreamName,
		"$JS.API.CONSUMER.DELETE." + StreamName + "." + ConsumerName,
		mulchat.UserInboxPrefix(alice.ID),        // the prefix itself is no inbox
		mulchat.UserInboxPrefix(alice.ID) + ".>", // a wildcard
		"",                                       // no reply at all
	}
	send, _ := json.Marshal(mulchat.SendRequest{Text: "injected"})
	hist, _ := json.Marshal(mulchat.HistoryRequest{RoomID: secret.ID})
	pres, _ := json.Marshal(mulchat.PresenceRequest{RoomID: mine.ID})
	requests := []struct {
		subject string
		data    []byte
	}{
		{mulchat.SendSubject(mine.ID, alice.ID), send},           // would be stored and acknowledged
		{mulchat.SendSubject(999999, alice.ID), send},            // would be refused (not_found)
		{"chat.send.x." + strconv.FormatInt(alice.ID, 10), send}, // bad room id
		{mulchat.APISubject(alice.ID, "history"), hist},          // would be refused (forbidden)
		{mulchat.APISubject(alice.ID, "presence"), pres},         // would be answered
		{mulchat.APISubject(alice.ID, "nope"), pres},             // unknown operation
	}
	for _, target := range targets {
		for _, req := range requests {
			var err error
			if target == "" {
				err = ca.nc.Publish(req.subject, req.data)
			} else {
				err = ca.nc.PublishRequest(req.subject, target, req.data)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := ca.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	want := float64(len(targets) * len(requests))
	eventually(t, "every hijacking request dropped", func() bool {
		return counter(t, reg, "mulchat_router_requests_dropped_total", dropBadReply) == want
	})
	// Anything the router published before now has reached bob.
	barrier(t, r, cb)

	if got := cb.messages(); len(got) != 1 || got[0].Text != "bob's secret" {
		t.Errorf("bob's deliveries %v, want only his own message", texts(got))
	}
	cb.mu.Lock()
	for _, ev := range cb.events {
		if ev.Change != "barrier" {
			t.Errorf("bob got an event %+v", ev)
		}
	}
	cb.mu.Unlock()
	if m, err := bobInbox.NextMsg(50 * time.Millisecond); err == nil {
		t.Errorf("bob's inbox got %s: %s", m.Subject, m.Data)
	}
	info, err = stream.Info(context.Background())
	if err != nil {
		t.Fatalf("stream after the attack: %v", err)
	}
	if info.State.Msgs != before {
		t.Errorf("stream holds %d messages, had %d", info.State.Msgs, before)
	}
	if n := streamMsgs(t, st, secret.ID); n != 1 {
		t.Errorf("secret room holds %d messages, want 1", n)
	}
	if n := streamMsgs(t, st, mine.ID); n != 0 {
		t.Errorf("alice's room holds %d messages, want 0 (every send was dropped)", n)
	}
	if _, err := stream.Consumer(context.Background(), ConsumerName); err != nil {
		t.Errorf("delivery consumer after the attack: %v", err)
	}
	if got := counter(t, reg, "mulchat_router_sends_total", mulchat.ERATELIMITED); got != 0 {
		t.Errorf("%v sends rate limited, want 0", got)
	}

	// The same requests with alice's own inbox are answered as usual.
	if seq := ca.mustSend(mine.ID, "legitimate"); seq == 0 {
		t.Fatal("no seq")
	}
	m, err := ca.nc.Request(mulchat.APISubject(alice.ID, "history"), hist, wait)
	if err != nil {
		t.Fatal(err)
	}
	var hrep mulchat.HistoryReply
	if err := json.Unmarshal(m.Data, &hrep); err != nil || hrep.Error == nil || hrep.Error.Code != mulchat.EFORBIDDEN {
		t.Fatalf("history of bob's room: %s, want %s", m.Data, mulchat.EFORBIDDEN)
	}
	// The one token went to the legitimate send: the limit is in force.
	if rep := ca.sendRaw(mine.ID, send); rep.Error == nil || rep.Error.Code != mulchat.ERATELIMITED {
		t.Fatalf("second send: %+v, want %s", rep, mulchat.ERATELIMITED)
	}
}

// TestSendFlood: one user publishing sends as fast as possible does not grow
// the router without bound: the rate limit applies before anything is
// queued, the subscription's pending buffer is bounded (a flood beyond it is
// dropped as a slow consumer), and another user's send is answered after the
// flood.
func TestSendFlood(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	reg := prometheus.NewRegistry()
	rnc := st.ServiceConn(t, "router", false)
	// A flood faster than the router's handler makes its subscription a
	// slow consumer (messages dropped): that is the intended bound, not
	// worth printing.
	var slow atomic.Int64
	rnc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			slow.Add(1)
			return
		}
		t.Logf("router connection: %v", err)
	})
	r := startRouterOn(t, st, rnc, func(c *Config) {
		c.Registerer = reg
		c.RateLimit, c.RateBurst = 20, 40
	})
	mallory, alice := st.NewUser(t, "mallory", 0), st.NewUser(t, "alice", 0)
	loud := st.NewRoom(t, "loud", mallory)
	calm := st.NewRoom(t, "calm", alice)
	ca := connectClient(t, st, alice)
	// Mallory does not read her inbox: answers to her are discarded by the
	// server, as a flooder would have them.
	mnc := st.Connect(t, mallory)

	for _, s := range r.subs {
		if s.Subject == "chat.send.*.*" || s.Subject == "chat.api.*.*" {
			msgs, bytes, err := s.PendingLimits()
			if err != nil || msgs <= 0 || bytes <= 0 {
				t.Fatalf("%s pending limits %d msgs, %d bytes (%v), want finite", s.Subject, msgs, bytes, err)
			}
		}
	}

	const flood = 200_000
	start := time.Now()
	subject := mulchat.SendSubject(loud.ID, mallory.ID)
	inbox := mulchat.UserInboxPrefix(mallory.ID) + ".flood"
	data := []byte(`{"text":"x"}`)
	for i := 0; i < flood; i++ {
		if err := mnc.PublishRequest(subject, inbox, data); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := mnc.Flush(); err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	// The whole test process: nats-server with JetStream, SQLite, router.
	// Unbounded queueing held hundreds of bytes per flooded request.
	if ms.HeapInuse > 256<<20 {
		t.Errorf("heap in use %d MiB after the flood, want a bounded amount", ms.HeapInuse>>20)
	}
	t.Logf("heap in use after %d flooded sends: %d MiB; slow consumer reports: %d", flood, ms.HeapInuse>>20, slow.Load())
	if rep := ca.send(calm.ID, "after the flood", ""); rep.Error != nil {
		t.Fatalf("alice's send after the flood: %+v", rep.Error)
	}
	elapsed := time.Since(start)
	// The token bucket bounds what was stored however long the flood took.
	if n, most := streamMsgs(t, st, loud.ID), 40+20*elapsed.Seconds()+1; float64(n) > most {
		t.Errorf("%d flooded messages stored in %s, want at most %.0f", n, elapsed, most)
	}
	if got := counter(t, reg, "mulchat_router_sends_total", mulchat.ERATELIMITED); got == 0 {
		t.Error("no send was rate limited")
	}
}

// TestSendQueueFull: when a user's worker is behind, further sends are
// refused at once (rate_limited) instead of queueing without bound; the
// queued ones are stored and answered once the worker catches up.
func TestSendQueueFull(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	reg := prometheus.NewRegistry()
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	startRouterHooked(t, st, st.ServiceConn(t, "router", false), func(c *Config) {
		c.Registerer = reg
		c.Workers = 1
	}, func(r *Router) {
		first := true
		r.hookSendWorker = func() {
			if first {
				first = false
				entered <- struct{}{}
				<-release
			}
		}
	})
	alice := st.NewUser(t, "alice", 0)
	room := st.NewRoom(t, "busy", alice)
	nc := st.Connect(t, alice)
	replies := make(chan *nats.Msg, 2*shardQueue)
	if _, err := nc.ChanSubscribe(mulchat.UserInboxPrefix(alice.ID)+".q.*", replies); err != nil {
		t.Fatal(err)
	}
	publish := func(i int) {
		data, _ := json.Marshal(mulchat.SendRequest{Text: fmt.Sprint("m", i)})
		if err := nc.PublishRequest(mulchat.SendSubject(room.ID, alice.ID), fmt.Sprintf("%s.q.%d", mulchat.UserInboxPrefix(alice.ID), i), data); err != nil {
			t.Fatal(err)
		}
	}
	// The first send occupies the worker; shardQueue more fill its queue;
	// the last `extra` find it full.
	const extra = 10
	publish(0)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatal("the worker never took the first send")
	}
	total := 1 + shardQueue + extra
	for i := 1; i < total; i++ {
		publish(i)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	read := func() mulchat.SendReply {
		t.Helper()
		select {
		case m := <-replies:
			var rep mulchat.SendReply
			if err := json.Unmarshal(m.Data, &rep); err != nil {
				t.Fatal(err)
			}
			return rep
		case <-time.After(wait):
			t.Fatal("timed out waiting for a reply")
			return mulchat.SendReply{}
		}
	}
	// While the worker is held, only the refusals can be answered.
	for i := 0; i < extra; i++ {
		if rep := read(); rep.Error == nil || rep.Error.Code != mulchat.ERATELIMITED {
			t.Fatalf("reply %d while the worker is held: %+v, want %s", i, rep, mulchat.ERATELIMITED)
		}
	}
	close(release)
	for i := 0; i < 1+shardQueue; i++ {
		if rep := read(); rep.Error != nil || rep.Seq == 0 {
			t.Fatalf("queued send %d: %+v", i, rep)
		}
	}
	if n := streamMsgs(t, st, room.ID); n != 1+shardQueue {
		t.Fatalf("%d stored, want %d", n, 1+shardQueue)
	}
	if got := counter(t, reg, "mulchat_router_sends_total", "queue_full"); got != extra {
		t.Fatalf("queue_full %v, want %d", got, extra)
	}
}
