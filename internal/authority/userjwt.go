package authority

import (
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// userJWT is what mulchat puts in a user JWT (signUser): the claims
// jwt.UserClaims would hold, and nothing else.
type userJWT struct {
	name          string // the username; "" leaves the claim out
	subject       string // the user's public key
	issuerAccount string // the account's identity key (the issuer is its signing key)
	expires       int64  // Unix seconds; 0 leaves the claim out
	pubAllow      []string
	subAllow      []string
}

// allow adds subjects to an allow list as jwt.StringList.Add does: in order,
// without duplicates or empty strings.
func allow(list []string, subjects ...string) []string {
	for _, s := range subjects {
		if s != "" && !contains(list, s) {
			list = append(list, s)
		}
	}
	return list
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// jwtHeader is jwt's header for an nkey-signed JWT, {"typ":"JWT","alg":
// "ed25519-nkey"}, base64url-encoded as jwt encodes it.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"` + jwt.TokenTypeJwt + `","alg":"` + jwt.AlgorithmNkey + `"}`))

// userJWTVersion is the claims format version jwt writes (its unexported
// libVersion).
const userJWTVersion = 2

// jtiEncoding is how jwt writes a claim's id: unpadded base32 of the
// SHA-512/256 of the claims.
var jtiEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// encodeUserJWT returns, byte for byte, the JWT that jwt.UserClaims.Encode
// would produce for c signed by s at iat (Unix seconds), which
// TestEncodeUserJWTMatchesLibrary checks. jwt builds it with encoding/json's
// reflection twice (once for the claim id, once for the payload) and
// fmt.Sprintf; that was about a third of the signature's own cost. The
// signature is the same ed25519 signature by the same key.
func (s *fastSigner) encodeUserJWT(c *userJWT, iat int64) (string, error) {
	if !nkeys.IsValidPublicUserKey(c.subject) {
		return "", errors.New("expected subject to be user public key")
	}
	// The claim id: the hash of the standard claims without it, as
	// ClaimsData.hash serializes them (in field order, empty ones left out).
	buf := make([]byte, 0, 1024)
	buf = s.appendStandardClaims(buf, c, iat, "")
	sum := sha512.Sum512_256(buf)
	jti := jtiEncoding.EncodeToString(sum[:])

	buf = s.appendStandardClaims(buf[:0], c, iat, jti)
	buf = buf[:len(buf)-1] // reopen the object for "nats"
	buf = append(buf, `,"nats":{"pub":`...)
	buf = appendPermission(buf, c.pubAllow)
	buf = append(buf, `,"sub":`...)
	buf = appendPermission(buf, c.subAllow)
	buf = append(buf, `,"subs":`...)
	buf = strconv.AppendInt(buf, UserMaxSubs, 10)
	buf = append(buf, `,"data":`...)
	buf = strconv.AppendInt(buf, jwt.NoLimit, 10)
	buf = append(buf, `,"payload":`...)
	buf = strconv.AppendInt(buf, UserMaxPayload, 10)
	if c.issuerAccount != "" {
		buf = append(buf, `,"issuer_account":`...)
		buf = appendJSONString(buf, c.issuerAccount)
	}
	buf = append(buf, `,"type":"`+jwt.UserClaim+`","version":`...)
	buf = strconv.AppendInt(buf, userJWTVersion, 10)
	buf = append(buf, "}}"...)

	enc := base64.RawURLEncoding
	token := make([]byte, 0, len(jwtHeader)+1+enc.EncodedLen(len(buf))+1+enc.EncodedLen(ed25519.SignatureSize))
	token = append(token, jwtHeader...)
	token = append(token, '.')
	token = enc.AppendEncode(token, buf)
	sig := ed25519.Sign(s.priv, token)
	token = append(token, '.')
	token = enc.AppendEncode(token, sig)
	return string(token), nil
}

// appendStandardClaims appends jwt.ClaimsData as encoding/json writes it:
// exp, jti, iat, iss, name, sub (aud and nbf, never set, are left out like
// every empty field).
func (s *fastSigner) appendStandardClaims(buf []byte, c *userJWT, iat int64, jti string) []byte {
	buf = append(buf, '{')
	if c.expires != 0 {
		buf = append(buf, `"exp":`...)
		buf = strconv.AppendInt(buf, c.expires, 10)
		buf = append(buf, ',')
	}
	if jti != "" {
		buf = append(buf, `"jti":`...)
		buf = appendJSONString(buf, jti)
		buf = append(buf, ',')
	}
	buf = append(buf, `"iat":`...)
	buf = strconv.AppendInt(buf, iat, 10)
	buf = append(buf, `,"iss":`...)
	buf = appendJSONString(buf, s.pub)
	if c.name != "" {
		buf = append(buf, `,"name":`...)
		buf = appendJSONString(buf, c.name)
	}
	buf = append(buf, `,"sub":`...)
	buf = appendJSONString(buf, c.subject)
	return append(buf, '}')
}

// appendPermission appends a jwt.Permission with only an allow list.
func appendPermission(buf []byte, allow []string) []byte {
	if len(allow) == 0 {
		return append(buf, "{}"...)
	}
	buf = append(buf, `{"allow":[`...)
	for i, s := range allow {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, s)
	}
	return append(buf, "]}"...)
}

// appendJSONString appends s as a JSON string exactly as encoding/json's
// Marshal writes it: HTML-safe (<, > and & escaped), U+2028 and U+2029
// escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= ' ' && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch b {
			case '\\', '"':
				buf = append(buf, '\\', b)
			case '\b':
				buf = append(buf, '\\', 'b')
			case '\f':
				buf = append(buf, '\\', 'f')
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
