package sqlstore

import (
	"context"
	"time"

	"github.com/mulchat/mulchat"
)

// operatorID is the id of the one operator row: the schema's CHECK (id = 1)
// makes a second operator a conflict rather than a silent second identity.
const operatorID = 1

// CreateNATSOperator inserts the operator; a second one is ECONFLICT. It sets
// o.ID, and o.CreatedAt and o.UpdatedAt when they are zero.
func (q *queries) CreateNATSOperator(ctx context.Context, o *mulchat.NATSOperator) error {
	if o.PublicKey == "" {
		return mulchat.Errorf(mulchat.EINVALID, "operator public key is required")
	}
	createdAt, updatedAt := createTimes(o.CreatedAt, o.UpdatedAt)
	_, err := q.exec(ctx, errMsgs{},
		`INSERT INTO nats_operators (id, name, public_key, jwt, seed_encrypted, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		int64(operatorID), o.Name, o.PublicKey, o.JWT, o.SeedEncrypted, createdAt, updatedAt)
	if err != nil {
		return err
	}
	o.ID, o.CreatedAt, o.UpdatedAt = operatorID, createdAt, updatedAt
	return nil
}

// NATSOperator returns the one operator, ENOTFOUND before it is created.
func (q *queries) NATSOperator(ctx context.Context) (*mulchat.NATSOperator, error) {
	var o mulchat.NATSOperator
	err := q.one(ctx, errMsgs{notFound: "NATS operator not found"},
		`SELECT id, name, public_key, jwt, seed_encrypted, created_at, updated_at
		FROM nats_operators ORDER BY id LIMIT 1`, nil,
		func(s scanner) error {
			return s.Scan(&o.ID, stringDest{&o.Name}, &o.PublicKey, stringDest{&o.JWT}, &o.SeedEncrypted,
				timeDest{&o.CreatedAt}, timeDest{&o.UpdatedAt})
		})
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// createTimes returns the created/updated times of a new row: now unless the
// caller set them (an import keeping its original times).
func createTimes(created, updated time.Time) (time.Time, time.Time) {
	c := now()
	if !created.IsZero() {
		c = normTime(created)
	}
	u := c
	if !updated.IsZero() {
		u = normTime(updated)
	}
	return c, u
}

const accountColumns = `id, name, public_key, description, created_at, updated_at, jwt,
	seed_encrypted, signing_public_key, signing_key_encrypted`

func scanAccount(s scanner) (*mulchat.NATSAccount, error) {
	var a mulchat.NATSAccount
	err := s.Scan(&a.ID, stringDest{&a.Name}, stringDest{&a.PublicKey}, stringDest{&a.Description}, timeDest{&a.CreatedAt},
		timeDest{&a.UpdatedAt}, stringDest{&a.JWT}, &a.SeedEncrypted, stringDest{&a.SigningPublicKey},
		&a.SigningKeyEncrypted)
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// CreateNATSAccount inserts a and sets a.ID, and a.CreatedAt and a.UpdatedAt
// when they are zero.
func (q *queries) CreateNATSAccount(ctx context.Context, a *mulchat.NATSAccount) error {
	if a.Name == "" || a.PublicKey == "" {
		return mulchat.Errorf(mulchat.EINVALID, "account name and public key are required")
	}
	if err := checkKeyLen("account name", a.Name); err != nil {
		return err
	}
	if err := checkKeyLen("account public key", a.PublicKey); err != nil {
		return err
	}
	createdAt, updatedAt := createTimes(a.CreatedAt, a.UpdatedAt)
	var id int64
	err := q.one(ctx, errMsgs{},
		`INSERT INTO nats_accounts (name, public_key, description, created_at, updated_at, jwt,
			seed_encrypted, signing_public_key, signing_key_encrypted)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`,
		[]any{a.Name, a.PublicKey, nullString(a.Description), createdAt, updatedAt, nullString(a.JWT),
			a.SeedEncrypted, nullString(a.SigningPublicKey), a.SigningKeyEncrypted},
		func(s scanner) error { return s.Scan(&id) })
	if err != nil {
		return err
	}
	a.ID, a.CreatedAt, a.UpdatedAt = id, createdAt, updatedAt
	return nil
}

var accountNotFound = errMsgs{notFound: "NATS account not found"}

func (q *queries) accountBy(ctx context.Context, where string, arg any) (*mulchat.NATSAccount, error) {
	var a *mulchat.NATSAccount
	err := q.one(ctx, accountNotFound, `SELECT `+accountColumns+` FROM nats_accounts WHERE `+where, []any{arg},
		func(s scanner) (err error) {
			a, err = scanAccount(s)
			return err
		})
	return a, err
}

func (q *queries) NATSAccountByID(ctx context.Context, id int64) (*mulchat.NATSAccount, error) {
	return q.accountBy(ctx, `id = $1`, id)
}

func (q *queries) NATSAccountByName(ctx context.Context, name string) (*mulchat.NATSAccount, error) {
	return q.accountBy(ctx, `name = $1`, name)
}

func (q *queries) NATSAccountByPublicKey(ctx context.Context, publicKey string) (*mulchat.NATSAccount, error) {
	return q.accountBy(ctx, `public_key = $1`, publicKey)
}

// ListNATSAccounts lists every account by id.
func (q *queries) ListNATSAccounts(ctx context.Context) ([]*mulchat.NATSAccount, error) {
	accounts := []*mulchat.NATSAccount{}
	err := q.many(ctx, `SELECT `+accountColumns+` FROM nats_accounts ORDER BY id`, nil,
		func(s scanner) error {
			a, err := scanAccount(s)
			if err != nil {
				return err
			}
			accounts = append(accounts, a)
			return nil
		})
	if err != nil {
		return nil, err
	}
	return accounts, nil
}

// UpdateNATSAccountJWT stores the account's new JWT and bumps updated_at.
func (q *queries) UpdateNATSAccountJWT(ctx context.Context, id int64, jwt string) error {
	n, err := q.exec(ctx, errMsgs{},
		`UPDATE nats_accounts SET jwt = $2, updated_at = $3 WHERE id = $1`, id, nullString(jwt), now())
	if err != nil {
		return err
	}
	if n == 0 {
		return mulchat.Errorf(mulchat.ENOTFOUND, "NATS account not found")
	}
	return nil
}
