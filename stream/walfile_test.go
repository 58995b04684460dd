package stream

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

const testSegSize = 1 << 20

// pattern returns n bytes that differ at every position of the WAL stream.
func pattern(start walname.LSN, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((uint64(start) + uint64(i)) * 7 >> 3)
	}
	return b
}

func TestWALWriterSplitsAtSegmentBoundaries(t *testing.T) {
	tests := []struct {
		name   string
		start  walname.LSN
		chunks []int
		// complete segments handed on, and bytes in the last .partial
		wantComplete []walname.SegNo
		wantPartial  int
	}{
		{"within one segment", 3 << 20, []int{100, 8192}, nil, 8292},
		{"exactly one segment", 3 << 20, []int{testSegSize / 2, testSegSize / 2}, []walname.SegNo{3}, 0},
		{"message across a boundary", 3 << 20, []int{testSegSize - 10, 128 << 10}, []walname.SegNo{3}, 128<<10 - 10},
		{"message longer than a segment", 5 << 20, []int{testSegSize*2 + 5}, []walname.SegNo{5, 6}, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			work, _ := storage.NewWorkArea(t.TempDir())
			var got []completedSegment
			w, err := newWALWriter(newPartialFiles(work, "main"), testSegSize, 1, tc.start, nil, func(c completedSegment) error {
				got = append(got, c)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			pos := tc.start
			for _, n := range tc.chunks {
				if err := w.write(pattern(pos, n)); err != nil {
					t.Fatal(err)
				}
				pos += walname.LSN(n)
			}
			if w.pos != pos {
				t.Fatalf("pos %s, want %s", w.pos, pos)
			}
			if len(got) != len(tc.wantComplete) {
				t.Fatalf("completed %d segments, want %d", len(got), len(tc.wantComplete))
			}
			for i, c := range got {
				if c.SegNo != tc.wantComplete[i] {
					t.Errorf("completed segment %d, want %d", c.SegNo, tc.wantComplete[i])
				}
				data, err := os.ReadFile(c.Partial)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(data, pattern(walname.SegmentStart(c.SegNo, testSegSize), testSegSize)) {
					t.Errorf("segment %s does not hold its part of the stream", c.Name)
				}
				if c.Checksum != checksum.Of(data) {
					t.Errorf("segment %s: checksum %q, want %s", c.Name, c.Checksum, checksum.Of(data))
				}
			}
			// Once a segment is complete the next .partial exists and is synced:
			// the flushed position may cover the boundary.
			if len(got) > 0 && w.synced < walname.SegmentStart(got[len(got)-1].SegNo+1, testSegSize) {
				t.Errorf("synced %s does not cover the completed segments", w.synced)
			}
			if err := w.sync(); err != nil || w.synced != pos {
				t.Fatalf("sync: %v, synced %s want %s", err, w.synced, pos)
			}
			name := walname.SegmentName(1, walname.SegmentOf(pos, testSegSize), testSegSize)
			fi, err := os.Stat(work.PartialFile("main", name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != int64(tc.wantPartial) {
				t.Errorf("%s.partial holds %d bytes, want %d", name, fi.Size(), tc.wantPartial)
			}
			w.close(false)
		})
	}
}

// A segment resumed in its .partial after a restart was not all seen by the
// writer: it comes with no checksum (the store computes it from the file);
// the next segment, written whole, comes with its own.
func TestWALWriterGivesNoChecksumForAResumedSegment(t *testing.T) {
	work, _ := storage.NewWorkArea(t.TempDir())
	const segNo = 3
	start := walname.SegmentStart(segNo, testSegSize)
	name := walname.SegmentName(1, segNo, testSegSize)
	f, err := work.CreatePartial("main", name)
	if err != nil {
		t.Fatal(err)
	}
	half := walname.LSN(testSegSize / 2)
	if _, err := f.Write(pattern(start, int(half))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	resume := &partialResume{Partial: storage.Partial{TimeLine: 1, SegNo: segNo, Name: name, Path: f.Name()},
		Page: start + half, End: start + half}
	var got []completedSegment
	w, err := newWALWriter(newPartialFiles(work, "main"), testSegSize, 1, start+half, resume, func(c completedSegment) error {
		got = append(got, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.write(pattern(start+half, testSegSize/2+testSegSize)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("completed %d segments, want 2", len(got))
	}
	if got[0].Checksum != "" {
		t.Errorf("resumed segment %s: checksum %q, want none", got[0].Name, got[0].Checksum)
	}
	if want := checksum.Of(pattern(start+testSegSize, testSegSize)); got[1].Checksum != want {
		t.Errorf("segment %s: checksum %q, want %s", got[1].Name, got[1].Checksum, want)
	}
}

func TestWALWriterRefusesUnalignedStart(t *testing.T) {
	if _, err := newWALWriter(newPartialFiles(storage.OpenWorkArea(t.TempDir()), "main"), testSegSize, 1, 3<<20+16, nil, nil); err == nil {
		t.Fatal("a start inside a segment was accepted")
	}
}

func TestEndTimelineRemovesEmptyPartialOnly(t *testing.T) {
	work, _ := storage.NewWorkArea(t.TempDir())
	w, _ := newWALWriter(newPartialFiles(work, "main"), testSegSize, 1, 1<<20, nil, func(completedSegment) error { return nil })
	if err := w.write(pattern(1<<20, testSegSize)); err != nil {
		t.Fatal(err)
	}
	// The switch point is exactly at the boundary: the eagerly created next
	// .partial is empty and goes.
	if err := w.endTimeline(); err != nil {
		t.Fatal(err)
	}
	path := work.PartialFile("main", "000000010000000000000002")
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("empty .partial left at the end of the timeline: %v", err)
	}
	w, _ = newWALWriter(newPartialFiles(work, "main"), testSegSize, 1, 2<<20, nil, func(completedSegment) error { return nil })
	w.write(pattern(2<<20, 100))
	if err := w.endTimeline(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 100 {
		t.Errorf("the old timeline's last .partial must stay: %v", err)
	}
}

func TestScanRecentWALOrdersPartialsAndRemovesTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	work := storage.OpenWorkArea(dir)
	touch := func(rel string) string {
		path := filepath.Join(dir, filepath.FromSlash(rel))
		os.MkdirAll(filepath.Dir(path), 0o750)
		os.WriteFile(path, []byte("x"), 0o640)
		return path
	}
	// 1 MiB segments: 4096 per log, so segment 0x1005 is in log 1.
	for _, name := range []string{"000000020000000100000005", "000000010000000100000005", "000000010000000100000004",
		"000000010000000100000003", "000000010000000000000FFF"} {
		touch(storage.PartialPath("main", name))
	}
	temps := []string{touch("main/wal/0000000100000001/.000000010000000100000009.zst.tmp-1"),
		touch("main/wal/.00000002.history.tmp-7")}
	old := touch("main/wal/0000000100000000/.000000010000000000000001.zst.tmp-3")
	got, err := work.Partials("main", testSegSize, 0x1000)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
	}
	want := []string{"000000010000000100000003", "000000010000000100000004", "000000010000000100000005", "000000020000000100000005"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("found %v, want %v (nothing from log 0: it is before segment 0x1000)", names, want)
	}
	for _, p := range temps {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("temporary file %s left", p)
		}
	}
	if _, err := os.Stat(old); err != nil {
		t.Errorf("the scan went into a directory before the resume point: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"16MB": 16 << 20, "1MB": 1 << 20, "1GB": 1 << 30, "512kB": 512 << 10, "4096": 4096} {
		got, err := walname.ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := walname.ParseSize("sixteen"); err == nil {
		t.Error("parseSize accepted nonsense")
	}
}

// The status update reports flush exactly as given, zero included: never the
// write position in its place.
func TestStatusUpdateKeepsFlushApartFromWrite(t *testing.T) {
	msg := statusMessage(0x5000000, 0, true)
	if len(msg) != 34 || msg[0] != 'r' {
		t.Fatalf("message %x", msg)
	}
	if w := binary.BigEndian.Uint64(msg[1:]); w != 0x5000000 {
		t.Errorf("write %x", w)
	}
	if f := binary.BigEndian.Uint64(msg[9:]); f != 0 {
		t.Errorf("flush %x, want 0", f)
	}
	if a := binary.BigEndian.Uint64(msg[17:]); a != 0 {
		t.Errorf("apply %x, want 0", a)
	}
	at := pgEpoch.Add(time.Duration(binary.BigEndian.Uint64(msg[25:])) * time.Microsecond)
	if time.Since(at) > time.Minute || msg[33] != 1 {
		t.Errorf("time %s, reply %d", at, msg[33])
	}
}
