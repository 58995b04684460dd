package basebackup

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestCheckFrameFindsAFrameThatDoesNotDecodeToItsInput(t *testing.T) {
	raw := []byte(strings.Repeat("walhub archive bytes ", 50000))
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	good := enc.EncodeAll(raw, nil)
	flipped := append([]byte{}, good...)
	flipped[len(flipped)/2] ^= 0x10
	other := append([]byte{}, raw...)
	other[len(other)-1] = 'X'
	cases := []struct {
		name  string
		frame []byte
		in    []byte
		ok    bool
	}{
		{"intact", good, raw, true},
		{"a flipped bit", flipped, raw, false},
		{"truncated", good[:len(good)-5], raw, false},
		{"garbage after the frame", append(append([]byte{}, good...), 1, 2, 3, 4, 5, 6, 7, 8), raw, false},
		{"another input", good, other, false},
		{"a shorter input", good, raw[:len(raw)-1], false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkFrame(dec, tc.frame, tc.in, nil)
			if ok := err == nil; ok != tc.ok {
				t.Fatalf("err %v; want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestFrameWriterRoundTripsWhateverTheWriteSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	compressible := make([]byte, 3*frameSize+12345)
	for i := range compressible {
		compressible[i] = byte(rng.IntN(8))
	}
	cases := []struct {
		name    string
		data    []byte
		pieces  int // largest Write
		workers int
	}{
		{"empty", nil, 1, 2},
		{"one byte", []byte{7}, 1, 2},
		{"exactly one frame", compressible[:frameSize], 32 << 10, 2},
		{"several frames, small writes", compressible, 1000, 2},
		{"several frames, one write", compressible, len(compressible), 3},
		{"one worker", compressible, 65536, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			w, err := newFrameWriter(&out, zstd.SpeedFastest, tc.workers)
			if err != nil {
				t.Fatal(err)
			}
			for p := tc.data; len(p) > 0; {
				n := min(len(p), 1+rng.IntN(tc.pieces))
				if m, err := w.Write(p[:n]); m != n || err != nil {
					t.Fatalf("Write = %d, %v", m, err)
				}
				p = p[n:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("late")); err == nil {
				t.Fatal("Write after Close succeeded")
			}
			if out.Len() == 0 {
				t.Fatal("nothing written: even an empty archive is one zstd frame")
			}
			r, err := Decompress(&out, "zstd")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("decompressed %d bytes, wrote %d, or they differ", len(got), len(tc.data))
			}
		})
	}
}

// failingWriter accepts limit bytes, then fails.
type failingWriter struct{ limit int }

var errDiskFull = errors.New("disk full")

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.limit {
		n := f.limit
		f.limit = 0
		return n, errDiskFull
	}
	f.limit -= len(p)
	return len(p), nil
}

func TestFrameWriterReportsAnOutputErrorAndAbortAfterCloseIsSafe(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 5*frameSize/16)
	for _, limit := range []int{0, 100} {
		w, err := newFrameWriter(&failingWriter{limit: limit}, zstd.SpeedFastest, 2)
		if err != nil {
			t.Fatal(err)
		}
		_, werr := w.Write(data)
		cerr := w.Close()
		if !errors.Is(werr, errDiskFull) && !errors.Is(cerr, errDiskFull) {
			t.Fatalf("limit %d: Write: %v, Close: %v; want the output's error", limit, werr, cerr)
		}
		w.Abort()
		if _, err := w.Write([]byte("more")); err == nil {
			t.Fatalf("limit %d: Write after a failure succeeded", limit)
		}
	}
	// Abort in the middle of an archive stops the workers and returns.
	w, err := newFrameWriter(io.Discard, zstd.SpeedFastest, 2)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Abort()
	if err := w.Close(); err == nil {
		t.Fatal("Close after Abort succeeded")
	}
}
