package stream

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/walname"
	"github.com/walhub/walhub/walrecord"
)

// contentIndex reads the WAL records of each segment as its bytes go to the
// repository, for the catalog's restore points and commit times. One
// decoder runs from segment to segment, so a record crossing a segment
// boundary is read whole; after a restart it resumes from the state recorded
// with the previous segment. It costs one pass over bytes already in memory
// and no I/O of its own: its result is committed with the segment's row.
type contentIndex struct {
	cat      *catalog.Catalog
	serverID int64
	segSize  uint64
	log      *slog.Logger
	dec      *walrecord.Decoder
}

// Begin implements repository.SegmentIndex.
func (x *contentIndex) Begin(ctx context.Context, tli walname.TimeLine, segno walname.SegNo, name string) io.Writer {
	return x.segment(ctx, completedSegment{TimeLine: tli, SegNo: segno, Name: name})
}

// Contents implements repository.SegmentIndex.
func (x *contentIndex) Contents(tli walname.TimeLine, segno walname.SegNo) *catalog.SegmentContents {
	return x.contents(completedSegment{TimeLine: tli, SegNo: segno})
}

// segment returns the writer the bytes of seg are to be written through, in order.
func (x *contentIndex) segment(ctx context.Context, seg completedSegment) *walrecord.Decoder {
	start := walname.SegmentStart(seg.SegNo, x.segSize)
	// The decoder goes on across a timeline switch: the new timeline's
	// segment repeats the old one's up to the switch point.
	if x.dec != nil && x.dec.Pos() == start {
		return x.dec
	}
	x.dec = nil
	if seg.SegNo > 0 {
		carry, err := x.cat.Carry(ctx, x.serverID, seg.TimeLine, seg.SegNo-1)
		if err == nil {
			if x.dec, err = walrecord.ResumeDecoder(x.segSize, carry); err == nil && x.dec.Pos() != start {
				x.dec = nil
			}
		}
		if err != nil && !errors.Is(err, catalog.ErrNotFound) {
			x.log.Warn("WAL index: reading segment from its start", "segment", seg.Name, "err", err)
		}
	}
	if x.dec == nil {
		x.dec = walrecord.NewDecoder(x.segSize, start)
	}
	return x.dec
}

// contents returns what the decoder found since segment was called,
// attributed to that segment.
func (x *contentIndex) contents(seg completedSegment) *catalog.SegmentContents {
	return summarize(x.dec.Events(), seg.TimeLine, seg.SegNo, x.dec.MarshalState())
}

// summarize turns the events read from a segment into its catalog contents.
func summarize(events []walrecord.Event, tli walname.TimeLine, segno walname.SegNo, carry []byte) *catalog.SegmentContents {
	c := &catalog.SegmentContents{Carry: carry}
	for _, e := range events {
		if e.Kind == walrecord.RestorePoint {
			c.RestorePoints = append(c.RestorePoints, catalog.RestorePoint{Name: e.Name, TimeLine: tli, LSN: e.LSN,
				EndLSN: e.End, Time: e.Time, SegNo: segno})
			continue
		}
		c.Add(catalog.XactRecord{LSN: e.LSN, Time: e.Time, XID: e.XID})
	}
	return c
}
