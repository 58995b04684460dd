package stream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// withSpare returns the .partial files of server "main" with one spare file
// that holds segment stale of the stream, whole: what a recycled .partial
// holds past what is written into it.
func withSpare(t *testing.T, work *storage.WorkArea, stale walname.SegNo) *partialFiles {
	t.Helper()
	files := newPartialFiles(work, "main")
	spare := work.SpareFile("main", 0)
	if err := os.MkdirAll(filepath.Dir(spare), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spare, pattern(walname.SegmentStart(stale, testSegSize), testSegSize), 0o640); err != nil {
		t.Fatal(err)
	}
	files.spares = []string{spare}
	files.next = 1
	return files
}

// A recycled .partial left behind incomplete (the end of a timeline, a
// session that ends) is cut at what was written, durably: past it is an
// older segment's WAL, which a restart would take for this one's when the
// file is not the newest (the end of a timeline), and a reader always.
func TestRecycledPartialIsCutWhenLeftIncomplete(t *testing.T) {
	for _, tc := range []struct {
		name  string
		leave func(w *walWriter) error
	}{
		{"end of timeline", func(w *walWriter) error { return w.endTimeline() }},
		{"session ends", func(w *walWriter) error { return w.close(false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			work, _ := storage.NewWorkArea(t.TempDir())
			files := withSpare(t, work, 1)
			start := walname.SegmentStart(5, testSegSize)
			w, err := newWALWriter(files, testSegSize, 1, start, nil, func(completedSegment) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			if err := w.write(pattern(start, 12345)); err != nil {
				t.Fatal(err)
			}
			if !w.recycled || len(files.spares) != 0 {
				t.Fatalf("the .partial was not made from the spare (recycled %v, spares %v)", w.recycled, files.spares)
			}
			if err := tc.leave(w); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(work.PartialFile("main", walname.SegmentName(1, 5, testSegSize)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, pattern(start, 12345)) {
				t.Errorf("the .partial holds %d bytes, want the 12345 written and nothing of the older segment", len(data))
			}
			if files.current != "" {
				t.Errorf("readers still bounded by the writer: %q", files.current)
			}
		})
	}
}

// A reader of a recycled .partial gets what the writer wrote, never the older
// segment's WAL past it; once the segment is complete, all of it. Before the
// receiver has checked what a crash left, no reader gets a .partial.
func TestOpenPartialReadsOnlyWhatWasWritten(t *testing.T) {
	work, _ := storage.NewWorkArea(t.TempDir())
	files := withSpare(t, work, 2)
	r := &Receiver{files: files}
	start := walname.SegmentStart(6, testSegSize)
	name := walname.SegmentName(1, 6, testSegSize)
	w, err := newWALWriter(files, testSegSize, 1, start, nil, func(completedSegment) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := w.write(pattern(start, 5000)); err != nil {
		t.Fatal(err)
	}
	if !w.recycled {
		t.Fatal("the .partial was not made from the spare")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := r.OpenPartial(ctx, name); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("opened before the receiver was ready: %v", err)
	}
	files.setReady()

	read := func(want []byte) {
		t.Helper()
		f, err := r.OpenPartial(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("read %d bytes of %s.partial, want the %d written", len(got), name, len(want))
		}
	}
	read(pattern(start, 5000))
	if err := w.write(pattern(start+5000, 3000)); err != nil {
		t.Fatal(err)
	}
	read(pattern(start, 8000))
	if err := w.write(pattern(start+8000, testSegSize-8000+10)); err != nil {
		t.Fatal(err)
	}
	read(pattern(start, testSegSize))
	if _, err := r.OpenPartial(context.Background(), walname.SegmentName(1, 9, testSegSize)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing .partial: %v", err)
	}
}

// The file of a stored segment is kept for reuse only when nothing else
// has it: a reader of it would find another segment's WAL under its name,
// and a file linked as the stored object (a local store without
// compression) would have the stored segment overwritten. The spares stay
// few.
func TestRetireReusesOnlyFilesNothingElseHas(t *testing.T) {
	for _, tc := range []struct {
		name string
		// hold makes something else have the file, with undo.
		hold  func(t *testing.T, r *Receiver, path string) func()
		spare bool
	}{
		{"free", func(*testing.T, *Receiver, string) func() { return func() {} }, true},
		{"open for reading", func(t *testing.T, r *Receiver, path string) func() {
			f, err := r.OpenPartial(context.Background(), filepath.Base(path[:len(path)-len(".partial")]))
			if err != nil {
				t.Fatal(err)
			}
			return func() { f.Close() }
		}, false},
		{"linked", func(t *testing.T, _ *Receiver, path string) func() {
			if err := os.Link(path, path+".object"); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}, false},
		{"spares full", func(t *testing.T, r *Receiver, _ string) func() {
			r.files.spares = make([]string, maxSpares)
			return func() { r.files.spares = nil }
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			work, _ := storage.NewWorkArea(t.TempDir())
			files := newPartialFiles(work, "main")
			files.setReady()
			r := &Receiver{files: files}
			start := walname.SegmentStart(3, testSegSize)
			var done []completedSegment
			w, err := newWALWriter(files, testSegSize, 1, start, nil, func(c completedSegment) error {
				done = append(done, c)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.write(pattern(start, testSegSize+100)); err != nil {
				t.Fatal(err)
			}
			path := done[0].Partial
			undo := tc.hold(t, r, path)
			if err := files.retire(path); err != nil {
				t.Fatal(err)
			}
			undo()
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still there: %v", path, err)
			}
			if got := len(files.spares) == 1; got != tc.spare {
				t.Fatalf("kept as a spare: %v, want %v (spares %v)", got, tc.spare, files.spares)
			}
			// The next segments are written into the spare, if any: what
			// held the file keeps its bytes.
			if err := w.write(pattern(start+testSegSize+100, 2*testSegSize)); err != nil {
				t.Fatal(err)
			}
			if tc.name == "linked" {
				data, err := os.ReadFile(path + ".object")
				if err != nil || !bytes.Equal(data, pattern(start, testSegSize)) {
					t.Errorf("the linked object was overwritten: %v", err)
				}
			}
		})
	}
}
