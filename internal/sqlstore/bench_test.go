package sqlstore_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// forEachDBBench runs fn as the sub-benchmarks "sqlite" and "postgres", each
// on a fresh migrated database with serve's connection pool.
func forEachDBBench(b *testing.B, fn func(b *testing.B, db *sqlstore.DB)) {
	b.Run("sqlite", func(b *testing.B) { fn(b, sqltest.ServePool(sqltest.OpenSQLite(b))) })
	b.Run("postgres", func(b *testing.B) { fn(b, sqltest.ServePool(sqltest.OpenPostgres(b))) })
}

func BenchmarkCreateUser(b *testing.B) {
	forEachDBBench(b, func(b *testing.B, db *sqlstore.DB) {
		ctx := context.Background()
		i := 0
		for b.Loop() {
			i++
			u := &mulchat.User{Username: "user" + strconv.Itoa(i), HashedPassword: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", IsActive: true}
			if err := db.CreateUser(ctx, u); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkUserByUsername(b *testing.B) {
	forEachDBBench(b, func(b *testing.B, db *sqlstore.DB) {
		ctx := context.Background()
		const n = 1000
		for i := range n {
			u := &mulchat.User{Username: "user" + strconv.Itoa(i), HashedPassword: "h", IsActive: true}
			if err := db.CreateUser(ctx, u); err != nil {
				b.Fatal(err)
			}
		}
		i := 0
		for b.Loop() {
			i++
			if _, err := db.UserByUsername(ctx, "user"+strconv.Itoa(i%n)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkUserByUsernameParallel measures lookups from many goroutines, where
// SQLite's WAL readers and PostgreSQL's pool run side by side.
func BenchmarkUserByUsernameParallel(b *testing.B) {
	forEachDBBench(b, func(b *testing.B, db *sqlstore.DB) {
		ctx := context.Background()
		const n = 1000
		for i := range n {
			u := &mulchat.User{Username: "user" + strconv.Itoa(i), HashedPassword: "h", IsActive: true}
			if err := db.CreateUser(ctx, u); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if _, err := db.UserByUsername(ctx, "user"+strconv.Itoa(i%n)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkRefreshCredentialParallel: concurrent credential refreshes of
// distinct users (the write of an issuance that revokes nothing). On SQLite
// the writers queue for the one write lock.
func BenchmarkRefreshCredentialParallel(b *testing.B) {
	forEachDBBench(b, func(b *testing.B, db *sqlstore.DB) {
		ctx := context.Background()
		acc := &mulchat.NATSAccount{Name: "chat", PublicKey: "ACHAT", JWT: "x"}
		if err := db.CreateNATSAccount(ctx, acc); err != nil {
			b.Fatal(err)
		}
		const n = 64
		users := make(chan mulchat.NATSCredential, n)
		ids := make(map[string]int64, n)
		for i := range n {
			u := &mulchat.User{Username: "user" + strconv.Itoa(i), HashedPassword: "h", IsActive: true}
			if err := db.CreateUser(ctx, u); err != nil {
				b.Fatal(err)
			}
			c := mulchat.NATSCredential{JWT: "jwt", PublicKey: "UKEY" + strconv.Itoa(i), AccountID: acc.ID, AccountPublicKey: acc.PublicKey}
			if err := db.UpdateUserNATSCredential(ctx, u.ID, c); err != nil {
				b.Fatal(err)
			}
			ids[c.PublicKey] = u.ID
			users <- c
		}
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c := <-users
			defer func() { users <- c }()
			for pb.Next() {
				if ok, err := db.SetUserNATSCredentialIfNothingToRevoke(ctx, ids[c.PublicKey], c); err != nil || !ok {
					b.Errorf("refresh: %v %v", ok, err)
					return
				}
			}
		})
	})
}

// BenchmarkRefreshWrite: one user's same-key refresh written sequentially,
// durably (SetUserNATSCredentialIfNothingToRevoke, which also writes the
// expiry) and as a covered refresh (RefreshUserNATSJWT, which on PostgreSQL
// does not wait for the WAL flush). docs/performance.md.
func BenchmarkRefreshWrite(b *testing.B) {
	forEachDBBench(b, func(b *testing.B, db *sqlstore.DB) {
		ctx := context.Background()
		acc := &mulchat.NATSAccount{Name: "chat", PublicKey: "ACHAT", JWT: "x"}
		if err := db.CreateNATSAccount(ctx, acc); err != nil {
			b.Fatal(err)
		}
		u := &mulchat.User{Username: "alice", HashedPassword: "h", IsActive: true}
		if err := db.CreateUser(ctx, u); err != nil {
			b.Fatal(err)
		}
		exp := time.Now().Add(24 * time.Hour).Truncate(time.Second)
		c := mulchat.NATSCredential{JWT: strings.Repeat("j", 600), PublicKey: "UKEY", AccountID: acc.ID,
			AccountPublicKey: acc.PublicKey, ExpiresAt: &exp}
		if err := db.UpdateUserNATSCredential(ctx, u.ID, c); err != nil {
			b.Fatal(err)
		}
		b.Run("durable", func(b *testing.B) {
			for b.Loop() {
				if ok, err := db.SetUserNATSCredentialIfNothingToRevoke(ctx, u.ID, c); err != nil || !ok {
					b.Fatalf("refresh: %v %v", ok, err)
				}
			}
		})
		b.Run("covered", func(b *testing.B) {
			for b.Loop() {
				if ok, err := db.RefreshUserNATSJWT(ctx, u.ID, c); err != nil || !ok {
					b.Fatalf("refresh: %v %v", ok, err)
				}
			}
		})
	})
}
