package client

import (
	"bytes"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/nkeys"
)

// A key file holds the seed of the client's NATS user nkey, so that the next
// session of the same user on the same server presents the same key. The
// server then refreshes that key's JWT instead of issuing a credential for a
// new key, which would revoke the previous one and add an entry to the chat
// account's revocation list (docs/nats.md, revocation). The seed alone does
// not connect: NATS also needs a JWT, which only a logged-in client obtains.

// DefaultKeyFile is where `mulchat chat` keeps the key of username on the
// server at serverURL: <os.UserConfigDir()>/mulchat/<host>-<user>.nk, with
// every character outside [A-Za-z0-9._-] of host (and path) and user
// replaced by '_'.
func DefaultKeyFile(serverURL, username string) (string, error) {
	base, err := normalizeServerURL(serverURL)
	if err != nil {
		return "", err
	}
	if username == "" {
		return "", mulchat.Errorf(mulchat.EINVALID, "a username is required for the key file name")
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", mulchat.Errorf(mulchat.EINVALID, "server URL %q must look like http://HOST:PORT", serverURL)
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", mulchat.WrapError(mulchat.EINVALID, err, "no user configuration directory for the key file")
	}
	return filepath.Join(dir, "mulchat", fileNamePart(u.Host+u.Path)+"-"+fileNamePart(username)+".nk"), nil
}

func fileNamePart(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, strings.Trim(s, "/"))
}

// loadOrCreateKey returns the user key pair stored at path, or generates one
// and stores it there (directory 0700, file 0600). created reports the
// latter. Two processes creating the file at once agree on one key: the file
// is written under a temporary name and hard-linked into place, and the
// loser reads the winner's.
func loadOrCreateKey(path string) (kp nkeys.KeyPair, created bool, err error) {
	kp, err = readKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return kp, false, err
	}
	kp, err = nkeys.CreateUser()
	if err != nil {
		return nil, false, mulchat.WrapError(mulchat.EINTERNAL, err, "generating the nkey pair")
	}
	linked, err := writeKeyFile(path, kp, false)
	if err != nil {
		kp.Wipe()
		return nil, false, err
	}
	if !linked {
		kp.Wipe()
		kp, err = readKeyFile(path)
		return kp, false, err
	}
	return kp, true, nil
}

// replaceKey generates a new key pair and stores it at path in place of the
// old one (a key the server refuses: revoked, or replaced long ago).
func replaceKey(path string) (nkeys.KeyPair, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "generating the nkey pair")
	}
	if _, err := writeKeyFile(path, kp, true); err != nil {
		kp.Wipe()
		return nil, err
	}
	return kp, nil
}

// readKeyFile reads a key file. A file any other user could read is refused,
// as is one not holding a user seed; errors never quote the file's content.
// A missing file is an error wrapping fs.ErrNotExist.
func readKeyFile(path string) (nkeys.KeyPair, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "cannot read the key file "+path)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "cannot read the key file "+path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, mulchat.Errorf(mulchat.EINVALID,
			"the key file %s is accessible to other users (mode %v): chmod 600 it, or delete it to get a new key", path, st.Mode().Perm())
	}
	buf := make([]byte, 256)
	n, err := f.Read(buf)
	defer wipe(buf)
	if err != nil || n == len(buf) {
		return nil, errBadKeyFile(path)
	}
	seed := bytes.TrimSpace(buf[:n])
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, errBadKeyFile(path)
	}
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		kp.Wipe()
		return nil, errBadKeyFile(path)
	}
	return kp, nil
}

func errBadKeyFile(path string) error {
	return mulchat.Errorf(mulchat.EINVALID, "the key file %s does not hold a NATS user seed; delete it to get a new key", path)
}

// writeKeyFile stores kp's seed at path: written and synced under a
// temporary name (0600), then hard-linked into place, or renamed over an
// existing file when replace is set. Without replace, an existing file is
// left alone and linked is false.
func writeKeyFile(path string, kp nkeys.KeyPair, replace bool) (linked bool, err error) {
	seed, err := kp.Seed()
	if err != nil {
		return false, mulchat.WrapError(mulchat.EINTERNAL, err, "reading the generated seed")
	}
	// seed is the key pair's own buffer (nkeys returns it, not a copy): it
	// must not be wiped here.
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, mulchat.WrapError(mulchat.EINVALID, err, "cannot create the key file's directory "+dir)
	}
	tmp, err := os.CreateTemp(dir, ".nk-*") // 0600
	if err != nil {
		return false, mulchat.WrapError(mulchat.EINVALID, err, "cannot write the key file in "+dir)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(seed)
	if werr == nil {
		_, werr = tmp.Write([]byte{'\n'})
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return false, mulchat.WrapError(mulchat.EINVALID, werr, "cannot write the key file in "+dir)
	}
	if replace {
		if err := os.Rename(tmp.Name(), path); err != nil {
			return false, mulchat.WrapError(mulchat.EINVALID, err, "cannot replace the key file "+path)
		}
		return true, nil
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, mulchat.WrapError(mulchat.EINVALID, err, "cannot create the key file "+path)
	}
	return true, nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}
