//go:build !linux

package stream

import "os"

// startWriteback is a no-op where sync_file_range does not exist.
func startWriteback(f *os.File, offset, length int64) {}
