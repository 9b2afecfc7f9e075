package authority

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
	"github.com/nats-io/nats.go"
)

// TestExternalServerProcess runs the path of an external deployment: a
// nats-server binary built from the same module, started as its own process
// with the configuration ServerConfig prints. Issued credentials connect, and
// a revocation pushed over $SYS.REQ.CLAIMS.UPDATE closes the live connection
// and refuses the key afterwards.
func TestExternalServerProcess(t *testing.T) {
	bin := testenv.NATSServerBinary(t)
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	a := openAuthority(t, db, randomMasterKey(t))
	u := createUser(t, db, "kate")
	dir := t.TempDir()
	text, err := a.ServerConfig(ctx, ServerConfigOptions{
		Host: "127.0.0.1", Port: -1, WSPort: -1,
		ResolverDir:  filepath.Join(dir, "resolver"),
		JetStreamDir: filepath.Join(dir, "js"),
		ServerName:   "external",
	})
	if err != nil {
		t.Fatal(err)
	}
	url := testenv.StartNATSServerProcess(t, bin, dir, text)

	wireServices(t, a, url)
	ic, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	creds := writeCreds(t, ic.Creds)
	closed := connectWatched(t, url, creds)
	if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	closedWithinASecond(t, closed, "the revoked connection to the external server")
	if _, err := nats.Connect(url, nats.UserCredentials(creds), nats.NoReconnect()); err == nil {
		t.Fatal("external server accepted a revoked credential")
	}
	// The pushed JWT was persisted in the server's resolver directory.
	if _, err := os.Stat(filepath.Join(dir, "resolver", a.ChatAccountPublicKey()+".jwt")); err != nil {
		t.Errorf("pushed account JWT not in the resolver directory: %v", err)
	}
}
