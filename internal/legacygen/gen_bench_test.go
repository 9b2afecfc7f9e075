package legacygen_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
)

// BenchmarkGenerate measures generation of MULCHAT_BENCH_LEGACY_USERS users
// (default 10000) on each database.
func BenchmarkGenerate(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("MULCHAT_BENCH_LEGACY_USERS")); err == nil && v > 0 {
		n = v
	}
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
