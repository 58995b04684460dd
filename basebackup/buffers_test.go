package basebackup

import (
	"testing"
	"unsafe"
)

func TestBuffersAreSeparateAndCannotGrowIntoEachOther(t *testing.T) {
	for _, tc := range []struct{ count, size int }{{1, 100}, {32, chunkSize}, {12, frameSize}, {3, hugePage + 1}} {
		bufs := buffers(tc.count, tc.size)
		if len(bufs) != tc.count {
			t.Fatalf("%d x %d: got %d buffers", tc.count, tc.size, len(bufs))
		}
		for i, b := range bufs {
			if len(b) != tc.size || cap(b) != tc.size {
				t.Fatalf("%d x %d: buffer %d has len %d cap %d", tc.count, tc.size, i, len(b), cap(b))
			}
			for j := range b {
				b[j] = byte(i)
			}
		}
		for i, b := range bufs {
			if b[0] != byte(i) || b[len(b)-1] != byte(i) {
				t.Fatalf("%d x %d: buffer %d was overwritten", tc.count, tc.size, i)
			}
			if tc.count*tc.size >= hugePage && uintptr(unsafe.Pointer(&bufs[0][0]))%hugePage != 0 {
				t.Errorf("%d x %d: not aligned to a huge page", tc.count, tc.size)
			}
		}
	}
}
