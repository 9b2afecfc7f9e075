package legacygen_test

import (
	"context"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
	"github.com/mulchat/mulchat/internal/testenv"
)

// BenchmarkGenerate measures generation of MULCHAT_BENCH_LEGACY_USERS users
// (default 10000) on each database.
func BenchmarkGenerate(b *testing.B) {
	n := testenv.PositiveInt("MULCHAT_BENCH_LEGACY_USERS", 10000)
	for _, d := range []string{"sqlite", "postgres"} {
		b.Run(d, func(b *testing.B) {
			for range b.N {
				var db *legacytest.DB
				if d == "sqlite" {
					db = legacytest.SQLite(b)
				} else {
					db = legacytest.Postgres(b)
				}
				start := time.Now()
				if _, err := legacygen.Generate(context.Background(), db.SQL, db.Dialect, legacygen.Options{Users: n, Seed: 1, FastKeys: true}); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(n)/time.Since(start).Seconds(), "users/s")
			}
		})
	}
}
