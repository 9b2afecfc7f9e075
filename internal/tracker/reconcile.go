package tracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
)

// connInfo is one entry of a CONNZ answer (nats-server monitor.go ConnInfo),
// the fields used here.
type connInfo struct {
	CID            uint64     `json:"cid"`
	IP             string     `json:"ip"`
	Start          time.Time  `json:"start"`
	LastActivity   time.Time  `json:"last_activity"`
	Name           string     `json:"name,omitempty"`
	Lang           string     `json:"lang,omitempty"`
	Version        string     `json:"version,omitempty"`
	AuthorizedUser string     `json:"authorized_user,omitempty"`
	Account        string     `json:"account,omitempty"`
	JWT            string     `json:"jwt,omitempty"`
	Stop           *time.Time `json:"stop,omitempty"`
}

type connzResponse struct {
	Server serverInfo `json:"server"`
	Data   *struct {
		Total       int         `json:"total"`
		Offset      int         `json:"offset"`
		Limit       int         `json:"limit"`
		Connections []*connInfo `json:"connections"`
	} `json:"data,omitempty"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error,omitempty"`
}

// liveConn is a connection some server reports as open.
type liveConn struct {
	serverID string
	info     *connInfo
}

const connzPage = 1024

// LiveConnections asks every server (SERVER.PING.CONNZ) for its open
// connections of the tracked account, following each server's pages.
func (t *Tracker) LiveConnections(ctx context.Context) (map[connKey]liveConn, error) {
	return t.liveConnections(ctx, "")
}

// liveConnections is LiveConnections, only of publicKey when it is not "" (the
// servers filter, so a kick does not list every connection).
func (t *Tracker) liveConnections(ctx context.Context, publicKey string) (map[connKey]liveConn, error) {
	live := map[connKey]liveConn{}
	opts := map[string]any{"auth": true, "limit": connzPage} // state defaults to open
	if publicKey != "" {
		opts["user"] = publicKey
	}
	if t.cfg.ChatAccount != "" {
		opts["acc"] = t.cfg.ChatAccount
	}
	answers, err := t.gather(ctx, "$SYS.REQ.SERVER.PING.CONNZ", opts, false)
	if err != nil {
		return nil, err
	}
	for _, a := range answers {
		for {
			if a.Error != nil {
				return nil, mulchat.Errorf(mulchat.EUNAVAILABLE, "server %s: connz: %s", a.Server.ID, a.Error.Description)
			}
			if a.Data == nil {
				break
			}
			for _, c := range a.Data.Connections {
				live[connKey{a.Server.ID, c.CID}] = liveConn{serverID: a.Server.ID, info: c}
			}
			next := a.Data.Offset + len(a.Data.Connections)
			if len(a.Data.Connections) == 0 || next >= a.Data.Total {
				break
			}
			opts["offset"] = next
			page, err := t.gather(ctx, "$SYS.REQ.SERVER."+a.Server.ID+".CONNZ", opts, true)
			if err != nil {
				return nil, err
			}
			if len(page) == 0 {
				break
			}
			a = page[0]
		}
		delete(opts, "offset")
	}
	return live, nil
}

// gather sends one request that every server answers and collects the
// answers until none has come for ServerWait (or, with one, the first).
func (t *Tracker) gather(ctx context.Context, subject string, req any, one bool) ([]*connzResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	inbox := t.nc.NewRespInbox()
	sub, err := t.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EUNAVAILABLE, err, "tracker: connz")
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := t.nc.PublishRequest(subject, inbox, body); err != nil {
		return nil, mulchat.WrapError(mulchat.EUNAVAILABLE, err, "tracker: connz")
	}
	var out []*connzResponse
	wait := 5 * time.Second // the first answer
	for {
		wctx, cancel := context.WithTimeout(ctx, wait)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			if len(out) > 0 && ctx.Err() == nil {
				return out, nil
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, mulchat.WrapError(mulchat.EUNAVAILABLE, err, "tracker: no NATS server answered "+subject)
			}
			return nil, mulchat.WrapError(mulchat.EUNAVAILABLE, err, "tracker: connz")
		}
		if m.Header.Get("Status") == "503" {
			return nil, mulchat.Errorf(mulchat.EUNAVAILABLE, "tracker: no NATS server answered %s", subject)
		}
		var r connzResponse
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "tracker: bad connz answer")
		}
		out = append(out, &r)
		if one {
			return out, nil
		}
		wait = t.cfg.ServerWait
	}
}

// Reconcile makes nats_auth_sessions agree with the live connections: an
// active row whose connection no server reports is closed, a live user
// connection without a row gets one, and live rows get their last activity.
// Rows created after the snapshot started are left alone: their connect event
// may have come after the servers answered.
//
// A row the store refuses is logged and skipped; the others are still written
// (one connection's odd data must not keep every other session wrong).
func (t *Tracker) Reconcile(ctx context.Context) error {
	started := t.now().UTC()
	live, err := t.LiveConnections(ctx)
	if err != nil {
		return err
	}
	return t.reconcileWith(ctx, started, live)
}

// reconcileWith is Reconcile with the live connections already gathered at
// started.
func (t *Tracker) reconcileWith(ctx context.Context, started time.Time, live map[connKey]liveConn) error {
	active, err := t.store.ListActiveAuthSessions(ctx)
	if err != nil {
		return err
	}
	have := map[connKey]bool{}
	var closed, opened, failed int
	for _, s := range active {
		k := connKey{s.ServerID, s.CID}
		if c, ok := live[k]; ok {
			have[k] = true
			// Last activity is kept to the minute: with thousands of
			// sessions, rewriting every row each round would cost more
			// than it tells.
			if c.info.LastActivity.Sub(s.LastActivity) >= time.Minute {
				_ = t.store.TouchAuthSession(ctx, s.ID, c.info.LastActivity.UTC())
			}
			continue
		}
		if !s.CreatedAt.Before(started) {
			continue
		}
		done, err := t.closeSession(ctx, s.UserID, s.ServerID, s.CID, started, ReasonReconciled)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			failed++
			t.log.Warn("reconcile: closing a session failed; skipped", "session_id", s.ID, "err", err)
			continue
		}
		if done {
			closed++
			t.m.closed.WithLabelValues("reconcile").Inc()
		}
	}
	for k, c := range live {
		if have[k] || c.info.AuthorizedUser == "" {
			continue
		}
		t.mu.Lock()
		_, gone := t.gone[k]
		t.mu.Unlock()
		if gone {
			continue
		}
		s := &mulchat.AuthSession{
			ClientID:     fmt.Sprintf("%s/%d", k.server, k.cid),
			IPAddress:    c.info.IP,
			UserAgent:    userAgent(c.info.Name, c.info.Lang, c.info.Version),
			PublicKey:    c.info.AuthorizedUser,
			ServerID:     k.server,
			CID:          k.cid,
			CreatedAt:    c.info.Start.UTC(),
			LastActivity: c.info.LastActivity.UTC(),
			ExpiresAt:    jwtExpiry(c.info.JWT),
		}
		created, err := t.open(ctx, s)
		if err != nil {
			if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
				continue // a service user
			}
			if ctx.Err() != nil {
				return err
			}
			failed++
			t.log.Warn("reconcile: recording a live connection failed; skipped", "client_id", s.ClientID, "err", err)
			continue
		}
		if created {
			opened++
			t.m.opened.Inc()
		}
	}
	t.log.Info("sessions reconciled", "live", len(live), "closed", closed, "opened", opened, "failed", failed)
	return nil
}

// kickResponse is a server's answer to $SYS.REQ.SERVER.<id>.KICK.
type kickResponse struct {
	Server serverInfo `json:"server"`
	Error  *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error,omitempty"`
}

// kick disconnects connection cid on server serverID. A connection that is
// already gone is not an error.
func (t *Tracker) kick(ctx context.Context, serverID string, cid uint64) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	body, _ := json.Marshal(map[string]uint64{"cid": cid})
	m, err := t.nc.RequestWithContext(ctx, "$SYS.REQ.SERVER."+serverID+".KICK", body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			// The server is gone, and its connections with it.
			return nil
		}
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "kick: NATS server did not answer")
	}
	var r kickResponse
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return mulchat.WrapError(mulchat.EINTERNAL, err, "kick: bad answer")
	}
	if r.Error != nil && !connectionGone(r.Error.Code, r.Error.Description) {
		return mulchat.Errorf(mulchat.EUNAVAILABLE, "kick: server %s: %s", serverID, r.Error.Description)
	}
	return nil
}

// connectionGone reports whether a KICK error says the connection no longer
// exists. nats-server answers that with status 500 and "no such client or
// leafnode id" (v2.10-v2.15), which happens whenever the connection closed
// between the lookup and the kick — for a revocation, typically because the
// server closed the revoked connection itself on the claims update.
func connectionGone(code int, description string) bool {
	return code == 404 || strings.Contains(description, "no such client")
}

// KickSession disconnects one active session of userID. It implements
// mulchat.SessionKicker.
func (t *Tracker) KickSession(ctx context.Context, userID, sessionID int64) error {
	s, err := t.store.AuthSessionByID(ctx, sessionID)
	if err != nil || s.UserID != userID || !s.Active {
		if err != nil && mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
			return err
		}
		return mulchat.Errorf(mulchat.ENOTFOUND, "session not found")
	}
	if err := t.kick(ctx, s.ServerID, s.CID); err != nil {
		return err
	}
	t.m.kicks.Inc()
	if _, err := t.closeSession(ctx, userID, s.ServerID, s.CID, t.now().UTC(), ReasonKicked); err != nil {
		return err
	}
	return nil
}

// KickUser disconnects every live connection authenticated with publicKey
// (the user's credential key), whatever the table says, and closes their
// rows. With publicKey "" it kicks the user's active sessions from the table.
// It implements mulchat.SessionKicker and serves as the authority's Kicker.
func (t *Tracker) KickUser(ctx context.Context, userID int64, publicKey string) error {
	var targets []connKey
	if publicKey != "" {
		live, err := t.liveConnections(ctx, publicKey)
		if err != nil {
			return err
		}
		for k, c := range live {
			if c.info.AuthorizedUser == publicKey {
				targets = append(targets, k)
			}
		}
	}
	active, err := t.store.ListUserAuthSessions(ctx, userID, true)
	if err != nil {
		return err
	}
	seen := map[connKey]bool{}
	for _, k := range targets {
		seen[k] = true
	}
	for _, s := range active {
		k := connKey{s.ServerID, s.CID}
		if (publicKey == "" || s.PublicKey == publicKey) && !seen[k] {
			targets = append(targets, k)
			seen[k] = true
		}
	}
	var errs []error
	now := t.now().UTC()
	for _, k := range targets {
		if err := t.kick(ctx, k.server, k.cid); err != nil {
			errs = append(errs, err)
			continue
		}
		t.m.kicks.Inc()
		if _, err := t.closeSession(ctx, userID, k.server, k.cid, now, ReasonKicked); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
