package mulchat

import "context"

// APITokenUserReader is implemented by a store that reads a bearer token and
// its user in one statement. Every authenticated API request needs both; one
// round trip instead of two matters on a networked database.
type APITokenUserReader interface {
	// APITokenWithUser returns the token with this hash, as APITokenByHash
	// does, and its user, as UserByID does; ENOTFOUND when either is missing.
	APITokenWithUser(ctx context.Context, tokenHash string) (*APIToken, *User, error)
}
