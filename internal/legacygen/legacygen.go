// Package legacygen writes legacy Mul-Chat databases: the schema the Python
// (SQLAlchemy) app left on PostgreSQL or SQLite, filled with the kind of data
// real ones hold. The credential migration's tests and benchmarks start from
// it.
//
// The data is deterministic for a given Options.Seed (each user is generated
// from its own random stream, so parallel generation gives the same rows) and
// deliberately messy: users with several credential rows, rows of deleted
// users, NULLs, raw nkey seeds in seed_hash, plaintext passwords, usernames
// with spaces, capitals and non-ASCII letters, expired and revoked
// credentials, JWTs that do not parse or name another key, and sessions
// pointing at deleted credentials. Every JWT that parses is real: signed by the
// legacy account's key, which WriteNSCKeystore can write out as an nsc
// environment.
package legacygen

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Options say what to generate. The zero value of a rate means its default;
// a negative rate means none.
type Options struct {
	Users int   // number of user ids; some become deleted users (orphans)
	Seed  int64 // random seed; same seed, same database

	// UserNATSColumns is the subset of users.nats_* columns the legacy
	// database has (see UserNATSColumns); nil means none.
	UserNATSColumns []string

	PlaintextPasswordRate float64 // default 0.3
	DeletedUserRate       float64 // default 0.02: user row removed, credentials left behind
	RawSeedRate           float64 // default 0.05 of credential rows: a raw "SU…" seed in seed_hash
	BadJWTRate            float64 // default 0.01 of credential rows: unparseable or NULL JWT
	SubjectMismatchRate   float64 // default 0.01 of credential rows: JWT of another key
	RevokedRate           float64 // default 0.1 of credential rows: expired_at set
	DeletedCredentialRate float64 // default 0.03 of older credential rows: deleted, sessions left pointing at them
	PreexistingRate       float64 // default 0.05 of users (when users has nats_* columns): a credential already on the row

	// FastKeys skips key derivation for credentials whose seed is not kept
	// in clear: their public key is random (validly encoded) rather than
	// derived from the seed whose hash is stored. Benchmarks use it; tests
	// that connect with legacy credentials must not.
	FastKeys bool

	// Now is the reference time; JWTs are issued in the year before it.
	// Zero means 2026-01-01T00:00:00Z.
	Now time.Time
}

func (o Options) rate(v, def float64) float64 {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return def
	}
	return v
}

// Result describes what was generated: the keys the legacy app held in its
// nsc keystore and counts tests can check against.
type Result struct {
	OperatorSeed     []byte
	OperatorJWT      string
	AccountSeed      []byte // the "chat" account; it signed every user JWT
	AccountPublicKey string
	AccountJWT       string
	SystemSeed       []byte
	SystemJWT        string
	AccountID        int64 // nats_accounts.id of the chat account

	Users              int // user rows written
	DeletedUsers       int
	Credentials        int // credential rows written (after deletions)
	OrphanCredentials  int
	RawSeeds           int
	PlaintextPasswords int
	Sessions           int
	Preexisting        int
}

// PlaintextPassword is the password the generator stored in clear for user id
// (when it did): tests log in with it after the migration rehashed it.
func PlaintextPassword(id int64) string { return fmt.Sprintf("legacy password %d", id) }

// LegacyPassword is the password behind the bcrypt hashes the generator
// stores for the other users.
const LegacyPassword = "legacy bcrypt password"

// Generate creates the legacy schema in db (which must be empty) and fills it.
func Generate(ctx context.Context, db *sql.DB, dialect string, opts Options) (*Result, error) {
	if dialect != "sqlite" && dialect != "postgres" {
		return nil, mulchat.Errorf(mulchat.EINVALID, "unknown dialect %q", dialect)
	}
	if opts.Users < 0 {
		return nil, mulchat.Errorf(mulchat.EINVALID, "negative user count")
	}
	for _, c := range opts.UserNATSColumns {
		if !contains(UserNATSColumns, c) {
			return nil, mulchat.Errorf(mulchat.EINVALID, "unknown users column %q", c)
		}
	}
	if opts.Now.IsZero() {
		opts.Now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	g, err := newGenerator(opts)
	if err != nil {
		return nil, err
	}
	for _, stmt := range schema(dialect, opts.UserNATSColumns) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("legacygen: creating schema: %w", err)
		}
	}
	w, err := newWriter(ctx, db, dialect)
	if err != nil {
		return nil, err
	}
	if err := g.write(ctx, w); err != nil {
		w.abort()
		return nil, err
	}
	if err := w.finish(ctx); err != nil {
		return nil, err
	}
	return &g.res, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

type generator struct {
	opts     Options
	res      Result
	account  nkeys.KeyPair
	acctPub  string
	bcrypts  []string
	natsCols map[string]bool
}

func newGenerator(opts Options) (*generator, error) {
	r := rand.New(rand.NewPCG(uint64(opts.Seed), 0))
	g := &generator{opts: opts, natsCols: map[string]bool{}}
	for _, c := range opts.UserNATSColumns {
		g.natsCols[c] = true
	}
	op, err := nkeys.CreatePairWithRand(nkeys.PrefixByteOperator, readerOf(r))
	if err != nil {
		return nil, err
	}
	acct, err := nkeys.CreatePairWithRand(nkeys.PrefixByteAccount, readerOf(r))
	if err != nil {
		return nil, err
	}
	sys, err := nkeys.CreatePairWithRand(nkeys.PrefixByteAccount, readerOf(r))
	if err != nil {
		return nil, err
	}
	opPub, _ := op.PublicKey()
	acctPub, _ := acct.PublicKey()
	sysPub, _ := sys.PublicKey()
	iat := opts.Now.AddDate(-2, 0, 0).Unix()

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "legacy"
	oc.IssuedAt = iat
	oc.SystemAccount = sysPub
	if g.res.OperatorJWT, err = oc.Encode(op); err != nil {
		return nil, err
	}
	ac := jwt.NewAccountClaims(acctPub)
	ac.Name = mulchat.ChatAccountName
	ac.IssuedAt = iat
	ac.Limits.JetStreamLimits.DiskStorage = -1
	ac.Limits.JetStreamLimits.MemoryStorage = -1
	if g.res.AccountJWT, err = ac.Encode(op); err != nil {
		return nil, err
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = mulchat.SystemAccountName
	sc.IssuedAt = iat
	if g.res.SystemJWT, err = sc.Encode(op); err != nil {
		return nil, err
	}
	g.res.OperatorSeed, _ = op.Seed()
	g.res.AccountSeed, _ = acct.Seed()
	g.res.SystemSeed, _ = sys.Seed()
	g.res.AccountPublicKey = acctPub
	g.account, g.acctPub = acct, acctPub
	// Real bcrypt hashes (cost 4, so generation stays fast) of one password;
	// the migration must leave them alone.
	g.bcrypts = bcryptPool
	return g, nil
}

// readerOf adapts a math/rand source to the io.Reader nkeys wants, so key
// generation is deterministic. These keys exist only in test databases.
type randReader struct{ r *rand.Rand }

func readerOf(r *rand.Rand) randReader { return randReader{r} }

func (rr randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(rr.r.Uint32())
	}
	return len(p), nil
}

// Row kinds of one generated user.
type userRow struct {
	id        int64
	deleted   bool
	username  string
	email     any
	password  string
	plaintext bool
	active    any
	createdAt time.Time
	nats      map[string]any // pre-existing users.nats_* values
	creds     []credRow
	sessions  []sessionRow
	rooms     []int64
	groups    []int64
	messages  []string
	perm      bool
}

type credRow struct {
	jwt, seedHash, publicKey, accountPub any
	accountID                            any
	expiresAt, expiredAt                 any
	createdAt, updatedAt                 time.Time
	rawSeed                              bool
	deleted                              bool // deleted after sessions referenced it
}

type sessionRow struct {
	credIndex int // index into creds, -1 = NULL
	createdAt time.Time
	active    bool
}

const (
	nRooms  = 10
	nGroups = 5
)

func (g *generator) user(id int64) (*userRow, error) {
	o := g.opts
	r := rand.New(rand.NewPCG(uint64(o.Seed), uint64(id)))
	u := &userRow{id: id, createdAt: o.Now.AddDate(-1, 0, 0).Add(time.Duration(id) * time.Second).UTC()}
	u.deleted = r.Float64() < o.rate(o.DeletedUserRate, 0.02)
	switch x := r.IntN(100); {
	case x < 70:
		u.username = fmt.Sprintf("user%06d", id)
	case x < 80:
		u.username = fmt.Sprintf("User %d Name", id)
	case x < 85:
		u.username = fmt.Sprintf("Jürgen_%d", id)
	case x < 90:
		u.username = fmt.Sprintf("用户%d", id)
	case x < 95:
		u.username = fmt.Sprintf("CAPS_%d", id)
	default:
		u.username = fmt.Sprintf(" padded %d ", id)
	}
	if r.IntN(5) > 0 {
		u.email = fmt.Sprintf("u%d@example.com", id)
	}
	if r.Float64() < o.rate(o.PlaintextPasswordRate, 0.3) {
		u.password, u.plaintext = PlaintextPassword(id), true
	} else {
		u.password = g.bcrypts[r.IntN(len(g.bcrypts))]
	}
	switch x := r.IntN(50); {
	case x == 0:
		u.active = nil
	case x < 5:
		u.active = false
	default:
		u.active = true
	}
	n := 0
	switch x := r.IntN(100); {
	case x < 20:
	case x < 80:
		n = 1
	case x < 95:
		n = 2
	default:
		n = 3
	}
	iat := u.createdAt.Add(time.Duration(r.IntN(3600)) * time.Second)
	for k := 0; k < n; k++ {
		c, err := g.credential(r, iat, k < n-1)
		if err != nil {
			return nil, err
		}
		u.creds = append(u.creds, c)
		iat = iat.Add(time.Duration(1+r.IntN(30*24)) * time.Hour)
	}
	if !u.deleted {
		for range r.IntN(3) {
			ci := -1
			if len(u.creds) > 0 && r.IntN(10) > 0 {
				ci = r.IntN(len(u.creds))
			}
			u.sessions = append(u.sessions, sessionRow{credIndex: ci, createdAt: iat.Add(time.Hour), active: r.IntN(3) == 0})
		}
		for range r.IntN(3) {
			room := int64(1 + r.IntN(nRooms))
			if !containsID(u.rooms, room) {
				u.rooms = append(u.rooms, room)
			}
		}
		if r.IntN(10) < 3 {
			u.groups = append(u.groups, int64(1+r.IntN(nGroups)))
		}
		for i := range r.IntN(3) {
			u.messages = append(u.messages, fmt.Sprintf("message %d of user %d ✓", i, id))
		}
		u.perm = r.IntN(50) == 0
		if len(g.natsCols) > 0 && r.Float64() < o.rate(o.PreexistingRate, 0.05) {
			if err := g.preexisting(r, u); err != nil {
				return nil, err
			}
		}
	}
	return u, nil
}

func containsID(ids []int64, id int64) bool {
	for _, v := range ids {
		if v == id {
			return true
		}
	}
	return false
}

// credential makes one nats_user_credentials row issued at iat.
func (g *generator) credential(r *rand.Rand, iat time.Time, older bool) (credRow, error) {
	o := g.opts
	const (
		seedHashed = iota
		seedRaw
		seedNull
	)
	kind := seedHashed
	switch x := r.Float64(); {
	case x < o.rate(o.RawSeedRate, 0.05):
		kind = seedRaw
	case x < 0.3:
		kind = seedNull
	}
	var pub, seed string
	if o.FastKeys && kind != seedRaw {
		// No key derivation: a valid but random public key, and a seed
		// that is only ever hashed.
		var raw [32]byte
		readerOf(r).Read(raw[:])
		sd, err := nkeys.EncodeSeed(nkeys.PrefixByteUser, raw[:])
		if err != nil {
			return credRow{}, err
		}
		readerOf(r).Read(raw[:])
		pk, err := nkeys.Encode(nkeys.PrefixByteUser, raw[:])
		if err != nil {
			return credRow{}, err
		}
		pub, seed = string(pk), string(sd)
	} else {
		kp, err := nkeys.CreatePairWithRand(nkeys.PrefixByteUser, readerOf(r))
		if err != nil {
			return credRow{}, err
		}
		pub, _ = kp.PublicKey()
		sd, _ := kp.Seed()
		seed = string(sd)
	}
	c := credRow{publicKey: pub, createdAt: iat, updatedAt: iat}
	subject := pub
	if r.Float64() < o.rate(o.SubjectMismatchRate, 0.01) {
		var raw [32]byte
		readerOf(r).Read(raw[:])
		other, err := nkeys.Encode(nkeys.PrefixByteUser, raw[:])
		if err != nil {
			return credRow{}, err
		}
		subject = string(other)
	}
	var exp time.Time
	if r.IntN(10) > 0 {
		exp = iat.Add(30 * 24 * time.Hour)
		c.expiresAt = exp
	}
	if r.Float64() < o.rate(o.BadJWTRate, 0.01) {
		if r.IntN(2) == 0 {
			c.jwt = "not-a-jwt"
		}
	} else {
		var expUnix int64
		if !exp.IsZero() {
			expUnix = exp.Unix()
		}
		token, err := g.userJWT(subject, iat.Unix(), expUnix)
		if err != nil {
			return credRow{}, err
		}
		c.jwt = token
	}
	switch kind {
	case seedRaw:
		c.seedHash, c.rawSeed = seed, true
	case seedNull:
		c.seedHash = nil
	default:
		sum := sha256.Sum256([]byte(seed))
		c.seedHash = hex.EncodeToString(sum[:])
	}
	if r.IntN(10) > 0 {
		c.accountID = int64(1)
	}
	if r.IntN(20) > 0 {
		c.accountPub = g.acctPub
	}
	if r.Float64() < o.rate(o.RevokedRate, 0.1) {
		c.expiredAt = iat.Add(24 * time.Hour)
		c.updatedAt = iat.Add(24 * time.Hour)
	}
	// created_at does not always agree with the JWT's issued-at (rows were
	// re-saved, clocks skewed): the migration must rank by issued-at.
	if r.IntN(10) == 0 {
		c.createdAt = iat.Add(-90 * 24 * time.Hour)
	}
	c.deleted = older && r.Float64() < o.rate(o.DeletedCredentialRate, 0.03)
	return c, nil
}

// preexisting writes a credential on the users row as a partly migrated
// database or a mulchat instance running beside the legacy app would have:
// the user's newest legacy credential, a newer one, or an older one.
func (g *generator) preexisting(r *rand.Rand, u *userRow) error {
	var c credRow
	switch x := r.IntN(3); {
	case x == 0 && len(u.creds) > 0:
		c = u.creds[len(u.creds)-1]
	case x == 2 && len(u.creds) > 0:
		var err error
		if c, err = g.credential(r, u.creds[0].createdAt.Add(-time.Hour), false); err != nil {
			return err
		}
	default:
		var err error
		if c, err = g.credential(r, g.opts.Now.Add(-time.Hour), false); err != nil {
			return err
		}
	}
	if c.rawSeed {
		// A raw seed on the users row is realistic too; keep it.
	}
	vals := map[string]any{
		"nats_jwt": c.jwt, "nats_seed_hash": c.seedHash, "nats_public_key": c.publicKey,
		"nats_account_id": c.accountID, "nats_account_public_key": c.accountPub,
		"nats_expires_at": c.expiresAt, "nats_expired_at": c.expiredAt,
	}
	u.nats = map[string]any{}
	for col := range g.natsCols {
		u.nats[col] = vals[col]
	}
	return nil
}

// write generates users in parallel chunks and writes them in id order.
func (g *generator) write(ctx context.Context, w *writer) error {
	now := g.opts.Now.AddDate(-2, 0, 0)
	if err := w.add("nats_accounts", []string{"id", "name", "public_key", "description", "created_at", "updated_at"},
		int64(1), mulchat.ChatAccountName, g.acctPub, "chat account (legacy)", now, now); err != nil {
		return err
	}
	sysPub, _ := mustKP(g.res.SystemSeed).PublicKey()
	if err := w.add("nats_accounts", []string{"id", "name", "public_key", "description", "created_at", "updated_at"},
		int64(2), mulchat.SystemAccountName, sysPub, nil, now, now); err != nil {
		return err
	}
	g.res.AccountID = 1
	for i := 1; i <= nRooms; i++ {
		if err := w.add("nats_rooms", []string{"id", "name", "subject_prefix", "description", "account_id", "is_public", "created_at", "updated_at"},
			int64(i), fmt.Sprintf("Room %d", i), fmt.Sprintf("chat.room.%d", i), nil, int64(1), i%3 != 0, now, now); err != nil {
			return err
		}
	}
	for i := 1; i <= nGroups; i++ {
		if err := w.add("groups", []string{"id", "name", "description", "created_at"},
			int64(i), fmt.Sprintf("group %d", i), nil, now); err != nil {
			return err
		}
	}

	const chunk = 1000
	type result struct {
		users []*userRow
		err   error
	}
	n := int64(g.opts.Users)
	workers := runtime.GOMAXPROCS(0)
	chunks := (n + chunk - 1) / chunk
	out := make([]chan result, chunks)
	for i := range out {
		out[i] = make(chan result, 1)
	}
	var next int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Bound how far the workers run ahead of the writer.
	sem := make(chan struct{}, workers*2)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				c := next
				next++
				mu.Unlock()
				if c >= chunks {
					return
				}
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				var res result
				for id := c*chunk + 1; id <= min((c+1)*chunk, n); id++ {
					u, err := g.user(id)
					if err != nil {
						res.err = err
						break
					}
					res.users = append(res.users, u)
				}
				out[c] <- res
			}
		}()
	}
	defer wg.Wait()

	var credID, sessionID, permID, msgID int64
	for c := range chunks {
		var res result
		select {
		case res = <-out[c]:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-sem
		if res.err != nil {
			return res.err
		}
		for _, u := range res.users {
			ids, err := g.writeUser(w, u, &credID, &sessionID, &permID, &msgID)
			if err != nil {
				return err
			}
			_ = ids
		}
	}
	return nil
}

func mustKP(seed []byte) nkeys.KeyPair {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		panic("legacygen: generated seed does not parse")
	}
	return kp
}

var userBaseCols = []string{"id", "username", "email", "hashed_password", "is_active", "created_at"}

func (g *generator) writeUser(w *writer, u *userRow, credID, sessionID, permID, msgID *int64) ([]int64, error) {
	if !u.deleted {
		cols := userBaseCols
		vals := []any{u.id, u.username, u.email, u.password, u.active, u.createdAt}
		if u.nats != nil {
			cols = append(append([]string(nil), userBaseCols...), g.opts.UserNATSColumns...)
			for _, c := range g.opts.UserNATSColumns {
				vals = append(vals, u.nats[c])
			}
			g.res.Preexisting++
		}
		if err := w.add("users", cols, vals...); err != nil {
			return nil, err
		}
		g.res.Users++
		if u.plaintext {
			g.res.PlaintextPasswords++
		}
	} else {
		g.res.DeletedUsers++
	}
	ids := make([]int64, len(u.creds))
	for i, c := range u.creds {
		*credID++
		ids[i] = *credID
		if c.deleted {
			continue
		}
		if err := w.add("nats_user_credentials",
			[]string{"id", "user_id", "jwt", "seed_hash", "public_key", "account_id", "account_public_key", "expires_at", "expired_at", "created_at", "updated_at"},
			*credID, u.id, c.jwt, c.seedHash, c.publicKey, c.accountID, c.accountPub, c.expiresAt, c.expiredAt, c.createdAt, c.updatedAt); err != nil {
			return nil, err
		}
		g.res.Credentials++
		if u.deleted {
			g.res.OrphanCredentials++
		}
		if c.rawSeed {
			g.res.RawSeeds++
		}
	}
	for _, s := range u.sessions {
		*sessionID++
		var cred any
		if s.credIndex >= 0 {
			cred = ids[s.credIndex]
			// PostgreSQL's ON DELETE SET NULL left NULL where SQLite left a
			// dangling id.
			if u.creds[s.credIndex].deleted && w.dialect == "postgres" {
				cred = nil
			}
		}
		if err := w.add("nats_auth_sessions",
			[]string{"id", "user_id", "credential_id", "client_id", "ip_address", "user_agent", "created_at", "last_activity", "expires_at", "active"},
			*sessionID, u.id, cred, fmt.Sprintf("client-%d", *sessionID), "192.0.2.1", "legacy-client/1.0", s.createdAt, s.createdAt.Add(time.Minute), nil, s.active); err != nil {
			return nil, err
		}
		g.res.Sessions++
	}
	for _, room := range u.rooms {
		if err := w.add("nats_user_rooms", []string{"user_id", "room_id", "joined_at"}, u.id, room, u.createdAt); err != nil {
			return nil, err
		}
	}
	for _, grp := range u.groups {
		if err := w.add("user_groups", []string{"user_id", "group_id"}, u.id, grp); err != nil {
			return nil, err
		}
	}
	for _, m := range u.messages {
		*msgID++
		if err := w.add("messages", []string{"id", "content", "user_id", "group_id", "created_at"},
			*msgID, m, u.id, int64(1+u.id%nGroups), u.createdAt.Add(time.Duration(*msgID)*time.Millisecond)); err != nil {
			return nil, err
		}
	}
	if u.perm {
		*permID++
		if err := w.add("nats_permissions", []string{"id", "user_id", "room_id", "permission_type", "subject", "created_at", "updated_at"},
			*permID, u.id, nil, "BOTH", fmt.Sprintf("bots.%d.>", u.id), u.createdAt, u.createdAt); err != nil {
			return nil, err
		}
	}
	return ids, nil
}
