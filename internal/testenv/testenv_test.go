package testenv_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/mulchat/mulchat/internal/testenv"
)

// TestLogBufferConcurrentWrites: lines written by many goroutines at once
// all arrive whole, and Logger honours its level.
func TestLogBufferConcurrentWrites(t *testing.T) {
	var buf testenv.LogBuffer
	logger := buf.Logger(slog.LevelInfo)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { logger.Info("hello", slog.Int("n", i)) })
	}
	wg.Wait()
	logger.Debug("below the level")
	out := buf.String()
	for i := range 20 {
		if !strings.Contains(out, fmt.Sprintf("msg=hello n=%d\n", i)) {
			t.Fatalf("line %d missing or torn:\n%s", i, out)
		}
	}
	if strings.Contains(out, "below the level") {
		t.Fatalf("a debug record passed an info logger:\n%s", out)
	}
}

// TestStartNATSServerProcess: the built nats-server runs with the given
// configuration and the returned URL accepts connections.
func TestStartNATSServerProcess(t *testing.T) {
	bin := testenv.NATSServerBinary(t)
	url := testenv.StartNATSServerProcess(t, bin, t.TempDir(), "host: 127.0.0.1\nport: -1\n")
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "nats://"))
	if err != nil {
		t.Fatalf("dialing %s: %v", url, err)
	}
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("the server greeted with %q (%v), want its INFO line", line, err)
	}
}
