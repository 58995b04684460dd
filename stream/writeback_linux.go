package stream

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing a range of f to disk
// without waiting for it, so the fsync at the end of the segment finds little
// left to do and disk writes overlap with receiving (PostgreSQL does the same
// with its *_flush_after settings). It is only a hint: errors are ignored, and
// the fsync that follows is what makes data durable.
func startWriteback(f *os.File, offset, length int64) {
	unix.SyncFileRange(int(f.Fd()), offset, length, unix.SYNC_FILE_RANGE_WRITE)
}
