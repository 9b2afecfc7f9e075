package legacygen

import (
	"bytes"
	"crypto/sha512"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"strconv"
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

// userJWT builds the same token as EncodeUserJWT(jwt.NewUserClaims(sub)
// named "legacy", expiring at exp (0: never), the generator's account, iat),
// byte for byte, without the library's double JSON round trip: generating a
// million of them is mostly signing.
func (g *generator) userJWT(sub string, iat, exp int64) (string, error) {
	body := func(jti string) []byte {
		b := make([]byte, 0, 400)
		b = append(b, '{')
		if exp != 0 {
			b = append(b, `"exp":`...)
			b = strconv.AppendInt(b, exp, 10)
			b = append(b, ',')
		}
		b = append(b, `"iat":`...)
		b = strconv.AppendInt(b, iat, 10)
		b = append(b, `,"iss":"`...)
		b = append(b, g.acctPub...)
		b = append(b, '"')
		if jti != "" {
			b = append(b, `,"jti":"`...)
			b = append(b, jti...)
			b = append(b, '"')
		}
		b = append(b, `,"name":"legacy","nats":{"data":-1,"payload":-1,"pub":{},"sub":{},"subs":-1,"type":"user","version":2},"sub":"`...)
		b = append(b, sub...)
		b = append(b, `"}`...)
		return b
	}
	sum := sha512.Sum512_256(body(""))
	payload := body(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))
	toSign := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := g.account.Sign([]byte(toSign))
	if err != nil {
		return "", err
	}
	return toSign + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// jwtHeader is the encoded header of every v2 nkey-signed JWT.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"JWT","alg":"ed25519-nkey"}`))
