package httpapi_test

import (
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/httpapi"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/nats-io/nkeys"
)

// testClock is a settable Config.Now.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func withClock(c *testClock, cacheTTL time.Duration) envOption {
	return func(cfg *httpapi.Config) {
		cfg.Now = c.Now
		cfg.AuthCacheTTL = cacheTTL
	}
}

// instance is another API instance over e's store and authority.
func (e *env) instance(t *testing.T, opts ...envOption) *env {
	t.Helper()
	cfg := httpapi.Config{
		Store:     e.db,
		Authority: app.CredentialAuthority(e.authority),
		LoginRate: httpapi.LoginRate{PerUsername: 600, UserBurst: 1000, PerAddress: 600, AddrBurst: 1000, RegisterPerAddress: -1},
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, db: e.db, srv: srv, authority: e.authority, masterKey: e.masterKey}
}

// TestAuthCacheLogout: a token logged out is refused at once by the instance
// that logged it out, although that instance had just cached it; another
// instance refuses it at the latest once its cache entry is older than the
// TTL.
func TestAuthCacheLogout(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		clk := &testClock{now: time.Now()}
		a := newEnv(t, db, withClock(clk, time.Hour))
		b := a.instance(t, withClock(clk, time.Minute))
		token, _ := a.register(t, "alice")
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		for _, e := range []*env{a, b} {
			expect(t, e.do(t, "GET", "/api/v1/me", token, nil), 200, "me (cached)")
			expect(t, e.do(t, "GET", "/api/v1/rooms", token, nil), 200, "rooms (from the cache)")
		}
		expect(t, a.do(t, "POST", "/api/v1/logout", token, nil), 204, "logout")
		expect(t, a.do(t, "GET", "/api/v1/rooms", token, nil), 401, "rooms after logout, same instance")
		expect(t, a.do(t, "POST", "/api/v1/me/credentials", token, map[string]any{"public_key": pub}), 401, "issue after logout, same instance")
		expect(t, a.do(t, "GET", "/api/v1/me", token, nil), 401, "me after logout, same instance")

		// b's entry is at most its TTL old, then b reads the token again.
		clk.Add(time.Minute)
		expect(t, b.do(t, "GET", "/api/v1/rooms", token, nil), 401, "rooms after logout, other instance, after its cache TTL")
	})
}

// TestAuthCacheDisabledUser: a user disabled behind the API's back (the
// command line) cannot get a credential or read /me at once, and is refused
// everywhere once the cache entry is older than the TTL.
func TestAuthCacheDisabledUser(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		clk := &testClock{now: time.Now()}
		e := newEnv(t, db, withClock(clk, time.Minute))
		token, id := e.register(t, "bob")
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		expect(t, e.do(t, "GET", "/api/v1/rooms", token, nil), 200, "rooms (cached)")
		if err := db.UpdateUserActive(t.Context(), id, false); err != nil {
			t.Fatal(err)
		}
		expect(t, e.do(t, "POST", "/api/v1/me/credentials", token, map[string]any{"public_key": pub}), 403, "issue for a disabled user")
		expect(t, e.do(t, "POST", "/api/v1/me/credentials/renew", token, nil), 403, "renew for a disabled user")
		expect(t, e.do(t, "GET", "/api/v1/me", token, nil), 401, "me of a disabled user")
		clk.Add(time.Minute)
		expect(t, e.do(t, "GET", "/api/v1/rooms", token, nil), 401, "rooms of a disabled user after the cache TTL")
	})
}

// TestAuthCacheTokenExpiry: a cached token is refused from its expiry on,
// however long the cache would keep it.
func TestAuthCacheTokenExpiry(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		clk := &testClock{now: time.Now()}
		e := newEnv(t, db, withClock(clk, 24*time.Hour), func(c *httpapi.Config) { c.TokenTTL = time.Hour })
		token, _ := e.register(t, "carol")
		expect(t, e.do(t, "GET", "/api/v1/rooms", token, nil), 200, "rooms (cached)")
		clk.Add(59 * time.Minute)
		expect(t, e.do(t, "GET", "/api/v1/rooms", token, nil), 200, "rooms before expiry")
		clk.Add(time.Minute)
		expect(t, e.do(t, "GET", "/api/v1/rooms", token, nil), 401, "rooms at expiry")
		expect(t, e.do(t, "GET", "/api/v1/me", token, nil), 401, "me at expiry")
	})
}
