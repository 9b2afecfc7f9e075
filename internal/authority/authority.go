// Package authority is mulchat's NATS authority: it holds the operator and
// account keys (encrypted at rest under the master key), signs, renews and
// revokes the user JWTs kept on users.nats_*, keeps the account JWT's
// revocation list bounded, hands mulchat's own services their NATS users, and
// prints a nats-server configuration that trusts all of it.
//
// The operator signs account JWTs; each account (SYS and chat) has a separate
// signing key that signs user JWTs, so the account identity key is used only
// when the account itself is created. Every change to a user's credential
// writes the seven users.nats_* columns in the same store transaction as the
// account JWT change it implies; pushing the account JWT to the servers and
// kicking sessions happen after the commit, through the Pusher and Kicker set
// by cmd/mulchat.
package authority

import (
	"context"
	"errors"
	"fmt"
	"github.com/mulchat/mulchat/internal/prom"
	"log/slog"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
)

// OperatorName is the name of the operator mulchat creates on first start.
const OperatorName = "mulchat"

// Defaults for Config.
const (
	DefaultTTL = 24 * time.Hour
	DefaultMax = 30 * 24 * time.Hour
	// MinTTL is the shortest credential lifetime accepted: anything shorter
	// would expire before a client could reasonably connect and renew.
	MinTTL = time.Minute
)

// Limits written into every user JWT. Two subscriptions are all a client
// needs (its deliveries and its inbox); the margin allows for a few more.
const (
	UserMaxPayload = 64 * 1024
	UserMaxSubs    = 100
)

// Config configures Open.
type Config struct {
	Store     mulchat.Store
	MasterKey []byte
	Logger    *slog.Logger
	// Registerer receives mulchat_credentials_issued_total and
	// mulchat_credentials_revoked_total; nil registers nothing.
	Registerer prometheus.Registerer
	DefaultTTL time.Duration // 24h if 0
	// MaxTTL is the longest lifetime of any JWT mulchat signs. A revocation
	// entry lives until its key's last JWT expires, so at most this long
	// after the revocation. 30 days if 0.
	MaxTTL time.Duration
	Now    func() time.Time // nil = time.Now
}

// Authority signs and revokes NATS credentials. Its methods are safe for
// concurrent use, except SetPusher and SetKicker, which are called once at
// wiring time before serving.
type Authority struct {
	store      mulchat.Store
	masterKey  []byte
	log        *slog.Logger
	now        func() time.Time
	defaultTTL time.Duration
	maxTTL     time.Duration

	issued  *prometheus.CounterVec
	revoked prometheus.Counter
	// issuedIssue and issuedRenew are issued's two series, looked up once
	// rather than hashed from their label on every issuance.
	issuedIssue, issuedRenew prometheus.Counter

	operatorKP  nkeys.KeyPair
	operatorPub string
	operatorJWT string
	sys         accountKeys
	chat        accountKeys

	pusher Pusher
	kicker Kicker

	claims claimsCache
	recent recentIssues
}

// accountKeys is what the authority keeps in memory of an account it signs
// for: the decrypted signing key, never the identity seed.
type accountKeys struct {
	id        int64
	pub       string
	signer    nkeys.KeyPair
	signerPub string
}

// Pusher sends an account JWT to the NATS servers (see NewClaimsPusher).
type Pusher func(ctx context.Context, accountJWT string) error

// Kicker closes the live NATS sessions of a user's credential (the tracker
// implements it).
type Kicker func(ctx context.Context, userID int64, publicKey string) error

// SetPusher sets the function that pushes account JWT updates to the servers.
// Without one, revocations reach the servers only when they next load the
// account (restart with preload, or resolver sync). Not for concurrent use:
// call it once, before serving.
func (a *Authority) SetPusher(p Pusher) { a.pusher = p }

// SetKicker sets the function that closes a revoked user's sessions. Not for
// concurrent use: call it once, before serving.
func (a *Authority) SetKicker(k Kicker) { a.kicker = k }

// Open loads the operator and accounts from the store, creating them on the
// first start. A master key that cannot decrypt the stored seeds is an
// EINVALID error; nothing is ever regenerated over existing keys.
func Open(ctx context.Context, cfg Config) (*Authority, error) {
	if cfg.Store == nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "authority: no store")
	}
	if len(cfg.MasterKey) != MasterKeySize {
		return nil, mulchat.Errorf(mulchat.EINVALID, "authority: master key must be %d bytes", MasterKeySize)
	}
	a := &Authority{
		store:      cfg.Store,
		masterKey:  cfg.MasterKey,
		log:        cfg.Logger,
		now:        cfg.Now,
		defaultTTL: cfg.DefaultTTL,
		maxTTL:     cfg.MaxTTL,
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.maxTTL == 0 {
		a.maxTTL = DefaultMax
	}
	if a.defaultTTL == 0 {
		a.defaultTTL = min(DefaultTTL, a.maxTTL)
	}
	if a.maxTTL < MinTTL || a.defaultTTL < MinTTL || a.defaultTTL > a.maxTTL {
		return nil, mulchat.Errorf(mulchat.EINVALID,
			"authority: default TTL %s must be between %s and the max TTL %s", a.defaultTTL, MinTTL, a.maxTTL)
	}
	if err := a.registerMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	// Two instances starting together on an empty database both try to create
	// the operator; the loser's transaction fails on the unique name and it
	// loads what the winner stored.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = a.store.InTx(ctx, func(q mulchat.Queries) error { return a.loadOrCreate(ctx, q) })
		if mulchat.ErrorCode(err) != mulchat.ECONFLICT {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	a.log.Info("nats authority ready", "operator", a.operatorPub,
		"system_account", a.sys.pub, "chat_account", a.chat.pub)
	return a, nil
}

func (a *Authority) registerMetrics(r prometheus.Registerer) error {
	a.issued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mulchat_credentials_issued_total",
		Help: "User NATS credentials signed, by kind (issue or renew).",
	}, []string{"kind"})
	a.revoked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "mulchat_credentials_revoked_total",
		Help: "User NATS credentials revoked.",
	})
	if r != nil {
		// A second Authority on the same registry (tests, or a re-open)
		// shares the counters already registered instead of failing.
		if err := prom.Register(r, &a.issued); err != nil {
			return mulchat.WrapError(mulchat.EINTERNAL, err, "authority: cannot register metrics")
		}
		if err := prom.Register(r, &a.revoked); err != nil {
			return mulchat.WrapError(mulchat.EINTERNAL, err, "authority: cannot register metrics")
		}
	}
	a.issuedIssue, a.issuedRenew = a.issued.WithLabelValues("issue"), a.issued.WithLabelValues("renew")
	return nil
}

// loadOrCreate runs inside one transaction: it loads the operator, SYS and
// chat accounts, creating whichever is missing.
func (a *Authority) loadOrCreate(ctx context.Context, q mulchat.Queries) error {
	op, err := q.NATSOperator(ctx)
	var sysKP nkeys.KeyPair // set when the operator is created, to name SYS in its JWT
	switch {
	case mulchat.ErrorCode(err) == mulchat.ENOTFOUND:
		op, sysKP, err = a.createOperator(ctx, q)
		if err != nil {
			return err
		}
	case err != nil:
		return err
	}
	if len(op.SeedEncrypted) == 0 {
		return mulchat.Errorf(mulchat.EINVALID, "the operator %s has no stored seed: mulchat cannot sign account JWTs with it", op.PublicKey)
	}
	seed, err := DecryptSeed(a.masterKey, op.PublicKey, op.SeedEncrypted)
	if err != nil {
		return err
	}
	opKP, err := nkeys.FromSeed(seed)
	if err != nil {
		return mulchat.Errorf(mulchat.EINVALID, "the stored operator seed is not valid")
	}
	opClaims, err := jwt.DecodeOperatorClaims(op.JWT)
	if err != nil {
		return mulchat.WrapError(mulchat.EINVALID, err, "the stored operator JWT is not valid")
	}
	if opClaims.Subject != op.PublicKey {
		return mulchat.Errorf(mulchat.EINVALID, "the stored operator JWT is not for the operator %s", op.PublicKey)
	}
	if opKP, err = newFastSigner(opKP); err != nil {
		return err
	}
	a.operatorKP, a.operatorPub, a.operatorJWT = opKP, op.PublicKey, op.JWT

	sysAcct, err := a.loadOrCreateAccount(ctx, q, mulchat.SystemAccountName, opClaims.SystemAccount, sysKP)
	if err != nil {
		return err
	}
	if opClaims.SystemAccount != "" && sysAcct.PublicKey != opClaims.SystemAccount {
		return mulchat.Errorf(mulchat.EINVALID, "the operator names system account %s, but the store's is %s", opClaims.SystemAccount, sysAcct.PublicKey)
	}
	if a.sys, err = a.accountKeys(sysAcct); err != nil {
		return err
	}
	chatAcct, err := a.loadOrCreateAccount(ctx, q, mulchat.ChatAccountName, "", nil)
	if err != nil {
		return err
	}
	if a.chat, err = a.accountKeys(chatAcct); err != nil {
		return err
	}
	return nil
}

func (a *Authority) createOperator(ctx context.Context, q mulchat.Queries) (*mulchat.NATSOperator, nkeys.KeyPair, error) {
	opKP, err := nkeys.CreateOperator()
	if err != nil {
		return nil, nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot generate the operator key")
	}
	sysKP, err := nkeys.CreateAccount()
	if err != nil {
		return nil, nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot generate the system account key")
	}
	opPub, _ := opKP.PublicKey()
	sysPub, _ := sysKP.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = OperatorName
	oc.SystemAccount = sysPub
	// The operator identity key signs account JWTs directly: the store keeps
	// one operator seed, and the operator key is used only when an account JWT
	// changes (creation, revocation), always inside the authority.
	opJWT, err := oc.Encode(opKP)
	if err != nil {
		return nil, nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot sign the operator JWT")
	}
	seed, err := opKP.Seed()
	if err != nil {
		return nil, nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot read the operator seed")
	}
	enc, err := EncryptSeed(a.masterKey, seed)
	if err != nil {
		return nil, nil, err
	}
	op := &mulchat.NATSOperator{Name: OperatorName, PublicKey: opPub, JWT: opJWT, SeedEncrypted: enc}
	if err := q.CreateNATSOperator(ctx, op); err != nil {
		return nil, nil, err
	}
	a.log.Info("created nats operator", "operator", opPub)
	return op, sysKP, nil
}

// loadOrCreateAccount finds the account by public key (when known) or name,
// creating it when missing. identity, when non-nil, is the key pair to use for
// a new account (the SYS key the operator JWT already names).
func (a *Authority) loadOrCreateAccount(ctx context.Context, q mulchat.Queries, name, pub string, identity nkeys.KeyPair) (*mulchat.NATSAccount, error) {
	var acct *mulchat.NATSAccount
	var err error
	if pub != "" {
		acct, err = q.NATSAccountByPublicKey(ctx, pub)
	} else {
		acct, err = q.NATSAccountByName(ctx, name)
	}
	if err == nil {
		return acct, nil
	}
	if mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
		return nil, err
	}
	if identity == nil {
		if pub != "" {
			// The operator names a system account whose keys mulchat never
			// had: creating another one would not match the operator JWT.
			return nil, mulchat.Errorf(mulchat.EINVALID, "the operator's system account %s is not in the store", pub)
		}
		if identity, err = nkeys.CreateAccount(); err != nil {
			return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot generate an account key")
		}
	}
	acct, err = a.newAccount(name, identity)
	if err != nil {
		return nil, err
	}
	if err := q.CreateNATSAccount(ctx, acct); err != nil {
		return nil, err
	}
	a.log.Info("created nats account", "name", name, "account", acct.PublicKey)
	return acct, nil
}

func (a *Authority) newAccount(name string, identity nkeys.KeyPair) (*mulchat.NATSAccount, error) {
	signer, err := nkeys.CreateAccount()
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot generate an account signing key")
	}
	pub, _ := identity.PublicKey()
	signerPub, _ := signer.PublicKey()
	ac := jwt.NewAccountClaims(pub)
	ac.Name = name
	ac.SigningKeys.Add(signerPub)
	description := "mulchat system account"
	if name != mulchat.SystemAccountName {
		description = "mulchat account " + name
		// The router keeps history in JetStream in this account; JetStream
		// is off in an account JWT unless storage limits are set.
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{
			MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
			Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit,
		}
	}
	token, err := ac.Encode(a.operatorKP)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot sign the account JWT of "+name)
	}
	idSeed, _ := identity.Seed()
	signerSeed, _ := signer.Seed()
	encID, err := EncryptSeed(a.masterKey, idSeed)
	if err != nil {
		return nil, err
	}
	encSigner, err := EncryptSeed(a.masterKey, signerSeed)
	if err != nil {
		return nil, err
	}
	return &mulchat.NATSAccount{
		Name: name, PublicKey: pub, Description: description, JWT: token,
		SeedEncrypted: encID, SigningPublicKey: signerPub, SigningKeyEncrypted: encSigner,
	}, nil
}

// accountKeys decrypts the key that signs the account's user JWTs: the
// signing key, or the identity key of an imported account that has none.
func (a *Authority) accountKeys(acct *mulchat.NATSAccount) (accountKeys, error) {
	claims, err := jwt.DecodeAccountClaims(acct.JWT)
	if err != nil {
		return accountKeys{}, mulchat.WrapError(mulchat.EINVALID, err, "the stored JWT of account "+acct.Name+" is not valid")
	}
	if claims.Subject != acct.PublicKey {
		return accountKeys{}, mulchat.Errorf(mulchat.EINVALID, "the stored JWT of account %s is for another account", acct.Name)
	}
	if claims.Issuer != a.operatorPub {
		return accountKeys{}, mulchat.Errorf(mulchat.EINVALID, "account %s is not signed by the operator %s", acct.Name, a.operatorPub)
	}
	signerPub, enc := acct.SigningPublicKey, acct.SigningKeyEncrypted
	if len(enc) == 0 {
		signerPub, enc = acct.PublicKey, acct.SeedEncrypted
	}
	if len(enc) == 0 {
		return accountKeys{}, mulchat.Errorf(mulchat.EINVALID, "account %s has no stored signing key: mulchat cannot sign users for it", acct.Name)
	}
	if signerPub != acct.PublicKey && !claims.SigningKeys.Contains(signerPub) {
		return accountKeys{}, mulchat.Errorf(mulchat.EINVALID, "the signing key of account %s is not listed in its JWT", acct.Name)
	}
	seed, err := DecryptSeed(a.masterKey, signerPub, enc)
	if err != nil {
		return accountKeys{}, err
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return accountKeys{}, mulchat.Errorf(mulchat.EINVALID, "the stored signing key of account %s is not valid", acct.Name)
	}
	signer, err := newFastSigner(kp)
	if err != nil {
		return accountKeys{}, err
	}
	return accountKeys{id: acct.ID, pub: acct.PublicKey, signer: signer, signerPub: signerPub}, nil
}

// OperatorJWT returns the operator JWT servers must trust.
func (a *Authority) OperatorJWT() string { return a.operatorJWT }

// OperatorPublicKey returns the operator's public key.
func (a *Authority) OperatorPublicKey() string { return a.operatorPub }

// SystemAccountPublicKey returns the system account's public key.
func (a *Authority) SystemAccountPublicKey() string { return a.sys.pub }

// ChatAccountPublicKey returns the public key of the account users live in.
func (a *Authority) ChatAccountPublicKey() string { return a.chat.pub }

// AccountJWTs returns every stored account JWT by public key, for the
// resolver preload of a server.
func (a *Authority) AccountJWTs(ctx context.Context) (map[string]string, error) {
	accts, err := a.store.ListNATSAccounts(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(accts))
	for _, acct := range accts {
		if acct.JWT != "" {
			out[acct.PublicKey] = acct.JWT
		}
	}
	return out, nil
}

// PushAccounts pushes every stored account JWT through the Pusher. cmd calls
// it once connected, so an update that could not be pushed earlier (a server
// down during a revocation) reaches the servers at the next start.
func (a *Authority) PushAccounts(ctx context.Context) error {
	if a.pusher == nil {
		return mulchat.Errorf(mulchat.EINVALID, "authority: no pusher set")
	}
	jwts, err := a.AccountJWTs(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for pub, token := range jwts {
		if err := a.pusher(ctx, token); err != nil {
			errs = append(errs, fmt.Errorf("account %s: %w", pub, err))
		}
	}
	if len(errs) > 0 {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, errors.Join(errs...), "pushing account JWTs to NATS failed")
	}
	return nil
}
