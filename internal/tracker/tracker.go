// Package tracker keeps nats_auth_sessions in step with the NATS servers: it
// listens to the system account's connect and disconnect events for the chat
// account, reconciles the table with the servers' live connections on start
// (and periodically) so no session stays active after a crash, and kicks
// sessions with $SYS.REQ.SERVER.<id>.KICK. Several instances may run: events
// are consumed in a queue group, so each is written once.
package tracker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

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
	events  chan *connectEvent
	done    chan struct{}
	keys    map[string]*keyUser
	// gone remembers connections whose disconnect came before their connect
	// row existed, so a late connect (or reconcile) does not resurrect them.
	gone map[connKey]time.Time

	// online remembers, per user, when the writer last saw the user with an
	// active session (its own insert, or a check of the store), so that a
	// burst of one user's connections checks the store once, not once per
	// batch. Only the writer goroutine touches it. An entry is trusted for
	// onlineTTL; a disconnect of the user drops it, and a write outside the
	// writer (kicks, reconcile: onlineGen) drops them all.
	online    map[int64]time.Time
	onlineOf  uint64 // the generation online was filled in
	onlineGen atomic.Uint64

	// writeMu serialises this instance's session transactions (the
	// writer's batches, kicks' and reconciles' closes), so that each close
	// sees the others' commits when it counts the user's active sessions:
	// on PostgreSQL two concurrent closes of a user's last two rows could
	// otherwise each see the other row still active, and no offline notice
	// would be sent.
	writeMu sync.Mutex
}

// onlineTTL bounds how long the writer trusts that a user it saw with an
// active session still has one. Within one instance it is exact (every
// other close drops the entry); with several instances, another one's close
// of the user's last session is seen at most this late, and a connect in
// between sends no online notice (see docs/realtime.md).
const onlineTTL = time.Second

// sessionsClosedElsewhere tells the writer that sessions were closed outside
// it, so the users it remembers online may not be.
func (t *Tracker) sessionsClosedElsewhere() { t.onlineGen.Add(1) }

type connKey struct {
	server string
	cid    uint64
}

// New validates cfg and returns a Tracker; Start begins tracking.
func New(cfg Config) (*Tracker, error) {
	if cfg.Store == nil || cfg.SysConn == nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "tracker: Store and SysConn are required")
	}
	if _, ok := cfg.Store.(mulchat.SessionBatchQueries); !ok {
		return nil, mulchat.Errorf(mulchat.EINVALID, "tracker: the store does not implement mulchat.SessionBatchQueries")
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
		cfg:    cfg,
		log:    cfg.Logger.With("component", "tracker"),
		nc:     cfg.SysConn,
		store:  cfg.Store,
		now:    cfg.Now,
		m:      m,
		gone:   map[connKey]time.Time{},
		keys:   map[string]*keyUser{},
		online: map[int64]time.Time{},
		events: make(chan *connectEvent, 4096),
		done:   make(chan struct{}),
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
	t.wg.Add(1)
	go t.writer()
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
	close(t.done)
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

// handleEvent runs on the subscription's goroutine; it only decodes and
// queues, so events are written in order by one writer.
func (t *Tracker) handleEvent(msg *nats.Msg) {
	var ev connectEvent
	if decodeEvent(msg.Data, &ev) != nil {
		ev = connectEvent{}
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			return
		}
	}
	if ev.Type != connectEventType && ev.Type != disconnectEventType {
		return
	}
	select {
	case t.events <- &ev:
	case <-t.done:
	}
}

// maxBatch bounds how many events one transaction writes.
const maxBatch = 256

// A batch gathers events until none has come for batchIdle, or batchLinger
// after its first event, or maxBatch events. During a burst of connects this
// makes a few large transactions instead of many of a handful of events
// (each begin and commit costs more than a row of a multi-row insert): with
// a fixed 5 ms linger a burst of 600 connects/s made batches of about three
// events, and the transactions cost a quarter of the writer's CPU. A lone
// connect waits only batchIdle; during a burst a session row and an online
// notice wait at most batchLinger, still below what a person notices.
const (
	batchIdle   = 20 * time.Millisecond
	batchLinger = 50 * time.Millisecond
)

// writer writes queued events in batches (see batchLinger) in one
// transaction each, which on SQLite is one commit instead of one per
// connection.
func (t *Tracker) writer() {
	defer t.wg.Done()
	linger, idle := time.NewTimer(batchLinger), time.NewTimer(batchIdle)
	linger.Stop()
	idle.Stop()
	for {
		var ev *connectEvent
		select {
		case ev = <-t.events:
		case <-t.done:
			// Write what was queued before Close, then stop.
			select {
			case ev = <-t.events:
			default:
				return
			}
		}
		batch := []*connectEvent{ev}
		last := time.Now()
		linger.Reset(batchLinger)
		idle.Reset(batchIdle)
	more:
		for len(batch) < maxBatch {
			select {
			case e := <-t.events:
				batch = append(batch, e)
				// The idle timer is moved when it fires, not for
				// every event.
				last = time.Now()
			case <-idle.C:
				wait := batchIdle - time.Since(last)
				if wait <= 0 { // the linger timer ends a batch that keeps going

					break more
				}
				idle.Reset(wait)
			case <-linger.C:
				break more
			case <-t.done:
				// Closing: take what is queued without waiting.
				for len(batch) < maxBatch {
					select {
					case e := <-t.events:
						batch = append(batch, e)
					default:
						break more
					}
				}
				break more
			}
		}
		linger.Stop()
		idle.Stop()
		t.writeBatch(batch)
	}
}

type presenceNote struct {
	userID int64
	online bool
}

// writeBatch writes a batch of events in one transaction. Should that fail
// (one event the store refuses, say), each event is written again in a
// transaction of its own, so one bad event costs only itself: the others'
// sessions are still recorded, and the bad one is logged and left to the next
// reconcile.
func (t *Tracker) writeBatch(batch []*connectEvent) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Resolve keys to users outside the transaction (cached).
	users := map[string]*keyUser{}
	for _, ev := range batch {
		if ev.Client.User != "" {
			if _, ok := users[ev.Client.User]; !ok {
				users[ev.Client.User] = t.userByKey(ctx, ev.Client.User)
			}
		}
	}
	w, err := t.writeEvents(ctx, batch, users)
	if err != nil && len(batch) > 1 && ctx.Err() == nil {
		t.log.Warn("writing a batch of session events failed; writing them one by one", "events", len(batch), "err", err)
		w = batchResult{}
		for _, ev := range batch {
			one, err := t.writeEvents(ctx, []*connectEvent{ev}, users)
			if err != nil {
				t.log.Warn("writing a session event failed; skipped, the next reconcile repairs the table",
					"type", ev.Type, "server_id", ev.Server.ID, "cid", ev.Client.ID, "err", err)
				continue
			}
			w.add(one)
		}
	} else if err != nil {
		t.log.Warn("writing session events failed; the next reconcile repairs the table", "events", len(batch), "err", err)
		return
	}
	t.m.opened.Add(float64(w.opened))
	t.m.closed.WithLabelValues("event").Add(float64(w.closed))
	if t.cfg.Presence == nil {
		return
	}
	for _, n := range w.notes {
		if err := t.cfg.Presence.PresenceChanged(ctx, n.userID, n.online); err != nil {
			t.log.Warn("presence notice failed", "user_id", n.userID, "err", err)
		}
	}
}

// batchResult is what a committed transaction of events did.
type batchResult struct {
	notes          []presenceNote
	opened, closed int
}

func (b *batchResult) add(o batchResult) {
	b.notes = append(b.notes, o.notes...)
	b.opened += o.opened
	b.closed += o.closed
}

// writeEvents writes events in one transaction, in their order; users maps
// their keys to users (nil: not a user's).
//
// Consecutive connects are gathered and written together by openSessions (a
// few queries and multi-row INSERTs for the lot instead of queries per
// connection). A disconnect of a gathered connection, or of a gathered
// connection's user, writes them first, so each user's rows and presence
// notices follow the events' order.
func (t *Tracker) writeEvents(ctx context.Context, events []*connectEvent, users map[string]*keyUser) (batchResult, error) {
	var res batchResult
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	if gen := t.onlineGen.Load(); gen != t.onlineOf || len(t.online) > 100_000 {
		clear(t.online)
		t.onlineOf = gen
	}
	// seen: users this transaction found or made online; the cache takes
	// them only once it commits.
	var seen map[int64]bool
	err := t.store.InTx(ctx, func(q mulchat.Queries) error {
		res = batchResult{}
		seen = map[int64]bool{}
		bq, err := batchQueries(q)
		if err != nil {
			return err
		}
		var pending []*mulchat.AuthSession
		pendingUsers := map[int64]bool{}
		pendingConns := map[connKey]bool{}
		flush := func() error {
			if len(pending) == 0 {
				return nil
			}
			opened, notes, err := t.openSessions(ctx, bq, pending, seen)
			if err != nil {
				return err
			}
			res.opened += opened
			res.notes = append(res.notes, notes...)
			pending = nil
			clear(pendingUsers)
			clear(pendingConns)
			return nil
		}
		for _, ev := range events {
			switch ev.Type {
			case connectEventType:
				ku := users[ev.Client.User]
				if ku == nil || ev.Server.ID == "" {
					continue
				}
				k := connKey{ev.Server.ID, ev.Client.ID}
				if pendingConns[k] || t.isGone(k) {
					continue
				}
				s := sessionFromEvent(ev, ku)
				pending = append(pending, s)
				pendingUsers[s.UserID] = true
				pendingConns[k] = true
			case disconnectEventType:
				if ev.Server.ID == "" {
					continue
				}
				k := connKey{ev.Server.ID, ev.Client.ID}
				ku := users[ev.Client.User]
				if pendingConns[k] || (ku != nil && pendingUsers[ku.id]) {
					if err := flush(); err != nil {
						return err
					}
				}
				if ku != nil {
					delete(t.online, ku.id)
					delete(seen, ku.id)
				}
				at := t.now().UTC()
				if !ev.Time.IsZero() {
					at = ev.Time.UTC()
				}
				reason := cleanText(ev.Reason, maxFieldBytes)
				if reason == "" {
					reason = "disconnected"
				}
				err := q.CloseAuthSession(ctx, ev.Server.ID, ev.Client.ID, at, reason)
				if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
					// A service user, or a disconnect that overtook its
					// connect (handled by another instance).
					if ev.Client.User != "" {
						t.rememberGone(k)
					}
					continue
				}
				if err != nil {
					return err
				}
				res.closed++
				if ku != nil {
					last, err := t.lastClosed(ctx, bq, ku.id)
					if err != nil {
						return err
					}
					if last {
						res.notes = append(res.notes, presenceNote{ku.id, false})
					}
				}
			}
		}
		return flush()
	})
	if err != nil {
		return batchResult{}, err
	}
	now := t.now()
	for id := range seen {
		t.online[id] = now
	}
	return res, nil
}

// openSessions writes the rows of newly seen connections (in order; none
// twice) unless a connection already has an active row (written by a
// reconcile, say). With seen (the writer), it returns an online notice for
// each user who had no active session before, and adds the users to seen.
// It costs one index range query per server, one existence check per user
// the writer does not remember online (see Tracker.online) and a multi-row
// INSERT per 64 rows, whatever the number of sessions each user has.
func (t *Tracker) openSessions(ctx context.Context, q mulchat.SessionBatchQueries, sessions []*mulchat.AuthSession, seen map[int64]bool) (opened int, notes []presenceNote, err error) {
	type cidSpan struct{ lo, hi uint64 }
	spans := map[string]cidSpan{}
	for _, s := range sessions {
		sp, ok := spans[s.ServerID]
		if !ok {
			sp = cidSpan{s.CID, s.CID}
		}
		sp.lo, sp.hi = min(sp.lo, s.CID), max(sp.hi, s.CID)
		spans[s.ServerID] = sp
	}
	have := map[connKey]bool{}
	for server, sp := range spans {
		cids, err := q.ActiveAuthSessionCIDs(ctx, server, sp.lo, sp.hi)
		if err != nil {
			return 0, nil, err
		}
		for _, c := range cids {
			have[connKey{server, c}] = true
		}
	}
	fresh := make([]*mulchat.AuthSession, 0, len(sessions))
	for _, s := range sessions {
		if !have[connKey{s.ServerID, s.CID}] {
			fresh = append(fresh, s)
		}
	}
	if seen != nil && t.cfg.Presence != nil {
		now := t.now()
		for _, s := range fresh {
			if seen[s.UserID] {
				continue
			}
			seen[s.UserID] = true
			if at, ok := t.online[s.UserID]; ok && now.Sub(at) < onlineTTL {
				continue
			}
			online, err := q.HasActiveAuthSession(ctx, s.UserID)
			if err != nil {
				return 0, nil, err
			}
			if !online {
				notes = append(notes, presenceNote{s.UserID, true})
			}
		}
	}
	if err := q.CreateAuthSessions(ctx, fresh); err != nil {
		return 0, nil, err
	}
	return len(fresh), notes, nil
}

// batchQueries returns q's SessionBatchQueries, which New checked the store
// has.
func batchQueries(q mulchat.Queries) (mulchat.SessionBatchQueries, error) {
	bq, ok := q.(mulchat.SessionBatchQueries)
	if !ok {
		return nil, mulchat.Errorf(mulchat.EINTERNAL, "tracker: the store's transaction queries do not implement mulchat.SessionBatchQueries")
	}
	return bq, nil
}

func (t *Tracker) isGone(k connKey) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, gone := t.gone[k]
	return gone
}

func sessionFromEvent(ev *connectEvent, ku *keyUser) *mulchat.AuthSession {
	created := time.Now().UTC()
	if ev.Client.Start != nil {
		created = ev.Client.Start.UTC()
	}
	exp := ku.jwtExpiry(ev.Client.JWT)
	if exp == nil {
		exp = ku.expiresAt
	}
	return &mulchat.AuthSession{
		UserID:    ku.id,
		ClientID:  ev.Server.ID + "/" + strconv.FormatUint(ev.Client.ID, 10),
		IPAddress: ev.Client.Host,
		UserAgent: userAgent(ev.Client.Name, ev.Client.Lang, ev.Client.Version),
		PublicKey: ev.Client.User,
		ServerID:  ev.Server.ID,
		CID:       ev.Client.ID,
		CreatedAt: created,
		ExpiresAt: exp,
	}
}

// keyUser is the user a NATS public key belongs to.
type keyUser struct {
	id        int64
	expiresAt *time.Time
	cached    time.Time
	// lastJWT is the last user JWT seen with this key and its expiry: a
	// user's connections mostly carry the same JWT, whose claims need not
	// be decoded again for each.
	lastJWT atomic.Pointer[jwtExp]
}

type jwtExp struct {
	token string
	exp   *time.Time
}

// jwtExpiry is jwtExpiry(token), remembered for the key's last token.
func (ku *keyUser) jwtExpiry(token string) *time.Time {
	if last := ku.lastJWT.Load(); last != nil && last.token == token {
		return copyTime(last.exp)
	}
	exp := jwtExpiry(token)
	ku.lastJWT.Store(&jwtExp{token: token, exp: copyTime(exp)})
	return exp
}

func copyTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

// keyCacheTTL bounds how long a key→user answer (or "no user": a service
// key) is reused. Keys move between users never; a user's key changes only
// with a new credential, whose connections carry the new key.
const keyCacheTTL = time.Minute

// userByKey returns the user of a public key, nil for a key that is no
// user's (mulchat's own services) or on a lookup error.
func (t *Tracker) userByKey(ctx context.Context, key string) *keyUser {
	if key == "" {
		return nil
	}
	now := t.now()
	t.mu.Lock()
	ku, ok := t.keys[key]
	t.mu.Unlock()
	if ok && now.Sub(ku.cached) < keyCacheTTL {
		if ku.id == 0 {
			return nil
		}
		return ku
	}
	u, err := t.store.UserByNATSPublicKey(ctx, key)
	switch {
	case err == nil:
		ku = &keyUser{id: u.ID, expiresAt: u.NATS.ExpiresAt, cached: now}
	case mulchat.ErrorCode(err) == mulchat.ENOTFOUND:
		ku = &keyUser{cached: now}
	default:
		t.log.Warn("looking up a session's user failed", "err", err)
		return nil
	}
	t.mu.Lock()
	if len(t.keys) > 100_000 {
		t.keys = map[string]*keyUser{}
	}
	t.keys[key] = ku
	t.mu.Unlock()
	if ku.id == 0 {
		return nil
	}
	return ku
}

// maxFieldBytes bounds user_agent and close_reason.
const maxFieldBytes = 256

// userAgent is what nats_auth_sessions.user_agent holds: the client's name,
// language and library version as it announced them, cleaned (see cleanText).
// The client chooses all three, so they are untrusted text.
func userAgent(name, lang, version string) string {
	name = cleanText(name, maxFieldBytes)
	lang = cleanText(lang, 64)
	version = cleanText(version, 64)
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
	return strings.TrimSpace(truncate(ua, maxFieldBytes))
}

// cleanText makes untrusted text storable and displayable: valid UTF-8, no
// NUL or other control characters (PostgreSQL text cannot hold NUL, and
// invalid UTF-8 is refused), at most max bytes cut on a character boundary.
func cleanText(s string, max int) string {
	if plainASCII(s, max) {
		return s // nothing to clean: the common case, without allocating
	}
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	return truncate(strings.TrimSpace(s), max)
}

// plainASCII reports whether s is printable ASCII of at most max bytes
// without leading or trailing spaces, which cleanText returns unchanged.
func plainASCII(s string, max int) bool {
	if len(s) > max || (s != "" && (s[0] == ' ' || s[len(s)-1] == ' ')) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// truncate cuts valid UTF-8 s to at most max bytes without splitting a
// character.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// jwtExpiry reads the expiry of a user JWT. The server verified the JWT
// before it let the connection in, so only the claims are decoded: checking
// the signature again cost an ed25519 verification per connection.
func jwtExpiry(token string) *time.Time {
	_, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil
	}
	payload, _, ok := strings.Cut(rest, ".")
	if !ok {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil
	}
	var claims struct {
		Expires int64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Expires <= 0 {
		return nil
	}
	e := time.Unix(claims.Expires, 0).UTC()
	return &e
}

// open writes an active session row for a live connection unless one
// exists (reconcile). ENOTFOUND means the key is no mulchat user's.
func (t *Tracker) open(ctx context.Context, s *mulchat.AuthSession) (created bool, err error) {
	ku := t.userByKey(ctx, s.PublicKey)
	if ku == nil {
		return false, mulchat.Errorf(mulchat.ENOTFOUND, "no user has this key")
	}
	s.UserID = ku.id
	if s.ExpiresAt == nil {
		s.ExpiresAt = ku.expiresAt
	}
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	err = t.store.InTx(ctx, func(q mulchat.Queries) error {
		bq, err := batchQueries(q)
		if err != nil {
			return err
		}
		n, _, err := t.openSessions(ctx, bq, []*mulchat.AuthSession{s}, nil)
		created = n == 1
		return err
	})
	return created, err
}

// lastClosed reports, inside the transaction that has just closed one of
// userID's sessions, whether that close left the user with no active
// session: the offline notice belongs to exactly that close. Every path that
// closes rows (disconnect events, kicks, reconcile) decides presence here,
// and only when its own CloseAuthSession changed a row, so whichever path
// closes a user's last session sends the one offline notice and the others
// (finding the row already closed) send none.
func (t *Tracker) lastClosed(ctx context.Context, q mulchat.SessionBatchQueries, userID int64) (bool, error) {
	if t.cfg.Presence == nil {
		return false, nil
	}
	online, err := q.HasActiveAuthSession(ctx, userID)
	return !online, err
}

// closeSession closes the active row of connection (serverID, cid), a
// session of userID, outside the writer (kicks, reconcile), and sends the
// offline notice when it was the user's last. It reports whether this call
// closed the row: ENOTFOUND (already closed, by the disconnect event say) is
// not an error and sends nothing.
func (t *Tracker) closeSession(ctx context.Context, userID int64, serverID string, cid uint64, at time.Time, reason string) (bool, error) {
	var closed, last bool
	t.writeMu.Lock()
	err := t.store.InTx(ctx, func(q mulchat.Queries) error {
		closed, last = false, false
		err := q.CloseAuthSession(ctx, serverID, cid, at, reason)
		if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
			return nil
		}
		if err != nil {
			return err
		}
		closed = true
		if userID != 0 {
			bq, err := batchQueries(q)
			if err != nil {
				return err
			}
			last, err = t.lastClosed(ctx, bq, userID)
			return err
		}
		return nil
	})
	// Before another transaction can start: the writer must not trust
	// its users online past this close.
	t.sessionsClosedElsewhere()
	t.writeMu.Unlock()
	if err != nil {
		return false, err
	}
	if last {
		if err := t.cfg.Presence.PresenceChanged(ctx, userID, false); err != nil {
			t.log.Warn("presence notice failed", "user_id", userID, "err", err)
		}
	}
	return closed, nil
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
