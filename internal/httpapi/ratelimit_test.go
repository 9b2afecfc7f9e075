package httpapi_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/httpapi"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/nats-io/nkeys"
)

// clock is a test clock that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// retryAfter returns the Retry-After seconds of a 429, failing without one.
func retryAfter(t *testing.T, r response) int {
	t.Helper()
	if r.code() != mulchat.ERATELIMITED {
		t.Fatalf("code %q, want %s: %s", r.code(), mulchat.ERATELIMITED, r.raw)
	}
	ra, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
	}
	return ra
}

// TestCredentialRateLimit: issuing and renewing share one per-user budget,
// the default one (10 at once, then 3 a minute). Each issue with a new key
// adds a revocation to the account JWT, which must stay under NATS's
// max_payload; without the limit one user could grow it past that in minutes.
func TestCredentialRateLimit(t *testing.T) {
	clk := &clock{t: time.Now()}
	e := newEnv(t, sqltest.OpenSQLite(t), func(c *httpapi.Config) { c.Now = clk.now })
	alice, _ := e.register(t, "alice")
	bob, _ := e.register(t, "bob")
	carol, _ := e.register(t, "carol")
	burst := httpapi.DefaultCredentialRate.Burst

	// Issue: server-generated keys, the case that adds a revocation each time.
	var lastKey string
	for i := range burst {
		r := expect(t, e.do(t, "POST", "/api/v1/me/credentials", alice, nil), 201, "issue "+strconv.Itoa(i))
		lastKey = r.str("public_key")
	}
	r := expect(t, e.do(t, "POST", "/api/v1/me/credentials", alice, nil), 429, "issue over the burst")
	if ra := retryAfter(t, r); ra > 20 {
		t.Fatalf("Retry-After %d s, want at most 20 (3 a minute)", ra)
	}
	// A client key too: the budget is per user, not per kind of issue.
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	expect(t, e.do(t, "POST", "/api/v1/me/credentials", alice, map[string]any{"public_key": pub}), 429, "issue own key over the burst")
	// The refused issues changed nothing.
	me := expect(t, e.do(t, "GET", "/api/v1/me", alice, nil), 200, "me")
	if nats := me.body["nats"].(map[string]any); nats["public_key"] != lastKey || nats["status"] != "active" {
		t.Fatalf("a refused issue changed the credential: %s", me.raw)
	}
	if n := len(e.notices.list()); n != burst {
		t.Fatalf("%d credential notices, want %d", n, burst)
	}
	// Renewal shares the budget.
	expect(t, e.do(t, "POST", "/api/v1/me/credentials/renew", alice, nil), 429, "renew after the issue burst")

	// Another user is unaffected.
	expect(t, e.do(t, "POST", "/api/v1/me/credentials", bob, nil), 201, "bob issues")

	// The budget refills at 3 a minute: one more after 20 s, not two.
	clk.advance(20 * time.Second)
	expect(t, e.do(t, "POST", "/api/v1/me/credentials", alice, map[string]any{"public_key": pub}), 201, "issue after 20 s")
	expect(t, e.do(t, "POST", "/api/v1/me/credentials", alice, nil), 429, "second issue after 20 s")

	// Renew: a burst of renewals by one user is refused after the burst too.
	expect(t, e.do(t, "POST", "/api/v1/me/credentials", carol, nil), 201, "carol issues")
	for i := range burst - 1 {
		expect(t, e.do(t, "POST", "/api/v1/me/credentials/renew", carol, nil), 200, "renew "+strconv.Itoa(i))
	}
	retryAfter(t, expect(t, e.do(t, "POST", "/api/v1/me/credentials/renew", carol, nil), 429, "renew over the burst"))
	expect(t, e.do(t, "POST", "/api/v1/me/credentials", carol, nil), 429, "issue after the renew burst")
	// bob still has his own budget left.
	expect(t, e.do(t, "POST", "/api/v1/me/credentials/renew", bob, nil), 200, "bob renews")
}

// TestCredentialRateConfig: a configured budget replaces the default, and a
// negative rate turns the limit off.
func TestCredentialRateConfig(t *testing.T) {
	for _, c := range []struct {
		name    string
		rate    httpapi.CredentialRate
		allowed int // issues before the first 429; -1: none refused
	}{
		{"burst 2", httpapi.CredentialRate{PerUser: 1, Burst: 2}, 2},
		{"off", httpapi.CredentialRate{PerUser: -1}, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := &clock{t: time.Now()}
			e := newEnv(t, sqltest.OpenSQLite(t), func(cfg *httpapi.Config) {
				cfg.Now = clk.now
				cfg.CredentialRate = c.rate
			})
			token, _ := e.register(t, "alice")
			kp, _ := nkeys.CreateUser()
			pub, _ := kp.PublicKey()
			body := map[string]any{"public_key": pub}
			n := c.allowed
			if n < 0 {
				n = httpapi.DefaultCredentialRate.Burst + 5
			}
			for i := range n {
				expect(t, e.do(t, "POST", "/api/v1/me/credentials", token, body), 201, "issue "+strconv.Itoa(i))
			}
			if c.allowed >= 0 {
				expect(t, e.do(t, "POST", "/api/v1/me/credentials", token, body), 429, "issue over the burst")
			}
		})
	}
}
