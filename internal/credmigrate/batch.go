package credmigrate

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
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

	src, dst hash.Hash
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
	return &PassStats{Actions: map[string]int64{}, Verified: map[string]int64{}, src: sha256.New(), dst: sha256.New()}
}

func (s *PassStats) finish() {
	s.SourceDigest = hex.EncodeToString(s.src.Sum(nil))
	s.TargetDigest = hex.EncodeToString(s.dst.Sum(nil))
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
}

const legacySelect = "SELECT id, user_id, jwt, seed_hash, public_key, account_id, account_public_key, expires_at, expired_at FROM " + LegacyTable

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
	rows, err := q.QueryContext(ctx, m.q("SELECT DISTINCT user_id FROM "+LegacyTable+" WHERE user_id > ? ORDER BY user_id LIMIT ?"), after, n)
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
	rows, err := q.QueryContext(ctx, m.q(legacySelect+" WHERE user_id > ? AND user_id <= ?"), lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64][]*legacyRow{}
	for rows.Next() {
		r := &legacyRow{}
		if err := scanCred(rows, &r.ID, &r.UserID, &r.cred); err != nil {
			return nil, err
		}
		if r.JWT.Valid {
			r.claims = decodeClaims(r.JWT.String)
		}
		out[r.UserID] = append(out[r.UserID], r)
	}
	return out, rows.Err()
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

// runBatch processes the users of one batch after `after` inside tx:
// decides, writes (when write is set) and verifies field by field. It
// returns the last user id of the batch, or after when there is none.
func (m *Migrator) runBatch(ctx context.Context, tx *sql.Tx, after int64, write, check bool, st *PassStats) (int64, error) {
	ids, err := m.batchIDs(ctx, tx, after, m.opts.BatchSize)
	if err != nil || len(ids) == 0 {
		return after, err
	}
	hi := ids[len(ids)-1]
	legacy, err := m.legacyRows(ctx, tx, after, hi)
	if err != nil {
		return after, err
	}
	users, err := m.userCreds(ctx, tx, after, hi, write)
	if err != nil {
		return after, err
	}
	type pending struct {
		id int64
		w  *legacyRow
		d  decision
	}
	var ups []userUpdate
	var checks []pending
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
		w := winner(rows)
		d := decide(u, w, m.opts.OnConflict)
		st.Actions[d.action]++
		if m.opts.Debug {
			m.log.Debug("credential migration: decision", "user_id", id, "action", d.action, "credential_id", w.ID,
				"legacy_rows", len(rows), "jwt_valid", w.valid(), "issued_at", w.claims.IssuedAt)
		}
		if d.write && m.contested[d.target.PublicKey.String] && d.target.PublicKey != u.PublicKey {
			// Another user holds or claims the same key: the unique index
			// would refuse it, and which user is right is for a human to say.
			st.Actions["skipped_contested_key"]++
			st.mismatch(Mismatch{UserID: id, Reason: "public key of credential " + fmt.Sprint(w.ID) + " is held or claimed by another user"})
			continue
		}
		if d.write && write {
			ups = append(ups, userUpdate{id: id, c: d.target})
		}
		checks = append(checks, pending{id: id, w: w, d: d})
	}
	if len(ups) > 0 {
		if err := m.writeUsers(ctx, tx, ups); err != nil {
			return after, err
		}
		st.Written += int64(len(ups))
		if !check {
			return hi, nil
		}
		// Verify what was written, not what was meant: read it back.
		if users, err = m.userCreds(ctx, tx, after, hi, false); err != nil {
			return after, err
		}
	}
	if !check {
		return hi, nil
	}
	for _, p := range checks {
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
			want.writeDigest(st.src, p.id)
			u.writeDigest(st.dst, p.id)
			st.DigestUsers++
		}
	}
	return hi, nil
}

// pass runs runBatch over every legacy user id after start, one transaction
// per batch. checkpoint, when set, is updated in each batch's transaction.
// check verifies each batch inside its transaction; the copy of a real run
// leaves that to the final pass, which reads everything again anyway.
func (m *Migrator) pass(ctx context.Context, name string, start int64, write, check, commit, checkpoint bool, total int64) (*PassStats, error) {
	all := newPassStats()
	// Batch digests are fed in order into the pass digests: a batch that is
	// retried must not feed twice, so each attempt gets fresh hashes and
	// the pass copies them over once the batch commits.
	after := start
	prog := newProgress(m.opts.Progress, name, total, m.opts.Now)
	defer prog.done()
	for {
		var b *PassStats
		var last int64
		var took time.Duration
		err := m.inTx(ctx, commit, func(tx *sql.Tx) error {
			b = newPassStats()
			b.src, b.dst = cloneHash(all.src), cloneHash(all.dst)
			var err error
			batchStart := time.Now()
			last, err = m.runBatch(ctx, tx, after, write, check, b)
			took = time.Since(batchStart)
			if err != nil || last == after {
				return err
			}
			if checkpoint {
				_, err = tx.ExecContext(ctx, m.q("UPDATE "+checkpointTable+" SET last_user_id = ?, updated_at = ? WHERE name = ?"),
					last, m.opts.Now().UTC().Format(time.RFC3339Nano), checkpointName)
			}
			return err
		})
		if err != nil {
			return nil, internal(err, fmt.Sprintf("credential migration: %s batch after user %d", name, after))
		}
		if last == after {
			break
		}
		all.merge(b)
		all.src, all.dst = b.src, b.dst
		after = last
		prog.add(b.Users + b.OrphanUsers)
		if m.dialect == SQLite && write && commit {
			// SQLite has one writer, and its busy handler does not queue
			// waiters fairly: leave the application a window between
			// batches so its writes are not starved.
			time.Sleep(max(2*time.Millisecond, took/4))
		}
		if m.opts.BatchHook != nil && commit {
			if err := m.opts.BatchHook(ctx, last); err != nil {
				return nil, err
			}
		}
	}
	all.finish()
	return all, nil
}

// cloneHash copies a SHA-256 state (sha256's digest implements
// encoding.BinaryMarshaler).
func cloneHash(h hash.Hash) hash.Hash {
	type marshaler interface {
		MarshalBinary() ([]byte, error)
	}
	type unmarshaler interface {
		UnmarshalBinary([]byte) error
	}
	state, err := h.(marshaler).MarshalBinary()
	if err != nil {
		panic("credmigrate: sha256 state does not marshal")
	}
	c := sha256.New()
	if err := c.(unmarshaler).UnmarshalBinary(state); err != nil {
		panic("credmigrate: sha256 state does not unmarshal")
	}
	return c
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
