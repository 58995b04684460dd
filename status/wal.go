package status

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/walname"
)

// WAL is what the repository holds of the server's WAL.
type WAL struct {
	// InCatalog is false until the server's first connection is recorded.
	InCatalog   bool   `json:"in_catalog"`
	SystemID    string `json:"system_id,omitempty"`
	SegmentSize uint64 `json:"segment_size,omitempty"`
	Segments    int64  `json:"segments"`
	Bytes       int64  `json:"bytes"`
	StoredBytes int64  `json:"stored_bytes"`
	// Timelines lists, per timeline, the first and last segment held.
	Timelines             []TimeLineWAL `json:"timelines"`
	LastSegment           string        `json:"last_segment,omitempty"`
	LastSegmentAt         time.Time     `json:"last_segment_at,omitzero"`
	LastSegmentAgeSeconds float64       `json:"last_segment_age_seconds,omitempty"`
	// Gaps is WAL that a recovery cannot cross: recorded gaps (WAL the server
	// removed before the hub got it) and segments missing from the held ranges.
	Gaps []Gap `json:"gaps"`
}

// TimeLineWAL is the WAL held on one timeline.
type TimeLineWAL struct {
	TimeLine     walname.TimeLine `json:"timeline"`
	FirstSegment string           `json:"first_segment"`
	LastSegment  string           `json:"last_segment"`
	Segments     int64            `json:"segments"`
	Bytes        int64            `json:"bytes"`
	StoredBytes  int64            `json:"stored_bytes"`
	// MissingSegments counts the holes between FirstSegment and LastSegment.
	MissingSegments int64 `json:"missing_segments"`
}

// Gap is a range of WAL the repository does not have.
type Gap struct {
	TimeLine walname.TimeLine `json:"timeline"`
	// Source is "recorded" (the receiver found the server had removed it) or
	// "missing" (segments absent from the catalog).
	Source   string      `json:"source"`
	StartLSN walname.LSN `json:"start_lsn"`
	EndLSN   walname.LSN `json:"end_lsn"`
	// FirstSegment and LastSegment name the first and last segment missing.
	FirstSegment string `json:"first_segment"`
	LastSegment  string `json:"last_segment"`
	Segments     int64  `json:"segments"`
	// AfterOldestBackup is true when the gap lies after the start of the oldest
	// usable backup: recovery from that backup (or a later one) cannot cross it.
	AfterOldestBackup bool      `json:"after_oldest_backup"`
	Reason            string    `json:"reason,omitempty"`
	DetectedAt        time.Time `json:"detected_at,omitzero"`
}

// Backups summarises the server's backups.
type Backups struct {
	// Count is the number of done backups that count (catalog.Counted:
	// those whose files walhub holds); the checks and Last, Oldest, Size
	// and StoredSize go by them.
	Count int `json:"count"`
	// Uncounted is the number of done backups that do not count (snapshots).
	Uncounted int `json:"uncounted"`
	Failed    int `json:"failed"`
	Running   int `json:"running"`
	// WaitingWAL counts backups copied whose WAL has not reached the hub yet.
	WaitingWAL int `json:"waiting_wal"`
	// Size and StoredSize add up the done backups.
	Size       int64 `json:"size"`
	StoredSize int64 `json:"stored_size"`
	// Last and Oldest are the newest and oldest done backups.
	Last   *BackupSummary `json:"last,omitempty"`
	Oldest *BackupSummary `json:"oldest,omitempty"`
	// LastFailed is the newest failed backup.
	LastFailed *BackupSummary `json:"last_failed,omitempty"`
	// FailedSinceLast counts the failed backups started after Last.
	FailedSinceLast int `json:"failed_since_last"`
}

// RecoverableWindow is what the backups and the WAL held after them can
// recover to (catalog.RecoverableWindow): any point from the end of the
// oldest backup whose WAL is all held to the end of the WAL held without a
// gap after a backup.
type RecoverableWindow struct {
	EarliestTime     time.Time        `json:"earliest_time"`
	EarliestLSN      walname.LSN      `json:"earliest_lsn"`
	EarliestTimeLine walname.TimeLine `json:"earliest_timeline"`
	EarliestBackup   string           `json:"earliest_backup"`
	// LatestTime is the newest commit or abort indexed before LatestLSN;
	// absent when none is indexed.
	LatestTime     time.Time        `json:"latest_time,omitzero"`
	LatestLSN      walname.LSN      `json:"latest_lsn"`
	LatestTimeLine walname.TimeLine `json:"latest_timeline"`
	LatestBackup   string           `json:"latest_backup"`
}

// BackupSummary is one backup, briefly.
type BackupSummary struct {
	ID         string           `json:"id"`
	Kind       string           `json:"kind"`
	State      string           `json:"state"`
	Reason     string           `json:"reason,omitempty"`
	StartedAt  time.Time        `json:"started_at"`
	FinishedAt time.Time        `json:"finished_at,omitzero"`
	AgeSeconds float64          `json:"age_seconds"`
	StartLSN   walname.LSN      `json:"start_lsn"`
	StartTLI   walname.TimeLine `json:"start_timeline"`
	StopLSN    walname.LSN      `json:"stop_lsn"`
	Size       int64            `json:"size"`
	StoredSize int64            `json:"stored_size"`
}

func summarise(b catalog.Backup, now time.Time) *BackupSummary {
	end := b.FinishedAt
	if end.IsZero() {
		end = b.StartedAt
	}
	return &BackupSummary{ID: b.ID, Kind: b.Kind, State: b.State, Reason: b.Reason, StartedAt: b.StartedAt,
		FinishedAt: b.FinishedAt, AgeSeconds: now.Sub(end).Seconds(), StartLSN: b.StartLSN, StartTLI: b.StartTLI,
		StopLSN: b.StopLSN, Size: b.OriginalSize, StoredSize: b.StoredSize}
}

// fromCatalog fills doc.WAL and doc.Backups.
func (s Source) fromCatalog(ctx context.Context, srv *config.Server, now time.Time, doc *Document) error {
	doc.WAL.Timelines, doc.WAL.Gaps = []TimeLineWAL{}, []Gap{}
	server, err := s.Catalog.ServerByName(ctx, srv.Name)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	w := &doc.WAL
	w.InCatalog, w.SystemID, w.SegmentSize = true, server.SystemID, server.SegmentSize

	backups, err := s.Catalog.Backups(ctx, server.ID)
	if err != nil {
		return err
	}
	var oldest *catalog.Backup
	for i, b := range backups {
		switch {
		case b.State == catalog.StateDone && !catalog.Counted(b):
			doc.Backups.Uncounted++
		case b.State == catalog.StateDone:
			doc.Backups.Count++
			doc.Backups.Size += b.OriginalSize
			doc.Backups.StoredSize += b.StoredSize
			if oldest == nil {
				oldest = &backups[i]
				doc.Backups.Oldest = summarise(b, now)
			}
			doc.Backups.Last = summarise(b, now)
			doc.Backups.FailedSinceLast = 0
		case b.State == catalog.StateFailed:
			doc.Backups.Failed++
			doc.Backups.LastFailed = summarise(b, now)
			doc.Backups.FailedSinceLast++
		case b.State == catalog.StateRunning:
			doc.Backups.Running++
		case b.State == catalog.StateWaitingWAL:
			doc.Backups.WaitingWAL++
		}
	}

	ranges, err := s.Catalog.SegmentRanges(ctx, server.ID)
	if err != nil {
		return err
	}
	segSize := server.SegmentSize
	if segSize == 0 && len(ranges) > 0 {
		return fmt.Errorf("catalog of %s holds segments but no segment size", srv.Name)
	}
	for _, r := range ranges {
		w.Segments += r.Count
		w.Bytes += r.Bytes
		w.StoredBytes += r.StoredBytes
		w.Timelines = append(w.Timelines, TimeLineWAL{TimeLine: r.TimeLine,
			FirstSegment: walname.SegmentName(r.TimeLine, r.First, segSize),
			LastSegment:  walname.SegmentName(r.TimeLine, r.Last, segSize),
			Segments:     r.Count, Bytes: r.Bytes, StoredBytes: r.StoredBytes,
			MissingSegments: int64(r.Last-r.First+1) - r.Count})
	}
	if len(ranges) > 0 {
		last, err := s.Catalog.LastSegment(ctx, server.ID)
		if err != nil {
			return err
		}
		w.LastSegment, w.LastSegmentAt = last.Name, last.ReceivedAt
		w.LastSegmentAgeSeconds = now.Sub(last.ReceivedAt).Seconds()
	}
	gaps, err := s.walGaps(ctx, server.ID, segSize, ranges, oldest)
	if err != nil {
		return err
	}
	w.Gaps = gaps
	win, err := s.Catalog.RecoverableWindow(ctx, server.ID)
	switch {
	case errors.Is(err, catalog.ErrNotFound):
	case err != nil:
		return err
	default:
		doc.Recoverable = &RecoverableWindow{EarliestTime: win.Earliest.Time.UTC(), EarliestLSN: win.Earliest.LSN,
			EarliestTimeLine: win.Earliest.TimeLine, EarliestBackup: win.EarliestBackup, LatestLSN: win.Latest.LSN,
			LatestTimeLine: win.Latest.TimeLine, LatestBackup: win.LatestBackup}
		if !win.Latest.Time.IsZero() {
			doc.Recoverable.LatestTime = win.Latest.Time.UTC()
		}
	}
	return nil
}

// walGaps lists recorded gaps and the holes in the held segment ranges: inside
// each timeline's range, between one timeline's end and the next one's start,
// and between the oldest backup's start and the first segment held.
func (s Source) walGaps(ctx context.Context, serverID int64, segSize uint64, ranges []catalog.TimeLineRange, oldest *catalog.Backup) ([]Gap, error) {
	var out []Gap
	var oldestStart walname.LSN
	if oldest != nil {
		oldestStart = oldest.StartLSN
	}
	missing := func(tli walname.TimeLine, from, to walname.SegNo, reason string) {
		start, end := walname.SegmentStart(from, segSize), walname.SegmentStart(to, segSize)
		out = append(out, Gap{TimeLine: tli, Source: "missing", StartLSN: start, EndLSN: end,
			FirstSegment: walname.SegmentName(tli, from, segSize), LastSegment: walname.SegmentName(tli, to-1, segSize),
			Segments: int64(to - from), AfterOldestBackup: oldest != nil && end > oldestStart, Reason: reason})
	}
	if oldest != nil && segSize != 0 {
		startSeg := walname.SegmentOf(oldest.StartLSN, segSize)
		for _, r := range ranges {
			if r.TimeLine == oldest.StartTLI && startSeg < r.First {
				missing(r.TimeLine, startSeg, r.First, fmt.Sprintf("needed by backup %s, older than the first segment held", oldest.ID))
			}
		}
		if len(ranges) == 0 {
			// Nothing held at all: everything from the backup's start is missing,
			// up to where the backup ends at least.
			stop := max(walname.SegmentOf(oldest.StopLSN, segSize)+1, startSeg+1)
			missing(oldest.StartTLI, startSeg, stop, fmt.Sprintf("needed by backup %s; no WAL is held", oldest.ID))
		}
	}
	for i, r := range ranges {
		if i > 0 && r.First > ranges[i-1].Last+1 {
			missing(r.TimeLine, ranges[i-1].Last+1, r.First, fmt.Sprintf("between timeline %d and %d", ranges[i-1].TimeLine, r.TimeLine))
		}
		if int64(r.Last-r.First+1) == r.Count {
			continue
		}
		holes, err := s.Catalog.MissingSegments(ctx, serverID, r.TimeLine, r.First, r.Last+1)
		if err != nil {
			return nil, err
		}
		for _, h := range holes {
			missing(r.TimeLine, h.From, h.To, "")
		}
	}
	recorded, err := s.Catalog.Gaps(ctx, serverID)
	if err != nil {
		return nil, err
	}
	for _, g := range recorded {
		gap := Gap{TimeLine: g.TimeLine, Source: "recorded", StartLSN: g.StartLSN, EndLSN: g.EndLSN,
			AfterOldestBackup: oldest != nil && g.EndLSN > oldestStart, Reason: g.Reason, DetectedAt: g.DetectedAt}
		if segSize != 0 && g.EndLSN > g.StartLSN {
			first, last := walname.SegmentOf(g.StartLSN, segSize), walname.SegmentOf(g.EndLSN-1, segSize)
			gap.FirstSegment = walname.SegmentName(g.TimeLine, first, segSize)
			gap.LastSegment = walname.SegmentName(g.TimeLine, last, segSize)
			gap.Segments = int64(last-first) + 1
		}
		out = append(out, gap)
	}
	if out == nil {
		out = []Gap{}
	}
	return out, nil
}
