// Package app wires mulchat's parts into one running server: the store, the
// NATS authority, the embedded (or external) NATS server, mulchat's service
// connections, the real-time services and the HTTP API. `mulchat serve` runs
// it, and tests start a whole server on port 0 with it.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/httpapi"
	"github.com/mulchat/mulchat/internal/natsd"
	"github.com/mulchat/mulchat/internal/router"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/tracker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Config configures Start. Zero values take the documented defaults
// (docs/config.md).
type Config struct {
	// DataDir holds the SQLite database, the master key file and the
	// embedded server's JetStream and resolver data. Default "data".
	DataDir string
	// DatabaseURL is a SQLite file path or a postgres:// URL. Default
	// <DataDir>/mulchat.db.
	DatabaseURL string
	// NATSURL, when set, names external NATS servers (comma-separated) and
	// no embedded server is started.
	NATSURL string
	// HTTPAddr is the API's listen address; ":0" picks a free port.
	HTTPAddr string
	// NATSHost, NATSPort and NATSWSPort configure the embedded server; a port
	// of -1 picks a free one. NATSPort 0 is NATS's default 4222; NATSWSPort 0
	// starts no WebSocket listener (the serve command defaults to 8222).
	NATSHost   string
	NATSPort   int
	NATSWSPort int
	// NATSWSTLSCert and NATSWSTLSKey (PEM files) make the embedded server's
	// WebSocket listener wss, and nats_urls hand out wss:// URLs. Without
	// them it is plain ws, only reasonable on localhost or behind a TLS
	// proxy. They need a WebSocket port and are unused with NATSURL.
	NATSWSTLSCert string
	NATSWSTLSKey  string
	// NATSPortFallback makes the embedded server take free ports when
	// NATSPort or NATSWSPort is already in use (serve sets it when the ports
	// were not asked for explicitly, so a laptop that already runs a NATS
	// server on 4222 still gets a working mulchat; the ports used are logged
	// and handed to clients in nats_urls).
	NATSPortFallback bool
	// NATSPublicURLs, when set, are the URLs handed to clients in nats_urls
	// instead of the embedded server's own (e.g. behind a proxy).
	NATSPublicURLs []string
	NoMigrate      bool
	// CredentialTTL is the default lifetime of a user credential (24h);
	// MaxCredentialTTL the longest a client may ask for (30 days).
	CredentialTTL    time.Duration
	MaxCredentialTTL time.Duration
	// TokenTTL is the lifetime of an API login token (7 days).
	TokenTTL  time.Duration
	LoginRate httpapi.LoginRate
	// CredentialRate limits credential issues and renewals per user
	// (httpapi.DefaultCredentialRate when zero).
	CredentialRate httpapi.CredentialRate
	// SendRate is the sends per second allowed to one user (router default
	// 20; negative = unlimited), with burst SendBurst (default 40).
	SendRate  float64
	SendBurst int
	// StreamReplicas is the replica count of the CHAT message stream
	// (default 1). With an external JetStream cluster set it to 3 (or 5) so
	// history survives the loss of a server; the stream is updated to it at
	// every start.
	StreamReplicas int
	// MasterKey, when set, is used instead of MULCHAT_MASTER_KEY or the key
	// file (tests).
	MasterKey []byte
	Logger    *slog.Logger
	// Web builds the handler of the web page served at "/", given the NATS
	// URLs handed to clients (the page connects to the WebSocket ones); nil
	// serves no page.
	Web func(natsURLs []string) http.Handler
}

// Defaults.
const (
	DefaultDataDir    = "data"
	DefaultHTTPAddr   = "127.0.0.1:8080"
	DefaultNATSPort   = 4222
	DefaultNATSWSPort = 8222
)

// Service user names of mulchat's own NATS connections.
const (
	serviceUser    = "service"
	sysServiceUser = "system"
)

// Main is a running mulchat server.
type Main struct {
	cfg       Config
	logger    *slog.Logger
	Store     *sqlstore.DB
	Authority *authority.Authority
	Registry  *prometheus.Registry
	API       *httpapi.Server

	natsServer *natsd.Server
	clientURLs []string // URLs of the NATS servers mulchat connects to
	publicURLs []string // URLs handed to clients
	chatConn   *nats.Conn
	sysConn    *nats.Conn
	router     *router.Router
	tracker    *tracker.Tracker

	listener   net.Listener
	httpServer *http.Server
	httpDone   chan error

	stopJanitor context.CancelFunc
	wg          sync.WaitGroup
	closeOnce   sync.Once
	closeErr    error
}

// Start opens everything and starts serving. On error, whatever was started is
// closed again.
func Start(ctx context.Context, cfg Config) (_ *Main, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = DefaultHTTPAddr
	}
	if cfg.NATSHost == "" {
		cfg.NATSHost = "127.0.0.1"
	}
	m := &Main{cfg: cfg, logger: cfg.Logger, Registry: prometheus.NewRegistry(), httpDone: make(chan error, 1)}
	defer func() {
		if err != nil {
			_ = m.Close()
		}
	}()
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, fmt.Sprintf("cannot create data directory %s", cfg.DataDir))
	}
	if err := m.openStore(ctx); err != nil {
		return nil, err
	}
	if err := m.openAuthority(ctx); err != nil {
		return nil, err
	}
	if err := m.startNATS(ctx); err != nil {
		return nil, err
	}
	if err := m.connectServices(ctx); err != nil {
		return nil, err
	}
	if err := m.startRealtime(ctx); err != nil {
		return nil, err
	}
	if err := m.startHTTP(); err != nil {
		return nil, err
	}
	m.startJanitor()
	return m, nil
}

// DatabaseURL returns the database URL Start uses for cfg.
func (c Config) databaseURL() string {
	if c.DatabaseURL != "" {
		return c.DatabaseURL
	}
	return filepath.Join(c.DataDir, "mulchat.db")
}

// OpenStore opens (and unless noMigrate, migrates) the database of cfg and
// checks its schema version. The CLI's admin commands use it too.
func OpenStore(ctx context.Context, cfg Config) (*sqlstore.DB, error) {
	db, err := OpenDatabase(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if !cfg.NoMigrate {
		if err := db.Migrate(ctx); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := db.CheckSchema(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// OpenDatabase opens the database of cfg without migrating or checking its
// schema (for `mulchat migrate`).
func OpenDatabase(ctx context.Context, cfg Config) (*sqlstore.DB, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	url := cfg.databaseURL()
	if scheme, _, ok := strings.Cut(url, "://"); ok && !isPostgres(url) && !strings.ContainsAny(scheme, "/\\") {
		return nil, mulchat.Errorf(mulchat.EINVALID, "unsupported database URL scheme %q: use a SQLite file path or a postgres:// URL", scheme)
	}
	if !isPostgres(url) {
		if err := os.MkdirAll(filepath.Dir(url), 0o700); err != nil {
			return nil, mulchat.WrapError(mulchat.EINVALID, err, "cannot create the database directory")
		}
	}
	return sqlstore.Open(ctx, url)
}

func isPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

func (m *Main) openStore(ctx context.Context) error {
	db, err := OpenStore(ctx, m.cfg)
	if err != nil {
		return err
	}
	m.Store = db
	m.logger.Info("database ready", slog.String("dialect", db.Dialect()))
	return nil
}

// LoadMasterKey returns cfg.MasterKey, or loads the master key, creating a
// key file only when the database holds no operator yet: a missing key for
// existing encrypted seeds is an error, never a silent regeneration.
func LoadMasterKey(ctx context.Context, cfg Config, store mulchat.Store) ([]byte, error) {
	if len(cfg.MasterKey) > 0 {
		return cfg.MasterKey, nil
	}
	_, err := store.NATSOperator(ctx)
	create := false
	switch mulchat.ErrorCode(err) {
	case "":
	case mulchat.ENOTFOUND:
		create = true
	default:
		return nil, err
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	return authority.LoadMasterKey(cfg.DataDir, create)
}

// OpenAuthority loads the master key and opens the authority on store.
func OpenAuthority(ctx context.Context, cfg Config, store mulchat.Store, reg prometheus.Registerer) (*authority.Authority, error) {
	key, err := LoadMasterKey(ctx, cfg, store)
	if err != nil {
		return nil, err
	}
	return authority.Open(ctx, authority.Config{
		Store: store, MasterKey: key, Logger: cfg.Logger, Registerer: reg,
		DefaultTTL: cfg.CredentialTTL, MaxTTL: cfg.MaxCredentialTTL,
	})
}

func (m *Main) openAuthority(ctx context.Context) error {
	a, err := OpenAuthority(ctx, m.cfg, m.Store, m.Registry)
	if err != nil {
		return err
	}
	m.Authority = a
	return nil
}

// startNATS starts the embedded server, or notes the external URLs.
func (m *Main) startNATS(ctx context.Context) error {
	if m.cfg.NATSURL != "" {
		for _, u := range strings.Split(m.cfg.NATSURL, ",") {
			if u = strings.TrimSpace(u); u != "" {
				m.clientURLs = append(m.clientURLs, u)
			}
		}
		m.publicURLs = m.clientURLs
		if len(m.cfg.NATSPublicURLs) > 0 {
			m.publicURLs = m.cfg.NATSPublicURLs
		}
		m.logger.Info("using external NATS", slog.Any("urls", m.clientURLs))
		return nil
	}
	if m.cfg.NATSWSTLSCert != "" && m.cfg.NATSWSPort == 0 {
		return mulchat.Errorf(mulchat.EINVALID, "a WebSocket TLS certificate needs a WebSocket port (--nats-ws-port)")
	}
	jwts, err := m.Authority.AccountJWTs(ctx)
	if err != nil {
		return err
	}
	port, wsPort := m.cfg.NATSPort, m.cfg.NATSWSPort
	if m.cfg.NATSPortFallback {
		port = m.freeOr(m.cfg.NATSHost, port, "client")
		wsPort = m.freeOr(m.cfg.NATSHost, wsPort, "websocket")
	}
	ns, err := natsd.Start(natsd.Options{
		DataDir:       m.cfg.DataDir,
		Host:          m.cfg.NATSHost,
		Port:          port,
		WSPort:        wsPort,
		WSTLSCert:     m.cfg.NATSWSTLSCert,
		WSTLSKey:      m.cfg.NATSWSTLSKey,
		OperatorJWT:   m.Authority.OperatorJWT(),
		SystemAccount: m.Authority.SystemAccountPublicKey(),
		AccountJWTs:   jwts,
		JetStream:     true,
		Logger:        m.logger,
		// --log-level debug includes the server's debug log (never its
		// protocol trace, which would carry message payloads).
		Debug: m.logger.Enabled(ctx, slog.LevelDebug),
	})
	if err != nil {
		return err
	}
	m.natsServer = ns
	m.clientURLs = []string{ns.ClientURL()}
	m.publicURLs = []string{ns.ClientURL()}
	if ws := ns.WebSocketURL(); ws != "" {
		m.publicURLs = append(m.publicURLs, ws)
	}
	if len(m.cfg.NATSPublicURLs) > 0 {
		m.publicURLs = m.cfg.NATSPublicURLs
	}
	m.logger.Info("embedded NATS server started", slog.String("client_url", ns.ClientURL()),
		slog.String("websocket_url", ns.WebSocketURL()))
	// Let `mulchat creds revoke` on this machine find the running server.
	_ = os.WriteFile(filepath.Join(m.cfg.DataDir, RunningNATSURLFile), []byte(ns.ClientURL()+"\n"), 0o600)
	return nil
}

// freeOr returns port when it can be listened on at host, and -1 (a random
// free port) with a warning when it is taken.
func (m *Main) freeOr(host string, port int, what string) int {
	if port <= 0 {
		return port
	}
	if host == "" {
		host = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		m.logger.Warn("NATS port in use; using a free port instead", slog.String("listener", what), slog.Int("port", port))
		return -1
	}
	_ = l.Close()
	return port
}

// RunningNATSURLFile, in the data directory, holds the client URL of the
// embedded server of a running `mulchat serve`; admin commands use it to
// push revocations to it.
const RunningNATSURLFile = "nats.url"

// ConnectService connects to urls as one of mulchat's service users. The
// service user's JWT is re-signed on reconnect, so the connection outlives
// any one JWT.
func ConnectService(ctx context.Context, a *authority.Authority, urls []string, name string, system bool, logger *slog.Logger) (*nats.Conn, error) {
	su, err := a.NewServiceUser(name, system)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(strings.Join(urls, ","),
		nats.Name("mulchat-"+name),
		su.Option(),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("NATS service connection lost", slog.String("user", name), slog.Any("err", err))
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			logger.Info("NATS service connection restored", slog.String("user", name))
		}),
		// Asynchronous errors (a slow consumer during a send flood, a
		// permissions violation) go to the log instead of stderr.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			logger.Warn("NATS service connection error", slog.String("user", name), slog.String("subject", subject), slog.Any("err", err))
		}),
	)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EUNAVAILABLE, err, fmt.Sprintf("cannot connect to NATS as service user %s", name))
	}
	return nc, nil
}

func (m *Main) connectServices(ctx context.Context) error {
	var err error
	if m.sysConn, err = ConnectService(ctx, m.Authority, m.clientURLs, sysServiceUser, true, m.logger); err != nil {
		return err
	}
	if m.chatConn, err = ConnectService(ctx, m.Authority, m.clientURLs, serviceUser, false, m.logger); err != nil {
		return err
	}
	m.Authority.SetPusher(authority.NewClaimsPusher(m.sysConn))
	if m.natsServer == nil {
		// An external server may have missed account changes made while no
		// mulchat was running (e.g. `mulchat creds revoke`): push them all.
		if err := m.Authority.PushAccounts(ctx); err != nil {
			m.logger.Warn("pushing account JWTs to NATS failed", slog.Any("err", err))
		}
	}
	return nil
}

// startRealtime starts the router and the tracker (which tells the router
// about presence, and kicks the sessions of revoked credentials); the API
// gets them as History, Membership, Credentials and Sessions.
func (m *Main) startRealtime(ctx context.Context) error {
	if m.natsServer == nil {
		if err := m.waitJetStream(ctx); err != nil {
			return err
		}
	}
	r, err := router.New(router.Config{
		Store:            m.Store,
		Conn:             m.chatConn,
		Logger:           m.logger,
		Registerer:       m.Registry,
		AccountPublicKey: m.Authority.ChatAccountPublicKey(),
		RateLimit:        m.cfg.SendRate,
		RateBurst:        m.cfg.SendBurst,
		Replicas:         m.cfg.StreamReplicas,
	})
	if err != nil {
		return err
	}
	if err := r.Start(ctx); err != nil {
		return err
	}
	m.router = r
	tr, err := tracker.New(tracker.Config{
		Store:       m.Store,
		SysConn:     m.sysConn,
		Logger:      m.logger,
		Registerer:  m.Registry,
		ChatAccount: m.Authority.ChatAccountPublicKey(),
		Presence:    r,
	})
	if err != nil {
		return err
	}
	if err := tr.Start(ctx); err != nil {
		return err
	}
	m.tracker = tr
	// A revocation disconnects the user's live sessions on every server.
	m.Authority.SetKicker(tr.KickUser)
	return nil
}

// jetStreamWait bounds how long Start waits for an external server's
// JetStream: a cluster started together with mulchat elects its JetStream
// leader a few seconds after it accepts connections.
const jetStreamWait = 60 * time.Second

// waitJetStream waits until JetStream answers for the chat account, so a
// mulchat started with its NATS cluster does not fail on the first stream
// request; past jetStreamWait it is an EUNAVAILABLE error naming the likely
// causes.
func (m *Main) waitJetStream(ctx context.Context) error {
	js, err := jetstream.New(m.chatConn)
	if err != nil {
		return mulchat.WrapError(mulchat.EINTERNAL, err, "JetStream context")
	}
	deadline := time.Now().Add(jetStreamWait)
	logged := false
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err,
				"JetStream is not enabled on the NATS servers for mulchat's account; configure them with `mulchat nats server-config`")
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err,
				fmt.Sprintf("JetStream of the NATS servers did not answer within %s (a cluster without a leader?)", jetStreamWait))
		}
		if !logged {
			m.logger.Info("waiting for JetStream on the NATS servers", slog.Any("err", err))
			logged = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// ready reports whether mulchat's NATS connections are up and, where a
// router runs, whether its delivery still works (Router.Healthy).
func (m *Main) ready(ctx context.Context) error {
	for _, nc := range []*nats.Conn{m.sysConn, m.chatConn} {
		if nc == nil || !nc.IsConnected() {
			return errors.New("NATS service connection is down")
		}
	}
	if m.router != nil {
		return m.router.Healthy()
	}
	return nil
}

func (m *Main) startHTTP() error {
	var static http.Handler
	if m.cfg.Web != nil {
		static = m.cfg.Web(m.NATSURLs())
	}
	api, err := httpapi.New(httpapi.Config{
		Store:          m.Store,
		Authority:      CredentialAuthority(m.Authority),
		History:        m.router,
		Membership:     m.router,
		Credentials:    m.router,
		Sessions:       m.tracker,
		NATSURLs:       m.NATSURLs,
		Ready:          m.ready,
		Logger:         m.logger,
		Registry:       m.Registry,
		TokenTTL:       m.cfg.TokenTTL,
		LoginRate:      m.cfg.LoginRate,
		CredentialRate: m.cfg.CredentialRate,
		Static:         static,
	})
	if err != nil {
		return err
	}
	m.API = api
	ln, err := net.Listen("tcp", m.cfg.HTTPAddr)
	if err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, fmt.Sprintf("cannot listen on %s", m.cfg.HTTPAddr))
	}
	m.listener = ln
	m.httpServer = &http.Server{
		Handler:           api.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(m.logger.Handler(), slog.LevelWarn),
	}
	go func() {
		err := m.httpServer.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		m.httpDone <- err
	}()
	m.logger.Info("HTTP API listening", slog.String("url", m.HTTPURL()))
	return nil
}

// startJanitor deletes expired API tokens once an hour. Several instances may
// run it at once; the delete is idempotent.
func (m *Main) startJanitor() {
	ctx, cancel := context.WithCancel(context.Background())
	m.stopJanitor = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n, err := m.Store.DeleteExpiredAPITokens(ctx, time.Now().UTC())
				if err != nil {
					m.logger.Warn("deleting expired API tokens failed", slog.Any("err", err))
				} else if n > 0 {
					m.logger.Info("deleted expired API tokens", slog.Int64("count", n))
				}
			}
		}
	}()
}

// HTTPURL is the base URL of the running API, e.g. http://127.0.0.1:8080.
func (m *Main) HTTPURL() string {
	if m.listener == nil {
		return ""
	}
	addr := m.listener.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

// NATSURLs are the URLs handed to clients with a credential.
func (m *Main) NATSURLs() []string { return append([]string(nil), m.publicURLs...) }

// NATSClientURL is the URL mulchat's own connections use.
func (m *Main) NATSClientURL() string { return strings.Join(m.clientURLs, ",") }

// NATSServer is the embedded server, nil with an external one.
func (m *Main) NATSServer() *natsd.Server { return m.natsServer }

// Close stops serving and releases everything, in reverse order of Start.
func (m *Main) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Main) close() error {
	var errs []error
	if m.stopJanitor != nil {
		m.stopJanitor()
	}
	if m.httpServer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := m.httpServer.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
		if err := <-m.httpDone; err != nil {
			errs = append(errs, err)
		}
	}
	if m.tracker != nil {
		if err := m.tracker.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if m.router != nil {
		if err := m.router.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, nc := range []*nats.Conn{m.chatConn, m.sysConn} {
		if nc != nil {
			if err := nc.Drain(); err != nil {
				nc.Close()
			}
		}
	}
	if m.natsServer != nil {
		m.natsServer.Shutdown()
		_ = os.Remove(filepath.Join(m.cfg.DataDir, RunningNATSURLFile))
	}
	m.wg.Wait()
	if m.Store != nil {
		if err := m.Store.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Wait blocks until ctx is done or the HTTP server fails.
func (m *Main) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-m.httpDone:
		m.httpDone <- err // Close reads it again
		return err
	}
}
