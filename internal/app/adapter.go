package app

import (
	"context"
	"time"

	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/httpapi"
)

// CredentialAuthority adapts *authority.Authority to the API's Authority
// interface, so internal/httpapi does not depend on the authority package.
func CredentialAuthority(a *authority.Authority) httpapi.Authority { return credentialAuthority{a} }

type credentialAuthority struct{ a *authority.Authority }

func convert(c *authority.IssuedCredential, err error) (*httpapi.Credential, error) {
	if err != nil {
		return nil, err
	}
	return &httpapi.Credential{JWT: c.JWT, PublicKey: c.PublicKey, ExpiresAt: c.ExpiresAt, Seed: c.Seed, Creds: c.Creds}, nil
}

func (c credentialAuthority) IssueUserCredential(ctx context.Context, userID int64, publicKey string, ttl time.Duration) (*httpapi.Credential, error) {
	return convert(c.a.IssueUserCredential(ctx, userID, publicKey, ttl))
}

func (c credentialAuthority) RenewUserCredential(ctx context.Context, userID int64, ttl time.Duration) (*httpapi.Credential, error) {
	return convert(c.a.RenewUserCredential(ctx, userID, ttl))
}

func (c credentialAuthority) RevokeUserCredential(ctx context.Context, userID int64) error {
	return c.a.RevokeUserCredential(ctx, userID)
}
