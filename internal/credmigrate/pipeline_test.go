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
	e := newEnv(t, legacytest.Postgres(t), legacygen.Options{Users: 60, Seed: 21, PlaintextPasswordRate: -1})
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
	// A user of the third batch that exists (legacy rows of deleted users
	// are in the plan too, but no users row is written for them).
	var held int64
	for _, id := range uids[2*batch : 3*batch] {
		if len(e.ids(t, "SELECT id FROM users WHERE id = ?", id)) == 1 {
			held = id
			break
		}
	}
	if held == 0 {
		t.Fatal("the third batch has no existing user")
	}

	lock, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.ExecContext(ctx, "SELECT id FROM users WHERE id = $1 FOR UPDATE", held); err != nil {
		t.Fatal(err)
	}
	// The checkpoint, or -1 while there is none (before the copy, after
	// the run).
	readCheckpoint := func() int64 {
		cp := int64(-1)
		e.db.QueryRowContext(ctx, "SELECT last_user_id FROM mulchat_credmigrate_checkpoint").Scan(&cp)
		return cp
	}
	logs := &logLines{}
	// Once the driver says the third batch failed (the batches after it
	// have ended by then), nothing past the second may have committed;
	// then the lock goes and the redo can finish. Meanwhile the checkpoint
	// never moves back.
	watched := make(chan struct{})
	stop := make(chan struct{})
	stopWatching := sync.OnceFunc(func() { close(stop); <-watched })
	defer stopWatching()
	go func() {
		defer close(watched)
		var prev int64
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			cp := readCheckpoint()
			if cp < 0 {
				continue
			}
			if cp < prev {
				t.Errorf("checkpoint moved back from %d to %d", prev, cp)
			}
			prev = cp
			if logs.count("pipelined batch failed") > 0 && lock != nil {
				if cp >= held {
					t.Errorf("checkpoint at user %d while user %d of an earlier batch was still locked", cp, held)
				}
				lock.Rollback()
				lock = nil
			}
		}
	}()

	var mu sync.Mutex
	var seen []int64 // the last user id of each committed batch, as the hook saw them
	hook := func(ctx context.Context, last int64) error {
		cp := readCheckpoint()
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, last)
		if cp < last {
			t.Errorf("batch up to user %d committed, checkpoint at %d", last, cp)
		}
		return nil
	}
	r, err := e.migrator(t, credmigrate.Options{BatchSize: batch, BatchHook: hook, Logger: slog.New(logs),
		LockTimeout: 100 * time.Millisecond}).Run(ctx)
	stopWatching()
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

// Two batches in flight need no more than one connection between them: the
// second begins only after the first has, so the first never waits for a
// connection the second holds while the second waits for it. (The run holds
// one more connection for its lock.)
func TestPipelinedCopySmallPool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t, legacytest.Postgres(t), legacygen.Options{Users: 200, Seed: 22})
	if _, err := credmigrate.Adopt(ctx, e.db, e.dialect, credmigrate.AdoptOptions{Migrations: migrationsFor(e.dialect), VersionTable: versionTable}); err != nil {
		t.Fatal(err)
	}
	e.db.SetMaxOpenConns(2)
	r, err := e.migrator(t, credmigrate.Options{BatchSize: 3}).Run(ctx)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if r.Verify.Unverified != 0 || r.Verify.SourceDigest != r.Verify.TargetDigest {
		t.Fatalf("verify: %+v", r.Verify)
	}
}
