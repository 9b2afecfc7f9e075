package credmigrate

import (
	"context"
	"os"
	"testing"

	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
	"github.com/mulchat/mulchat/internal/sqlstore"
)

func BenchmarkZZPrecheck(b *testing.B) {
	ctx := context.Background()
	path := "/tmp/pc1m.db"
	if _, err := os.Stat(path); err != nil {
		db, err := legacytest.OpenSQLite(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := legacygen.Generate(ctx, db, "sqlite", legacygen.Options{Users: 1000000, Seed: 1, FastKeys: true, PlaintextPasswordRate: -1, PreexistingRate: -1}); err != nil {
			b.Fatal(err)
		}
		db.Close()
		st, err := sqlstore.Open(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Adopt(ctx, st.SQL(), "sqlite", AdoptOptions{Migrations: sqlstore.Migrations("sqlite"), VersionTable: sqlstore.GooseTable}); err != nil {
			b.Fatal(err)
		}
		st.Close()
	}
	st, err := sqlstore.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	m, err := New(st.SQL(), "sqlite", Options{BatchSize: 10000})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, _, err := m.precheck(ctx, true); err != nil {
			b.Fatal(err)
		}
	}
}
