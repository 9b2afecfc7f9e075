package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
	"github.com/nats-io/nats.go"
)

// binary is the mulchat binary built once by TestMain; CLI behaviour is
// checked by running it.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mulchat-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mulchat")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building mulchat: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs the binary with a clean MULCHAT_* environment plus env.
type cli struct {
	t       *testing.T
	dataDir string
	env     []string
}

func newCLI(t *testing.T, env ...string) *cli {
	return &cli{t: t, dataDir: t.TempDir(), env: env}
}

type result struct {
	code           int
	stdout, stderr string
}

func (c *cli) run(stdin string, args ...string) result {
	c.t.Helper()
	cmd := exec.Command(binary, append([]string{"--data-dir", c.dataDir}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MULCHAT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Client key files (mulchat chat keeps its nkey seed under the user's
	// config directory) go to the test's own directory, never the real one.
	cmd.Env = append(cmd.Env, "XDG_CONFIG_HOME="+filepath.Join(c.dataDir, "config"))
	cmd.Env = append(cmd.Env, c.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("running mulchat %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func (c *cli) ok(stdin string, args ...string) result {
	c.t.Helper()
	r := c.run(stdin, args...)
	if r.code != 0 {
		c.t.Fatalf("mulchat %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// fails runs a command that must exit 1 with a message containing want.
func (c *cli) fails(want string, stdin string, args ...string) result {
	c.t.Helper()
	r := c.run(stdin, args...)
	if r.code != 1 {
		c.t.Fatalf("mulchat %v: exit %d, want 1\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		c.t.Fatalf("mulchat %v: stderr %q lacks %q", args, r.stderr, want)
	}
	return r
}

const pw = "correct horse battery"

// serve starts a server (app.Start, what "mulchat serve" runs) on the CLI's
// data directory and databaseURL ("" = the SQLite default there), with free
// ports; it is closed when the test ends.
func (c *cli) serve(databaseURL string) *app.Main {
	c.t.Helper()
	m, err := app.Start(context.Background(), app.Config{DataDir: c.dataDir, DatabaseURL: databaseURL, HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { m.Close() })
	return m
}

func TestUserCreateList(t *testing.T) {
	c := newCLI(t, "MULCHAT_PASSWORD="+pw)
	c.ok("", "user", "create", "alice", "--email", "alice@example.com")
	stdin := newCLI(t)
	stdin.dataDir = c.dataDir
	stdin.ok(pw+"\n", "user", "create", "bob", "--password-stdin")

	list := c.ok("", "user", "list").stdout
	for _, want := range []string{"alice", "alice@example.com", "bob", "none"} {
		if !strings.Contains(list, want) {
			t.Fatalf("user list lacks %q:\n%s", want, list)
		}
	}

	c.fails("already taken", "", "user", "create", "alice")
	c.fails("username may contain only", "", "user", "create", "bad name")
	c.fails("username may contain only", "", "user", "create", "'; DROP TABLE users;--")
	stdin.fails("at least 10 characters", "short\n", "user", "create", "carol", "--password-stdin")
	stdin.fails("no password", "", "user", "create", "carol")
	c.fails("no user named", "", "user", "disable", "nobody")
	if after := c.ok("", "user", "list").stdout; after != list {
		t.Fatalf("failed commands changed the users:\n%s\n%s", list, after)
	}

	c.ok("", "user", "disable", "bob")
	if !strings.Contains(c.ok("", "user", "list").stdout, "false") {
		t.Fatal("bob is not disabled")
	}
	newPW := newCLI(t, "MULCHAT_PASSWORD=another long password")
	newPW.dataDir = c.dataDir
	newPW.ok("", "user", "passwd", "alice")

	// Rooms.
	c.ok("", "room", "create", "general", "--owner", "alice")
	c.ok("", "room", "create", "secret", "--owner", "alice", "--private")
	c.fails("room name may contain only", "", "room", "create", "a.b", "--owner", "alice")
	c.fails("--owner is required", "", "room", "create", "nobody-owns")
	c.ok("", "room", "add-member", "secret", "bob", "--role", "reader")
	c.fails("already a member", "", "room", "add-member", "secret", "bob")
	rooms := c.ok("", "room", "list").stdout
	if !strings.Contains(rooms, "general") || !strings.Contains(rooms, "secret") {
		t.Fatalf("room list:\n%s", rooms)
	}
	c.ok("", "room", "remove-member", "secret", "bob")
	c.fails("not a member", "", "room", "remove-member", "secret", "bob")
	c.ok("", "room", "delete", "general")
	c.fails("no room", "", "room", "delete", "general")

	st := c.ok("", "migrate", "status").stdout
	if !strings.Contains(st, "VERSION") || strings.Contains(st, "pending") {
		t.Fatalf("migrate status:\n%s", st)
	}
}

func TestUserCreatePostgres(t *testing.T) {
	url := sqltest.NewPostgresDatabaseURL(t)
	c := newCLI(t, "MULCHAT_PASSWORD="+pw, "MULCHAT_DATABASE_URL="+url)
	c.ok("", "user", "create", "alice")
	if !strings.Contains(c.ok("", "user", "list").stdout, "alice") {
		t.Fatal("alice missing on PostgreSQL")
	}
	c.ok("", "creds", "issue", "alice", "-o", filepath.Join(c.dataDir, "alice.creds"))
}

// TestCredsIssueAgainstRunningServer issues a .creds file with the CLI while
// a server runs on the same data directory, connects with it through the
// official client, revokes it with the CLI and checks it is refused.
func TestCredsIssueAgainstRunningServer(t *testing.T) {
	c := newCLI(t, "MULCHAT_PASSWORD="+pw)
	c.ok("", "user", "create", "alice")

	m := c.serve("")

	file := filepath.Join(t.TempDir(), "alice.creds")
	c.ok("", "creds", "issue", "alice", "-o", file, "--ttl", "1h")
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("creds file mode %v, want 0600", fi.Mode().Perm())
	}
	nc, err := nats.Connect(m.NATSClientURL(), nats.UserCredentials(file), nats.NoReconnect())
	if err != nil {
		t.Fatalf("connecting with the issued .creds file: %v", err)
	}
	if err := nc.Publish("chat.send.1.1", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })

	if r := c.ok("", "creds", "verify", file).stdout; !strings.Contains(r, "valid") {
		t.Fatalf("verify: %s", r)
	}

	// Overwriting needs --force.
	before, _ := os.ReadFile(file)
	c.fails("exists; use --force", "", "creds", "issue", "alice", "-o", file)
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Fatal("refused issue changed the file")
	}

	// An unwritable output path fails before the credential is replaced:
	// the file issued above stays the user's current credential.
	c.fails("cannot create", "", "creds", "issue", "alice", "-o", filepath.Join(t.TempDir(), "missing", "x.creds"))
	if r := c.ok("", "creds", "verify", file).stdout; !strings.Contains(r, "current: true") {
		t.Fatalf("a failed issue replaced the credential: %s", r)
	}

	// Tampered and truncated files are clear errors.
	tampered := filepath.Join(t.TempDir(), "tampered.creds")
	// Flip one character of the JWT's signature.
	b := bytes.Clone(before)
	i := bytes.Index(b, []byte("\n------END NATS USER JWT"))
	if b[i-5] == 'A' {
		b[i-5] = 'B'
	} else {
		b[i-5] = 'A'
	}
	os.WriteFile(tampered, b, 0o600)
	r := c.run("", "creds", "verify", tampered)
	if r.code != 1 || strings.Contains(r.stderr, "panic") || len(strings.TrimSpace(r.stderr)) == 0 {
		t.Fatalf("verify tampered: exit %d, stderr %q", r.code, r.stderr)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.creds")
	os.WriteFile(truncated, before[:len(before)/3], 0o600)
	r = c.run("", "creds", "verify", truncated)
	if r.code != 1 || strings.Contains(r.stderr, "panic") || len(strings.TrimSpace(r.stderr)) == 0 {
		t.Fatalf("verify truncated: exit %d, stderr %q", r.code, r.stderr)
	}
	c.fails("cannot open", "", "creds", "verify", filepath.Join(t.TempDir(), "missing.creds"))

	// Revoking pushes to the running server, which drops the connection and
	// refuses the key from then on.
	c.ok("", "creds", "revoke", "alice")
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked connection was not closed")
	}
	if nc2, err := nats.Connect(m.NATSClientURL(), nats.UserCredentials(file), nats.NoReconnect()); err == nil {
		nc2.Close()
		t.Fatal("a revoked credential was accepted")
	}
	c.fails("revoked", "", "creds", "verify", file)

	// A fresh credential for the same user works again.
	c.ok("", "creds", "issue", "alice", "-o", file, "--force")
	nc3, err := nats.Connect(m.NATSClientURL(), nats.UserCredentials(file), nats.NoReconnect())
	if err != nil {
		t.Fatalf("connecting with the re-issued credential: %v", err)
	}
	nc3.Close()
}

func TestWrongMasterKey(t *testing.T) {
	c := newCLI(t, "MULCHAT_PASSWORD="+pw)
	c.ok("", "user", "create", "alice")
	c.ok("", "creds", "issue", "alice", "-o", filepath.Join(c.dataDir, "a.creds")) // creates the key and the operator

	var k [32]byte
	rand.Read(k[:])
	wrong := newCLI(t, "MULCHAT_MASTER_KEY="+hex.EncodeToString(k[:]))
	wrong.dataDir = c.dataDir
	r := wrong.fails("master key", "", "creds", "issue", "alice", "-o", filepath.Join(c.dataDir, "b.creds"))
	if strings.Contains(r.stderr, hex.EncodeToString(k[:])) {
		t.Fatal("the error shows the key")
	}
	wrong.fails("master key", "", "serve", "--http-addr", "127.0.0.1:0", "--nats-port", "-1", "--nats-ws-port", "-1")

	// A missing key file is an error, never a silent new key.
	if err := os.Remove(filepath.Join(c.dataDir, "master.key")); err != nil {
		t.Fatal(err)
	}
	c.fails("master key", "", "creds", "issue", "alice", "-o", filepath.Join(c.dataDir, "c.creds"))
	if _, err := os.Stat(filepath.Join(c.dataDir, "master.key")); err == nil {
		t.Fatal("a new master key was created over existing encrypted keys")
	}
}

func TestServerConfig(t *testing.T) {
	c := newCLI(t)
	out := c.ok("", "nats", "server-config", "--ws-port", "8443").stdout
	for _, want := range []string{"operator", "system_account", "resolver", "websocket"} {
		if !strings.Contains(out, want) {
			t.Fatalf("server-config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "SO") && strings.Contains(out, "SA") && strings.Contains(out, "SEED") {
		t.Fatal("server-config holds a seed")
	}
	file := filepath.Join(t.TempDir(), "nats.conf")
	c.ok("", "nats", "server-config", "-o", file)
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server-config file: %v %v", fi, err)
	}
	c.fails("exists; use --force", "", "nats", "server-config", "-o", file)
	c.ok("", "nats", "server-config", "-o", file, "--force", "--port", "4333")
	if b, _ := os.ReadFile(file); !strings.Contains(string(b), "4333") {
		t.Fatal("--force did not replace the file")
	}
}

func TestMigrateUpDownStatus(t *testing.T) {
	c := newCLI(t)
	c.ok("", "migrate", "up")
	if st := c.ok("", "migrate", "status").stdout; strings.Contains(st, "pending") {
		t.Fatalf("pending after up:\n%s", st)
	}
	c.ok("", "migrate", "down")
	if st := c.ok("", "migrate", "status").stdout; !strings.Contains(st, "pending") {
		t.Fatalf("nothing pending after down:\n%s", st)
	}
	// serve --no-migrate refuses the stale schema, naming the fix.
	c.fails("migrate up", "", "serve", "--no-migrate", "--http-addr", "127.0.0.1:0", "--nats-port", "-1", "--nats-ws-port", "-1")
	c.ok("", "migrate", "up")
}

func TestBadFlags(t *testing.T) {
	c := newCLI(t)
	c.fails("log-level", "", "--log-level", "loud", "serve")
	c.fails("invalid argument", "", "serve", "--nats-port", "abc")
}

// TestServeAndSIGTERM runs `mulchat serve` on free ports with its settings
// from MULCHAT_* variables, waits for it to serve, and stops it with SIGTERM:
// it must exit 0 after a clean shutdown.
func TestServeAndSIGTERM(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(binary, "serve")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MULCHAT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "MULCHAT_DATA_DIR="+dir, "MULCHAT_HTTP_ADDR=127.0.0.1:0",
		"MULCHAT_NATS_PORT=-1", "MULCHAT_NATS_WS_PORT=-1", "MULCHAT_LOG_FORMAT=json")
	var stderr testenv.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()

	// The log line "mulchat serving" names the HTTP URL actually used.
	var httpURL string
	deadline := time.Now().Add(30 * time.Second)
	for httpURL == "" {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", stderr.String())
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited early: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		for _, line := range strings.Split(stderr.String(), "\n") {
			var rec struct {
				Msg  string `json:"msg"`
				HTTP string `json:"http"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "mulchat serving" {
				httpURL = rec.HTTP
			}
		}
	}
	resp, err := http.Get(httpURL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Fatalf("no shutdown log:\n%s", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, app.RunningNATSURLFile)); err == nil {
		t.Fatal("nats.url left behind after shutdown")
	}
}
