package hubfetch

import (
	"io"
	"testing"
	"time"

	"github.com/walhub/walhub/walname"
)

// gatedReader returns one byte per read, each when the test sends on next.
type gatedReader struct{ next chan struct{} }

func (g gatedReader) Read(p []byte) (int, error) {
	if _, ok := <-g.next; !ok {
		return 0, io.EOF
	}
	p[0] = 'w'
	return 1, nil
}

// TestWorkOrder: with one processor, the download of a later segment works
// (returns from a read) only while every earlier one waits for the network
// or has ended; an earlier one never waits for a later one.
func TestWorkOrder(t *testing.T) {
	o := newWorkOrder()
	o.procs = 1
	near, far := uint64(2), uint64(5)
	o.begin(near)
	o.begin(far)
	nearNet, farNet := gatedReader{make(chan struct{})}, gatedReader{make(chan struct{})}
	nearR, farR := o.reader(near)(nearNet), o.reader(far)(farNet)
	read := func(r io.Reader) chan struct{} {
		done := make(chan struct{})
		go func() {
			r.Read(make([]byte, 1))
			close(done)
		}()
		return done
	}
	returned := func(what string, done chan struct{}, want bool) {
		t.Helper()
		select {
		case <-done:
			if !want {
				t.Fatalf("%s returned", what)
			}
		case <-time.After(100 * time.Millisecond):
			if want {
				t.Fatalf("%s did not return", what)
			}
		}
	}
	// The near download waits for the network: the far one may work.
	done := read(farR)
	farNet.next <- struct{}{}
	returned("a far read while the near download waits for the network", done, true)
	// The near one's read returns while the far one works: it does not wait.
	done = read(nearR)
	nearNet.next <- struct{}{}
	returned("a near read while the far download works", done, true)
	// The far one's next read has its bytes but waits for its turn...
	done = read(farR)
	farNet.next <- struct{}{}
	returned("a far read while the near download works", done, false)
	// ...until the near one reads from the network again...
	nearDone := read(nearR)
	returned("the far read once the near download reads", done, true)
	// ...and, with the near one working again, until it ends.
	nearNet.next <- struct{}{}
	returned("the near read", nearDone, true)
	done = read(farR)
	farNet.next <- struct{}{}
	returned("a far read while the near download works", done, false)
	o.end(near)
	returned("the far read once the near download ended", done, true)
	o.end(far)
	if len(o.working) != 0 || o.waiting != 0 {
		t.Errorf("left: working %v, %d waiting", o.working, o.waiting)
	}
}

// TestWalPositionFollowsSegmentOrder: positions order segments as their
// numbers do, for every segment size, across the end of a log.
func TestWalPositionFollowsSegmentOrder(t *testing.T) {
	for _, segSize := range []uint64{1 << 20, 16 << 20, 1 << 30} {
		perLog := walname.SegNo(0x100000000 / segSize)
		for _, pair := range [][2]walname.SegNo{{1, 2}, {perLog - 1, perLog}, {perLog, 3 * perLog}, {5*perLog - 1, 5*perLog + 1}} {
			pos := func(segno walname.SegNo) uint64 {
				n, err := walname.Parse(walname.SegmentName(1, segno, segSize))
				if err != nil {
					t.Fatal(err)
				}
				return walPosition(n)
			}
			if pos(pair[0]) >= pos(pair[1]) {
				t.Errorf("%d MiB segments: position of %d (%#x) not before that of %d (%#x)", segSize>>20, pair[0], pos(pair[0]), pair[1], pos(pair[1]))
			}
		}
	}
}
