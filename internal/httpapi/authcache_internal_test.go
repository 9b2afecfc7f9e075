package httpapi

import (
	"testing"
	"time"

	"github.com/mulchat/mulchat"
)

// TestAuthCacheForgetWinsOverARacingRead: a lookup that read the token from
// the database before a logout committed must not cache it after the logout
// removed it.
func TestAuthCacheForgetWinsOverARacingRead(t *testing.T) {
	c := newAuthCache(time.Minute)
	now := time.Now()
	h := [32]byte{1}
	tok := &mulchat.APIToken{ID: 7, UserID: 3, ExpiresAt: now.Add(time.Hour)}

	gen := c.generation() // the racing read begins
	c.forget(h)           // logout commits and forgets
	c.put(h, tok, now, gen)
	if _, ok := c.get(h, now); ok {
		t.Fatal("a read that began before the logout cached the token")
	}

	c.put(h, tok, now, c.generation())
	if e, ok := c.get(h, now); !ok || e.userID != 3 || e.tokenID != 7 {
		t.Fatalf("entry %+v, %v", e, ok)
	}
	if _, ok := c.get(h, now.Add(time.Minute)); ok {
		t.Fatal("entry used at its TTL")
	}
	if newAuthCache(-1) != nil {
		t.Fatal("a negative TTL does not turn the cache off")
	}
}

// TestAuthCacheBounded: the table never holds more than its maximum.
func TestAuthCacheBounded(t *testing.T) {
	c := newAuthCache(time.Minute)
	c.max = 100
	now := time.Now()
	for i := range 1000 {
		c.put([32]byte{byte(i), byte(i >> 8)}, &mulchat.APIToken{ID: int64(i), ExpiresAt: now.Add(time.Hour)}, now, c.generation())
		if len(c.entries) > c.max {
			t.Fatalf("%d entries, max %d", len(c.entries), c.max)
		}
	}
}
