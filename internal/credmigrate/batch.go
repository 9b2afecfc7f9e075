package credmigrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PassStats accumulate over the batches of one pass.
type PassStats struct {
	Users       int64            `json:"users"`        // users with legacy rows that exist
	OrphanUsers int64            `json:"orphan_users"` // user ids with legacy rows but no user
	OrphanRows  int64            `json:"orphan_rows"`
	Actions     map[string]int64 `json:"actions"`
	Written     int64            `json:"written"`
	Batches     int64            `json:"batches"`

	Verified     map[string]int64 `json:"verified"`
	Unverified   int64            `json:"unverified"`
	Mismatches   []Mismatch       `json:"mismatches,omitempty"` // the first 100
	SourceDigest string           `json:"source_digest"`
	TargetDigest string           `json:"target_digest"`
	DigestUsers  int64            `json:"digest_users"`

	src, dst digest256
	// seeds are the raw seeds the pass's batches scrubbed in the legacy
	// table (Run reports them with the other scrubs).
	seeds SeedScrub
}

// Mismatch is one user whose users.nats_* columns do not match the legacy
// credential.
type Mismatch struct {
	UserID  int64    `json:"user_id"`
	Columns []string `json:"columns,omitempty"`
	Reason  string   `json:"reason"`
}

const maxSamples = 100

func newPassStats() *PassStats {
	return &PassStats{Actions: map[string]int64{}, Verified: map[string]int64{}}
}

func (s *PassStats) finish() {
	s.SourceDigest = s.src.String()
	s.TargetDigest = s.dst.String()
}

func (s *PassStats) mismatch(m Mismatch) {
	s.Unverified++
	if len(s.Mismatches) < maxSamples {
		s.Mismatches = append(s.Mismatches, m)
	}
}

// merge adds a batch's stats (computed in a transaction that committed).
func (s *PassStats) merge(b *PassStats) {
	s.Users += b.Users
	s.OrphanUsers += b.OrphanUsers
	s.OrphanRows += b.OrphanRows
	s.Written += b.Written
	s.Batches++
	for k, v := range b.Actions {
		s.Actions[k] += v
	}
	for k, v := range b.Verified {
		s.Verified[k] += v
	}
	s.Unverified += b.Unverified
	for _, mm := range b.Mismatches {
		if len(s.Mismatches) < maxSamples {
			s.Mismatches = append(s.Mismatches, mm)
		}
	}
	s.DigestUsers += b.DigestUsers
	s.src.add(b.src)
	s.dst.add(b.dst)
	s.seeds.merge(&b.seeds)
}

const legacySelect = "SELECT id, user_id, jwt, seed_hash, public_key, account_id, account_public_key, expires_at, expired_at FROM " + LegacyTable

// legacySelectSQLite is legacySelect reading the timestamps through SQLite's
// no-op unary +. The driver turns the text of a column declared DATETIME
// into a time.Time, whatever its form, so a legacy timestamp not in
// SQLiteTimeFormat would look copyable as stored (nullTime.canon); an
// expression has no declared type, so its text reaches nullTime as it is
// stored (and is parsed once, not by the driver and again here).
var legacySelectSQLite = strings.Replace(legacySelect, " expires_at, expired_at FROM", " +expires_at, +expired_at FROM", 1)

const userCredSelect = "SELECT id, nats_jwt, nats_seed_hash, nats_public_key, nats_account_id, nats_account_public_key, nats_expires_at, nats_expired_at FROM users"

func scanCred(rows *sql.Rows, id *int64, userID *int64, c *cred) error {
	dest := []any{id}
	if userID != nil {
		dest = append(dest, userID)
	}
	dest = append(dest, &c.JWT, &c.SeedHash, &c.PublicKey, &c.AccountID, &c.AccountPublicKey, &c.ExpiresAt, &c.ExpiredAt)
	return rows.Scan(dest...)
}

// batchIDs returns the next up to n user ids of the legacy table after
// `after`.
func (m *Migrator) batchIDs(ctx context.Context, q queryer, after int64, n int) ([]int64, error) {
	return queryIDs(ctx, q, m.q("SELECT DISTINCT user_id FROM "+LegacyTable+" WHERE user_id > ? ORDER BY user_id LIMIT ?"), after, n)
}

// rangeIDs returns the user ids of the legacy table in (lo, hi].
func (m *Migrator) rangeIDs(ctx context.Context, q queryer, lo, hi int64) ([]int64, error) {
	return queryIDs(ctx, q, m.q("SELECT DISTINCT user_id FROM "+LegacyTable+" WHERE user_id > ? AND user_id <= ? ORDER BY user_id"), lo, hi)
}

// queryIDs runs a query of one integer column and returns its values.
func queryIDs(ctx context.Context, q queryer, query string, args ...any) ([]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// legacyRows reads the legacy rows of user ids in (lo, hi], grouped by user.
func (m *Migrator) legacyRows(ctx context.Context, q queryer, lo, hi int64) (map[int64][]*legacyRow, error) {
	return m.legacyRowsWhere(ctx, q, m.q("user_id > ? AND user_id <= ?"), lo, hi)
}

// idIn is the condition "column is one of the ids" on the query's first
// parameter, which idsArg gives: an array on PostgreSQL, a JSON array read by
// json_each on SQLite.
func (m *Migrator) idIn(column string) string {
	if m.dialect == Postgres {
		return column + " = ANY($1::bigint[])"
	}
	return column + " IN (SELECT value FROM json_each(?))"
}

// idsArg is the parameter of idIn's condition.
func (m *Migrator) idsArg(ids []int64) any {
	if m.dialect == Postgres {
		return ids
	}
	return idsJSON(ids)
}

// legacyRowsOf reads the legacy rows of the given user ids, grouped by user.
func (m *Migrator) legacyRowsOf(ctx context.Context, q queryer, ids []int64) (map[int64][]*legacyRow, error) {
	return m.legacyRowsWhere(ctx, q, m.idIn("user_id"), m.idsArg(ids))
}

func (m *Migrator) legacyRowsWhere(ctx context.Context, q queryer, where string, args ...any) (map[int64][]*legacyRow, error) {
	sel := legacySelectSQLite
	pg := m.dialect == Postgres
	if pg {
		// xmin identifies the row version read: the database copies a
		// winning row only if it is still that version (see copyDirect).
		sel = strings.Replace(legacySelect, "expired_at FROM", "expired_at, xmin::text FROM", 1)
	}
	query := sel + " WHERE " + where
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64][]*legacyRow{}
	for rows.Next() {
		r := &legacyRow{}
		var err error
		if pg {
			c := &r.cred
			err = rows.Scan(&r.ID, &r.UserID, &c.JWT, &c.SeedHash, &c.PublicKey, &c.AccountID, &c.AccountPublicKey, &c.ExpiresAt, &c.ExpiredAt, &r.xmin)
		} else {
			err = scanCred(rows, &r.ID, &r.UserID, &r.cred)
		}
		if err != nil {
			return nil, err
		}
		if r.JWT.Valid {
			r.claims = decodeClaims(r.JWT.String)
		}
		out[r.UserID] = append(out[r.UserID], r)
	}
	return out, rows.Err()
}

// idsJSON encodes ids as a JSON array, for SQLite's json_each.
func idsJSON(ids []int64) string {
	b := make([]byte, 0, 12*len(ids)+2)
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return string(append(b, ']'))
}

// userCreds reads users.nats_* of user ids in (lo, hi]. forUpdate locks the
// rows on PostgreSQL, so that a credential mulchat issues meanwhile waits for
// this batch and then overwrites it, never the other way round.
func (m *Migrator) userCreds(ctx context.Context, q queryer, lo, hi int64, forUpdate bool) (map[int64]*cred, error) {
	query := userCredSelect + " WHERE id > ? AND id <= ?"
	if forUpdate && m.dialect == Postgres {
		query += " FOR UPDATE"
	}
	rows, err := q.QueryContext(ctx, m.q(query), lo, hi)
	return scanUserCreds(rows, err)
}

// rangeUserCreds is userCreds for the pre-check (no lock). On SQLite, in
// the caller's read transaction (one snapshot), a user whose users.nats_*
// are all NULL, as every user of a legacy database is before its
// migration, is read as its id alone and maps to one shared empty cred,
// which nothing writes; the others are read whole.
func (m *Migrator) rangeUserCreds(ctx context.Context, q queryer, lo, hi int64) (map[int64]*cred, error) {
	if m.dialect == Postgres {
		// Its two reads would see two snapshots (READ COMMITTED), and
		// PostgreSQL reads NULLs cheaply: one whole read.
		return m.userCreds(ctx, q, lo, hi, false)
	}
	empty := m.emptyUser("users")
	rows, err := q.QueryContext(ctx, m.q("SELECT id, CASE WHEN "+empty+" THEN 1 ELSE 0 END FROM users WHERE id > ? AND id <= ?"), lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]*cred{}
	others := false
	for rows.Next() {
		var id, isEmpty int64
		if err := rows.Scan(&id, &isEmpty); err != nil {
			return nil, err
		}
		if isEmpty == 1 {
			out[id] = &noCred
		} else {
			others = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	if !others {
		return out, nil
	}
	full, err := scanUserCreds(q.QueryContext(ctx, m.q(userCredSelect+" WHERE id > ? AND id <= ? AND NOT ("+empty+")"), lo, hi))
	if err != nil {
		return nil, err
	}
	maps.Copy(out, full)
	return out, nil
}

// noCred is the empty users.nats_* rangeUserCreds shares; never written.
var noCred cred

// scanUserCreds reads the rows of a userCredSelect query by user id.
func scanUserCreds(rows *sql.Rows, err error) (map[int64]*cred, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]*cred{}
	for rows.Next() {
		var id int64
		c := &cred{}
		if err := scanCred(rows, &id, nil, c); err != nil {
			return nil, err
		}
		out[id] = c
	}
	return out, rows.Err()
}

type userUpdate struct {
	id int64
	c  cred
	// For a copy the database makes from the winning legacy row: its id,
	// and (PostgreSQL) the row version read.
	credID int64
	xmin   string
}

// verbatimCopy reports whether d writes exactly the winning row w as stored
// (no seed to hash, no revocation to keep, timestamps in the form the
// migration writes), so the database can copy it without the values
// crossing the driver again.
func verbatimCopy(w *legacyRow, d decision) bool {
	switch d.action {
	case actionCopy, actionReplaceOlder, actionReplaceLegacy:
	default:
		return false
	}
	return !(w.SeedHash.Valid && isSeed(w.SeedHash.String)) && w.ExpiresAt.verbatim() && w.ExpiredAt.verbatim()
}

// errBatchRaced: a winning legacy row changed between the batch's read and
// its copy (PostgreSQL, where the legacy app is not locked out); the batch
// is retried.
var errBatchRaced = errorf("a legacy credential changed while its batch ran")

const directSet = `nats_jwt = c.jwt, nats_seed_hash = c.seed_hash, nats_public_key = c.public_key,
	nats_account_id = c.account_id, nats_account_public_key = c.account_public_key,
	nats_expires_at = c.expires_at, nats_expired_at = c.expired_at`

// copyDirect writes each user's winning legacy row with one UPDATE … FROM
// the legacy table, given only (user id, credential id) pairs.
func (m *Migrator) copyDirect(ctx context.Context, tx *sql.Tx, ups []userUpdate) error {
	if m.dialect == Postgres {
		// Timestamps without time zone (legacy) become timestamptz in UTC,
		// as the values read by Go are.
		if _, err := tx.ExecContext(ctx, "SET LOCAL TimeZone TO 'UTC'"); err != nil {
			return err
		}
		uids, cids, xmins := make([]int64, len(ups)), make([]int64, len(ups)), make([]string, len(ups))
		for i, u := range ups {
			uids[i], cids[i], xmins[i] = u.id, u.credID, u.xmin
		}
		res, err := tx.ExecContext(ctx, `UPDATE users AS u SET `+directSet+`
FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS v(uid, cid, xmin)
	JOIN `+LegacyTable+` AS c ON c.id = v.cid AND c.xmin::text = v.xmin
WHERE u.id = v.uid`, uids, cids, xmins)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != int64(len(ups)) {
			return errBatchRaced
		}
		return nil
	}
	res, err := tx.ExecContext(ctx, `UPDATE users SET `+directSet+`
FROM (SELECT CAST(key AS INTEGER) AS uid, value AS cid FROM json_each(?)) AS v
	JOIN `+LegacyTable+` AS c ON c.id = v.cid
WHERE users.id = v.uid`, pairsJSON(ups))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != int64(len(ups)) {
		return errBatchRaced
	}
	return nil
}

// emptyUser returns a condition true for a users row (named as alias)
// whose seven credential columns are all NULL (cred.empty), written so that
// the planner cannot answer it with the indexes on nats_public_key and
// nats_account_id: it would then scan the users it finds there and probe the
// batch's pairs once for each, instead of looking the pairs' users up by id.
func (m *Migrator) emptyUser(alias string) string {
	cols := make([]string, len(fieldNames))
	for i, f := range fieldNames {
		cols[i] = alias + "." + f
	}
	if m.dialect == Postgres {
		return "num_nonnulls(" + strings.Join(cols, ", ") + ") = 0"
	}
	// A unary + makes SQLite's expression unindexable.
	return "+" + strings.Join(cols, " IS NULL AND +") + " IS NULL"
}

// copyPlanned copies each planned user's winning legacy row in one UPDATE …
// FROM the legacy table, writing only users whose users.nats_* are still
// empty and rows whose seed_hash cannot hold a raw seed (the plan's scrub
// would miss one written since the pre-check), and returns the users it
// wrote. It compares each of them with its row, all seven columns, in the
// database: on PostgreSQL in the RETURNING clause, which sees the row as
// written; on SQLite (whose RETURNING cannot name the legacy table) with
// checkDirect. A difference fails the batch with errPlanStale.
func (m *Migrator) copyPlanned(ctx context.Context, tx *sql.Tx, ups []userUpdate) (map[int64]bool, error) {
	copied := map[int64]bool{}
	if len(ups) == 0 {
		return copied, nil
	}
	const guard = " AND (c.seed_hash IS NULL OR c.seed_hash NOT LIKE 'S%')"
	var rows *sql.Rows
	var err error
	if m.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, "SET LOCAL TimeZone TO 'UTC'"); err != nil {
			return nil, err
		}
		uids, cids := make([]int64, len(ups)), make([]int64, len(ups))
		for i, u := range ups {
			uids[i], cids[i] = u.id, u.credID
		}
		rows, err = tx.QueryContext(ctx, `UPDATE users AS u SET `+directSet+`
FROM unnest($1::bigint[], $2::bigint[]) AS v(uid, cid) JOIN `+LegacyTable+` AS c ON c.id = v.cid
WHERE u.id = v.uid AND `+m.emptyUser("u")+guard+`
RETURNING u.id, `+m.differs(), uids, cids)
	} else {
		rows, err = tx.QueryContext(ctx, `UPDATE users SET `+directSet+`
FROM (SELECT CAST(key AS INTEGER) AS uid, value AS cid FROM json_each(?)) AS v
	JOIN `+LegacyTable+` AS c ON c.id = v.cid
WHERE users.id = v.uid AND `+m.emptyUser("users")+guard+`
RETURNING users.id`, pairsJSON(ups))
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var differs bool
		dest := []any{&id}
		if m.dialect == Postgres {
			dest = append(dest, &differs)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		if differs {
			return nil, errPlanStale
		}
		copied[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	if m.dialect == SQLite && len(copied) > 0 {
		done := make([]userUpdate, 0, len(copied))
		for _, u := range ups {
			if copied[u.id] {
				done = append(done, u)
			}
		}
		bad, err := m.checkDirect(ctx, tx, done)
		if err != nil {
			return nil, err
		}
		if len(bad) > 0 {
			return nil, errPlanStale
		}
	}
	return copied, nil
}

// pairsJSON encodes {"user id": credential id, …} for SQLite's json_each.
func pairsJSON(ups []userUpdate) string {
	b := make([]byte, 0, 24*len(ups)+2)
	b = append(b, '{')
	for i, u := range ups {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = strconv.AppendInt(b, u.id, 10)
		b = append(b, '"', ':')
		b = strconv.AppendInt(b, u.credID, 10)
	}
	return string(append(b, '}'))
}

// differs is the SQL condition "users row u differs from legacy row c in
// one of the seven columns" (NULL-safe).
func (m *Migrator) differs() string {
	distinct := " IS DISTINCT FROM "
	if m.dialect == SQLite {
		distinct = " IS NOT "
	}
	cmp := make([]string, len(fieldNames))
	for i := range fieldNames {
		cmp[i] = "u." + fieldNames[i] + distinct + "c." + legacyNames[i]
	}
	return strings.Join(cmp, " OR ")
}

// checkDirect compares, in the database, the seven columns of each user
// copied by copyDirect with its legacy row, and returns the users that
// differ (or are gone).
func (m *Migrator) checkDirect(ctx context.Context, tx *sql.Tx, ups []userUpdate) (map[int64]bool, error) {
	var rows *sql.Rows
	var err error
	where := "u.id IS NULL OR c.id IS NULL OR " + m.differs()
	if m.dialect == Postgres {
		uids, cids := make([]int64, len(ups)), make([]int64, len(ups))
		for i, u := range ups {
			uids[i], cids[i] = u.id, u.credID
		}
		rows, err = tx.QueryContext(ctx, `SELECT v.uid FROM unnest($1::bigint[], $2::bigint[]) AS v(uid, cid)
	LEFT JOIN users AS u ON u.id = v.uid LEFT JOIN `+LegacyTable+` AS c ON c.id = v.cid
WHERE `+where, uids, cids)
	} else {
		rows, err = tx.QueryContext(ctx, `SELECT v.uid FROM (SELECT CAST(key AS INTEGER) AS uid, value AS cid FROM json_each(?)) AS v
	LEFT JOIN users AS u ON u.id = v.uid LEFT JOIN `+LegacyTable+` AS c ON c.id = v.cid
WHERE `+where, pairsJSON(ups))
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	bad := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		bad[id] = true
	}
	return bad, rows.Err()
}

// userCredsByID reads users.nats_* of the given users (forUpdate: see
// userCreds).
func (m *Migrator) userCredsByID(ctx context.Context, q queryer, ids []int64, forUpdate bool) (map[int64]*cred, error) {
	lock := ""
	if forUpdate && m.dialect == Postgres {
		lock = " FOR UPDATE"
	}
	return scanUserCreds(q.QueryContext(ctx, userCredSelect+" WHERE "+m.idIn("id")+lock, m.idsArg(ids)))
}

// writeUsers writes the seven columns of each update.
func (m *Migrator) writeUsers(ctx context.Context, tx *sql.Tx, ups []userUpdate) error {
	if len(ups) == 0 {
		return nil
	}
	if m.dialect == Postgres {
		ids := make([]int64, len(ups))
		jwts, seeds, pubs, apubs := make([]*string, len(ups)), make([]*string, len(ups)), make([]*string, len(ups)), make([]*string, len(ups))
		accts := make([]*int64, len(ups))
		exps, expd := make([]*time.Time, len(ups)), make([]*time.Time, len(ups))
		ns := func(s sql.NullString) *string {
			if !s.Valid {
				return nil
			}
			return &s.String
		}
		nt := func(t nullTime) *time.Time {
			if !t.Valid {
				return nil
			}
			return &t.Time
		}
		for i, u := range ups {
			ids[i] = u.id
			jwts[i], seeds[i], pubs[i], apubs[i] = ns(u.c.JWT), ns(u.c.SeedHash), ns(u.c.PublicKey), ns(u.c.AccountPublicKey)
			if u.c.AccountID.Valid {
				v := u.c.AccountID.Int64
				accts[i] = &v
			}
			exps[i], expd[i] = nt(u.c.ExpiresAt), nt(u.c.ExpiredAt)
		}
		_, err := tx.ExecContext(ctx, `UPDATE users AS u SET nats_jwt = v.jwt, nats_seed_hash = v.seed_hash,
	nats_public_key = v.public_key, nats_account_id = v.account_id, nats_account_public_key = v.account_public_key,
	nats_expires_at = v.expires_at, nats_expired_at = v.expired_at
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::timestamptz[], $8::timestamptz[])
	AS v(id, jwt, seed_hash, public_key, account_id, account_public_key, expires_at, expired_at)
WHERE u.id = v.id`, ids, jwts, seeds, pubs, accts, apubs, exps, expd)
		return err
	}
	st, err := tx.PrepareContext(ctx, `UPDATE users SET nats_jwt = ?, nats_seed_hash = ?, nats_public_key = ?,
	nats_account_id = ?, nats_account_public_key = ?, nats_expires_at = ?, nats_expired_at = ? WHERE id = ?`)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, u := range ups {
		c := u.c
		if _, err := st.ExecContext(ctx, c.JWT, c.SeedHash, c.PublicKey, c.AccountID, c.AccountPublicKey,
			c.ExpiresAt.value(SQLite), c.ExpiredAt.value(SQLite), u.id); err != nil {
			return err
		}
	}
	return nil
}

// errPlanStale: something a planned batch relies on changed since the
// pre-check; the batch is redone from fresh reads (see copyPlan).
var errPlanStale = errorf("the pre-check's plan of a batch is out of date")

// batchWork is what a batch has decided to write and verify.
type batchWork struct {
	direct []userUpdate // copied by the database from the winning row
	ups    []userUpdate // written from Go
	checks []pending    // verified in Go against their winning row
}

type pending struct {
	id int64
	w  *legacyRow
	d  decision
}

// runBatch processes the users of one batch after `after` inside tx:
// decides, writes (when write is set) and verifies field by field. The batch
// is the next BatchSize user ids, or, when hi > 0, exactly the user ids in
// (after, hi] (a catch-up redoing a batch), or, when plan is not nil, the
// planned users (see runPlannedBatch). It returns the last user id of the
// batch (hi for a fixed range), or after when there is none.
func (m *Migrator) runBatch(ctx context.Context, tx *sql.Tx, after, hi int64, plan []plannedUser, seeds []seedRow, write, check bool, st *PassStats) (int64, error) {
	if plan != nil {
		return m.runPlannedBatch(ctx, tx, after, plan, seeds, st)
	}
	var ids []int64
	var err error
	if hi > 0 {
		ids, err = m.rangeIDs(ctx, tx, after, hi)
		if err != nil || len(ids) == 0 {
			return hi, err
		}
	} else {
		ids, err = m.batchIDs(ctx, tx, after, m.opts.BatchSize)
		if err != nil || len(ids) == 0 {
			return after, err
		}
		hi = ids[len(ids)-1]
	}
	legacy, err := m.legacyRows(ctx, tx, after, hi)
	if err != nil {
		return after, err
	}
	if write {
		// The seeds of the rows just read are hashed in the table and in
		// memory (with the row version the scrub left, on PostgreSQL), so
		// that the winning rows are copied as they now are.
		var found []seedRow
		byID := map[int64]*legacyRow{}
		for _, id := range ids {
			for _, r := range legacy[id] {
				if r.SeedHash.Valid && isSeed(r.SeedHash.String) {
					found = append(found, seedRow{id: r.ID, userID: id, seed: r.SeedHash.String})
					byID[r.ID] = r
				}
			}
		}
		if err := m.scrubBatchSeeds(ctx, tx, found, byID, st); err != nil {
			return after, err
		}
	}
	users, err := m.userCreds(ctx, tx, after, hi, write)
	if err != nil {
		return after, err
	}
	w := m.decideUsers(ids, legacy, users, write, st)
	return hi, m.applyAndVerify(ctx, tx, w, users, write, check, st)
}

// runPlannedBatch carries out the plan of one batch (write and check), in
// tx: it scrubs the raw seeds the pre-check found, copies every planned
// user whose users.nats_* are still empty from its winning row in one
// statement that writes only such users, and sends every other user
// (planned so, or no longer empty, or whose winning row is gone or may hold
// a raw seed written since) through the fresh path's per-user decisions,
// reading their rows again. Users the database copied are compared with the
// winning row by the database (on PostgreSQL in the UPDATE's RETURNING
// clause, on the row it has just written); one that differs makes the
// batch start over from fresh reads.
func (m *Migrator) runPlannedBatch(ctx context.Context, tx *sql.Tx, after int64, plan []plannedUser, seeds []seedRow, st *PassStats) (int64, error) {
	hi := plan[len(plan)-1].id
	if err := m.scrubBatchSeeds(ctx, tx, seeds, nil, st); err != nil {
		return after, err
	}
	var direct []userUpdate
	for _, p := range plan {
		if p.direct {
			direct = append(direct, userUpdate{id: p.id, credID: p.credID})
		}
	}
	copied, err := m.copyPlanned(ctx, tx, direct)
	if err != nil {
		return after, err
	}
	var rest []int64 // users for the fresh path
	var terms []digest256
	for _, p := range plan {
		if p.direct && copied[p.id] {
			terms = append(terms, p.term)
			continue
		}
		rest = append(rest, p.id)
	}
	st.Users += int64(len(terms))
	st.Actions[actionCopy] += int64(len(terms))
	st.Written += int64(len(terms))
	for _, term := range terms {
		// Copied from the winning row and compared equal to it by the
		// database: the pre-check's term of that row is both sides'.
		st.Verified[verifiedCopied]++
		st.src.add(term)
		st.dst.add(term)
		st.DigestUsers++
	}
	if len(rest) == 0 {
		return hi, nil
	}
	users, err := m.userCredsByID(ctx, tx, rest, true)
	if err != nil {
		return after, err
	}
	legacy, err := m.legacyRowsOf(ctx, tx, rest)
	if err != nil {
		return after, err
	}
	var ids []int64
	for _, id := range rest {
		if len(legacy[id]) > 0 {
			ids = append(ids, id)
		}
		// A user id whose rows are all gone since the pre-check has
		// nothing to migrate (the fresh path would not see it either).
	}
	w := m.decideUsers(ids, legacy, users, true, st)
	return hi, m.applyAndVerify(ctx, tx, w, users, true, true, st)
}

// decideUsers makes the per-user decisions of a batch for the given user
// ids, from their legacy rows and users.nats_* (users lacking from users
// are the rows of deleted users, counted and left alone).
func (m *Migrator) decideUsers(ids []int64, legacy map[int64][]*legacyRow, users map[int64]*cred, write bool, st *PassStats) batchWork {
	var w batchWork
	for _, id := range ids {
		rows := legacy[id]
		u, ok := users[id]
		if !ok {
			st.OrphanUsers++
			st.OrphanRows += int64(len(rows))
			if m.opts.Debug {
				m.log.Debug("credential migration: rows of a deleted user left in the legacy table", "user_id", id, "rows", len(rows))
			}
			continue
		}
		st.Users++
		win := winner(rows)
		d := decide(u, win, m.opts.OnConflict)
		st.Actions[d.action]++
		if m.opts.Debug {
			m.log.Debug("credential migration: decision", "user_id", id, "action", d.action, "credential_id", win.ID,
				"legacy_rows", len(rows), "jwt_valid", win.valid(), "issued_at", win.claims.IssuedAt)
		}
		if d.write && m.contested[d.target.PublicKey.String] && d.target.PublicKey != u.PublicKey {
			// Another user holds or claims the same key: the unique index
			// would refuse it, and which user is right is for a human to say.
			st.Actions["skipped_contested_key"]++
			st.mismatch(Mismatch{UserID: id, Reason: "public key of credential " + fmt.Sprint(win.ID) + " is held or claimed by another user"})
			continue
		}
		if d.write && write {
			if verbatimCopy(win, d) {
				w.direct = append(w.direct, userUpdate{id: id, c: d.target, credID: win.ID, xmin: win.xmin})
			} else {
				w.ups = append(w.ups, userUpdate{id: id, c: d.target})
			}
		}
		w.checks = append(w.checks, pending{id: id, w: win, d: d})
	}
	return w
}

// applyAndVerify writes what decideUsers decided and verifies it.
func (m *Migrator) applyAndVerify(ctx context.Context, tx *sql.Tx, w batchWork, users map[int64]*cred, write, check bool, st *PassStats) error {
	// Verify what was written, not what was meant: users copied by the
	// database are compared with their legacy row by the database, column by
	// column; those written from Go, and any the comparison flags, are read
	// back.
	readBack := map[int64]bool{}
	compared := map[int64]bool{} // copied and compared equal by the database
	if len(w.direct) > 0 {
		if err := m.copyDirect(ctx, tx, w.direct); err != nil {
			return err
		}
		st.Written += int64(len(w.direct))
		if check {
			bad, err := m.checkDirect(ctx, tx, w.direct)
			if err != nil {
				return err
			}
			for _, d := range w.direct {
				if bad[d.id] {
					readBack[d.id] = true
					continue
				}
				t := d.c
				users[d.id] = &t
				compared[d.id] = true
			}
		}
	}
	if len(w.ups) > 0 {
		if err := m.writeUsers(ctx, tx, w.ups); err != nil {
			return err
		}
		st.Written += int64(len(w.ups))
		for _, u := range w.ups {
			readBack[u.id] = true
		}
	}
	if check && len(readBack) > 0 {
		fresh, err := m.userCredsByID(ctx, tx, slices.Sorted(maps.Keys(readBack)), false)
		if err != nil {
			return err
		}
		for id := range readBack {
			users[id] = fresh[id]
			if users[id] == nil {
				users[id] = &cred{}
			}
		}
	}
	if !check {
		return nil
	}
	for _, p := range w.checks {
		u := users[p.id]
		outcome, cols := verify(u, p.w)
		if outcome == "" {
			reason := "users.nats_* differ from the newest legacy credential"
			if !write && p.d.write {
				reason = "not migrated yet (" + p.d.action + ")"
			}
			st.mismatch(Mismatch{UserID: p.id, Columns: cols, Reason: reason})
			continue
		}
		st.Verified[outcome]++
		if outcome == verifiedCopied {
			want := p.w.cred.normalized()
			term := want.digest(p.id)
			st.src.add(term)
			if !compared[p.id] {
				term = u.digest(p.id)
			}
			st.dst.add(term)
			st.DigestUsers++
		}
	}
	return nil
}

// pass runs runBatch over every legacy user id after start, one transaction
// per batch. checkpoint, when set, is updated in each batch's transaction.
// check verifies each batch inside its transaction, after its writes.
func (m *Migrator) pass(ctx context.Context, name string, start int64, write, check, commit, checkpoint bool, total int64) (*PassStats, error) {
	all, _, err := m.passBatches(ctx, name, start, nil, write, check, commit, checkpoint, total)
	return all, err
}

// batchResult is one committed batch of a pass: its user-id range (lo, hi]
// and what it found.
type batchResult struct {
	lo, hi int64
	st     *PassStats
}

// passBatches is pass, also returning each batch's range and stats (the
// catch-up redoes single batches and replaces their stats). With a plan
// (the copy of an uninterrupted run), the batches are the plan's users,
// BatchSize at a time, and the pass ends with them: user ids the pre-check
// did not see are the catch-up's.
func (m *Migrator) passBatches(ctx context.Context, name string, start int64, plan *copyPlan, write, check, commit, checkpoint bool, total int64) (*PassStats, []batchResult, error) {
	if plan != nil && write && check && commit && m.dialect == Postgres {
		return m.copyPipelined(ctx, name, start, plan, checkpoint, total)
	}
	l := m.startPass(name, total)
	defer l.prog.done()
	if m.dialect == SQLite && write && commit {
		defer m.checkpointWAL(ctx)
	}
	after := start
	for {
		var planned []plannedUser
		var seeds []seedRow
		if plan != nil {
			if planned, seeds = plan.next(after, m.opts.BatchSize); planned == nil {
				break
			}
		}
		b, last, err := m.oneBatch(ctx, name, after, 0, planned, seeds, write, check, commit, checkpoint)
		if err != nil {
			return nil, nil, err
		}
		if last == after {
			break
		}
		if err := m.record(ctx, l, after, last, b, commit); err != nil {
			return nil, nil, err
		}
		after = last
	}
	l.all.finish()
	return l.all, l.batches, nil
}

// passLog is what a pass has done so far: its batches in user-id order,
// their stats merged, and the progress line.
type passLog struct {
	all     *PassStats
	batches []batchResult
	prog    *progress
}

func (m *Migrator) startPass(name string, total int64) *passLog {
	return &passLog{all: newPassStats(), prog: newProgress(m.opts.Progress, name, total, m.opts.Now)}
}

// record adds the batch (lo, hi] to l, and runs BatchHook after it when it
// committed.
func (m *Migrator) record(ctx context.Context, l *passLog, lo, hi int64, st *PassStats, committed bool) error {
	l.all.merge(st)
	l.batches = append(l.batches, batchResult{lo: lo, hi: hi, st: st})
	l.prog.add(st.Users + st.OrphanUsers)
	if m.opts.BatchHook != nil && committed {
		return m.opts.BatchHook(ctx, hi)
	}
	return nil
}

// oneBatch runs one batch (see runBatch) in its own transaction, retried as
// a whole; its stats are fresh for each attempt. A planned batch whose plan
// turns out stale is redone from fresh reads over the same user-id range. A
// batch that does not write runs in a read-only transaction.
func (m *Migrator) oneBatch(ctx context.Context, name string, after, hi int64, plan []plannedUser, seeds []seedRow, write, check, commit, checkpoint bool) (*PassStats, int64, error) {
	var b *PassStats
	var last int64
	run := func(tx *sql.Tx) error {
		began := time.Now()
		b = newPassStats()
		var err error
		last, err = m.runBatch(ctx, tx, after, hi, plan, seeds, write, check, b)
		if err != nil || last == after {
			return err
		}
		if checkpoint {
			if err = m.setCheckpoint(ctx, tx, last); err != nil {
				return err
			}
		}
		if write && commit {
			err = m.checkpointAtSliceEnd(ctx, tx, began)
		}
		return err
	}
	inTx := func() error {
		if !write {
			return m.inReadTx(ctx, run)
		}
		defer m.leaveGap(time.Now())
		return m.inTx(ctx, commit, run)
	}
	err := inTx()
	if errors.Is(err, errPlanStale) && plan != nil {
		m.log.Debug("credential migration: a batch's plan is out of date; redoing it from fresh reads", "after_user_id", after)
		hi, plan, seeds = plan[len(plan)-1].id, nil, nil
		err = inTx()
	}
	if err != nil {
		return nil, after, internal(err, fmt.Sprintf("credential migration: %s batch after user %d", name, after))
	}
	return b, last, nil
}

// SQLite has one writer, and its busy handler does not queue waiters: a
// writer that finds the database locked sleeps and tries again, after 1, 2,
// 5, 10, … and at most 100 ms. Between two of the migration's write
// transactions the lock is free only for microseconds, which a sleeping
// writer would almost never hit. So once the migration has held the lock
// for sqliteLockSlice it leaves a gap longer than the handler's longest
// sleep: a waiting writer then gets through within about a slice, a batch
// and the slice's checkpoint (checkpointAtSliceEnd; the benchmark's
// application writer records its longest wait), and the migration spends
// about a tenth of its time waiting.
const (
	sqliteLockSlice = 1500 * time.Millisecond
	sqliteLockGap   = 150 * time.Millisecond
)

// leaveGap, called when a write transaction that began at start has ended,
// pauses on SQLite once the write lock has been held for sqliteLockSlice
// since the last pause, but never after a commit that left its checkpoint
// to a later one (checkpointAtSliceEnd): the next batch ends the slice.
func (m *Migrator) leaveGap(start time.Time) {
	if m.dialect != SQLite {
		return
	}
	deferred := m.checkpointDeferred
	m.checkpointDeferred = false
	if m.lockHeld += time.Since(start); m.lockHeld >= m.lockSlice && !deferred {
		time.Sleep(sqliteLockGap)
		m.lockHeld = 0
	}
}

// checkpointAtSliceEnd, at the end of a SQLite batch about to commit,
// turns its commit's automatic checkpoint off unless the batch ends a lock
// slice (leaveGap pauses after it). A checkpoint copies into the database
// file, and syncs, every page the WAL holds, and the batches of one slice
// share most of them (the leaves of the random-keyed nats_public_key index):
// checkpointed once a slice, such a page is copied once instead of once a
// batch. That checkpoint runs, as every automatic one, right after its
// commit and without the write lock, at the start of the pause, so the
// application's connections, blocked while the slice ran, find the WAL
// checkpointed or being checkpointed when they commit in the pause, and
// (but for a race of microseconds) do not take the work over: their own
// automatic checkpoint finds it done or busy. Each migration transaction
// sets the automatic checkpoint back (sqlitePragmas), and a write pass ends
// with a checkpoint.
func (m *Migrator) checkpointAtSliceEnd(ctx context.Context, tx *sql.Tx, began time.Time) error {
	if m.dialect != SQLite {
		return nil
	}
	m.checkpointDeferred = false
	if m.lockHeld+time.Since(began) >= m.lockSlice {
		return nil
	}
	_, err := tx.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0")
	m.checkpointDeferred = err == nil
	return err
}

// checkpointWAL copies what SQLite's WAL holds into the database file as
// far as readers allow (PASSIVE: it waits for no one and takes no write
// lock). One that fails loses nothing: the commits stay in the WAL for the
// next checkpoint, the migration's or any connection's automatic one.
func (m *Migrator) checkpointWAL(ctx context.Context) {
	if _, err := m.db.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
		m.log.Debug("credential migration: WAL checkpoint failed; a later one will copy its pages", "err", err)
	}
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func formatCounts(m map[string]int64) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
