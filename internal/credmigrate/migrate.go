package credmigrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/mulchat/mulchat"
)

// Report is what a run did (or, in a dry run, would do). The command prints
// it and writes it as JSON with --report.
type Report struct {
	Command       string            `json:"command"`
	Dialect       string            `json:"dialect"`
	ServerVersion string            `json:"server_version"`
	GoVersion     string            `json:"go_version"`
	DryRun        bool              `json:"dry_run"`
	OnConflict    string            `json:"on_conflict,omitempty"`
	BatchSize     int               `json:"batch_size,omitempty"`
	StartedAt     time.Time         `json:"started_at"`
	FinishedAt    time.Time         `json:"finished_at"`
	Timings       map[string]string `json:"timings"`
	ResumedAfter  int64             `json:"resumed_after_user_id,omitempty"`

	Precheck  *Precheck      `json:"precheck,omitempty"`
	Copy      *PassStats     `json:"copy,omitempty"`
	Verify    *PassStats     `json:"verify,omitempty"`
	Seeds     *SeedScrub     `json:"seeds,omitempty"`
	Passwords *PasswordScrub `json:"passwords,omitempty"`
	Sessions  *SessionColumn `json:"sessions_credential_id,omitempty"`
	Backup    *BackupInfo    `json:"backup,omitempty"`
	Rollback  *RollbackInfo  `json:"rollback,omitempty"`
	Messages  []string       `json:"messages,omitempty"`
}

func (m *Migrator) newReport(command string) *Report {
	r := &Report{Command: command, Dialect: m.dialect, GoVersion: runtime.Version(), DryRun: m.opts.DryRun,
		StartedAt: m.opts.Now().UTC(), Timings: map[string]string{}}
	q := "SELECT sqlite_version()"
	if m.dialect == Postgres {
		q = "SELECT version()"
	}
	m.db.QueryRowContext(context.Background(), q).Scan(&r.ServerVersion)
	return r
}

// timed runs fn and records its duration under name.
func (m *Migrator) timed(r *Report, name string, fn func() error) error {
	t := m.opts.Now()
	err := fn()
	r.Timings[name] = m.opts.Now().Sub(t).Round(time.Millisecond).String()
	return err
}

func (r *Report) note(format string, args ...any) {
	r.Messages = append(r.Messages, fmt.Sprintf(format, args...))
}

// ErrUnverified is returned (wrapped) when users remain that the
// verification could not account for; the command exits non-zero.
var ErrUnverified = errors.New("unverified users remain")

const checkpointName = "nats-credentials"

// Checkpoint phases.
const (
	phaseCopy  = "copy"
	phaseFinal = "final"
	phaseDone  = "done"
)

// Run performs `mulchat migrate nats-credentials`: pre-check, checkpointed
// copy, catch-up and verification, scrubbing of secrets left in clear, and
// the backup and removal of nats_auth_sessions.credential_id. With DryRun
// every write happens inside a transaction that is rolled back. The report
// is returned even with an error.
func (m *Migrator) Run(ctx context.Context) (*Report, error) {
	r := m.newReport("nats-credentials")
	r.OnConflict, r.BatchSize = m.opts.OnConflict, m.opts.BatchSize
	defer func() { r.FinishedAt = m.opts.Now().UTC() }()
	// A dry run takes the lock too: its rolled-back DDL would race with a
	// real run's.
	lock, err := m.lock(ctx)
	if err != nil {
		return r, err
	}
	defer lock.release()

	// An uninterrupted real run plans the copy in its pre-check and carries
	// the plan out batch by batch, verifying each batch in the transaction
	// that writes it, with the legacy table's changes captured from before
	// the pre-check; the catch-up then redoes only the batches those changes
	// touched (see copyPlan). A resumed run cannot trust what an earlier
	// process verified: it does the full final pass (catch-up and
	// verification of every user) instead, from fresh reads throughout.
	planned := false
	if !m.opts.DryRun {
		// Before the pre-check, which reads by user id too.
		if err := m.requireLayout(ctx, true); err != nil {
			return r, err
		}
		if err := m.timed(r, "prepare", func() error { return m.prepare(ctx) }); err != nil {
			return r, err
		}
		resuming, err := m.resuming(ctx)
		if err != nil {
			return r, err
		}
		// --debug logs every decision, which the fresh path makes.
		planned = !resuming && !m.opts.Debug
		// The capture starts before the pre-check reads anything, so that
		// whatever the plan misses is recorded. A resumed run does not use
		// what it records, but removes a killed run's capture at the end.
		if err := m.timed(r, "capture", func() error { return m.startCapture(ctx) }); err != nil {
			return r, err
		}
	}
	var plan *copyPlan
	if err := m.timed(r, "precheck", func() (err error) {
		r.Precheck, plan, err = m.precheck(ctx, planned)
		return err
	}); err != nil {
		return r, err
	}
	p := r.Precheck
	m.log.Info("credential migration: pre-check", "legacy_rows", p.LegacyRows, "users", p.LegacyUsers-p.OrphanUsers,
		"several_rows", p.UsersWithSeveralRows, "orphan_rows", p.OrphanRows, "invalid_jwt", p.InvalidJWTRows,
		"subject_mismatch", p.SubjectMismatchRows, "conflicts", p.Conflicts, "to_write", p.ToWrite,
		"raw_seeds", p.RawSeedsLegacy+p.RawSeedsUsers, "plaintext_passwords", p.PlaintextPasswords)
	if m.opts.OnConflict == OnConflictFail && p.Conflicts > 0 {
		if !m.opts.DryRun {
			if _, err := m.stopCapture(ctx); err != nil {
				return r, err
			}
		}
		return r, errConflict(fmt.Sprintf("%d users already hold a different credential in users.nats_* (--on-conflict fail); see the report's conflict_user_ids", p.Conflicts))
	}

	// Plaintext passwords are independent of the credentials: they are
	// rehashed before the copy, while the users rows are still small to
	// scan (after it they carry the credentials).
	if err := m.timed(r, "scrub_passwords", func() (err error) {
		r.Passwords, err = m.scrubPasswords(ctx, p.passwords)
		return err
	}); err != nil {
		return r, err
	}

	start, phase := int64(0), phaseCopy
	if !m.opts.DryRun {
		if start, phase, err = m.startCheckpoint(ctx); err != nil {
			return r, err
		}
		if start > 0 || phase != phaseCopy {
			r.ResumedAfter = start
			r.note("resumed an interrupted run (phase %s, after user %d)", phase, start)
			m.log.Info("credential migration: resuming", "phase", phase, "after_user_id", start)
		}
	}
	resumed := start > 0 || phase != phaseCopy
	if resumed || !planned {
		plan = nil
	}
	var batches []batchResult
	if phase == phaseCopy {
		// Each batch hashes the raw seeds of its legacy rows in its own
		// transaction before copying, so the database copies winning rows
		// as they are (a dry run's batches too, rolled back with them).
		if err := m.timed(r, "copy", func() (err error) {
			r.Copy, batches, err = m.passBatches(ctx, "copy", start, plan, true, true, !m.opts.DryRun, !m.opts.DryRun, p.LegacyUsers)
			return err
		}); err != nil {
			return r, err
		}
		if err := m.setPhase(ctx, phaseFinal); err != nil {
			return r, err
		}
	}
	if m.opts.DryRun {
		// Each batch was verified inside its rolled-back transaction; a
		// second pass would see nothing of it.
		r.Verify = r.Copy
	} else if err := m.timed(r, "catch_up_and_verify", func() error {
		changed, err := m.stopCapture(ctx)
		if err != nil {
			return err
		}
		if resumed {
			r.Verify, err = m.pass(ctx, "verify", 0, true, true, true, false, p.LegacyUsers)
			return err
		}
		r.Verify, err = m.catchUp(ctx, batches, start, changed)
		if len(changed) > 0 {
			r.note("catch-up: %d users' legacy rows changed during the copy; their batches were redone", len(changed))
		}
		return err
	}); err != nil {
		return r, err
	}
	v := r.Verify
	m.log.Info("credential migration: verified", "users", v.Users, "verified", formatCounts(v.Verified),
		"unverified", v.Unverified, "caught_up", v.Written, "source_digest", v.SourceDigest, "target_digest", v.TargetDigest)

	if err := m.timed(r, "scrub_seeds", func() error {
		// A real run's batches (copy, catch-up, final pass) scrubbed the
		// legacy rows, as they stood when each batch ran; users.nats_* is
		// scrubbed here. A dry run counts both here, its batches having been
		// rolled back.
		s := &SeedScrub{}
		if !m.opts.DryRun {
			for _, ps := range []*PassStats{r.Copy, r.Verify} {
				if ps != nil {
					s.merge(&ps.seeds)
				}
			}
		}
		// users.nats_seed_hash is written only by mulchat (a hash) and by
		// the batches (which hashed the legacy seed first), so its raw seeds
		// are those the pre-check counted there, left by an earlier copy of
		// the legacy values; with none, the column (a scan of users, which
		// now carry the credentials) is not read again.
		more := &SeedScrub{}
		if m.opts.DryRun || p.RawSeedsUsers > 0 {
			var err error
			if more, err = m.scrubSeeds(ctx, m.opts.DryRun); err != nil {
				return err
			}
		}
		r.Seeds = s.merge(more).resolve()
		m.warnSeeds(r.Seeds)
		return nil
	}); err != nil {
		return r, err
	}
	if v.Unverified > 0 {
		r.note("nats_auth_sessions.credential_id kept: %d users are unverified", v.Unverified)
		return r, mulchat.WrapError(mulchat.EINVALID, ErrUnverified,
			fmt.Sprintf("%d users could not be verified; nothing was dropped (see the report's mismatches)", v.Unverified))
	}
	if m.opts.KeepSessionColumn {
		r.note("nats_auth_sessions.credential_id kept (--keep-session-column); a rerun without it backs it up and removes it")
		if !m.opts.DryRun {
			if err := m.setPhase(ctx, phaseDone); err != nil {
				return r, err
			}
		}
		return r, nil
	}
	if err := m.timed(r, "drop_session_credential_id", func() (err error) {
		r.Sessions, err = m.DropSessionCredentialColumn(ctx)
		return err
	}); err != nil {
		return r, err
	}
	if !m.opts.DryRun {
		if err := m.setPhase(ctx, phaseDone); err != nil {
			return r, err
		}
	}
	return r, nil
}

// prepare creates the checkpoint table and the index on
// nats_user_credentials(user_id) the batches need. Each piece of DDL runs in
// a transaction of inTx (on PostgreSQL holding workLockKey, so it cannot
// race with a statement a killed run left executing).
func (m *Migrator) prepare(ctx context.Context) error {
	ts := "TEXT"
	err := m.inTx(ctx, true, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+checkpointTable+` (
	name         `+ts+` PRIMARY KEY,
	phase        `+ts+` NOT NULL,
	last_user_id BIGINT NOT NULL,
	started_at   `+ts+` NOT NULL,
	updated_at   `+ts+` NOT NULL
)`); err != nil {
			return internal(err, "creating the checkpoint table")
		}
		if m.dialect == SQLite {
			_, err := tx.ExecContext(ctx, "CREATE INDEX IF NOT EXISTS "+userIndex+" ON "+LegacyTable+" (user_id)")
			return internal(err, "creating an index on "+LegacyTable+"(user_id)")
		}
		return nil
	})
	if err != nil || m.dialect == SQLite {
		return err
	}
	// CONCURRENTLY, so the legacy app keeps writing while it builds; it
	// cannot run in a transaction, so its connection holds workLockKey at
	// session level instead (a killed run's build finishes before a rerun
	// looks at the index). A build that was interrupted leaves an invalid
	// index: drop and redo it.
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return internal(err, "connecting")
	}
	defer func() {
		// A connection that may still hold the lock is not pooled.
		var unlocked bool
		if err := conn.QueryRowContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock_shared($1)", workLockKey).Scan(&unlocked); err != nil || !unlocked {
			discard(conn)
		}
		conn.Close()
	}()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock_shared($1)", workLockKey); err != nil {
		return internal(err, "taking the migration lock")
	}
	var valid sql.NullBool
	err = conn.QueryRowContext(ctx, `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace`, userIndex).Scan(&valid)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return internal(err, "looking for the user_id index")
	}
	if valid.Valid && valid.Bool {
		return nil
	}
	if valid.Valid {
		if _, err := conn.ExecContext(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+userIndex); err != nil {
			return internal(err, "dropping an invalid index")
		}
	}
	_, err = conn.ExecContext(ctx, "CREATE INDEX CONCURRENTLY IF NOT EXISTS "+userIndex+" ON "+LegacyTable+" (user_id)")
	return internal(err, "creating an index on "+LegacyTable+"(user_id)")
}

// startCheckpoint returns where to start: after the last committed batch of
// an interrupted run, or from the beginning (a finished run is redone from
// scratch, which writes nothing unless the legacy table changed).
func (m *Migrator) startCheckpoint(ctx context.Context) (last int64, phase string, err error) {
	now := m.opts.Now().UTC().Format(time.RFC3339Nano)
	err = m.inTx(ctx, true, func(tx *sql.Tx) error {
		// ON CONFLICT: robust even without the run lock (SQLite on a system
		// without flock).
		if _, err := tx.ExecContext(ctx, m.q("INSERT INTO "+checkpointTable+" (name, phase, last_user_id, started_at, updated_at) VALUES (?, ?, 0, ?, ?) ON CONFLICT (name) DO NOTHING"),
			checkpointName, phaseCopy, now, now); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, m.q("SELECT last_user_id, phase FROM "+checkpointTable+" WHERE name = ?"), checkpointName).Scan(&last, &phase); err != nil {
			return err
		}
		if phase != phaseDone {
			return nil
		}
		last, phase = 0, phaseCopy
		_, err := tx.ExecContext(ctx, m.q("UPDATE "+checkpointTable+" SET phase = ?, last_user_id = 0, started_at = ?, updated_at = ? WHERE name = ?"),
			phaseCopy, now, now, checkpointName)
		return err
	})
	return last, phase, internal(err, "writing the checkpoint")
}

// resuming reports whether the checkpoint holds an interrupted run (a run
// that committed a batch, or finished its copy, and did not finish), without
// writing; startCheckpoint then picks it up.
func (m *Migrator) resuming(ctx context.Context) (bool, error) {
	var last int64
	var phase string
	err := m.db.QueryRowContext(ctx, m.q("SELECT last_user_id, phase FROM "+checkpointTable+" WHERE name = ?"), checkpointName).Scan(&last, &phase)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, internal(err, "reading the checkpoint")
	}
	return phase != phaseDone && (last > 0 || phase != phaseCopy), nil
}

func (m *Migrator) setPhase(ctx context.Context, phase string) error {
	if m.opts.DryRun {
		return nil
	}
	err := m.inTx(ctx, true, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, m.q("UPDATE "+checkpointTable+" SET phase = ?, updated_at = ? WHERE name = ?"),
			phase, m.opts.Now().UTC().Format(time.RFC3339Nano), checkpointName)
		return err
	})
	return internal(err, "writing the checkpoint")
}

// lock takes the database's migration lock for a writing command (see
// lock.go).
func (m *Migrator) lock(ctx context.Context) (*runLock, error) {
	return acquireRunLock(ctx, m.db, m.dialect, m.opts.LockWait, m.log)
}

// Verify performs `mulchat migrate verify-nats-credentials`: the field-by-field
// verification of every user with legacy rows, and the digests, without
// writing. It returns an error wrapping ErrUnverified when any user does not
// verify.
func (m *Migrator) Verify(ctx context.Context) (*Report, error) {
	r := m.newReport("verify-nats-credentials")
	defer func() { r.FinishedAt = m.opts.Now().UTC() }()
	if err := m.requireLayout(ctx, false); err != nil {
		return r, err
	}
	if ok, err := tableExists(ctx, m.db, m.dialect, LegacyTable); err != nil {
		return r, internal(err, "looking for "+LegacyTable)
	} else if !ok {
		r.note("%s has been dropped: there is nothing left to verify against (its backup file holds it)", LegacyTable)
		return r, nil
	}
	if err := m.timed(r, "verify", func() (err error) {
		r.Verify, err = m.pass(ctx, "verify", 0, false, true, false, false, 0)
		return err
	}); err != nil {
		return r, err
	}
	if r.Verify.Unverified > 0 {
		return r, mulchat.WrapError(mulchat.EINVALID, ErrUnverified,
			fmt.Sprintf("%d users do not verify (see the report's mismatches)", r.Verify.Unverified))
	}
	return r, nil
}

// BackupInfo describes a backup file written before the legacy table was
// dropped.
type BackupInfo struct {
	Path        string `json:"path"`
	Credentials int64  `json:"credential_rows"`
	Sessions    int64  `json:"session_rows"`
	SHA256      string `json:"sha256"`
}

// RollbackInfo describes what a rollback restored.
type RollbackInfo struct {
	Source            string `json:"source"` // "backup" or "users"
	Credentials       int64  `json:"credential_rows"`
	Sessions          int64  `json:"session_rows"`
	TableRecreated    bool   `json:"table_recreated"`
	ColumnRecreated   bool   `json:"column_recreated"`
	RoundTripVerified bool   `json:"round_trip_verified"`
}
