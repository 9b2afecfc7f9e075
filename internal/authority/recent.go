package authority

import (
	"sync"
	"time"

	"github.com/mulchat/mulchat"
)

// recentTTL is how long the user row and grants read by an issuance are used
// to sign a same-key refresh without reading them again (recentIssues).
const recentTTL = time.Second

const recentMax = 10000

// recentIssues remembers, per user, the user row and grants the last
// issuance on this instance read from the database, with the credential it
// stored, so that a client refreshing the JWT of that key again within
// recentTTL of that read is signed from them and written in one statement,
// without a read.
//
// Only what the JWT says comes from here: the user's name and grants. What
// decides whether the refresh may be written at all — the user exists and is
// active, holds this key unrevoked in the chat account, and the recorded
// expiry covers the new JWT — is the WHERE clause of the one UPDATE
// (mulchat.NATSJWTRefresher), checked against the row as it is then; if any
// of it no longer holds, the issuance reads everything again and takes its
// general path. So a disabled user or a revoked key (on any instance) is
// refused at once. A grant added or removed is seen by refreshes signed more
// than recentTTL after the read that preceded it; an entry is never extended
// by the refreshes it serves, only replaced by another read.
type recentIssues struct {
	mu sync.Mutex
	m  map[int64]recentIssue
}

type recentIssue struct {
	user   *mulchat.User // NATS holds the credential as stored by the issuance
	grants []*mulchat.Permission
	read   time.Time // when the row was read (monotonic wall clock)
}

// get returns the remembered user and grants of userID if they were read less
// than recentTTL ago and the stored credential was publicKey, unrevoked.
// Callers must not modify them.
func (r *recentIssues) get(userID int64, publicKey string) (*mulchat.User, []*mulchat.Permission, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[userID]
	if !ok {
		return nil, nil, false
	}
	if time.Since(e.read) >= recentTTL {
		delete(r.m, userID)
		return nil, nil, false
	}
	if e.user.NATS.PublicKey != publicKey || e.user.NATS.ExpiredAt != nil || e.user.NATS.ExpiresAt == nil {
		return nil, nil, false
	}
	return e.user, e.grants, true
}

// put remembers user u (read at read) with grants, holding cred as stored.
func (r *recentIssues) put(u *mulchat.User, grants []*mulchat.Permission, cred mulchat.NATSCredential, read time.Time) {
	cu := *u
	cu.NATS = cred
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[int64]recentIssue)
	}
	if len(r.m) >= recentMax {
		for id, e := range r.m {
			if time.Since(e.read) >= recentTTL {
				delete(r.m, id)
			}
		}
		if len(r.m) >= recentMax {
			clear(r.m)
		}
	}
	r.m[u.ID] = recentIssue{user: &cu, grants: grants, read: read}
}

// forget drops what is remembered of userID (its credential was revoked or
// renewed here).
func (r *recentIssues) forget(userID int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, userID)
}
