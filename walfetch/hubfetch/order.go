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
type workOrder struct {
	mu      sync.Mutex
	cond    sync.Cond
	working map[walname.SegNo]bool // the downloads under way: working, or waiting for the network
	waiting int                    // downloads waiting in work
	procs   int                    // GOMAXPROCS
}

func newWorkOrder() *workOrder {
	o := &workOrder{working: map[walname.SegNo]bool{}, procs: runtime.GOMAXPROCS(0)}
	o.cond.L = &o.mu
	return o
}

// begin registers the download of segno, waiting for the network (its
// request is under way).
func (o *workOrder) begin(segno walname.SegNo) {
	o.mu.Lock()
	o.working[segno] = false
	o.mu.Unlock()
}

// end unregisters it.
func (o *workOrder) end(segno walname.SegNo) {
	o.mu.Lock()
	delete(o.working, segno)
	o.wake()
	o.mu.Unlock()
}

// read marks segno's download waiting for the network.
func (o *workOrder) read(segno walname.SegNo) {
	o.mu.Lock()
	o.working[segno] = false
	o.wake()
	o.mu.Unlock()
}

// work waits until segno's download may work, and marks it working.
func (o *workOrder) work(segno walname.SegNo) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.workingBefore(segno) >= o.procs {
		o.waiting++
		o.cond.Wait()
		o.waiting--
	}
	o.working[segno] = true
}

func (o *workOrder) workingBefore(segno walname.SegNo) int {
	n := 0
	for s, w := range o.working {
		if w && s < segno {
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

// reader returns r for segno's download: each read waits for the network,
// then for segno's turn to work.
func (o *workOrder) reader(segno walname.SegNo) func(io.Reader) io.Reader {
	return func(r io.Reader) io.Reader { return &orderedReader{r: r, o: o, segno: segno} }
}

type orderedReader struct {
	r     io.Reader
	o     *workOrder
	segno walname.SegNo
}

func (r *orderedReader) Read(p []byte) (int, error) {
	r.o.read(r.segno)
	n, err := r.r.Read(p)
	r.o.work(r.segno)
	return n, err
}
