package stream

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/walname"
	"github.com/walhub/walhub/walrecord"
)

// wholeSegment is a segment of valid WAL whose last record ends exactly at
// the segment's end: on every page one record fills what its header leaves.
func wholeSegment(segNo walname.SegNo) []byte {
	start := walname.SegmentStart(segNo, testSegSize)
	data := make([]byte, 0, testSegSize)
	var prev walname.LSN
	for off := 0; off < testSegSize; off += walrecord.PageSize {
		hdr := 24
		info := uint16(0)
		if off == 0 {
			hdr, info = 40, 0x0002 // XLP_LONG_HEADER
		}
		page := make([]byte, walrecord.PageSize)
		binary.LittleEndian.PutUint16(page[0:], 0xD110)
		binary.LittleEndian.PutUint16(page[2:], info)
		binary.LittleEndian.PutUint32(page[4:], 1)
		binary.LittleEndian.PutUint64(page[8:], uint64(start)+uint64(off))
		if off == 0 {
			binary.LittleEndian.PutUint64(page[24:], 7000000000000000001)
			binary.LittleEndian.PutUint32(page[32:], testSegSize)
			binary.LittleEndian.PutUint32(page[36:], walrecord.PageSize)
		}
		rec := page[hdr:]
		binary.LittleEndian.PutUint32(rec[0:], uint32(len(rec)))
		binary.LittleEndian.PutUint64(rec[8:], uint64(prev))
		rec[17] = 21 // a resource manager the decoder does not read
		crc := crc32.Update(0, crc32.MakeTable(crc32.Castagnoli), rec[24:])
		binary.LittleEndian.PutUint32(rec[20:], crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), rec[:20]))
		prev = start + walname.LSN(off+hdr)
		data = append(data, page...)
	}
	return data
}

// After a crash between the end of a segment and the creation of the next
// .partial, the newest .partial may hold the whole segment, proven to its
// last byte (its last record ends exactly at its end). It is complete: it is
// stored, and streaming starts after it. (Resuming inside it would have the
// writer append to the next segment's .partial, which does not exist: every
// session failed the same way.)
func TestResumePointStoresANewestPartialProvenWhole(t *testing.T) {
	ctx := context.Background()
	repo, cat, srv := testRepository(t)
	const segNo = 5
	name := walname.SegmentName(1, segNo, testSegSize)
	path := repo.Work.PartialFile("main", name)
	os.MkdirAll(filepath.Dir(path), 0o750)
	if err := os.WriteFile(path, wholeSegment(segNo), 0o640); err != nil {
		t.Fatal(err)
	}
	r := NewReceiver(Options{Server: &config.Server{Name: "main"}, Repo: repo})
	s := &session{r: r, srv: srv, segSize: testSegSize}
	store, err := newSegmentStore(repo, srv, "zstd", 1, r.segmentStored)
	if err != nil {
		t.Fatal(err)
	}
	start, held, resume, err := s.resumePoint(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	next := walname.SegmentStart(segNo+1, testSegSize)
	if start != next || held != next || resume != nil {
		t.Fatalf("resume point %s (held %s, resume %+v), want %s after the whole segment", start, held, resume, next)
	}
	if _, err := cat.Segment(ctx, srv.ID, name); err != nil {
		t.Errorf("%s not stored: %v", name, err)
	}
	w, err := newWALWriter(r.files, testSegSize, 1, start, resume, func(completedSegment) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := w.write(pattern(start, 100)); err != nil {
		t.Errorf("streaming cannot go on from the resume point: %v", err)
	}
	w.close(false)
}
