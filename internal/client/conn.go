package client

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
)

// Event is something that happened to the user other than a message:
// membership changes, presence, credential notices (see mulchat.Event*).
// Raw keeps the whole payload, for kinds this client does not know.
type Event struct {
	mulchat.Event
	Raw json.RawMessage `json:"-"`
}

// Backoff of the NATS reconnect loop: doubling from reconnectMin to
// reconnectMax, plus up to 50 % jitter so that many clients cut off at once
// do not return at once.
const (
	reconnectMin = 250 * time.Millisecond
	reconnectMax = 10 * time.Second
	// Pending limits of the delivery subscription; exceeding them drops
	// messages (a slow consumer), which the next gap fill repairs.
	pendingMsgs  = 1 << 16
	pendingBytes = 64 << 20
	// authCheckEvery rate-limits the GET /me done after NATS refuses the
	// credential while reconnecting.
	authCheckEvery = 3 * time.Second
)

func reconnectDelay(attempts int) time.Duration {
	d := reconnectMin
	for i := 1; i < attempts && d < reconnectMax; i++ {
		d *= 2
	}
	d = min(d, reconnectMax)
	return d + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Connect connects to NATS with the user's own key and JWT (obtaining one
// first if needed), subscribes to the user's deliveries, and starts the
// background renewal. The connection then reconnects by itself, forever,
// with backoff, presenting the newest JWT each time; after every reconnect
// the messages missed meanwhile are fetched from history. Connect fails if
// the first connection cannot be made.
func (c *Client) Connect(ctx context.Context) error {
	if c.UserID() == 0 {
		return mulchat.Errorf(mulchat.EUNAUTHORIZED, "log in before connecting")
	}
	if c.credential().JWT == "" {
		if _, err := c.EnsureCredential(ctx); err != nil {
			return err
		}
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return mulchat.Errorf(mulchat.EINVALID, "the client is closed")
	case c.nc != nil || c.connecting:
		c.mu.Unlock()
		return mulchat.Errorf(mulchat.ECONFLICT, "already connected")
	}
	c.connecting = true
	defer func() {
		c.mu.Lock()
		c.connecting = false
		c.mu.Unlock()
	}()
	uid := c.user.ID
	c.mu.Unlock()
	urls := c.natsURLs()
	if len(urls) == 0 {
		return mulchat.Errorf(mulchat.EUNAVAILABLE, "the server named no NATS URL to connect to")
	}
	nc, sub, err := c.dial(uid, urls)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		nc.Close()
		return mulchat.Errorf(mulchat.EINVALID, "the client is closed")
	}
	c.nc, c.sub = nc, sub
	c.wg.Add(1)
	c.mu.Unlock()
	go c.renewLoop(c.bg)
	c.log.Debug("connected to NATS", "url", nc.ConnectedUrlRedacted(), "user_id", uid)
	c.status(Status{State: StateConnected})
	return nil
}

// natsURLs are the URLs to connect to: Config.NATSURLs, else those the
// server handed out with the credential.
func (c *Client) natsURLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	urls := c.cfg.NATSURLs
	if len(urls) == 0 {
		urls = c.cred.NATSURLs
	}
	return pickURLs(urls)
}

// current reports whether nc is the client's connection (or the one being
// made by Connect). Handlers of a connection the client replaced ignore its
// events.
func (c *Client) current(nc *nats.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nc == nil || c.nc == nc
}

// dial makes a connection with the user's key and newest JWT, subscribed to
// the user's deliveries.
func (c *Client) dial(uid int64, urls []string) (*nats.Conn, *nats.Subscription, error) {
	opts := []nats.Option{
		nats.Name(c.cfg.Name),
		nats.UserJWT(c.currentJWT, c.sign),
		nats.CustomInboxPrefix(mulchat.UserInboxPrefix(uid)),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			if attempts >= refreshAfterRounds {
				c.refreshURLsSoon()
			}
			return reconnectDelay(attempts)
		}),
		// A refused credential is usually an expired or just-renewed JWT;
		// the renewal loop repairs it, so keep trying instead of giving up
		// after two refusals. A revoked or replaced credential closes the
		// client (onConnError → checkCredential).
		nats.IgnoreAuthErrorAbort(),
		nats.Timeout(5 * time.Second),
		nats.PingInterval(20 * time.Second),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			c.mu.Lock()
			byUs := c.connClosed
			c.mu.Unlock()
			if byUs || !c.current(nc) {
				return
			}
			c.log.Debug("NATS disconnected", "error", err)
			c.status(Status{State: StateDisconnected, Err: natsError(err)})
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			if !c.current(nc) {
				return
			}
			c.log.Debug("NATS reconnected", "url", nc.ConnectedUrlRedacted())
			c.status(Status{State: StateReconnected})
			c.startGapFill(nc)
		}),
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
			if c.current(nc) {
				c.onConnError(err)
			}
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			c.mu.Lock()
			byUs := c.connClosed
			c.mu.Unlock()
			if !byUs && c.current(nc) {
				c.status(Status{State: StateClosed, Err: natsError(nc.LastError())})
			}
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			if !c.current(nc) {
				return
			}
			c.onConnError(err)
			if errors.Is(err, nats.ErrSlowConsumer) {
				c.log.Warn("deliveries arrive faster than they are handled; refilling from history")
				c.dl.invalidate()
				c.startGapFill(nc)
			}
		}),
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		return nil, nil, natsError(err)
	}
	sub, err := nc.Subscribe(mulchat.UserSubject(uid, ">"), c.onDelivery)
	if err == nil {
		err = sub.SetPendingLimits(pendingMsgs, pendingBytes)
	}
	if err == nil {
		err = nc.Flush()
	}
	if err == nil {
		err = nc.LastError()
	}
	if err != nil {
		nc.Close()
		return nil, nil, natsError(err)
	}
	return nc, sub, nil
}

// refreshAfterRounds is how many failed rounds over every known server pass
// before the client asks the API whether NATS moved (about 4 s of backoff).
const refreshAfterRounds = 4

// refreshURLsSoon starts refreshURLs unless one ran in the last refreshEvery.
func (c *Client) refreshURLsSoon() {
	c.mu.Lock()
	if c.closed || c.refreshing || time.Since(c.lastRefresh) < refreshEvery {
		c.mu.Unlock()
		return
	}
	c.refreshing = true
	c.lastRefresh = time.Now()
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		c.refreshURLs()
		c.mu.Lock()
		c.refreshing = false
		c.mu.Unlock()
	}()
}

const refreshEvery = 30 * time.Second

// refreshURLs handles a NATS that cannot be reached for a while: the server
// may have moved it (a restart on another port, a new cluster). A renewal
// returns the current nats_urls; if none of them is among the connection's
// servers, the client connects to the new ones and replaces its connection,
// then fills the gap from history.
func (c *Client) refreshURLs() {
	if len(c.cfg.NATSURLs) > 0 {
		return // the caller fixed the URLs
	}
	ctx, cancel := context.WithTimeout(c.bg, 15*time.Second)
	defer cancel()
	if _, err := c.RenewCredential(ctx); err != nil {
		c.log.Debug("cannot ask the server for its NATS URLs", "error", mulchat.ErrorMessageForCLI(err))
		return
	}
	old := c.conn()
	if old == nil || old.IsConnected() {
		return
	}
	known := map[string]bool{}
	for _, u := range old.Servers() {
		known[strings.ToLower(strings.TrimRight(u, "/"))] = true
	}
	urls := c.natsURLs()
	for _, u := range urls {
		if known[strings.ToLower(strings.TrimRight(u, "/"))] {
			return // still the same servers: keep retrying them
		}
	}
	c.log.Warn("the server hands out new NATS URLs; reconnecting to them", "urls", urls)
	nc, sub, err := c.dial(c.UserID(), urls)
	if err != nil {
		c.log.Warn("connecting to the new NATS URLs failed", "error", mulchat.ErrorMessageForCLI(err))
		return
	}
	c.mu.Lock()
	if c.closed || c.nc != old {
		c.mu.Unlock()
		nc.Close()
		return
	}
	c.nc, c.sub = nc, sub
	c.mu.Unlock()
	old.Close()
	c.status(Status{State: StateReconnected})
	c.dl.invalidate()
	c.startGapFill(nc)
}

// pickURLs keeps the plain NATS URLs (nats://, tls://) of a list that may
// also name WebSocket ones (for the web page): nats.go refuses to mix them,
// and TCP is the cheaper transport. A list of only WebSocket URLs is kept.
func pickURLs(urls []string) []string {
	var tcp, ws []string
	for _, u := range urls {
		switch lu := strings.ToLower(strings.TrimSpace(u)); {
		case lu == "":
		case strings.HasPrefix(lu, "ws://"), strings.HasPrefix(lu, "wss://"):
			ws = append(ws, strings.TrimSpace(u))
		default:
			tcp = append(tcp, strings.TrimSpace(u))
		}
	}
	if len(tcp) > 0 {
		return tcp
	}
	return ws
}

// conn returns the NATS connection, nil before Connect.
func (c *Client) conn() *nats.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nc
}

// Conn returns the underlying NATS connection (nil before Connect), for
// callers that need plain NATS (tests, benchmarks). Closing it closes the
// client's connection for good.
func (c *Client) Conn() *nats.Conn { return c.conn() }

// natsError converts a NATS client error into a coded error with a message
// safe to show.
func natsError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, nats.ErrAuthRevoked):
		return mulchat.WrapError(mulchat.EUNAUTHORIZED, err, "NATS says the credential was revoked")
	case errors.Is(err, nats.ErrAuthExpired):
		return mulchat.WrapError(mulchat.EUNAUTHORIZED, err, "NATS says the credential expired")
	case errors.Is(err, nats.ErrAuthorization):
		return mulchat.WrapError(mulchat.EUNAUTHORIZED, err, "NATS refused the credential")
	case errors.Is(err, nats.ErrPermissionViolation):
		return mulchat.WrapError(mulchat.EFORBIDDEN, err, "NATS denied the operation")
	case errors.Is(err, nats.ErrNoResponders):
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "no mulchat router is answering")
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "the request timed out")
	case errors.Is(err, nats.ErrConnectionClosed):
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "the NATS connection is closed")
	case errors.Is(err, nats.ErrNoServers):
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "no NATS server is reachable")
	default:
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "NATS connection problem")
	}
}

// onConnError reacts to asynchronous NATS errors: it remembers denied
// publish subjects and repairs or reports refused credentials.
func (c *Client) onConnError(err error) {
	switch {
	case errors.Is(err, nats.ErrPermissionViolation):
		// "nats: permissions violation: Permissions Violation for Publish to "chat.send.1.2""
		msg := err.Error()
		if strings.Contains(msg, "Publish") {
			if i := strings.IndexByte(msg, '"'); i >= 0 {
				if j := strings.IndexByte(msg[i+1:], '"'); j >= 0 {
					c.mu.Lock()
					c.permDenied[msg[i+1:i+1+j]] = time.Now()
					c.mu.Unlock()
				}
			}
		}
		c.log.Debug("NATS permission violation", "error", err)
	case errors.Is(err, nats.ErrAuthExpired):
		c.requestRenew()
	case errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAuthorization):
		c.mu.Lock()
		due := time.Since(c.lastAuthCheck) >= authCheckEvery
		if due {
			c.lastAuthCheck = time.Now()
		}
		c.mu.Unlock()
		if due {
			go c.checkCredential()
		}
	default:
		c.log.Debug("NATS error", "error", err)
	}
}

// checkCredential asks the API what became of the credential after NATS
// refused it: a revoked credential closes the client (it must not hammer
// the server forever), an expired one is renewed.
func (c *Client) checkCredential() {
	ctx, cancel := context.WithTimeout(c.bg, 10*time.Second)
	defer cancel()
	me, err := c.Me(ctx)
	if isCode(err, mulchat.EUNAUTHORIZED) {
		if c.relogin(ctx) == nil {
			me, err = c.Me(ctx)
		}
	}
	if err != nil || me.NATS == nil {
		c.log.Debug("cannot check the credential after NATS refused it", "error", err)
		return
	}
	switch me.NATS.Status {
	case mulchat.CredentialRevoked:
		c.log.Warn("the NATS credential was revoked; closing")
		c.status(Status{State: StateClosed, Err: mulchat.Errorf(mulchat.EUNAUTHORIZED, "your NATS credential was revoked")})
		c.closeConn()
	case mulchat.CredentialExpired:
		c.requestRenew()
	case mulchat.CredentialActive:
		if me.NATS.PublicKey != "" && me.NATS.PublicKey != c.PublicKey() {
			// Another client of the same user took over the credential
			// with its own key; this one has to get its own again.
			c.log.Warn("the user's credential now belongs to another key; closing")
			c.status(Status{State: StateClosed, Err: mulchat.Errorf(mulchat.EUNAUTHORIZED, "the credential was replaced by another client of yours")})
			c.closeConn()
		}
	}
}

// onDelivery handles everything published to chat.user.<uid>.>.
func (c *Client) onDelivery(m *nats.Msg) {
	kind := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	switch kind {
	case "msg":
		var msg mulchat.Message
		if err := json.Unmarshal(m.Data, &msg); err != nil || msg.RoomID == 0 || msg.Seq == 0 {
			c.log.Warn("dropping an unreadable delivery", "subject", m.Subject, "bytes", len(m.Data))
			return
		}
		if c.dl.offer(msg, reconnectCount(c.conn())) {
			c.startGapFill(c.conn())
		}
	case "event":
		ev := Event{Raw: json.RawMessage(append([]byte(nil), m.Data...))}
		if err := json.Unmarshal(m.Data, &ev.Event); err != nil {
			c.log.Warn("dropping an unreadable event", "subject", m.Subject, "bytes", len(m.Data))
			return
		}
		if ev.Type == mulchat.EventMembership && ev.RoomID != 0 && ev.UserID == c.UserID() {
			switch ev.Change {
			case mulchat.MembershipJoined:
				c.Track(ev.RoomID, 0)
			case mulchat.MembershipLeft, mulchat.MembershipRemoved, mulchat.MembershipDeleted:
				c.Untrack(ev.RoomID)
			}
		}
		if c.cfg.OnEvent != nil {
			c.cfg.OnEvent(ev)
		}
	default:
		c.log.Debug("ignoring a delivery of unknown kind", "subject", m.Subject)
	}
}

// reconnectCount is the number of reconnects of the connection. nats.go
// increments it before resending subscriptions, so a message received after
// a reconnect always sees the new count.
func reconnectCount(nc *nats.Conn) uint64 {
	if nc == nil { // a delivery racing Connect's bookkeeping
		return 0
	}
	return nc.Stats().Reconnects
}
