package credmigrate

import (
	"context"
	"fmt"
	"time"
)

// SetLockSlice sets how long m's SQLite write transactions may hold the
// lock before a pause (sqliteLockSlice), for tests whose outcome must not
// depend on how fast the machine runs them.
func SetLockSlice(m *Migrator, d time.Duration) { m.lockSlice = d }

// CompareRangeUsers checks that the pre-check's reading of users.nats_*
// for user ids in (lo, hi] (rangeUserCreds) gives what userCreds reads.
func CompareRangeUsers(ctx context.Context, m *Migrator, lo, hi int64) (n int, err error) {
	var got, want map[int64]*cred
	if got, err = m.rangeUserCreds(ctx, m.db, lo, hi); err != nil {
		return 0, err
	}
	if want, err = m.userCreds(ctx, m.db, lo, hi, false); err != nil {
		return 0, err
	}
	if len(got) != len(want) {
		return 0, fmt.Errorf("%d users read, want %d", len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			return 0, fmt.Errorf("user %d: not read", id)
		}
		if d := g.diff(w); len(d) > 0 {
			return 0, fmt.Errorf("user %d: %v differ", id, d)
		}
		if !w.empty() {
			n++
		}
	}
	return n, nil
}
