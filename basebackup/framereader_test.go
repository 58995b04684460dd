package basebackup

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// archiveBytes is 5.5 frames of what archives hold: compressible pages,
// zeros (RLE blocks) and random bytes (raw blocks).
func archiveBytes() []byte {
	rng := rand.New(rand.NewPCG(5, 6))
	data := make([]byte, 5*frameSize+frameSize/2)
	for i := range data {
		switch {
		case i < 2*frameSize:
			data[i] = byte(rng.IntN(8))
		case i < 3*frameSize:
			// zeros
		default:
			data[i] = byte(rng.Uint32())
		}
	}
	return data
}

// framesOf compresses data as frameWriter does, one frame per frameSize
// bytes, and returns the stream and where each frame starts in it.
func framesOf(t *testing.T, data []byte) ([]byte, []int) {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(frameSize), zstd.WithZeroFrames(true))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var out []byte
	var starts []int
	for p := data; ; p = p[min(len(p), frameSize):] {
		starts = append(starts, len(out))
		out = enc.EncodeAll(p[:min(len(p), frameSize)], out)
		if len(p) <= frameSize {
			return out, starts
		}
	}
}

// streamed compresses data as one frame of unknown size, as walhub wrote
// archives before frameWriter.
func streamed(t *testing.T, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	enc, err := zstd.NewWriter(&out, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// readInPieces reads r to its end or first error in reads of up to 70000
// bytes.
func readInPieces(r io.Reader) ([]byte, error) {
	var got []byte
	buf := make([]byte, 70000)
	rng := rand.New(rand.NewPCG(1, 2))
	for {
		n, err := r.Read(buf[:1+rng.IntN(len(buf))])
		got = append(got, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
	}
}

func TestFrameReaderReturnsFramesInOrderWhateverOrderTheyAreDecodedIn(t *testing.T) {
	data := archiveBytes()
	stream, starts := framesOf(t, data)
	cases := []struct {
		name    string
		workers int
		delay   func(seq int)
	}{
		{"one decoder", 1, nil},
		{"four decoders", 4, nil},
		// The first frames take longest: the later ones are done first.
		{"later frames done first", 4, func(seq int) { time.Sleep(time.Duration(max(0, 3-seq)) * 20 * time.Millisecond) }},
		{"every other frame late", 3, func(seq int) { time.Sleep(time.Duration(seq%2) * 10 * time.Millisecond) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := newFrameReader(bufio.NewReader(bytes.NewReader(stream)), tc.workers, tc.delay)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := readInPieces(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, %d went in, or they differ", len(got), len(data))
			}
			if r.frames != len(starts) {
				t.Fatalf("decoded %d frames on their own, the stream has %d", r.frames, len(starts))
			}
		})
	}
}

func TestDecompressReadsArchivesOfEveryWalhubVersion(t *testing.T) {
	data := archiveBytes()
	frames, starts := framesOf(t, data)
	old := streamed(t, data)
	empty, _ := framesOf(t, nil)
	cases := []struct {
		name     string
		stream   []byte
		want     []byte
		parallel bool
		// own is how many frames the frameReader decodes on their own.
		own int
	}{
		{"frames of frameSize", frames, data, true, len(starts)},
		{"an empty archive: one empty frame", empty, nil, true, 1},
		{"no bytes at all", nil, nil, false, 0},
		{"one frame of unknown size (older walhub)", old, data, false, 0},
		{"frames, then a frame of unknown size", append(append([]byte{}, frames...), old...), append(append([]byte{}, data...), data...), true, len(starts)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Decompress(bytes.NewReader(tc.stream), "zstd")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			fr, parallel := r.(*frameReader)
			if parallel != tc.parallel {
				t.Fatalf("decoded frame by frame: %v, want %v", parallel, tc.parallel)
			}
			got, err := readInPieces(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("read %d bytes, %d went in, or they differ", len(got), len(tc.want))
			}
			if parallel && fr.frames != tc.own {
				t.Fatalf("decoded %d frames on their own, want %d", fr.frames, tc.own)
			}
		})
	}
}

func TestFrameReaderFailsAtACorruptFrameAndReturnsNothingOfIt(t *testing.T) {
	data := archiveBytes()
	stream, starts := framesOf(t, data)
	const bad = 2 // the frame that is damaged; frames 0 and 1 are intact
	damaged := func(f func(s []byte) []byte) []byte { return f(append([]byte{}, stream...)) }
	cases := []struct {
		name   string
		stream []byte
		// intact is how many bytes come out before the error.
		intact int
	}{
		{"a flipped bit in a frame's blocks", damaged(func(s []byte) []byte {
			s[(starts[bad]+starts[bad+1])/2] ^= 0x04
			return s
		}), bad * frameSize},
		{"a frame's checksum", damaged(func(s []byte) []byte {
			s[starts[bad+1]-2] ^= 0xff
			return s
		}), bad * frameSize},
		{"a block header of the reserved type", damaged(func(s []byte) []byte {
			var h zstd.Header
			if err := h.Decode(s[starts[bad]:]); err != nil {
				t.Fatal(err)
			}
			s[starts[bad]+h.HeaderSize] |= 3 << 1
			return s
		}), bad * frameSize},
		{"a frame cut short", stream[:starts[bad+1]-10], bad * frameSize},
		{"cut inside a frame header", stream[:starts[bad]+3], bad * frameSize},
		{"garbage after the last frame", append(append([]byte{}, stream...), "not zstd at all"...), len(data)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Decompress(bytes.NewReader(tc.stream), "zstd")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := readInPieces(r)
			if err == nil {
				t.Fatal("a damaged stream read without an error")
			}
			if !bytes.Equal(got, data[:tc.intact]) {
				t.Fatalf("read %d bytes before the error (%v), want exactly the %d of the intact frames", len(got), err, tc.intact)
			}
			if _, err2 := r.Read(make([]byte, 10)); err2 == nil {
				t.Fatal("Read after an error succeeded")
			}
		})
	}
}

// slowReader returns at most n bytes a read, so that split is still reading
// when the reader is closed.
type slowReader struct {
	r io.Reader
	n int
}

func (s slowReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), s.n)]) }

func TestFrameReaderClosesMidStream(t *testing.T) {
	data := archiveBytes()
	stream, _ := framesOf(t, data)
	for _, read := range []int{0, 1000, frameSize + 10} {
		r, err := newFrameReader(bufio.NewReaderSize(slowReader{bytes.NewReader(stream), 4096}, 4096), 2,
			func(int) { time.Sleep(time.Millisecond) })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, make([]byte, read)); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(make([]byte, 10)); err == nil {
			t.Fatal("Read after Close succeeded")
		}
	}
}

func TestFrameReaderLendsDecodedBytesThatStayIntactUntilReleased(t *testing.T) {
	data := archiveBytes()
	stream, _ := framesOf(t, data)
	// One decoder: 3 frame buffers for 5.5 frames, so buffers are reused.
	r, err := newFrameReader(bufio.NewReader(bytes.NewReader(stream)), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got, held, want []byte
	var frame *decodeJob
	heldAt := 0
	check := func() {
		if !bytes.Equal(held, want) {
			t.Fatalf("the part lent at %d changed before it was released", heldAt)
		}
		frame.release()
		held = nil
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for {
		if held == nil {
			// Lend a part and keep it while the reading goes on.
			if held, frame = r.lend(1 + rng.IntN(200000)); held == nil {
				break
			}
			want, heldAt = bytes.Clone(held), len(got)
			n, err := r.Read(lentSink[:len(held)])
			if n != len(held) || err != nil {
				t.Fatalf("reading the lent %d bytes into lentSink: %d, %v", len(held), n, err)
			}
			got = append(got, held...)
			continue
		}
		buf := make([]byte, 1+rng.IntN(300000))
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > heldAt+3*frameSize {
			check() // three frames on, every other buffer was reused
		}
	}
	if held != nil {
		check()
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, not the %d that went in", len(got), len(data))
	}
	if b, _ := r.lend(10); b != nil {
		t.Errorf("lent %d bytes past the end", len(b))
	}
}

func TestFrameReaderReadsIntoLentSinkWithoutCopying(t *testing.T) {
	data := archiveBytes()
	stream, _ := framesOf(t, data)
	r, err := newFrameReader(bufio.NewReader(bytes.NewReader(stream)), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Skip the first 1.5 frames through lentSink, read the rest.
	for left := frameSize + frameSize/2; left > 0; {
		n, err := r.Read(lentSink[:min(left, len(lentSink))])
		if err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	if lentSink != [chunkSize]byte{} {
		t.Fatal("bytes were copied into lentSink")
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, data[frameSize+frameSize/2:]) {
		t.Fatalf("the rest: %d bytes (%v), want %d", len(rest), err, len(data)-frameSize-frameSize/2)
	}
}

func TestFrameReaderReadsFramesIntoBuffersAllocatedUpFront(t *testing.T) {
	data := archiveBytes() // raw blocks too: frames of more than frameSize
	stream, _ := framesOf(t, data)
	r, err := newFrameReader(bufio.NewReader(bytes.NewReader(stream)), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(data))
	}
	r.Close()
	if len(r.free) == 0 {
		t.Fatal("no frame buffer given back")
	}
	for len(r.free) > 0 {
		// A buffer grown by append has a larger capacity.
		if j := <-r.free; cap(j.in) != compressedFrameBuffer {
			t.Errorf("a frame was read into a buffer of %d bytes, not the %d allocated up front", cap(j.in), compressedFrameBuffer)
		}
	}
}
