package chatcli_test

import (
	"context"
	"github.com/mulchat/mulchat/internal/testenv"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/term"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/client/chatcli"
	"github.com/mulchat/mulchat/internal/client/clienttest"
)

const password = "correct horse battery"

// output is a goroutine-safe buffer the chat session prints into.
type output struct{ testenv.LogBuffer }

func (o *output) waitFor(t *testing.T, re string) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(15 * time.Second)
	for !rx.MatchString(o.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("output never matched %q:\n%s", re, o.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type running struct {
	out  *output
	in   *io.PipeWriter
	done chan error
}

func start(t *testing.T, srv *clienttest.Server, o chatcli.Options) *running {
	t.Helper()
	pr, pw := io.Pipe()
	r := &running{out: &output{}, in: pw, done: make(chan error, 1)}
	o.ServerURL, o.Password, o.In, o.Out, o.Location = srv.URL(), password, pr, r.out, time.UTC
	if o.KeyFile == "" {
		// Never the user's real configuration directory.
		o.KeyFile = filepath.Join(t.TempDir(), o.Username+".nk")
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { r.done <- chatcli.Run(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		pw.Close()
		<-r.done
	})
	return r
}

func (r *running) say(t *testing.T, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(r.in, l+"\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTwoTerminalsChat(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	bob := start(t, srv, chatcli.Options{Username: "bob", Register: true, Room: "lobby", Create: true})
	bob.out.waitFor(t, `#lobby: no messages yet`)
	alice := start(t, srv, chatcli.Options{Username: "alice", Register: true, Room: "lobby"})
	alice.out.waitFor(t, `joined #lobby`)

	alice.say(t, "hello from alice", "evil \x1b[2J clear", "/who")
	bob.out.waitFor(t, `(?m)^\d\d:\d\d alice: hello from alice$`)
	bob.out.waitFor(t, "(?m)^\\d\\d:\\d\\d alice: evil \uFFFD\\[2J clear$")
	alice.out.waitFor(t, `#lobby: 2 members: alice, bob \(owner\)`)

	bob.say(t, "hi alice", "/rooms", "/history 5", "/nonsense", "//slash")
	alice.out.waitFor(t, `(?m)^\d\d:\d\d bob: hi alice$`)
	bob.out.waitFor(t, `(?m)^\* #lobby \(public, owner\)$`)
	bob.out.waitFor(t, `#lobby: last 3 messages`)
	bob.out.waitFor(t, `! unknown command /nonsense`)
	alice.out.waitFor(t, `(?m)^\d\d:\d\d bob: /slash$`)
	if strings.Contains(bob.out.String()+alice.out.String(), password) {
		t.Error("a password was printed")
	}

	alice.say(t, "/quit")
	if err := <-alice.done; err != nil {
		t.Errorf("alice's session ended with %v", err)
	}
	alice.done <- nil // for the cleanup
}

func TestChatStartErrors(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	tests := []struct {
		name string
		o    chatcli.Options
		code string
	}{
		{"unknown user", chatcli.Options{Username: "nobody"}, mulchat.EUNAUTHORIZED},
		{"missing room without --create", chatcli.Options{Username: "dave", Register: true, Room: "nowhere"}, mulchat.ENOTFOUND},
		{"invalid room name", chatcli.Options{Username: "erin", Register: true, Room: "No Spaces", Create: true}, mulchat.EINVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.ServerURL, o.Password, o.In, o.Out = srv.URL(), password, strings.NewReader(""), io.Discard
			o.NewKey = true
			err := chatcli.Run(context.Background(), o)
			if got := mulchat.ErrorCode(err); got != tt.code {
				t.Fatalf("Run: %v (code %q), want %q", err, got, tt.code)
			}
		})
	}
}

// With a line editor (x/term's Terminal, as `mulchat chat` uses on a
// terminal), lines end with CR, the prompt names the current room, and
// Ctrl-D ends the session.
func TestLineEditorInput(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	pr, pw := io.Pipe()
	out := &output{}
	tm := term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{pr, out}, "> ")
	done := make(chan error, 1)
	go func() {
		done <- chatcli.Run(context.Background(), chatcli.Options{ServerURL: srv.URL(), Username: "alice", Password: password,
			Register: true, Room: "lobby", Create: true, Lines: tm, Out: tm, Location: time.UTC, NewKey: true})
	}()
	out.waitFor(t, `#lobby> `)
	if _, err := io.WriteString(pw, "typed on a terminal\r"); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, `\d\d:\d\d alice: typed on a terminal`)
	if _, err := io.WriteString(pw, "\x04"); err != nil { // Ctrl-D
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("session ended with %v", err)
	}
}

// Two sessions of one user with the same key file present the same NATS
// key, so the second refreshes the credential instead of replacing it.
func TestChatKeepsKeyBetweenSessions(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	keyFile := filepath.Join(t.TempDir(), "alice.nk")
	keyOf := func(o chatcli.Options) string {
		t.Helper()
		var out output
		o.ServerURL, o.Password, o.In, o.Out, o.KeyFile = srv.URL(), password, strings.NewReader("/quit\n"), &out, keyFile
		if err := chatcli.Run(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`NATS key (\w+)…`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no key in the output:\n%s", out.String())
		}
		return m[1]
	}
	first := keyOf(chatcli.Options{Username: "alice", Register: true})
	if second := keyOf(chatcli.Options{Username: "alice"}); second != first {
		t.Fatalf("second session used key %s…, first %s…", second, first)
	}
}
