package sqlstore

import (
	"context"
	"math"
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
	cid, err := cidArg(s.CID)
	if err != nil {
		return err
	}
	createdAt := now()
	if !s.CreatedAt.IsZero() {
		createdAt = normTime(s.CreatedAt)
	}
	lastActivity := createdAt
	if !s.LastActivity.IsZero() {
		lastActivity = normTime(s.LastActivity)
	}
	var id int64
	err = q.one(ctx, errMsgs{fk: "user does not exist"},
		`INSERT INTO nats_auth_sessions (user_id, client_id, ip_address, user_agent, created_at, last_activity,
			expires_at, active, public_key, server_id, cid)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id`,
		[]any{s.UserID, nullString(s.ClientID), nullString(s.IPAddress), nullString(s.UserAgent), createdAt,
			lastActivity, s.ExpiresAt, true, nullString(s.PublicKey), nullString(s.ServerID), cid},
		func(sc scanner) error { return sc.Scan(&id) })
	if err != nil {
		return err
	}
	s.ID, s.Active, s.CreatedAt, s.LastActivity = id, true, createdAt, lastActivity
	s.ExpiresAt = normTimePtr(s.ExpiresAt)
	s.ClosedAt, s.CloseReason = nil, ""
	return nil
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
