package sqlstore

import (
	"context"
	"database/sql"

	"github.com/mulchat/mulchat"
)

var (
	_ mulchat.UserGrantsReader     = (*queries)(nil)
	_ mulchat.NATSCredentialSetter = (*queries)(nil)
	_ mulchat.NATSJWTRefresher     = (*queries)(nil)
)

// userWithPermissionsQuery joins the user to the user's grants: one row per
// grant, or one row with NULL grant columns for a user without grants.
var userWithPermissionsQuery = `SELECT ` + prefixColumns("u.", userColumns) + `,
	p.id, p.room_id, p.permission_type, p.subject, p.created_at, p.updated_at
FROM users u LEFT JOIN nats_permissions p ON p.user_id = u.id
WHERE u.id = $1
ORDER BY p.id`

// UserWithPermissions returns the user and the user's grants by id in one
// statement (credential issuance needs both).
func (q *queries) UserWithPermissions(ctx context.Context, userID int64) (*mulchat.User, []*mulchat.Permission, error) {
	var u *mulchat.User
	perms := []*mulchat.Permission{}
	err := q.many(ctx, userWithPermissionsQuery, []any{userID}, func(s scanner) error {
		var row mulchat.User
		var p mulchat.Permission
		var grantID sql.NullInt64
		dests := append(userDests(&row), &grantID, idDest{&p.RoomID}, stringDest{&p.Type}, stringDest{&p.Subject},
			timeDest{&p.CreatedAt}, timeDest{&p.UpdatedAt})
		if err := s.Scan(dests...); err != nil {
			return err
		}
		if u == nil {
			u = &row
		}
		if grantID.Valid {
			p.ID, p.UserID = grantID.Int64, userID
			perms = append(perms, &p)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if u == nil {
		return nil, nil, mulchat.Errorf(mulchat.ENOTFOUND, "user not found")
	}
	return u, perms, nil
}

// SetUserNATSCredentialIfNothingToRevoke writes the seven users.nats_*
// columns, as UpdateUserNATSCredential does, in one UPDATE whose WHERE clause
// holds the conditions under which the write revokes nothing: the user is
// active and the stored credential has no public key, or has c.PublicKey
// unrevoked, or has another key already revoked. The one statement is atomic
// on both databases (PostgreSQL re-checks the WHERE clause against a row
// another transaction updated meanwhile), so a concurrent issuance cannot
// slip an active key in between the check and the write.
//
// A stored key that has merely expired does not qualify: comparing times in
// SQL would depend on how a legacy row stored them, and the caller's general
// path handles that case.
func (q *queries) SetUserNATSCredentialIfNothingToRevoke(ctx context.Context, userID int64, c mulchat.NATSCredential) (bool, error) {
	if c.PublicKey == "" {
		return false, mulchat.Errorf(mulchat.EINVALID, "NATS public key is required")
	}
	if err := checkKeyLen("NATS public key", c.PublicKey); err != nil {
		return false, err
	}
	if q.dialect == DialectSQLite && c.AccountID != 0 {
		// SQLite rewrites the entries of every index on a column named in
		// SET, changed or not: setting nats_public_key and nats_account_id
		// to their own values costs two index rewrites (more WAL pages) and
		// a foreign key check, several times the cost of the UPDATE itself.
		// A client refreshing its key's JWT changes neither, so that case
		// first tries an UPDATE that leaves them out of SET and requires them
		// equal in WHERE; a miss costs one primary key lookup. PostgreSQL
		// compares values itself (a HOT update), so it needs no such split.
		n, err := q.exec(ctx, errMsgs{},
			`UPDATE users SET nats_jwt = $2, nats_seed_hash = $3, nats_account_public_key = $6,
				nats_expires_at = `+q.keepLaterExpiry()+`, nats_expired_at = $8
			WHERE id = $1 AND is_active = $9 AND nats_public_key = $4 AND nats_expired_at IS NULL
				AND nats_account_id = $5`,
			userID, nullString(c.JWT), nullString(c.SeedHash), c.PublicKey, c.AccountID,
			nullString(c.AccountPublicKey), c.ExpiresAt, c.ExpiredAt, true)
		if err != nil || n > 0 {
			return n > 0, err
		}
	}
	n, err := q.exec(ctx, errMsgs{fk: "NATS account does not exist"},
		`UPDATE users SET nats_jwt = $2, nats_seed_hash = $3, nats_public_key = $4, nats_account_id = $5,
			nats_account_public_key = $6, nats_expires_at = `+q.keepLaterExpiry()+`, nats_expired_at = $8
		WHERE id = $1 AND is_active = $9 AND (
			COALESCE(nats_public_key, '') = ''
			OR (nats_public_key = $4 AND nats_expired_at IS NULL)
			OR (nats_public_key <> $4 AND nats_expired_at IS NOT NULL))`,
		userID, nullString(c.JWT), nullString(c.SeedHash), c.PublicKey, nullID(c.AccountID),
		nullString(c.AccountPublicKey), c.ExpiresAt, c.ExpiredAt, true)
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

// keepLaterExpiry is the value SetUserNATSCredentialIfNothingToRevoke writes
// to nats_expires_at: $7, unless the row holds the same key ($4), unrevoked,
// with a later expiry, which it then keeps. Two refreshes of one key racing
// with different TTLs each read the row before either wrote; without this
// the shorter one, written last, would record an expiry earlier than the
// longer JWT already handed out, and the key's revocation entry, pruned at
// the recorded expiry, would then go before that JWT expires. On SQLite the
// times are compared through julianday(), which reads every text form a
// legacy row may hold; one it cannot read gives NULL, and $7 is written.
func (q *queries) keepLaterExpiry() string {
	later := "nats_expires_at > $7"
	if q.dialect == DialectSQLite {
		later = "julianday(nats_expires_at) > julianday($7)"
	}
	return "CASE WHEN nats_public_key = $4 AND nats_expired_at IS NULL AND " + later + " THEN nats_expires_at ELSE $7 END"
}

// RefreshUserNATSJWT replaces the JWT of the user's current key when the
// recorded expiry already covers the new one (mulchat.NATSJWTRefresher), in
// one UPDATE that leaves nats_public_key, nats_account_id and nats_expires_at
// alone (no index rewrite on SQLite, a HOT update on PostgreSQL).
//
// On PostgreSQL, outside a caller's transaction, concurrent refreshes are
// written together in one implicit transaction (refreshGroup), whose
// statements turn synchronous_commit off for it (set_config with is_local),
// so the commit does not wait for the WAL flush: 0.7-3 ms on this project's
// disk, several times the rest of an issuance. The setting is part of each
// statement's WHERE clause, so a row can only be written with it in force,
// and it ends with the transaction. Why losing the write is harmless is
// in mulchat.NATSJWTRefresher and docs/performance.md. Inside a caller's
// transaction nothing is relaxed. SQLite commits the same way for every
// write (synchronous=NORMAL), so there is nothing to relax there.
func (q *queries) RefreshUserNATSJWT(ctx context.Context, userID int64, c mulchat.NATSCredential) (bool, error) {
	if c.PublicKey == "" || c.AccountID == 0 || c.ExpiresAt == nil {
		return false, nil
	}
	if q.tx == nil && q.dialect == DialectPostgres {
		return q.db.refresh.do(ctx, userID, c)
	}
	if q.tx == nil && q.dialect == DialectSQLite {
		// One refresh at a time writes, queued in Go: SQLite's busy
		// handler would otherwise put every refresh that meets another
		// to sleep for a millisecond or more, for a write of about 15 µs.
		select {
		case q.db.sqliteRefresh <- struct{}{}:
			defer func() { <-q.db.sqliteRefresh }()
		case <-ctx.Done():
			return false, q.translate(ctx, ctx.Err(), errMsgs{})
		}
	}
	return q.refreshOne(ctx, userID, c)
}

// refreshOne is RefreshUserNATSJWT's one-row statement. Outside a caller's
// transaction on PostgreSQL (refreshGroup's lone refresh) it does not wait
// for the WAL flush, and it leaves a row another transaction holds alone at
// once rather than waiting for it.
func (q *queries) refreshOne(ctx context.Context, userID int64, c mulchat.NATSCredential) (bool, error) {
	query := refreshOneQuery
	if q.dialect == DialectPostgres && q.tx == nil {
		query = refreshOneRelaxedQuery
	}
	n, err := q.exec(ctx, errMsgs{}, query, refreshOneArgs(userID, c)...)
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

// refreshOneQuery is refreshOne's statement; refreshOneRelaxedQuery is the
// one it runs on PostgreSQL outside a transaction: it turns
// synchronous_commit off for its transaction and leaves a row another
// transaction holds alone.
const (
	refreshOneQuery = `UPDATE users SET nats_jwt = $2, nats_seed_hash = $3, nats_account_public_key = $6
		WHERE id = $1 AND is_active = $8 AND nats_public_key = $4 AND nats_expired_at IS NULL
			AND nats_account_id = $5 AND nats_expires_at >= $7`
	refreshOneRelaxedQuery = refreshOneQuery + ` AND set_config('synchronous_commit', 'off', true) = 'off'
			AND id = (SELECT id FROM users WHERE id = $1 FOR UPDATE SKIP LOCKED)`
)

func refreshOneArgs(userID int64, c mulchat.NATSCredential) []any {
	return []any{userID, nullString(c.JWT), nullString(c.SeedHash), c.PublicKey, c.AccountID,
		nullString(c.AccountPublicKey), c.ExpiresAt, true}
}
