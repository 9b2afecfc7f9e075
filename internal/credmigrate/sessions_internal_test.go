package credmigrate

import (
	"context"
	"database/sql"
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
