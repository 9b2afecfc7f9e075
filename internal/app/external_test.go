package app_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/router"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
	"github.com/mulchat/mulchat/internal/testenv/natscluster"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestExternalNATSServer runs the scaled deployment of docs/nats.md end to
// end: the keys are created first (OpenStore + OpenAuthority, as `mulchat
// nats server-config` does), a nats-server binary built from the module runs
// as its own process with the printed configuration, and mulchat starts with
// NATSURL — one instance on SQLite, two instances (separate data
// directories, one master key) on one PostgreSQL database. Two users
// registered over HTTP exchange a message through the router, the sender's
// session appears, and a revocation closes the sender's connection.
func TestExternalNATSServer(t *testing.T) {
	bin := testenv.NATSServerBinary(t)
	cases := []struct {
		name      string
		instances int
	}{
		{"sqlite", 1},
		{"postgres", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := app.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0"}
			if c.name == "postgres" {
				cfg.DatabaseURL = sqltest.NewPostgresDatabaseURL(t)
			}

			// 1. Create the keys and print the server configuration: the
			// server must trust the operator before mulchat can connect.
			natsDir := t.TempDir()
			text := serverConfigs(t, cfg, authority.ServerConfigOptions{
				Host: "127.0.0.1", Port: -1,
				ResolverDir:  filepath.Join(natsDir, "resolver"),
				JetStreamDir: filepath.Join(natsDir, "jetstream"),
			})[0]

			// 2. Start the external server.
			url := testenv.StartNATSServerProcess(t, bin, natsDir, text)

			// 3. Start mulchat against it. Further instances run as on other
			// machines: their own data directory, the same master key.
			key, err := authority.LoadMasterKey(cfg.DataDir, false)
			if err != nil {
				t.Fatal(err)
			}
			cfg.NATSURL = url
			var ms []*app.Main
			for i := range c.instances {
				icfg := cfg
				if i > 0 {
					icfg.DataDir, icfg.MasterKey = t.TempDir(), key
				}
				m, err := app.Start(ctx, icfg)
				if err != nil {
					t.Fatalf("instance %d: %v", i, err)
				}
				defer m.Close()
				if m.NATSServer() != nil {
					t.Fatal("an embedded server started despite NATSURL")
				}
				ms = append(ms, m)
			}
			first, last := ms[0].HTTPURL()+"/api/v1", ms[len(ms)-1].HTTPURL()+"/api/v1"

			alice := registerAndIssue(t, first, "alice")
			bob := registerAndIssue(t, last, "bob")
			st, room := post(t, first+"/rooms", alice.token, map[string]any{"name": "general"})
			if st != 201 {
				t.Fatalf("create room: %d %v", st, room)
			}
			roomID := int64(room["id"].(float64))
			if st, body := post(t, last+"/rooms/"+strconv.FormatInt(roomID, 10)+"/join", bob.token, nil); st != 200 {
				t.Fatalf("join: %d %v", st, body)
			}
			for _, u := range []issued{alice, bob} {
				if len(u.urls) != 1 || u.urls[0] != url {
					t.Fatalf("nats_urls %v, want [%s]", u.urls, url)
				}
			}

			// 4. A message from bob reaches alice through the router.
			anc := connectUser(t, alice, nil)
			inbox, err := anc.SubscribeSync(mulchat.UserSubject(alice.id, "msg"))
			if err != nil {
				t.Fatal(err)
			}
			if err := anc.Flush(); err != nil {
				t.Fatal(err)
			}
			closed := make(chan struct{})
			bnc := connectUser(t, bob, closed)
			sr, msg := sendAndReceive(t, bnc, bob, roomID, "hello over the external server", inbox)
			if msg.Text != "hello over the external server" || msg.Sender.ID != bob.id || msg.Seq != sr.Seq || msg.RoomID != roomID {
				t.Fatalf("delivered %+v, want bob's message seq %d", msg, sr.Seq)
			}

			// 5. Bob's connection is recorded as a session (asked of the
			// first instance, whichever tracker wrote it).
			waitUntil(t, "bob's session row", func() bool {
				return len(sessions(t, first, bob.token)) > 0
			})

			// 6. Revoking (through the first instance) closes bob's
			// connection and his key is refused from then on.
			resp := request(t, "DELETE", first+"/me/credentials", bob.token)
			resp.Body.Close()
			if resp.StatusCode != 204 {
				t.Fatalf("revoke: %d", resp.StatusCode)
			}
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("the revoked connection stayed open")
			}
			if nc, err := nats.Connect(url, nats.UserJWTAndSeed(bob.jwt, bob.seed), nats.NoReconnect()); err == nil {
				nc.Close()
				t.Fatal("the external server accepted a revoked credential")
			}
		})
	}
}

// serverConfigs creates the keys of cfg, as `mulchat nats server-config`
// does (a server must trust the operator before mulchat can connect), and
// returns a nats-server configuration for each of opts.
func serverConfigs(t *testing.T, cfg app.Config, opts ...authority.ServerConfigOptions) []string {
	t.Helper()
	ctx := context.Background()
	db, err := app.OpenStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, err := app.OpenAuthority(ctx, cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	texts := make([]string, len(opts))
	for i, o := range opts {
		if texts[i], err = a.ServerConfig(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	return texts
}

// issued is a user registered over HTTP with a server-generated credential.
type issued struct {
	id        int64
	token     string
	jwt, seed string
	urls      []string
	username  string
}

func registerAndIssue(t *testing.T, base, username string) issued {
	t.Helper()
	const password = "correct horse battery"
	if st, body := post(t, base+"/users", "", map[string]any{"username": username, "password": password}); st != 201 {
		t.Fatalf("register %s: %d %v", username, st, body)
	}
	_, login := post(t, base+"/login", "", map[string]any{"username": username, "password": password})
	token, _ := login["token"].(string)
	st, cred := post(t, base+"/me/credentials", token, nil)
	if st != 201 {
		t.Fatalf("issue for %s: %d %v", username, st, cred)
	}
	u := issued{token: token, jwt: cred["jwt"].(string), seed: cred["seed"].(string), username: username}
	for _, v := range cred["nats_urls"].([]any) {
		u.urls = append(u.urls, v.(string))
	}
	resp := request(t, "GET", base+"/me", token)
	defer resp.Body.Close()
	var me struct{ ID int64 }
	if err := json.NewDecoder(resp.Body).Decode(&me); err != nil || me.ID == 0 {
		t.Fatalf("GET /me: %v", err)
	}
	u.id = me.ID
	return u
}

// connectUser connects with the user's credential to the first URL handed
// out, with the inbox prefix the user's permissions allow; closed (if not
// nil) is closed when the connection is.
func connectUser(t *testing.T, u issued, closed chan struct{}) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.UserJWTAndSeed(u.jwt, u.seed), nats.NoReconnect(),
		nats.CustomInboxPrefix("_INBOX." + strconv.FormatInt(u.id, 10)),
		// The revocation's error is expected; keep it out of the test output.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}
	if closed != nil {
		opts = append(opts, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	}
	nc, err := nats.Connect(u.urls[0], opts...)
	if err != nil {
		t.Fatalf("%s cannot connect: %v", u.username, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// sendAndReceive sends text to the room as u over nc, through the router,
// and returns the router's reply and the message then delivered to inbox.
func sendAndReceive(t *testing.T, nc *nats.Conn, u issued, roomID int64, text string, inbox *nats.Subscription) (mulchat.SendReply, mulchat.Message) {
	t.Helper()
	req, _ := json.Marshal(mulchat.SendRequest{Text: text})
	reply, err := nc.Request(mulchat.SendSubject(roomID, u.id), req, 10*time.Second)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	var sr mulchat.SendReply
	if err := json.Unmarshal(reply.Data, &sr); err != nil || sr.Error != nil || sr.Seq == 0 {
		t.Fatalf("send reply %s (%v)", reply.Data, err)
	}
	got, err := inbox.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("nothing delivered on %s: %v", inbox.Subject, err)
	}
	var msg mulchat.Message
	if err := json.Unmarshal(got.Data, &msg); err != nil {
		t.Fatal(err)
	}
	return sr, msg
}

func sessions(t *testing.T, base, token string) []any {
	t.Helper()
	resp := request(t, "GET", base+"/me/sessions", token)
	defer resp.Body.Close()
	var body struct{ Sessions []any }
	json.NewDecoder(resp.Body).Decode(&body)
	return body.Sessions
}

// waitUntil polls cond until it holds (testenv.Eventually).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, what, cond)
}

// TestExternalNATSCluster starts mulchat against a three-server JetStream
// cluster (in process, each configured from ServerConfig's output for a
// cluster member) as soon as the servers accept connections, before their
// JetStream has a leader: Start waits for it, creates the message stream
// with three replicas, and two users on different servers exchange a
// message.
func TestExternalNATSCluster(t *testing.T) {
	ctx := context.Background()
	cfg := app.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", StreamReplicas: 3}
	servers := natscluster.Start(t, 3, func(i int, ports []int) *server.Options {
		var routes []string
		for _, p := range ports {
			routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(p))
		}
		dir := t.TempDir()
		text := serverConfigs(t, cfg, authority.ServerConfigOptions{
			Host: "127.0.0.1", Port: -1, ServerName: "n" + strconv.Itoa(i+1),
			ClusterName: "mulchat", ClusterPort: ports[i], Routes: routes,
			ResolverDir:  filepath.Join(dir, "resolver"),
			JetStreamDir: filepath.Join(dir, "jetstream"),
		})[0]
		conf := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("n%d: %v", i+1, err)
		}
		return opts
	})
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.ClientURL())
	}

	cfg.NATSURL = strings.Join(urls, ",")
	m, err := app.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start against the cluster: %v", err)
	}
	defer m.Close()
	base := m.HTTPURL() + "/api/v1"

	svc, err := app.ConnectService(ctx, m.Authority, urls, "test", false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	js, err := jetstream.New(svc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, router.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if info := stream.CachedInfo(); info.Config.Replicas != 3 {
		t.Fatalf("stream replicas %d, want 3", info.Config.Replicas)
	}

	alice := registerAndIssue(t, base, "alice")
	bob := registerAndIssue(t, base, "bob")
	_, room := post(t, base+"/rooms", alice.token, map[string]any{"name": "general"})
	roomID := int64(room["id"].(float64))
	if st, body := post(t, base+"/rooms/"+strconv.FormatInt(roomID, 10)+"/join", bob.token, nil); st != 200 {
		t.Fatalf("join: %d %v", st, body)
	}
	alice.urls, bob.urls = []string{urls[0]}, []string{urls[2]}
	anc := connectUser(t, alice, nil)
	inbox, err := anc.SubscribeSync(mulchat.UserSubject(alice.id, "msg"))
	if err != nil {
		t.Fatal(err)
	}
	anc.Flush()
	// Interest travels over the routes asynchronously; the router may
	// publish the delivery on any server.
	waitUntil(t, "alice's interest on every server", func() bool {
		for _, s := range servers {
			acc, err := s.LookupAccount(m.Authority.ChatAccountPublicKey())
			if err != nil || !acc.SubscriptionInterest(mulchat.UserSubject(alice.id, "msg")) {
				return false
			}
		}
		return true
	})
	bnc := connectUser(t, bob, nil)
	// Alice is on n1, bob on n3.
	_, msg := sendAndReceive(t, bnc, bob, roomID, "across the cluster", inbox)
	if msg.Text != "across the cluster" || msg.Sender.ID != bob.id {
		t.Fatalf("delivered %+v", msg)
	}
}
