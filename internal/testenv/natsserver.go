package testenv

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// NATSServerBinary builds the nats-server of the module's go.mod (the one the
// embedded server links) into a temporary directory and returns its path,
// for tests of the external-server deployment, where nats-server runs as its
// own process. It skips the test under -short.
func NATSServerBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs a nats-server binary")
	}
	bin := filepath.Join(t.TempDir(), "nats-server")
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(goCmd, "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("building nats-server: %v\n%s", err, out)
	}
	return bin
}

// StartNATSServerProcess runs the nats-server binary bin with the
// configuration text, written to dir/nats.conf (0600), and returns its client
// URL, read from the ports file the server writes once it listens. Its output
// goes to dir/server.log, shown if it never listens. The server is stopped
// with SIGTERM when the test ends.
func StartNATSServerProcess(t testing.TB, bin, dir, text string) string {
	t.Helper()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	portsDir := filepath.Join(dir, "ports")
	if err := os.Mkdir(portsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf, "--ports_file_dir", portsDir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logFile.Close()
	})
	// The ports file is nats-server's server.Ports; only its client URLs
	// are read, so this package needs no nats-server import.
	path := filepath.Join(portsDir, "nats-server_"+strconv.Itoa(cmd.Process.Pid)+".ports")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			var p struct {
				Nats []string `json:"nats"`
			}
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
