package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/httpapi"
	"github.com/mulchat/mulchat/internal/password"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
)

// The benchmarks of issue 2 (figures in BENCHMARKS.md): credential issuance
// end to end over HTTP next to a raw jwt.UserClaims.Encode, and login next to
// one argon2id hash, on SQLite and PostgreSQL.
//
//	go test -run '^$' -bench . -benchtime 3s ./internal/httpapi/

func forEachDB(b *testing.B, fn func(b *testing.B, db *sqlstore.DB)) {
	b.Run("sqlite", func(b *testing.B) { fn(b, sqltest.ServePool(sqltest.OpenSQLite(b))) })
	b.Run("postgres", func(b *testing.B) { fn(b, sqltest.ServePool(sqltest.OpenPostgres(b))) })
}

func noLimit(c *httpapi.Config) {
	c.LoginRate = httpapi.LoginRate{PerUsername: -1, PerAddress: -1, RegisterPerAddress: -1}
	c.CredentialRate = httpapi.CredentialRate{PerUser: -1}
}

// BenchmarkIssueCredentialHTTP: POST /api/v1/me/credentials with the
// client's own public key (the recommended flow; re-issuing the current key,
// as a client refreshing its JWT does).
func BenchmarkIssueCredentialHTTP(b *testing.B) {
	forEachDB(b, func(b *testing.B, db *sqlstore.DB) {
		e := newEnvWithLogger(b, db, nil, noLimit)
		token, _ := e.register(b, "alice")
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		body := map[string]any{"public_key": pub}
		for b.Loop() {
			if r := e.do(b, "POST", "/api/v1/me/credentials", token, body); r.status != 201 {
				b.Fatalf("issue: %d %s", r.status, r.raw)
			}
		}
	})
}

// BenchmarkIssueGeneratedCredentialHTTP: POST /api/v1/me/credentials with a
// server-generated key pair: each issue also revokes the previous key in the
// account JWT (the worst case).
func BenchmarkIssueGeneratedCredentialHTTP(b *testing.B) {
	forEachDB(b, func(b *testing.B, db *sqlstore.DB) {
		e := newEnvWithLogger(b, db, nil, noLimit)
		token, _ := e.register(b, "alice")
		for b.Loop() {
			if r := e.do(b, "POST", "/api/v1/me/credentials", token, nil); r.status != 201 {
				b.Fatalf("issue: %d %s", r.status, r.raw)
			}
		}
	})
}

// BenchmarkUserClaimsEncode is the raw cost of signing a user JWT with the
// permission set mulchat uses, the baseline for the issuance figures.
func BenchmarkUserClaimsEncode(b *testing.B) {
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	signer, _ := nkeys.CreateAccount()
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	for b.Loop() {
		if _, err := rawUserClaims(pub, accountPub, time.Now()).Encode(signer); err != nil {
			b.Fatal(err)
		}
	}
}

// rawUserClaims are the claims the authority signs for a user (name, issuer
// account, the constant permission set, limits, 24 h expiry): the raw
// baseline of every issuance benchmark encodes exactly these.
func rawUserClaims(pub, accountPub string, now time.Time) *jwt.UserClaims {
	uc := jwt.NewUserClaims(pub)
	uc.Name = "alice"
	uc.IssuerAccount = accountPub
	uc.Expires = now.Add(24 * time.Hour).Unix()
	uc.Pub.Allow.Add("chat.send.*.1", "chat.api.1.>")
	uc.Sub.Allow.Add("chat.user.1.>", "_INBOX.1.>")
	uc.Limits.Payload = 64 * 1024
	uc.Limits.Subs = 100
	return uc
}

// BenchmarkLoginHTTP: POST /api/v1/login with the right password (the
// limiter off), one argon2id verification plus a token insert.
func BenchmarkLoginHTTP(b *testing.B) {
	forEachDB(b, func(b *testing.B, db *sqlstore.DB) {
		e := newEnvWithLogger(b, db, nil, noLimit)
		e.register(b, "alice")
		body := map[string]any{"username": "alice", "password": testPassword}
		for b.Loop() {
			if r := e.do(b, "POST", "/api/v1/login", "", body); r.status != 200 {
				b.Fatalf("login: %d %s", r.status, r.raw)
			}
		}
	})
}

// BenchmarkArgon2id is one argon2id hash at the chosen parameters, the
// baseline for the login figures.
func BenchmarkArgon2id(b *testing.B) {
	for b.Loop() {
		if _, err := password.Hash(testPassword); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssueCredentialHTTPParallel: as BenchmarkIssueCredentialHTTP with
// concurrent clients (4 per CPU), each its own user and key; throughput next
// to BenchmarkUserClaimsEncodeParallel.
func BenchmarkIssueCredentialHTTPParallel(b *testing.B) {
	forEachDB(b, func(b *testing.B, db *sqlstore.DB) {
		e := newEnvWithLogger(b, db, nil, noLimit)
		const clients = 8
		type client struct {
			token string
			body  map[string]any
		}
		pool := make(chan client, clients)
		for i := range clients {
			token, _ := e.register(b, fmt.Sprintf("user%d", i))
			kp, _ := nkeys.CreateUser()
			pub, _ := kp.PublicKey()
			pool <- client{token, map[string]any{"public_key": pub}}
		}
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c := <-pool
			defer func() { pool <- c }()
			for pb.Next() {
				if r := e.do(b, "POST", "/api/v1/me/credentials", c.token, c.body); r.status != 201 {
					b.Errorf("issue: %d %s", r.status, r.raw)
					return
				}
			}
		})
	})
}

func BenchmarkUserClaimsEncodeParallel(b *testing.B) {
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	signer, _ := nkeys.CreateAccount()
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := rawUserClaims(pub, accountPub, time.Now()).Encode(signer); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMeHTTP: GET /api/v1/me, the fixed cost of an authenticated request
// (HTTP round trip, the token from the auth cache after the first call, and
// /me's own read of the user), to split the issuance figure into that cost
// and the authority's.
func BenchmarkMeHTTP(b *testing.B) {
	forEachDB(b, func(b *testing.B, db *sqlstore.DB) {
		e := newEnvWithLogger(b, db, nil, noLimit)
		token, _ := e.register(b, "alice")
		for b.Loop() {
			if r := e.do(b, "GET", "/api/v1/me", token, nil); r.status != 200 {
				b.Fatalf("me: %d %s", r.status, r.raw)
			}
		}
	})
}

// The paired benchmarks below time the end-to-end operation and its raw
// baseline alternately in the same loop, so both see the same machine load;
// on a shared machine that makes their ratio (reported as pct_of_raw, the
// end-to-end rate as a percentage of the raw rate) far steadier than two
// separate benchmarks.

// BenchmarkPairIssueVsEncode: one HTTP issuance (client key) and one raw
// UserClaims.Encode per iteration.
func BenchmarkPairIssueVsEncode(b *testing.B) {
	forEachDB(b, func(b *testing.B, db *sqlstore.DB) {
		e := newEnvWithLogger(b, db, nil, noLimit)
		token, _ := e.register(b, "alice")
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		body := map[string]any{"public_key": pub}
		signer, _ := nkeys.CreateAccount()
		account, _ := nkeys.CreateAccount()
		accountPub, _ := account.PublicKey()
		var issue, raw time.Duration
		for b.Loop() {
			t0 := time.Now()
			if r := e.do(b, "POST", "/api/v1/me/credentials", token, body); r.status != 201 {
				b.Fatalf("issue: %d %s", r.status, r.raw)
			}
			t1 := time.Now()
			if _, err := rawUserClaims(pub, accountPub, t1).Encode(signer); err != nil {
				b.Fatal(err)
			}
			issue += t1.Sub(t0)
			raw += time.Since(t1)
		}
		reportPair(b, "issue", issue, "encode", raw)
	})
}

// BenchmarkPairLoginVsArgon2id: one HTTP login and one argon2id hash at the
// chosen parameters per iteration.
func BenchmarkPairLoginVsArgon2id(b *testing.B) {
	forEachDB(b, func(b *testing.B, db *sqlstore.DB) {
		e := newEnvWithLogger(b, db, nil, noLimit)
		e.register(b, "alice")
		body := map[string]any{"username": "alice", "password": testPassword}
		var login, hash time.Duration
		for b.Loop() {
			t0 := time.Now()
			if r := e.do(b, "POST", "/api/v1/login", "", body); r.status != 200 {
				b.Fatalf("login: %d %s", r.status, r.raw)
			}
			t1 := time.Now()
			if _, err := password.Hash(testPassword); err != nil {
				b.Fatal(err)
			}
			login += t1.Sub(t0)
			hash += time.Since(t1)
		}
		reportPair(b, "login", login, "argon2id", hash)
	})
}

// BenchmarkPairIssueVsEncodeParallel is the throughput form of
// BenchmarkPairIssueVsEncode: rounds of issuances by 8 concurrent clients
// (MULCHAT_BENCH_CLIENTS; each its own user and key, over keep-alive
// connections) alternate with rounds of the same number of raw encodes by 8
// goroutines, so both use every CPU and see the same machine load, and with
// rounds of the refresh's database statement alone (write/s, the single-SQL-
// statement baseline). The clients are a load generator's (leanConn): each
// writes a prepared request on its own keep-alive TCP connection and checks
// the answer's status and that it holds a JWT without decoding it, so what
// the shared CPU spends is, as far as it can be, the server's.
// Per issuance it also reports the CPU this process used (cpu_us/issue:
// server and clients), that of the PostgreSQL backends serving the test
// database, read from /proc (pg_us/issue; the server must run on this
// machine), and how many refreshes a grouped PostgreSQL write carried
// (rows/group, RefreshGroupStats).
func BenchmarkPairIssueVsEncodeParallel(b *testing.B) {
	forEachDB(b, func(b *testing.B, db *sqlstore.DB) {
		e := newEnvWithLogger(b, db, nil, noLimit)
		clients := testenv.PositiveInt("MULCHAT_BENCH_CLIENTS", 8)
		type client struct {
			id   int64
			conn *leanConn
			cred mulchat.NATSCredential // as stored by the first issuance
		}
		addr := strings.TrimPrefix(e.srv.URL, "http://")
		ctx := context.Background()
		cs := make([]client, clients)
		for i := range cs {
			token, id := e.register(b, fmt.Sprintf("user%d", i))
			kp, _ := nkeys.CreateUser()
			pub, _ := kp.PublicKey()
			conn, err := dialLean(addr, "/api/v1/me/credentials", token, []byte(`{"public_key":"`+pub+`"}`))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			cs[i] = client{id: id, conn: conn}
			if err := conn.issue(); err != nil {
				b.Fatal(err)
			}
			cred, err := db.GetUserNATSCredential(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			cs[i].cred = cred
		}
		signer, _ := nkeys.CreateAccount()
		account, _ := nkeys.CreateAccount()
		accountPub, _ := account.PublicKey()
		user, _ := nkeys.CreateUser()
		userPub, _ := user.PublicKey()
		backends := pgBackends(b, db)
		var issue, raw, write, issueCPU, issuePG time.Duration
		var statements, refreshes int64
		const round = 256
		b.ResetTimer()
		for done := 0; done < b.N; done += round {
			n := min(round, b.N-done)
			s0, r0 := db.RefreshGroupStats()
			pg0, cpu0 := backends.cpu(), testenv.ProcessCPU()
			issue += inParallel(b, clients, n, func(w int) error {
				return cs[w].conn.issue()
			})
			issueCPU += testenv.ProcessCPU() - cpu0
			issuePG += backends.cpu() - pg0
			s1, r1 := db.RefreshGroupStats()
			statements, refreshes = statements+s1-s0, refreshes+r1-r0
			raw += inParallel(b, clients, n, func(int) error {
				_, err := rawUserClaims(userPub, accountPub, time.Now()).Encode(signer)
				return err
			})
			write += inParallel(b, clients, n, func(w int) error {
				if ok, err := db.RefreshUserNATSJWT(ctx, cs[w].id, cs[w].cred); err != nil || !ok {
					return fmt.Errorf("refresh write: %v %v", ok, err)
				}
				return nil
			})
		}
		reportPair(b, "issue", issue, "encode", raw)
		// The database's part alone: the statement a covered refresh runs,
		// from the same number of goroutines.
		b.ReportMetric(float64(b.N)/write.Seconds(), "write/s")
		// Where an issuance's CPU goes: this process (server and clients),
		// and PostgreSQL's backends serving this database; and how many
		// refreshes a grouped write carried on average.
		b.ReportMetric(float64(issueCPU.Microseconds())/float64(b.N), "cpu_us/issue")
		if db.Dialect() == sqlstore.DialectPostgres {
			b.ReportMetric(float64(issuePG.Microseconds())/float64(b.N), "pg_us/issue")
		}
		if statements > 0 {
			b.ReportMetric(float64(refreshes)/float64(statements), "rows/group")
		}
	})
}

// inParallel runs op n times over workers goroutines (op gets the worker's
// index) and returns the wall time.
func inParallel(b *testing.B, workers, n int, op func(worker int) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := op(w); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(t0)
}

// leanConn is the load generator's side of one client: a keep-alive
// HTTP/1.1 connection on which one prepared POST /api/v1/me/credentials is
// written again and again, and whose answers are read with only what a load
// generator such as wrk parses: the status line, Content-Length and the
// body, which must hold a JWT. net/http's client costs about as much CPU per
// request as net/http's server (a reader and a writer goroutine per
// connection, header maps, its pool: 60-70 µs of an issuance's 250 on this
// project's machine), and on a shared machine that CPU is taken from the
// server.
type leanConn struct {
	net.Conn
	r    *bufio.Reader
	req  []byte
	body []byte
}

func dialLean(addr, path, token string, body []byte) (*leanConn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	req := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		path, addr, token, len(body), body)
	return &leanConn{Conn: conn, r: bufio.NewReader(conn), req: req}, nil
}

// issue sends the request once and checks that the answer is 201 Created
// with a JWT in its body.
func (c *leanConn) issue() error {
	if _, err := c.Write(c.req); err != nil {
		return err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	var bad string
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 201 ")) {
		bad = string(bytes.TrimSpace(line))
	}
	size := -1
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(h)) == 0 {
			break
		}
		if k, v, ok := bytes.Cut(h, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			if size, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return fmt.Errorf("issue: bad Content-Length %q", v)
			}
		}
	}
	if size < 0 {
		return fmt.Errorf("issue: %s answer without Content-Length", bad)
	}
	c.body = slices.Grow(c.body[:0], size)[:size]
	if _, err := io.ReadFull(c.r, c.body); err != nil {
		return err
	}
	if bad != "" || !bytes.Contains(c.body, []byte(`"jwt":"eyJ`)) {
		return fmt.Errorf("issue: %s %s", bad, c.body)
	}
	return nil
}

func reportPair(b *testing.B, name string, d time.Duration, rawName string, raw time.Duration) {
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(n/d.Seconds(), name+"/s")
	b.ReportMetric(n/raw.Seconds(), rawName+"/s")
	b.ReportMetric(100*raw.Seconds()/d.Seconds(), "pct_of_raw")
}

// pgBackendSet finds the PostgreSQL backends serving one database, on the
// same machine, to read their CPU time from /proc.
type pgBackendSet struct{ name string }

func pgBackends(b *testing.B, db *sqlstore.DB) pgBackendSet {
	if db.Dialect() != sqlstore.DialectPostgres {
		return pgBackendSet{}
	}
	var name string
	if err := db.SQL().QueryRow("SELECT current_database()").Scan(&name); err != nil {
		b.Fatal(err)
	}
	return pgBackendSet{name}
}

// cpu is the CPU time (user and system) used so far by the live backends of
// the database; 0 where /proc cannot tell (SQLite, another machine).
func (s pgBackendSet) cpu() time.Duration {
	if s.name == "" {
		return 0
	}
	dirs, _ := os.ReadDir("/proc")
	var ticks int64
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err != nil || !bytes.HasPrefix(cmd, []byte("postgres: ")) || !bytes.Contains(cmd, []byte(" "+s.name+" ")) {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// The fields after the command's closing parenthesis; utime and
		// stime are the 14th and 15th of the line.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ
}
