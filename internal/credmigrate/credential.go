package credmigrate

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math/bits"
	"strings"
	"time"

	"github.com/minio/highwayhash"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat/internal/password"
)

func defaultHash(pw string) (string, error) { return password.Hash(pw) }

// cred is one credential: a legacy row's seven fields, or a user's seven
// users.nats_* columns. Times are UTC, truncated to the microsecond (both
// databases keep microseconds).
type cred struct {
	JWT              sql.NullString
	SeedHash         sql.NullString
	PublicKey        sql.NullString
	AccountID        sql.NullInt64
	AccountPublicKey sql.NullString
	ExpiresAt        nullTime
	ExpiredAt        nullTime
}

// fieldNames are the seven columns, in cred's order, as users names them.
var fieldNames = [7]string{"nats_jwt", "nats_seed_hash", "nats_public_key", "nats_account_id",
	"nats_account_public_key", "nats_expires_at", "nats_expired_at"}

// legacyNames are the same seven columns in nats_user_credentials.
var legacyNames = [7]string{"jwt", "seed_hash", "public_key", "account_id",
	"account_public_key", "expires_at", "expired_at"}

func (c *cred) empty() bool {
	return !c.JWT.Valid && !c.SeedHash.Valid && !c.PublicKey.Valid && !c.AccountID.Valid &&
		!c.AccountPublicKey.Valid && !c.ExpiresAt.Valid && !c.ExpiredAt.Valid
}

// diff returns the names of the columns in which a and b differ.
func (a *cred) diff(b *cred) []string {
	var d []string
	if a.JWT != b.JWT {
		d = append(d, fieldNames[0])
	}
	if a.SeedHash != b.SeedHash {
		d = append(d, fieldNames[1])
	}
	if a.PublicKey != b.PublicKey {
		d = append(d, fieldNames[2])
	}
	if a.AccountID != b.AccountID {
		d = append(d, fieldNames[3])
	}
	if a.AccountPublicKey != b.AccountPublicKey {
		d = append(d, fieldNames[4])
	}
	if !a.ExpiresAt.equal(b.ExpiresAt) {
		d = append(d, fieldNames[5])
	}
	if !a.ExpiredAt.equal(b.ExpiredAt) {
		d = append(d, fieldNames[6])
	}
	return d
}

func (a *cred) equal(b *cred) bool { return len(a.diff(b)) == 0 }

// normalized returns c as mulchat stores it: a raw nkey seed in SeedHash
// becomes its SHA-256 (mulchat never stores a seed).
func (c cred) normalized() cred {
	if c.SeedHash.Valid && isSeed(c.SeedHash.String) {
		c.SeedHash.String = seedHash(c.SeedHash.String)
	}
	return c
}

// isSeed reports whether s is a raw nkey seed ("S…" that decodes as one).
func isSeed(s string) bool {
	if len(s) < 50 || s[0] != 'S' {
		return false
	}
	_, _, err := nkeys.DecodeSeed([]byte(s))
	return err == nil
}

// seedHash is what mulchat keeps of a seed: the hex SHA-256 of its text form.
func seedHash(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return hex.EncodeToString(sum[:])
}

// digest256 is an order-independent digest of a set of users: the sum,
// modulo 2^256, of each user's HighwayHash-256 (under digestKey) over the
// canonical encoding of its id and seven fields. Being a sum, it composes: a
// batch's digest adds to the pass's, and a batch verified again (catch-up)
// replaces its part exactly; the same set gives the same digest however it
// was batched.
//
// The digest summarises what the field-by-field verification compared; it
// is not a signature, so it needs a hash that an accidental difference
// cannot collide with, not one that resists a forger: HighwayHash (the
// checksum of nats-server's JetStream files) hashes a credential in 0.15 µs
// where BLAKE2b-256 takes 1.4 µs and SHA-256 0.5 µs with SHA instructions,
// 4.5 µs without (BENCHMARKS.md, session 7), and the pre-check hashes every
// legacy credential.
type digest256 [4]uint64

// digestKey is HighwayHash's key for digest terms: fixed, so that the same
// data gives the same digest in every run and in verify-nats-credentials.
var digestKey = []byte("mulchat credential digest v2 key")

func (d *digest256) add(o digest256) {
	var carry uint64
	for i := 3; i >= 0; i-- {
		d[i], carry = bits.Add64(d[i], o[i], carry)
	}
}

func (d digest256) String() string {
	var b [32]byte
	for i, v := range d {
		binary.BigEndian.PutUint64(b[8*i:], v)
	}
	return hex.EncodeToString(b[:])
}

// digest returns the HighwayHash-256 of c's canonical encoding, as a
// digest256 term.
func (c *cred) digest(userID int64) digest256 {
	var arr [1024]byte
	sum := highwayhash.Sum(c.appendCanonical(arr[:0], userID), digestKey)
	var d digest256
	for i := range d {
		d[i] = binary.BigEndian.Uint64(sum[8*i:])
	}
	return d
}

// appendCanonical appends c's canonical encoding (the digest's input) to b:
// the user id, then each column as 0 for NULL or 1 and its value (a string
// with its length before it; integers and times in 8 bytes).
func (c *cred) appendCanonical(b []byte, userID int64) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(userID))
	str := func(s sql.NullString) {
		if !s.Valid {
			b = append(b, 0)
			return
		}
		b = append(b, 1)
		b = binary.BigEndian.AppendUint64(b, uint64(len(s.String)))
		b = append(b, s.String...)
	}
	tm := func(t nullTime) {
		if !t.Valid {
			b = append(b, 0)
			return
		}
		b = append(b, 1)
		b = binary.BigEndian.AppendUint64(b, uint64(t.Time.UnixMicro()))
	}
	str(c.JWT)
	str(c.SeedHash)
	str(c.PublicKey)
	if c.AccountID.Valid {
		b = append(b, 1)
		b = binary.BigEndian.AppendUint64(b, uint64(c.AccountID.Int64))
	} else {
		b = append(b, 0)
	}
	str(c.AccountPublicKey)
	tm(c.ExpiresAt)
	tm(c.ExpiredAt)
	return b
}

// nullTime is a nullable timestamp read from either database: a time.Time
// (PostgreSQL) or SQLAlchemy's / mulchat's text form (SQLite).
type nullTime struct {
	Time  time.Time
	Valid bool
	// canon: the value as read is already what the migration would write
	// (a PostgreSQL timestamp, or SQLite text in SQLiteTimeFormat), so the
	// database may copy it verbatim.
	canon bool
}

// verbatim reports whether n may be copied as stored.
func (n nullTime) verbatim() bool { return !n.Valid || n.canon }

// SQLiteTimeFormat is the text form of timestamps on SQLite, both in the
// legacy app (SQLAlchemy) and in mulchat.
const SQLiteTimeFormat = "2006-01-02 15:04:05.000000"

var timeFormats = [...]string{
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999 -0700 MST",
	"2006-01-02",
}

func (n *nullTime) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*n = nullTime{}
		return nil
	case time.Time:
		t := x.UTC().Truncate(time.Microsecond)
		*n = nullTime{Time: t, Valid: true, canon: t.Equal(x)}
		return nil
	case []byte:
		return n.parse(string(x))
	case string:
		return n.parse(x)
	case int64:
		*n = nullTime{Time: time.Unix(x, 0).UTC(), Valid: true}
		return nil
	}
	return errorf("cannot read %T as a timestamp", v)
}

func (n *nullTime) parse(s string) error {
	if t, ok := parseCanonicalSQLiteTime(s); ok {
		*n = nullTime{Time: t, Valid: true, canon: true}
		return nil
	}
	s = strings.TrimSpace(s)
	for _, f := range timeFormats {
		if t, err := time.Parse(f, s); err == nil {
			*n = nullTime{Time: t.UTC().Truncate(time.Microsecond), Valid: true}
			n.canon = canonicalSQLiteTime(s)
			return nil
		}
	}
	return errorf("cannot read %q as a timestamp", s)
}

// canonicalSQLiteTime reports whether s, which parsed as a timestamp, is
// in exactly SQLiteTimeFormat (digits at every digit position): then
// formatting the parsed time gives s back.
func canonicalSQLiteTime(s string) bool {
	if len(s) != len(SQLiteTimeFormat) {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch f := SQLiteTimeFormat[i]; {
		case f >= '0' && f <= '9':
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		case s[i] != f:
			return false
		}
	}
	return true
}

// parseCanonicalSQLiteTime parses s if it is in exactly SQLiteTimeFormat
// and a real instant (no month 13, no February 30th), the form of every
// legacy and mulchat timestamp on SQLite, faster than time.Parse.
func parseCanonicalSQLiteTime(s string) (time.Time, bool) {
	if !canonicalSQLiteTime(s) {
		return time.Time{}, false
	}
	num := func(i, j int) int {
		v := 0
		for _, c := range s[i:j] {
			v = v*10 + int(c-'0')
		}
		return v
	}
	year, month, day := num(0, 4), time.Month(num(5, 7)), num(8, 10)
	hour, minute, sec, micro := num(11, 13), num(14, 16), num(17, 19), num(20, 26)
	t := time.Date(year, month, day, hour, minute, sec, micro*1000, time.UTC)
	// time.Date normalizes what is out of range; time.Parse refuses it.
	if t.Year() != year || t.Month() != month || t.Day() != day || t.Hour() != hour || t.Minute() != minute || t.Second() != sec {
		return time.Time{}, false
	}
	return t, true
}

func (n nullTime) equal(o nullTime) bool {
	// canon is not part of the value.
	return n.Valid == o.Valid && (!n.Valid || n.Time.Equal(o.Time))
}

// value is the statement argument for n on dialect.
func (n nullTime) value(dialect string) any {
	if !n.Valid {
		return nil
	}
	if dialect == SQLite {
		return n.Time.UTC().Format(SQLiteTimeFormat)
	}
	return n.Time.UTC()
}

// claims is what the migration reads from a user JWT, without checking its
// signature (ranking and the subject check need no more; mulchat verifies
// signatures where it trusts a credential).
type claims struct {
	ok       bool   // the JWT decoded
	IssuedAt int64  `json:"iat"`
	Subject  string `json:"sub"`
	Issuer   string `json:"iss"`
}

// decodeClaims reads the payload of a JWT. Decoding only the payload, not
// verifying the Ed25519 signature, keeps a million rows cheap; and the two
// fields it needs are found by a scan of the JSON, falling back to a full
// decode whenever the scan is not certain.
func decodeClaims(token string) claims {
	first := strings.IndexByte(token, '.')
	if first < 0 {
		return claims{}
	}
	rest := token[first+1:]
	second := strings.IndexByte(rest, '.')
	if second < 0 || strings.IndexByte(rest[second+1:], '.') >= 0 {
		return claims{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(rest[:second])
	if err != nil {
		return claims{}
	}
	if c, ok := scanClaims(payload); ok {
		return c
	}
	var c claims
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&c); err != nil || c.Subject == "" || c.IssuedAt <= 0 {
		return claims{}
	}
	c.ok = true
	return c
}

// scanClaims finds "iat":<digits> and "sub":"<key>" in a JWT payload when
// each key occurs exactly once and no value needs unescaping; ok is false
// otherwise, and the caller decodes the JSON properly.
func scanClaims(p []byte) (claims, bool) {
	if bytes.IndexByte(p, '\\') >= 0 {
		return claims{}, false
	}
	keyAt := func(key string) int {
		i := bytes.Index(p, []byte(key))
		if i < 0 || bytes.Index(p[i+len(key):], []byte(key)) >= 0 {
			return -1
		}
		return i + len(key)
	}
	i := keyAt(`"iat":`)
	j := keyAt(`"sub":"`)
	if i < 0 || j < 0 {
		return claims{}, false
	}
	var iat int64
	k := i
	for ; k < len(p) && p[k] >= '0' && p[k] <= '9'; k++ {
		iat = iat*10 + int64(p[k]-'0')
		if iat > 1<<50 {
			return claims{}, false
		}
	}
	if k == i || k >= len(p) || (p[k] != ',' && p[k] != '}') {
		return claims{}, false
	}
	end := bytes.IndexByte(p[j:], '"')
	if end <= 0 || iat <= 0 {
		return claims{}, false
	}
	return claims{ok: true, IssuedAt: iat, Subject: string(p[j : j+end])}, true
}

// legacyRow is one nats_user_credentials row.
type legacyRow struct {
	ID     int64
	UserID int64
	xmin   string // PostgreSQL: the row version read
	cred
	claims claims
}

// valid reports whether the row's JWT decodes and names the row's key.
func (r *legacyRow) valid() bool {
	return r.claims.ok && r.PublicKey.Valid && r.claims.Subject == r.PublicKey.String
}

// better reports whether a ranks before b: a valid JWT first, then the later
// issued-at, then the higher id.
func better(a, b *legacyRow) bool {
	if a.valid() != b.valid() {
		return a.valid()
	}
	if a.claims.IssuedAt != b.claims.IssuedAt {
		return a.claims.IssuedAt > b.claims.IssuedAt
	}
	return a.ID > b.ID
}

// winner returns the row that becomes the user's credential.
func winner(rows []*legacyRow) *legacyRow {
	var w *legacyRow
	for _, r := range rows {
		if w == nil || better(r, w) {
			w = r
		}
	}
	return w
}

// Per-user outcomes, used in reports and logs.
const (
	actionCopy          = "copy"           // users.nats_* was empty: legacy credential copied
	actionSame          = "same"           // already equal: nothing to write
	actionUpdate        = "update"         // same credential, legacy fields newer (e.g. revoked since)
	actionKeepNewer     = "keep_newer"     // users.nats_* holds a credential issued later: kept
	actionReplaceOlder  = "replace_older"  // users.nats_* held an older credential: replaced
	actionReplaceLegacy = "replace_legacy" // --on-conflict legacy replaced a different credential
)

// decision is what the migration does for one user.
type decision struct {
	action string
	target cred // the credential users.nats_* must hold afterwards
	write  bool
}

// decide computes the target credential of a user from its current columns
// u and its winning legacy row w.
func decide(u *cred, w *legacyRow, policy string) decision {
	want := w.cred.normalized()
	switch {
	case u.empty():
		return decision{action: actionCopy, target: want, write: true}
	case u.equal(&want):
		return decision{action: actionSame, target: want}
	case sameCredential(u, &want):
		// The same JWT on both sides: take the legacy fields, but never undo
		// a revocation mulchat recorded after copying.
		t := want
		if !t.ExpiredAt.Valid && u.ExpiredAt.Valid {
			t.ExpiredAt = u.ExpiredAt
		}
		if t.equal(u) {
			return decision{action: actionSame, target: t}
		}
		return decision{action: actionUpdate, target: t, write: true}
	case policy == OnConflictLegacy:
		return decision{action: actionReplaceLegacy, target: want, write: true}
	default:
		uc := userClaims(u)
		if uc.ok && uc.IssuedAt >= w.claims.IssuedAt {
			return decision{action: actionKeepNewer, target: *u}
		}
		return decision{action: actionReplaceOlder, target: want, write: true}
	}
}

func sameCredential(a, b *cred) bool {
	return a.JWT.Valid && a.JWT == b.JWT && a.PublicKey == b.PublicKey
}

// userClaims decodes the JWT on a user's row; ok only if it names the
// row's key.
func userClaims(u *cred) claims {
	if !u.JWT.Valid {
		return claims{}
	}
	c := decodeClaims(u.JWT.String)
	if !u.PublicKey.Valid || c.Subject != u.PublicKey.String {
		c.ok = false
	}
	return c
}

// Verification outcomes of one user.
const (
	verifiedCopied  = "copied"
	verifiedRevoked = "revoked_since"
	verifiedNewer   = "newer_kept"
)

// verify checks a user's columns u against its winning legacy row w, field by
// field. It returns the outcome, or "" and the differing columns.
func verify(u *cred, w *legacyRow) (string, []string) {
	want := w.cred.normalized()
	d := u.diff(&want)
	if len(d) == 0 {
		return verifiedCopied, nil
	}
	if sameCredential(u, &want) && len(d) == 1 && d[0] == "nats_expired_at" && !want.ExpiredAt.Valid {
		return verifiedRevoked, nil
	}
	if !sameCredential(u, &want) {
		uc := userClaims(u)
		if uc.ok && uc.IssuedAt >= w.claims.IssuedAt {
			return verifiedNewer, nil
		}
	}
	return "", d
}
