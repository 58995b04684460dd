package storage

import "golang.org/x/sys/unix"

// StartWriteback asks the kernel to start writing n bytes of the file open
// as fd, from off (n 0: to the end of the file), to disk without waiting for
// it, so that the fsync that follows finds little left to do (PostgreSQL does
// the same with its *_flush_after settings). sync_file_range returns
// without waiting for the disk, but it does the file system's allocation
// work and waits whenever the device's queue is full: a caller on a latency
// path hands it to a goroutine of its own. It is only a hint: errors are
// ignored (not every file system supports it), and the fsync is what makes
// data durable.
func StartWriteback(fd int, off, n int64) {
	_ = unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE)
}
