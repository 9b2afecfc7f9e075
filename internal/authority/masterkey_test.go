package authority

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

func TestLoadMasterKeyCreatesFile0600(t *testing.T) {
	t.Setenv(MasterKeyEnv, "")
	dir := filepath.Join(t.TempDir(), "data")
	key, err := LoadMasterKey(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != MasterKeySize {
		t.Fatalf("key length %d", len(key))
	}
	fi, err := os.Stat(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %04o, want 0700", di.Mode().Perm())
	}
	again, err := LoadMasterKey(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, again) {
		t.Error("second load returned another key")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the key file", len(entries))
	}
}

func TestLoadMasterKeyConcurrentCreateAgrees(t *testing.T) {
	t.Setenv(MasterKeyEnv, "")
	dir := t.TempDir()
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadMasterKey(dir, true)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) {
			t.Fatal("concurrent first starts produced different master keys")
		}
	}
}

func TestLoadMasterKeyMissingWithoutCreate(t *testing.T) {
	t.Setenv(MasterKeyEnv, "")
	dir := t.TempDir()
	_, err := LoadMasterKey(dir, false)
	if mulchat.ErrorCode(err) != mulchat.EINVALID {
		t.Fatalf("err = %v, want EINVALID", err)
	}
	for _, want := range []string{MasterKeyEnv, MasterKeyFile, "does not exist"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, MasterKeyFile)); !os.IsNotExist(err) {
		t.Error("a key file was created although create was false")
	}
}

func TestLoadMasterKeyFromEnv(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, MasterKeySize)
	for _, enc := range []string{
		hex.EncodeToString(raw),
		base64.StdEncoding.EncodeToString(raw),
		base64.RawStdEncoding.EncodeToString(raw),
		"  " + hex.EncodeToString(raw) + "\n",
	} {
		t.Setenv(MasterKeyEnv, enc)
		key, err := LoadMasterKey(t.TempDir(), false)
		if err != nil {
			t.Fatalf("%q: %v", enc, err)
		}
		if !bytes.Equal(key, raw) {
			t.Fatalf("%q decoded to another key", enc)
		}
	}
}

func TestLoadMasterKeyRejectsBadKeys(t *testing.T) {
	secret := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 16)) // 16 bytes: too short
	cases := map[string]string{
		"short base64":  secret,
		"long hex":      strings.Repeat("ab", 33),
		"not encoded":   "this is not a key at all!",
		"hex too short": strings.Repeat("cd", 31),
	}
	for name, v := range cases {
		t.Run("env/"+name, func(t *testing.T) {
			t.Setenv(MasterKeyEnv, v)
			_, err := LoadMasterKey(t.TempDir(), true)
			if mulchat.ErrorCode(err) != mulchat.EINVALID {
				t.Fatalf("err = %v, want EINVALID", err)
			}
			if strings.Contains(err.Error(), v) {
				t.Errorf("error echoes the key: %v", err)
			}
		})
		t.Run("file/"+name, func(t *testing.T) {
			t.Setenv(MasterKeyEnv, "")
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, MasterKeyFile), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadMasterKey(dir, true)
			if mulchat.ErrorCode(err) != mulchat.EINVALID {
				t.Fatalf("err = %v, want EINVALID", err)
			}
			if strings.Contains(err.Error(), v) {
				t.Errorf("error echoes the key: %v", err)
			}
		})
	}
}

func TestLoadMasterKeyRefusesOpenPermissions(t *testing.T) {
	t.Setenv(MasterKeyEnv, "")
	dir := t.TempDir()
	if _, err := LoadMasterKey(dir, true); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, MasterKeyFile)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadMasterKey(dir, true)
	if mulchat.ErrorCode(err) != mulchat.EINVALID || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("err = %v, want EINVALID telling to chmod 600", err)
	}
}

func TestSeedEncryptionRoundTripAndBinding(t *testing.T) {
	key := bytes.Repeat([]byte{1}, MasterKeySize)
	other := bytes.Repeat([]byte{2}, MasterKeySize)
	kp, _ := nkeys.CreateAccount()
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	kp2, _ := nkeys.CreateAccount()
	pub2, _ := kp2.PublicKey()

	blob, err := EncryptSeed(key, seed)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, seed) {
		t.Fatal("ciphertext contains the seed")
	}
	blob2, _ := EncryptSeed(key, seed)
	if bytes.Equal(blob, blob2) {
		t.Error("two encryptions of one seed are equal: nonce not random")
	}
	got, err := DecryptSeed(key, pub, blob)
	if err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("round trip: %v", err)
	}
	tampered := bytes.Clone(blob)
	tampered[len(tampered)-1] ^= 1
	cases := []struct {
		name string
		key  []byte
		pub  string
		blob []byte
	}{
		{"wrong master key", other, pub, blob},
		{"other row's public key", key, pub2, blob},
		{"tampered", key, pub, tampered},
		{"truncated", key, pub, blob[:10]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecryptSeed(c.key, c.pub, c.blob)
			if mulchat.ErrorCode(err) != mulchat.EINVALID {
				t.Fatalf("err = %v, want EINVALID", err)
			}
			if strings.Contains(err.Error(), string(seed)) {
				t.Error("error contains the seed")
			}
		})
	}
	if _, err := EncryptSeed(key, []byte("SUnotaseed")); mulchat.ErrorCode(err) != mulchat.EINVALID {
		t.Errorf("encrypting a non-seed: err = %v", err)
	}
}

func TestValidSubject(t *testing.T) {
	for s, want := range map[string]bool{
		"bots.alerts":   true,
		"bots.*.in":     true,
		"bots.>":        true,
		">":             true,
		"":              false,
		"a..b":          false,
		"a.>.b":         false,
		"a.b*":          false,
		"a b":           false,
		"a.\x00":        false,
		".a":            false,
		"a.":            false,
		"$JS.API.INFO":  true,
		"a.b>":          false,
		"chat.user.1.>": true,
	} {
		if got := validSubject(s); got != want {
			t.Errorf("validSubject(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestFormatFreshCredsMatchesLibrary(t *testing.T) {
	acct, _ := nkeys.CreateAccount()
	for range 5 {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		uc := jwt.NewUserClaims(pub)
		token, err := uc.Encode(acct)
		if err != nil {
			t.Fatal(err)
		}
		want, err := jwt.FormatUserConfig(token, seed)
		if err != nil {
			t.Fatal(err)
		}
		got, err := formatFreshCreds(token, seed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("formatFreshCreds differs from jwt.FormatUserConfig:\n%s\nwant\n%s", got, want)
		}
	}
}
