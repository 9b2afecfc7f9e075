package credmigrate

import (
	"sort"
)

// copyPlan is what the pre-check of an uninterrupted run decided for every
// user id with legacy rows, in user id order, so that the copy can carry it
// out without reading the legacy rows into Go a second time.
//
// The plan may go stale: the legacy application (or mulchat serve) can write
// between the pre-check and a user's batch. That is safe because change
// capture starts before the pre-check reads anything (Run): every legacy row
// written after it is recorded, and the catch-up redoes the batches of those
// users from fresh reads. A batch also checks, in its own transaction, what
// it relies on — the user still exists with empty users.nats_*, the winning
// row is still there and holds no raw seed, the seeds it scrubs are still
// the ones read — and falls back to the fresh path (reading the rows again)
// when anything differs.
type copyPlan struct {
	users []plannedUser
	seeds []seedRow // raw seeds found in legacy rows, in user id order
	// keys are the public keys of the legacy rows, by hash (collected by
	// every pre-check, planning or not, for contestedKeys).
	keys []keyUse
}

// keyUse is a legacy row's public key, by hash, and the row's user id.
type keyUse struct {
	hash uint64
	uid  int64
}

// keyHash is FNV-1a: a collision only makes contestedKeys read a few rows
// again.
func keyHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// plannedUser is one user id of the plan. It is kept small: a million
// users take about 64 MB.
//
// A direct user existed with empty users.nats_*, and the decision is a copy
// of the winning row as stored (after its seed is scrubbed): the database
// copies it and the pre-check's digest term stands. Any other user (legacy
// rows of a user id that does not exist, users.nats_* holding something,
// timestamps to rewrite, a contested key) is read again by its batch, which
// decides as the fresh path does.
type plannedUser struct {
	id      int64
	credID  int64     // direct: the winning legacy row
	term    digest256 // direct: the digest term of the credential as migrated
	keyHash uint64    // direct: keyHash of the winning row's public key
	direct  bool
}

// seedRow is a legacy row holding a raw nkey seed, to be replaced by its
// SHA-256 in the transaction of the row's batch.
type seedRow struct {
	id, userID int64
	seed       string
}

// next returns the planned users after user id `after`, at most n of them,
// and the raw seeds of the user ids they span.
func (p *copyPlan) next(after int64, n int) ([]plannedUser, []seedRow) {
	i := sort.Search(len(p.users), func(i int) bool { return p.users[i].id > after })
	users := p.users[i:min(i+n, len(p.users))]
	if len(users) == 0 {
		return nil, nil
	}
	hi := users[len(users)-1].id
	j := sort.Search(len(p.seeds), func(j int) bool { return p.seeds[j].userID > after })
	k := sort.Search(len(p.seeds), func(k int) bool { return p.seeds[k].userID > hi })
	return users, p.seeds[j:k]
}

func (p *copyPlan) append(o *copyPlan) {
	p.users = append(p.users, o.users...)
	p.seeds = append(p.seeds, o.seeds...)
	p.keys = append(p.keys, o.keys...)
}
