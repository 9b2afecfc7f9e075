package credmigrate_test

import (
	"context"
	"errors"
	"github.com/mulchat/mulchat/internal/testenv"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat"

	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
)

// waitFor polls until the log says want (the other goroutine is blocked on
// the lock by then), failing after a generous bound.
func waitFor(t *testing.T, logs *testenv.LogBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", want, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// migratedState is what nats-credentials changes, with rehashed passwords
// reduced to their scheme (their salts are random).
func migratedState(t *testing.T, e *env) []string {
	t.Helper()
	var out []string
	out = append(out, e.rows(t, "users", append(userNATSCols, "must_rotate_password",
		"CASE WHEN hashed_password LIKE '$argon2id$%' THEN 'argon2id' ELSE hashed_password END")...)...)
	out = append(out, e.rows(t, "nats_user_credentials", legacyCredCols...)...)
	out = append(out, e.rows(t, "mulchat_credmigrate_session_credentials", "session_id", "credential_id")...)
	out = append(out, e.rows(t, "mulchat_credmigrate_checkpoint", "name", "phase")...)
	if ok, _ := e.hasColumn(t, "nats_auth_sessions", "credential_id"); ok {
		out = append(out, "credential_id still there")
	}
	return out
}

// Two nats-credentials runs at once on one database: the second waits for
// the first (or, told not to wait, fails clearly), both succeed, and the
// result is exactly that of a single run.
func TestConcurrentRunsSerialize(t *testing.T) {
	legacytest.ForEach(t, func(t *testing.T, db *legacytest.DB) {
		ctx := context.Background()
		opts := legacygen.Options{Users: 200, Seed: 5, UserNATSColumns: someNATSColumns, PlaintextPasswordRate: 0.05}
		ref := newEnv(t, db, opts)
		ref.adopt(t)
		other := legacytest.SQLite
		if db.Dialect == "postgres" {
			other = legacytest.Postgres
		}
		e := newEnv(t, other(t), opts) // the same seed gives the same database
		e.adopt(t)
		if _, err := ref.migrator(t, credmigrate.Options{}).Run(ctx); err != nil {
			t.Fatal(err)
		}
		want := migratedState(t, ref)

		// The first run pauses after its first committed batch, holding the
		// lock, until the second is seen waiting.
		paused, resume := make(chan struct{}), make(chan struct{})
		var once sync.Once
		first := e.migrator(t, credmigrate.Options{BatchHook: func(context.Context, int64) error {
			once.Do(func() { close(paused); <-resume })
			return nil
		}})
		errs := make(chan error, 2)
		go func() { _, err := first.Run(ctx); errs <- err }()
		<-paused

		_, err := e.migrator(t, credmigrate.Options{LockWait: -1}).Run(ctx)
		if !errors.Is(err, credmigrate.ErrLocked) || mulchat.ErrorCode(err) != mulchat.ECONFLICT {
			t.Fatalf("a run told not to wait: %v, want ErrLocked", err)
		}
		_, err = e.migrator(t, credmigrate.Options{LockWait: 50 * time.Millisecond}).Run(ctx)
		if !errors.Is(err, credmigrate.ErrLocked) || !strings.Contains(err.Error(), "gave up after waiting") {
			t.Fatalf("a run with a short wait: %v, want ErrLocked after waiting", err)
		}

		logs := &testenv.LogBuffer{}
		second := e.migrator(t, credmigrate.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
		go func() { _, err := second.Run(ctx); errs <- err }()
		waitFor(t, logs, "another credential migration command is working on this database")
		close(resume)
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("concurrent run: %v", err)
			}
		}
		equalRows(t, "state after two concurrent runs", migratedState(t, e), want)
	})
}

// A statement left running by a killed run on PostgreSQL (its backend goes
// on after the client died, and may commit) must not race with the rerun:
// here an "orphaned" transaction has created the checkpoint table and not
// yet committed; the rerun waits for it instead of failing on
// pg_type_typname_nsp_index.
func TestRerunWaitsForOrphanedBackend(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, legacytest.Postgres(t), legacygen.Options{Users: 60, Seed: 6, UserNATSColumns: someNATSColumns})
	e.adopt(t)
	orphan, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer orphan.Rollback()
	// What every transaction of the migration starts with (the key is
	// lock.go's workLockKey), then the DDL a killed run was executing.
	if _, err := orphan.Exec("SELECT pg_advisory_xact_lock_shared(7887329496618071042)"); err != nil {
		t.Fatal(err)
	}
	if _, err := orphan.Exec(`CREATE TABLE mulchat_credmigrate_checkpoint (name TEXT PRIMARY KEY, phase TEXT NOT NULL,
	last_user_id BIGINT NOT NULL, started_at TEXT NOT NULL, updated_at TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	errs := make(chan error, 1)
	go func() {
		_, err := e.migrator(t, credmigrate.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))}).Run(ctx)
		errs <- err
	}()
	waitFor(t, logs, "statements of an interrupted run")
	if err := orphan.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("rerun after an orphaned backend: %v", err)
	}
	if _, err := e.migrator(t, credmigrate.Options{}).Verify(ctx); err != nil {
		t.Fatal(err)
	}
}
