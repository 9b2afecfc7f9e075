package mulchat

import (
	"strings"
	"time"
	"unicode/utf8"
)

// User is a mulchat account holder. The user's NATS credential lives on the same
// row (the seven users.nats_* columns), as the NATS Credential Migration Guide of
// the original Mul-Chat prescribes.
type User struct {
	ID             int64
	Username       string
	Email          string // "" is stored as NULL
	HashedPassword string // argon2id PHC string; never serialised to clients
	IsActive       bool
	// MustRotatePassword is set on legacy users whose password was found in
	// clear text and rehashed by the migration.
	MustRotatePassword bool
	CreatedAt          time.Time
	NATS               NATSCredential
}

// NATSCredential is the credential held on users.nats_*. Zero values are stored
// as NULL.
type NATSCredential struct {
	JWT string // nats_jwt: the user JWT (not secret by itself)
	// SeedHash is the hex SHA-256 of the seed, set only when the server
	// generated the seed; never the seed itself.
	SeedHash         string
	PublicKey        string // nats_public_key: the user's nkey ("U...")
	AccountID        int64  // nats_account_id: FK nats_accounts(id); 0 = NULL
	AccountPublicKey string // nats_account_public_key ("A...")
	ExpiresAt        *time.Time
	ExpiredAt        *time.Time // set when the credential was revoked
}

// Credential statuses as reported by GET /me.
const (
	CredentialNone    = "none"
	CredentialActive  = "active"
	CredentialExpired = "expired"
	CredentialRevoked = "revoked"
)

// Status reports whether the credential is absent, active, past its expiry or
// revoked, at time now.
func (c NATSCredential) Status(now time.Time) string {
	switch {
	case c.PublicKey == "" && c.JWT == "":
		return CredentialNone
	case c.ExpiredAt != nil:
		return CredentialRevoked
	case c.ExpiresAt != nil && !now.Before(*c.ExpiresAt):
		return CredentialExpired
	default:
		return CredentialActive
	}
}

// Username and password rules for registration. Legacy users imported by the
// migration keep names that break these rules; the rules apply to new names.
const (
	UsernameMinLen = 3
	UsernameMaxLen = 32
	PasswordMinLen = 10
	// PasswordMaxLen bounds the work argon2id does on hostile input.
	PasswordMaxLen = 1024
	EmailMaxLen    = 254
)

// ValidateUsername checks a new username: 3–32 of [a-z0-9_.-].
func ValidateUsername(name string) error {
	if len(name) < UsernameMinLen || len(name) > UsernameMaxLen {
		return Errorf(EINVALID, "username must be %d to %d characters", UsernameMinLen, UsernameMaxLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return Errorf(EINVALID, "username may contain only a-z, 0-9, '_', '.' and '-'")
		}
	}
	return nil
}

// ValidatePassword checks a new password's length (in characters).
func ValidatePassword(pw string) error {
	if !utf8.ValidString(pw) {
		return Errorf(EINVALID, "password must be valid UTF-8")
	}
	n := utf8.RuneCountInString(pw)
	if n < PasswordMinLen {
		return Errorf(EINVALID, "password must be at least %d characters", PasswordMinLen)
	}
	if len(pw) > PasswordMaxLen {
		return Errorf(EINVALID, "password must be at most %d bytes", PasswordMaxLen)
	}
	return nil
}

// ValidateEmail does the small check a server can honestly do: one '@', no
// spaces or control characters, a sane length. "" means no email.
func ValidateEmail(email string) error {
	if email == "" {
		return nil
	}
	if len(email) > EmailMaxLen || !utf8.ValidString(email) {
		return Errorf(EINVALID, "email is too long or not valid UTF-8")
	}
	at := strings.IndexByte(email, '@')
	if at <= 0 || at != strings.LastIndexByte(email, '@') || at == len(email)-1 {
		return Errorf(EINVALID, "email must look like name@host")
	}
	for _, r := range email {
		if r <= ' ' || r == 0x7f {
			return Errorf(EINVALID, "email must not contain spaces or control characters")
		}
	}
	return nil
}

// APIToken is a bearer token of the HTTP API. Only the SHA-256 of the token is
// stored; the token itself is shown once, in the login response.
type APIToken struct {
	ID        int64
	UserID    int64
	TokenHash string // hex SHA-256 of the opaque token
	CreatedAt time.Time
	ExpiresAt time.Time
	RevokedAt *time.Time
	UserAgent string
	IPAddress string
}
