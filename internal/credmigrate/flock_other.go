//go:build !unix

package credmigrate

import "os"

// tryFlock: without flock, SQLite's own write lock is the only protection
// (each transaction and its DDL stay atomic; see prepare and
// startCheckpoint).
func tryFlock(*os.File) (bool, error) { return true, nil }
