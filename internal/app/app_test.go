package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

func post(t *testing.T, url, token string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(b))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// request sends a request without a body, with the bearer token, and returns
// the response; the caller closes its body.
func request(t *testing.T, method, url, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestStartServeClose starts a whole server on free ports, on SQLite and on
// PostgreSQL, registers a user over HTTP, gets a credential for a key the
// client holds, connects to the embedded NATS server with it, and closes.
func TestStartServeClose(t *testing.T) {
	for _, dbName := range []string{"sqlite", "postgres"} {
		t.Run(dbName, func(t *testing.T) {
			cfg := app.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1, NATSWSPort: -1}
			if dbName == "postgres" {
				cfg.DatabaseURL = sqltest.NewPostgresDatabaseURL(t)
			}
			ctx := context.Background()
			m, err := app.Start(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			base := m.HTTPURL()
			resp, err := http.Get(base + "/readyz")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("readyz: %v %v", resp, err)
			}
			resp.Body.Close()
			if st, _ := post(t, base+"/api/v1/users", "", map[string]any{"username": "alice", "password": "correct horse battery"}); st != 201 {
				t.Fatalf("register: %d", st)
			}
			_, login := post(t, base+"/api/v1/login", "", map[string]any{"username": "alice", "password": "correct horse battery"})
			token, _ := login["token"].(string)
			kp, _ := nkeys.CreateUser()
			pub, _ := kp.PublicKey()
			st, cred := post(t, base+"/api/v1/me/credentials", token, map[string]any{"public_key": pub})
			if st != 201 {
				t.Fatalf("issue: %d %v", st, cred)
			}
			urls, _ := cred["nats_urls"].([]any)
			if len(urls) != 2 || !strings.HasPrefix(urls[0].(string), "nats://") || !strings.HasPrefix(urls[1].(string), "ws://") {
				t.Fatalf("nats_urls %v", urls)
			}
			nc, err := nats.Connect(urls[0].(string), nats.UserJWT(
				func() (string, error) { return cred["jwt"].(string), nil },
				func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) }), nats.NoReconnect())
			if err != nil {
				t.Fatalf("connecting with the issued JWT: %v", err)
			}
			nc.Close()

			// History is served by the router.
			st, room := post(t, base+"/api/v1/rooms", token, map[string]any{"name": "general"})
			if st != 201 {
				t.Fatalf("create room: %d %v", st, room)
			}
			hr := request(t, "GET", base+"/api/v1/rooms/"+strconv.Itoa(int(room["id"].(float64)))+"/messages", token)
			body, _ := io.ReadAll(hr.Body)
			hr.Body.Close()
			if hr.StatusCode != 200 || !strings.Contains(string(body), `"messages":[]`) {
				t.Fatalf("history: %d %s", hr.StatusCode, body)
			}
			mr, err := http.Get(m.HTTPURL() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			metrics, _ := io.ReadAll(mr.Body)
			mr.Body.Close()
			for _, want := range []string{"mulchat_credentials_issued_total", "mulchat_http_requests_total", "go_goroutines"} {
				if !strings.Contains(string(metrics), want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
			if err := m.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
		})
	}
}

// TestRestartKeepsKeys restarts on the same data directory: the master key
// file and the operator are reused, and the issued credential stays valid.
func TestRestartKeepsKeys(t *testing.T) {
	dir := t.TempDir()
	cfg := app.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", NATSPort: -1}
	m, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	op := m.Authority.OperatorJWT()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer m2.Close()
	if m2.Authority.OperatorJWT() != op {
		t.Fatal("the operator changed across a restart")
	}
}

// TestNoMigrateRefusesFreshDatabase: with NoMigrate, an unmigrated database
// is a clear error, not a crash.
func TestNoMigrateRefusesFreshDatabase(t *testing.T) {
	cfg := app.Config{DataDir: t.TempDir(), DatabaseURL: filepath.Join(t.TempDir(), "x.db"), HTTPAddr: "127.0.0.1:0", NATSPort: -1, NoMigrate: true}
	m, err := app.Start(context.Background(), cfg)
	if err == nil {
		m.Close()
		t.Fatal("started on an unmigrated database")
	}
	t.Logf("error: %v", err)
}

// TestNoSecretsInLogsFullStack runs register / login / issue
// (server-generated) / connect / renew / revoke / logout against a whole
// server whose every component (NATS server included) logs at debug level
// into one buffer, and checks that no password, token, seed or master key
// appears in it.
func TestNoSecretsInLogsFullStack(t *testing.T) {
	var logs testenv.LogBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dir := t.TempDir()
	m, err := app.Start(context.Background(), app.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", NATSPort: -1, NATSWSPort: -1, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	base := m.HTTPURL() + "/api/v1"
	const pw = "s3cret-Passw0rd-XYZ"
	post(t, base+"/users", "", map[string]any{"username": "alice", "password": pw})
	post(t, base+"/login", "", map[string]any{"username": "alice", "password": "wrong-" + pw})
	_, login := post(t, base+"/login", "", map[string]any{"username": "alice", "password": pw})
	token := login["token"].(string)
	st, cred := post(t, base+"/me/credentials", token, nil)
	if st != 201 {
		t.Fatalf("issue: %d", st)
	}
	seed := cred["seed"].(string)
	kp, _ := nkeys.FromSeed([]byte(seed))
	nc, err := nats.Connect(m.NATSClientURL(), nats.UserJWT(
		func() (string, error) { return cred["jwt"].(string), nil },
		func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) }), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := post(t, base+"/me/credentials/renew", token, nil); st != 200 {
		t.Fatalf("renew: %d", st)
	}
	resp := request(t, "DELETE", base+"/me/credentials", token)
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	nc.Close()
	post(t, base+"/logout", token, nil)
	key, err := os.ReadFile(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	out := logs.String()
	if !strings.Contains(out, "credential revoked") {
		t.Fatalf("the flow logged nothing useful:\n%s", out)
	}
	for name, secret := range map[string]string{
		"password":   pw,
		"token":      token,
		"seed":       seed,
		"seed body":  seed[2:30],
		"master key": strings.TrimSpace(string(key)),
		"creds":      "NKEY SEED",
		"hash":       "$argon2id$",
	} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain the %s", name)
		}
	}
}

func TestUnsupportedDatabaseURL(t *testing.T) {
	dir := t.TempDir()
	for _, u := range []string{"mysql://x/y", "sqlite://x.db"} {
		if db, err := app.OpenStore(context.Background(), app.Config{DataDir: dir, DatabaseURL: u}); err == nil {
			db.Close()
			t.Fatalf("%s accepted", u)
		} else if !strings.Contains(err.Error(), "unsupported database URL") {
			t.Fatalf("%s: %v", u, err)
		}
	}
}

// TestSessionsListAndKick: a NATS connection made with an issued credential
// shows up in GET /me/sessions, and DELETE /me/sessions/{id} disconnects it.
func TestSessionsListAndKick(t *testing.T) {
	m, err := app.Start(context.Background(), app.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	base := m.HTTPURL() + "/api/v1"
	alice := registerAndIssue(t, base, "alice")
	token := alice.token
	closed := make(chan struct{})
	nc, err := nats.Connect(m.NATSClientURL(), nats.UserJWTAndSeed(alice.jwt, alice.seed),
		nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// The tracker records the session from the server's connect event,
	// asynchronously.
	var list []any
	waitUntil(t, "the session row", func() bool {
		list = sessions(t, base, token)
		return len(list) > 0
	})
	id := int64(list[0].(map[string]any)["id"].(float64))
	resp := request(t, "DELETE", base+"/me/sessions/"+strconv.FormatInt(id, 10), token)
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("kick: %d", resp.StatusCode)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the kicked connection stayed open")
	}
}

// TestNATSPortFallback: with the fallback (serve's default when no port was
// asked for) a taken NATS port is replaced by a free one and handed to
// clients; without it (a port asked for explicitly) the start fails clearly.
func TestNATSPortFallback(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port

	cfg := app.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: port, NATSPortFallback: true}
	m, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start with fallback: %v", err)
	}
	url := m.NATSClientURL()
	m.Close()
	if strings.HasSuffix(url, ":"+strconv.Itoa(port)) {
		t.Fatalf("embedded server claims the busy port: %s", url)
	}

	cfg.NATSPortFallback = false
	m, err = app.Start(context.Background(), cfg)
	if err == nil {
		m.Close()
		t.Fatal("start on a busy port without fallback succeeded")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("unclear error: %v", err)
	}
}
