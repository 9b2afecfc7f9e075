package credmigrate_test

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
	"github.com/mulchat/mulchat/internal/sqlstore"
)

// singleUpdate is the naive migration the toolkit is measured against: one
// UPDATE … FROM taking each user's newest row (by created_at, then id).
var singleUpdate = map[string]string{
	"sqlite": `UPDATE users SET nats_jwt = c.jwt, nats_seed_hash = c.seed_hash, nats_public_key = c.public_key,
	nats_account_id = c.account_id, nats_account_public_key = c.account_public_key,
	nats_expires_at = c.expires_at, nats_expired_at = c.expired_at
FROM (SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY created_at DESC, id DESC) AS rn FROM nats_user_credentials) AS c
WHERE c.user_id = users.id AND c.rn = 1`,
	"postgres": `UPDATE users AS u SET nats_jwt = c.jwt, nats_seed_hash = c.seed_hash, nats_public_key = c.public_key,
	nats_account_id = c.account_id, nats_account_public_key = c.account_public_key,
	nats_expires_at = c.expires_at, nats_expired_at = c.expired_at
FROM (SELECT DISTINCT ON (user_id) * FROM nats_user_credentials ORDER BY user_id, created_at DESC, id DESC) AS c
WHERE u.id = c.user_id`,
}

// BenchmarkMigration runs, on the same generated data
// (MULCHAT_BENCH_LEGACY_USERS users, default 20000; MULCHAT_BENCH_BATCH
// users per batch, default 5000), the single UPDATE … FROM and the whole
// nats-credentials run (pre-check, checkpointed batches, catch-up and
// field-by-field verification, seed scrub, credential_id backup and drop),
// while an application writer updates random users and records its longest
// wait. Run with -benchtime 1x; see BENCHMARKS.md.
func BenchmarkMigration(b *testing.B) {
	n := envInt("MULCHAT_BENCH_LEGACY_USERS", 20000)
	batch := envInt("MULCHAT_BENCH_BATCH", 5000)
	for _, dialect := range []string{"sqlite", "postgres"} {
		b.Run(dialect, func(b *testing.B) {
			for range b.N {
				benchOnce(b, dialect, n, batch)
			}
		})
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchOnce(b *testing.B, dialect string, n, batch int) {
	ctx := context.Background()
	b.StopTimer()
	var legacy *legacytest.DB
	if dialect == "sqlite" {
		legacy = legacytest.SQLite(b)
	} else {
		legacy = legacytest.Postgres(b)
	}
	genStart := time.Now()
	if _, err := legacygen.Generate(ctx, legacy.SQL, dialect, legacygen.Options{Users: n, Seed: 1, FastKeys: true,
		PlaintextPasswordRate: -1, PreexistingRate: -1}); err != nil {
		b.Fatal(err)
	}
	st, err := sqlstore.Open(ctx, legacy.URL)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := credmigrate.Adopt(ctx, st.SQL(), dialect, credmigrate.AdoptOptions{Migrations: sqlstore.Migrations(dialect), VersionTable: sqlstore.GooseTable}); err != nil {
		b.Fatal(err)
	}
	st.Close()
	twin := legacytest.Clone(b, legacy)
	b.Logf("generated and adopted %d users in %v", n, time.Since(genStart).Round(time.Second))

	// The single statement.
	single, err := sqlstore.Open(ctx, twin.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer single.Close()
	b.StartTimer()
	t0 := time.Now()
	if _, err := single.SQL().ExecContext(ctx, singleUpdate[dialect]); err != nil {
		b.Fatal(err)
	}
	singleDur := time.Since(t0)

	// The toolkit, with an application writer beside it.
	st, err = sqlstore.Open(ctx, legacy.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	m, err := credmigrate.New(st.SQL(), dialect, credmigrate.Options{BatchSize: batch})
	if err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var maxWait time.Duration
	var probes, failures int
	var firstFailure error
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			id := 1 + r.Int64N(int64(n))
			s := time.Now()
			if err := st.UpdateUserActive(ctx, id, true); err != nil && !isNotFound(err) {
				// A write that gave up (SQLite's busy timeout) is recorded,
				// not fatal: it is what this probe measures.
				failures++
				if firstFailure == nil {
					firstFailure = err
				}
			}
			maxWait = max(maxWait, time.Since(s))
			probes++
		}
	}()
	t1 := time.Now()
	rep, err := m.Run(ctx)
	runDur := time.Since(t1)
	close(stop)
	wg.Wait()
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(singleDur.Seconds(), "single_s")
	b.ReportMetric(runDur.Seconds(), "toolkit_s")
	b.ReportMetric(runDur.Seconds()/singleDur.Seconds(), "ratio")
	b.ReportMetric(float64(maxWait.Milliseconds()), "max_app_wait_ms")
	b.ReportMetric(float64(failures), "app_failures")
	if firstFailure != nil {
		b.Logf("application writes that failed: %d (first: %v)", failures, firstFailure)
	}
	b.Logf("%s: %d users, %d legacy rows; single UPDATE…FROM %v; nats-credentials %v (%.2f×): %v; app writer: %d writes, longest wait %v",
		dialect, n, rep.Precheck.LegacyRows, singleDur.Round(time.Millisecond), runDur.Round(time.Millisecond),
		runDur.Seconds()/singleDur.Seconds(), rep.Timings, probes, maxWait.Round(time.Millisecond))
}
