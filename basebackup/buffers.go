package basebackup

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page on x86-64 and arm64 (4 KiB
// base pages).
const hugePage = 2 << 20

// buffers returns count buffers of size bytes each, carved from one
// allocation that the kernel is asked to back with transparent huge pages
// (madvise MADV_HUGEPAGE: a hint, where THP is enabled for madvised memory,
// as it is by default). An unpack writes every byte of its buffers first
// thing, and on 4 KiB pages that is one page fault per 4 KiB: some 7,000
// faults for the writers' and decoders' buffers, 4% of a restore's CPU time
// in a profile on a 2-core VM, where faults are dear.
func buffers(count, size int) [][]byte {
	total := count * size
	all := make([]byte, total+hugePage)
	off := int(-uintptr(unsafe.Pointer(&all[0])) & (hugePage - 1))
	region := all[off : off+total : off+total]
	if n := total &^ (hugePage - 1); n > 0 {
		_ = unix.Madvise(region[:n], unix.MADV_HUGEPAGE) // only a hint
	}
	out := make([][]byte, count)
	for i := range out {
		out[i] = region[i*size : (i+1)*size : (i+1)*size]
	}
	return out
}
