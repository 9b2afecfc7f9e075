package main

import (
	"encoding/json"
	"github.com/mulchat/mulchat/internal/testenv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/client/clienttest"
)

func waitForOutput(t *testing.T, b *testenv.LogBuffer, re string) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(20 * time.Second)
	for !rx.MatchString(b.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("output never matched %q:\n%s", re, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two `mulchat chat` processes talk through a running server: one reads its
// input from a pipe held open, the other from a finished pipe.
func TestChatCommandTwoProcesses(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})

	bob := exec.Command(binary, "chat", "--server", srv.URL(), "--user", "bob", "--register", "--room", "lobby", "--create")
	bob.Env = append(os.Environ(), "MULCHAT_PASSWORD="+pw, "XDG_CONFIG_HOME="+t.TempDir())
	bobIn, err := bob.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var bobOut, bobErr testenv.LogBuffer
	bob.Stdout, bob.Stderr = &bobOut, &bobErr
	if err := bob.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bob.Process.Kill(); _ = bob.Wait() })
	waitForOutput(t, &bobOut, `#lobby: no messages yet`)

	alice := newCLI(t, "MULCHAT_PASSWORD="+pw)
	out := alice.ok("hello from a pipe\n/who\n", "chat", "--server", srv.URL(), "--user", "alice", "--register", "--room", "lobby").stdout
	if !strings.Contains(out, "#lobby: 2 members: alice, bob (owner)") {
		t.Errorf("alice's /who output:\n%s", out)
	}
	waitForOutput(t, &bobOut, `(?m)^\d\d:\d\d alice: hello from a pipe$`)

	if _, err := io.WriteString(bobIn, "bye alice\n/quit\n"); err != nil {
		t.Fatal(err)
	}
	if err := bob.Wait(); err != nil {
		t.Fatalf("bob exited with %v\nstderr: %s", err, bobErr.String())
	}
	hist := alice.ok("", "chat", "--server", srv.URL(), "--user", "alice", "--room", "lobby").stdout
	if !regexp.MustCompile(`(?s)last 2 messages\n\d\d:\d\d alice: hello from a pipe\n\d\d:\d\d bob: bye alice\n`).MatchString(hist) {
		t.Errorf("history shown at start:\n%s", hist)
	}
	if strings.Contains(out+hist+bobOut.String()+bobErr.String(), pw) {
		t.Error("a password was printed")
	}
}

func TestChatCommandErrors(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	c := newCLI(t)
	c.fails("set MULCHAT_PASSWORD", "", "chat", "--server", srv.URL(), "--user", "alice")
	c.fails("--user is required", "", "chat", "--server", srv.URL())
	withPW := newCLI(t, "MULCHAT_PASSWORD="+pw)
	withPW.fails("invalid username or password", "", "chat", "--server", srv.URL(), "--user", "nobody")
	withPW.fails("must look like http://HOST:PORT", "", "chat", "--server", "nats://x", "--user", "nobody")
}

func TestBenchCommand(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	c := newCLI(t)
	report := filepath.Join(t.TempDir(), "bench.json")
	r := c.ok("", "bench", "--server", srv.URL(), "--rooms", "2", "--members", "2", "--senders", "1",
		"--messages", "5", "--rate", "100", "--report", report, "--quiet")
	for _, want := range []string{"send → delivery", "20 of 20 expected (complete)", "sent 10, acked 10, failed 0"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bench table lacks %q:\n%s", want, r.stdout)
		}
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Acked     int  `json:"acked"`
		Delivered int  `json:"deliveries"`
		Complete  bool `json:"complete"`
		Delivery  struct {
			P99 float64 `json:"p99_ms"`
		} `json:"send_to_delivery"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, b)
	}
	if rep.Acked != 10 || rep.Delivered != 20 || !rep.Complete || rep.Delivery.P99 <= 0 {
		t.Errorf("report %+v", rep)
	}

	c.fails("not a loopback address", "", "bench", "--server", "http://192.0.2.1:8080")
}
