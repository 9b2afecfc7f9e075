package authority

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/natsd"
	"github.com/nats-io/nats.go"
)

// clock is a settable Config.Now for tests that move time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *clock { return &clock{now: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func randomMasterKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, MasterKeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func openAuthority(t testing.TB, store mulchat.Store, key []byte, mod ...func(*Config)) *Authority {
	t.Helper()
	cfg := Config{Store: store, MasterKey: key}
	for _, m := range mod {
		m(&cfg)
	}
	a, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return a
}

func createUser(t testing.TB, store mulchat.Store, name string) *mulchat.User {
	t.Helper()
	u := &mulchat.User{Username: name, HashedPassword: "$argon2id$v=19$m=65536,t=1,p=2$c2FsdA$aGFzaA", IsActive: true}
	if err := store.CreateUser(context.Background(), u); err != nil {
		t.Fatalf("CreateUser %s: %v", name, err)
	}
	return u
}

// startNATS starts the embedded server configured from the authority's own
// output, as mulchat serve does.
func startNATS(t testing.TB, a *Authority) *natsd.Server {
	t.Helper()
	jwts, err := a.AccountJWTs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, err := natsd.Start(natsd.Options{
		DataDir:       t.TempDir(),
		Port:          -1,
		OperatorJWT:   a.OperatorJWT(),
		SystemAccount: a.SystemAccountPublicKey(),
		AccountJWTs:   jwts,
		JetStream:     true,
	})
	if err != nil {
		t.Fatalf("natsd.Start: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// wireServices connects the SYS service user, sets the claims pusher, and
// returns a chat-account service connection.
func wireServices(t testing.TB, a *Authority, url string) (sys, svc *nats.Conn) {
	t.Helper()
	ctx := context.Background()
	sysJWT, sysSeed, err := a.ServiceCredentials(ctx, "authority", true)
	if err != nil {
		t.Fatal(err)
	}
	sys, err = nats.Connect(url, nats.UserJWTAndSeed(sysJWT, string(sysSeed)))
	if err != nil {
		t.Fatalf("connect SYS service user: %v", err)
	}
	t.Cleanup(sys.Close)
	a.SetPusher(NewClaimsPusher(sys))
	su, err := a.NewServiceUser("router", false)
	if err != nil {
		t.Fatal(err)
	}
	svc, err = nats.Connect(url, su.Option())
	if err != nil {
		t.Fatalf("connect chat service user: %v", err)
	}
	t.Cleanup(svc.Close)
	return sys, svc
}

func writeCreds(t testing.TB, creds []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// connectWatched connects to url with the .creds file at path, without
// reconnecting, for a test that expects the server to close the connection:
// the returned channel is closed when it does. The connection is closed when
// the test ends.
func connectWatched(t testing.TB, url, path string) <-chan struct{} {
	t.Helper()
	closed := make(chan struct{})
	nc, err := nats.Connect(url, nats.UserCredentials(path), nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("connecting with the issued credential: %v", err)
	}
	t.Cleanup(nc.Close)
	return closed
}

// closedWithinASecond fails the test unless closed is closed within a
// second: the bound issue 3 sets for a revoked key's connections.
func closedWithinASecond(t testing.TB, closed <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-closed:
	case <-time.After(time.Second):
		t.Fatalf("%s is still open a second later", what)
	}
}

// asyncErrors returns a nats option that sends the connection's async errors
// to the returned channel.
func asyncErrors() (nats.Option, chan error) {
	ch := make(chan error, 32)
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case ch <- err:
		default:
		}
	}), ch
}

// waitPermissionViolation waits for the server's permissions violation about
// subject. The wait bounds a functional outcome, not a speed.
func waitPermissionViolation(t *testing.T, errs chan error, subject string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
			t.Logf("other async error: %v", err)
		case <-deadline:
			t.Fatalf("no permissions violation for %q", subject)
		}
	}
}

var discardLogger = slog.New(slog.DiscardHandler)
