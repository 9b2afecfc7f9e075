package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mulchat/mulchat"
)

// User is a user as the HTTP API shows it.
type User struct {
	ID        int64     `json:"id"`
	Username  string    `json:"username"`
	Email     string    `json:"email,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// NATS is the status of the user's credential (GET /me only).
	NATS *CredentialStatus `json:"nats,omitempty"`
}

// CredentialStatus is the credential part of GET /me; it holds no secret.
type CredentialStatus struct {
	Status    string     `json:"status"` // mulchat.Credential*
	PublicKey string     `json:"public_key,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Room is a room as the HTTP API shows it.
type Room struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	IsPublic    bool      `json:"is_public"`
	CreatedAt   time.Time `json:"created_at"`
	// Role is the user's role in the room, "" when not a member.
	Role string `json:"role,omitempty"`
}

// Member is one member of a room.
type Member struct {
	UserID   int64     `json:"user_id"`
	Username string    `json:"username"`
	Role     string    `json:"role"`
	JoinedAt time.Time `json:"joined_at"`
}

// Credential is the NATS credential the server issued for the client's own
// key. The JWT is not secret by itself (it is useless without the seed, which
// never leaves the client), but it is still never logged.
type Credential struct {
	JWT       string    `json:"jwt"`
	PublicKey string    `json:"public_key"`
	ExpiresAt time.Time `json:"expires_at"`
	NATSURLs  []string  `json:"nats_urls"`
}

// maxResponseBytes bounds what the client reads from the server; history
// pages and room lists are far smaller.
const maxResponseBytes = 8 << 20

// apiError is the body of every error response of the HTTP API and of every
// error reply on NATS.
type apiError struct {
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// err converts the wire error into a *mulchat.Error, or returns nil.
func (e apiError) err() error {
	if e.Error == nil {
		return nil
	}
	code := e.Error.Code
	if code == "" {
		code = mulchat.EINTERNAL
	}
	msg := e.Error.Message
	if msg == "" {
		msg = code
	}
	return mulchat.Errorf(code, "%s", msg)
}

// statusCode maps an HTTP status without a usable error body to a code.
func statusCode(status int) string {
	switch {
	case status == http.StatusBadRequest, status == http.StatusUnprocessableEntity:
		return mulchat.EINVALID
	case status == http.StatusUnauthorized:
		return mulchat.EUNAUTHORIZED
	case status == http.StatusForbidden:
		return mulchat.EFORBIDDEN
	case status == http.StatusNotFound:
		return mulchat.ENOTFOUND
	case status == http.StatusConflict:
		return mulchat.ECONFLICT
	case status == http.StatusRequestEntityTooLarge:
		return mulchat.ETOOLARGE
	case status == http.StatusTooManyRequests:
		return mulchat.ERATELIMITED
	case status == http.StatusNotImplemented:
		return mulchat.ENOTIMPLEMENTED
	case status == http.StatusServiceUnavailable, status == http.StatusBadGateway, status == http.StatusGatewayTimeout:
		return mulchat.EUNAVAILABLE
	default:
		return mulchat.EINTERNAL
	}
}

// do sends one API request. in (if not nil) is sent as JSON; out (if not nil)
// receives the JSON response. The bearer token is sent when the client holds
// one. Errors are *mulchat.Error values whose messages never contain the
// request body or the token.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return mulchat.WrapError(mulchat.EINTERNAL, err, "encoding request")
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.apiBase+path, body)
	if err != nil {
		return mulchat.WrapError(mulchat.EINVALID, err, "building request")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent())
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok := c.apiToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return mulchat.WrapError(mulchat.EUNAVAILABLE, ctx.Err(), method+" "+path+": cancelled")
		}
		// The url.Error names the URL, which holds no secret; the token is
		// in a header and the password in the body, neither of which it shows.
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "cannot reach the mulchat server at "+c.serverURL)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, method+" "+path+": reading response")
	}
	if len(data) > maxResponseBytes {
		return mulchat.Errorf(mulchat.ETOOLARGE, "%s %s: response larger than %d bytes", method, path, maxResponseBytes)
	}
	if resp.StatusCode >= 300 {
		var ae apiError
		if json.Unmarshal(data, &ae) == nil && ae.Error != nil {
			return ae.err()
		}
		return mulchat.Errorf(statusCode(resp.StatusCode), "%s %s: server answered %s", method, path, resp.Status)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return mulchat.WrapError(mulchat.EINTERNAL, err, method+" "+path+": server sent an unreadable response")
	}
	return nil
}

// normalizeServerURL checks the API server URL and returns it without a
// trailing slash.
func normalizeServerURL(s string) (string, error) {
	if s == "" {
		return "", mulchat.Errorf(mulchat.EINVALID, "a server URL is required (http://HOST:PORT)")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", mulchat.Errorf(mulchat.EINVALID, "server URL %q must look like http://HOST:PORT", s)
	}
	if u.User != nil {
		return "", mulchat.Errorf(mulchat.EINVALID, "server URL must not contain a user or password")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// Register creates a user account. It does not log in.
func (c *Client) Register(ctx context.Context, username, password, email string) (*User, error) {
	in := struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Email    string `json:"email,omitempty"`
	}{username, password, email}
	var u User
	if err := c.do(ctx, http.MethodPost, "/users", in, &u); err != nil {
		return nil, fmt.Errorf("register %s: %w", username, err)
	}
	return &u, nil
}

// Login obtains a bearer token for the API. The client keeps the password in
// memory (never on disk, never in a log) so that it can log in again when the
// token expires during a long session and the JWT must be renewed.
func (c *Client) Login(ctx context.Context, username, password string) error {
	in := struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}{username, password}
	var out struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
		User      User      `json:"user"`
	}
	if err := c.do(ctx, http.MethodPost, "/login", in, &out); err != nil {
		return fmt.Errorf("log in as %s: %w", username, err)
	}
	if out.Token == "" || out.User.ID == 0 {
		return mulchat.Errorf(mulchat.EINTERNAL, "log in as %s: the server's answer holds no token or user", username)
	}
	c.mu.Lock()
	c.token = out.Token
	c.tokenExpiresAt = out.ExpiresAt
	c.user = out.User
	c.password = password
	c.mu.Unlock()
	c.log.Debug("logged in", "user", out.User.Username, "user_id", out.User.ID, "token_expires_at", out.ExpiresAt)
	return nil
}

// relogin logs in again with the password kept by Login.
func (c *Client) relogin(ctx context.Context) error {
	c.mu.Lock()
	name, pw := c.user.Username, c.password
	c.mu.Unlock()
	if pw == "" {
		return mulchat.Errorf(mulchat.EUNAUTHORIZED, "the API token expired and no password is kept to log in again")
	}
	return c.Login(ctx, name, pw)
}

// Logout revokes the bearer token. The NATS connection is not affected.
func (c *Client) Logout(ctx context.Context) error {
	if err := c.do(ctx, http.MethodPost, "/logout", nil, nil); err != nil {
		return fmt.Errorf("log out: %w", err)
	}
	c.mu.Lock()
	c.token = ""
	c.password = ""
	c.mu.Unlock()
	return nil
}

// Me returns the logged-in user with the status of the NATS credential.
func (c *Client) Me(ctx context.Context) (*User, error) {
	var u User
	if err := c.do(ctx, http.MethodGet, "/me", nil, &u); err != nil {
		return nil, fmt.Errorf("get /me: %w", err)
	}
	return &u, nil
}

// ServerGeneratedCreds asks the server to generate a key pair and returns the
// standard .creds file (JWT and seed) it answers with, once: the legacy flow,
// for tools such as the nats CLI. It replaces (and so revokes) the user's
// current credential, including one this client obtained for its own key.
// The caller must write the file 0600 and never log it.
func (c *Client) ServerGeneratedCreds(ctx context.Context) ([]byte, error) {
	var out struct {
		Creds string `json:"creds"`
	}
	if err := c.do(ctx, http.MethodPost, "/me/credentials", struct{}{}, &out); err != nil {
		return nil, fmt.Errorf("obtain a .creds file: %w", err)
	}
	if out.Creds == "" {
		return nil, mulchat.Errorf(mulchat.EINTERNAL, "the server's answer holds no .creds file")
	}
	return []byte(out.Creds), nil
}

// RevokeCredential revokes the user's NATS credential: NATS closes the live
// connections of the key, and this client closes itself when it notices.
func (c *Client) RevokeCredential(ctx context.Context) error {
	if err := c.do(ctx, http.MethodDelete, "/me/credentials", nil, nil); err != nil {
		return fmt.Errorf("revoke the NATS credential: %w", err)
	}
	return nil
}

// Rooms lists the rooms the user can see: public rooms and the user's own.
func (c *Client) Rooms(ctx context.Context) ([]Room, error) {
	var out struct {
		Rooms []Room `json:"rooms"`
	}
	if err := c.do(ctx, http.MethodGet, "/rooms", nil, &out); err != nil {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	return out.Rooms, nil
}

// RoomByName finds a visible room by name; ENOTFOUND if there is none.
func (c *Client) RoomByName(ctx context.Context, name string) (*Room, error) {
	rooms, err := c.Rooms(ctx)
	if err != nil {
		return nil, err
	}
	for i := range rooms {
		if rooms[i].Name == name {
			return &rooms[i], nil
		}
	}
	return nil, mulchat.Errorf(mulchat.ENOTFOUND, "no room named %q is visible to you", name)
}

// CreateRoom creates a room owned by the user.
func (c *Client) CreateRoom(ctx context.Context, name, description string, public bool) (*Room, error) {
	in := struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
		IsPublic    bool   `json:"is_public"`
	}{name, description, public}
	var r Room
	if err := c.do(ctx, http.MethodPost, "/rooms", in, &r); err != nil {
		return nil, fmt.Errorf("create room %s: %w", name, err)
	}
	c.Track(r.ID, 0)
	return &r, nil
}

// JoinRoom joins a public room. Joining a room one is already a member of
// succeeds.
func (c *Client) JoinRoom(ctx context.Context, roomID int64) error {
	err := c.do(ctx, http.MethodPost, "/rooms/"+strconv.FormatInt(roomID, 10)+"/join", struct{}{}, nil)
	if err != nil && mulchat.ErrorCode(err) != mulchat.ECONFLICT {
		return fmt.Errorf("join room %d: %w", roomID, err)
	}
	c.Track(roomID, 0)
	return nil
}

// LeaveRoom leaves a room.
func (c *Client) LeaveRoom(ctx context.Context, roomID int64) error {
	if err := c.do(ctx, http.MethodPost, "/rooms/"+strconv.FormatInt(roomID, 10)+"/leave", struct{}{}, nil); err != nil {
		return fmt.Errorf("leave room %d: %w", roomID, err)
	}
	c.Untrack(roomID)
	return nil
}

// DeleteRoom deletes a room (owner only).
func (c *Client) DeleteRoom(ctx context.Context, roomID int64) error {
	if err := c.do(ctx, http.MethodDelete, "/rooms/"+strconv.FormatInt(roomID, 10), nil, nil); err != nil {
		return fmt.Errorf("delete room %d: %w", roomID, err)
	}
	c.Untrack(roomID)
	return nil
}

// AddMember adds a user to a room by username (owner only).
func (c *Client) AddMember(ctx context.Context, roomID int64, username string) error {
	in := struct {
		Username string `json:"username"`
	}{username}
	if err := c.do(ctx, http.MethodPost, "/rooms/"+strconv.FormatInt(roomID, 10)+"/members", in, nil); err != nil {
		return fmt.Errorf("add %s to room %d: %w", username, roomID, err)
	}
	return nil
}

// Members lists the members of a room.
func (c *Client) Members(ctx context.Context, roomID int64) ([]Member, error) {
	var out struct {
		Members []Member `json:"members"`
	}
	if err := c.do(ctx, http.MethodGet, "/rooms/"+strconv.FormatInt(roomID, 10)+"/members", nil, &out); err != nil {
		return nil, fmt.Errorf("list members of room %d: %w", roomID, err)
	}
	return out.Members, nil
}

// historyHTTP pages history over the HTTP API (used before Connect).
func (c *Client) historyHTTP(ctx context.Context, roomID int64, before uint64, limit int) ([]mulchat.Message, error) {
	q := url.Values{}
	if before > 0 {
		q.Set("before", strconv.FormatUint(before, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/rooms/" + strconv.FormatInt(roomID, 10) + "/messages"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Messages []mulchat.Message `json:"messages"`
	}
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, fmt.Errorf("history of room %d: %w", roomID, err)
	}
	return out.Messages, nil
}

// isCode reports whether err carries the code.
func isCode(err error, code string) bool {
	var e *mulchat.Error
	return errors.As(err, &e) && e.Code == code
}
