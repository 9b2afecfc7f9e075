package mulchat

import "context"

// UserGrantsReader is implemented by a store that reads a user and the user's
// permission grants in one statement. Credential issuance needs both; one
// round trip instead of two matters on a networked database.
type UserGrantsReader interface {
	// UserWithPermissions returns the user, as UserByID does, and the
	// user's grants by id, as ListUserPermissions does; ENOTFOUND when the
	// user does not exist.
	UserWithPermissions(ctx context.Context, userID int64) (*User, []*Permission, error)
}

// NATSCredentialSetter is implemented by a store that can store a new user
// credential in one statement when doing so revokes nothing, so that the
// common issuance (a first credential, or a client refreshing the JWT of its
// current key) needs no transaction and no lock on the account.
type NATSCredentialSetter interface {
	// SetUserNATSCredentialIfNothingToRevoke writes c as
	// UpdateUserNATSCredential does, atomically, only when the user exists, is
	// active, and the stored credential has no public key, or holds
	// c.PublicKey unrevoked, or holds another key already revoked. It reports
	// whether it wrote; false means the caller must take the general path
	// (which may have to revoke the stored key, or refuse).
	SetUserNATSCredentialIfNothingToRevoke(ctx context.Context, userID int64, c NATSCredential) (bool, error)
}

// NATSJWTRefresher is implemented by a store that can replace the JWT of a
// user's current key in one statement without touching its recorded expiry,
// and may commit that write without waiting for it to be durable.
//
// Losing such a write in a database crash is harmless only because the
// recorded expiry (users.nats_expires_at) already covers the new JWT: the
// store then still holds an older JWT of the same key, and the key's
// revocation entry, which lives until the recorded expiry, still outlives the
// lost JWT. The condition is part of the statement, so it holds whatever
// concurrent writes do.
type NATSJWTRefresher interface {
	// RefreshUserNATSJWT writes c.JWT, c.SeedHash and c.AccountPublicKey
	// only when the user is active and holds c.PublicKey, unrevoked, in
	// account c.AccountID, with a recorded expiry no earlier than
	// *c.ExpiresAt. It leaves every other column, the expiry included, as
	// it is, and reports whether it wrote; false means the caller must take
	// its durable path.
	RefreshUserNATSJWT(ctx context.Context, userID int64, c NATSCredential) (bool, error)
}
