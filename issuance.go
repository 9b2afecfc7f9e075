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
