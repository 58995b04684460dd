package hubfetch

import (
	"io"
	"runtime"
	"sync"

	"github.com/walhub/walhub/walname"
)

// workOrder gives the prefetcher's processor to the download of the nearest
// segment: recovery asks for segments in order, and one it waits for should
// not share the processor with those it will need later. The downloads run
// at once (so that over a distant hub their round trips overlap), but their
// work between two reads from the network (decompressing, checking,
// writing) is ordered: a download works only while fewer downloads of
// earlier segments than the processors the runtime has (one: see
// oneProcessor) are working rather than waiting for the network.
//
// Without it, the downloads of a window share the one processor alike: when
// the prefetcher starts, or when recovery catches up with it, the segment
// recovery asks for next is complete only when the three after it nearly
// are (16 MiB segments, --parallel 4: about three decompressions later).
//
// Downloads are keyed by their position in the WAL (walPosition): the first
// downloads, queued before the segment size is known (firstDownloads), are
// ordered with the others, and the nearest of them, the segment recovery
// asks for next, is not decompressed alongside the three after it.
type workOrder struct {
	mu      sync.Mutex
	cond    sync.Cond
	working map[uint64]bool // the downloads under way, by walPosition: working, or waiting for the network
	waiting int             // downloads waiting in work
	procs   int             // GOMAXPROCS
}

// walPosition orders segments of one timeline as recovery asks for them,
// whatever the segment size: by log, then by segment within the log (which
// is below 2^32 with any size).
func walPosition(n walname.Name) uint64 { return uint64(n.Log)<<32 | uint64(n.Seg) }

func newWorkOrder() *workOrder {
	o := &workOrder{working: map[uint64]bool{}, procs: runtime.GOMAXPROCS(0)}
	o.cond.L = &o.mu
	return o
}

// begin registers the download at pos, waiting for the network (its
// request is under way).
func (o *workOrder) begin(pos uint64) {
	o.mu.Lock()
	o.working[pos] = false
	o.mu.Unlock()
}

// end unregisters it.
func (o *workOrder) end(pos uint64) {
	o.mu.Lock()
	delete(o.working, pos)
	o.wake()
	o.mu.Unlock()
}

// read marks pos's download waiting for the network.
func (o *workOrder) read(pos uint64) {
	o.mu.Lock()
	o.working[pos] = false
	o.wake()
	o.mu.Unlock()
}

// work waits until pos's download may work, and marks it working.
func (o *workOrder) work(pos uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.workingBefore(pos) >= o.procs {
		o.waiting++
		o.cond.Wait()
		o.waiting--
	}
	o.working[pos] = true
}

func (o *workOrder) workingBefore(pos uint64) int {
	n := 0
	for s, w := range o.working {
		if w && s < pos {
			n++
		}
	}
	return n
}

func (o *workOrder) wake() {
	if o.waiting > 0 {
		o.cond.Broadcast()
	}
}

// reader returns r for pos's download: each read waits for the network,
// then for pos's turn to work.
func (o *workOrder) reader(pos uint64) func(io.Reader) io.Reader {
	return func(r io.Reader) io.Reader { return &orderedReader{r: r, o: o, pos: pos} }
}

type orderedReader struct {
	r   io.Reader
	o   *workOrder
	pos uint64
}

func (r *orderedReader) Read(p []byte) (int, error) {
	r.o.read(r.pos)
	n, err := r.r.Read(p)
	r.o.work(r.pos)
	return n, err
}
