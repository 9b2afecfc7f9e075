package credmigrate

import (
	"context"
	"database/sql"
	"runtime"
	"sync"

	"github.com/nats-io/nkeys"
)

// SeedScrub reports raw nkey seeds found in clear and replaced by their
// SHA-256. The seeds are exposed: whoever could read the database could
// impersonate these keys until their JWTs expire or are revoked.
type SeedScrub struct {
	LegacyRows int64 `json:"legacy_rows"`
	UserRows   int64 `json:"user_rows"`
	// ExposedPublicKeys are the public keys whose seeds were exposed (the
	// first maxExposed): revoke them, or let them expire.
	ExposedPublicKeys []string `json:"exposed_public_keys,omitempty"`

	// pending are exposed seeds whose public keys are not derived yet (see
	// exposed); never reported.
	pending []string
}

const maxExposed = 1000

// merge adds o (a later scrub) to s, which may be nil.
func (s *SeedScrub) merge(o *SeedScrub) *SeedScrub {
	if s == nil {
		return o
	}
	s.LegacyRows += o.LegacyRows
	s.UserRows += o.UserRows
	for _, k := range o.ExposedPublicKeys {
		if s.listed() < maxExposed {
			s.ExposedPublicKeys = append(s.ExposedPublicKeys, k)
		}
	}
	for _, seed := range o.pending {
		s.exposed(seed)
	}
	return s
}

func (s *SeedScrub) listed() int { return len(s.ExposedPublicKeys) + len(s.pending) }

// exposed lists seed's public key, while fewer than maxExposed are. Deriving
// a key costs an Ed25519 key derivation, and batches each keep a SeedScrub
// of their own, so the seed is kept and its key derived by resolve, once the
// scrubs are merged: only the keys reported are derived.
func (s *SeedScrub) exposed(seed string) {
	if s.listed() < maxExposed {
		s.pending = append(s.pending, seed)
	}
}

// resolve derives the public keys of the pending seeds.
func (s *SeedScrub) resolve() *SeedScrub {
	for _, seed := range s.pending {
		if kp, err := nkeys.FromSeed([]byte(seed)); err == nil {
			if pub, err := kp.PublicKey(); err == nil {
				s.ExposedPublicKeys = append(s.ExposedPublicKeys, pub)
			}
		}
	}
	s.pending = nil
	return s
}

// ScrubSeeds replaces every raw nkey seed in nats_user_credentials.seed_hash
// and users.nats_seed_hash by its SHA-256 (hex). Each replacement is a
// compare-and-set on the old value, so a rerun or a concurrent writer is safe.
func (m *Migrator) ScrubSeeds(ctx context.Context) (*SeedScrub, error) {
	s, err := m.scrubSeeds(ctx, true)
	if err != nil {
		return nil, err
	}
	m.warnSeeds(s.resolve())
	return s, nil
}

// scrubSeeds is ScrubSeeds, of users.nats_seed_hash alone unless legacy is
// set.
func (m *Migrator) scrubSeeds(ctx context.Context, legacy bool) (*SeedScrub, error) {
	s := &SeedScrub{}
	if legacy {
		if ok, err := tableExists(ctx, m.db, m.dialect, LegacyTable); err != nil {
			return nil, internal(err, "looking for "+LegacyTable)
		} else if ok {
			n, err := m.scrubSeedColumn(ctx, LegacyTable, "seed_hash", s)
			if err != nil {
				return nil, err
			}
			s.LegacyRows = n
		}
	}
	n, err := m.scrubSeedColumn(ctx, "users", "nats_seed_hash", s)
	if err != nil {
		return nil, err
	}
	s.UserRows = n
	return s, nil
}

func (m *Migrator) warnSeeds(s *SeedScrub) {
	if s.LegacyRows+s.UserRows > 0 {
		m.log.Warn("credential migration: raw nkey seeds were stored in clear and have been replaced by their SHA-256; the keys are exposed",
			"legacy_rows", s.LegacyRows, "user_rows", s.UserRows)
	}
}

func (m *Migrator) scrubSeedColumn(ctx context.Context, table, column string, s *SeedScrub) (int64, error) {
	// Seeds are rare: read them all (ids and values), then replace them in
	// batches.
	rows, err := m.db.QueryContext(ctx, "SELECT id, "+column+" FROM "+table+" WHERE "+column+" LIKE 'S%'")
	if err != nil {
		return 0, internal(err, "looking for raw seeds in "+table)
	}
	type found struct {
		id   int64
		seed string
	}
	var all []found
	for rows.Next() {
		var f found
		if err := rows.Scan(&f.id, &f.seed); err != nil {
			rows.Close()
			return 0, internal(err, "reading "+table)
		}
		if isSeed(f.seed) {
			all = append(all, f)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, internal(err, "reading "+table)
	}
	var n int64
	for i := 0; i < len(all); i += m.opts.BatchSize {
		chunk := all[i:min(i+m.opts.BatchSize, len(all))]
		var done int64
		err := m.inTx(ctx, !m.opts.DryRun, func(tx *sql.Tx) error {
			ids, olds, hashes := make([]int64, len(chunk)), make([]string, len(chunk)), make([]string, len(chunk))
			for i, f := range chunk {
				ids[i], olds[i], hashes[i] = f.id, f.seed, seedHash(f.seed)
			}
			written, err := m.replaceSeeds(ctx, tx, table, column, ids, olds, hashes)
			done = int64(len(written))
			return err
		})
		if err != nil {
			return 0, internal(err, "replacing raw seeds in "+table)
		}
		n += done
		for _, f := range chunk {
			s.exposed(f.seed)
			if m.opts.Debug {
				m.log.Debug("credential migration: raw seed replaced by its SHA-256", "table", table, "id", f.id)
			}
		}
	}
	return n, nil
}

// PasswordScrub reports plaintext passwords rehashed with argon2id.
type PasswordScrub struct {
	Rehashed int64 `json:"rehashed"`
	// OtherSchemes counts hashes in another scheme than argon2id (bcrypt,
	// pbkdf2, …): left as they are; those users must reset their password.
	OtherSchemes int64   `json:"other_schemes"`
	UserIDs      []int64 `json:"user_ids,omitempty"` // the first 1000 rehashed
}

// ScrubPasswords replaces each plaintext users.hashed_password by its
// argon2id hash and sets must_rotate_password, as a compare-and-set on the
// old value. Hashing is slow by design, so it runs outside transactions on
// every core; only the writes are batched.
func (m *Migrator) ScrubPasswords(ctx context.Context) (*PasswordScrub, error) {
	return m.scrubPasswords(ctx, nil)
}

// scrubPasswords is ScrubPasswords, starting from scan when it is set (a
// run's pre-check made it).
func (m *Migrator) scrubPasswords(ctx context.Context, scan *passwordScan) (*PasswordScrub, error) {
	s := &PasswordScrub{}
	// Hashes the database can recognise (knownHash) are only counted;
	// every other stored password is read and examined in Go, from the
	// first one the same scan finds (none: no second scan).
	if scan == nil {
		var err error
		if scan, err = m.scanPasswords(ctx); err != nil {
			return nil, err
		}
	}
	s.OtherSchemes = scan.otherSchemes
	first := scan.first
	after := first.Int64 - 1
	for first.Valid {
		rows, err := m.db.QueryContext(ctx, m.q("SELECT id, hashed_password FROM users WHERE id > ? AND hashed_password IS NOT NULL AND NOT "+
			m.knownHash("hashed_password")+" ORDER BY id LIMIT ?"), after, 10*m.opts.BatchSize)
		if err != nil {
			return nil, internal(err, "reading passwords")
		}
		type plain struct {
			id       int64
			pw, hash string
		}
		var todo []plain
		last := after
		for rows.Next() {
			var id int64
			var pw sql.NullString
			if err := rows.Scan(&id, &pw); err != nil {
				rows.Close()
				return nil, internal(err, "reading passwords")
			}
			last = id
			switch {
			case !pw.Valid:
			case !looksHashed(pw.String):
				todo = append(todo, plain{id: id, pw: pw.String})
			case len(pw.String) < 10 || pw.String[:10] != "$argon2id$":
				s.OtherSchemes++
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, internal(err, "reading passwords")
		}
		if last == after {
			break
		}
		after = last
		if len(todo) == 0 {
			continue
		}
		if m.opts.DryRun {
			s.Rehashed += int64(len(todo))
			continue
		}
		var wg sync.WaitGroup
		errs := make([]error, len(todo))
		work := make(chan int)
		for range runtime.GOMAXPROCS(0) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					todo[i].hash, errs[i] = m.opts.HashPassword(todo[i].pw)
				}
			}()
		}
		for i := range todo {
			work <- i
		}
		close(work)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return nil, internal(err, "hashing a legacy password")
			}
		}
		for i := 0; i < len(todo); i += m.opts.BatchSize {
			chunk := todo[i:min(i+m.opts.BatchSize, len(todo))]
			var done []int64
			err := m.inTx(ctx, true, func(tx *sql.Tx) error {
				done = done[:0]
				for _, p := range chunk {
					res, err := tx.ExecContext(ctx, m.q("UPDATE users SET hashed_password = ?, must_rotate_password = ? WHERE id = ? AND hashed_password = ?"),
						p.hash, true, p.id, p.pw)
					if err != nil {
						return err
					}
					if k, _ := res.RowsAffected(); k > 0 {
						done = append(done, p.id)
					}
				}
				return nil
			})
			if err != nil {
				return nil, internal(err, "storing rehashed passwords")
			}
			s.Rehashed += int64(len(done))
			for _, id := range done {
				if len(s.UserIDs) < 1000 {
					s.UserIDs = append(s.UserIDs, id)
				}
				if m.opts.Debug {
					m.log.Debug("credential migration: plaintext password rehashed with argon2id; user must rotate it", "user_id", id)
				}
			}
		}
	}
	if s.Rehashed > 0 {
		m.log.Warn("credential migration: plaintext passwords rehashed with argon2id; the users are flagged to rotate them", "users", s.Rehashed)
	}
	return s, nil
}

// passwordScan is what one scan of users.hashed_password tells the
// password scrub: how many hashes the database recognises in another
// scheme than argon2id, and the first user whose password it does not
// recognise (plaintext or another scheme, told apart in Go).
type passwordScan struct {
	otherSchemes int64
	first        sql.NullInt64
}

func (m *Migrator) scanPasswords(ctx context.Context) (*passwordScan, error) {
	s := &passwordScan{}
	if err := m.db.QueryRowContext(ctx, "SELECT count(*) FILTER (WHERE "+m.knownHash("hashed_password")+
		" AND hashed_password NOT LIKE '$argon2id$%'), min(id) FILTER (WHERE hashed_password IS NOT NULL AND NOT "+
		m.knownHash("hashed_password")+") FROM users").Scan(&s.otherSchemes, &s.first); err != nil {
		return nil, internal(err, "reading passwords")
	}
	return s, nil
}

// selfSetting marks the migration's own writes to the legacy table on
// PostgreSQL: the capture trigger ignores them (see scrubBatchSeeds).
const selfSetting = "mulchat.credmigrate_self"

// scrubBatchSeeds replaces, inside a batch's transaction, the raw seeds of
// the batch's legacy rows by their SHA-256, each a compare-and-set on the
// seed read. For rows read in this transaction (byID set: the fresh path)
// the rows in memory are updated too, with the row version the write left
// on PostgreSQL; a row changed since it was read fails the batch with
// errBatchRaced (retried). For seeds the pre-check found (byID nil: a
// planned batch), a row changed since fails it with errPlanStale.
//
// These writes are the migration's own: change capture must not record
// them, or the catch-up would redo every batch holding a raw seed. On
// PostgreSQL the trigger skips writes of a transaction that set
// selfSetting; on SQLite, whose batch holds the only write lock, the rows
// the trigger added meanwhile are deleted again.
func (m *Migrator) scrubBatchSeeds(ctx context.Context, tx *sql.Tx, seeds []seedRow, byID map[int64]*legacyRow, st *PassStats) error {
	if len(seeds) == 0 {
		return nil
	}
	stale := errPlanStale
	if byID != nil {
		stale = errBatchRaced
	}
	ids, olds, hashes := make([]int64, len(seeds)), make([]string, len(seeds)), make([]string, len(seeds))
	for i, s := range seeds {
		ids[i], olds[i], hashes[i] = s.id, s.seed, seedHash(s.seed)
	}
	if m.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, "SELECT set_config('"+selfSetting+"', 'on', true)"); err != nil {
			return err
		}
	}
	var mark int64
	if m.dialect == SQLite && m.capturing {
		if err := tx.QueryRowContext(ctx, "SELECT coalesce(max(rowid), 0) FROM "+changedTable).Scan(&mark); err != nil {
			return err
		}
	}
	written, err := m.replaceSeeds(ctx, tx, LegacyTable, "seed_hash", ids, olds, hashes)
	if err != nil {
		return err
	}
	for id, xmin := range written {
		if r := byID[id]; r != nil && m.dialect == Postgres {
			r.xmin = xmin
		}
	}
	if m.dialect == SQLite && m.capturing {
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+changedTable+" WHERE rowid > ?", mark); err != nil {
			return err
		}
	}
	n := len(written)
	if n != len(seeds) {
		return stale
	}
	for i, s := range seeds {
		if r := byID[s.id]; r != nil {
			r.SeedHash.String = hashes[i]
		}
		st.seeds.LegacyRows++
		st.seeds.exposed(s.seed)
		if m.opts.Debug {
			m.log.Debug("credential migration: raw seed replaced by its SHA-256", "table", LegacyTable, "id", s.id)
		}
	}
	return nil
}

// replaceSeeds replaces, in table, column's value olds[i] by hashes[i] in row
// ids[i] (distinct), each only if the row still holds that old value, and
// returns the rows written with, on PostgreSQL, the row version each write
// left ("" on SQLite): one statement on PostgreSQL, one prepared statement a
// row on SQLite.
func (m *Migrator) replaceSeeds(ctx context.Context, tx *sql.Tx, table, column string, ids []int64, olds, hashes []string) (map[int64]string, error) {
	written := make(map[int64]string, len(ids))
	if m.dialect == Postgres {
		rows, err := tx.QueryContext(ctx, "UPDATE "+table+" AS t SET "+column+" = v.h FROM unnest($1::bigint[], $2::text[], $3::text[]) AS v(id, old, h) "+
			"WHERE t.id = v.id AND t."+column+" = v.old RETURNING t.id, t.xmin::text", ids, olds, hashes)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var xmin string
			if err := rows.Scan(&id, &xmin); err != nil {
				return nil, err
			}
			written[id] = xmin
		}
		return written, rows.Err()
	}
	stmt, err := tx.PrepareContext(ctx, "UPDATE "+table+" SET "+column+" = ? WHERE id = ? AND "+column+" = ?")
	if err != nil {
		return nil, err
	}
	defer stmt.Close()
	for i, id := range ids {
		res, err := stmt.ExecContext(ctx, hashes[i], id, olds[i])
		if err != nil {
			return nil, err
		}
		k, err := res.RowsAffected()
		if err != nil {
			return nil, err
		}
		if k > 0 {
			written[id] = ""
		}
	}
	return written, nil
}
