package tracker

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
)

// BenchmarkHoldConnections opens b.N connections with mulchat credentials
// from a child process (one process cannot hold both ends of 10,000
// connections within the 20,000 file descriptor limit) and holds them while
// the tracker writes a session row for each:
//
//	go test -run '^$' -bench HoldConnections -benchtime 10000x ./internal/tracker/
func BenchmarkHoldConnections(b *testing.B) { benchHold(b, true) }

// BenchmarkHoldConnectionsRaw is the same without the tracker: operator mode
// without mulchat. It connects with the very same user JWTs (same account,
// signing key, permissions and size), so the tracker is the only difference;
// service-user JWTs, which it used before, carry no permissions and are
// smaller, which made the server's own work per connect lighter than for
// mulchat's users.
func BenchmarkHoldConnectionsRaw(b *testing.B) { benchHold(b, false) }

func benchHold(b *testing.B, tracked bool) {
	st := rttest.NewStack(b, sqltest.OpenSQLite(b))
	if tracked {
		// With a presence notifier, as mulchat runs it: the tracker then
		// also decides each user's online notice.
		tr, err := New(Config{Store: st.Store, SysConn: st.ServiceConn(b, "tracker", true),
			ChatAccount: st.Authority.ChatAccountPublicKey(), ReconcileInterval: -1, Presence: &notes{}})
		if err != nil {
			b.Fatal(err)
		}
		if err := tr.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		defer tr.Close()
	}
	dir := b.TempDir()
	var files []string
	for i := 0; i < 50; i++ {
		u := st.NewUser(b, fmt.Sprint("hold", i), 0)
		creds, err := authority.CredsFile(u.Cred.JWT, u.Cred.Seed)
		if err != nil {
			b.Fatal(err)
		}
		f := filepath.Join(dir, fmt.Sprint(i, ".creds"))
		if err := os.WriteFile(f, creds, 0o600); err != nil {
			b.Fatal(err)
		}
		files = append(files, f)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperHoldConnections$")
	cmd.Env = append(os.Environ(), "MULCHAT_HOLD_URL="+st.URL, "MULCHAT_HOLD_N="+strconv.Itoa(b.N),
		"MULCHAT_HOLD_CREDS="+strings.Join(files, ","))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	b.ResetTimer()
	start, cpuStart := time.Now(), testenv.ProcessCPU()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	connected := false
	var childCPU time.Duration
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "FAIL ") {
			b.Fatal(line)
		}
		if strings.HasPrefix(line, "connected ") {
			var n int
			if _, err := fmt.Sscanf(line, "connected %d %d", &n, &childCPU); err != nil {
				b.Fatalf("child said %q: %v", line, err)
			}
			connected = true
			break
		}
	}
	if !connected {
		b.Fatal("child did not connect")
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "connects/s")
	b.ReportMetric(float64(st.NATS.NATS().NumClients()), "held")
	// CPU per connect, of both processes (server, tracker and store in
	// this one; the clients in the child), until every client is connected:
	// unlike connects/s it hardly depends on what else the machine runs.
	// With the tracker, cpu-µs/row is the same once every row is written,
	// so it includes all of the tracker's work (and the row counting
	// below).
	cpuPer := func(unit string) {
		b.ReportMetric(float64((testenv.ProcessCPU()-cpuStart+childCPU).Microseconds())/float64(b.N), unit)
	}
	cpuPer("cpu-µs/connect")
	if !tracked {
		b.StopTimer()
		return
	}
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		s, err := st.Store.ListActiveAuthSessions(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(s) >= b.N {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d rows for %d connections", len(s), b.N)
		}
		time.Sleep(250 * time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
	cpuPer("cpu-µs/row")
	b.StopTimer()
}

// TestHelperHoldConnections is the child of BenchmarkHoldConnections; it
// does nothing in a normal test run.
func TestHelperHoldConnections(t *testing.T) {
	url := os.Getenv("MULCHAT_HOLD_URL")
	if url == "" {
		return // only the benchmark's child process does something
	}
	n, _ := strconv.Atoi(os.Getenv("MULCHAT_HOLD_N"))
	files := strings.Split(os.Getenv("MULCHAT_HOLD_CREDS"), ",")
	conns := make([]*nats.Conn, n)
	var wg sync.WaitGroup
	var once sync.Once
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				nc, err := nats.Connect(url, nats.UserCredentials(files[i%len(files)]), nats.NoReconnect(),
					nats.Name(fmt.Sprint("hold-", i)))
				if err != nil {
					once.Do(func() { fmt.Printf("FAIL %v\n", err) })
					return
				}
				conns[i] = nc
			}
		}()
	}
	wg.Wait()
	fmt.Printf("connected %d %d\n", n, testenv.ProcessCPU())
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	for _, nc := range conns {
		if nc != nil {
			nc.Close()
		}
	}
}
