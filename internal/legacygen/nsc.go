package legacygen

import (
	"os"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat"
)

// WriteNSCKeystore writes the legacy operator and accounts as the legacy
// app's nsc environment held them: JWTs under storeDir
// (<operator>/<operator>.jwt, <operator>/accounts/<name>/<name>.jwt) and
// seeds under keystoreDir (keys/<O|A>/<2 chars>/<public key>.nk, mode 0600).
func WriteNSCKeystore(res *Result, keystoreDir, storeDir string) error {
	oc, err := jwt.DecodeOperatorClaims(res.OperatorJWT)
	if err != nil {
		return err
	}
	op := oc.Name
	write := func(path string, data []byte, mode os.FileMode) error {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		return os.WriteFile(path, data, mode)
	}
	if err := write(filepath.Join(storeDir, op, op+".jwt"), []byte(res.OperatorJWT), 0o644); err != nil {
		return err
	}
	for _, a := range []struct{ jwt string }{{res.AccountJWT}, {res.SystemJWT}} {
		ac, err := jwt.DecodeAccountClaims(a.jwt)
		if err != nil {
			return err
		}
		if err := write(filepath.Join(storeDir, op, "accounts", ac.Name, ac.Name+".jwt"), []byte(a.jwt), 0o644); err != nil {
			return err
		}
	}
	for _, seed := range [][]byte{res.OperatorSeed, res.AccountSeed, res.SystemSeed} {
		kp, err := nkeys.FromSeed(seed)
		if err != nil {
			return err
		}
		pub, err := kp.PublicKey()
		if err != nil || len(pub) < 3 {
			return mulchat.Errorf(mulchat.EINTERNAL, "bad generated key")
		}
		if err := write(filepath.Join(keystoreDir, "keys", pub[:1], pub[1:3], pub+".nk"), seed, 0o600); err != nil {
			return err
		}
	}
	return nil
}
