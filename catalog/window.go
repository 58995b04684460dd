package catalog

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/walhub/walhub/walname"
)

// PathPart is the stretch [From, To) of segment numbers that recovery reads
// from one timeline.
type PathPart struct {
	TimeLine walname.TimeLine
	From, To walname.SegNo
}

// TimeLinePath returns the segments recovery to the newest timeline reads,
// as PostgreSQL picks them (XLogFileReadAnyTLI): each segment from the
// newest timeline of the history that began at or before it. The last part
// is open-ended (To is the largest number).
func (c *Catalog) TimeLinePath(ctx context.Context, serverID int64, segSize uint64) ([]PathPart, error) {
	ranges, err := c.SegmentRanges(ctx, serverID)
	if err != nil {
		return nil, err
	}
	latest := walname.TimeLine(1)
	for _, r := range ranges {
		latest = max(latest, r.TimeLine)
	}
	var history []walname.HistoryEntry
	if latest > 1 {
		tl, err := c.TimeLine(ctx, serverID, latest)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if history, err = walname.ParseHistory(tl.History); err != nil {
			return nil, fmt.Errorf("history of timeline %d: %w", latest, err)
		}
	}
	var path []PathPart
	from := walname.SegNo(0)
	for _, e := range history {
		to := walname.SegmentOf(e.SwitchLSN, segSize)
		if to > from {
			path = append(path, PathPart{TimeLine: e.TimeLine, From: from, To: to})
			from = to
		}
	}
	return append(path, PathPart{TimeLine: latest, From: from, To: math.MaxInt64}), nil
}

// ContiguousEnd returns the first segment, following path from segment
// start, that is not stored (where recovery from start runs out of WAL),
// with the timeline it would be read from.
func (c *Catalog) ContiguousEnd(ctx context.Context, serverID int64, path []PathPart, start walname.SegNo) (walname.TimeLine, walname.SegNo, error) {
	h, err := c.heldAlong(ctx, serverID, path)
	if err != nil {
		return 0, 0, err
	}
	tli, end := h.contiguousEnd(start)
	return tli, end, nil
}

// held is what is stored along a path: the last segment of each timeline and
// the holes of each part of the path, read once so that the contiguous end
// from any number of starts costs no more queries.
type held struct {
	path  []PathPart
	last  map[walname.TimeLine]walname.SegNo
	holes [][]SegRange // by part of path, ascending
}

// heldAlong reads the holes of each part of path up to the last segment held
// on its timeline: over a whole stored range MissingSegments needs no count.
func (c *Catalog) heldAlong(ctx context.Context, serverID int64, path []PathPart) (*held, error) {
	ranges, err := c.SegmentRanges(ctx, serverID)
	if err != nil {
		return nil, err
	}
	h := &held{path: path, last: map[walname.TimeLine]walname.SegNo{}, holes: make([][]SegRange, len(path))}
	for _, r := range ranges {
		h.last[r.TimeLine] = r.Last
	}
	for i, p := range path {
		l, ok := h.last[p.TimeLine]
		if !ok || l < p.From {
			continue
		}
		if h.holes[i], err = c.MissingSegments(ctx, serverID, p.TimeLine, p.From, min(p.To, l+1)); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *held) contiguousEnd(start walname.SegNo) (walname.TimeLine, walname.SegNo) {
	for i, p := range h.path {
		if p.To <= start {
			continue
		}
		from := max(p.From, start)
		l, ok := h.last[p.TimeLine]
		if !ok || l < from {
			return p.TimeLine, from
		}
		to := min(p.To, l+1)
		for _, hole := range h.holes[i] {
			if hole.To > from && hole.From < to {
				return p.TimeLine, max(hole.From, from)
			}
		}
		if to < p.To {
			return p.TimeLine, to
		}
	}
	p := h.path[len(h.path)-1]
	return p.TimeLine, max(start, p.From)
}

// Point is a point in the WAL that recovery can stop at.
type Point struct {
	TimeLine walname.TimeLine `json:"timeline"`
	LSN      walname.LSN      `json:"lsn"`
	// Time is when it was: for the end of a backup when the backup finished,
	// for the end of the WAL the time of its newest commit or abort (zero
	// when none is indexed).
	Time time.Time `json:"time"`
}

// Window is what a server's archive can recover to: any point from Earliest
// (the end of the oldest backup whose WAL is all held) to Latest (the end of
// the WAL held without a gap after the newest such backup).
type Window struct {
	Earliest Point `json:"earliest"`
	Latest   Point `json:"latest"`
	// EarliestBackup and LatestBackup are the backups those ends are reached from.
	EarliestBackup string `json:"earliest_backup"`
	LatestBackup   string `json:"latest_backup"`
}

// RecoverableWindow returns the window of points a server's backups and the
// WAL held after them can recover to. ErrNotFound when no backup can be
// restored with the WAL held.
func (c *Catalog) RecoverableWindow(ctx context.Context, serverID int64) (Window, error) {
	var segSize uint64
	if err := c.db.QueryRowContext(ctx, `SELECT segment_size FROM servers WHERE id = ?`, serverID).Scan(&segSize); err != nil {
		return Window{}, fmt.Errorf("recoverable window of server %d: %w", serverID, err)
	}
	backups, err := c.Backups(ctx, serverID)
	if err != nil {
		return Window{}, err
	}
	path, err := c.TimeLinePath(ctx, serverID, segSize)
	if err != nil {
		return Window{}, err
	}
	h, err := c.heldAlong(ctx, serverID, path)
	if err != nil {
		return Window{}, err
	}
	var w Window
	found := false
	for _, b := range backups { // oldest first
		if !Restorable(b) || segSize == 0 {
			continue
		}
		tli, end := h.contiguousEnd(walname.SegmentOf(b.StartLSN, segSize))
		endLSN := walname.SegmentStart(end, segSize)
		if endLSN < b.StopLSN {
			continue // its WAL is not all held
		}
		if !found {
			w.Earliest = Point{TimeLine: b.StopTLI, LSN: b.StopLSN, Time: b.FinishedAt}
			w.EarliestBackup = b.ID
			found = true
		}
		if endLSN >= w.Latest.LSN {
			w.Latest = Point{TimeLine: tli, LSN: endLSN}
			w.LatestBackup = b.ID
			w.Latest.Time, err = c.lastXactTime(ctx, serverID, path, walname.SegmentOf(b.StartLSN, segSize), end)
			if err != nil {
				return Window{}, err
			}
		}
	}
	if !found {
		return Window{}, fmt.Errorf("recoverable window: no backup with all its WAL: %w", ErrNotFound)
	}
	return w, nil
}

// lastXactTime returns the time of the newest commit or abort indexed in
// the segments [from, to) along path.
func (c *Catalog) lastXactTime(ctx context.Context, serverID int64, path []PathPart, from, to walname.SegNo) (time.Time, error) {
	for i := len(path) - 1; i >= 0; i-- {
		p := path[i]
		lo, hi := max(p.From, from), min(p.To, to)
		if lo >= hi {
			continue
		}
		s, err := c.LastXactBefore(ctx, serverID, p.TimeLine, lo, hi)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return time.Time{}, err
		}
		return s.MaxTime, nil
	}
	return time.Time{}, nil
}
