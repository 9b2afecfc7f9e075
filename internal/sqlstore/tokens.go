package sqlstore

import (
	"context"
	"time"

	"github.com/mulchat/mulchat"
)

const apiTokenColumns = `id, user_id, token_hash, created_at, expires_at, revoked_at, user_agent, ip_address`

func scanAPIToken(s scanner) (*mulchat.APIToken, error) {
	var t mulchat.APIToken
	err := s.Scan(&t.ID, &t.UserID, &t.TokenHash, timeDest{&t.CreatedAt}, timeDest{&t.ExpiresAt},
		nullTimeDest{&t.RevokedAt}, stringDest{&t.UserAgent}, stringDest{&t.IPAddress})
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// CreateAPIToken inserts t and sets t.ID, and t.CreatedAt when it is zero.
func (q *queries) CreateAPIToken(ctx context.Context, t *mulchat.APIToken) error {
	if t.TokenHash == "" {
		return mulchat.Errorf(mulchat.EINVALID, "token hash is required")
	}
	if err := checkKeyLen("token hash", t.TokenHash); err != nil {
		return err
	}
	createdAt := now()
	if !t.CreatedAt.IsZero() {
		createdAt = normTime(t.CreatedAt)
	}
	var id int64
	insert := func(q *queries) error {
		return q.one(ctx, errMsgs{fk: "user does not exist"},
			`INSERT INTO api_tokens (user_id, token_hash, created_at, expires_at, revoked_at, user_agent, ip_address)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
			[]any{t.UserID, t.TokenHash, createdAt, t.ExpiresAt, t.RevokedAt, nullString(t.UserAgent), nullString(t.IPAddress)},
			func(s scanner) error { return s.Scan(&id) })
	}
	var err error
	if q.dialect == DialectPostgres && q.tx == nil {
		// A new token is committed without waiting for the WAL flush
		// (synchronous_commit off, for this transaction only). Waiting cost
		// more than a tenth of a login on a slow disk (docs/performance.md).
		// Losing the token in a database crash only fails closed: the client
		// gets 401 and logs in again. Revoking a token stays synchronous, and
		// inside a caller's transaction nothing is relaxed.
		err = q.db.inTx(ctx, func(q *queries) error {
			if _, err := q.exec(ctx, errMsgs{}, `SET LOCAL synchronous_commit = off`); err != nil {
				return err
			}
			return insert(q)
		})
	} else {
		err = insert(q)
	}
	if err != nil {
		return err
	}
	t.ID = id
	t.CreatedAt = createdAt
	t.ExpiresAt = normTime(t.ExpiresAt)
	t.RevokedAt = normTimePtr(t.RevokedAt)
	return nil
}

// APITokenByHash returns the token with that hash, revoked and expired ones
// included: the caller decides whether it is still valid.
func (q *queries) APITokenByHash(ctx context.Context, tokenHash string) (*mulchat.APIToken, error) {
	var t *mulchat.APIToken
	err := q.one(ctx, errMsgs{notFound: "API token not found"},
		`SELECT `+apiTokenColumns+` FROM api_tokens WHERE token_hash = $1`, []any{tokenHash},
		func(s scanner) (err error) {
			t, err = scanAPIToken(s)
			return err
		})
	return t, err
}

// RevokeAPIToken sets revoked_at; a token already revoked keeps its first
// revocation time.
func (q *queries) RevokeAPIToken(ctx context.Context, id int64, at time.Time) error {
	n, err := q.exec(ctx, errMsgs{},
		`UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1`, id, at)
	if err != nil {
		return err
	}
	if n == 0 {
		return mulchat.Errorf(mulchat.ENOTFOUND, "API token not found")
	}
	return nil
}

// DeleteExpiredAPITokens deletes the tokens that expired before before and
// returns how many it deleted.
func (q *queries) DeleteExpiredAPITokens(ctx context.Context, before time.Time) (int64, error) {
	return q.exec(ctx, errMsgs{}, `DELETE FROM api_tokens WHERE expires_at < $1`, before)
}
