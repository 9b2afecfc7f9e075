package sqlstore

import (
	"context"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/mulchat/mulchat"
)

const sessionColumns = `id, user_id, client_id, ip_address, user_agent, created_at, last_activity, expires_at,
	active, public_key, server_id, cid, closed_at, close_reason`

func scanSession(s scanner) (*mulchat.AuthSession, error) {
	var a mulchat.AuthSession
	var cid int64
	err := s.Scan(&a.ID, &a.UserID, stringDest{&a.ClientID}, stringDest{&a.IPAddress}, stringDest{&a.UserAgent},
		timeDest{&a.CreatedAt}, timeDest{&a.LastActivity}, nullTimeDest{&a.ExpiresAt}, boolDest{&a.Active},
		stringDest{&a.PublicKey}, stringDest{&a.ServerID}, idDest{&cid}, nullTimeDest{&a.ClosedAt},
		stringDest{&a.CloseReason})
	if err != nil {
		return nil, err
	}
	a.CID = uint64(cid)
	return &a, nil
}

// cidArg converts a NATS client id for the bigint column. Server cids count
// up from 1 and never come near 2^63.
func cidArg(cid uint64) (int64, error) {
	if cid > math.MaxInt64 {
		return 0, mulchat.Errorf(mulchat.EINVALID, "client id %d is out of range", cid)
	}
	return int64(cid), nil
}

// CreateAuthSession records a newly opened session: it sets s.ID and
// s.Active (true), s.CreatedAt when it is zero and s.LastActivity (to
// CreatedAt) when it is zero. ClosedAt and CloseReason are ignored: a
// session is closed with CloseAuthSession.
func (q *queries) CreateAuthSession(ctx context.Context, s *mulchat.AuthSession) error {
	args, createdAt, lastActivity, err := sessionInsertArgs(s)
	if err != nil {
		return err
	}
	var id int64
	err = q.one(ctx, errMsgs{fk: "user does not exist"}, sessionInsertQueries[0]+` RETURNING id`, args,
		func(sc scanner) error { return sc.Scan(&id) })
	if err != nil {
		return err
	}
	s.ID = id
	setInserted(s, createdAt, lastActivity)
	return nil
}

var _ mulchat.SessionBatchQueries = (*queries)(nil)

// sessionInsertColumns are the columns CreateAuthSession(s) write, in the
// order of sessionInsertArgs.
const sessionInsertColumns = `INSERT INTO nats_auth_sessions (user_id, client_id, ip_address, user_agent, created_at,
	last_activity, expires_at, active, public_key, server_id, cid) VALUES `

const sessionInsertArgCount = 11

// sessionInsertArgs normalises s's times as CreateAuthSession does and
// returns the row's arguments; it sets s's fields only once the row is
// written (see setInserted).
func sessionInsertArgs(s *mulchat.AuthSession) (args []any, createdAt, lastActivity time.Time, err error) {
	cid, err := cidArg(s.CID)
	if err != nil {
		return nil, createdAt, lastActivity, err
	}
	createdAt = now()
	if !s.CreatedAt.IsZero() {
		createdAt = normTime(s.CreatedAt)
	}
	lastActivity = createdAt
	if !s.LastActivity.IsZero() {
		lastActivity = normTime(s.LastActivity)
	}
	return []any{s.UserID, nullString(s.ClientID), nullString(s.IPAddress), nullString(s.UserAgent), createdAt,
		lastActivity, s.ExpiresAt, true, nullString(s.PublicKey), nullString(s.ServerID), cid}, createdAt, lastActivity, nil
}

func setInserted(s *mulchat.AuthSession, createdAt, lastActivity time.Time) {
	s.Active, s.CreatedAt, s.LastActivity = true, createdAt, lastActivity
	s.ExpiresAt = normTimePtr(s.ExpiresAt)
	s.ClosedAt, s.CloseReason = nil, ""
}

// maxSessionInsertRows is the most rows one INSERT of CreateAuthSessions
// writes (11 arguments a row: 704, under SQLite's oldest limit of 999).
// Batches are cut into statements of power-of-two sizes up to it, so at most
// seven statement texts exist and each is prepared once (the SQLite
// statement cache; pgx caches per connection).
const maxSessionInsertRows = 64

// sessionInsertQueries[k] inserts 2^k rows with $N placeholders;
// sessionInsertQueriesSQLite[k] is the same with ? placeholders. SQLite
// looks up the name of every numbered placeholder the driver binds with a
// linear scan of the statement's placeholder list, which makes binding 704
// "$N" arguments quadratic; anonymous "?" ones have no name to look up.
var sessionInsertQueries, sessionInsertQueriesSQLite = sessionInsertSQL(false), sessionInsertSQL(true)

func sessionInsertSQL(anonymous bool) []string {
	var qs []string
	for n := 1; n <= maxSessionInsertRows; n *= 2 {
		var b strings.Builder
		b.WriteString(sessionInsertColumns)
		for r := 0; r < n; r++ {
			if r > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(")
			for c := 0; c < sessionInsertArgCount; c++ {
				if c > 0 {
					b.WriteString(", ")
				}
				if anonymous {
					b.WriteString("?")
				} else {
					b.WriteString("$" + strconv.Itoa(r*sessionInsertArgCount+c+1))
				}
			}
			b.WriteString(")")
		}
		qs = append(qs, b.String())
	}
	return qs
}

// CreateAuthSessions implements mulchat.SessionBatchQueries: the sessions
// are written by multi-row INSERTs (one transaction, the caller's or its
// own), so a burst of connects costs a few statements instead of one each.
func (q *queries) CreateAuthSessions(ctx context.Context, sessions []*mulchat.AuthSession) error {
	if len(sessions) == 0 {
		return nil
	}
	type times struct{ created, last time.Time }
	ts := make([]times, len(sessions))
	args := make([]any, 0, min(len(sessions), maxSessionInsertRows)*sessionInsertArgCount)
	stmts := sessionInsertQueries
	if q.dialect == DialectSQLite {
		stmts = sessionInsertQueriesSQLite
	}
	err := q.inTx(ctx, func(q *queries) error {
		for done := 0; done < len(sessions); {
			k := len(stmts) - 1
			for 1<<k > len(sessions)-done {
				k--
			}
			n := 1 << k
			args = args[:0]
			for i, s := range sessions[done : done+n] {
				a, created, last, err := sessionInsertArgs(s)
				if err != nil {
					return err
				}
				ts[done+i] = times{created, last}
				args = append(args, a...)
			}
			if _, err := q.exec(ctx, errMsgs{fk: "user does not exist"}, stmts[k], args...); err != nil {
				return err
			}
			done += n
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, s := range sessions {
		setInserted(s, ts[i].created, ts[i].last)
	}
	return nil
}

// ActiveAuthSessionCIDs implements mulchat.SessionBatchQueries through the
// partial index on (server_id, cid) WHERE active.
func (q *queries) ActiveAuthSessionCIDs(ctx context.Context, serverID string, minCID, maxCID uint64) ([]uint64, error) {
	lo, err := cidArg(minCID)
	if err != nil {
		return nil, err
	}
	hi, err := cidArg(maxCID)
	if err != nil {
		return nil, err
	}
	var cids []uint64
	err = q.many(ctx, `SELECT cid FROM nats_auth_sessions WHERE active AND server_id = $1 AND cid >= $2 AND cid <= $3`,
		[]any{serverID, lo, hi}, func(s scanner) error {
			var c int64
			if err := s.Scan(&c); err != nil {
				return err
			}
			cids = append(cids, uint64(c))
			return nil
		})
	if err != nil {
		return nil, err
	}
	return cids, nil
}

// HasActiveAuthSession implements mulchat.SessionBatchQueries: it stops at
// the first active row instead of reading them all.
func (q *queries) HasActiveAuthSession(ctx context.Context, userID int64) (bool, error) {
	var one int64
	err := q.one(ctx, errMsgs{notFound: "no active session"},
		`SELECT 1 FROM nats_auth_sessions WHERE user_id = $1 AND active LIMIT 1`, []any{userID},
		func(s scanner) error { return s.Scan(&one) })
	if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

func (q *queries) AuthSessionByID(ctx context.Context, id int64) (*mulchat.AuthSession, error) {
	var a *mulchat.AuthSession
	err := q.one(ctx, errMsgs{notFound: "auth session not found"},
		`SELECT `+sessionColumns+` FROM nats_auth_sessions WHERE id = $1`, []any{id},
		func(s scanner) (err error) {
			a, err = scanSession(s)
			return err
		})
	return a, err
}

func (q *queries) listSessions(ctx context.Context, query string, args ...any) ([]*mulchat.AuthSession, error) {
	sessions := []*mulchat.AuthSession{}
	err := q.many(ctx, query, args, func(s scanner) error {
		a, err := scanSession(s)
		if err != nil {
			return err
		}
		sessions = append(sessions, a)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sessions, nil
}

// ListUserAuthSessions lists the user's sessions, newest first; with
// activeOnly, only the open ones.
func (q *queries) ListUserAuthSessions(ctx context.Context, userID int64, activeOnly bool) ([]*mulchat.AuthSession, error) {
	where := `user_id = $1`
	if activeOnly {
		where += ` AND active`
	}
	return q.listSessions(ctx,
		`SELECT `+sessionColumns+` FROM nats_auth_sessions WHERE `+where+` ORDER BY created_at DESC, id DESC`, userID)
}

// ListActiveAuthSessions lists every open session by id.
func (q *queries) ListActiveAuthSessions(ctx context.Context) ([]*mulchat.AuthSession, error) {
	return q.listSessions(ctx, `SELECT `+sessionColumns+` FROM nats_auth_sessions WHERE active ORDER BY id`)
}

// CloseAuthSession closes the active session(s) (serverID, cid); ENOTFOUND if
// there is none.
func (q *queries) CloseAuthSession(ctx context.Context, serverID string, cid uint64, at time.Time, reason string) error {
	c, err := cidArg(cid)
	if err != nil {
		return err
	}
	n, err := q.exec(ctx, errMsgs{},
		`UPDATE nats_auth_sessions SET active = $3, closed_at = $4, close_reason = $5
		WHERE server_id = $1 AND cid = $2 AND active`,
		serverID, c, false, at, nullString(reason))
	if err != nil {
		return err
	}
	if n == 0 {
		return mulchat.Errorf(mulchat.ENOTFOUND, "auth session not found")
	}
	return nil
}

// TouchAuthSession sets the session's last activity.
func (q *queries) TouchAuthSession(ctx context.Context, id int64, at time.Time) error {
	n, err := q.exec(ctx, errMsgs{}, `UPDATE nats_auth_sessions SET last_activity = $2 WHERE id = $1`, id, at)
	if err != nil {
		return err
	}
	if n == 0 {
		return mulchat.Errorf(mulchat.ENOTFOUND, "auth session not found")
	}
	return nil
}
