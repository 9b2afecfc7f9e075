// Package httpapi is mulchat's HTTP JSON API under /api/v1, plus /healthz,
// /readyz and /metrics. Every route is declared in routes.go; errors carry a
// mulchat code mapped to a status in errors.go; request bodies are bounded and
// strictly decoded. The package depends only on the root package's interfaces
// and a small Authority interface, so cmd wires the concrete types.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/password"
	"github.com/prometheus/client_golang/prometheus"
)

// Credential is a user credential as the authority returns it. Seed and Creds
// are set only when the server generated the key pair.
type Credential struct {
	JWT       string
	PublicKey string
	ExpiresAt time.Time
	Seed      []byte
	Creds     []byte
}

// Authority is the part of the NATS authority the API uses. internal/app
// adapts *authority.Authority to it.
type Authority interface {
	// IssueUserCredential signs a new credential for publicKey, or for a key
	// pair it generates when publicKey is "". ttl 0 means the default.
	IssueUserCredential(ctx context.Context, userID int64, publicKey string, ttl time.Duration) (*Credential, error)
	RenewUserCredential(ctx context.Context, userID int64, ttl time.Duration) (*Credential, error)
	RevokeUserCredential(ctx context.Context, userID int64) error
}

// Defaults.
const (
	DefaultTokenTTL = 7 * 24 * time.Hour
)

// LoginRate configures the login and registration limiters. Zero fields take
// the defaults of DefaultLoginRate; a negative rate disables that limiter
// (benchmarks).
type LoginRate struct {
	// PerUsername attempts per minute for one username, with burst UserBurst.
	PerUsername float64
	UserBurst   int
	// PerAddress attempts per minute from one client address, with burst
	// AddrBurst.
	PerAddress float64
	AddrBurst  int
	// RegisterPerAddress registrations per minute from one client address,
	// with burst RegisterBurst: each costs an argon2id hash, so unbounded
	// registration would be a cheap way to load the server. 0 takes the
	// default, or is off when PerAddress is negative.
	RegisterPerAddress float64
	RegisterBurst      int
	// MaxEntries bounds each limiter's table; the least recently used
	// entries are evicted beyond it.
	MaxEntries int
}

// DefaultLoginRate: 10 attempts at once then 6 a minute per username; 30 at
// once then 60 a minute per address; 20 registrations at once then 10 a
// minute per address.
var DefaultLoginRate = LoginRate{PerUsername: 6, UserBurst: 10, PerAddress: 60, AddrBurst: 30,
	RegisterPerAddress: 10, RegisterBurst: 20, MaxEntries: 10000}

// CredentialRate configures the per-user limit on issuing and renewing NATS
// credentials (one budget for both). Each issue with a new key adds a
// revocation entry to the chat account JWT, and the account JWT must stay
// under NATS's max_payload to be pushed at all; each issue or renewal also
// signs and may push that JWT. Zero fields take DefaultCredentialRate; a
// negative PerUser disables the limit (benchmarks).
type CredentialRate struct {
	// PerUser credentials per minute for one user, after a burst of Burst.
	PerUser float64
	Burst   int
	// MaxEntries bounds the limiter's table; the least recently used
	// entries are evicted beyond it.
	MaxEntries int
}

// DefaultCredentialRate: 10 issues or renewals at once, then 3 a minute per
// user. A client needs one per start and one a day to renew; the burst covers
// restarts and several devices.
var DefaultCredentialRate = CredentialRate{PerUser: 3, Burst: 10, MaxEntries: 10000}

// Config holds the server's dependencies. Store and Authority are required;
// History, Membership, Sessions and Credentials may be nil (the endpoints
// that need them answer 501, notifications are skipped).
type Config struct {
	Store      mulchat.Store
	Authority  Authority
	History    mulchat.MessageHistory
	Membership mulchat.MembershipNotifier
	Sessions   mulchat.SessionKicker
	// Credentials, when set, sends the user a notice after their credential
	// is issued, renewed or revoked (to their other open pages).
	Credentials mulchat.CredentialNotifier
	// NATSURLs returns the client URLs handed out with a credential.
	NATSURLs func() []string
	// Ready reports whether NATS (and the services on it) are ready; nil
	// means always ready. The store is pinged separately.
	Ready    func(context.Context) error
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// TokenTTL is the lifetime of a login token (default 7 days).
	TokenTTL       time.Duration
	LoginRate      LoginRate
	CredentialRate CredentialRate
	// Static serves the web page at "/"; nil serves nothing there.
	Static http.Handler
	// AuthCacheTTL is how long a bearer token found valid is trusted
	// without reading it again (authCache): the bound on how late a logout
	// on another instance, or a user disabled from the command line, takes
	// effect on this one. 0 means DefaultAuthCacheTTL; negative turns the
	// cache off.
	AuthCacheTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the HTTP API.
type Server struct {
	cfg         Config
	store       mulchat.Store
	logger      *slog.Logger
	now         func() time.Time
	verifier    *password.Verifier
	limiter     *loginLimiter
	credLimiter *credentialLimiter
	metrics     *metrics
	authCache   *authCache
	handler     http.Handler
}

// New builds the server and registers its metrics on cfg.Registry.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Authority == nil {
		return nil, errors.New("httpapi: Store and Authority are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.NATSURLs == nil {
		cfg.NATSURLs = func() []string { return nil }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AuthCacheTTL == 0 {
		cfg.AuthCacheTTL = DefaultAuthCacheTTL
	}
	lr := cfg.LoginRate
	d := DefaultLoginRate
	if lr.PerUsername == 0 {
		lr.PerUsername, lr.UserBurst = d.PerUsername, d.UserBurst
	}
	if lr.UserBurst <= 0 {
		lr.UserBurst = d.UserBurst
	}
	if lr.PerAddress == 0 {
		lr.PerAddress, lr.AddrBurst = d.PerAddress, d.AddrBurst
	}
	if lr.AddrBurst <= 0 {
		lr.AddrBurst = d.AddrBurst
	}
	if lr.RegisterPerAddress == 0 {
		// Turning the per-address login limit off turns this one off too.
		if lr.PerAddress < 0 {
			lr.RegisterPerAddress = -1
		} else {
			lr.RegisterPerAddress, lr.RegisterBurst = d.RegisterPerAddress, d.RegisterBurst
		}
	}
	if lr.RegisterBurst <= 0 {
		lr.RegisterBurst = d.RegisterBurst
	}
	if lr.MaxEntries <= 0 {
		lr.MaxEntries = d.MaxEntries
	}
	cfg.LoginRate = lr
	cr := cfg.CredentialRate
	if cr.PerUser == 0 {
		cr.PerUser, cr.Burst = DefaultCredentialRate.PerUser, DefaultCredentialRate.Burst
	}
	if cr.Burst <= 0 {
		cr.Burst = DefaultCredentialRate.Burst
	}
	if cr.MaxEntries <= 0 {
		cr.MaxEntries = DefaultCredentialRate.MaxEntries
	}
	cfg.CredentialRate = cr
	v, err := password.NewVerifier()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         cfg,
		store:       cfg.Store,
		logger:      cfg.Logger,
		now:         cfg.Now,
		verifier:    v,
		limiter:     newLoginLimiter(lr, cfg.Now),
		credLimiter: newCredentialLimiter(cr, cfg.Now),
		metrics:     m,
		authCache:   newAuthCache(cfg.AuthCacheTTL),
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.handler }
