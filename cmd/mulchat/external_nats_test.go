package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/testenv"
	"github.com/mulchat/mulchat/internal/testenv/natscluster"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestServerConfigDefaultsStartStockServer prints `nats server-config` with
// its default flags, as the README shows it, and starts a stock nats-server
// from the output: it must accept it (the old output, with a cluster block
// and no server_name, made a JetStream server exit), and a .creds file issued
// by `creds issue` connects. The default relative resolver and JetStream
// directories land in the test's working directory, a temporary one. Only the
// client port is changed after parsing, to a random one: tests never listen
// on 4222.
func TestServerConfigDefaultsStartStockServer(t *testing.T) {
	t.Chdir(t.TempDir())
	c := newCLI(t, "MULCHAT_PASSWORD="+pw)
	c.ok("", "user", "create", "alice")
	creds := filepath.Join(t.TempDir(), "alice.creds")
	c.ok("", "creds", "issue", "alice", "-o", creds)

	text := c.ok("", "nats", "server-config").stdout
	for _, absent := range []string{"cluster", "server_name", "websocket"} {
		if strings.Contains(text, absent) {
			t.Errorf("default server-config holds %q:\n%s", absent, text)
		}
	}
	opts := processConfig(t, text)
	if opts.Port != 4222 || opts.Cluster.Port != 0 || !opts.JetStream {
		t.Fatalf("default config: port %d, cluster port %d, jetstream %v", opts.Port, opts.Cluster.Port, opts.JetStream)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	s := startServer(t, opts)
	if _, err := os.Stat(filepath.Join("nats", "resolver")); err != nil {
		t.Errorf("default resolver directory: %v", err)
	}

	nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(creds), nats.NoReconnect())
	if err != nil {
		t.Fatalf("issued .creds refused by a server from the default config: %v", err)
	}
	nc.Close()
	// JetStream works for the chat account (the router keeps history there).
	svc := serviceConn(t, c, s.ClientURL())
	js, err := svc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("JetStream unavailable to the chat account: %v", err)
	}
}

// TestServerConfigClusterStartsStockServers runs the README's cluster
// example (--ws-port, --cluster-name, --cluster-routes, plus the
// --server-name a cluster member needs) for two servers, starts both from the
// output, and checks the cluster: routes connect, JetStream elects a leader
// and serves the chat account, a message published on one server reaches a
// user connected to the other with an issued .creds file, and a revocation
// pushed to one server closes that user's connection on the other.
func TestServerConfigClusterStartsStockServers(t *testing.T) {
	c := newCLI(t, "MULCHAT_PASSWORD="+pw)
	c.ok("", "user", "create", "alice")
	creds := filepath.Join(t.TempDir(), "alice.creds")
	c.ok("", "creds", "issue", "alice", "-o", creds)

	// Without --server-name a cluster member is refused, naming the flag.
	c.fails("--server-name", "", "nats", "server-config", "--cluster-name", "c1")
	c.fails("--cluster-name", "", "nats", "server-config", "--server-name", "n1", "--cluster-routes", "nats-route://127.0.0.1:6222")
	c.fails("--cluster-port needs", "", "nats", "server-config", "--cluster-port", "7222")

	servers := natscluster.Start(t, 2, func(i int, ports []int) *server.Options {
		routes := "nats-route://127.0.0.1:" + strconv.Itoa(ports[0]) + ",nats-route://127.0.0.1:" + strconv.Itoa(ports[1])
		name := "n" + strconv.Itoa(i+1)
		dir := t.TempDir()
		text := c.ok("", "nats", "server-config", "--host", "127.0.0.1", "--port", "-1", "--ws-port", "-1",
			"--server-name", name, "--cluster-name", "c1", "--cluster-port", strconv.Itoa(ports[i]),
			"--cluster-routes", routes,
			"--resolver-dir", filepath.Join(dir, "resolver"), "--jetstream-dir", filepath.Join(dir, "js")).stdout
		for _, want := range []string{`server_name: "` + name + `"`, "cluster: {", `name: "c1"`, "websocket: {"} {
			if !strings.Contains(text, want) {
				t.Fatalf("server-config for %s lacks %q:\n%s", name, want, text)
			}
		}
		return processConfig(t, text)
	})
	waitFor(t, "the cluster routes", func() bool { return servers[0].NumRoutes() > 0 && servers[1].NumRoutes() > 0 })

	svc := serviceConn(t, c, servers[0].ClientURL())
	js, err := svc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a JetStream meta leader", func() bool { _, err := js.AccountInfo(); return err == nil })

	closed := make(chan struct{})
	nc, err := nats.Connect(servers[1].ClientURL(), nats.UserCredentials(creds), nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("issued .creds refused by the cluster: %v", err)
	}
	defer nc.Close()
	alice := userID(t, c, "alice")
	sub, err := nc.SubscribeSync(mulchat.UserSubject(alice, "msg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The subscription's interest reaches n1 over the route asynchronously.
	waitFor(t, "alice's interest on n1", func() bool {
		svc.Publish(mulchat.UserSubject(alice, "msg"), []byte("across"))
		_, err := sub.NextMsg(100 * time.Millisecond)
		return err == nil
	})

	c.ok("", "--nats-url", servers[0].ClientURL(), "creds", "revoke", "alice")
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the revocation pushed to n1 did not close alice's connection on n2")
	}
	for _, s := range servers {
		if nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(creds), nats.NoReconnect()); err == nil {
			nc.Close()
			t.Fatalf("%s accepted a revoked credential", s.Name())
		}
	}
}

// processConfig has nats-server parse a printed configuration.
func processConfig(t *testing.T, text string) *server.Options {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server cannot parse the config: %v\n%s", err, text)
	}
	return opts
}

// startServer starts a nats-server in process and stops it when the test
// ends.
func startServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server refuses the config: %v", err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(20 * time.Second) {
		t.Fatal("nats-server from the config did not become ready")
	}
	return s
}

// serviceConn connects to url as a chat-account service user signed by the
// authority of the CLI's data directory.
func serviceConn(t *testing.T, c *cli, url string) *nats.Conn {
	t.Helper()
	ctx := context.Background()
	cfg := app.Config{DataDir: c.dataDir}
	db, err := app.OpenStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, err := app.OpenAuthority(ctx, cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	token, seed, err := a.ServiceCredentials(ctx, "test", false)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.UserJWTAndSeed(token, string(seed)))
	if err != nil {
		t.Fatalf("service user refused: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// userID looks a user's id up in the CLI's database.
func userID(t *testing.T, c *cli, username string) int64 {
	t.Helper()
	db, err := app.OpenStore(context.Background(), app.Config{DataDir: c.dataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	u, err := db.UserByUsername(context.Background(), username)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

// waitFor polls cond until it holds (testenv.Eventually).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, what, cond)
}

// TestServeWebSocketTLSSettings: --nats-ws-tls-cert/--nats-ws-tls-key and
// their MULCHAT_* variables reach the embedded server, which refuses to
// start without a loadable certificate (the wss path itself is tested in
// internal/app, TestWebSocketTLS).
func TestServeWebSocketTLSSettings(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	serve := []string{"serve", "--http-addr", "127.0.0.1:0", "--nats-port", "-1", "--nats-ws-port", "-1"}
	newCLI(t).fails("go together", "", append(serve, "--nats-ws-tls-cert", missing)...)
	newCLI(t, "MULCHAT_NATS_WS_TLS_CERT="+missing, "MULCHAT_NATS_WS_TLS_KEY="+missing).
		fails("cannot load the WebSocket TLS certificate", "", serve...)
	newCLI(t).fails("needs a WebSocket port", "", "serve", "--http-addr", "127.0.0.1:0", "--nats-port", "-1",
		"--nats-ws-port", "0", "--nats-ws-tls-cert", missing, "--nats-ws-tls-key", missing)
}
