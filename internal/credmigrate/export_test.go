package credmigrate

import "time"

// SetLockSlice sets how long m's SQLite write transactions may hold the
// lock before a pause (sqliteLockSlice), for tests whose outcome must not
// depend on how fast the machine runs them.
func SetLockSlice(m *Migrator, d time.Duration) { m.lockSlice = d }
