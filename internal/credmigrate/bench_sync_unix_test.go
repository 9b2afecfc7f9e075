//go:build unix

package credmigrate_test

import "syscall"

// flushDirtyPages writes the kernel's dirty pages to disk, so that a
// measurement does not pay for the writeback of the step before it.
func flushDirtyPages() { syscall.Sync() }
