package client_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/client"
	"github.com/mulchat/mulchat/internal/client/clienttest"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// session logs an existing user in with the key file and connects.
func keyFileSession(t *testing.T, srv *clienttest.Server, name, keyFile string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{ServerURL: srv.URL(), KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Login(context.Background(), name, password); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnsureCredential(context.Background()); err != nil {
		t.Fatalf("EnsureCredential: %v", err)
	}
	connect(t, c)
	return c
}

func chatRevocations(t *testing.T, srv *clienttest.Server) int {
	t.Helper()
	acct, err := srv.Main.Store.NATSAccountByPublicKey(context.Background(), srv.Main.Authority.ChatAccountPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(acct.JWT)
	if err != nil {
		t.Fatal(err)
	}
	return len(ac.Revocations)
}

func keyInFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return pub
}

// A second session with the same key file presents the same key: the server
// refreshes its JWT and revokes nothing. After a revocation the next session
// puts a new key in the file.
func TestKeyFileReusedAcrossSessions(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	keyFile := filepath.Join(t.TempDir(), "conf", "mulchat", "alice.nk")
	first, _ := newUser(t, srv, "alice", func(c *client.Config) { c.KeyFile = keyFile })
	if _, err := first.EnsureCredential(context.Background()); err != nil {
		t.Fatal(err)
	}
	connect(t, first)
	key := first.PublicKey()
	st, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || keyInFile(t, keyFile) != key {
		t.Fatalf("key file mode %v, holds the session's key: %v", st.Mode().Perm(), keyInFile(t, keyFile) == key)
	}
	if dst, _ := os.Stat(filepath.Dir(keyFile)); dst.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %v", dst.Mode().Perm())
	}
	_ = first.Close()

	for range 3 {
		c := keyFileSession(t, srv, "alice", keyFile)
		if c.PublicKey() != key {
			t.Fatal("a later session used another key")
		}
		_ = c.Close()
	}
	if n := chatRevocations(t, srv); n != 0 {
		t.Fatalf("%d revocations after sessions with one key, want 0", n)
	}

	// A revoked key is refused by the server; the next session gets a new
	// one and stores it.
	last := keyFileSession(t, srv, "alice", keyFile)
	if err := last.RevokeCredential(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = last.Close()
	after := keyFileSession(t, srv, "alice", keyFile)
	if after.PublicKey() == key || keyInFile(t, keyFile) != after.PublicKey() {
		t.Fatal("after a revocation the session did not move to a new stored key")
	}
}

func TestKeyFileRefused(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	dir := t.TempDir()
	newUser(t, srv, "alice", nil)
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	acct, _ := nkeys.CreateAccount()
	acctSeed, _ := acct.Seed()
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    string
	}{
		{"readable by others", seed, 0o644, "chmod 600"},
		{"not a seed", []byte("SUAnot-a-seed-at-all"), 0o600, "does not hold a NATS user seed"},
		{"account seed", acctSeed, 0o600, "does not hold a NATS user seed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".nk")
			if err := os.WriteFile(path, tt.content, tt.mode); err != nil {
				t.Fatal(err)
			}
			_ = os.Chmod(path, tt.mode)
			c, err := client.New(client.Config{ServerURL: srv.URL(), KeyFile: path})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Login(context.Background(), "alice", password); err != nil {
				t.Fatal(err)
			}
			_, err = c.EnsureCredential(context.Background())
			if mulchat.ErrorCode(err) != mulchat.EINVALID || !strings.Contains(mulchat.ErrorMessage(err), tt.want) {
				t.Fatalf("err = %v, want EINVALID with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), string(tt.content)) {
				t.Fatal("the error quotes the key file")
			}
		})
	}
}

func TestDefaultKeyFile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", dir)
	got, err := client.DefaultKeyFile("http://127.0.0.1:8080/", "alice")
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.UserConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(base, "mulchat", "127.0.0.1_8080-alice.nk"); got != want {
		t.Errorf("DefaultKeyFile = %s, want %s", got, want)
	}
	got, _ = client.DefaultKeyFile("https://chat.example.org/sub/path", "a/b")
	if filepath.Base(got) != "chat.example.org_sub_path-a_b.nk" {
		t.Errorf("DefaultKeyFile with a path and odd user = %s", got)
	}
	if _, err := client.DefaultKeyFile("nats://x", "alice"); mulchat.ErrorCode(err) != mulchat.EINVALID {
		t.Errorf("bad URL: err = %v", err)
	}
}
