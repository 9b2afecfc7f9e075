package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/password"
)

// session is the authenticated caller of a request. When it came from the
// auth cache, user holds only the id (and is active as of the cache entry);
// handlers needing more read the user (userFresh).
type session struct {
	user      *mulchat.User
	token     *mulchat.APIToken
	tokenHash [32]byte
	fromCache bool
}

// authedHandler is a handler that runs only for an authenticated caller.
type authedHandler func(w http.ResponseWriter, r *http.Request, sess *session)

// authed checks the bearer token and passes the caller to h. Every failure is
// the same 401, so a client cannot tell a wrong token from an expired one.
func (s *Server) authed(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, err := s.authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mulchat"`)
			s.writeError(w, r, err)
			return
		}
		h(w, r, sess)
	}
}

func (s *Server) authenticate(r *http.Request) (*session, error) {
	unauthorized := mulchat.Errorf(mulchat.EUNAUTHORIZED, "missing, invalid or expired bearer token")
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, unauthorized
	}
	tok = strings.TrimSpace(tok)
	// A token is 32 bytes in unpadded base64url: 43 characters. Anything else
	// is rejected before touching the database.
	if len(tok) != 43 {
		return nil, unauthorized
	}
	if _, err := base64.RawURLEncoding.DecodeString(tok); err != nil {
		return nil, unauthorized
	}
	sum := sha256.Sum256([]byte(tok))
	now := s.now()
	if e, ok := s.authCache.get(sum, now); ok {
		return &session{
			user:      &mulchat.User{ID: e.userID, IsActive: true},
			token:     &mulchat.APIToken{ID: e.tokenID, UserID: e.userID, ExpiresAt: e.tokenExpires},
			tokenHash: sum,
			fromCache: true,
		}, nil
	}
	gen := s.authCache.generation()
	t, u, err := s.tokenWithUser(r.Context(), hex.EncodeToString(sum[:]))
	if err != nil {
		if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
			return nil, unauthorized
		}
		return nil, err
	}
	if t.RevokedAt != nil || !now.Before(t.ExpiresAt) || !u.IsActive {
		return nil, unauthorized
	}
	s.authCache.put(sum, t, now, gen)
	return &session{user: u, token: t, tokenHash: sum}, nil
}

// userFresh returns the caller's user row as the database holds it now.
func (s *Server) userFresh(ctx context.Context, sess *session) (*mulchat.User, error) {
	if !sess.fromCache {
		return sess.user, nil
	}
	u, err := s.store.UserByID(ctx, sess.user.ID)
	if err != nil {
		return nil, err
	}
	if !u.IsActive {
		return nil, mulchat.Errorf(mulchat.EUNAUTHORIZED, "missing, invalid or expired bearer token")
	}
	return u, nil
}

// tokenWithUser reads a token and its user, in one statement when the store
// can (every authenticated request pays for it).
func (s *Server) tokenWithUser(ctx context.Context, tokenHash string) (*mulchat.APIToken, *mulchat.User, error) {
	if r, ok := s.store.(mulchat.APITokenUserReader); ok {
		return r.APITokenWithUser(ctx, tokenHash)
	}
	t, err := s.store.APITokenByHash(ctx, tokenHash)
	if err != nil {
		return nil, nil, err
	}
	u, err := s.store.UserByID(ctx, t.UserID)
	if err != nil {
		return nil, nil, err
	}
	return t, u, nil
}

// newToken returns a fresh opaque token (32 random bytes, base64url) and the
// hex SHA-256 the database keeps.
func newToken() (token, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", mulchat.WrapError(mulchat.EINTERNAL, err, "reading random bytes")
	}
	token = base64.RawURLEncoding.EncodeToString(b[:])
	return token, hashToken(token), nil
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// clientAddr is the request's remote IP. Proxy headers are not trusted: behind
// a reverse proxy every client shares the proxy's address limit (docs/api.md).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type registerRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Email    string `json:"email"`
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req registerRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	for _, err := range []error{
		mulchat.ValidateUsername(req.Username),
		mulchat.ValidatePassword(req.Password),
		mulchat.ValidateEmail(req.Email),
	} {
		if err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if err := s.limiter.allowRegister(clientAddr(r)); err != nil {
		s.writeError(w, r, err)
		return
	}
	hash, err := password.Hash(req.Password)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	u := &mulchat.User{Username: req.Username, Email: req.Email, HashedPassword: hash, IsActive: true}
	if err := s.store.CreateUser(r.Context(), u); err != nil {
		if mulchat.ErrorCode(err) == mulchat.ECONFLICT {
			err = mulchat.Errorf(mulchat.ECONFLICT, "username or email is already taken")
		}
		s.writeError(w, r, err)
		return
	}
	s.logger.Info("user registered", slog.Int64("user_id", u.ID))
	writeJSON(w, http.StatusCreated, userJSON(u))
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type loginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	User      userView  `json:"user"`
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	// Legacy usernames may break today's rules, so only bound the input here.
	if req.Username == "" || len(req.Username) > 256 || !utf8.ValidString(req.Username) || len(req.Password) > mulchat.PasswordMaxLen {
		s.writeError(w, r, mulchat.Errorf(mulchat.EINVALID, "username and password are required, at most 256 and %d bytes", mulchat.PasswordMaxLen))
		return
	}
	if err := s.limiter.allow(req.Username, clientAddr(r)); err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	bad := mulchat.Errorf(mulchat.EUNAUTHORIZED, "invalid username or password")
	u, err := s.store.UserByUsername(ctx, req.Username)
	if err != nil {
		if mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
			s.writeError(w, r, err)
			return
		}
		// Spend the same time as a real check so response time does not
		// reveal which usernames exist.
		s.verifier.VerifyDummy(req.Password)
		s.writeError(w, r, bad)
		return
	}
	ok, err := password.Verify(u.HashedPassword, req.Password)
	if err != nil {
		// An unusable stored hash (a legacy row the migration did not fix)
		// fails the login; the hash itself is never logged.
		s.logger.Warn("stored password hash is unusable", slog.Int64("user_id", u.ID))
		s.verifier.VerifyDummy(req.Password)
	}
	if !ok {
		s.writeError(w, r, bad)
		return
	}
	if !u.IsActive {
		s.writeError(w, r, mulchat.Errorf(mulchat.EFORBIDDEN, "this account is disabled"))
		return
	}
	if password.NeedsRehash(u.HashedPassword) {
		if h, err := password.Hash(req.Password); err == nil {
			if err := s.store.UpdateUserPassword(ctx, u.ID, h); err != nil {
				s.logger.Warn("rehashing password failed", slog.Int64("user_id", u.ID), slog.String("code", mulchat.ErrorCode(err)))
			}
		}
	}
	token, hash, err := newToken()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	now := s.now().UTC()
	// The user agent is stored for the user's own session list: bounded,
	// valid UTF-8, no NUL (which PostgreSQL text cannot hold).
	ua := strings.ToValidUTF8(strings.ReplaceAll(r.UserAgent(), "\x00", ""), "")
	if len(ua) > 256 {
		ua = strings.ToValidUTF8(ua[:256], "")
	}
	t := &mulchat.APIToken{UserID: u.ID, TokenHash: hash, CreatedAt: now, ExpiresAt: now.Add(s.cfg.TokenTTL), UserAgent: ua, IPAddress: clientAddr(r)}
	if err := s.store.CreateAPIToken(ctx, t); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.logger.Info("user logged in", slog.Int64("user_id", u.ID), slog.Int64("token_id", t.ID))
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, loginResponse{Token: token, ExpiresAt: t.ExpiresAt, User: userJSON(u)})
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request, sess *session) {
	err := s.store.RevokeAPIToken(r.Context(), sess.token.ID, s.now().UTC())
	// Forgotten after the revocation is committed, so no request of this
	// instance is served from the cache with the token from now on.
	s.authCache.forget(sess.tokenHash)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, mulchat.Errorf(mulchat.ENOTFOUND, "no such endpoint"))
}
