package authority

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/nkeys"
)

// MasterKeyEnv is the environment variable that holds the master key, as
// base64 (standard alphabet) or hex of 32 bytes. It takes precedence over the
// key file.
const MasterKeyEnv = "MULCHAT_MASTER_KEY"

// MasterKeyFile is the name of the key file inside the data directory.
const MasterKeyFile = "master.key"

// MasterKeySize is the length of the master key in bytes (AES-256).
const MasterKeySize = 32

// LoadMasterKey returns the master key that encrypts operator and account
// seeds at rest. It reads MULCHAT_MASTER_KEY first; without it, the file
// <dataDir>/master.key (base64). When neither exists, the file is created
// (0600, its directory 0700) only if create is true; otherwise the missing key
// is an EINVALID error, because silently generating a new key would orphan
// every seed already in the database. A key file readable or writable by
// group or others is refused rather than used: it guards every seed.
func LoadMasterKey(dataDir string, create bool) ([]byte, error) {
	if v, ok := os.LookupEnv(MasterKeyEnv); ok && strings.TrimSpace(v) != "" {
		key, err := decodeMasterKey(v)
		if err != nil {
			return nil, mulchat.Errorf(mulchat.EINVALID, "%s: %s", MasterKeyEnv, err.Error())
		}
		return key, nil
	}
	if dataDir == "" {
		return nil, mulchat.Errorf(mulchat.EINVALID, "no master key: set %s or a data directory", MasterKeyEnv)
	}
	path := filepath.Join(dataDir, MasterKeyFile)
	key, err := readMasterKeyFile(path)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if !create {
		return nil, mulchat.Errorf(mulchat.EINVALID,
			"no master key: %s is not set and %s does not exist (it is created only on first start; restore it from backup, or the encrypted keys in the database cannot be used)",
			MasterKeyEnv, path)
	}
	return createMasterKeyFile(dataDir, path)
}

// decodeMasterKey accepts 64 hex digits or base64 (padded or not) of 32
// bytes. Its errors never quote the input.
func decodeMasterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 2*MasterKeySize {
		if key, err := hex.DecodeString(s); err == nil {
			return key, nil
		}
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, errors.New("master key must be base64 or hex of 32 bytes")
	}
	if len(key) != MasterKeySize {
		return nil, fmt.Errorf("master key must be 32 bytes, got %d", len(key))
	}
	return key, nil
}

func readMasterKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "cannot read the master key file "+path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, mulchat.Errorf(mulchat.EINVALID,
			"master key file %s has mode %04o: it must not be accessible by group or others (chmod 600 %s)",
			path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "cannot read the master key file "+path)
	}
	key, err := decodeMasterKey(string(b))
	if err != nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "master key file %s: %s", path, err.Error())
	}
	return key, nil
}

// createMasterKeyFile writes a new random key. It writes a temporary file and
// links it into place, so a second process starting at the same moment either
// wins the link or reads the complete key of the winner — never a half-written
// file, never a second key.
func createMasterKeyFile(dataDir, path string) ([]byte, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "cannot create the data directory "+dataDir)
	}
	key := make([]byte, MasterKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot generate a master key")
	}
	tmp, err := os.CreateTemp(dataDir, ".master.key-*")
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "cannot write the master key file in "+dataDir)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp already uses 0600; Chmod makes it independent of that detail.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot set the master key file mode")
	}
	if _, err := tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		tmp.Close()
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot write the master key file")
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot write the master key file")
	}
	if err := tmp.Close(); err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot write the master key file")
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readMasterKeyFile(path)
		}
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot create the master key file "+path)
	}
	return key, nil
}

// Encrypted seed format: version byte, 12-byte nonce, AES-256-GCM ciphertext
// with its tag. The AES key is derived from the master key with HKDF so the
// master key itself is never used directly as a cipher key, and the
// additional data binds each ciphertext to the public key of its key pair, so
// a ciphertext copied onto another row fails to decrypt.
const (
	seedFormatV1   = 1
	seedKDFInfo    = "mulchat nkey seed encryption v1"
	seedAADPrefix  = "mulchat nkey seed:"
	gcmNonceLength = 12
)

func seedCipher(masterKey []byte) (cipher.AEAD, error) {
	if len(masterKey) != MasterKeySize {
		return nil, mulchat.Errorf(mulchat.EINVALID, "master key must be %d bytes", MasterKeySize)
	}
	k, err := hkdf.Key(sha256.New, masterKey, nil, seedKDFInfo, 32)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot derive the seed encryption key")
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot set up AES")
	}
	return cipher.NewGCM(block)
}

// EncryptSeed encrypts an nkey seed with the master key for storage
// (nats_operators/nats_accounts). Tools that import keys (nsc import) use it
// so that the authority can decrypt what they store.
func EncryptSeed(masterKey, seed []byte) ([]byte, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "not a valid nkey seed")
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "not a valid nkey seed")
	}
	aead, err := seedCipher(masterKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+gcmNonceLength, 1+gcmNonceLength+len(seed)+aead.Overhead())
	out[0] = seedFormatV1
	if _, err := rand.Read(out[1 : 1+gcmNonceLength]); err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot generate a nonce")
	}
	return aead.Seal(out, out[1:1+gcmNonceLength], seed, []byte(seedAADPrefix+pub)), nil
}

// errMasterKeyMismatch is what a seed that fails to decrypt means in
// practice: the database was encrypted under another master key.
func errMasterKeyMismatch() error {
	return mulchat.Errorf(mulchat.EINVALID, "master key does not match this database (the stored keys cannot be decrypted with it)")
}

// DecryptSeed decrypts a seed stored by EncryptSeed and checks that it is the
// seed of publicKey. A wrong master key is an EINVALID error saying so.
func DecryptSeed(masterKey []byte, publicKey string, blob []byte) ([]byte, error) {
	aead, err := seedCipher(masterKey)
	if err != nil {
		return nil, err
	}
	if len(blob) < 1+gcmNonceLength+aead.Overhead() || blob[0] != seedFormatV1 {
		return nil, mulchat.Errorf(mulchat.EINVALID, "encrypted seed of %s is malformed or of an unknown format", publicKey)
	}
	seed, err := aead.Open(nil, blob[1:1+gcmNonceLength], blob[1+gcmNonceLength:], []byte(seedAADPrefix+publicKey))
	if err != nil {
		return nil, errMasterKeyMismatch()
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "decrypted seed of %s is not a valid nkey seed", publicKey)
	}
	if pub, err := kp.PublicKey(); err != nil || pub != publicKey {
		return nil, mulchat.Errorf(mulchat.EINVALID, "decrypted seed does not belong to %s", publicKey)
	}
	return seed, nil
}
