package testenv_test

import (
	"fmt"
	"log/slog"
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
