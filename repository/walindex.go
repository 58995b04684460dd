package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/walname"
	"github.com/walhub/walhub/walrecord"
)

// walIndex is the WAL content index: it reads the WAL records of each
// segment as its bytes go to the repository, for the catalog's restore
// points and commit times. One decoder runs from segment to segment, so a
// record crossing a segment boundary is read whole; after a restart it
// resumes from the state recorded with the previous segment. It costs one
// pass over bytes already in memory and no I/O of its own: its result is
// committed with the segment's row.
type walIndex struct {
	cat      *catalog.Catalog
	serverID int64
	segSize  uint64
	log      *slog.Logger
	dec      *walrecord.Decoder
}

// WALIndex returns the WAL content index of srv (its segment size bound), to
// pass to SegmentStorer.SetIndex: every segment stored then has its restore
// points and commit times recorded with its row.
func (r *Repository) WALIndex(srv catalog.Server, log *slog.Logger) SegmentIndex {
	return r.walIndex(srv.ID, srv.SegmentSize, log)
}

func (r *Repository) walIndex(serverID int64, segSize uint64, log *slog.Logger) *walIndex {
	if log == nil {
		log = slog.Default()
	}
	return &walIndex{cat: r.Catalog, serverID: serverID, segSize: segSize, log: log}
}

// Begin implements SegmentIndex.
func (x *walIndex) Begin(ctx context.Context, tli walname.TimeLine, segno walname.SegNo, name string) io.Writer {
	return x.segment(ctx, tli, segno, name)
}

// Contents implements SegmentIndex.
func (x *walIndex) Contents(tli walname.TimeLine, segno walname.SegNo) *catalog.SegmentContents {
	return summarize(x.dec.Events(), tli, segno, x.dec.MarshalState())
}

// segment returns the writer the bytes of the segment are to be written
// through, in order.
func (x *walIndex) segment(ctx context.Context, tli walname.TimeLine, segno walname.SegNo, name string) *walrecord.Decoder {
	start := walname.SegmentStart(segno, x.segSize)
	// The decoder goes on across a timeline switch: the new timeline's
	// segment repeats the old one's up to the switch point.
	if x.dec != nil && x.dec.Pos() == start {
		return x.dec
	}
	x.dec = nil
	if segno > 0 {
		carry, err := x.cat.Carry(ctx, x.serverID, tli, segno-1)
		if err == nil {
			if x.dec, err = walrecord.ResumeDecoder(x.segSize, carry); err == nil && x.dec.Pos() != start {
				x.dec = nil
			}
		}
		if err != nil && !errors.Is(err, catalog.ErrNotFound) {
			x.log.Warn("WAL index: reading segment from its start", "segment", name, "err", err)
		}
	}
	if x.dec == nil {
		x.dec = walrecord.NewDecoder(x.segSize, start)
	}
	return x.dec
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

// indexBatch is how many segments IndexStoredWAL reads per catalog transaction.
const indexBatch = 64

// IndexStoredWAL reads into the WAL index the stored segments of server
// whose contents are not recorded, oldest first, from the store: an archive
// stored before the index existed, a catalog rebuilt from the store, the
// segments a read-only hub's refresh cataloged. It returns how many it read,
// and stops with ctx.
func (r *Repository) IndexStoredWAL(ctx context.Context, server string, log *slog.Logger) (int, error) {
	cat := r.Catalog
	srv, err := cat.ServerByName(ctx, server)
	if errors.Is(err, catalog.ErrNotFound) {
		return 0, nil
	}
	if err != nil || srv.SegmentSize == 0 {
		return 0, err
	}
	x := r.walIndex(srv.ID, srv.SegmentSize, log)
	total := 0
	for ctx.Err() == nil {
		segs, err := cat.SegmentsWithoutContents(ctx, srv.ID, indexBatch)
		if err != nil || len(segs) == 0 {
			return total, err
		}
		var done []catalog.IndexedSegment
		for _, s := range segs {
			if err := r.ReadSegment(ctx, s, x.segment(ctx, s.TimeLine, s.SegNo, s.Name)); err != nil {
				// Expire may have removed it meanwhile: its row is gone too.
				if _, lookErr := cat.Segment(ctx, srv.ID, s.Name); errors.Is(lookErr, catalog.ErrNotFound) {
					x.dec = nil
					continue
				}
				return total, fmt.Errorf("WAL index of segment %s: %w", s.Name, err)
			}
			done = append(done, catalog.IndexedSegment{TimeLine: s.TimeLine, SegNo: s.SegNo, SegmentContents: *x.Contents(s.TimeLine, s.SegNo)})
		}
		if err := cat.SetSegmentContents(ctx, srv.ID, done); err != nil {
			return total, err
		}
		total += len(done)
	}
	return total, ctx.Err()
}
