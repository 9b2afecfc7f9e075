package httpapi_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

func TestRegisterLoginMeLogout(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		e := newEnv(t, db)
		reg := expect(t, e.do(t, "POST", "/api/v1/users", "", map[string]any{"username": "alice", "password": testPassword, "email": "alice@example.com"}), 201, "register")
		if reg.str("username") != "alice" || reg.str("email") != "alice@example.com" || reg.body["id"] == nil {
			t.Fatalf("register body: %s", reg.raw)
		}
		if strings.Contains(string(reg.raw), "argon2") || strings.Contains(string(reg.raw), "password") {
			t.Fatalf("register response leaks the password or its hash: %s", reg.raw)
		}
		expect(t, e.do(t, "POST", "/api/v1/users", "", map[string]any{"username": "alice", "password": testPassword}), 409, "duplicate username")
		expect(t, e.do(t, "POST", "/api/v1/users", "", map[string]any{"username": "alice2", "password": testPassword, "email": "alice@example.com"}), 409, "duplicate email")

		expect(t, e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": "alice", "password": "wrong password!"}), 401, "wrong password")
		unknown := expect(t, e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": "nobody", "password": testPassword}), 401, "unknown user")
		wrong := e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": "alice", "password": "wrong password!"})
		if unknown.str("error") != wrong.str("error") || string(unknown.raw) != string(wrong.raw) {
			t.Fatalf("unknown user and wrong password answer differently: %s vs %s", unknown.raw, wrong.raw)
		}

		login := expect(t, e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": "alice", "password": testPassword}), 200, "login")
		token := login.str("token")
		if len(token) != 43 || login.str("expires_at") == "" || login.body["user"] == nil {
			t.Fatalf("login body: %s", login.raw)
		}
		if login.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("login response is cacheable")
		}
		// The database keeps only the token's hash.
		var stored string
		if err := db.SQL().QueryRow("SELECT token_hash FROM api_tokens").Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if stored == token || len(stored) != 64 {
			t.Fatalf("token stored as %q", stored)
		}

		me := expect(t, e.do(t, "GET", "/api/v1/me", token, nil), 200, "me")
		nats, _ := me.body["nats"].(map[string]any)
		if me.str("username") != "alice" || nats["status"] != "none" {
			t.Fatalf("me: %s", me.raw)
		}
		for _, bad := range []string{"", "x", token + "x", strings.Repeat("A", 43), "Basic " + token} {
			r := e.do(t, "GET", "/api/v1/me", bad, nil)
			if bad == "Basic "+token {
				req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/me", nil)
				req.Header.Set("Authorization", bad)
				resp, err := e.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				r.status = resp.StatusCode
				r.body = map[string]any{"error": map[string]any{"code": "unauthorized"}}
			}
			expect(t, r, 401, fmt.Sprintf("me with token %q", bad))
		}

		expect(t, e.do(t, "POST", "/api/v1/logout", token, nil), 204, "logout")
		expect(t, e.do(t, "GET", "/api/v1/me", token, nil), 401, "me after logout")

		// A disabled user can no longer log in or use an old token.
		t2, id := e.register(t, "bob")
		if err := db.UpdateUserActive(t.Context(), id, false); err != nil {
			t.Fatal(err)
		}
		expect(t, e.do(t, "GET", "/api/v1/me", t2, nil), 401, "me of disabled user")
		expect(t, e.do(t, "POST", "/api/v1/login", "", map[string]any{"username": "bob", "password": testPassword}), 403, "login of disabled user")
	})
}

func TestCredentials(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		e := newEnv(t, db)
		token, id := e.register(t, "alice")

		// Client-supplied key: the seed never leaves the client.
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		r := expect(t, e.do(t, "POST", "/api/v1/me/credentials", token, map[string]any{"public_key": pub, "ttl": "2h"}), 201, "issue with client key")
		if r.str("public_key") != pub || r.body["seed"] != nil || r.body["creds"] != nil {
			t.Fatalf("issue: %s", r.raw)
		}
		if urls := r.list("nats_urls"); len(urls) != 1 {
			t.Fatalf("nats_urls: %s", r.raw)
		}
		uc, err := jwt.DecodeUserClaims(r.str("jwt"))
		if err != nil {
			t.Fatalf("decoding the issued JWT: %v", err)
		}
		if uc.Subject != pub {
			t.Fatalf("JWT subject %s, want %s", uc.Subject, pub)
		}
		if exp := time.Unix(uc.Expires, 0); exp.Before(time.Now().Add(119*time.Minute)) || exp.After(time.Now().Add(121*time.Minute)) {
			t.Fatalf("ttl 2h gave expiry %s", exp)
		}
		if !slices.Contains(uc.Pub.Allow, fmt.Sprintf("chat.send.*.%d", id)) {
			t.Fatalf("JWT pub allow %v lacks chat.send.*.%d", uc.Pub.Allow, id)
		}
		me := expect(t, e.do(t, "GET", "/api/v1/me", token, nil), 200, "me")
		nats := me.body["nats"].(map[string]any)
		if nats["status"] != "active" || nats["public_key"] != pub || nats["account"] == "" || nats["expires_at"] == nil {
			t.Fatalf("me nats: %s", me.raw)
		}
		if strings.Contains(string(me.raw), "eyJ") {
			t.Fatalf("/me carries a JWT: %s", me.raw)
		}

		// ttl as seconds.
		expect(t, e.do(t, "POST", "/api/v1/me/credentials/renew", token, map[string]any{"ttl": 3600}), 200, "renew with seconds")
		rn := expect(t, e.do(t, "POST", "/api/v1/me/credentials/renew", token, nil), 200, "renew")
		if rn.str("public_key") != pub || rn.str("jwt") == "" {
			t.Fatalf("renew: %s", rn.raw)
		}

		// Server-generated pair: the one response with a seed.
		g := expect(t, e.do(t, "POST", "/api/v1/me/credentials", token, nil), 201, "issue server-generated")
		seed, creds := g.str("seed"), g.str("creds")
		if !strings.HasPrefix(seed, "SU") || !strings.Contains(creds, "BEGIN NATS USER JWT") || !strings.Contains(creds, seed) {
			t.Fatalf("server-generated issue lacks seed or creds: %s", g.raw)
		}
		if g.header.Get("Cache-Control") != "no-store" {
			t.Fatal("credential response is cacheable")
		}
		skp, err := nkeys.FromSeed([]byte(seed))
		if err != nil {
			t.Fatal(err)
		}
		if spub, _ := skp.PublicKey(); spub != g.str("public_key") {
			t.Fatal("seed does not match the public key")
		}
		var seedHash string
		if err := db.SQL().QueryRow("SELECT nats_seed_hash FROM users WHERE id = $1", id).Scan(&seedHash); err != nil {
			// SQLite accepts $1 as well.
			t.Fatal(err)
		}
		if seedHash == "" || strings.Contains(seedHash, seed) {
			t.Fatalf("nats_seed_hash = %q", seedHash)
		}

		expect(t, e.do(t, "DELETE", "/api/v1/me/credentials", token, nil), 204, "revoke")
		me = expect(t, e.do(t, "GET", "/api/v1/me", token, nil), 200, "me after revoke")
		if st := me.body["nats"].(map[string]any)["status"]; st != "revoked" {
			t.Fatalf("status after revoke %v", st)
		}
		if r := e.do(t, "POST", "/api/v1/me/credentials/renew", token, nil); r.status < 400 || r.status >= 500 {
			t.Fatalf("renew after revoke: %d %s", r.status, r.raw)
		}
		// After a revocation a new credential can be issued.
		expect(t, e.do(t, "POST", "/api/v1/me/credentials", token, nil), 201, "issue after revoke")

		wantNotices := []string{mulchat.CredentialIssued, mulchat.CredentialRenewed, mulchat.CredentialRenewed,
			mulchat.CredentialIssued, mulchat.CredentialRevokedN, mulchat.CredentialIssued}
		if got := e.notices.list(); !slices.Equal(got, wantNotices) {
			t.Fatalf("credential notices %v, want %v", got, wantNotices)
		}

		for _, c := range []struct {
			name string
			body any
		}{
			{"account key", map[string]any{"public_key": mustAccountKey(t)}},
			{"garbage key", map[string]any{"public_key": "UABC"}},
			{"seed as key", map[string]any{"public_key": seed}},
			{"ttl text", map[string]any{"ttl": "soon"}},
			{"ttl negative", map[string]any{"ttl": -5}},
			{"ttl zero", map[string]any{"ttl": "0s"}},
			{"ttl fraction", map[string]any{"ttl": 1.5}},
			{"ttl bool", map[string]any{"ttl": true}},
			{"ttl too long", map[string]any{"ttl": "100000h"}},
			{"ttl too short", map[string]any{"ttl": "1s"}},
			{"key type", map[string]any{"public_key": 7}},
		} {
			r := e.do(t, "POST", "/api/v1/me/credentials", token, c.body)
			if r.status != 400 || r.code() != mulchat.EINVALID {
				t.Errorf("%s: %d %s, want 400 invalid", c.name, r.status, r.raw)
			}
			if strings.Contains(string(r.raw), "SU") && strings.Contains(string(r.raw), seed) {
				t.Errorf("%s: error echoes the seed", c.name)
			}
		}
	})
}

func mustAccountKey(t *testing.T) string {
	kp, _ := nkeys.CreateAccount()
	pub, _ := kp.PublicKey()
	return pub
}

func TestRoomsLifecycle(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		e := newEnv(t, db)
		alice, aliceID := e.register(t, "alice")
		bob, bobID := e.register(t, "bob")
		carol, carolID := e.register(t, "carol")
		_ = carolID

		general := expect(t, e.do(t, "POST", "/api/v1/rooms", alice, map[string]any{"name": "general", "description": "all of us"}), 201, "create general")
		if general.str("role") != "owner" || general.body["is_public"] != true {
			t.Fatalf("create: %s", general.raw)
		}
		gid := int64(general.body["id"].(float64))
		if general.str("subject_prefix") != fmt.Sprintf("chat.room.%d", gid) {
			t.Fatalf("subject_prefix: %s", general.raw)
		}
		secret := expect(t, e.do(t, "POST", "/api/v1/rooms", alice, map[string]any{"name": "secret", "is_public": false}), 201, "create secret")
		sid := int64(secret.body["id"].(float64))
		expect(t, e.do(t, "POST", "/api/v1/rooms", bob, map[string]any{"name": "general"}), 409, "duplicate room name")

		g := func(id int64, rest string) string { return fmt.Sprintf("/api/v1/rooms/%d%s", id, rest) }

		// Listing: alice sees both with her role, bob only the public one.
		names := func(r response) map[string]string {
			out := map[string]string{}
			for _, x := range r.list("rooms") {
				m := x.(map[string]any)
				role, _ := m["role"].(string)
				out[m["name"].(string)] = role
			}
			return out
		}
		if got := names(expect(t, e.do(t, "GET", "/api/v1/rooms", alice, nil), 200, "list alice")); got["general"] != "owner" || got["secret"] != "owner" {
			t.Fatalf("alice's rooms: %v", got)
		}
		if got := names(expect(t, e.do(t, "GET", "/api/v1/rooms", bob, nil), 200, "list bob")); len(got) != 1 || got["general"] != "" {
			t.Fatalf("bob's rooms: %v", got)
		}

		// A private room does not exist for non-members.
		expect(t, e.do(t, "GET", g(sid, ""), bob, nil), 404, "bob gets secret")
		expect(t, e.do(t, "POST", g(sid, "/join"), bob, nil), 404, "bob joins secret")
		expect(t, e.do(t, "GET", g(sid, "/members"), bob, nil), 404, "bob lists secret members")
		expect(t, e.do(t, "GET", g(9999, ""), bob, nil), 404, "missing room")

		// Public room: bob joins (twice is fine), carol, a non-member, may
		// see it but not its members.
		if j := expect(t, e.do(t, "POST", g(gid, "/join"), bob, nil), 200, "bob joins general"); j.str("role") != "member" {
			t.Fatalf("join: %s", j.raw)
		}
		expect(t, e.do(t, "POST", g(gid, "/join"), bob, nil), 200, "bob joins general again")
		expect(t, e.do(t, "GET", g(gid, ""), carol, nil), 200, "carol gets general")
		expect(t, e.do(t, "GET", g(gid, "/members"), carol, nil), 403, "carol lists general members")
		ms := expect(t, e.do(t, "GET", g(gid, "/members"), bob, nil), 200, "bob lists general members")
		if len(ms.list("members")) != 2 {
			t.Fatalf("members: %s", ms.raw)
		}

		// Adding members: owner only.
		expect(t, e.do(t, "POST", g(gid, "/members"), bob, map[string]any{"username": "carol"}), 403, "member adds member")
		add := expect(t, e.do(t, "POST", g(sid, "/members"), alice, map[string]any{"username": "carol"}), 201, "owner adds carol to secret")
		if add.str("username") != "carol" || add.str("role") != "member" {
			t.Fatalf("add member: %s", add.raw)
		}
		expect(t, e.do(t, "POST", g(sid, "/members"), alice, map[string]any{"username": "carol"}), 409, "add carol again")
		expect(t, e.do(t, "POST", g(sid, "/members"), alice, map[string]any{"username": "nobody"}), 404, "add unknown user")
		expect(t, e.do(t, "POST", g(sid, "/members"), alice, map[string]any{"username": "bob", "role": "admin"}), 400, "add with bad role")
		expect(t, e.do(t, "POST", g(sid, "/members"), carol, map[string]any{"username": "bob"}), 403, "member adds to private")
		expect(t, e.do(t, "GET", g(sid, ""), carol, nil), 200, "carol sees secret now")

		// Removing: owner removes anyone, members only themselves.
		expect(t, e.do(t, "DELETE", g(gid, fmt.Sprintf("/members/%d", aliceID)), bob, nil), 403, "member removes owner")
		expect(t, e.do(t, "DELETE", g(gid, fmt.Sprintf("/members/%d", carolID)), alice, nil), 404, "remove non-member")
		expect(t, e.do(t, "DELETE", g(gid, fmt.Sprintf("/members/%d", bobID)), alice, nil), 204, "owner removes bob")
		expect(t, e.do(t, "DELETE", g(sid, fmt.Sprintf("/members/%d", carolID)), carol, nil), 204, "carol removes herself")

		// The last owner cannot leave.
		expect(t, e.do(t, "POST", g(gid, "/leave"), alice, nil), 409, "last owner leaves")
		expect(t, e.do(t, "POST", g(gid, "/join"), carol, nil), 200, "carol joins general")
		expect(t, e.do(t, "POST", g(gid, "/leave"), carol, nil), 204, "carol leaves general")
		expect(t, e.do(t, "POST", g(gid, "/leave"), carol, nil), 404, "carol leaves again")

		// Messages and sessions need the real-time services.
		expect(t, e.do(t, "GET", g(gid, "/messages?limit=10"), alice, nil), 501, "history without router")
		expect(t, e.do(t, "GET", g(gid, "/messages?limit=x"), alice, nil), 400, "history bad limit")
		expect(t, e.do(t, "GET", g(sid, "/messages"), bob, nil), 404, "history of private room for non-member")
		sess := expect(t, e.do(t, "GET", "/api/v1/me/sessions", alice, nil), 200, "sessions")
		if l, ok := sess.body["sessions"].([]any); !ok || len(l) != 0 {
			t.Fatalf("sessions: %s", sess.raw)
		}
		expect(t, e.do(t, "DELETE", "/api/v1/me/sessions/1", alice, nil), 501, "kick without tracker")

		// Deleting: owner only.
		expect(t, e.do(t, "DELETE", g(gid, ""), bob, nil), 403, "non-member deletes public room")
		expect(t, e.do(t, "DELETE", g(gid, ""), alice, nil), 204, "owner deletes")
		expect(t, e.do(t, "GET", g(gid, ""), alice, nil), 404, "get deleted room")

		want := []string{
			mulchat.MembershipJoined, mulchat.MembershipJoined, // creates
			mulchat.MembershipJoined,                          // bob joins
			mulchat.MembershipJoined,                          // carol added
			mulchat.MembershipRemoved, mulchat.MembershipLeft, // bob removed, carol removes herself
			mulchat.MembershipJoined, mulchat.MembershipLeft, // carol joins and leaves
			mulchat.MembershipDeleted, // general deleted (alice only)
		}
		if got := e.notified.list(); !slices.Equal(got, want) {
			t.Fatalf("notifications %v, want %v", got, want)
		}
	})
}

func TestConcurrentDuplicateRegistration(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		e := newEnv(t, db)
		const n = 8
		statuses := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[i] = e.do(t, "POST", "/api/v1/users", "", map[string]any{"username": "dup", "password": testPassword}).status
			}()
		}
		wg.Wait()
		created, conflicts := 0, 0
		for _, s := range statuses {
			switch s {
			case 201:
				created++
			case 409:
				conflicts++
			}
		}
		if created != 1 || conflicts != n-1 {
			t.Fatalf("statuses %v: want one 201 and %d 409", statuses, n-1)
		}
		if c := counts(t, db)["users"]; c != 1 {
			t.Fatalf("%d users", c)
		}
	})
}

// TestHostileUserAgent: the user agent stored with a token may hold NUL,
// invalid UTF-8 or be huge; login still works on both databases.
func TestHostileUserAgent(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		e := newEnv(t, db)
		e.register(t, "alice")
		for _, ua := range []string{"bad \xff\xfe utf8", strings.Repeat("ü", 3000)} {
			req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/login", strings.NewReader(`{"username":"alice","password":"`+testPassword+`"}`))
			req.Header.Set("User-Agent", ua)
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("login with user agent %q: %d", ua[:min(len(ua), 20)], resp.StatusCode)
			}
		}
	})
}
