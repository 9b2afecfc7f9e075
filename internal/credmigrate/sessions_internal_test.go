package credmigrate

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
)

// On SQLite the credential_id backup is staged before the removal's
// transaction; a session written in between must not be lost: the check
// inside the transaction finds the staged copy stale and backs up again.
func TestStagedSessionBackupGoesStale(t *testing.T) {
	ctx := context.Background()
	db := legacytest.SQLite(t)
	if _, err := legacygen.Generate(ctx, db.SQL, db.Dialect, legacygen.Options{Users: 40, Seed: 31}); err != nil {
		t.Fatal(err)
	}
	m, err := New(db.SQL, SQLite, Options{BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	staged, err := m.stageSessionBackup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if staged.n == 0 {
		t.Fatal("no session has a credential_id: the test needs some")
	}
	var fresh SessionColumn
	if err := m.inTx(ctx, false, func(tx *sql.Tx) error { return m.checkStagedBackup(ctx, tx, staged, &fresh) }); err != nil {
		t.Fatal(err)
	}
	if fresh.BackedUp != staged.n || fresh.Digest != staged.digest {
		t.Fatalf("an unchanged table: backed up %d (%s), staged %d (%s)", fresh.BackedUp, fresh.Digest, staged.n, staged.digest)
	}

	// A session gains a credential after the staging.
	var sid, cid int64
	if err := db.SQL.QueryRowContext(ctx, "SELECT s.id, c.id FROM nats_auth_sessions s, nats_user_credentials c WHERE s.credential_id IS NULL LIMIT 1").Scan(&sid, &cid); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL.ExecContext(ctx, "UPDATE nats_auth_sessions SET credential_id = ? WHERE id = ?", cid, sid); err != nil {
		t.Fatal(err)
	}
	var r SessionColumn
	if err := m.inTx(ctx, true, func(tx *sql.Tx) error { return m.checkStagedBackup(ctx, tx, staged, &r) }); err != nil {
		t.Fatal(err)
	}
	if r.BackedUp != staged.n+1 || r.Digest == staged.digest {
		t.Fatalf("after a change: backed up %d (%s), staged %d (%s)", r.BackedUp, r.Digest, staged.n, staged.digest)
	}
	var got int64
	if err := db.SQL.QueryRowContext(ctx, "SELECT credential_id FROM "+sessionBackupTable+" WHERE session_id = ?", sid).Scan(&got); err != nil || got != cid {
		t.Fatalf("the new pair in the backup: %d, %v", got, err)
	}
}

// The foreign-key violations counted before the removal leave out those of
// nats_auth_sessions.credential_id, which the removal takes away: counted,
// they would hide as many violations the rebuild brought (the removal
// fails when the count after exceeds the count before).
func TestFKViolationsLeaveOutTheCredentialColumn(t *testing.T) {
	ctx := context.Background()
	db := legacytest.SQLite(t)
	if _, err := legacygen.Generate(ctx, db.SQL, db.Dialect, legacygen.Options{Users: 30, Seed: 37}); err != nil {
		t.Fatal(err)
	}
	tables, err := fkTablesOf(ctx, db.SQL, SessionsTable)
	if err != nil {
		t.Fatal(err)
	}
	count := func() int64 {
		n, err := fkViolations(ctx, db.SQL, tables)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	base := count()
	// Three sessions of a credential that is gone, two of a user who is.
	for range 3 {
		if _, err := db.SQL.ExecContext(ctx, "INSERT INTO nats_auth_sessions (user_id, credential_id) VALUES ((SELECT min(id) FROM users), 987654321)"); err != nil {
			t.Fatal(err)
		}
	}
	if got := count(); got != base {
		t.Fatalf("sessions of a missing credential counted: %d violations, %d before", got, base)
	}
	for range 2 {
		if _, err := db.SQL.ExecContext(ctx, "INSERT INTO nats_auth_sessions (user_id, credential_id) VALUES (987654321, NULL)"); err != nil {
			t.Fatal(err)
		}
	}
	if got := count(); got != base+2 {
		t.Fatalf("sessions of a missing user: %d violations, want %d", got, base+2)
	}
}

// The change log of a staged backup counts the session writes that can
// change (id, credential_id) pairs, and no other; ending it removes its
// triggers before its table, so session writes go on working.
func TestSessionLogCounts(t *testing.T) {
	ctx := context.Background()
	db := legacytest.SQLite(t)
	if _, err := legacygen.Generate(ctx, db.SQL, db.Dialect, legacygen.Options{Users: 30, Seed: 41}); err != nil {
		t.Fatal(err)
	}
	m, err := New(db.SQL, SQLite, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var start int64
	if err := m.inTx(ctx, true, func(tx *sql.Tx) (err error) { start, err = startSessionLog(ctx, tx); return err }); err != nil {
		t.Fatal(err)
	}
	var sid, cid int64
	if err := db.SQL.QueryRowContext(ctx, "SELECT s.id, c.id FROM nats_auth_sessions s, nats_user_credentials c WHERE s.credential_id IS NULL LIMIT 1").Scan(&sid, &cid); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"UPDATE nats_auth_sessions SET active = NOT active",                                     // no pair changes
		"INSERT INTO nats_auth_sessions (user_id) VALUES (1)",                                   // no pair
		fmt.Sprintf("UPDATE nats_auth_sessions SET credential_id = %d WHERE id = %d", cid, sid), // +1
		fmt.Sprintf("DELETE FROM nats_auth_sessions WHERE id = %d", sid),                        // +1
		"INSERT INTO nats_auth_sessions (user_id, credential_id) VALUES (1, 5)",                 // +1
		"INSERT OR REPLACE INTO nats_auth_sessions (id, user_id, credential_id) " +
			"SELECT id, user_id, NULL FROM nats_auth_sessions WHERE credential_id IS NOT NULL LIMIT 1", // +1 (no DELETE trigger fires)
	} {
		if _, err := db.SQL.ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	var end int64
	if err := m.inTx(ctx, true, func(tx *sql.Tx) (err error) { end, err = endSessionLog(ctx, tx); return err }); err != nil {
		t.Fatal(err)
	}
	if end-start != 4 {
		t.Fatalf("the log counted %d changes, want 4", end-start)
	}
	if _, err := db.SQL.ExecContext(ctx, "INSERT INTO nats_auth_sessions (user_id, credential_id) VALUES (1, 6)"); err != nil {
		t.Fatalf("a session write after the log ended: %v", err)
	}
	if ok, err := tableExists(ctx, db.SQL, SQLite, sessionLogTable); err != nil || ok {
		t.Fatalf("the log's table is still there: %v %v", ok, err)
	}

	// Triggers whose table someone removed are removed too (else every
	// session write fails), by the clean-up a failed removal or a rollback
	// runs, even once the removal's context has ended.
	if err := m.inTx(ctx, true, func(tx *sql.Tx) (err error) { _, err = startSessionLog(ctx, tx); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL.ExecContext(ctx, "DROP TABLE "+sessionLogTable); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL.ExecContext(ctx, "INSERT INTO nats_auth_sessions (user_id, credential_id) VALUES (1, 7)"); err == nil {
		t.Fatal("a session write with the triggers and no table: want the failure the clean-up prevents")
	}
	ended, cancel := context.WithCancel(ctx) // as after a removal stopped by its context
	cancel()
	m.removeSessionLog(ended)
	if _, err := db.SQL.ExecContext(ctx, "INSERT INTO nats_auth_sessions (user_id, credential_id) VALUES (1, 7)"); err != nil {
		t.Fatalf("a session write after the clean-up: %v", err)
	}
}
