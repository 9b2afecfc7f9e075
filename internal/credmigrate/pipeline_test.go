package credmigrate_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
)

// On PostgreSQL the planned copy runs two batches at once. A batch that
// cannot commit (here: a user row the application holds locked past the
// lock timeout) must not let the batch after it commit first: that one
// rolls back, the failed batch is redone alone once the lock is gone, and
// the checkpoint only ever advances over committed batches, in order.
func TestPipelinedCopyCommitsInOrder(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, legacytest.Postgres(t), legacygen.Options{Users: 60, Seed: 21})
	if _, err := credmigrate.Adopt(ctx, e.db, e.dialect, credmigrate.AdoptOptions{Migrations: migrationsFor(e.dialect), VersionTable: versionTable}); err != nil {
		t.Fatal(err)
	}
	const batch = 5
	// The plan's batches are the user ids that exist and have legacy rows
	// (and those that have rows only), batch at a time; lock a user of the
	// third one.
	uids := e.ids(t, "SELECT DISTINCT user_id FROM nats_user_credentials ORDER BY user_id")
	var ends []int64
	for i := batch - 1; i < len(uids); i += batch {
		ends = append(ends, uids[i])
	}
	if len(uids)%batch != 0 {
		ends = append(ends, uids[len(uids)-1])
	}
	held := uids[2*batch+1]

	lock, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(ctx, "SELECT id FROM users WHERE id = $1 FOR UPDATE", held); err != nil {
		t.Fatal(err)
	}
	released := time.AfterFunc(600*time.Millisecond, func() {
		// By now the third batch has failed at least once; nothing after
		// it may have committed.
		var cp int64
		if err := e.db.QueryRowContext(ctx, "SELECT last_user_id FROM mulchat_credmigrate_checkpoint").Scan(&cp); err != nil {
			t.Error(err)
		}
		if cp >= held {
			t.Errorf("checkpoint at user %d while user %d of an earlier batch was still locked", cp, held)
		}
		lock.Rollback()
	})
	defer released.Stop()
	defer lock.Rollback()

	var mu sync.Mutex
	var seen []int64 // the checkpoint at each committed batch
	hook := func(ctx context.Context, last int64) error {
		var cp int64
		if err := e.db.QueryRowContext(ctx, "SELECT last_user_id FROM mulchat_credmigrate_checkpoint").Scan(&cp); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, last)
		if cp < last {
			t.Errorf("batch up to user %d committed, checkpoint at %d", last, cp)
		}
		return nil
	}
	logs := &logLines{}
	r, err := e.migrator(t, credmigrate.Options{BatchSize: batch, BatchHook: hook, Logger: slog.New(logs),
		LockTimeout: 100 * time.Millisecond}).Run(ctx)
	if err != nil {
		t.Fatalf("run: %v %+v", err, r.Verify)
	}
	if r.Verify.Unverified != 0 || r.Verify.SourceDigest != r.Verify.TargetDigest {
		t.Fatalf("verify: %+v", r.Verify)
	}
	if logs.count("pipelined batch failed") == 0 {
		t.Error("the batch holding the locked user never failed: the test did not exercise the redo")
	}
	if !slices.Equal(seen, ends) {
		t.Errorf("batches committed up to %v, want %v, in order", seen, ends)
	}
	// A rerun writes nothing.
	r, err = e.migrator(t, credmigrate.Options{BatchSize: batch}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Copy.Written != 0 || r.Verify.Written != 0 {
		t.Errorf("rerun wrote %d+%d users", r.Copy.Written, r.Verify.Written)
	}
}
