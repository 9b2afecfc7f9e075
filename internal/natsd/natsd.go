// Package natsd runs mulchat's embedded nats-server: operator mode trusting
// the authority's operator, a full account resolver directory (so account JWT
// pushes on $SYS.REQ.CLAIMS.UPDATE are accepted and persisted), JetStream and
// a WebSocket listener, all under the data directory.
package natsd

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds the wait for the server to accept connections.
const readyTimeout = 30 * time.Second

// resolverSyncInterval is how often full resolvers in a cluster compare
// their account JWTs, as in the configuration ServerConfig prints.
const resolverSyncInterval = 2 * time.Minute

// Options configure the embedded server.
type Options struct {
	// DataDir holds the resolver directory (<DataDir>/nats/resolver) and the
	// JetStream store (<DataDir>/nats/jetstream).
	DataDir string
	Host    string // default 127.0.0.1
	Port    int    // -1 = random free port; 0 = the NATS default 4222
	// WSPort is the WebSocket port: -1 random, 0 no WebSocket listener.
	WSPort int
	// WSTLSCert and WSTLSKey enable wss. Without them the listener is plain
	// ws, which is only reasonable on localhost or behind a TLS proxy.
	WSTLSCert, WSTLSKey string
	OperatorJWT         string
	SystemAccount       string
	// AccountJWTs are stored in the resolver directory before the server
	// starts (the resolver_preload of a configuration file); a JWT already
	// there that is newer is kept.
	AccountJWTs map[string]string
	JetStream   bool
	ServerName  string
	Logger      *slog.Logger
	// Debug and Trace turn on the server's debug and protocol trace logs.
	Debug, Trace bool
}

// Server is a running embedded nats-server.
type Server struct {
	ns        *server.Server
	websocket bool
}

// Start starts the server and waits until it accepts connections.
func Start(opts Options) (*Server, error) {
	if opts.DataDir == "" {
		return nil, mulchat.Errorf(mulchat.EINVALID, "natsd: a data directory is required")
	}
	if opts.OperatorJWT == "" || opts.SystemAccount == "" {
		return nil, mulchat.Errorf(mulchat.EINVALID, "natsd: the operator JWT and the system account are required")
	}
	if (opts.WSTLSCert == "") != (opts.WSTLSKey == "") {
		return nil, mulchat.Errorf(mulchat.EINVALID, "natsd: the WebSocket TLS certificate and key go together")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	op, err := jwt.DecodeOperatorClaims(opts.OperatorJWT)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "natsd: the operator JWT is not valid")
	}
	base := filepath.Join(opts.DataDir, "nats")
	resolverDir := filepath.Join(base, "resolver")
	if err := os.MkdirAll(resolverDir, 0o700); err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "natsd: cannot create "+resolverDir)
	}
	// NoDelete: an account JWT is never removed by a push, as with
	// allow_delete: false in the printed configuration.
	resolver, err := server.NewDirAccResolver(resolverDir, 0, resolverSyncInterval, server.NoDelete)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "natsd: cannot open the resolver directory "+resolverDir)
	}
	for pub, token := range opts.AccountJWTs {
		if _, err := jwt.DecodeAccountClaims(token); err != nil {
			resolver.Close()
			return nil, mulchat.WrapError(mulchat.EINVALID, err, "natsd: preloaded account JWT of "+pub+" is not valid")
		}
		if err := resolver.Store(pub, token); err != nil {
			resolver.Close()
			return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "natsd: cannot preload the account JWT of "+pub)
		}
	}

	host := opts.Host
	if host == "" {
		host = "127.0.0.1"
	}
	sopts := &server.Options{
		ServerName:       opts.ServerName,
		Host:             host,
		Port:             opts.Port,
		TrustedOperators: []*jwt.OperatorClaims{op},
		SystemAccount:    opts.SystemAccount,
		AccountResolver:  resolver,
		NoSigs:           true,
		// The server's own log goes to slog through SetLoggerV2 below.
		NoLog: false,
		Debug: opts.Debug,
		Trace: opts.Trace,
	}
	if opts.JetStream {
		sopts.JetStream = true
		sopts.StoreDir = filepath.Join(base, "jetstream")
	}
	if opts.WSPort != 0 {
		sopts.Websocket.Host = host
		sopts.Websocket.Port = opts.WSPort
		if opts.WSTLSCert != "" {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: opts.WSTLSCert, KeyFile: opts.WSTLSKey})
			if err != nil {
				resolver.Close()
				return nil, mulchat.WrapError(mulchat.EINVALID, err, "natsd: cannot load the WebSocket TLS certificate")
			}
			sopts.Websocket.TLSConfig = tc
		} else {
			sopts.Websocket.NoTLS = true
		}
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		resolver.Close()
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "natsd: invalid server options")
	}
	logger := &slogAdapter{log: log.With("component", "nats-server"), fatal: make(chan string, 1)}
	ns.SetLoggerV2(logger, opts.Debug, opts.Trace, false)
	ns.Start()
	if err := waitReady(ns, logger.fatal); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, err
	}
	s := &Server{ns: ns, websocket: opts.WSPort != 0}
	log.Info("embedded nats-server ready", "client_url", s.ClientURL(), "websocket_url", s.WebSocketURL(),
		"jetstream", opts.JetStream, "resolver_dir", resolverDir)
	return s, nil
}

// waitReady waits until the server accepts connections, or returns the
// server's fatal error (a port in use) as soon as it is logged instead of
// waiting out the whole timeout.
func waitReady(ns *server.Server, fatal <-chan string) error {
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		if ns.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		select {
		case msg := <-fatal:
			return mulchat.Errorf(mulchat.EUNAVAILABLE, "natsd: the embedded nats-server failed to start: %s", msg)
		default:
		}
	}
	return mulchat.Errorf(mulchat.EUNAVAILABLE, "natsd: the embedded nats-server did not become ready within %s", readyTimeout)
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// WebSocketURL is the ws:// (or wss://) URL of the WebSocket listener, or ""
// when there is none.
func (s *Server) WebSocketURL() string {
	if !s.websocket {
		return ""
	}
	return s.ns.WebsocketURL()
}

// Shutdown stops the server gracefully and waits until it has stopped.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// NATS returns the underlying server, for callers that need its monitoring
// or in-process connections.
func (s *Server) NATS() *server.Server { return s.ns }

// slogAdapter routes nats-server's logger to slog.
type slogAdapter struct {
	log   *slog.Logger
	fatal chan string // the first fatal message, for Start
}

func (l *slogAdapter) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l *slogAdapter) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *slogAdapter) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *slogAdapter) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *slogAdapter) Tracef(format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "trace", true)
}

// Fatalf logs at error level. The server's own logger would exit the
// process; an embedded server must leave that decision to mulchat, which
// sees the server stop.
func (l *slogAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, "fatal", true)
	select {
	case l.fatal <- msg:
	default:
	}
}

var _ server.Logger = (*slogAdapter)(nil)
