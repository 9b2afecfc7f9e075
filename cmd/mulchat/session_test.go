package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
)

// TestSessionListAndKick lists sessions from the table and kicks a live
// connection of a running server through the CLI.
func TestSessionListAndKick(t *testing.T) {
	c := newCLI(t, "MULCHAT_PASSWORD="+pw)
	c.ok("", "user", "create", "alice")
	m := c.serve("")
	ctx := context.Background()

	file := filepath.Join(t.TempDir(), "alice.creds")
	c.ok("", "creds", "issue", "alice", "-o", file, "--ttl", "1h")
	closed := make(chan struct{})
	nc, err := nats.Connect(m.NATSClientURL(), nats.UserCredentials(file), nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// A closed row, written directly, shows with --all only.
	db, err := sqlstore.Open(ctx, filepath.Join(c.dataDir, "mulchat.db"))
	if err != nil {
		t.Fatal(err)
	}
	u, err := db.UserByUsername(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	old := &mulchat.AuthSession{UserID: u.ID, ClientID: "OLD/1", ServerID: "OLD", CID: 1, UserAgent: "old-client (go/1.0)"}
	if err := db.CreateAuthSession(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := db.CloseAuthSession(ctx, "OLD", 1, time.Now(), "Client Closed"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	out := c.ok("", "session", "list", "alice", "--all").stdout
	if !strings.Contains(out, "old-client (go/1.0)") || !strings.Contains(out, "closed: Client Closed") {
		t.Fatalf("session list --all:\n%s", out)
	}
	if out := c.ok("", "session", "list", "alice").stdout; strings.Contains(out, "OLD/1") {
		t.Fatalf("closed session listed without --all:\n%s", out)
	}
	c.fails("not found", "", "session", "kick", "999999")
	c.fails("SESSION_ID or --user", "", "session", "kick")

	c.ok("", "session", "kick", "--user", "alice")
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("kicked connection still open")
	}
}
