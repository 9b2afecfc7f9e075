package authority

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestExternalServerProcess runs the path of an external deployment: a
// nats-server binary built from the same module, started as its own process
// with the configuration ServerConfig prints. Issued credentials connect, and
// a revocation pushed over $SYS.REQ.CLAIMS.UPDATE closes the live connection
// and refuses the key afterwards.
func TestExternalServerProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a nats-server binary")
	}
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	a := openAuthority(t, db, randomMasterKey(t))
	u := createUser(t, db, "kate")
	dir := t.TempDir()

	bin := filepath.Join(dir, "nats-server")
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(goCmd, "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("building nats-server: %v\n%s", err, out)
	}
	text, err := a.ServerConfig(ctx, ServerConfigOptions{
		Host: "127.0.0.1", Port: -1, WSPort: -1,
		ResolverDir:  filepath.Join(dir, "resolver"),
		JetStreamDir: filepath.Join(dir, "js"),
		ServerName:   "external",
	})
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	portsDir := filepath.Join(dir, "ports")
	if err := os.Mkdir(portsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf, "--ports_file_dir", portsDir)
	logFile, _ := os.Create(filepath.Join(dir, "server.log"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logFile.Close()
	})
	url := waitPortsFile(t, portsDir, cmd.Process.Pid, filepath.Join(dir, "server.log"))

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

// waitPortsFile waits for the server's ports file and returns its client
// URL. The wait bounds start-up, not a speed.
func waitPortsFile(t *testing.T, dir string, pid int, logPath string) string {
	t.Helper()
	path := filepath.Join(dir, "nats-server_"+strconv.Itoa(pid)+".ports")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			var p server.Ports
			if json.Unmarshal(b, &p) == nil && len(p.Nats) > 0 {
				return p.Nats[0]
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(logPath)
	t.Fatalf("nats-server wrote no ports file\n%s", log)
	return ""
}
