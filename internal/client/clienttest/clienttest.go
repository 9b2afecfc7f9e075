// Package clienttest starts a whole mulchat server in process (internal/app:
// SQLite in a temporary directory, the embedded operator-mode nats-server on a
// random port, the HTTP API on 127.0.0.1:0) for the tests of the client, the
// terminal client and the bench.
package clienttest

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/httpapi"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// Server is a running in-process mulchat server.
type Server struct {
	Main *app.Main
	// Service is a chat-account service connection, for tests that publish
	// or observe raw NATS traffic.
	Service *nats.Conn

	cfg    app.Config
	logger *slog.Logger
}

// Options tune Start; the zero value is fine.
type Options struct {
	Logger *slog.Logger
	// Postgres runs the server on a fresh PostgreSQL database (skipping the
	// test without MULCHAT_TEST_POSTGRES_URL) instead of SQLite.
	Postgres bool
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
	var dbURL string
	if opts.Postgres {
		dbURL = sqltest.NewPostgresDatabaseURL(t)
	}
	s := &Server{logger: logger, cfg: app.Config{
		DataDir:     t.TempDir(),
		DatabaseURL: dbURL,
		HTTPAddr:    "127.0.0.1:0",
		NATSHost:    "127.0.0.1",
		NATSPort:    -1,
		NATSWSPort:  -1,
		MasterKey:   key,
		// Tests and benches log in many users from one address.
		LoginRate: httpapi.LoginRate{PerUsername: -1, PerAddress: -1},
		Logger:    logger,
	}}
	s.start(t)
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := app.Start(ctx, s.cfg)
	if err != nil {
		t.Fatalf("start mulchat: %v", err)
	}
	svc, err := app.ConnectService(ctx, m.Authority, strings.Split(m.NATSClientURL(), ","), "clienttest", false, s.logger)
	if err != nil {
		_ = m.Close()
		t.Fatalf("connect test service user: %v", err)
	}
	s.Main, s.Service = m, svc
	// The client tests are about the real thing: fail early and clearly if
	// the app runs no router. "No responders" comes back at once when no
	// router subscribes; a router drops this request (the service user's
	// reply subject is not a user inbox), so a short timeout means one runs.
	if _, err := svc.Request(mulchat.SendSubject(0, 0), []byte(`{}`), 200*time.Millisecond); errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("the app runs no router: nobody answers %s", mulchat.SendSubject(0, 0))
	}
}

func (s *Server) stop() {
	if s.Service != nil {
		s.Service.Close()
	}
	if s.Main != nil {
		_ = s.Main.Close()
	}
}

// Restart stops the server and starts it again on the same data and HTTP
// address; the embedded NATS server gets a new random port, as after a
// restart with --nats-port -1.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.cfg.HTTPAddr = strings.TrimPrefix(s.Main.HTTPURL(), "http://")
	s.stop()
	s.start(t)
}

// URL is the server's HTTP base URL.
func (s *Server) URL() string { return s.Main.HTTPURL() }

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
