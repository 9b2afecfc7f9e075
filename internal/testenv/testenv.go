// Package testenv holds what tests of several packages share. It decides
// what a test may skip: tests that need a component the machine may lack
// (PostgreSQL, Chromium) call Skip; with MULCHAT_TEST_REQUIRE_ALL=1 (set by
// .ci/run) such a skip fails the test instead, so CI never passes by
// skipping. It also captures logs (LogBuffer) and runs nats-server as its own
// process (NATSServerBinary, StartNATSServerProcess).
package testenv

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// PositiveInt returns the positive integer in environment variable name (a
// benchmark's size, say), or def when it is unset or not one.
func PositiveInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// RequireAll reports whether skips are forbidden in this run.
func RequireAll() bool { return os.Getenv("MULCHAT_TEST_REQUIRE_ALL") == "1" }

// Skip skips the test with a message saying what is missing, or fails it when
// RequireAll is set.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if RequireAll() {
		t.Fatalf("MULCHAT_TEST_REQUIRE_ALL=1 but: %s", msg)
	}
	t.Skip(msg)
}

// PostgresURL returns MULCHAT_TEST_POSTGRES_URL, or skips the test (see Skip)
// when it is unset.
func PostgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("MULCHAT_TEST_POSTGRES_URL")
	if u == "" {
		Skip(t, "PostgreSQL tests need MULCHAT_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)")
	}
	return u
}
