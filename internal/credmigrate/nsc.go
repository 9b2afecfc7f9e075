package credmigrate

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat"
)

// NSCImportOptions say where the legacy nsc environment is and how to store
// its keys.
type NSCImportOptions struct {
	KeystoreDir string // nsc's key store: keys/<O|A|U>/<2 chars>/<public key>.nk (the "keys" level may be given or not)
	StoreDir    string // nsc's JWT store: <operator>/<operator>.jwt, <operator>/accounts/<name>/<name>.jwt
	Operator    string // the operator's name in StoreDir; "" when there is only one
	// ChatAccount is the nsc name of the account that becomes mulchat's
	// "chat" account; "" picks the account the legacy database already
	// calls chat, or the only account besides the system account.
	ChatAccount string
	MasterKey   []byte
	// Encrypt encrypts a seed for storage (authority.EncryptSeed), so that
	// the authority can decrypt what the import stores.
	Encrypt func(masterKey, seed []byte) ([]byte, error)
	Now     func() time.Time
	// LockWait and Logger: see Options (the import holds the migration
	// lock too).
	LockWait time.Duration
	Logger   *slog.Logger
}

// NSCImport reports what ImportNSC stored.
type NSCImport struct {
	Operator string            `json:"operator"`
	Accounts []ImportedAccount `json:"accounts"`
}

// ImportedAccount is one account taken from nsc.
type ImportedAccount struct {
	Name      string `json:"name"`     // mulchat's name
	NSCName   string `json:"nsc_name"` // nsc's name
	PublicKey string `json:"public_key"`
	Signer    string `json:"signer"` // the key that signs its users: a signing key or the identity key
	Existing  bool   `json:"existing_row"`
	Resigned  bool   `json:"jwt_resigned,omitempty"`
}

// ImportNSC imports the operator and account keys and JWTs of the nsc
// environment the legacy app created users with into nats_operators and
// nats_accounts (seeds encrypted with the master key), so that credentials
// issued before the migration stay valid and mulchat signs new ones with the
// same accounts. Account rows the legacy database already has (public keys
// only) are completed in place, keeping their ids. Importing the same
// environment again changes nothing but the stored ciphertexts.
func ImportNSC(ctx context.Context, db *sql.DB, dialect string, opts NSCImportOptions) (*NSCImport, error) {
	if opts.Encrypt == nil || len(opts.MasterKey) == 0 {
		return nil, mulchat.Errorf(mulchat.EINTERNAL, "nsc import needs the master key")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	lock, err := acquireRunLock(ctx, db, dialect, opts.LockWait, opts.Logger)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	if ok, err := tableExists(ctx, db, dialect, "nats_operators"); err != nil {
		return nil, internal(err, "looking for nats_operators")
	} else if !ok {
		return nil, errInvalid("the database has no nats_operators table: run `mulchat migrate adopt` (legacy) or `mulchat migrate up` first")
	}
	keys := opts.KeystoreDir
	if fi, err := os.Stat(filepath.Join(keys, "keys")); err == nil && fi.IsDir() {
		keys = filepath.Join(keys, "keys")
	}
	opDir, err := findOperatorDir(opts.StoreDir, opts.Operator)
	if err != nil {
		return nil, err
	}
	opName := filepath.Base(opDir)
	opJWT, err := os.ReadFile(filepath.Join(opDir, opName+".jwt"))
	if err != nil {
		return nil, errInvalidWrap(err, "cannot read the operator JWT")
	}
	oc, err := jwt.DecodeOperatorClaims(strings.TrimSpace(string(opJWT)))
	if err != nil {
		return nil, errInvalidWrap(err, "the operator JWT is not valid")
	}
	opKP, err := findKey(keys, oc.Subject)
	if err != nil {
		return nil, err
	}
	if opKP == nil {
		return nil, errInvalid("the operator's seed (" + oc.Subject + ") is not in the key store: mulchat needs it to sign account JWTs")
	}
	opSeed, _ := opKP.Seed()
	opEnc, err := opts.Encrypt(opts.MasterKey, opSeed)
	if err != nil {
		return nil, err
	}

	type acct struct {
		nscName, name, jwt string
		claims             *jwt.AccountClaims
		idSeed, signSeed   []byte
		signPub            string
		resigned           bool
	}
	entries, err := os.ReadDir(filepath.Join(opDir, "accounts"))
	if err != nil {
		return nil, errInvalidWrap(err, "cannot read the operator's accounts")
	}
	var accts []*acct
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(opDir, "accounts", e.Name(), e.Name()+".jwt"))
		if err != nil {
			continue
		}
		ac, err := jwt.DecodeAccountClaims(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, errInvalidWrap(err, "the JWT of account "+e.Name()+" is not valid")
		}
		a := &acct{nscName: e.Name(), name: e.Name(), jwt: strings.TrimSpace(string(b)), claims: ac}
		if kp, err := findKey(keys, ac.Subject); err != nil {
			return nil, err
		} else if kp != nil {
			a.idSeed, _ = kp.Seed()
		}
		for sk := range ac.SigningKeys {
			if kp, err := findKey(keys, sk); err != nil {
				return nil, err
			} else if kp != nil {
				a.signSeed, _ = kp.Seed()
				a.signPub = sk
				break
			}
		}
		accts = append(accts, a)
	}
	// Names: the system account is SYS; the chat account is chosen below.
	var chat *acct
	for _, a := range accts {
		if a.claims.Subject == oc.SystemAccount {
			a.name = mulchat.SystemAccountName
		}
	}
	var legacyChat string
	db.QueryRowContext(ctx, "SELECT public_key FROM nats_accounts WHERE name = 'chat'").Scan(&legacyChat)
	var others []*acct
	for _, a := range accts {
		switch {
		case a.name == mulchat.SystemAccountName:
		case opts.ChatAccount != "" && a.nscName == opts.ChatAccount:
			chat = a
		case opts.ChatAccount == "" && a.claims.Subject == legacyChat:
			chat = a
		default:
			others = append(others, a)
		}
	}
	if chat == nil && opts.ChatAccount == "" && len(others) == 1 {
		chat, others = others[0], nil
	}
	if chat == nil {
		return nil, errInvalid("cannot tell which nsc account is mulchat's chat account: give --chat-account NAME")
	}
	chat.name = mulchat.ChatAccountName
	for _, a := range accts {
		if a.idSeed == nil && a.signSeed == nil && (a.name == mulchat.ChatAccountName || a.name == mulchat.SystemAccountName) {
			return nil, errInvalid("no seed of account " + a.nscName + " (" + a.claims.Subject + ") in the key store: mulchat could not sign its users")
		}
		// mulchat's authority accepts account JWTs its operator identity key
		// signed; nsc may have used an operator signing key. The chat account
		// also needs JetStream for the router's history.
		needJS := a.name == mulchat.ChatAccountName && a.claims.Limits.JetStreamLimits.DiskStorage == 0 && a.claims.Limits.JetStreamLimits.MemoryStorage == 0
		if a.claims.Issuer != oc.Subject || needJS {
			if needJS {
				a.claims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
					Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit}
			}
			if a.jwt, err = a.claims.Encode(opKP); err != nil {
				return nil, internal(err, "re-signing the JWT of account "+a.nscName)
			}
			a.resigned = true
		}
	}

	res := &NSCImport{Operator: oc.Subject}
	m := &Migrator{db: db, dialect: dialect, opts: Options{Retries: 3, LockTimeout: 5 * time.Second, StatementTimeout: time.Minute, Now: opts.Now}}
	now := nullTime{Time: opts.Now().UTC(), Valid: true}.value(dialect)
	err = m.inTx(ctx, true, func(tx *sql.Tx) error {
		res.Accounts = nil
		var existing string
		err := tx.QueryRowContext(ctx, "SELECT public_key FROM nats_operators WHERE id = 1").Scan(&existing)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := tx.ExecContext(ctx, m.q("INSERT INTO nats_operators (id, name, public_key, jwt, seed_encrypted, created_at, updated_at) VALUES (1, ?, ?, ?, ?, ?, ?)"),
				opName, oc.Subject, strings.TrimSpace(string(opJWT)), opEnc, now, now); err != nil {
				return err
			}
		case err != nil:
			return err
		case existing != oc.Subject:
			return errConflict(fmt.Sprintf("the database already has operator %s (mulchat created its own on a first start); import the nsc environment into the legacy database before `mulchat serve` runs on it", existing))
		default:
			if _, err := tx.ExecContext(ctx, m.q("UPDATE nats_operators SET jwt = ?, seed_encrypted = ?, updated_at = ? WHERE id = 1"), strings.TrimSpace(string(opJWT)), opEnc, now); err != nil {
				return err
			}
		}
		for _, a := range accts {
			var idEnc, signEnc []byte
			if a.idSeed != nil {
				if idEnc, err = opts.Encrypt(opts.MasterKey, a.idSeed); err != nil {
					return err
				}
			}
			var signPub any
			if a.signSeed != nil {
				if signEnc, err = opts.Encrypt(opts.MasterKey, a.signSeed); err != nil {
					return err
				}
				signPub = a.signPub
			}
			signer := a.signPub
			if signer == "" {
				signer = a.claims.Subject
			}
			info := ImportedAccount{Name: a.name, NSCName: a.nscName, PublicKey: a.claims.Subject, Signer: signer, Resigned: a.resigned}
			var id int64
			err := tx.QueryRowContext(ctx, m.q("SELECT id FROM nats_accounts WHERE public_key = ?"), a.claims.Subject).Scan(&id)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				if _, err := tx.ExecContext(ctx, m.q(`INSERT INTO nats_accounts (name, public_key, description, created_at, updated_at, jwt, seed_encrypted, signing_public_key, signing_key_encrypted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`), a.name, a.claims.Subject, "imported from nsc ("+a.nscName+")", now, now, a.jwt, idEnc, signPub, signEnc); err != nil {
					return fmt.Errorf("storing account %s: %w", a.nscName, err)
				}
			case err != nil:
				return err
			default:
				info.Existing = true
				if _, err := tx.ExecContext(ctx, m.q(`UPDATE nats_accounts SET name = ?, jwt = ?, seed_encrypted = ?, signing_public_key = ?, signing_key_encrypted = ?, updated_at = ? WHERE id = ?`),
					a.name, a.jwt, idEnc, signPub, signEnc, now, id); err != nil {
					return fmt.Errorf("completing account %s: %w", a.nscName, err)
				}
			}
			res.Accounts = append(res.Accounts, info)
		}
		return nil
	})
	if err != nil {
		return nil, internal(err, "importing the nsc environment")
	}
	return res, nil
}

func findOperatorDir(store, name string) (string, error) {
	if name != "" {
		dir := filepath.Join(store, name)
		if _, err := os.Stat(filepath.Join(dir, name+".jwt")); err != nil {
			return "", errInvalid("no operator " + name + " in " + store)
		}
		return dir, nil
	}
	entries, err := os.ReadDir(store)
	if err != nil {
		return "", errInvalidWrap(err, "cannot read the nsc store directory")
	}
	var found []string
	for _, e := range entries {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(store, e.Name(), e.Name()+".jwt")); err == nil {
				found = append(found, filepath.Join(store, e.Name()))
			}
		}
	}
	switch len(found) {
	case 0:
		return "", errInvalid("no operator found in " + store + " (expected <operator>/<operator>.jwt)")
	case 1:
		return found[0], nil
	}
	return "", errInvalid("several operators in " + store + ": choose one with --operator")
}

// findKey loads the seed of pub from an nsc key store; nil when absent. The
// seed is checked to belong to pub.
func findKey(keys, pub string) (nkeys.KeyPair, error) {
	if len(pub) < 3 {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(keys, pub[:1], pub[1:3], pub+".nk"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errInvalidWrap(err, "cannot read the key store")
	}
	seed := bytes.TrimSpace(b)
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, errInvalid("the key store entry of " + pub + " is not a seed")
	}
	if got, _ := kp.PublicKey(); got != pub {
		return nil, errInvalid("the key store entry of " + pub + " holds another key")
	}
	return kp, nil
}
