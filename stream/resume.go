package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
	"github.com/walhub/walhub/walrecord"
)

// partialResume is where streaming resumes inside the newest .partial.
type partialResume struct {
	Partial storage.Partial
	// End is the end of the WAL proven whole in the .partial, which is cut
	// there; Page is the start of the page that holds End, where the server
	// is asked to send from. Tail is the file's bytes from Page to End: the
	// server sends them again, and they are compared, not written.
	Page, End walname.LSN
	Tail      []byte
	// Cut is how many bytes past End were cut off.
	Cut int64
}

// recoverPartial works out how much of the newest .partial can be kept when
// streaming resumes, cuts the file there and makes what is left durable.
//
// Why a proof and not the file's size: the receiver fsyncs a .partial only
// at status intervals and segment ends (an fsync per message would cost the
// server's commits their latency under synchronous replication), so after a
// kill -9 everything written is whole in the page cache, but after an OS
// crash the bytes past the last fsync may be anything the file system
// wrote back: a page whose header is intact and whose second half is zeros,
// a later page present and an earlier one missing. Recording the fsynced
// position in a file of its own would cost a second fsync on that hot path.
// Instead the WAL proves itself: every page header (magic, page address,
// flags) and the CRC of every record are checked from the segment's start
// (walrecord.Decoder.Verified), and the file is kept up to the end of the
// last record whose every byte was checked. A record continued from the
// previous segment is checked with the decoder state recorded with that
// segment; without it nothing is proven and the segment starts over, as
// pg_receivewal does. What was fsynced is always kept: fsynced bytes are
// whole, so the checks pass over them (up to the last record ending in them).
//
// Streaming then starts at the page that holds that end, the start point
// standbys and pg_receivewal use too (a page or segment boundary), and the
// server's copy of the bytes the file already holds from there is compared
// with them: a .partial from a history the server does not share fails the
// session instead of being extended.
//
// The fsync here makes the kept bytes durable before the session reports any
// of them as flushed (after a kill -9 they may still be only in the page
// cache); it is one fsync per session start.
func recoverPartial(ctx context.Context, cat *catalog.Catalog, serverID int64, segSize uint64, p storage.Partial) (partialResume, error) {
	segStart := walname.SegmentStart(p.SegNo, segSize)
	f, err := os.Open(p.Path)
	if err != nil {
		return partialResume{}, fmt.Errorf("resume in %s.partial: %w", p.Name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return partialResume{}, fmt.Errorf("resume in %s.partial: %w", p.Name, err)
	}
	size := min(uint64(fi.Size()), segSize)
	dec := resumeDecoder(ctx, cat, serverID, segSize, p)
	if _, err := io.Copy(dec, io.LimitReader(f, int64(size))); err != nil {
		return partialResume{}, fmt.Errorf("resume in %s.partial: %w", p.Name, err)
	}
	end := min(dec.VerifiedAtEnd(), segStart+walname.LSN(size))
	page := max(segStart, end-(end-segStart)%walrecord.PageSize)
	tail := make([]byte, end-page)
	if _, err := f.ReadAt(tail, int64(page-segStart)); err != nil {
		return partialResume{}, fmt.Errorf("resume in %s.partial: %w", p.Name, err)
	}
	if err := storage.TruncatePartial(p.Path, int64(end-segStart)); err != nil {
		return partialResume{}, err
	}
	return partialResume{Partial: p, Page: page, End: end, Tail: tail, Cut: fi.Size() - int64(end-segStart)}, nil
}

// resumeDecoder is a decoder for the WAL of p's segment from its start: in
// the state recorded after the previous segment when the catalog has it, so
// that a record continued from there is checked too.
func resumeDecoder(ctx context.Context, cat *catalog.Catalog, serverID int64, segSize uint64, p storage.Partial) *walrecord.Decoder {
	segStart := walname.SegmentStart(p.SegNo, segSize)
	if p.SegNo > 0 {
		// Without that state (none recorded, or the catalog failed) a record
		// continued from the previous segment is not proven: less is kept.
		if carry, err := cat.Carry(ctx, serverID, p.TimeLine, p.SegNo-1); err == nil {
			if dec, err := walrecord.ResumeDecoder(segSize, carry); err == nil && dec.Pos() == segStart {
				return dec
			}
		}
	}
	return walrecord.NewDecoder(segSize, segStart)
}

// loadDurable runs at start, before the first connection: it reads what the
// hub holds durably (the stored segments, the complete .partial files a
// crash left, the proven part of the newest .partial, cut there) into the
// state and metrics, so that status, check and /metrics show the real
// position, not 0/0 and a lag of the server's whole WAL, while the server is
// out of reach. From the previous state file it keeps the last word from the
// server (its position and when it was heard). After an unclean stop it logs
// what it recovered, in one line.
func (r *Receiver) loadDurable(ctx context.Context, prev State, prevErr error) error {
	cat, name := r.o.Repo.Catalog, r.o.Server.Name
	srv, err := cat.ServerByName(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) || err == nil && srv.SegmentSize == 0 {
		return nil // never connected: nothing is held
	}
	if err != nil {
		return err
	}
	segSize := srv.SegmentSize
	var end walname.LSN
	var tli walname.TimeLine
	var from walname.SegNo
	last, err := cat.LastSegment(ctx, srv.ID)
	switch {
	case err == nil:
		end, tli, from = walname.SegmentStart(last.SegNo+1, segSize), last.TimeLine, last.SegNo
	case !errors.Is(err, catalog.ErrNotFound):
		return err
	}
	partials, err := r.o.Repo.Work.Partials(name, segSize, from)
	if err != nil {
		return err
	}
	// Every .partial but the newest that is whole is complete and fsynced
	// (see walWriter); the session stores them first.
	complete := 0
	for i := 0; i+1 < len(partials); i++ {
		p := partials[i]
		if uint64(p.Size) != segSize {
			continue
		}
		complete++
		if walname.SegmentStart(p.SegNo, segSize) == end {
			end, tli = walname.SegmentStart(p.SegNo+1, segSize), p.TimeLine
		}
	}
	// The newest .partial, unless it lies before what is stored (the end of
	// a timeline that was left: kept as it is), is where streaming resumes.
	var res partialResume
	if n := len(partials); n > 0 && walname.SegmentStart(partials[n-1].SegNo, segSize) >= end {
		if res, err = recoverPartial(ctx, cat, srv.ID, segSize, partials[n-1]); err != nil {
			return err
		}
		if walname.SegmentStart(res.Partial.SegNo, segSize) == end {
			end, tli = res.End, res.Partial.TimeLine
		}
	}
	r.update(true, func(st *State) {
		st.SystemID, st.SegmentSize, st.TimeLine = srv.SystemID, segSize, tli
		st.ReceivedLSN, st.FlushedLSN = end, end
		if last.Name != "" {
			st.LastSegment, st.LastSegmentAt = last.Name, last.ReceivedAt.UTC()
		}
		if res.Partial.Name != "" {
			st.Partial = res.Partial.Name + ".partial"
		}
		if prevErr == nil && prev.Server == name {
			st.ServerLSN, st.LastMessageAt = prev.ServerLSN, prev.LastMessageAt
		}
	})
	if r.m != nil {
		st := r.State()
		r.m.flushedLSN.Set(float64(end))
		r.m.receivedLSN.Set(float64(end))
		r.m.serverLSN.Set(float64(st.ServerLSN))
		if !st.LastSegmentAt.IsZero() {
			r.m.lastSegmentAt.Set(float64(st.LastSegmentAt.Unix()))
		}
	}
	if prevErr == nil && prev.State != "stopped" {
		attrs := []any{"durable_lsn", end, "last_stored_segment", last.Name, "complete_partials_to_store", complete}
		if res.Partial.Name != "" {
			attrs = append(attrs, "partial", res.Partial.Name+".partial",
				"whole_bytes", uint64(res.End-walname.SegmentStart(res.Partial.SegNo, segSize)), "cut_bytes", res.Cut,
				"resume_offset", walname.SegmentOffset(res.Page, segSize))
		}
		r.log.Info("recovered after an unclean stop", attrs...)
	}
	return nil
}
