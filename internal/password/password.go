// Package password hashes and verifies user passwords with argon2id, stored as
// PHC strings ("$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>").
//
// The parameters are OWASP's recommended argon2id baseline (19 MiB of memory,
// two passes, one lane). They keep one hash around a few tens of milliseconds
// on a server core, and bound the memory a burst of logins can claim: 100
// concurrent logins need about 2 GB, which the login rate limit keeps far
// away. Hashes made with other parameters still verify; NeedsRehash tells the
// caller to store a fresh hash after a successful login.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/mulchat/mulchat"
	"golang.org/x/crypto/argon2"
)

// Params are argon2id cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8  // lanes
	SaltLen int
	KeyLen  uint32
}

// Default is what Hash uses.
var Default = Params{Memory: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// Bounds on parameters accepted from a stored hash, so a corrupted or hostile
// row cannot make Verify allocate gigabytes or loop for minutes.
const (
	maxMemory  = 1 << 20 // 1 GiB in KiB
	maxTime    = 16
	maxThreads = 16
	maxKeyLen  = 128
	maxSaltLen = 64
)

var b64 = base64.RawStdEncoding

// Hash returns the PHC string of pw with the default parameters.
func Hash(pw string) (string, error) { return HashWith(pw, Default) }

// HashWith returns the PHC string of pw with the given parameters.
func HashWith(pw string, p Params) (string, error) {
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", mulchat.WrapError(mulchat.EINTERNAL, err, "reading random salt")
	}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

type decoded struct {
	p    Params
	salt []byte
	key  []byte
}

// decode parses a PHC argon2id string. Its errors never echo the hash.
func decode(phc string) (*decoded, error) {
	bad := func(why string) error {
		return mulchat.Errorf(mulchat.EINVALID, "malformed password hash: %s", why)
	}
	parts := strings.Split(phc, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) != 6 || parts[0] != "" {
		return nil, bad("not a PHC string")
	}
	if parts[1] != "argon2id" {
		return nil, bad("not argon2id")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, bad("unsupported version")
	}
	var d decoded
	seen := 0
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, bad("bad parameter")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, bad("bad parameter value")
		}
		switch k {
		case "m":
			d.p.Memory = uint32(n)
			seen |= 1
		case "t":
			d.p.Time = uint32(n)
			seen |= 2
		case "p":
			if n > 255 {
				return nil, bad("bad parallelism")
			}
			d.p.Threads = uint8(n)
			seen |= 4
		default:
			return nil, bad("unknown parameter")
		}
	}
	if seen != 7 {
		return nil, bad("missing parameter")
	}
	if d.p.Time < 1 || d.p.Time > maxTime || d.p.Threads < 1 || d.p.Threads > maxThreads ||
		d.p.Memory < 8*uint32(d.p.Threads) || d.p.Memory > maxMemory {
		return nil, bad("parameters out of range")
	}
	var err error
	if d.salt, err = b64.DecodeString(parts[4]); err != nil || len(d.salt) < 8 || len(d.salt) > maxSaltLen {
		return nil, bad("bad salt")
	}
	if d.key, err = b64.DecodeString(parts[5]); err != nil || len(d.key) < 16 || len(d.key) > maxKeyLen {
		return nil, bad("bad hash")
	}
	d.p.SaltLen = len(d.salt)
	d.p.KeyLen = uint32(len(d.key))
	return &d, nil
}

// Verify reports whether pw matches the PHC string, comparing in constant
// time. A malformed hash is an EINVALID error, never a panic.
func Verify(phc, pw string) (bool, error) {
	d, err := decode(phc)
	if err != nil {
		return false, err
	}
	key := argon2.IDKey([]byte(pw), d.salt, d.p.Time, d.p.Memory, d.p.Threads, d.p.KeyLen)
	return subtle.ConstantTimeCompare(key, d.key) == 1, nil
}

// NeedsRehash reports whether phc was made with parameters other than the
// defaults (or is not a valid argon2id hash at all).
func NeedsRehash(phc string) bool {
	d, err := decode(phc)
	if err != nil {
		return true
	}
	return d.p.Memory != Default.Memory || d.p.Time != Default.Time || d.p.Threads != Default.Threads ||
		d.p.KeyLen != Default.KeyLen || d.p.SaltLen != Default.SaltLen
}

// Verifier verifies passwords and also does the same work for unknown users,
// so the time a login takes does not reveal whether the username exists.
type Verifier struct {
	dummy string
}

// NewVerifier prepares a dummy hash with the default parameters.
func NewVerifier() (*Verifier, error) {
	var seed [16]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "reading random bytes")
	}
	h, err := Hash(b64.EncodeToString(seed[:]))
	if err != nil {
		return nil, err
	}
	return &Verifier{dummy: h}, nil
}

// VerifyDummy spends the time of one Verify and always reports false. Call it
// when the user does not exist or has no usable hash.
func (v *Verifier) VerifyDummy(pw string) {
	_, _ = Verify(v.dummy, pw)
}
