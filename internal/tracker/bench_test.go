package tracker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// Connect benchmarks: b.N connections opened by 8 goroutines and held until
// the end (so -benchtime 10000x holds 10,000 connections at once).
//
//	go test -run '^$' -bench Connect -benchtime 2000x ./internal/tracker/
//
// BenchmarkConnectMulchat uses users' credentials from mulchat's authority
// with the tracker running, and also reports how fast session rows appear
// (rows/s: until every connection has its row). BenchmarkConnectRawOperator
// connects on the same kind of server with the same kind of user JWTs (same
// account, signing key, permissions and size) and no tracker: operator mode
// without mulchat, the tracker being the only difference.

const connectors = 8

type credential struct{ jwt, seed string }

func benchConnect(b *testing.B, st *rttest.Stack, creds []credential, rows func() int) {
	b.Helper()
	conns := make([]*nats.Conn, b.N)
	defer func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for g := 0; g < connectors; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < b.N; i += connectors {
				c := creds[i%len(creds)]
				nc, err := nats.Connect(st.URL, nats.UserJWTAndSeed(c.jwt, c.seed), nats.Name(fmt.Sprint("bench-", i)),
					nats.NoReconnect())
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				conns[i] = nc
			}
		}()
	}
	wg.Wait()
	connected := time.Since(start)
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/connected.Seconds(), "connects/s")
	if rows != nil {
		deadline := time.Now().Add(2 * time.Minute)
		for rows() < b.N {
			if time.Now().After(deadline) {
				b.Fatalf("%d session rows for %d connections", rows(), b.N)
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
	}
	b.StopTimer()
}

func BenchmarkConnectMulchat(b *testing.B) {
	st := rttest.NewStack(b, sqltest.OpenSQLite(b))
	tr, err := New(Config{Store: st.Store, SysConn: st.ServiceConn(b, "tracker", true),
		ChatAccount: st.Authority.ChatAccountPublicKey(), ReconcileInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	var creds []credential
	for i := 0; i < 50; i++ {
		u := st.NewUser(b, fmt.Sprint("bench", i), 0)
		creds = append(creds, credential{u.Cred.JWT, string(u.Cred.Seed)})
	}
	ctx := context.Background()
	benchConnect(b, st, creds, func() int {
		s, err := st.Store.ListActiveAuthSessions(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return len(s)
	})
}

func BenchmarkConnectRawOperator(b *testing.B) {
	st := rttest.NewStack(b, sqltest.OpenSQLite(b))
	var creds []credential
	for i := 0; i < 50; i++ {
		u := st.NewUser(b, fmt.Sprint("bench", i), 0)
		creds = append(creds, credential{u.Cred.JWT, string(u.Cred.Seed)})
	}
	benchConnect(b, st, creds, nil)
}
