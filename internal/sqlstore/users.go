package sqlstore

import (
	"context"
	"time"

	"github.com/mulchat/mulchat"
)

const userColumns = `id, username, email, hashed_password, is_active, must_rotate_password, created_at,
	nats_jwt, nats_seed_hash, nats_public_key, nats_account_id, nats_account_public_key,
	nats_expires_at, nats_expired_at`

func scanUser(s scanner) (*mulchat.User, error) {
	var u mulchat.User
	if err := s.Scan(userDests(&u)...); err != nil {
		return nil, err
	}
	return &u, nil
}

// userDests are the scan destinations of userColumns, in order.
func userDests(u *mulchat.User) []any {
	return []any{&u.ID, &u.Username, stringDest{&u.Email}, stringDest{&u.HashedPassword},
		boolDest{&u.IsActive}, boolDest{&u.MustRotatePassword}, timeDest{&u.CreatedAt},
		stringDest{&u.NATS.JWT}, stringDest{&u.NATS.SeedHash}, stringDest{&u.NATS.PublicKey},
		idDest{&u.NATS.AccountID}, stringDest{&u.NATS.AccountPublicKey},
		nullTimeDest{&u.NATS.ExpiresAt}, nullTimeDest{&u.NATS.ExpiredAt}}
}

var userNotFound = errMsgs{notFound: "user not found"}

func checkUserKeys(u *mulchat.User) error {
	if u.Username == "" {
		return mulchat.Errorf(mulchat.EINVALID, "username is required")
	}
	if u.HashedPassword == "" {
		return mulchat.Errorf(mulchat.EINVALID, "password hash is required")
	}
	if err := checkKeyLen("username", u.Username); err != nil {
		return err
	}
	if err := checkKeyLen("email", u.Email); err != nil {
		return err
	}
	return checkKeyLen("NATS public key", u.NATS.PublicKey)
}

// CreateUser inserts u with its credential columns and sets u.ID, and
// u.CreatedAt when it is zero (an import may keep its original time).
func (q *queries) CreateUser(ctx context.Context, u *mulchat.User) error {
	if err := checkUserKeys(u); err != nil {
		return err
	}
	createdAt := now()
	if !u.CreatedAt.IsZero() {
		createdAt = normTime(u.CreatedAt)
	}
	c := u.NATS
	var id int64
	err := q.one(ctx, errMsgs{fk: "NATS account does not exist"},
		`INSERT INTO users (username, email, hashed_password, is_active, must_rotate_password, created_at,
			nats_jwt, nats_seed_hash, nats_public_key, nats_account_id, nats_account_public_key,
			nats_expires_at, nats_expired_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		RETURNING id`,
		[]any{u.Username, nullString(u.Email), u.HashedPassword, u.IsActive, u.MustRotatePassword, createdAt,
			nullString(c.JWT), nullString(c.SeedHash), nullString(c.PublicKey), nullID(c.AccountID),
			nullString(c.AccountPublicKey), c.ExpiresAt, c.ExpiredAt},
		func(s scanner) error { return s.Scan(&id) })
	if err != nil {
		return err
	}
	u.ID = id
	u.CreatedAt = createdAt
	u.NATS.ExpiresAt = normTimePtr(c.ExpiresAt)
	u.NATS.ExpiredAt = normTimePtr(c.ExpiredAt)
	return nil
}

func (q *queries) userBy(ctx context.Context, where string, arg any) (*mulchat.User, error) {
	var u *mulchat.User
	err := q.one(ctx, userNotFound, `SELECT `+userColumns+` FROM users WHERE `+where, []any{arg},
		func(s scanner) (err error) {
			u, err = scanUser(s)
			return err
		})
	return u, err
}

func (q *queries) UserByID(ctx context.Context, id int64) (*mulchat.User, error) {
	return q.userBy(ctx, `id = $1`, id)
}

func (q *queries) UserByUsername(ctx context.Context, username string) (*mulchat.User, error) {
	return q.userBy(ctx, `username = $1`, username)
}

func (q *queries) UserByNATSPublicKey(ctx context.Context, publicKey string) (*mulchat.User, error) {
	if publicKey == "" {
		return nil, mulchat.Errorf(mulchat.ENOTFOUND, "user not found")
	}
	return q.userBy(ctx, `nats_public_key = $1`, publicKey)
}

func (q *queries) listUsers(ctx context.Context, query string, args ...any) ([]*mulchat.User, error) {
	users := []*mulchat.User{}
	err := q.many(ctx, query, args, func(s scanner) error {
		u, err := scanUser(s)
		if err != nil {
			return err
		}
		users = append(users, u)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return users, nil
}

// ListUsers lists every user by id.
func (q *queries) ListUsers(ctx context.Context) ([]*mulchat.User, error) {
	return q.listUsers(ctx, `SELECT `+userColumns+` FROM users ORDER BY id`)
}

func (q *queries) UpdateUserActive(ctx context.Context, id int64, active bool) error {
	return q.updateUser(ctx, `UPDATE users SET is_active = $2 WHERE id = $1`, id, active)
}

// UpdateUserPassword sets the hash and clears must_rotate_password: the
// user has chosen a new password.
func (q *queries) UpdateUserPassword(ctx context.Context, id int64, hashedPassword string) error {
	if hashedPassword == "" {
		return mulchat.Errorf(mulchat.EINVALID, "password hash is required")
	}
	return q.updateUser(ctx,
		`UPDATE users SET hashed_password = $2, must_rotate_password = $3 WHERE id = $1`, id, hashedPassword, false)
}

// updateUser runs an UPDATE of one user row; no row is ENOTFOUND.
func (q *queries) updateUser(ctx context.Context, query string, args ...any) error {
	n, err := q.exec(ctx, errMsgs{fk: "NATS account does not exist"}, query, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return mulchat.Errorf(mulchat.ENOTFOUND, "user not found")
	}
	return nil
}

// GetUserNATSCredential returns the user's credential columns; a user without
// a credential has the zero NATSCredential (status "none").
func (q *queries) GetUserNATSCredential(ctx context.Context, userID int64) (mulchat.NATSCredential, error) {
	var c mulchat.NATSCredential
	err := q.one(ctx, userNotFound,
		`SELECT nats_jwt, nats_seed_hash, nats_public_key, nats_account_id, nats_account_public_key,
			nats_expires_at, nats_expired_at
		FROM users WHERE id = $1`, []any{userID},
		func(s scanner) error {
			return s.Scan(stringDest{&c.JWT}, stringDest{&c.SeedHash}, stringDest{&c.PublicKey},
				idDest{&c.AccountID}, stringDest{&c.AccountPublicKey},
				nullTimeDest{&c.ExpiresAt}, nullTimeDest{&c.ExpiredAt})
		})
	if err != nil {
		return mulchat.NATSCredential{}, err
	}
	return c, nil
}

// UpdateUserNATSCredential writes all seven users.nats_* columns; zero values
// become NULL, so the zero NATSCredential clears the credential. A later
// expiry already recorded for the same unrevoked key is kept
// (keepLaterExpiry): the recorded expiry is the latest of any JWT of the
// current key, and a write racing another refresh must not lower it.
func (q *queries) UpdateUserNATSCredential(ctx context.Context, userID int64, c mulchat.NATSCredential) error {
	if err := checkKeyLen("NATS public key", c.PublicKey); err != nil {
		return err
	}
	return q.updateUser(ctx,
		`UPDATE users SET nats_jwt = $2, nats_seed_hash = $3, nats_public_key = $4, nats_account_id = $5,
			nats_account_public_key = $6, nats_expires_at = `+q.keepLaterExpiry()+`, nats_expired_at = $8
		WHERE id = $1`,
		userID, nullString(c.JWT), nullString(c.SeedHash), nullString(c.PublicKey), nullID(c.AccountID),
		nullString(c.AccountPublicKey), c.ExpiresAt, c.ExpiredAt)
}

// hasCredential is the SQL form of NATSCredential.Status's "not none": a
// public key or a JWT. Legacy rows may hold an empty string where mulchat
// writes NULL.
const hasCredential = `(COALESCE(nats_public_key, '') <> '' OR COALESCE(nats_jwt, '') <> '')`

// ExpireUserNATSCredential sets nats_expired_at (the credential is revoked).
// A credential already revoked keeps its first revocation time.
func (q *queries) ExpireUserNATSCredential(ctx context.Context, userID int64, at time.Time) error {
	n, err := q.exec(ctx, errMsgs{},
		`UPDATE users SET nats_expired_at = COALESCE(nats_expired_at, $2) WHERE id = $1 AND `+hasCredential,
		userID, at)
	if err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := q.UserByID(ctx, userID); err != nil {
		return err
	}
	return mulchat.Errorf(mulchat.ENOTFOUND, "user has no NATS credential")
}

// ListUsersWithActiveNATSCredentials lists, by id, the users whose credential
// NATSCredential.Status reports active at now: present, not revoked, and
// without an expiry or expiring after now. is_active is not considered.
func (q *queries) ListUsersWithActiveNATSCredentials(ctx context.Context, now time.Time) ([]*mulchat.User, error) {
	return q.listUsers(ctx,
		`SELECT `+userColumns+` FROM users
		WHERE `+hasCredential+` AND nats_expired_at IS NULL AND (nats_expires_at IS NULL OR nats_expires_at > $1)
		ORDER BY id`, now)
}
