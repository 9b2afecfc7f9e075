package credmigrate

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Precheck is what the migration finds before it writes anything.
type Precheck struct {
	LegacyRows           int64 `json:"legacy_rows"`
	LegacyUsers          int64 `json:"legacy_user_ids"`
	UsersWithSeveralRows int64 `json:"users_with_several_rows"`
	SupersededRows       int64 `json:"superseded_rows"`
	OrphanRows           int64 `json:"orphan_rows"`
	OrphanUsers          int64 `json:"orphan_user_ids"`
	InvalidJWTRows       int64 `json:"invalid_jwt_rows"`
	SubjectMismatchRows  int64 `json:"subject_mismatch_rows"`
	AlreadyMigrated      int64 `json:"already_migrated"`
	// Conflicts are users whose users.nats_* already hold a different
	// credential; by policy newest the later-issued one is kept.
	Conflicts             int64 `json:"conflicts"`
	ConflictsKeepUsers    int64 `json:"conflicts_keep_users_columns"`
	ConflictsTakeLegacy   int64 `json:"conflicts_take_legacy"`
	ToWrite               int64 `json:"users_to_write"`
	RawSeedsLegacy        int64 `json:"raw_seeds_legacy"`
	RawSeedsUsers         int64 `json:"raw_seeds_users"`
	PlaintextPasswords    int64 `json:"plaintext_passwords"`
	ContestedKeys         int64 `json:"public_keys_of_several_users"`
	SessionCredentialRefs int64 `json:"sessions_with_credential_id"`
	DanglingSessionRefs   int64 `json:"sessions_pointing_at_missing_credentials"`

	// Samples name up to 20 ids per finding (never a secret).
	Samples map[string][]int64 `json:"samples,omitempty"`
	// passwords is the password scrub's scan of users, made beside the
	// range scans; the scrub of the run that made it starts from it.
	passwords *passwordScan
}

func (p *Precheck) sample(kind string, id int64) {
	if p.Samples == nil {
		p.Samples = map[string][]int64{}
	}
	if len(p.Samples[kind]) < 20 {
		p.Samples[kind] = append(p.Samples[kind], id)
	}
}

// Precheck scans the legacy table and users without writing.
func (m *Migrator) Precheck(ctx context.Context) (*Precheck, error) {
	p, _, err := m.precheck(ctx, false)
	return p, err
}

// precheck is Precheck, also returning the copy plan when plan is set (see
// copyPlan).
func (m *Migrator) precheck(ctx context.Context, plan bool) (*Precheck, *copyPlan, error) {
	if err := m.requireLayout(ctx, true); err != nil {
		return nil, nil, err
	}
	// The counts read other tables than the range scans, which leave part
	// of the cores idle (SQLite's reads wait on its page cache): they run
	// beside them.
	var counts precheckCounts
	countsDone := make(chan error, 1)
	go func() { countsDone <- m.precheckCounts(ctx, &counts) }()
	p, cp, err := m.precheckRows(ctx, plan)
	if err != nil {
		<-countsDone
		return nil, nil, err
	}
	contested, err := m.contestedKeys(ctx, cp.keys)
	if err != nil {
		<-countsDone
		return nil, nil, err
	}
	cp.keys = nil
	m.contested = contested
	p.ContestedKeys = int64(len(contested))
	if len(contested) > 0 {
		// Their users go through the batch's fresh path, which reports them.
		hashes := map[uint64]bool{}
		for k := range contested {
			hashes[keyHash(k)] = true
		}
		for i := range cp.users {
			if u := &cp.users[i]; u.direct && hashes[u.keyHash] {
				u.direct = false
			}
		}
	}
	if err := <-countsDone; err != nil {
		return nil, nil, err
	}
	p.RawSeedsUsers, p.PlaintextPasswords = counts.rawSeedsUsers, counts.plaintext
	p.passwords = counts.passwords
	p.SessionCredentialRefs, p.DanglingSessionRefs = counts.sessionRefs, counts.danglingRefs
	return p, cp, nil
}

// precheckCounts are the pre-check's findings outside the legacy rows.
type precheckCounts struct {
	rawSeedsUsers, plaintext, sessionRefs, danglingRefs int64
	// passwords is the password scrub's scan, made here too while the
	// range scans leave cores idle: the scrub that follows the pre-check
	// starts from it (a password stored in clear after it, like one stored
	// after the scrub, is left to a rerun).
	passwords *passwordScan
}

func (m *Migrator) precheckCounts(ctx context.Context, c *precheckCounts) (err error) {
	if c.rawSeedsUsers, err = m.countRawSeedsUsers(ctx); err != nil {
		return err
	}
	if c.passwords, err = m.scanPasswords(ctx); err != nil {
		return err
	}
	if c.plaintext, err = m.countPlaintext(ctx, c.passwords.first); err != nil {
		return err
	}
	if ok, err := hasColumn(ctx, m.db, m.dialect, SessionsTable, SessionCredColumn); err != nil {
		return internal(err, "pre-check: reading nats_auth_sessions")
	} else if ok {
		// One scan: the sessions with a credential, and those whose
		// credential row is gone.
		if err := m.db.QueryRowContext(ctx, "SELECT count(*), count(*) - count(c.id) FROM "+SessionsTable+" s LEFT JOIN "+LegacyTable+
			" c ON c.id = s.credential_id WHERE s.credential_id IS NOT NULL").Scan(&c.sessionRefs, &c.danglingRefs); err != nil {
			return internal(err, "pre-check: counting sessions")
		}
	}
	return nil
}

// contestedKeys returns the public keys that more than one user holds or
// would hold (the unique index on users.nats_public_key refuses them): a key
// of the legacy rows of two or more existing users, or a key of a legacy row
// that another user holds in users.nats_public_key. uses are the legacy
// rows' keys as the pre-check read them, by hash; the keys of user ids whose
// hash is shared with another user id are then read again and compared
// exactly (hashes only narrow the search).
func (m *Migrator) contestedKeys(ctx context.Context, uses []keyUse) (map[string]bool, error) {
	uses = sortKeyUses(uses)
	// groupAt is the run of keys with the hash of uses[i], from i on.
	groupAt := func(i int) []keyUse {
		j := i
		for j < len(uses) && uses[j].hash == uses[i].hash {
			j++
		}
		return uses[i:j]
	}
	group := func(h uint64) []keyUse {
		i := sort.Search(len(uses), func(i int) bool { return uses[i].hash >= h })
		if i == len(uses) || uses[i].hash != h {
			return nil
		}
		return groupAt(i)
	}
	cand := map[int64]bool{}
	for i := 0; i < len(uses); {
		g := groupAt(i)
		if g[0].uid != g[len(g)-1].uid {
			for _, u := range g {
				cand[u.uid] = true
			}
		}
		i += len(g)
	}
	type held struct {
		uid int64
		key string
	}
	var helds []held
	rows, err := m.db.QueryContext(ctx, "SELECT id, nats_public_key FROM users WHERE nats_public_key IS NOT NULL")
	if err != nil {
		return nil, internal(err, "pre-check: reading users.nats_public_key")
	}
	for rows.Next() {
		var h held
		if err := rows.Scan(&h.uid, &h.key); err != nil {
			rows.Close()
			return nil, internal(err, "pre-check: reading users.nats_public_key")
		}
		g := group(keyHash(h.key))
		if len(g) > 0 && (g[0].uid != h.uid || g[len(g)-1].uid != h.uid) {
			helds = append(helds, h)
			for _, u := range g {
				cand[u.uid] = true
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, internal(err, "pre-check: reading users.nats_public_key")
	}
	out := map[string]bool{}
	if len(cand) == 0 {
		return out, nil
	}
	ids := slices.Sorted(maps.Keys(cand))
	arg := m.idsArg(ids)
	exist, err := queryIDs(ctx, m.db, "SELECT id FROM users WHERE "+m.idIn("id"), arg)
	if err != nil {
		return nil, internal(err, "pre-check: reading users")
	}
	existing := map[int64]bool{}
	for _, id := range exist {
		existing[id] = true
	}
	byKey := map[string][]int64{}
	rows, err = m.db.QueryContext(ctx, "SELECT user_id, public_key FROM "+LegacyTable+" WHERE public_key IS NOT NULL AND "+m.idIn("user_id"), arg)
	if err != nil {
		return nil, internal(err, "pre-check: reading legacy public keys")
	}
	defer rows.Close()
	for rows.Next() {
		var uid int64
		var key string
		if err := rows.Scan(&uid, &key); err != nil {
			return nil, internal(err, "pre-check: reading legacy public keys")
		}
		byKey[key] = append(byKey[key], uid)
	}
	if err := rows.Err(); err != nil {
		return nil, internal(err, "pre-check: reading legacy public keys")
	}
	for key, uids := range byKey {
		var first int64
		for _, uid := range uids {
			if !existing[uid] {
				continue
			}
			if first == 0 {
				first = uid
			} else if uid != first {
				out[key] = true
				break
			}
		}
	}
	for _, h := range helds {
		for _, uid := range byKey[h.key] {
			if uid != h.uid {
				out[h.key] = true
				break
			}
		}
	}
	return out, nil
}

// sortKeyUses sorts uses by hash, then user id, its two halves on two
// cores and then merged (a million legacy rows' keys: the pre-check's
// tail, which nothing else runs beside).
func sortKeyUses(uses []keyUse) []keyUse {
	less := func(a, b keyUse) int { return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.uid, b.uid)) }
	if len(uses) < 1<<14 || runtime.GOMAXPROCS(0) < 2 {
		slices.SortFunc(uses, less)
		return uses
	}
	a, b := uses[:len(uses)/2], uses[len(uses)/2:]
	var wg sync.WaitGroup
	wg.Go(func() { slices.SortFunc(a, less) })
	slices.SortFunc(b, less)
	wg.Wait()
	out := make([]keyUse, 0, len(uses))
	for len(a) > 0 && len(b) > 0 {
		if less(b[0], a[0]) < 0 {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	return append(append(out, a...), b...)
}

func (m *Migrator) countRawSeedsUsers(ctx context.Context) (int64, error) {
	rows, err := m.db.QueryContext(ctx, "SELECT nats_seed_hash FROM users WHERE nats_seed_hash LIKE 'S%'")
	if err != nil {
		return 0, internal(err, "pre-check: reading users.nats_seed_hash")
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return 0, internal(err, "pre-check: reading users.nats_seed_hash")
		}
		if isSeed(s) {
			n++
		}
	}
	return n, internal(rows.Err(), "pre-check: reading users.nats_seed_hash")
}

// countPlaintext counts the plaintext passwords of users from id first on
// (the first password the database does not recognise, scanPasswords;
// none: nothing to read).
func (m *Migrator) countPlaintext(ctx context.Context, first sql.NullInt64) (int64, error) {
	if !first.Valid {
		return 0, nil
	}
	rows, err := m.db.QueryContext(ctx, m.q("SELECT hashed_password FROM users WHERE id >= ? AND hashed_password IS NOT NULL AND NOT "+m.knownHash("hashed_password")), first.Int64)
	if err != nil {
		return 0, internal(err, "pre-check: reading passwords")
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			return 0, internal(err, "pre-check: reading passwords")
		}
		if s.Valid && !looksHashed(s.String) {
			n++
		}
	}
	return n, internal(rows.Err(), "pre-check: reading passwords")
}

// knownHash is a SQL condition true only for stored passwords that
// looksHashed accepts, in the schemes legacy databases hold by the million
// (bcrypt, argon2): those rows need not leave the database to be told apart
// from plaintext. Case-sensitive on both databases (GLOB on SQLite, whose
// LIKE is not).
func (m *Migrator) knownHash(col string) string {
	if m.dialect == SQLite {
		return "(length(" + col + ") >= 20 AND (" + col + " GLOB '$2[aby]$*' OR " + col + " GLOB '$argon2id$*' OR " + col + " GLOB '$argon2i$*'))"
	}
	return "(length(" + col + ") >= 20 AND (" + col + " LIKE '$2a$%' OR " + col + " LIKE '$2b$%' OR " + col + " LIKE '$2y$%' OR " +
		col + " LIKE '$argon2id$%' OR " + col + " LIKE '$argon2i$%'))"
}

// looksHashed reports whether a stored password is a modular-crypt / PHC hash
// ("$scheme$…"): argon2, bcrypt, scrypt, pbkdf2, sha-crypt and passlib's
// variants all have this form, and a legacy plaintext password almost never
// does. Such hashes are left alone (mulchat verifies argon2id; users with
// another scheme are reported to reset their password).
func looksHashed(s string) bool {
	if len(s) < 20 || s[0] != '$' {
		return false
	}
	rest := s[1:]
	i := strings.IndexByte(rest, '$')
	if i <= 0 {
		return false
	}
	for _, r := range rest[:i] {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// requireLayout checks that the database has what the migration reads:
// users with the seven nats_* columns (after adopt) and, when legacy is set,
// the legacy credential table.
func (m *Migrator) requireLayout(ctx context.Context, legacy bool) error {
	cols, err := columns(ctx, m.db, m.dialect, "users")
	if err != nil {
		return internal(err, "reading the users table")
	}
	have := map[string]bool{}
	for _, c := range cols {
		have[c] = true
	}
	var missing []string
	for _, c := range append(fieldNames[:], "must_rotate_password") {
		if !have[c] {
			missing = append(missing, c)
		}
	}
	if len(cols) == 0 {
		return errInvalid("the database has no users table: is this a Mul-Chat database?")
	}
	if len(missing) > 0 {
		return errInvalid(fmt.Sprintf("users lacks %s: run `mulchat migrate adopt` first", strings.Join(missing, ", ")))
	}
	if legacy {
		ok, err := tableExists(ctx, m.db, m.dialect, LegacyTable)
		if err != nil {
			return internal(err, "looking for "+LegacyTable)
		}
		if !ok {
			return errNotFound(LegacyTable + " does not exist (already dropped? `mulchat migrate rollback-nats-credentials` restores it)")
		}
	}
	return nil
}

// precheckRows scans the legacy rows and users in id ranges, on every core
// (the scan only reads), and merges the ranges' findings (and plans) in id
// order.
func (m *Migrator) precheckRows(ctx context.Context, plan bool) (*Precheck, *copyPlan, error) {
	var lo, hi sql.NullInt64
	if err := m.db.QueryRowContext(ctx, "SELECT min(user_id), max(user_id) FROM "+LegacyTable).Scan(&lo, &hi); err != nil {
		return nil, nil, internal(err, "pre-check: reading legacy user ids")
	}
	cp := &copyPlan{}
	if !lo.Valid {
		return &Precheck{}, cp, nil
	}
	width := int64(m.opts.BatchSize)
	n := int((hi.Int64-lo.Int64)/width + 1)
	parts := make([]*Precheck, n)
	plans := make([]*copyPlan, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				from := lo.Int64 - 1 + int64(i)*width
				parts[i], plans[i], errs[i] = m.precheckRange(ctx, from, from+width, plan)
			}
		}()
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	p := &Precheck{}
	var users, seeds, keys int
	for i, part := range parts {
		if errs[i] != nil {
			return nil, nil, internal(errs[i], "pre-check: reading legacy rows")
		}
		p.merge(part)
		users, seeds, keys = users+len(plans[i].users), seeds+len(plans[i].seeds), keys+len(plans[i].keys)
	}
	// Sized once: a million users' plan is 64 MB, which growing by
	// appending would copy about twice over.
	cp.users, cp.seeds, cp.keys = make([]plannedUser, 0, users), make([]seedRow, 0, seeds), make([]keyUse, 0, keys)
	for i := range plans {
		cp.append(plans[i])
		plans[i] = nil
	}
	return p, cp, nil
}

func (p *Precheck) merge(o *Precheck) {
	p.LegacyRows += o.LegacyRows
	p.LegacyUsers += o.LegacyUsers
	p.UsersWithSeveralRows += o.UsersWithSeveralRows
	p.SupersededRows += o.SupersededRows
	p.OrphanRows += o.OrphanRows
	p.OrphanUsers += o.OrphanUsers
	p.InvalidJWTRows += o.InvalidJWTRows
	p.SubjectMismatchRows += o.SubjectMismatchRows
	p.AlreadyMigrated += o.AlreadyMigrated
	p.Conflicts += o.Conflicts
	p.ConflictsKeepUsers += o.ConflictsKeepUsers
	p.ConflictsTakeLegacy += o.ConflictsTakeLegacy
	p.ToWrite += o.ToWrite
	p.RawSeedsLegacy += o.RawSeedsLegacy
	for _, k := range slices.Sorted(maps.Keys(o.Samples)) {
		for _, id := range o.Samples[k] {
			p.sample(k, id)
		}
	}
}

// legacyRowsLight reads, of the legacy rows of user ids in (lo, hi], what
// ranks them and what the pre-check reports: id, user id, JWT claims,
// public key, and seed_hash only when it may be a raw seed.
func (m *Migrator) legacyRowsLight(ctx context.Context, q queryer, lo, hi int64) (map[int64][]*legacyRow, error) {
	rows, err := q.QueryContext(ctx, m.q("SELECT id, user_id, jwt, public_key, CASE WHEN seed_hash LIKE 'S%' THEN seed_hash END FROM "+
		LegacyTable+" WHERE user_id > ? AND user_id <= ?"), lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64][]*legacyRow{}
	for rows.Next() {
		r := &legacyRow{}
		if err := rows.Scan(&r.ID, &r.UserID, &r.JWT, &r.PublicKey, &r.SeedHash); err != nil {
			return nil, err
		}
		if r.JWT.Valid {
			r.claims = decodeClaims(r.JWT.String)
		}
		out[r.UserID] = append(out[r.UserID], r)
	}
	return out, rows.Err()
}

// precheckRange examines the users with legacy rows whose id is in (lo, hi],
// and plans their copy when plan is set.
func (m *Migrator) precheckRange(ctx context.Context, lo, hi int64, plan bool) (*Precheck, *copyPlan, error) {
	p := &Precheck{}
	// One read transaction: on SQLite the range's users and legacy rows are
	// read in one snapshot, with sqlitePragmas (the memory map saves a read
	// call per page).
	var users map[int64]*cred
	var legacy map[int64][]*legacyRow
	err := m.inReadTx(ctx, func(tx *sql.Tx) (err error) {
		if users, err = m.rangeUserCreds(ctx, tx, lo, hi); err != nil {
			return err
		}
		legacy, err = m.rangeLegacyRows(ctx, tx, users, lo, hi, plan)
		return err
	})
	if err != nil || len(legacy) == 0 {
		return p, &copyPlan{}, err
	}
	ids := slices.Sorted(maps.Keys(legacy))
	cp := &copyPlan{}
	if plan {
		cp.users = make([]plannedUser, 0, len(ids))
	}
	for _, id := range ids {
		rows := legacy[id]
		slices.SortFunc(rows, func(a, b *legacyRow) int { return cmp.Compare(a.ID, b.ID) })
		p.LegacyUsers++
		p.LegacyRows += int64(len(rows))
		for _, r := range rows {
			if !r.claims.ok {
				p.InvalidJWTRows++
				p.sample("invalid_jwt_credential_ids", r.ID)
			} else if !r.valid() {
				p.SubjectMismatchRows++
				p.sample("subject_mismatch_credential_ids", r.ID)
			}
			if r.SeedHash.Valid && isSeed(r.SeedHash.String) {
				p.RawSeedsLegacy++
				p.sample("raw_seed_credential_ids", r.ID)
				if plan {
					cp.seeds = append(cp.seeds, seedRow{id: r.ID, userID: id, seed: r.SeedHash.String})
				}
			}
		}
		u, ok := users[id]
		for _, r := range rows {
			if r.PublicKey.Valid {
				cp.keys = append(cp.keys, keyUse{hash: keyHash(r.PublicKey.String), uid: id})
			}
		}
		pu := plannedUser{id: id}
		if !ok {
			p.OrphanUsers++
			p.OrphanRows += int64(len(rows))
			p.sample("orphan_user_ids", id)
			if plan {
				cp.users = append(cp.users, pu)
			}
			continue
		}
		if len(rows) > 1 {
			p.UsersWithSeveralRows++
			p.SupersededRows += int64(len(rows) - 1)
			p.sample("users_with_several_rows", id)
		}
		w := winner(rows)
		d := decide(u, w, m.opts.OnConflict)
		switch d.action {
		case actionSame:
			p.AlreadyMigrated++
		case actionKeepNewer:
			p.Conflicts++
			p.ConflictsKeepUsers++
			p.sample("conflict_user_ids", id)
		case actionReplaceOlder, actionReplaceLegacy:
			p.Conflicts++
			p.ConflictsTakeLegacy++
			p.sample("conflict_user_ids", id)
		}
		if d.write {
			p.ToWrite++
		}
		if plan {
			if u.empty() && d.action == actionCopy && w.ExpiresAt.verbatim() && w.ExpiredAt.verbatim() {
				// The batch scrubs the row's seed before the database
				// copies it, so the copy equals the normalized row. A
				// contested key (known once every range is read) sends the
				// user to the fresh path instead (precheck).
				pu.direct, pu.credID, pu.term = true, w.ID, d.target.digest(id)
				if w.PublicKey.Valid {
					pu.keyHash = keyHash(w.PublicKey.String)
				}
			}
			cp.users = append(cp.users, pu)
		}
	}
	return p, cp, nil
}

// rangeLegacyRows reads the legacy rows of user ids in (lo, hi] for the
// pre-check. Where every user of the range (users) has empty users.nats_*,
// each decision is a copy whatever the winning row holds: only what ranks
// the rows and what the findings need is read (not the timestamps and
// account columns, and a seed only where it may be raw). A plan needs the
// whole winning row (its digest term).
func (m *Migrator) rangeLegacyRows(ctx context.Context, q queryer, users map[int64]*cred, lo, hi int64, plan bool) (map[int64][]*legacyRow, error) {
	light := !plan
	for _, u := range users {
		if !u.empty() {
			light = false
			break
		}
	}
	if light {
		return m.legacyRowsLight(ctx, q, lo, hi)
	}
	return m.legacyRows(ctx, q, lo, hi)
}
