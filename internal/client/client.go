// Package client is mulchat's Go client library: it logs in over the HTTP
// API, generates the user's own nkey (the seed never goes to the server; it
// stays in memory, or in a 0600 key file when Config.KeyFile asks to reuse it),
// obtains a JWT for it, connects to NATS with that credential, sends messages
// with retried, de-duplicated requests, receives deliveries in order without
// duplicates (filling gaps from history after a reconnect), and renews the JWT
// before it expires. The terminal client (`mulchat chat`) and the load
// generator (`mulchat bench`) are built on it.
package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat"
)

// Config configures a Client. Only ServerURL is required.
type Config struct {
	// ServerURL is the mulchat HTTP server, e.g. http://127.0.0.1:8080.
	ServerURL string
	// HTTPClient sends API requests; nil means a client with a 30 s timeout.
	HTTPClient *http.Client
	// Logger receives debug and warning lines; nil discards them. No seed,
	// token, password or JWT is ever passed to it.
	Logger *slog.Logger
	// Name is the NATS connection name ("mulchat-go" if empty); the tracker
	// shows it in the session's user agent.
	Name string
	// NATSURLs overrides the nats_urls the server returns with the credential
	// (e.g. when the server advertises an address unreachable from here).
	NATSURLs []string
	// CredentialTTL is the lifetime asked for each JWT; 0 = server default.
	CredentialTTL time.Duration
	// KeyFile, when set, keeps the client's nkey seed across sessions (0600;
	// DefaultKeyFile is `mulchat chat`'s choice). The next session presents
	// the same key, and the server refreshes its JWT rather than revoking it
	// for a new key. Empty: a new key pair per Client, kept in memory only.
	KeyFile string
	// RequestTimeout bounds one attempt of a NATS request; 0 = 5 s.
	RequestTimeout time.Duration
	// SendAttempts is how many times Send tries a request that timed out or
	// found no router, with the same client_msg_id; 0 = 4.
	SendAttempts int
	// RenewAt is the fraction of a JWT's lifetime after which it is renewed;
	// 0 = 0.8.
	RenewAt float64

	// OnMessage receives every delivered message once, per room in seq
	// order. Calls are serial; the handler must not block for long.
	OnMessage func(mulchat.Message)
	// OnEvent receives events (membership, presence, credential notices).
	OnEvent func(Event)
	// OnStatus receives connection state changes.
	OnStatus func(Status)
}

// Connection states reported to Config.OnStatus.
const (
	StateConnected    = "connected"
	StateDisconnected = "disconnected"
	StateReconnected  = "reconnected"
	StateRenewed      = "renewed" // a new JWT was obtained
	StateGapFilled    = "gap_filled"
	StateClosed       = "closed"
)

// Status is a connection state change. Err, when set, is safe to show.
type Status struct {
	State string
	Err   error
	// Missed is the number of messages recovered from history (gap_filled).
	Missed int
}

// Client is one user's session with a mulchat server. Its methods are safe
// for concurrent use.
type Client struct {
	cfg       Config
	serverURL string
	apiBase   string
	http      *http.Client
	log       *slog.Logger

	mu             sync.Mutex
	token          string
	tokenExpiresAt time.Time
	password       string
	user           User
	kp             nkeys.KeyPair
	publicKey      string
	keyFromFile    bool // kp was read from Config.KeyFile, not created now
	cred           Credential
	credIssuedAt   time.Time // local time the JWT was received
	credLifetime   time.Duration
	nc             *nats.Conn
	sub            *nats.Subscription
	closed         bool
	connClosed     bool // the client closed the NATS connection on purpose
	connecting     bool // a Connect is in progress
	refreshing     bool // refreshURLs is running
	lastRefresh    time.Time
	// bg is the context of the background work (renewal, gap fills,
	// credential checks); Close cancels it.
	bg            context.Context
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	renewNow      chan struct{}
	lastAuthCheck time.Time

	// permDenied records publish subjects NATS refused, so that a request
	// that timed out because of a permission violation is reported as one.
	permDenied map[string]time.Time

	dl delivery
}

// New returns a client for the server; it does nothing on the network.
func New(cfg Config) (*Client, error) {
	base, err := normalizeServerURL(cfg.ServerURL)
	if err != nil {
		return nil, err
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Name == "" {
		cfg.Name = "mulchat-go"
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.SendAttempts <= 0 {
		cfg.SendAttempts = 4
	}
	if cfg.RenewAt <= 0 || cfg.RenewAt >= 1 {
		cfg.RenewAt = 0.8
	}
	bg, cancel := context.WithCancel(context.Background())
	c := &Client{
		bg:         bg,
		cancel:     cancel,
		cfg:        cfg,
		serverURL:  base,
		apiBase:    base + "/api/v1",
		http:       cfg.HTTPClient,
		log:        cfg.Logger,
		renewNow:   make(chan struct{}, 1),
		permDenied: make(map[string]time.Time),
	}
	c.dl.init(cfg.OnMessage)
	return c, nil
}

func (c *Client) userAgent() string { return "mulchat-client (" + c.cfg.Name + ")" }

func (c *Client) apiToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// User returns the logged-in user (zero before Login).
func (c *Client) User() User {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// UserID returns the logged-in user's id (0 before Login).
func (c *Client) UserID() int64 { return c.User().ID }

// PublicKey returns the public half of the client's nkey ("" before
// EnsureCredential).
func (c *Client) PublicKey() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.publicKey
}

// CredentialExpiresAt returns the expiry of the current JWT.
func (c *Client) CredentialExpiresAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cred.ExpiresAt
}

// EnsureCredential generates the client's nkey pair (once per Client), or
// reads it from Config.KeyFile, and asks the server for a JWT for its public
// key. The seed stays in this process (and the key file). Calling it again
// obtains a fresh JWT for the same key.
//
// For a key the server already holds as the user's current one, issuing is a
// refresh: nothing is revoked. When the server refuses a key from the key
// file (it was revoked, or replaced by another client of the user), the file
// gets a new key and the request is made once more.
func (c *Client) EnsureCredential(ctx context.Context) (*Credential, error) {
	c.mu.Lock()
	if c.user.ID == 0 {
		c.mu.Unlock()
		return nil, mulchat.Errorf(mulchat.EUNAUTHORIZED, "log in before asking for a NATS credential")
	}
	if c.kp == nil {
		if err := c.loadKeyLocked(); err != nil {
			c.mu.Unlock()
			return nil, err
		}
	}
	pub, fromFile := c.publicKey, c.keyFromFile
	c.mu.Unlock()

	cred, err := c.requestCredential(ctx, pub)
	if isCode(err, mulchat.EFORBIDDEN) && fromFile {
		c.log.Info("the server refused the stored NATS key; generating a new one", "public_key", pub, "key_file", c.cfg.KeyFile)
		if pub, err = c.replaceKey(pub); err != nil {
			return nil, err
		}
		cred, err = c.requestCredential(ctx, pub)
	}
	if err != nil {
		return nil, err
	}
	if cred.PublicKey != "" && cred.PublicKey != pub {
		return nil, mulchat.Errorf(mulchat.EINTERNAL, "the server issued a JWT for another key")
	}
	cred.PublicKey = pub
	if err := c.setCredential(cred); err != nil {
		return nil, err
	}
	c.log.Debug("obtained NATS credential", "public_key", pub, "expires_at", cred.ExpiresAt)
	out := c.credential()
	return &out, nil
}

// requestCredential asks the server for a JWT for pub.
func (c *Client) requestCredential(ctx context.Context, pub string) (Credential, error) {
	in := struct {
		PublicKey string `json:"public_key"`
		TTL       string `json:"ttl,omitempty"`
	}{PublicKey: pub, TTL: ttlString(c.cfg.CredentialTTL)}
	var cred Credential
	if err := c.do(ctx, "POST", "/me/credentials", in, &cred); err != nil {
		return Credential{}, fmt.Errorf("obtain a NATS credential: %w", err)
	}
	return cred, nil
}

// loadKeyLocked sets the client's key pair: from Config.KeyFile (created
// there if missing), or new and in memory only. c.mu is held.
func (c *Client) loadKeyLocked() error {
	var kp nkeys.KeyPair
	var err error
	fromFile := false
	if c.cfg.KeyFile != "" {
		var created bool
		if kp, created, err = loadOrCreateKey(c.cfg.KeyFile); err != nil {
			return err
		}
		// A key just created has never been issued: there is nothing for
		// the server to refuse, so no retry with yet another key.
		fromFile = !created
	} else if kp, err = nkeys.CreateUser(); err != nil {
		return mulchat.WrapError(mulchat.EINTERNAL, err, "generating the nkey pair")
	}
	pub, err := kp.PublicKey()
	if err != nil {
		kp.Wipe()
		return mulchat.WrapError(mulchat.EINTERNAL, err, "reading the public key")
	}
	c.kp, c.publicKey, c.keyFromFile = kp, pub, fromFile
	return nil
}

// replaceKey puts a new key pair in place of old, in memory and in the key
// file, and returns its public key.
func (c *Client) replaceKey(old string) (string, error) {
	kp, err := replaceKey(c.cfg.KeyFile)
	if err != nil {
		return "", err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		kp.Wipe()
		return "", mulchat.WrapError(mulchat.EINTERNAL, err, "reading the public key")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.publicKey == old && c.kp != nil {
		c.kp.Wipe()
	}
	c.kp, c.publicKey, c.keyFromFile = kp, pub, false
	return pub, nil
}

// RenewCredential asks the server for a new JWT for the same key. A live
// connection keeps its old JWT until the next reconnect; the background
// renewal of Connect forces that reconnect itself.
func (c *Client) RenewCredential(ctx context.Context) (*Credential, error) {
	in := struct {
		TTL string `json:"ttl,omitempty"`
	}{TTL: ttlString(c.cfg.CredentialTTL)}
	var out struct {
		JWT       string    `json:"jwt"`
		ExpiresAt time.Time `json:"expires_at"`
		NATSURLs  []string  `json:"nats_urls"`
	}
	err := c.do(ctx, "POST", "/me/credentials/renew", in, &out)
	if isCode(err, mulchat.EUNAUTHORIZED) {
		// The API token may have expired during a long session.
		if lerr := c.relogin(ctx); lerr == nil {
			err = c.do(ctx, "POST", "/me/credentials/renew", in, &out)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("renew the NATS credential: %w", err)
	}
	cred := c.credential()
	cred.JWT, cred.ExpiresAt = out.JWT, out.ExpiresAt
	if len(out.NATSURLs) > 0 {
		cred.NATSURLs = out.NATSURLs
	}
	if err := c.setCredential(cred); err != nil {
		return nil, err
	}
	c.log.Debug("renewed NATS credential", "public_key", cred.PublicKey, "expires_at", cred.ExpiresAt)
	return &cred, nil
}

// ttlString is the wire form of a TTL: a Go duration string, "" for the
// server default.
func ttlString(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return d.String()
}

// setCredential checks that the JWT is a user JWT for the client's key and
// stores it with the lifetime read from its own claims, so that renewal
// timing does not depend on the two clocks agreeing.
func (c *Client) setCredential(cred Credential) error {
	claims, err := jwt.DecodeUserClaims(cred.JWT)
	if err != nil {
		return mulchat.WrapError(mulchat.EINTERNAL, err, "the server sent an unreadable user JWT")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if claims.Subject != c.publicKey {
		// The user's one credential now belongs to the key of another
		// client of the same user (the data model holds one per user).
		return mulchat.Errorf(mulchat.ECONFLICT, "the server's credential is for another key: another client of yours obtained one")
	}
	lifetime := time.Duration(0)
	if claims.Expires > 0 {
		lifetime = time.Unix(claims.Expires, 0).Sub(time.Unix(claims.IssuedAt, 0))
		if cred.ExpiresAt.IsZero() {
			cred.ExpiresAt = time.Unix(claims.Expires, 0).UTC()
		}
	}
	if len(cred.NATSURLs) == 0 {
		cred.NATSURLs = c.cred.NATSURLs
	}
	c.cred = cred
	c.credIssuedAt = time.Now()
	c.credLifetime = lifetime
	return nil
}

func (c *Client) credential() Credential {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cred
}

// currentJWT is the nats.UserJWT callback: every (re)connect presents the
// newest JWT.
func (c *Client) currentJWT() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cred.JWT == "" {
		return "", mulchat.Errorf(mulchat.EUNAUTHORIZED, "no NATS credential")
	}
	return c.cred.JWT, nil
}

// sign is the nats.UserJWT signature callback: it signs the server's nonce
// with the seed that never leaves this process.
func (c *Client) sign(nonce []byte) ([]byte, error) {
	c.mu.Lock()
	kp := c.kp
	c.mu.Unlock()
	if kp == nil {
		return nil, mulchat.Errorf(mulchat.EUNAUTHORIZED, "no nkey")
	}
	return kp.Sign(nonce)
}

// renewDelay is how long to wait before renewing the current JWT.
func (c *Client) renewDelay() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.credLifetime <= 0 {
		return -1 // the JWT never expires
	}
	at := c.credIssuedAt.Add(time.Duration(float64(c.credLifetime) * c.cfg.RenewAt))
	return time.Until(at)
}

// renewLoop renews the JWT at RenewAt of its lifetime (or at once when asked
// through renewNow), then forces a reconnect so that the connection presents
// the new JWT before the server closes it at the old one's expiry. Failures
// are retried with backoff; a revoked or refused credential ends the loop.
func (c *Client) renewLoop(ctx context.Context) {
	defer c.wg.Done()
	backoff := time.Second
	for {
		d := c.renewDelay()
		var timer *time.Timer
		var fire <-chan time.Time
		if d >= 0 {
			timer = time.NewTimer(d)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-fire:
		case <-c.renewNow:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		_, err := c.RenewCredential(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			code := mulchat.ErrorCode(err)
			if code == mulchat.EFORBIDDEN || code == mulchat.EUNAUTHORIZED || code == mulchat.ENOTFOUND || code == mulchat.ECONFLICT {
				c.log.Warn("NATS credential cannot be renewed", "code", code, "error", mulchat.ErrorMessageForCLI(err))
				c.status(Status{State: StateClosed, Err: err})
				go c.closeConn()
				return
			}
			c.log.Warn("renewing the NATS credential failed; retrying", "error", mulchat.ErrorMessageForCLI(err), "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Minute)
			select {
			case c.renewNow <- struct{}{}:
			default:
			}
			continue
		}
		backoff = time.Second
		c.status(Status{State: StateRenewed})
		if nc := c.conn(); nc != nil && nc.IsConnected() {
			if err := nc.ForceReconnect(); err != nil {
				c.log.Debug("forced reconnect after renewal failed", "error", err)
			}
		}
	}
}

// requestRenew asks renewLoop to renew now.
func (c *Client) requestRenew() {
	select {
	case c.renewNow <- struct{}{}:
	default:
	}
}

func (c *Client) status(s Status) {
	if c.cfg.OnStatus != nil {
		c.cfg.OnStatus(s)
	}
}

// Close closes the NATS connection and stops the background work. It does
// not log out, so the API token stays valid until it expires.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.closeConn()
	c.wg.Wait()
	c.mu.Lock()
	if c.kp != nil {
		c.kp.Wipe()
		c.kp = nil
	}
	c.password = ""
	c.mu.Unlock()
	return nil
}

func (c *Client) closeConn() {
	c.mu.Lock()
	nc := c.nc
	c.connClosed = true
	c.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
}
