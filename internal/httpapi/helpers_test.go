package httpapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/httpapi"
	"github.com/mulchat/mulchat/internal/sqlstore"
)

// env is a running API over a real store and a real authority.
type env struct {
	t         *testing.T
	db        *sqlstore.DB
	srv       *httptest.Server
	authority *authority.Authority
	masterKey []byte
	notified  *recorder
	notices   *credRecorder
}

// recorder records membership notifications. It stands in for the router,
// which runs only with NATS; the API's contract is only to call it after a
// committed change.
type recorder struct {
	mu      sync.Mutex
	changes []string
}

func (r *recorder) MembershipChanged(ctx context.Context, roomID, userID int64, change string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, change)
	return nil
}

// credRecorder records credential notices.
type credRecorder struct{ recorder }

func (r *credRecorder) CredentialChanged(ctx context.Context, userID int64, change string, expiresAt *time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, change)
	return nil
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.changes...)
}

type envOption func(*httpapi.Config)

func newEnv(t *testing.T, db *sqlstore.DB, opts ...envOption) *env {
	t.Helper()
	return newEnvWithLogger(t, db, nil, opts...)
}

func newEnvWithLogger(t testing.TB, db *sqlstore.DB, logger *slog.Logger, opts ...envOption) *env {
	t.Helper()
	key := make([]byte, authority.MasterKeySize)
	rand.Read(key)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a, err := authority.Open(context.Background(), authority.Config{Store: db, MasterKey: key, Logger: logger})
	if err != nil {
		t.Fatalf("authority.Open: %v", err)
	}
	rec := &recorder{}
	notices := &credRecorder{}
	cfg := httpapi.Config{
		Credentials: notices,
		Store:       db,
		Authority:   app.CredentialAuthority(a),
		Membership:  rec,
		NATSURLs:    func() []string { return []string{"nats://127.0.0.1:4999"} },
		Logger:      logger,
		LoginRate:   httpapi.LoginRate{PerUsername: 600, UserBurst: 1000, PerAddress: 600, AddrBurst: 1000, RegisterPerAddress: -1},
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := httpapi.New(cfg)
	if err != nil {
		t.Fatalf("httpapi.New: %v", err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	tt, _ := t.(*testing.T)
	return &env{t: tt, db: db, srv: srv, authority: a, masterKey: key, notified: rec, notices: notices}
}

// response is a decoded API answer.
type response struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r response) code() string {
	e, _ := r.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (r response) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

func (r response) list(key string) []any {
	l, _ := r.body[key].([]any)
	return l
}

// do sends body (a string is sent raw, anything else as JSON) with token.
func (e *env) do(t testing.TB, method, path, token string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: raw}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: %d, body is not a JSON object: %q", method, path, resp.StatusCode, raw)
		}
	}
	return r
}

// expect fails unless r has the status (and, for errors, a code).
func expect(t testing.TB, r response, status int, what string) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, r.status, status, r.raw)
	}
	if status >= 400 && r.code() == "" {
		t.Fatalf("%s: error without a code: %s", what, r.raw)
	}
	return r
}

const testPassword = "correct horse battery"

// register creates a user and returns its login token.
func (e *env) register(t testing.TB, username string) (token string, id int64) {
	t.Helper()
	r := expect(t, e.do(t, "POST", "/api/v1/users", "", map[string]any{"username": username, "password": testPassword}), 201, "register "+username)
	id = int64(r.body["id"].(float64))
	l := expect(t, e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": username, "password": testPassword}), 200, "login "+username)
	return l.str("token"), id
}

// counts returns the number of rows of the tables the API writes.
func counts(t testing.TB, db *sqlstore.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range []string{"users", "api_tokens", "nats_rooms", "nats_user_rooms", "nats_accounts"} {
		var n int
		if err := db.SQL().QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
		out[table] = n
	}
	return out
}

var _ = mulchat.EINVALID
