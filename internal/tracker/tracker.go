// Package tracker keeps nats_auth_sessions in step with the NATS servers: it
// listens to the system account's connect and disconnect events for the chat
// account, reconciles the table with the servers' live connections on start
// (and periodically) so no session stays active after a crash, and kicks
// sessions with $SYS.REQ.SERVER.<id>.KICK. Several instances may run: events
// are consumed in a queue group, so each is written once.
package tracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mulchat/mulchat"
)

// QueueGroup is the queue group of the event subscription.
const QueueGroup = "mulchat-tracker"

// Close reasons written by the tracker itself (the server's own reasons, such
// as "Client Closed" or "Authentication Expired", come with its events).
const (
	ReasonKicked     = "kicked"
	ReasonReconciled = "not connected (reconciled)"
)

// Config configures a Tracker. Store and SysConn are required.
type Config struct {
	Store mulchat.Store
	// SysConn is a connection of a SYS-account service user.
	SysConn    *nats.Conn
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// ChatAccount is the chat account's public key; only its connections are
	// tracked. "" tracks every account (users are still looked up by key).
	ChatAccount string
	// Presence, when set, is told when a user's first session opens and the
	// last one closes.
	Presence mulchat.PresenceNotifier
	// ReconcileInterval repeats the start-up reconciliation; default 5m,
	// negative disables it.
	ReconcileInterval time.Duration
	// ServerWait is how long a CONNZ round waits for more servers to answer
	// after the last answer; default 250ms.
	ServerWait time.Duration
	Now        func() time.Time
}

// Tracker is one tracker instance.
type Tracker struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	store mulchat.Store
	now   func() time.Time
	m     *metrics

	mu      sync.Mutex
	started bool
	closed  bool
	sub     *nats.Subscription
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// gone remembers connections whose disconnect came before their connect
	// row existed, so a late connect (or reconcile) does not resurrect them.
	gone map[connKey]time.Time
}

type connKey struct {
	server string
	cid    uint64
}

// New validates cfg and returns a Tracker; Start begins tracking.
func New(cfg Config) (*Tracker, error) {
	if cfg.Store == nil || cfg.SysConn == nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "tracker: Store and SysConn are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 5 * time.Minute
	}
	if cfg.ServerWait <= 0 {
		cfg.ServerWait = 250 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Tracker{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "tracker"),
		nc:    cfg.SysConn,
		store: cfg.Store,
		now:   cfg.Now,
		m:     m,
		gone:  map[connKey]time.Time{},
	}, nil
}

// Start subscribes to connect/disconnect events, then reconciles the table
// with the live connections. Subscribing first means a connection that opens
// or closes during the reconciliation is seen by one or the other.
func (t *Tracker) Start(ctx context.Context) error {
	t.mu.Lock()
	if t.started {
		t.mu.Unlock()
		return mulchat.Errorf(mulchat.EINVALID, "tracker already started")
	}
	t.started = true
	acc := t.cfg.ChatAccount
	if acc == "" {
		acc = "*"
	}
	// One subscription for both event kinds keeps one instance's view of a
	// connection in order (connect before disconnect).
	sub, err := t.nc.QueueSubscribe("$SYS.ACCOUNT."+acc+".*", QueueGroup, t.handleEvent)
	if err != nil {
		t.mu.Unlock()
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "tracker: subscribe to connect events")
	}
	_ = sub.SetPendingLimits(-1, -1)
	t.sub = sub
	runCtx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.mu.Unlock()

	if err := t.flush(ctx); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "tracker: subscribe to connect events")
	}
	if err := t.Reconcile(ctx); err != nil {
		return err
	}
	if t.cfg.ReconcileInterval > 0 {
		t.wg.Add(1)
		go t.reconcileLoop(runCtx)
	}
	t.log.Info("tracker started", "account", acc)
	return nil
}

// Close stops tracking; it does not close SysConn, which the caller owns.
func (t *Tracker) Close() error {
	t.mu.Lock()
	if t.closed || !t.started {
		t.closed = true
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	sub := t.sub
	t.mu.Unlock()
	t.cancel()
	var err error
	if sub != nil {
		if derr := sub.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
			err = derr
		}
		deadline := time.Now().Add(5 * time.Second)
		for sub.IsValid() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.wg.Wait()
	return err
}

func (t *Tracker) reconcileLoop(ctx context.Context) {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := t.Reconcile(rctx); err != nil && ctx.Err() == nil {
				t.log.Warn("periodic reconcile failed", "err", err)
			}
			cancel()
		}
	}
}

func (t *Tracker) flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	return t.nc.FlushWithContext(ctx)
}

// The server's event payloads (nats-server events.go), the fields used here.
type serverInfo struct {
	Name string `json:"name"`
	ID   string `json:"id"`
}

type clientInfo struct {
	Start   *time.Time `json:"start,omitempty"`
	Host    string     `json:"host,omitempty"`
	ID      uint64     `json:"id,omitempty"`
	Account string     `json:"acc,omitempty"`
	User    string     `json:"user,omitempty"`
	Name    string     `json:"name,omitempty"`
	Lang    string     `json:"lang,omitempty"`
	Version string     `json:"ver,omitempty"`
	JWT     string     `json:"jwt,omitempty"`
	Kind    string     `json:"kind,omitempty"`
}

type connectEvent struct {
	Type   string     `json:"type"`
	Time   time.Time  `json:"timestamp"`
	Server serverInfo `json:"server"`
	Client clientInfo `json:"client"`
	Reason string     `json:"reason,omitempty"` // disconnect only
}

const (
	connectEventType    = "io.nats.server.advisory.v1.client_connect"
	disconnectEventType = "io.nats.server.advisory.v1.client_disconnect"
)

func (t *Tracker) handleEvent(msg *nats.Msg) {
	var ev connectEvent
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch ev.Type {
	case connectEventType:
		t.onConnect(ctx, &ev)
	case disconnectEventType:
		t.onDisconnect(ctx, &ev)
	}
}

// userAgent is what nats_auth_sessions.user_agent holds: the client's name,
// language and library version, as it announced them.
func userAgent(name, lang, version string) string {
	ua := name
	if lang != "" || version != "" {
		if ua != "" {
			ua += " "
		}
		ua += "(" + lang
		if version != "" {
			ua += "/" + version
		}
		ua += ")"
	}
	if len(ua) > 256 {
		ua = ua[:256]
	}
	return ua
}

// jwtExpiry reads the expiry of a user JWT (the server already verified it).
func jwtExpiry(token string) *time.Time {
	if token == "" {
		return nil
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil || uc.Expires == 0 {
		return nil
	}
	e := time.Unix(uc.Expires, 0).UTC()
	return &e
}

func (t *Tracker) onConnect(ctx context.Context, ev *connectEvent) {
	if ev.Client.User == "" || ev.Server.ID == "" {
		return
	}
	t.mu.Lock()
	_, gone := t.gone[connKey{ev.Server.ID, ev.Client.ID}]
	t.mu.Unlock()
	if gone {
		return
	}
	created := t.now().UTC()
	if ev.Client.Start != nil {
		created = ev.Client.Start.UTC()
	}
	s := &mulchat.AuthSession{
		ClientID:  fmt.Sprintf("%s/%d", ev.Server.ID, ev.Client.ID),
		IPAddress: ev.Client.Host,
		UserAgent: userAgent(ev.Client.Name, ev.Client.Lang, ev.Client.Version),
		PublicKey: ev.Client.User,
		ServerID:  ev.Server.ID,
		CID:       ev.Client.ID,
		CreatedAt: created,
		ExpiresAt: jwtExpiry(ev.Client.JWT),
	}
	first, err := t.open(ctx, s)
	if err != nil {
		if mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
			t.log.Warn("record session failed", "client_id", s.ClientID, "err", err)
		}
		return
	}
	if s.ID != 0 {
		t.m.opened.Inc()
	}
	if first && t.cfg.Presence != nil {
		if err := t.cfg.Presence.PresenceChanged(ctx, s.UserID, true); err != nil {
			t.log.Warn("presence notice failed", "user_id", s.UserID, "err", err)
		}
	}
}

// open writes an active session row for a live connection unless one exists.
// It reports whether this is the user's only active session (for presence).
// ENOTFOUND means the key is no mulchat user's (a service user).
func (t *Tracker) open(ctx context.Context, s *mulchat.AuthSession) (first bool, err error) {
	u, err := t.store.UserByNATSPublicKey(ctx, s.PublicKey)
	if err != nil {
		return false, err
	}
	s.UserID = u.ID
	if s.ExpiresAt == nil {
		s.ExpiresAt = u.NATS.ExpiresAt
	}
	err = t.store.InTx(ctx, func(q mulchat.Queries) error {
		active, err := q.ListUserAuthSessions(ctx, u.ID, true)
		if err != nil {
			return err
		}
		for _, a := range active {
			if a.ServerID == s.ServerID && a.CID == s.CID {
				*s = *a
				s.ID = 0 // tells the caller nothing was created
				return nil
			}
		}
		first = len(active) == 0
		return q.CreateAuthSession(ctx, s)
	})
	return first, err
}

func (t *Tracker) onDisconnect(ctx context.Context, ev *connectEvent) {
	if ev.Server.ID == "" {
		return
	}
	at := t.now().UTC()
	if !ev.Time.IsZero() {
		at = ev.Time.UTC()
	}
	reason := ev.Reason
	if reason == "" {
		reason = "disconnected"
	}
	err := t.store.CloseAuthSession(ctx, ev.Server.ID, ev.Client.ID, at, reason)
	switch {
	case mulchat.ErrorCode(err) == mulchat.ENOTFOUND:
		// A service user, or a disconnect that overtook its connect.
		if ev.Client.User != "" {
			t.rememberGone(connKey{ev.Server.ID, ev.Client.ID})
		}
		return
	case err != nil:
		t.log.Warn("close session failed", "server_id", ev.Server.ID, "cid", ev.Client.ID, "err", err)
		return
	}
	t.m.closed.WithLabelValues("event").Inc()
	t.maybeOffline(ctx, ev.Client.User)
}

// maybeOffline tells Presence when the key's user has no active session left.
func (t *Tracker) maybeOffline(ctx context.Context, publicKey string) {
	if t.cfg.Presence == nil || publicKey == "" {
		return
	}
	u, err := t.store.UserByNATSPublicKey(ctx, publicKey)
	if err != nil {
		return
	}
	active, err := t.store.ListUserAuthSessions(ctx, u.ID, true)
	if err != nil || len(active) > 0 {
		return
	}
	if err := t.cfg.Presence.PresenceChanged(ctx, u.ID, false); err != nil {
		t.log.Warn("presence notice failed", "user_id", u.ID, "err", err)
	}
}

func (t *Tracker) rememberGone(k connKey) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, at := range t.gone {
		if now.Sub(at) > time.Minute {
			delete(t.gone, key)
		}
	}
	t.gone[k] = now
}
