//go:build !linux

package storage

// StartWriteback is a no-op where sync_file_range does not exist: the fsync
// that follows does all the work.
func StartWriteback(fd int, off, n int64) {}
