package legacygen

import (
	"bytes"
	"crypto/sha512"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat"
)

// EncodeUserJWT signs uc with account like jwt.UserClaims.Encode, but with
// the issued-at time iat: the jwt library always stamps the current time,
// and a legacy database holds credentials issued over months.
func EncodeUserJWT(uc *jwt.UserClaims, account nkeys.KeyPair, iat time.Time) (string, error) {
	// Let the library fill in issuer, id, type and version; skip its
	// signature, which would cover the wrong iat anyway.
	draft, err := uc.EncodeWithSigner(account, func(string, []byte) ([]byte, error) { return nil, nil })
	if err != nil {
		return "", err
	}
	parts := strings.Split(draft, ".")
	if len(parts) != 3 {
		return "", mulchat.Errorf(mulchat.EINTERNAL, "unexpected JWT shape")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var claims map[string]any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return "", err
	}
	claims["iat"] = iat.Unix()
	// The library's jti hashes the claims with its own iat; recompute it
	// over ours, so the same inputs always give the same token.
	delete(claims, "jti")
	if payload, err = json.Marshal(claims); err != nil {
		return "", err
	}
	sum := sha512.Sum512_256(payload)
	claims["jti"] = base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])
	if payload, err = json.Marshal(claims); err != nil {
		return "", err
	}
	toSign := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := account.Sign([]byte(toSign))
	if err != nil {
		return "", err
	}
	return toSign + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
