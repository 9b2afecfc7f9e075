package authority

import (
	"bytes"
	"context"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/jwt/v2"
)

// MaxCredsSize bounds what VerifyCreds parses. A creds file is a JWT and a
// seed, a few kilobytes even with many permission grants.
const MaxCredsSize = 256 * 1024

// Verification is what VerifyCreds found out about a creds file.
type Verification struct {
	UserID    int64 // 0 when no mulchat user holds the key
	Username  string
	PublicKey string
	Account   string // the account public key the JWT belongs to
	ExpiresAt time.Time
	Expired   bool
	Revoked   bool
	// Current reports whether the key is the user's current credential
	// (users.nats_public_key) and that credential is not revoked.
	Current  bool
	Problems []string
}

// Valid reports whether the credential would be accepted and is the user's
// current one.
func (v *Verification) Valid() bool {
	return len(v.Problems) == 0 && !v.Expired && !v.Revoked && v.Current
}

// VerifyCreds checks a .creds file: the JWT's signature and its chain to the
// operator, that the seed belongs to the JWT, expiry, revocation, and whether
// it is its user's current credential. A file that cannot be parsed or whose
// JWT signature is wrong is an EINVALID error; everything else is reported in
// the Verification. Errors never quote the file's content.
func (a *Authority) VerifyCreds(ctx context.Context, creds []byte) (*Verification, error) {
	if len(bytes.TrimSpace(creds)) == 0 {
		return nil, mulchat.Errorf(mulchat.EINVALID, "the creds file is empty")
	}
	if len(creds) > MaxCredsSize {
		return nil, mulchat.Errorf(mulchat.EINVALID, "the creds file is larger than %d bytes: not a creds file", MaxCredsSize)
	}
	token, err := jwt.ParseDecoratedJWT(creds)
	if err != nil || token == "" {
		return nil, mulchat.Errorf(mulchat.EINVALID, "the creds file holds no user JWT")
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "the user JWT in the creds file is malformed, truncated or its signature does not match (tampered)")
	}
	kp, err := jwt.ParseDecoratedNKey(creds)
	if err != nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "the creds file holds no valid user nkey seed")
	}
	v := &Verification{PublicKey: uc.Subject, Username: uc.Name}
	if pub, err := kp.PublicKey(); err != nil || pub != uc.Subject {
		v.Problems = append(v.Problems, "the seed does not belong to the JWT's public key")
	}
	if uc.Expires > 0 {
		v.ExpiresAt = time.Unix(uc.Expires, 0).UTC()
		v.Expired = !a.now().Before(v.ExpiresAt)
	} else {
		v.Problems = append(v.Problems, "the JWT never expires")
	}

	// The chain: the issuer is the account key or one of its signing keys,
	// and the account JWT is signed by this authority's operator.
	v.Account = uc.IssuerAccount
	if v.Account == "" {
		v.Account = uc.Issuer
	}
	acct, err := a.store.NATSAccountByPublicKey(ctx, v.Account)
	switch {
	case mulchat.ErrorCode(err) == mulchat.ENOTFOUND:
		v.Problems = append(v.Problems, "the JWT is issued for an account this server does not know")
	case err != nil:
		return nil, err
	default:
		ac, err := a.claims.decode(acct.JWT)
		switch {
		case err != nil:
			v.Problems = append(v.Problems, "the account's stored JWT is not valid")
		case ac.Issuer != a.operatorPub:
			v.Problems = append(v.Problems, "the account is not signed by this server's operator")
		default:
			if uc.Issuer != ac.Subject && !ac.SigningKeys.Contains(uc.Issuer) {
				v.Problems = append(v.Problems, "the JWT is signed by a key that is not one of the account's signing keys")
			}
			v.Revoked = ac.IsClaimRevoked(uc)
		}
	}

	u, err := a.store.UserByNATSPublicKey(ctx, uc.Subject)
	switch {
	case mulchat.ErrorCode(err) == mulchat.ENOTFOUND:
		v.Problems = append(v.Problems, "no user holds this key (it was replaced by a newer credential or never issued here)")
	case err != nil:
		return nil, err
	default:
		v.UserID, v.Username = u.ID, u.Username
		if u.NATS.ExpiredAt != nil {
			v.Revoked = true
		}
		v.Current = u.NATS.PublicKey == uc.Subject && u.NATS.ExpiredAt == nil
		if !u.IsActive {
			v.Problems = append(v.Problems, "the user is disabled")
		}
	}
	return v, nil
}
