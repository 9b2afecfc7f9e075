package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/httpapi"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// TestBadInput sends malformed and hostile requests; each must get a 4xx with
// a code and leave the database unchanged.
func TestBadInput(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		// The clock stands still, so a used-up credential budget never
		// refills during the table.
		frozen := time.Now()
		e := newEnv(t, db, func(c *httpapi.Config) {
			c.Now = func() time.Time { return frozen }
			c.CredentialRate = httpapi.CredentialRate{PerUser: 1, Burst: 1}
		})
		token, _ := e.register(t, "alice")
		expect(t, e.do(t, "POST", "/api/v1/me/credentials", token, nil), 201, "issue (uses the credential budget)")
		room := expect(t, e.do(t, "POST", "/api/v1/rooms", token, map[string]any{"name": "general"}), 201, "create room")
		rid := int64(room.body["id"].(float64))
		roomPath := fmt.Sprintf("/api/v1/rooms/%d", rid)

		longUnicode := strings.Repeat("ü", 40)
		huge := `{"username":"` + strings.Repeat("a", httpapi.MaxBodyBytes) + `","password":"x"}`
		user := func(name string) map[string]any { return map[string]any{"username": name, "password": testPassword} }

		cases := []struct {
			name   string
			method string
			path   string
			auth   bool
			body   any
			status int
		}{
			// Malformed bodies.
			{"empty body", "POST", "/api/v1/users", false, "", 400},
			{"not JSON", "POST", "/api/v1/users", false, "username=alice", 400},
			{"truncated", "POST", "/api/v1/users", false, `{"username":"bobby","password":"`, 400},
			{"array", "POST", "/api/v1/users", false, `[{"username":"bobby"}]`, 400},
			{"string", "POST", "/api/v1/users", false, `"bobby"`, 400},
			{"null", "POST", "/api/v1/users", false, `null`, 400},
			{"trailing data", "POST", "/api/v1/users", false, `{"username":"bobby","password":"correct horse battery"} {}`, 400},
			{"trailing garbage", "POST", "/api/v1/users", false, `{"username":"bobby","password":"correct horse battery"}x`, 400},
			{"unknown field", "POST", "/api/v1/users", false, `{"username":"bobby","password":"correct horse battery","admin":true}`, 400},
			{"wrong type", "POST", "/api/v1/users", false, `{"username":123,"password":"correct horse battery"}`, 400},
			{"wrong type bool", "POST", "/api/v1/rooms", true, `{"name":"abc","is_public":"yes"}`, 400},
			{"invalid UTF-8", "POST", "/api/v1/users", false, []byte("{\"username\":\"bob\xff\xfe\",\"password\":\"correct horse battery\"}"), 400},
			{"oversize", "POST", "/api/v1/users", false, huge, 413},
			{"oversize room", "POST", "/api/v1/rooms", true, `{"name":"big","description":"` + strings.Repeat("x", 70000) + `"}`, 413},
			{"deep nesting", "POST", "/api/v1/users", false, strings.Repeat("[", 10000), 400},

			// Usernames.
			{"username star", "POST", "/api/v1/users", false, user("bob*"), 400},
			{"username gt", "POST", "/api/v1/users", false, user("bob>"), 400},
			{"username subject", "POST", "/api/v1/users", false, user("chat.>"), 400},
			{"username space", "POST", "/api/v1/users", false, user("bob smith"), 400},
			{"username NUL", "POST", "/api/v1/users", false, user("bob\x00x"), 400},
			{"username NUL escape", "POST", "/api/v1/users", false, `{"username":"bob\u0000","password":"correct horse battery"}`, 400},
			{"username lone surrogate", "POST", "/api/v1/users", false, `{"username":"bob\udc00","password":"correct horse battery"}`, 400},
			{"username SQL", "POST", "/api/v1/users", false, user("'; DROP TABLE users;--"), 400},
			{"username SQL 2", "POST", "/api/v1/users", false, user("x' OR '1'='1"), 400},
			{"username long unicode", "POST", "/api/v1/users", false, user(longUnicode), 400},
			{"username upper", "POST", "/api/v1/users", false, user("Alice"), 400},
			{"username short", "POST", "/api/v1/users", false, user("ab"), 400},
			{"username long", "POST", "/api/v1/users", false, user(strings.Repeat("a", 33)), 400},
			{"username empty", "POST", "/api/v1/users", false, user(""), 400},
			{"username existing", "POST", "/api/v1/users", false, user("alice"), 409},
			{"password short", "POST", "/api/v1/users", false, map[string]any{"username": "bobby", "password": "short"}, 400},
			{"password huge", "POST", "/api/v1/users", false, map[string]any{"username": "bobby", "password": strings.Repeat("p", 2000)}, 400},
			// encoding/json would turn a lone surrogate into U+FFFD, so any
			// other lone surrogate there would match the password.
			{"password lone high surrogate", "POST", "/api/v1/users", false, `{"username":"bobby","password":"\ud800xxxxxxxxxxx"}`, 400},
			{"password lone low surrogate", "POST", "/api/v1/users", false, `{"username":"bobby","password":"xxxxxxxxxxx\uDFFF"}`, 400},
			{"password reversed pair", "POST", "/api/v1/users", false, `{"username":"bobby","password":"xxxxxxxxxxx\udc00\ud800"}`, 400},
			{"email bad", "POST", "/api/v1/users", false, map[string]any{"username": "bobby", "password": testPassword, "email": "not-an-email"}, 400},
			{"email space", "POST", "/api/v1/users", false, map[string]any{"username": "bobby", "password": testPassword, "email": "a b@c.d"}, 400},

			// Login.
			{"login NUL", "POST", "/api/v1/login", false, `{"username":"alice\u0000","password":"x"}`, 400},
			{"login empty", "POST", "/api/v1/login", false, `{}`, 400},
			{"login SQL", "POST", "/api/v1/login", false, map[string]any{"username": "' OR 1=1;--", "password": "x"}, 401},
			{"login lone surrogate", "POST", "/api/v1/login", false, `{"username":"alice","password":"\ud800xxxxxxxxxxx"}`, 400},
			{"login unknown field", "POST", "/api/v1/login", false, `{"username":"alice","password":"x","remember":true}`, 400},

			// Room names and descriptions.
			{"room dot", "POST", "/api/v1/rooms", true, map[string]any{"name": "a.b"}, 400},
			{"room star", "POST", "/api/v1/rooms", true, map[string]any{"name": "room*"}, 400},
			{"room gt", "POST", "/api/v1/rooms", true, map[string]any{"name": "room>"}, 400},
			{"room space", "POST", "/api/v1/rooms", true, map[string]any{"name": "my room"}, 400},
			{"room NUL", "POST", "/api/v1/rooms", true, map[string]any{"name": "room\x00"}, 400},
			{"room SQL", "POST", "/api/v1/rooms", true, map[string]any{"name": "'; DROP TABLE users;--"}, 400},
			{"room long unicode", "POST", "/api/v1/rooms", true, map[string]any{"name": longUnicode}, 400},
			{"room upper", "POST", "/api/v1/rooms", true, map[string]any{"name": "General"}, 400},
			{"room leading dash", "POST", "/api/v1/rooms", true, map[string]any{"name": "-x"}, 400},
			{"room empty", "POST", "/api/v1/rooms", true, map[string]any{}, 400},
			{"room existing", "POST", "/api/v1/rooms", true, map[string]any{"name": "general"}, 409},
			{"room description NUL", "POST", "/api/v1/rooms", true, `{"name":"okname","description":"a\u0000b"}`, 400},
			{"room description lone surrogate", "POST", "/api/v1/rooms", true, `{"name":"okname","description":"a\ud83db"}`, 400},
			{"room description long", "POST", "/api/v1/rooms", true, map[string]any{"name": "okname", "description": strings.Repeat("é", 1001)}, 400},

			// Credentials: the budget (1, see above) is used up; a refused
			// issue must not replace or revoke the key.
			{"credential issue over the limit", "POST", "/api/v1/me/credentials", true, nil, 429},
			{"credential issue surrogate", "POST", "/api/v1/me/credentials", true, `{"public_key":"U\udbff"}`, 400},
			{"credential renew over the limit", "POST", "/api/v1/me/credentials/renew", true, nil, 429},

			// Identifiers.
			{"id text", "GET", "/api/v1/rooms/abc", true, nil, 400},
			{"id zero", "GET", "/api/v1/rooms/0", true, nil, 400},
			{"id negative", "GET", "/api/v1/rooms/-1", true, nil, 400},
			{"id overflow", "GET", "/api/v1/rooms/99999999999999999999", true, nil, 400},
			{"id leading zero", "GET", "/api/v1/rooms/01", true, nil, 400},
			{"id plus", "GET", "/api/v1/rooms/+1", true, nil, 400},
			{"id SQL", "GET", "/api/v1/rooms/1%20OR%201=1", true, nil, 400},
			{"member id text", "DELETE", roomPath + "/members/x", true, nil, 400},
			{"session id text", "DELETE", "/api/v1/me/sessions/x", true, nil, 400},
			{"history before text", "GET", roomPath + "/messages?before=x", true, nil, 400},
			{"history limit huge", "GET", roomPath + "/messages?limit=100000", true, nil, 400},
			{"history limit negative", "GET", roomPath + "/messages?limit=-1", true, nil, 400},
			{"add member NUL", "POST", roomPath + "/members", true, `{"username":"bob\u0000"}`, 400},
			{"add member wrong type", "POST", roomPath + "/members", true, `{"username":["bob"]}`, 400},

			// Auth and routing.
			{"no token", "GET", "/api/v1/rooms", false, nil, 401},
			{"unknown endpoint", "GET", "/api/v1/nothing", false, nil, 404},
			{"wrong method", "PUT", "/api/v1/rooms", true, nil, 404},
		}
		before := counts(t, db)
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				tok := ""
				if c.auth {
					tok = token
				}
				r := e.do(t, c.method, c.path, tok, c.body)
				if r.status != c.status {
					t.Fatalf("status %d, want %d; body %s", r.status, c.status, r.raw)
				}
				if r.code() == "" {
					t.Fatalf("no error code: %s", r.raw)
				}
				if msg := r.body["error"].(map[string]any)["message"].(string); msg == "" || msg == "internal error" {
					t.Fatalf("unhelpful message: %s", r.raw)
				}
			})
		}
		if after := counts(t, db); !maps.Equal(before, after) {
			t.Fatalf("database changed: before %v, after %v", before, after)
		}
	})
}

// TestDotsInUsernames records a decision: '.' is a valid username character
// (DESIGN.md: [a-z0-9_.-]); subjects carry numeric ids, so a name like
// "a.b" never reaches a NATS subject.
func TestDotsInUsernames(t *testing.T) {
	e := newEnv(t, sqltest.OpenSQLite(t))
	expect(t, e.do(t, "POST", "/api/v1/users", "", map[string]any{"username": "a.b", "password": testPassword}), 201, "register a.b")
}

func TestLoginRateLimit(t *testing.T) {
	e := newEnv(t, sqltest.OpenSQLite(t), func(c *httpapi.Config) {
		c.LoginRate = httpapi.LoginRate{PerUsername: 1, UserBurst: 3, PerAddress: 1, AddrBurst: 5, RegisterPerAddress: 1, RegisterBurst: 2}
	})
	e.register(t, "alice") // one login
	wrong := map[string]any{"username": "alice", "password": "wrong password"}
	for i := range 2 {
		expect(t, e.do(t, "POST", "/api/v1/login", "", wrong), 401, "attempt "+strconv.Itoa(i))
	}
	r := expect(t, e.do(t, "POST", "/api/v1/login", "", wrong), 429, "over the username limit")
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
	}
	// Even the right password is refused while limited.
	expect(t, e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": "alice", "password": testPassword}), 429, "right password while limited")
	// Another username from the same address: the address budget (5) has
	// 2 left after the refused attempts were given back.
	for _, name := range []string{"bob", "carol"} {
		expect(t, e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": name, "password": "whatever pw"}), 401, "other user "+name)
	}
	expect(t, e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": "dave", "password": "whatever pw"}), 429, "over the address limit")

	// Registration has its own per-address budget (2 here, one used).
	expect(t, e.do(t, "POST", "/api/v1/users", "", map[string]any{"username": "bob", "password": testPassword}), 201, "second registration")
	before := counts(t, e.db)
	r = expect(t, e.do(t, "POST", "/api/v1/users", "", map[string]any{"username": "carol", "password": testPassword}), 429, "third registration")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	if after := counts(t, e.db); !maps.Equal(before, after) {
		t.Fatalf("a refused registration changed the database")
	}
}

// TestNoSecretsInLogs captures every log line (debug level) of a full
// register / login / issue (server-generated) / renew / revoke / logout flow
// and checks that no password, token, seed or master key appears.
func TestNoSecretsInLogs(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		var buf bytes.Buffer
		logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		e := newEnvWithLogger(t, db, logger)
		const pw = "s3cret-Passw0rd-XYZ"
		expect(t, e.do(t, "POST", "/api/v1/users", "", map[string]any{"username": "alice", "password": pw}), 201, "register")
		expect(t, e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": "alice", "password": "wrong-" + pw}), 401, "bad login")
		login := expect(t, e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": "alice", "password": pw}), 200, "login")
		token := login.str("token")
		issued := expect(t, e.do(t, "POST", "/api/v1/me/credentials", token, nil), 201, "issue")
		renewed := expect(t, e.do(t, "POST", "/api/v1/me/credentials/renew", token, map[string]any{"ttl": "1h"}), 200, "renew")
		expect(t, e.do(t, "POST", "/api/v1/me/credentials", token, map[string]any{"public_key": "SUAM" + pw}), 400, "seed-like key")
		expect(t, e.do(t, "DELETE", "/api/v1/me/credentials", token, nil), 204, "revoke")
		expect(t, e.do(t, "GET", "/api/v1/rooms/1/messages", token, nil), 404, "messages")
		expect(t, e.do(t, "POST", "/api/v1/logout", token, nil), 204, "logout")

		logs := buf.String()
		if !strings.Contains(logs, "credential issued") {
			t.Fatalf("the flow logged nothing useful: %s", logs)
		}
		seed := issued.str("seed")
		secrets := map[string]string{
			"password":      pw,
			"token":         token,
			"token hash":    "", // checked below
			"seed":          seed,
			"seed body":     seed[2:30],
			"creds":         "BEGIN USER NKEY SEED",
			"hashed pw":     "$argon2id$",
			"master key":    fmt.Sprintf("%x", e.masterKey),
			"issued jwt":    "", // JWTs are not secret, but need not be logged either
			"renewed token": renewed.str("jwt"),
		}
		for name, s := range secrets {
			if s != "" && strings.Contains(logs, s) {
				t.Errorf("logs contain the %s", name)
			}
		}
		var stored string
		if err := db.SQL().QueryRow("SELECT nats_seed_hash FROM users").Scan(&stored); err == nil && stored != "" && strings.Contains(logs, stored) {
			t.Error("logs contain the seed hash")
		}
	})
}

func TestHealthReadyMetrics(t *testing.T) {
	e := newEnv(t, sqltest.OpenSQLite(t))
	expect(t, e.do(t, "GET", "/healthz", "", nil), 200, "healthz")
	expect(t, e.do(t, "GET", "/readyz", "", nil), 200, "readyz")
	token, _ := e.register(t, "alice")
	expect(t, e.do(t, "GET", "/api/v1/rooms/12345", token, nil), 404, "room")
	resp, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	m := b.String()
	for _, want := range []string{
		`mulchat_http_requests_total{code="404",route="GET /api/v1/rooms/{id}"} 1`,
		`mulchat_http_requests_total{code="201",route="POST /api/v1/users"} 1`,
		`mulchat_http_request_duration_seconds_bucket{route="POST /api/v1/login"`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(m, "/rooms/12345") {
		t.Error("metrics are labelled with a raw path")
	}

	// Not ready when NATS is not.
	e2 := newEnv(t, sqltest.OpenSQLite(t), func(c *httpapi.Config) {
		c.Ready = func(ctx context.Context) error { return errors.New("down") }
	})
	if r := expect(t, e2.do(t, "GET", "/readyz", "", nil), 503, "readyz not ready"); r.code() != "unavailable" {
		t.Fatalf("readyz: %s", r.raw)
	}
}
