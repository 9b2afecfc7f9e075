// Package natscluster starts clusters of in-process nats-servers for tests.
package natscluster

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// attempts is how many sets of ports Start tries.
const attempts = 5

// Start starts n in-process nats-servers that route to one another and
// returns them once each accepts connections; they shut down when the test
// ends. Every server's routes must name the others' cluster ports, so the
// ports are chosen free beforehand and configure returns server i's options
// given all of them. Another process may bind a chosen port before its
// server does, and a server whose route listener failed never becomes
// ready: the whole set is then shut down and started again on new ports.
func Start(t testing.TB, n int, configure func(i int, ports []int) *server.Options) []*server.Server {
	t.Helper()
	var failures []string
	for range attempts {
		ports := make([]int, n)
		for i := range ports {
			ports[i] = freePort(t)
		}
		servers, err := start(t, ports, configure)
		if err == nil {
			return servers
		}
		failures = append(failures, err.Error())
	}
	t.Fatalf("no cluster of %d nats-servers started in %d attempts:\n%s", n, attempts, strings.Join(failures, "\n"))
	return nil
}

// start starts one server per port, shut down when the test ends; on
// failure it has shut down those it started.
func start(t testing.TB, ports []int, configure func(int, []int) *server.Options) ([]*server.Server, error) {
	t.Helper()
	var servers []*server.Server
	var logs []*fatalLog
	stop := func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
		servers = nil
	}
	// Also when configure or NewServer ends the test half-way.
	t.Cleanup(stop)
	for i := range ports {
		opts := configure(i, ports)
		opts.NoSigs, opts.NoLog = true, true
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("server %d: %v", i+1, err)
		}
		log := &fatalLog{failed: make(chan struct{})}
		s.SetLogger(log, false, false)
		s.Start()
		servers, logs = append(servers, s), append(logs, log)
	}
	for i, s := range servers {
		if err := logs[i].waitReady(s, 20*time.Second); err != nil {
			stop()
			return nil, fmt.Errorf("server %d (cluster port %d): %v", i+1, ports[i], err)
		}
	}
	return servers, nil
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fatalLog is a server's logger that keeps only what the server reports as
// fatal, such as a listener it could not open.
type fatalLog struct {
	mu     sync.Mutex
	msgs   []string
	once   sync.Once
	failed chan struct{}
}

func (l *fatalLog) Fatalf(format string, v ...any) {
	l.mu.Lock()
	l.msgs = append(l.msgs, fmt.Sprintf(format, v...))
	l.mu.Unlock()
	l.once.Do(func() { close(l.failed) })
}

func (l *fatalLog) Noticef(string, ...any) {}
func (l *fatalLog) Warnf(string, ...any)   {}
func (l *fatalLog) Errorf(string, ...any)  {}
func (l *fatalLog) Debugf(string, ...any)  {}
func (l *fatalLog) Tracef(string, ...any)  {}

// waitReady waits until s accepts connections, it reports a fatal error, or
// d passes.
func (l *fatalLog) waitReady(s *server.Server, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-l.failed:
			l.mu.Lock()
			defer l.mu.Unlock()
			return fmt.Errorf("%s", strings.Join(l.msgs, "; "))
		default:
		}
		if s.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
	}
	return fmt.Errorf("not ready after %s", d)
}
