package httpapi

import (
	"sync"
	"time"

	"github.com/mulchat/mulchat"
)

// authCache remembers, for a short time, the bearer tokens this instance
// found valid, so that a client making several calls in a row (a page load,
// a credential refresh) pays for one token lookup instead of one per call.
// Every authenticated request used to read the token and its user from the
// database; on this project's machine that was as much as signing a JWT.
//
// What it may serve stale, and for how long (docs/api.md):
//   - a logout on this instance removes the entry before it answers, so the
//     token is refused at once here; on another instance it is refused
//     within the TTL;
//   - a token's expiry is checked on every request against the cached expiry,
//     which never changes;
//   - a user disabled by `mulchat user disable` (another process) is refused
//     within the TTL. Credential issuance and renewal re-read the user and
//     refuse a disabled one at once whatever the cache says.
//
// Only the token's id and expiry and the user's id are kept; GET /me reads
// the user itself. Keys are the token's SHA-256, never the token.
type authCache struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[[32]byte]authEntry
	// gen counts forgets. A lookup notes it before reading the database and
	// caches its result only if no forget happened meanwhile: otherwise a
	// read that began before a logout committed could cache the token after
	// the logout removed it.
	gen uint64
}

type authEntry struct {
	tokenID      int64
	userID       int64
	tokenExpires time.Time
	until        time.Time // when the entry stops being used
}

// DefaultAuthCacheTTL is how long a validated token is trusted without
// reading it again: the bound on how late another instance's logout, or a
// user disabled from the command line, takes effect here.
const DefaultAuthCacheTTL = time.Second

const authCacheMax = 10000

func newAuthCache(ttl time.Duration) *authCache {
	if ttl <= 0 {
		return nil
	}
	return &authCache{ttl: ttl, max: authCacheMax, entries: make(map[[32]byte]authEntry)}
}

// get returns the cached session of the token with hash h, if any is still
// usable at now.
func (c *authCache) get(h [32]byte, now time.Time) (authEntry, bool) {
	if c == nil {
		return authEntry{}, false
	}
	c.mu.Lock()
	e, ok := c.entries[h]
	if ok && !now.Before(e.until) {
		delete(c.entries, h)
		ok = false
	}
	c.mu.Unlock()
	if !ok || !now.Before(e.tokenExpires) {
		return authEntry{}, false
	}
	return e, true
}

// generation is the value to pass to put for a database read that begins
// now.
func (c *authCache) generation() uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put caches a token found valid at now by a database read that began at
// generation gen; nothing is cached if a token was forgotten since.
func (c *authCache) put(h [32]byte, t *mulchat.APIToken, now time.Time, gen uint64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= c.max {
			// Full of live entries: start over rather than track recency;
			// the cost is one lookup per token.
			clear(c.entries)
		}
	}
	c.entries[h] = authEntry{tokenID: t.ID, userID: t.UserID, tokenExpires: t.ExpiresAt, until: now.Add(c.ttl)}
}

// forget drops the token with hash h (logout).
func (c *authCache) forget(h [32]byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.entries, h)
	c.gen++
	c.mu.Unlock()
}
