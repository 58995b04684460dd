package stream

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// completedSegment is a .partial that holds a whole segment, fsynced, ready to
// be stored under its final name.
type completedSegment struct {
	TimeLine walname.TimeLine
	SegNo    walname.SegNo
	Name     string
	// Partial is the local path of the .partial file.
	Partial string
	// Checksum is that of the segment's bytes as they were received
	// (checksum.Format), or "" when they were not all seen (a segment
	// resumed after a restart, one found at startup).
	Checksum string
}

// writebackChunk is how much written WAL may wait in the page cache before
// the kernel is asked to start writing it out.
const writebackChunk = 1 << 20

// walWriter writes the WAL of one timeline into .partial files, one per
// segment, splitting the stream at segment boundaries.
//
// On disk, a .partial is always either the newest one (being received) or a
// complete, fsynced segment waiting to be stored: the next .partial is created
// (or a spare file renamed to its name, see partialFiles) and its directory
// entry fsynced only after the previous one is complete and fsynced. A
// restart relies on that to tell the two apart.
type walWriter struct {
	files   *partialFiles
	segSize uint64
	tli     walname.TimeLine

	file  *os.File
	segNo walname.SegNo
	name  string
	// recycled says the file was a spare: past what is written it holds an
	// older segment's WAL.
	recycled bool
	// dirDirty is set when a .partial was created whose directory entry is not
	// yet fsynced.
	dirDirty bool
	// writtenBack is the offset in the file up to which writeback was started.
	writtenBack uint64
	// sum is the CRC-32C of the bytes of the open segment so far, when
	// summed: every byte of it went through write (it was not resumed).
	sum    uint32
	summed bool
	// resuming is set until the .partial that streaming resumes in is
	// opened; held is what it holds from pos on, which the server sends
	// again: compared, not written.
	resuming bool
	held     []byte

	// pos is the end of the WAL written (last byte + 1); synced the end of
	// what is fsynced. Nothing but sync advances synced.
	pos, synced walname.LSN
	// completed receives every segment as it is closed.
	completed func(completedSegment) error
}

// newWALWriter prepares to write timeline tli from start, which must be a
// segment boundary, or, with resume, resume.Page inside the newest .partial
// (see recoverPartial). Everything before start is already durable in the hub.
func newWALWriter(files *partialFiles, segSize uint64, tli walname.TimeLine, start walname.LSN,
	resume *partialResume, completed func(completedSegment) error) (*walWriter, error) {
	w := &walWriter{files: files, segSize: segSize, tli: tli, pos: start, synced: start,
		completed: completed}
	if resume != nil {
		if start != resume.Page || resume.Partial.TimeLine != tli {
			return nil, fmt.Errorf("stream start %s on timeline %d is not where %s.partial resumes", start, tli, resume.Partial.Name)
		}
		w.resuming, w.held = true, resume.Tail
	} else if walname.SegmentOffset(start, segSize) != 0 {
		return nil, fmt.Errorf("stream start %s is not at a segment boundary", start)
	}
	return w, nil
}

// open creates (or replaces: the server sends the segment again from its
// start) the .partial of the segment that holds w.pos, from a spare file
// when there is one; when resuming, it opens the existing one to append to
// it.
func (w *walWriter) open() error {
	w.segNo = walname.SegmentOf(w.pos, w.segSize)
	w.name = walname.SegmentName(w.tli, w.segNo, w.segSize)
	offset := walname.SegmentOffset(w.pos, w.segSize)
	if w.resuming {
		w.resuming = false
		f, err := w.files.resume(w.name, int64(offset)+int64(len(w.held)))
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err == nil && uint64(fi.Size()) != offset+uint64(len(w.held)) {
			err = fmt.Errorf("%s.partial holds %d bytes, expected %d", w.name, fi.Size(), offset+uint64(len(w.held)))
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("resume in %s.partial: %w", w.name, err)
		}
		// recoverPartial made the file and its directory entry durable.
		// What it holds before offset is not seen: no checksum.
		w.file, w.dirDirty, w.writtenBack, w.recycled = f, false, offset, false
		w.sum, w.summed = 0, false
		return nil
	}
	f, recycled, err := w.files.create(w.name)
	if err != nil {
		return err
	}
	w.file, w.recycled = f, recycled
	w.dirDirty = true
	w.writtenBack = 0
	// A new .partial starts at the segment's start (newWALWriter).
	w.sum, w.summed = 0, offset == 0
	return nil
}

// write appends WAL that starts at w.pos, splitting it at segment boundaries.
func (w *walWriter) write(data []byte) error {
	for len(data) > 0 {
		if w.file == nil {
			if err := w.open(); err != nil {
				return err
			}
		}
		room := w.segSize - walname.SegmentOffset(w.pos, w.segSize)
		n := uint64(len(data))
		if n > room {
			n = room
		}
		if len(w.held) > 0 {
			// The server sends again what the .partial holds from where
			// streaming resumed: it must be the same WAL.
			n = min(n, uint64(len(w.held)))
			if !bytes.Equal(data[:n], w.held[:n]) {
				return &failedError{fmt.Errorf("the server sent WAL at %s that differs from what %s.partial holds: "+
					"the hub's WAL and the server's have diverged (another cluster or a restored server behind the same name?)", w.pos, w.name)}
			}
			w.held = w.held[n:]
		} else {
			if _, err := w.file.Write(data[:n]); err != nil {
				return fmt.Errorf("store WAL at %s: %w", w.pos, err)
			}
			w.files.written.Store(int64(walname.SegmentOffset(w.pos, w.segSize) + n))
		}
		if w.summed {
			w.sum = checksum.Update(w.sum, data[:n])
		}
		w.pos += walname.LSN(n)
		data = data[n:]
		if off := walname.SegmentOffset(w.pos, w.segSize); off == 0 || off-w.writtenBack >= writebackChunk {
			end := off
			if end == 0 {
				end = w.segSize
			}
			// Disk writes overlap with receiving: the fsync at the end of
			// the segment finds little left to do.
			storage.StartWriteback(int(w.file.Fd()), int64(w.writtenBack), int64(end-w.writtenBack))
			w.writtenBack = end
		}
		if walname.SegmentOffset(w.pos, w.segSize) == 0 {
			if err := w.closeSegment(); err != nil {
				return err
			}
			// Create the next .partial now, so that once it is synced a restart
			// knows the one just closed is complete.
			if err := w.open(); err != nil {
				return err
			}
			if err := w.sync(); err != nil {
				return err
			}
		}
	}
	return nil
}

// closeSegment fsyncs and closes the complete segment and hands it on.
func (w *walWriter) closeSegment() error {
	name, path := w.name, w.file.Name()
	if err := w.file.Sync(); err != nil {
		return fmt.Errorf("fsync %s.partial: %w", name, err)
	}
	if err := w.file.Close(); err != nil {
		return fmt.Errorf("close %s.partial: %w", name, err)
	}
	w.file = nil
	// Whole: a recycled file's every byte is now this segment's.
	w.files.closed()
	seg := completedSegment{TimeLine: w.tli, SegNo: w.segNo, Name: name, Partial: path}
	if w.summed {
		seg.Checksum = checksum.Format(w.sum)
	}
	return w.completed(seg)
}

// sync makes everything written durable and only then advances synced, the
// position the receiver reports to the server as flushed. This is the one
// place where that position grows: the slot lets the server recycle WAL up to
// it, so it must never be ahead of what the hub holds after a crash.
func (w *walWriter) sync() error {
	if w.file != nil {
		if err := w.file.Sync(); err != nil {
			return fmt.Errorf("fsync %s.partial: %w", w.name, err)
		}
		if w.dirDirty {
			if err := storage.SyncDir(filepath.Dir(w.file.Name())); err != nil {
				return err
			}
			w.dirDirty = false
		}
	}
	w.synced = w.pos
	return nil
}

// partialName is the name of the .partial being written, "" when none is open.
func (w *walWriter) partialName() string {
	if w.file == nil {
		return ""
	}
	return w.name + ".partial"
}

// endTimeline syncs and closes the last, incomplete segment of a timeline that
// ended. It stays as a .partial (the WAL of the old timeline up to the switch
// point, cut there durably when the file was recycled: before the next
// timeline's .partial exists), unless nothing was written into it.
func (w *walWriter) endTimeline() error {
	if err := w.sync(); err != nil {
		return err
	}
	return w.close(true)
}

// close closes the open .partial without syncing what was written; with
// removeEmpty an empty one is removed. A recycled file is first cut at what
// was written, and that made durable, so that it holds no other segment's
// WAL: only then do readers see it whole (partialFiles), and a restart take
// its size for what it holds. Should that fail, readers stay bounded by what
// was written and a restart proves the file (recoverPartial).
func (w *walWriter) close(removeEmpty bool) error {
	if w.file == nil {
		return nil
	}
	f := w.file
	w.file = nil
	end := int64(walname.SegmentOffset(w.pos, w.segSize))
	remove := removeEmpty && end == 0
	var err error
	if w.recycled && !remove {
		if err = f.Truncate(end); err == nil {
			err = f.Sync()
		}
		if err != nil {
			err = fmt.Errorf("cut recycled %s.partial at %d bytes: %w", w.name, end, err)
		}
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close %s.partial: %w", w.name, cerr)
	}
	if err != nil {
		return err
	}
	w.files.closed()
	if remove {
		if err := os.Remove(f.Name()); err != nil {
			return fmt.Errorf("remove empty %s.partial: %w", w.name, err)
		}
	}
	return nil
}
