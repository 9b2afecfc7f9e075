package credmigrate_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
)

func yes(string) (bool, error) { return true, nil }

// The full cycle: adopt → migrate → verify → drop → rollback → verify →
// migrate again, with the data compared exactly at each step.
func TestFullCycle(t *testing.T) {
	legacytest.ForEach(t, func(t *testing.T, db *legacytest.DB) {
		ctx := context.Background()
		e := newEnv(t, db, legacygen.Options{Users: 250, Seed: 2, UserNATSColumns: legacygen.UserNATSColumns})
		sessionsBefore := e.rows(t, "nats_auth_sessions", "id", "credential_id")
		sessionsSQL := e.tableSQL(t, "nats_auth_sessions")
		e.adopt(t)
		sessionsAdopted := e.tableSQL(t, "nats_auth_sessions")
		credsSQL := e.tableSQL(t, "nats_user_credentials")

		if _, err := e.migrator(t, credmigrate.Options{}).Run(ctx); err != nil {
			t.Fatal(err)
		}
		users := e.rows(t, "users", userNATSCols...)
		creds := e.rows(t, "nats_user_credentials", legacyCredCols...)
		if ok, _ := e.hasColumn(t, "nats_auth_sessions", "credential_id"); ok {
			t.Fatal("credential_id not dropped")
		}
		if _, err := e.migrator(t, credmigrate.Options{}).Verify(ctx); err != nil {
			t.Fatal(err)
		}

		// The drop refuses without a backup and without confirmation.
		m := e.migrator(t, credmigrate.Options{})
		if _, err := m.DropTable(ctx, credmigrate.DropOptions{Confirm: yes}); err == nil {
			t.Fatal("drop without --backup succeeded")
		}
		backup := filepath.Join(t.TempDir(), "creds.backup")
		if _, err := m.DropTable(ctx, credmigrate.DropOptions{BackupPath: backup}); err == nil {
			t.Fatal("drop without confirmation succeeded")
		}
		os.Remove(backup)
		r, err := m.DropTable(ctx, credmigrate.DropOptions{BackupPath: backup, Confirm: yes})
		if err != nil {
			t.Fatal(err)
		}
		if r.Backup.Credentials != int64(len(creds)) {
			t.Fatalf("backup holds %d rows, want %d", r.Backup.Credentials, len(creds))
		}
		if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("backup file mode: %v %v", fi.Mode(), err)
		}
		if ok := e.tableExists(t, "nats_user_credentials"); ok {
			t.Fatal("table not dropped")
		}
		equalRows(t, "users after drop", e.rows(t, "users", userNATSCols...), users)

		// Rollback from the backup restores everything exactly.
		if _, err := e.migrator(t, credmigrate.Options{}).Rollback(ctx, credmigrate.RollbackOptions{FromBackup: backup}); err != nil {
			t.Fatal(err)
		}
		equalRows(t, "credentials after rollback", e.rows(t, "nats_user_credentials", legacyCredCols...), creds)
		equalRows(t, "sessions after rollback", e.rows(t, "nats_auth_sessions", "id", "credential_id"), sessionsBefore)
		equalRows(t, "users after rollback", e.rows(t, "users", userNATSCols...), users)
		if e.dialect == "sqlite" {
			if got := e.tableSQL(t, "nats_auth_sessions"); got != sessionsAdopted {
				t.Errorf("nats_auth_sessions definition after rollback:\n%s\nwant\n%s\n(legacy: %s)", got, sessionsAdopted, sessionsSQL)
			}
			if got := e.tableSQL(t, "nats_user_credentials"); got != credsSQL {
				t.Errorf("nats_user_credentials definition after rollback:\n%s\nwant\n%s", got, credsSQL)
			}
		}
		if _, err := e.migrator(t, credmigrate.Options{}).Verify(ctx); err != nil {
			t.Fatal(err)
		}

		// Migrating again changes no user and drops the column again.
		r, err = e.migrator(t, credmigrate.Options{}).Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Copy.Written+r.Verify.Written != 0 || r.Sessions.BackedUp == 0 {
			t.Fatalf("second run: copy %d verify %d sessions %+v", r.Copy.Written, r.Verify.Written, r.Sessions)
		}
		equalRows(t, "users after second run", e.rows(t, "users", userNATSCols...), users)

		// Drop again and roll back from the users columns alone.
		backup2 := filepath.Join(t.TempDir(), "creds2.backup")
		if _, err := e.migrator(t, credmigrate.Options{}).DropTable(ctx, credmigrate.DropOptions{BackupPath: backup2, Confirm: yes}); err != nil {
			t.Fatal(err)
		}
		rr, err := e.migrator(t, credmigrate.Options{}).Rollback(ctx, credmigrate.RollbackOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !rr.Rollback.RoundTripVerified || rr.Rollback.Credentials == 0 {
			t.Fatalf("rollback from users: %+v", rr.Rollback)
		}
		equalRows(t, "users after rollback from users", e.rows(t, "users", userNATSCols...), users)
	})
}

func (e *env) tableSQL(t testing.TB, table string) string {
	t.Helper()
	if e.dialect != "sqlite" {
		return ""
	}
	var s string
	if err := e.db.QueryRow("SELECT sql FROM sqlite_master WHERE name = ?", table).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) tableExists(t testing.TB, table string) bool {
	t.Helper()
	var n int
	q := "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
	if e.dialect == "postgres" {
		q = "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
	}
	if err := e.db.QueryRow(q, table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func (e *env) hasColumn(t testing.TB, table, col string) (bool, error) {
	t.Helper()
	var n int
	q := "SELECT count(*) FROM pragma_table_info(?) WHERE name = ?"
	if e.dialect == "postgres" {
		q = "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
	}
	err := e.db.QueryRow(q, table, col).Scan(&n)
	return n > 0, err
}
