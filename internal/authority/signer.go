package authority

import (
	"crypto/ed25519"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/nkeys"
)

// fastSigner is an nkeys.KeyPair that keeps the expanded ed25519 private key
// and the public key. nkeys' seed-based pair re-derives both from the seed on
// every PublicKey and Sign call — two scalar multiplications per JWT on top of
// the one signing needs — which made up most of the cost of signing a user
// JWT. ed25519 signatures are deterministic, so the output is identical.
type fastSigner struct {
	nkeys.KeyPair // everything else (Seed, Verify, Wipe, …) as nkeys does it
	pub           string
	priv          ed25519.PrivateKey
}

func newFastSigner(kp nkeys.KeyPair) (*fastSigner, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot read a signing key")
	}
	_, raw, err := nkeys.DecodeSeed(seed)
	if err != nil || len(raw) != ed25519.SeedSize {
		return nil, mulchat.Errorf(mulchat.EINTERNAL, "a signing key seed is not an ed25519 seed")
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot derive a signing public key")
	}
	return &fastSigner{KeyPair: kp, pub: pub, priv: ed25519.NewKeyFromSeed(raw)}, nil
}

func (s *fastSigner) PublicKey() (string, error) { return s.pub, nil }

func (s *fastSigner) Sign(data []byte) ([]byte, error) { return ed25519.Sign(s.priv, data), nil }
