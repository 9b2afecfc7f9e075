// Package clienttest starts a whole mulchat server in process (internal/app:
// SQLite in a temporary directory, the embedded operator-mode nats-server on a
// random port, the HTTP API on 127.0.0.1:0) for the tests of the client, the
// terminal client and the bench.
//
// While internal/app does not yet start the router, Start adds a minimal
// stand-in that answers sends and history requests the way DESIGN.md
// describes (membership checked against the real store, messages kept in
// memory, deliveries published to chat.user.<uid>.msg). It is started only
// when no router answers, so the tests exercise the real router as soon as
// the app runs one.
package clienttest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/httpapi"
)

// Server is a running in-process mulchat server.
type Server struct {
	Main *app.Main
	// Service is a chat-account service connection, for tests that publish
	// or observe raw NATS traffic.
	Service *nats.Conn
	// StandIn reports whether the stand-in router runs (no real router).
	StandIn bool
}

// Options tune Start; the zero value is fine.
type Options struct {
	Logger *slog.Logger
}

// Start starts a server and closes it at cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := app.Start(ctx, app.Config{
		DataDir:    t.TempDir(),
		HTTPAddr:   "127.0.0.1:0",
		NATSHost:   "127.0.0.1",
		NATSPort:   -1,
		NATSWSPort: -1,
		MasterKey:  key,
		// Tests and benches log in many users from one address.
		LoginRate: httpapi.LoginRate{PerUsername: -1, PerAddress: -1},
		Logger:    logger,
	})
	if err != nil {
		t.Fatalf("start mulchat: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	svc, err := app.ConnectService(ctx, m.Authority, strings.Split(m.NATSClientURL(), ","), "clienttest", false, logger)
	if err != nil {
		t.Fatalf("connect test service user: %v", err)
	}
	t.Cleanup(svc.Close)
	s := &Server{Main: m, Service: svc}
	if _, err := svc.Request(mulchat.SendSubject(0, 0), []byte(`{}`), 2*time.Second); errors.Is(err, nats.ErrNoResponders) {
		s.StandIn = true
		startStandIn(t, m, svc)
	}
	return s
}

// URL is the server's HTTP base URL.
func (s *Server) URL() string { return s.Main.HTTPURL() }

// standIn is the minimal router used while the app runs none.
type standIn struct {
	m  *app.Main
	nc *nats.Conn

	mu    sync.Mutex
	seq   uint64
	rooms map[int64][]mulchat.Message
	byID  map[string]mulchat.Message // room/sender/client_msg_id → stored message
}

func startStandIn(t testing.TB, m *app.Main, nc *nats.Conn) {
	r := &standIn{m: m, nc: nc, rooms: map[int64][]mulchat.Message{}, byID: map[string]mulchat.Message{}}
	for subj, h := range map[string]nats.MsgHandler{"chat.send.*.*": r.send, "chat.api.*.history": r.history} {
		sub, err := nc.QueueSubscribe(subj, "clienttest-standin", h)
		if err != nil {
			t.Fatalf("stand-in router: %v", err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("stand-in router: %v", err)
	}
}

func replyError(m *nats.Msg, code, msg string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	_ = m.Respond(b)
}

func (r *standIn) send(m *nats.Msg) {
	tok := strings.Split(m.Subject, ".")
	roomID, _ := strconv.ParseInt(tok[2], 10, 64)
	uid, _ := strconv.ParseInt(tok[3], 10, 64)
	var req struct {
		Text        string `json:"text"`
		ClientMsgID string `json:"client_msg_id"`
	}
	if err := json.Unmarshal(m.Data, &req); err != nil || req.Text == "" {
		replyError(m, mulchat.EINVALID, "bad message")
		return
	}
	ctx := context.Background()
	mem, err := r.m.Store.RoomMember(ctx, roomID, uid)
	if err != nil || !mem.CanSend() {
		replyError(m, mulchat.EFORBIDDEN, "not a member of this room")
		return
	}
	r.mu.Lock()
	key := tok[2] + "/" + tok[3] + "/" + req.ClientMsgID
	msg, dup := r.byID[key]
	if !dup {
		r.seq++
		msg = mulchat.Message{RoomID: roomID, Seq: r.seq, Sender: mulchat.Sender{ID: uid, Username: mem.Username},
			Text: req.Text, SentAt: time.Now().UTC(), ClientMsgID: req.ClientMsgID}
		r.rooms[roomID] = append(r.rooms[roomID], msg)
		if req.ClientMsgID != "" {
			r.byID[key] = msg
		}
	}
	r.mu.Unlock()
	ack, _ := json.Marshal(map[string]any{"seq": msg.Seq, "sent_at": msg.SentAt})
	_ = m.Respond(ack)
	if dup {
		return
	}
	members, err := r.m.Store.ListRoomMembers(ctx, roomID)
	if err != nil {
		return
	}
	body, _ := json.Marshal(msg)
	for _, mm := range members {
		_ = r.nc.Publish(mulchat.UserSubject(mm.UserID, "msg"), body)
	}
}

func (r *standIn) history(m *nats.Msg) {
	tok := strings.Split(m.Subject, ".")
	uid, _ := strconv.ParseInt(tok[2], 10, 64)
	var req struct {
		RoomID int64  `json:"room_id"`
		Before uint64 `json:"before"`
		Limit  int    `json:"limit"`
	}
	if err := json.Unmarshal(m.Data, &req); err != nil {
		replyError(m, mulchat.EINVALID, "bad request")
		return
	}
	if _, err := r.m.Store.RoomMember(context.Background(), req.RoomID, uid); err != nil {
		replyError(m, mulchat.EFORBIDDEN, "not a member of this room")
		return
	}
	if req.Limit <= 0 || req.Limit > 100 {
		req.Limit = 50
	}
	r.mu.Lock()
	var page []mulchat.Message
	all := r.rooms[req.RoomID]
	for i := len(all) - 1; i >= 0 && len(page) < req.Limit; i-- {
		if req.Before == 0 || all[i].Seq < req.Before {
			page = append(page, all[i])
		}
	}
	r.mu.Unlock()
	for i, j := 0, len(page)-1; i < j; i, j = i+1, j-1 {
		page[i], page[j] = page[j], page[i]
	}
	if page == nil {
		page = []mulchat.Message{}
	}
	b, _ := json.Marshal(map[string]any{"messages": page})
	_ = m.Respond(b)
}

// Proxy is a TCP proxy in front of NATS whose connections a test can cut,
// to make a client lose its connection while others keep theirs.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	paused bool
	conns  []net.Conn
}

// StartProxy proxies a local port to the NATS URL target ("nats://host:port").
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: strings.TrimPrefix(target, "nats://")}
	t.Cleanup(func() { ln.Close(); p.Cut() })
	go p.serve()
	return p
}

// URL is the proxy's NATS URL.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.paused {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

// Cut closes every proxied connection and refuses new ones until Resume.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Resume accepts connections again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
}
