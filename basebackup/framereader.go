package basebackup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// How a frameReader decodes. A frame is decoded on its own only when its
// header gives its size and that size is at most maxParallelFrame: walhub
// writes frames of frameSize (see frameWriter). The first other frame (an
// archive of an older walhub is one long frame of unknown size) and all that
// follow it go through one streaming decoder instead, as every archive did
// before.
const (
	maxParallelFrame = 4 * frameSize
	// decodeAhead is how many frames per decoder are read, decoded or
	// waiting to be read at once: the memory of a frameReader is about
	// decodeAhead x decoders x 2 x frameSize (decoded and compressed;
	// the compressed buffers are mostly never touched).
	decodeAhead = 3
	// maxDecoders is the most goroutines decoding frames: 4 decode faster
	// than a disk takes the files.
	maxDecoders = 4
	// compressedFrameBuffer holds a frame of frameSize bytes compressed:
	// at most frameSize in its blocks, and their headers, the frame's
	// header and checksum in the rest (64 KiB: blocks down to 48 bytes).
	compressedFrameBuffer = frameSize + frameSize/16
	// zstd block headers (RFC 8878 3.1.1.2): 3 bytes, little-endian: bit 0
	// says last block, bits 1-2 the type, bits 3-23 the size.
	blockHeaderSize = 3
	blockTypeRaw    = 0
	blockTypeRLE    = 1
	blockTypeComp   = 2
	// A compressed frame's blocks are never larger than this
	// (Block_Maximum_Size).
	maxBlockSize = 128 << 10
	checksumSize = 4
)

// frameReader decodes a zstd stream of independent frames (see frameWriter)
// on several goroutines and returns the decoded bytes in order. One goroutine
// (split) reads the stream, finds where each frame ends by walking its block
// headers, and hands the frames to the decoders; Read returns them in the
// order they came. Each frame is decoded whole by zstd's DecodeAll, which
// checks its checksum and its size against its header: a frame that does not
// decode is an error from Read at that frame's place, and nothing of it is
// returned.
//
// Memory is bounded: split takes a buffer from free before it reads a frame,
// and Read gives it back once it has returned the frame's bytes and no lent
// part of it is still held (see lend).
type frameReader struct {
	src *bufio.Reader
	dec *zstd.Decoder
	// work feeds the decoders; order holds the same frames in stream order,
	// for Read. split closes both when it stops.
	work  chan *decodeJob
	order chan *decodeJob
	free  chan *decodeJob
	quit  chan struct{}
	// cur is the frame Read returns bytes of, from off.
	cur *decodeJob
	off int
	// tail decodes the rest of the stream, from the first frame split
	// leaves to a streaming decoder (see decodeJob.tail).
	tail *zstd.Decoder
	err  error
	wg   sync.WaitGroup
	once sync.Once
	// frames counts the frames split has read; delay, when set, is called
	// by a decoder before it decodes frame seq (tests).
	frames int
	delay  func(seq int)
}

// decodeJob is one frame: its compressed bytes, its decoded bytes, and the
// decoder's result. A job may instead carry split's error, or the reader of
// the rest of the stream (tail).
type decodeJob struct {
	in, out []byte
	seq     int
	size    uint64
	err     error
	tail    io.Reader
	done    chan struct{}
	// refs counts who holds out: Read while it returns its bytes, and
	// each part lent (see lend). The last to let go gives the job back to
	// free, its frameReader's.
	refs atomic.Int32
	free chan *decodeJob
}

// release lets go of one hold on j's decoded bytes.
func (j *decodeJob) release() {
	if j.refs.Add(-1) == 0 {
		j.free <- j // never blocks: free has room for every job
	}
}

// parallelFrames says whether the stream starting with head (at least
// zstd.HeaderMaxSize bytes, unless the stream is shorter) should be read by
// a frameReader: its first frame gives a size that frameReader decodes.
func parallelFrames(head []byte) bool {
	var h zstd.Header
	if err := h.Decode(head); err != nil {
		return false
	}
	return frameFits(&h)
}

// frameFits says whether a frame with header h is decoded on its own.
func frameFits(h *zstd.Header) bool {
	return !h.Skippable && h.HasFCS && h.FrameContentSize <= maxParallelFrame && h.DictionaryID == 0
}

// newFrameReader decodes src on workers goroutines; delay, when set, is
// called before each frame is decoded (tests).
func newFrameReader(src *bufio.Reader, workers int, delay func(seq int)) (*frameReader, error) {
	workers = max(workers, 1)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(workers), zstd.WithDecoderMaxMemory(maxParallelFrame))
	if err != nil {
		return nil, err
	}
	n := decodeAhead * workers
	r := &frameReader{src: src, dec: dec, work: make(chan *decodeJob, n), order: make(chan *decodeJob, n),
		free: make(chan *decodeJob, n), quit: make(chan struct{}), delay: delay}
	// A compressed frame is read into a buffer allocated up front (see
	// compressedFrameBuffer). Grown from nothing, block by block, the
	// buffers cost a restore about 80 larger and larger allocations, each
	// faulted in anew: 1,240 of its 3,200 page faults in the bench's
	// restore.
	ins := buffers(n, compressedFrameBuffer)
	for i, out := range buffers(n, frameSize) {
		r.free <- &decodeJob{in: ins[i][:0], out: out[:0], done: make(chan struct{}, 1), free: r.free}
	}
	r.wg.Add(1 + workers)
	go r.split()
	for range workers {
		go r.decode()
	}
	return r, nil
}

// decode is one decoder.
func (r *frameReader) decode() {
	defer r.wg.Done()
	for j := range r.work {
		if r.delay != nil {
			r.delay(j.seq)
		}
		j.out, j.err = r.dec.DecodeAll(j.in, j.out[:0])
		if j.err == nil && uint64(len(j.out)) != j.size {
			j.err = fmt.Errorf("a frame decodes to %d bytes, its header says %d", len(j.out), j.size)
		}
		if j.err != nil {
			j.err = fmt.Errorf("zstd frame: %w", j.err)
		}
		j.done <- struct{}{}
	}
}

// split reads the stream frame by frame until it ends, fails, or reaches a
// frame it leaves to a streaming decoder.
func (r *frameReader) split() {
	defer r.wg.Done()
	defer close(r.order)
	defer close(r.work)
	for {
		var j *decodeJob
		select {
		case j = <-r.free:
		case <-r.quit:
			return
		}
		j.in, j.out, j.err, j.tail = j.in[:0], j.out[:0], nil, nil
		more, fits, err := r.readFrame(j)
		switch {
		case err != nil:
			j.err = err
		case !more:
			return
		case !fits:
			// From here on, one streaming decoder reads the rest,
			// starting with the bytes of this frame read so far.
			j.tail = io.MultiReader(bytes.NewReader(j.in), r.src)
		default:
			j.seq = r.frames
			r.frames++
			r.order <- j
			r.work <- j
			continue
		}
		j.done <- struct{}{}
		r.order <- j
		return
	}
}

// readFrame reads the next frame into j.in. It returns more=false at the end
// of the stream, and fits=false for a frame not decoded on its own (then
// j.in holds what was read of it).
func (r *frameReader) readFrame(j *decodeJob) (more, fits bool, err error) {
	head, err := r.src.Peek(zstd.HeaderMaxSize)
	switch {
	case len(head) == 0 && errors.Is(err, io.EOF):
		return false, false, nil
	case err != nil && !errors.Is(err, io.EOF):
		return true, true, fmt.Errorf("read zstd frame: %w", err)
	}
	var h zstd.Header
	if err := h.Decode(head); err != nil || !frameFits(&h) {
		return true, false, nil // the streaming decoder reports what is wrong
	}
	j.size = h.FrameContentSize
	if j.in, err = readN(r.src, j.in, h.HeaderSize); err != nil {
		return true, true, err
	}
	for {
		if len(j.in) > maxParallelFrame+frameOverhead(maxParallelFrame) {
			return true, false, nil // far more blocks than a frame of its size needs
		}
		if j.in, err = readN(r.src, j.in, blockHeaderSize); err != nil {
			return true, true, err
		}
		bh := j.in[len(j.in)-blockHeaderSize:]
		v := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
		last, typ, size := v&1 != 0, (v>>1)&3, int(v>>3)
		switch typ {
		case blockTypeRaw, blockTypeComp:
			if size > maxBlockSize {
				return true, true, fmt.Errorf("zstd block of %d bytes, more than %d", size, maxBlockSize)
			}
		case blockTypeRLE:
			size = 1
		default:
			return true, true, errors.New("zstd block of the reserved type")
		}
		if j.in, err = readN(r.src, j.in, size); err != nil {
			return true, true, err
		}
		if last {
			break
		}
	}
	if h.HasCheckSum {
		if j.in, err = readN(r.src, j.in, checksumSize); err != nil {
			return true, true, err
		}
	}
	return true, true, nil
}

// frameOverhead is the most a frame of size bytes needs besides its blocks'
// content: a header, a block header per block, a checksum.
func frameOverhead(size int) int {
	return zstd.HeaderMaxSize + blockHeaderSize*(size/maxBlockSize+1) + checksumSize
}

// readN appends n bytes of r to b; a stream that ends first is cut short.
func readN(r io.Reader, b []byte, n int) ([]byte, error) {
	at := len(b)
	b = slices.Grow(b, n)[:at+n]
	if _, err := io.ReadFull(r, b[at:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return b[:at], fmt.Errorf("read zstd frame: %w", err)
	}
	return b, nil
}

// Read returns the decoded bytes in order.
func (r *frameReader) Read(p []byte) (int, error) {
	for r.err == nil {
		if r.tail != nil {
			n, err := r.tail.Read(p)
			if err != nil {
				r.err = err
			}
			return n, err
		}
		if r.cur == nil {
			j, ok := <-r.order
			if !ok {
				r.err = io.EOF
				break
			}
			<-j.done
			if j.err != nil {
				r.err = j.err
				break
			}
			if j.tail != nil {
				d, err := zstd.NewReader(j.tail, zstd.WithDecoderConcurrency(1))
				if err != nil {
					r.err = err
					break
				}
				r.tail = d
				continue
			}
			r.cur, r.off = j, 0
			j.refs.Store(1)
		}
		if r.off < len(r.cur.out) {
			n := len(p)
			if len(p) == 0 || &p[0] != &lentSink[0] {
				n = copy(p, r.cur.out[r.off:])
			} else if rest := len(r.cur.out) - r.off; n > rest {
				n = rest
			}
			r.off += n
			return n, nil
		}
		r.cur.release()
		r.cur = nil
	}
	return 0, r.err
}

// lentSink is the buffer a reader of lent bytes reads them again into
// through the tar reader, to move it past them (see lend): a frameReader
// then skips them without copying. Nothing is ever written into it.
var lentSink [chunkSize]byte

// lend returns the next at most max decoded bytes without reading them: the
// caller gets them as they are in the frame's buffer, which stays theirs
// until they call j.release, and then reads as many into lentSink[:len(b)]
// (itself or through a reader on top, such as a tar reader for a file's
// data) to move on. It returns nil when there is nothing it can lend: the
// stream has ended or failed, or goes on through the streaming decoder (see
// decodeJob.tail); Read then says which.
func (r *frameReader) lend(max int) ([]byte, *decodeJob) {
	for r.err == nil && r.tail == nil {
		if r.cur == nil || r.off == len(r.cur.out) {
			// Read moves to the next frame, or finds the end or an
			// error, which it keeps for the next Read.
			if _, err := r.Read(lentSink[:0]); err != nil {
				break
			}
			continue
		}
		b := r.cur.out[r.off:]
		r.cur.refs.Add(1)
		return b[:min(len(b), max)], r.cur
	}
	return nil, nil
}

// Close stops the decoding and waits for the goroutines.
func (r *frameReader) Close() error {
	r.once.Do(func() {
		close(r.quit)
		// Drain what split has queued, so that it never blocks on a full
		// channel, and wait for it and the decoders to stop.
		for j := range r.order {
			<-j.done
		}
		r.wg.Wait()
		r.dec.Close()
		if r.tail != nil {
			r.tail.Close()
		}
		if r.err == nil {
			r.err = errors.New("read from a closed archive")
		}
	})
	return nil
}
