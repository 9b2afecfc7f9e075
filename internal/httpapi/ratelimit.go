package httpapi

import (
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mulchat/mulchat"
	"golang.org/x/time/rate"
)

// loginLimiter limits login attempts per username and per client address.
// The tables live in this process only: with N instances behind a load
// balancer an attacker gets N times the budget, which still bounds guessing to
// a few attempts a minute per instance (docs/api.md).
type loginLimiter struct {
	users     *limiterTable
	addrs     *limiterTable
	registers *limiterTable
	now       func() time.Time
}

func newLoginLimiter(cfg LoginRate, now func() time.Time) *loginLimiter {
	l := &loginLimiter{now: now}
	if cfg.PerUsername > 0 {
		l.users = newLimiterTable(rate.Limit(cfg.PerUsername/60), cfg.UserBurst, cfg.MaxEntries)
	}
	if cfg.PerAddress > 0 {
		l.addrs = newLimiterTable(rate.Limit(cfg.PerAddress/60), cfg.AddrBurst, cfg.MaxEntries)
	}
	if cfg.RegisterPerAddress > 0 {
		l.registers = newLimiterTable(rate.Limit(cfg.RegisterPerAddress/60), cfg.RegisterBurst, cfg.MaxEntries)
	}
	return l
}

// allowRegister takes one registration from the address's budget.
func (l *loginLimiter) allowRegister(addr string) error {
	if l.registers == nil {
		return nil
	}
	if delay, ok := l.registers.take(addr, l.now()); !ok {
		return &retryAfterError{err: mulchat.Errorf(mulchat.ERATELIMITED, "too many registrations from this address; retry later"), after: delay}
	}
	return nil
}

// credentialLimiter limits credential issues and renewals per user. Like the
// login limiter it lives in this process only: N instances give a user N
// times the budget.
type credentialLimiter struct {
	users *limiterTable
	now   func() time.Time
}

func newCredentialLimiter(cfg CredentialRate, now func() time.Time) *credentialLimiter {
	l := &credentialLimiter{now: now}
	if cfg.PerUser > 0 {
		l.users = newLimiterTable(rate.Limit(cfg.PerUser/60), cfg.Burst, cfg.MaxEntries)
	}
	return l
}

// allow takes one issue or renewal from the user's budget.
func (l *credentialLimiter) allow(userID int64) error {
	if l.users == nil {
		return nil
	}
	if delay, ok := l.users.take(strconv.FormatInt(userID, 10), l.now()); !ok {
		return &retryAfterError{err: mulchat.Errorf(mulchat.ERATELIMITED, "too many credential requests; retry later"), after: delay}
	}
	return nil
}

// allow takes one attempt from both limiters, or none and returns an
// ERATELIMITED error with the wait.
func (l *loginLimiter) allow(username, addr string) error {
	now := l.now()
	var taken []*rate.Reservation
	for _, t := range []struct {
		table *limiterTable
		key   string
	}{{l.addrs, addr}, {l.users, username}} {
		if t.table == nil {
			continue
		}
		res := t.table.get(t.key, now).ReserveN(now, 1)
		if delay := res.DelayFrom(now); !res.OK() || delay > 0 {
			res.CancelAt(now)
			for _, r := range taken {
				r.CancelAt(now)
			}
			if !res.OK() {
				delay = time.Minute
			}
			return &retryAfterError{err: mulchat.Errorf(mulchat.ERATELIMITED, "too many login attempts; retry later"), after: delay}
		}
		taken = append(taken, res)
	}
	return nil
}

// limiterTable is a bounded map of token buckets. When full, it evicts the
// entries idle the longest; an evicted key starts again with a full bucket,
// so the bound trades a little precision for fixed memory.
type limiterTable struct {
	mu      sync.Mutex
	limit   rate.Limit
	burst   int
	max     int
	entries map[string]*limiterEntry
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiterTable(limit rate.Limit, burst, max int) *limiterTable {
	return &limiterTable{limit: limit, burst: burst, max: max, entries: make(map[string]*limiterEntry)}
}

// take takes one token from key's bucket now, or none and returns how long
// until one is available.
func (t *limiterTable) take(key string, now time.Time) (time.Duration, bool) {
	res := t.get(key, now).ReserveN(now, 1)
	if delay := res.DelayFrom(now); !res.OK() || delay > 0 {
		res.CancelAt(now)
		if !res.OK() {
			delay = time.Minute
		}
		return delay, false
	}
	return 0, true
}

func (t *limiterTable) get(key string, now time.Time) *rate.Limiter {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.entries[key]; ok {
		e.seen = now
		return e.lim
	}
	if len(t.entries) >= t.max {
		t.evict(now)
	}
	e := &limiterEntry{lim: rate.NewLimiter(t.limit, t.burst), seen: now}
	t.entries[key] = e
	return e.lim
}

// evict drops every entry whose bucket has refilled (it carries no state
// worth keeping), then, if still full, the oldest tenth of the table.
func (t *limiterTable) evict(now time.Time) {
	for k, e := range t.entries {
		if e.lim.TokensAt(now) >= float64(t.burst) {
			delete(t.entries, k)
		}
	}
	if len(t.entries) < t.max {
		return
	}
	type aged struct {
		key  string
		seen time.Time
	}
	all := make([]aged, 0, len(t.entries))
	for k, e := range t.entries {
		all = append(all, aged{k, e.seen})
	}
	slices.SortFunc(all, func(a, b aged) int { return a.seen.Compare(b.seen) })
	for _, a := range all[:len(all)/10+1] {
		delete(t.entries, a.key)
	}
}

func (t *limiterTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}
