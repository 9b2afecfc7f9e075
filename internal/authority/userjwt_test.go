package authority

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// TestEncodeUserJWTMatchesLibrary: encodeUserJWT must write, byte for byte,
// the JWT jwt.UserClaims.Encode writes for the same claims, signer and
// issue time (ed25519 signatures are deterministic), so that a jwt upgrade
// that changes the format fails here rather than in a NATS server.
func TestEncodeUserJWTMatchesLibrary(t *testing.T) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := newFastSigner(kp)
	if err != nil {
		t.Fatal(err)
	}
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	exp := time.Now().Add(24 * time.Hour).Unix()
	cases := []userJWT{
		{name: "alice", subject: userPub, issuerAccount: accountPub, expires: exp,
			pubAllow: []string{"chat.send.*.1", "chat.api.1.>"}, subAllow: []string{"chat.user.1.>", "_INBOX.1.>"}},
		{name: "", subject: userPub, issuerAccount: accountPub, expires: 0},
		{name: "<a&b>\"\\\n\t\x01\u2028\u2029é\xff", subject: userPub, expires: exp,
			pubAllow: []string{"chat.send.*.7", "bots.>", "x&y"}, subAllow: []string{"a.b"}},
		{name: "bob", subject: userPub, issuerAccount: accountPub, expires: exp, subAllow: []string{"only.sub"}},
	}
	for i, c := range cases {
		uc := jwt.NewUserClaims(c.subject)
		uc.Name = c.name
		uc.IssuerAccount = c.issuerAccount
		uc.Expires = c.expires
		uc.Pub.Allow.Add(c.pubAllow...)
		uc.Sub.Allow.Add(c.subAllow...)
		uc.Limits.Payload = UserMaxPayload
		uc.Limits.Subs = UserMaxSubs
		uc.Limits.Data = jwt.NoLimit
		want, err := uc.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		decoded, err := jwt.DecodeUserClaims(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := signer.encodeUserJWT(&c, decoded.IssuedAt)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
	if _, err := signer.encodeUserJWT(&userJWT{subject: accountPub}, 1); err == nil {
		t.Error("encoded a JWT whose subject is not a user key")
	}
}

// TestAppendJSONStringMatchesEncodingJSON compares appendJSONString with
// json.Marshal on edge cases and random strings.
func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	inputs := []string{"", "plain", "<>&", "\"\\", "\b\f\n\r\t\x00\x1f\x7f", "\u2028\u2029", "é€😀", "\xff\xfe", "a\xc3", "\xed\xa0\x80"}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "<", ">", "&", "\"", "\\", "\n", "\x00", "\x7f", "é", "\u2028", "\u2029", "\xff", "\xc3", "😀", ".", "*"}
	for range 5000 {
		var s string
		for range rng.IntN(12) {
			s += alphabet[rng.IntN(len(alphabet))]
		}
		inputs = append(inputs, s)
	}
	for _, s := range inputs {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Fatalf("appendJSONString(%q) = %s, want %s", s, got, want)
		}
	}
}
