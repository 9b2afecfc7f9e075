package testenv

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds and fails the test if it still does
// not after timeout. The timeout only bounds a hang (asynchronous work,
// start-up); it is never a speed check.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
