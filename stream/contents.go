package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
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

// backfillBatch is how many segments the backfill reads per catalog transaction.
const backfillBatch = 64

// backfill indexes the stored segments whose contents are not recorded (an
// archive stored before the WAL index existed), oldest first, reading each
// from the repository. It runs beside the receiver and stops with ctx.
func backfill(ctx context.Context, repo *repository.Repository, server string, log *slog.Logger) error {
	cat := repo.Catalog
	srv, err := cat.ServerByName(ctx, server)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil
	}
	if err != nil || srv.SegmentSize == 0 {
		return err
	}
	x := &contentIndex{cat: cat, serverID: srv.ID, segSize: srv.SegmentSize, log: log}
	total := 0
	start := time.Now()
	for ctx.Err() == nil {
		segs, err := cat.SegmentsWithoutContents(ctx, srv.ID, backfillBatch)
		if err != nil || len(segs) == 0 {
			if total > 0 && err == nil {
				log.Info("WAL index: read the segments stored before it existed", "segments", total,
					"seconds", time.Since(start).Seconds())
			}
			return err
		}
		var done []catalog.IndexedSegment
		for _, s := range segs {
			seg := completedSegment{TimeLine: s.TimeLine, SegNo: s.SegNo, Name: s.Name}
			if err := repo.ReadSegment(ctx, s, x.segment(ctx, seg)); err != nil {
				// Expire may have removed it meanwhile: its row is gone too.
				if _, lookErr := cat.Segment(ctx, srv.ID, s.Name); errors.Is(lookErr, catalog.ErrNotFound) {
					x.dec = nil
					continue
				}
				return fmt.Errorf("WAL index of segment %s: %w", s.Name, err)
			}
			done = append(done, catalog.IndexedSegment{TimeLine: s.TimeLine, SegNo: s.SegNo, SegmentContents: *x.contents(seg)})
		}
		if err := cat.SetSegmentContents(ctx, srv.ID, done); err != nil {
			return err
		}
		total += len(done)
	}
	return nil
}
