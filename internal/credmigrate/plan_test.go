package credmigrate_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
)

// logLines records log messages (the plan's fallback is logged at debug
// level).
type logLines struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }
func (l *logLines) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, sub) {
			n++
		}
	}
	return n
}

// The copy of an uninterrupted run carries out the pre-check's plan without
// reading the legacy rows again. Legacy rows written after the pre-check,
// before their batch runs, must neither be lost nor make the run write a raw
// seed or report a wrong digest: the batch checks what it relies on and
// falls back to fresh reads, and the catch-up redoes what changed.
func TestPlanGoesStale(t *testing.T) {
	legacytest.ForEach(t, func(t *testing.T, db *legacytest.DB) {
		ctx := context.Background()
		e := newEnv(t, db, legacygen.Options{Users: 200, Seed: 9, PreexistingRate: -1, BadJWTRate: -1, SubjectMismatchRate: -1, DeletedUserRate: -1})
		e.adopt(t)
		q := e.placeholders
		// Users with exactly one legacy row, after the first batch (5
		// users), with and without a raw seed.
		pick := func(raw bool) []int64 {
			cond := "(seed_hash IS NULL OR seed_hash NOT LIKE 'S%')"
			if raw {
				cond = "seed_hash LIKE 'SU%'"
			}
			ids := e.ids(t, "SELECT c.user_id FROM nats_user_credentials c JOIN users u ON u.id = c.user_id WHERE "+cond+
				" AND (SELECT count(*) FROM nats_user_credentials d WHERE d.user_id = c.user_id) = 1 ORDER BY c.user_id")
			if len(ids) < 4 {
				t.Fatalf("only %d users with one row (raw seed %v)", len(ids), raw)
			}
			return ids[len(ids)-3:]
		}
		plain, seeded := pick(false), pick(true)
		gone, reseeded, rejwt := plain[0], plain[1], plain[2]
		seedChanged := seeded[0]
		now := time.Now().UTC().Truncate(time.Second)
		newKey, newJWT := issue(t, e.res, now)
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		rawSeed, _ := kp.Seed()
		kp2, _ := nkeys.CreateUser()
		rawSeed2, _ := kp2.Seed()
		calls := 0
		hook := func(ctx context.Context, last int64) error {
			// No committed batch leaves a raw seed in users.
			var raw int
			if err := e.db.QueryRowContext(ctx, "SELECT count(*) FROM users WHERE nats_seed_hash LIKE 'S%'").Scan(&raw); err != nil || raw != 0 {
				t.Errorf("after the batch ending at user %d: %d raw seeds in users (%v)", last, raw, err)
			}
			if calls++; calls != 1 {
				return nil
			}
			if last >= gone {
				t.Fatalf("first batch ended at %d, after the users the test changes", last)
			}
			for _, s := range []struct {
				stmt string
				args []any
			}{
				{"UPDATE nats_auth_sessions SET credential_id = NULL WHERE credential_id IN (SELECT id FROM nats_user_credentials WHERE user_id = ?)", []any{gone}},
				{"DELETE FROM nats_user_credentials WHERE user_id = ?", []any{gone}},
				{"UPDATE nats_user_credentials SET seed_hash = ? WHERE user_id = ?", []any{string(rawSeed), reseeded}},
				{"UPDATE nats_user_credentials SET jwt = ?, public_key = ? WHERE user_id = ?", []any{newJWT, newKey, rejwt}},
				{"UPDATE nats_user_credentials SET seed_hash = ? WHERE user_id = ?", []any{string(rawSeed2), seedChanged}},
			} {
				if _, err := e.db.ExecContext(ctx, q(s.stmt), s.args...); err != nil {
					t.Fatal(err)
				}
			}
			return nil
		}
		logs := &logLines{}
		r, err := e.migrator(t, credmigrate.Options{BatchSize: 5, BatchHook: hook, Logger: slog.New(logs)}).Run(ctx)
		if err != nil {
			t.Fatalf("run: %v %+v", err, r.Verify)
		}
		if r.Verify.Unverified != 0 || r.Verify.SourceDigest != r.Verify.TargetDigest {
			t.Fatalf("verify: %+v", r.Verify)
		}
		// The capture recorded the four users changed, not the run's own
		// seed scrubs (which would redo every batch holding a seed).
		if !slices.Contains(r.Messages, "catch-up: 4 users' legacy rows changed during the copy; their batches were redone") {
			t.Errorf("catch-up: %q", r.Messages)
		}
		if logs.count("plan is out of date") == 0 {
			t.Error("no batch fell back from its plan (a changed seed must make it)")
		}
		// The run's digests are those of the data as it ended.
		vr, err := e.migrator(t, credmigrate.Options{}).Verify(ctx)
		if err != nil {
			t.Fatalf("verify afterwards: %v %+v", err, vr.Verify.Mismatches)
		}
		if vr.Verify.SourceDigest != r.Verify.SourceDigest || vr.Verify.DigestUsers != r.Verify.DigestUsers {
			t.Errorf("run's digest %s (%d users), verify's %s (%d users)", r.Verify.SourceDigest, r.Verify.DigestUsers, vr.Verify.SourceDigest, vr.Verify.DigestUsers)
		}
		hash := func(s []byte) string { h := sha256.Sum256(s); return hex.EncodeToString(h[:]) }
		for _, c := range []struct {
			id         int64
			key, seed  string
			emptyCreds bool
		}{
			{id: gone, emptyCreds: true},
			{id: reseeded, seed: hash(rawSeed)},
			{id: rejwt, key: newKey},
			{id: seedChanged, seed: hash(rawSeed2)},
		} {
			u, err := e.store.UserByID(ctx, c.id)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.emptyCreds && u.NATS.PublicKey != "":
				t.Errorf("user %d, whose legacy rows were deleted before its batch, holds %s", c.id, u.NATS.PublicKey)
			case c.key != "" && u.NATS.PublicKey != c.key:
				t.Errorf("user %d holds key %s, want the row's new %s", c.id, u.NATS.PublicKey, c.key)
			}
			if c.seed != "" {
				var got string
				if err := e.db.QueryRow(q("SELECT nats_seed_hash FROM users WHERE id = ?"), c.id).Scan(&got); err != nil || got != c.seed {
					t.Errorf("user %d: nats_seed_hash %q (%v), want the new seed's hash", c.id, got, err)
				}
			}
		}
		var raw int
		if err := e.db.QueryRow("SELECT (SELECT count(*) FROM nats_user_credentials WHERE seed_hash LIKE 'S%') + (SELECT count(*) FROM users WHERE nats_seed_hash LIKE 'S%')").Scan(&raw); err != nil || raw != 0 {
			t.Errorf("%d raw seeds left (%v)", raw, err)
		}
	})
}
