package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/nkeys"
)

type userView struct {
	ID                 int64     `json:"id"`
	Username           string    `json:"username"`
	Email              string    `json:"email,omitempty"`
	IsActive           bool      `json:"is_active"`
	MustRotatePassword bool      `json:"must_rotate_password,omitempty"`
	CreatedAt          time.Time `json:"created_at"`
	NATS               *natsView `json:"nats,omitempty"`
}

// natsView is the credential status shown by GET /me: no JWT, seed or seed
// hash, only what a client needs to decide whether to renew.
type natsView struct {
	Status    string     `json:"status"`
	PublicKey string     `json:"public_key,omitempty"`
	Account   string     `json:"account,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	ExpiredAt *time.Time `json:"expired_at,omitempty"`
}

func userJSON(u *mulchat.User) userView {
	return userView{ID: u.ID, Username: u.Username, Email: u.Email, IsActive: u.IsActive,
		MustRotatePassword: u.MustRotatePassword, CreatedAt: u.CreatedAt.UTC()}
}

func (s *Server) handleMe(w http.ResponseWriter, r *http.Request, sess *session) {
	u, err := s.userFresh(r.Context(), sess)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := userJSON(u)
	c := u.NATS
	v.NATS = &natsView{Status: c.Status(s.now()), PublicKey: c.PublicKey, Account: c.AccountPublicKey,
		ExpiresAt: utcPtr(c.ExpiresAt), ExpiredAt: utcPtr(c.ExpiredAt)}
	writeJSON(w, http.StatusOK, v)
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// ttlValue accepts a Go duration string ("12h", "90m") or a number of
// seconds.
type ttlValue time.Duration

func (t *ttlValue) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*t = 0
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return &fieldError{"ttl must be a duration string like \"24h\" or a number of seconds"}
		}
		d, err := time.ParseDuration(str)
		if err != nil || d <= 0 {
			return &fieldError{"ttl must be a positive duration like \"24h\" or a number of seconds"}
		}
		*t = ttlValue(d)
		return nil
	}
	secs, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || secs <= 0 || secs > int64((1<<62)/time.Second) {
		return &fieldError{"ttl must be a positive whole number of seconds or a duration string like \"24h\""}
	}
	*t = ttlValue(time.Duration(secs) * time.Second)
	return nil
}

type issueRequest struct {
	PublicKey string   `json:"public_key"`
	TTL       ttlValue `json:"ttl"`
}

type credentialResponse struct {
	JWT       string    `json:"jwt"`
	PublicKey string    `json:"public_key"`
	ExpiresAt time.Time `json:"expires_at"`
	NATSURLs  []string  `json:"nats_urls"`
	// Seed and Creds are present only when the server generated the key pair:
	// the one response that ever carries a seed.
	Seed  string `json:"seed,omitempty"`
	Creds string `json:"creds,omitempty"`
}

// decodeOptionalJSON decodes a body that may be empty (all fields optional).
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	return decodeOptionalBody(body, dst)
}

// decodeOptionalBody decodes body into dst; a blank body leaves dst as it is.
func decodeOptionalBody(body []byte, dst any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return decodeBody(body, dst)
}

func (s *Server) credentialJSON(c *Credential) credentialResponse {
	urls := s.cfg.NATSURLs()
	if urls == nil {
		urls = []string{}
	}
	resp := credentialResponse{JWT: c.JWT, PublicKey: c.PublicKey, ExpiresAt: c.ExpiresAt.UTC(), NATSURLs: urls}
	if len(c.Seed) > 0 {
		resp.Seed = string(c.Seed)
		resp.Creds = string(c.Creds)
	}
	return resp
}

func (s *Server) handleIssueCredential(w http.ResponseWriter, r *http.Request, sess *session) {
	var req issueRequest
	body, err := readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if key, ok := refreshBody(body); ok {
		req.PublicKey = key
	} else if err := decodeOptionalBody(body, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.PublicKey != "" && !nkeys.IsValidPublicUserKey(req.PublicKey) {
		s.writeError(w, r, mulchat.Errorf(mulchat.EINVALID, "public_key must be a NATS user public key (starting with U)"))
		return
	}
	if err := s.credLimiter.allow(sess.user.ID); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := s.cfg.Authority.IssueUserCredential(r.Context(), sess.user.ID, req.PublicKey, time.Duration(req.TTL))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.logger.Info("credential issued", slog.Int64("user_id", sess.user.ID), slog.String("public_key", c.PublicKey),
		slog.Bool("server_generated", len(c.Seed) > 0))
	s.credentialNotice(r.Context(), sess.user.ID, mulchat.CredentialIssued, &c.ExpiresAt)
	w.Header().Set("Cache-Control", "no-store")
	writeCredentialJSON(w, http.StatusCreated, s.credentialJSON(c))
}

// refreshBody recognises the body a client refreshing its own key's JWT
// sends, exactly {"public_key":"U…"} with a well-formed public key (56
// characters of base32), and returns the key; decodeBody would give the
// same request, at several times the cost. Any other body is for decodeBody.
func refreshBody(body []byte) (string, bool) {
	const prefix, suffix, keyLen = `{"public_key":"`, `"}`, 56
	if len(body) != len(prefix)+keyLen+len(suffix) || string(body[:len(prefix)]) != prefix ||
		string(body[len(prefix)+keyLen:]) != suffix {
		return "", false
	}
	key := body[len(prefix) : len(prefix)+keyLen]
	for _, c := range key {
		if (c < 'A' || c > 'Z') && (c < '2' || c > '7') {
			return "", false
		}
	}
	return string(key), true
}

// writeCredentialJSON writes v as writeJSON does. The answer to a refresh
// (no seed, NATS URLs listed) whose strings are plain printable ASCII that
// JSON needs no escape for (a JWT, a public key and NATS URLs are), with a
// time within the years encoding/json accepts, is written byte for byte the
// same by hand, without encoding/json's reflection; anything else, and
// every answer carrying a seed, goes through writeJSON.
func writeCredentialJSON(w http.ResponseWriter, status int, v credentialResponse) {
	plain := v.Seed == "" && v.Creds == "" && v.NATSURLs != nil && plainJSON(v.JWT) && plainJSON(v.PublicKey) &&
		v.ExpiresAt.Year() >= 0 && v.ExpiresAt.Year() <= 9999
	for _, u := range v.NATSURLs {
		plain = plain && plainJSON(u)
	}
	if !plain {
		writeJSON(w, status, v)
		return
	}
	b := make([]byte, 0, 256+len(v.JWT))
	b = append(b, `{"jwt":"`...)
	b = append(b, v.JWT...)
	b = append(b, `","public_key":"`...)
	b = append(b, v.PublicKey...)
	b = append(b, `","expires_at":"`...)
	b = v.ExpiresAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","nats_urls":[`...)
	for i, u := range v.NATSURLs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, u...)
		b = append(b, '"')
	}
	b = append(b, "]}\n"...)
	startJSON(w, status)
	_, _ = w.Write(b)
}

// plainJSON reports whether s is written in JSON as itself between quotes
// by encoding/json: printable ASCII other than ", \, <, > and &.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

type renewRequest struct {
	TTL ttlValue `json:"ttl"`
}

func (s *Server) handleRenewCredential(w http.ResponseWriter, r *http.Request, sess *session) {
	var req renewRequest
	if err := decodeOptionalJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.credLimiter.allow(sess.user.ID); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := s.cfg.Authority.RenewUserCredential(r.Context(), sess.user.ID, time.Duration(req.TTL))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.logger.Info("credential renewed", slog.Int64("user_id", sess.user.ID), slog.String("public_key", c.PublicKey))
	s.credentialNotice(r.Context(), sess.user.ID, mulchat.CredentialRenewed, &c.ExpiresAt)
	w.Header().Set("Cache-Control", "no-store")
	writeCredentialJSON(w, http.StatusOK, s.credentialJSON(c))
}

func (s *Server) handleRevokeCredential(w http.ResponseWriter, r *http.Request, sess *session) {
	if err := s.cfg.Authority.RevokeUserCredential(r.Context(), sess.user.ID); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.logger.Info("credential revoked", slog.Int64("user_id", sess.user.ID))
	s.credentialNotice(r.Context(), sess.user.ID, mulchat.CredentialRevokedN, nil)
	w.WriteHeader(http.StatusNoContent)
}

// credentialNotice tells the user's open pages about a committed credential
// change. Best effort: a failure is logged, the change stands.
func (s *Server) credentialNotice(ctx context.Context, userID int64, change string, expiresAt *time.Time) {
	if s.cfg.Credentials == nil {
		return
	}
	var exp *time.Time
	if expiresAt != nil {
		e := expiresAt.UTC()
		exp = &e
	}
	if err := s.cfg.Credentials.CredentialChanged(ctx, userID, change, exp); err != nil {
		s.logger.Warn("credential notice failed", slog.Int64("user_id", userID), slog.String("change", change), slog.Any("err", err))
	}
}

type sessionView struct {
	ID           int64      `json:"id"`
	ClientID     string     `json:"client_id"`
	IPAddress    string     `json:"ip_address,omitempty"`
	UserAgent    string     `json:"user_agent,omitempty"`
	PublicKey    string     `json:"public_key,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	LastActivity time.Time  `json:"last_activity"`
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	Active       bool       `json:"active"`
	ClosedAt     *time.Time `json:"closed_at,omitempty"`
	CloseReason  string     `json:"close_reason,omitempty"`
}

// handleListSessions lists the caller's NATS sessions: active ones, or all
// with ?all=true.
func (s *Server) handleListSessions(w http.ResponseWriter, r *http.Request, sess *session) {
	all := false
	switch v := r.URL.Query().Get("all"); v {
	case "", "false", "0":
	case "true", "1":
		all = true
	default:
		s.writeError(w, r, mulchat.Errorf(mulchat.EINVALID, "all must be true or false"))
		return
	}
	list, err := s.store.ListUserAuthSessions(r.Context(), sess.user.ID, !all)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]sessionView, 0, len(list))
	for _, a := range list {
		out = append(out, sessionView{ID: a.ID, ClientID: a.ClientID, IPAddress: a.IPAddress, UserAgent: a.UserAgent,
			PublicKey: a.PublicKey, CreatedAt: a.CreatedAt.UTC(), LastActivity: a.LastActivity.UTC(),
			ExpiresAt: utcPtr(a.ExpiresAt), Active: a.Active, ClosedAt: utcPtr(a.ClosedAt), CloseReason: a.CloseReason})
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": out})
}

func (s *Server) handleKickSession(w http.ResponseWriter, r *http.Request, sess *session) {
	id, err := pathID(r, "id")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.Sessions == nil {
		s.writeError(w, r, mulchat.Errorf(mulchat.ENOTIMPLEMENTED, "session kicking is not available on this server"))
		return
	}
	if err := s.cfg.Sessions.KickSession(r.Context(), sess.user.ID, id); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReadyz answers 200 when the database answers a ping and NATS is
// ready, 503 otherwise (the cause is logged, not shown).
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.logger.Warn("readiness: database ping failed", slog.Any("err", err))
		s.writeError(w, r, mulchat.Errorf(mulchat.EUNAVAILABLE, "database is not reachable"))
		return
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(ctx); err != nil {
			s.logger.Warn("readiness: NATS not ready", slog.Any("err", err))
			s.writeError(w, r, mulchat.Errorf(mulchat.EUNAVAILABLE, "NATS is not ready"))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
