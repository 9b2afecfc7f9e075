package credmigrate_test

import (
	"context"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/testenv"
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
	n := testenv.PositiveInt("MULCHAT_BENCH_LEGACY_USERS", 20000)
	batch := testenv.PositiveInt("MULCHAT_BENCH_BATCH", 5000)
	for _, dialect := range []string{"sqlite", "postgres"} {
		b.Run(dialect, func(b *testing.B) {
			for range b.N {
				benchOnce(b, dialect, n, batch)
			}
		})
	}
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
	// Each measurement runs on its own copy of the generated database, all
	// made the same way (on SQLite VACUUM INTO, which also compacts the
	// file, so the toolkit must not run on the uncompacted original): the
	// single statement runs before and after the toolkit, and the toolkit is
	// compared with their mean, which cancels a drift of the machine's speed
	// over the run (the same single statement took 29–63 s on one machine in one
	// afternoon).
	before, work, after := legacytest.Clone(b, legacy), legacytest.Clone(b, legacy), legacytest.Clone(b, legacy)
	b.Logf("generated, adopted and copied %d users in %v", n, time.Since(genStart).Round(time.Second))

	// Each measurement starts with the kernel's dirty pages on disk: the
	// copies just made (and each measurement's own writes) would otherwise
	// be written back during the next one (measured on SQLite, with the
	// machine's page cache holding several gigabytes of them: the copy's
	// ratio to the single statement moved between 1.0 and 1.14).
	flushDirtyPages()
	b.StartTimer()
	singleBefore := runSingle(b, before, dialect)
	// The toolkit, with an application writer beside it.
	st, err = sqlstore.Open(ctx, work.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	// The run without the removal of nats_auth_sessions.credential_id, then
	// the removal alone, each with its own longest application wait: on
	// SQLite the removal is a table rebuild under the write lock.
	m, err := credmigrate.New(st.SQL(), dialect, credmigrate.Options{BatchSize: batch, KeepSessionColumn: true})
	if err != nil {
		b.Fatal(err)
	}
	// The application writer has its own connections, as the application
	// would: it must not share the migration's connection settings.
	app, err := sqlstore.Open(ctx, work.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer app.Close()
	b.StopTimer()
	flushDirtyPages()
	b.StartTimer()
	stopProfile := startProfile(b, dialect)
	runProbe := startProbe(ctx, app, n)
	t1 := time.Now()
	rep, err := m.Run(ctx)
	runDur := time.Since(t1)
	runWait := runProbe.stop()
	if err != nil {
		b.Fatal(err)
	}
	dropProbe := startProbe(ctx, app, n)
	t2 := time.Now()
	sess, err := m.DropSessionCredentialColumn(ctx)
	dropDur := time.Since(t2)
	dropWait := dropProbe.stop()
	stopProfile()
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	flushDirtyPages()
	b.StartTimer()
	singleAfter := runSingle(b, after, dialect)
	b.StopTimer()
	singleDur := (singleBefore + singleAfter) / 2
	total := runDur + dropDur
	b.ReportMetric(singleDur.Seconds(), "single_s")
	b.ReportMetric(singleBefore.Seconds(), "single_before_s")
	b.ReportMetric(singleAfter.Seconds(), "single_after_s")
	b.ReportMetric(total.Seconds(), "toolkit_s")
	b.ReportMetric(total.Seconds()/singleDur.Seconds(), "ratio")
	b.ReportMetric(runDur.Seconds()/singleDur.Seconds(), "ratio_without_session_drop")
	b.ReportMetric(float64(runWait.max.Milliseconds()), "max_app_wait_ms")
	b.ReportMetric(float64(dropWait.max.Milliseconds()), "max_app_wait_session_drop_ms")
	b.Logf("%s: %d users, %d legacy rows, %d sessions; single UPDATE…FROM %v (mean of %v before and %v after); nats-credentials %v (%.2f×) = run %v (%.2f×: %v) + credential_id removal %v",
		dialect, n, rep.Precheck.LegacyRows, sess.BackedUp, singleDur.Round(time.Millisecond), singleBefore.Round(time.Millisecond),
		singleAfter.Round(time.Millisecond), total.Round(time.Millisecond),
		total.Seconds()/singleDur.Seconds(), runDur.Round(time.Millisecond), runDur.Seconds()/singleDur.Seconds(), rep.Timings, dropDur.Round(time.Millisecond))
	b.Logf("application writer: during the run %d writes, longest wait %v, %d failed %v; during the removal %d writes, longest wait %v, %d failed %v",
		runWait.n, runWait.max.Round(time.Millisecond), runWait.failures, runWait.first, dropWait.n, dropWait.max.Round(time.Millisecond), dropWait.failures, dropWait.first)
}

// runSingle runs the single UPDATE … FROM on db and returns its duration.
func runSingle(b *testing.B, db *legacytest.DB, dialect string) time.Duration {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, db.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	t0 := time.Now()
	if _, err := st.SQL().ExecContext(ctx, singleUpdate[dialect]); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}

// startProfile writes a CPU profile of the toolkit's run (not of the
// generation or the single statement) to
// $MULCHAT_BENCH_CPUPROFILE-<dialect>.prof when that variable is set.
func startProfile(b *testing.B, dialect string) (stop func()) {
	prefix := os.Getenv("MULCHAT_BENCH_CPUPROFILE")
	if prefix == "" {
		return func() {}
	}
	f, err := os.Create(prefix + "-" + dialect + ".prof")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// probe is an application writer: it updates a random user every 5 ms and
// records its longest wait and the writes that gave up (SQLite's busy
// timeout), which are what it measures, not test failures.
type probe struct {
	stopc    chan struct{}
	done     chan struct{}
	max      time.Duration
	n        int
	failures int
	first    error
}

func startProbe(ctx context.Context, st *sqlstore.DB, users int) *probe {
	p := &probe{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		r := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-p.stopc:
				return
			case <-time.After(5 * time.Millisecond):
			}
			id := 1 + r.Int64N(int64(users))
			s := time.Now()
			if err := st.UpdateUserActive(ctx, id, true); err != nil && !isNotFound(err) {
				p.failures++
				if p.first == nil {
					p.first = err
				}
			}
			p.max = max(p.max, time.Since(s))
			p.n++
		}
	}()
	return p
}

func (p *probe) stop() *probe {
	close(p.stopc)
	<-p.done
	return p
}
