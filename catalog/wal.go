package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/walhub/walhub/walname"
)

// Segment is a complete WAL segment stored in the repository.
type Segment struct {
	ServerID int64
	TimeLine walname.TimeLine
	SegNo    walname.SegNo
	// Name is the segment's file name ("000000010000000000000003").
	Name string
	// Size is the uncompressed size (the segment size); StoredSize what it takes on disk.
	Size, StoredSize int64
	// Compression is "zstd" or "none".
	Compression string
	// Checksum covers the uncompressed bytes, as "algorithm:hex" (e.g. "crc32c:1a2b3c4d").
	Checksum string
	// StoredPath is relative to the repository root.
	StoredPath string
	ReceivedAt time.Time
}

// AddSegment records a stored segment. Adding the same segment again (a
// restart that received it twice) replaces the row.
func (c *Catalog) AddSegment(ctx context.Context, s Segment) error {
	_, err := c.db.ExecContext(ctx, `INSERT INTO segments
		(server_id, tli, segno, name, size, stored_size, compression, checksum, stored_path, received_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (server_id, tli, segno) DO UPDATE SET
		  name = excluded.name, size = excluded.size, stored_size = excluded.stored_size,
		  compression = excluded.compression, checksum = excluded.checksum,
		  stored_path = excluded.stored_path, received_at = excluded.received_at`,
		s.ServerID, s.TimeLine, int64(s.SegNo), s.Name, s.Size, s.StoredSize, s.Compression, s.Checksum,
		s.StoredPath, unixNano(s.ReceivedAt))
	if err != nil {
		return fmt.Errorf("catalog segment %s: %w", s.Name, err)
	}
	return nil
}

const segmentColumns = `server_id, tli, segno, name, size, stored_size, compression, checksum, stored_path, received_at`

func scanSegment(row interface{ Scan(...any) error }) (Segment, error) {
	var s Segment
	var segno, received int64
	err := row.Scan(&s.ServerID, &s.TimeLine, &segno, &s.Name, &s.Size, &s.StoredSize, &s.Compression,
		&s.Checksum, &s.StoredPath, &received)
	s.SegNo = walname.SegNo(segno)
	s.ReceivedAt = fromUnixNano(received)
	return s, err
}

// Segment looks up a segment by file name.
func (c *Catalog) Segment(ctx context.Context, serverID int64, name string) (Segment, error) {
	s, err := scanSegment(c.db.QueryRowContext(ctx,
		`SELECT `+segmentColumns+` FROM segments WHERE server_id = ? AND name = ?`, serverID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Segment{}, fmt.Errorf("segment %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Segment{}, fmt.Errorf("look up segment %s: %w", name, err)
	}
	return s, nil
}

// Peek returns the segment at (tli, from) followed by the consecutive segments
// stored after it on the same timeline, at most n in all. It returns nothing
// when the first one is missing, and stops at the first missing number.
func (c *Catalog) Peek(ctx context.Context, serverID int64, tli walname.TimeLine, from walname.SegNo, n int) ([]Segment, error) {
	if n <= 0 {
		return nil, nil
	}
	rows, err := c.db.QueryContext(ctx, `SELECT `+segmentColumns+` FROM segments
		WHERE server_id = ? AND tli = ? AND segno >= ? AND segno < ? ORDER BY segno`,
		serverID, tli, int64(from), int64(from)+int64(n))
	if err != nil {
		return nil, fmt.Errorf("peek: %w", err)
	}
	defer rows.Close()
	var out []Segment
	for rows.Next() {
		s, err := scanSegment(rows)
		if err != nil {
			return nil, fmt.Errorf("peek: %w", err)
		}
		if s.SegNo != from+walname.SegNo(len(out)) {
			break
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Segments lists the segments of a timeline from segment from (inclusive) to to
// (exclusive), in order. Use it for bounded ranges; it holds them all in memory.
func (c *Catalog) Segments(ctx context.Context, serverID int64, tli walname.TimeLine, from, to walname.SegNo) ([]Segment, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+segmentColumns+` FROM segments
		WHERE server_id = ? AND tli = ? AND segno >= ? AND segno < ? ORDER BY segno`,
		serverID, tli, int64(from), int64(to))
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	defer rows.Close()
	var out []Segment
	for rows.Next() {
		s, err := scanSegment(rows)
		if err != nil {
			return nil, fmt.Errorf("list segments: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// LastSegment returns the newest segment of a server: highest timeline, then
// highest number.
func (c *Catalog) LastSegment(ctx context.Context, serverID int64) (Segment, error) {
	s, err := scanSegment(c.db.QueryRowContext(ctx, `SELECT `+segmentColumns+` FROM segments
		WHERE server_id = ? ORDER BY tli DESC, segno DESC LIMIT 1`, serverID))
	if errors.Is(err, sql.ErrNoRows) {
		return Segment{}, fmt.Errorf("last segment: %w", ErrNotFound)
	}
	if err != nil {
		return Segment{}, fmt.Errorf("last segment: %w", err)
	}
	return s, nil
}

// TimeLineRange summarises the segments held on one timeline.
type TimeLineRange struct {
	TimeLine    walname.TimeLine
	First, Last walname.SegNo
	Count       int64
	StoredBytes int64
	Bytes       int64
}

// SegmentRanges summarises, per timeline, which segments are held.
func (c *Catalog) SegmentRanges(ctx context.Context, serverID int64) ([]TimeLineRange, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT tli, MIN(segno), MAX(segno), COUNT(*), SUM(stored_size), SUM(size)
		FROM segments WHERE server_id = ? GROUP BY tli ORDER BY tli`, serverID)
	if err != nil {
		return nil, fmt.Errorf("segment ranges: %w", err)
	}
	defer rows.Close()
	var out []TimeLineRange
	for rows.Next() {
		var r TimeLineRange
		var first, last int64
		if err := rows.Scan(&r.TimeLine, &first, &last, &r.Count, &r.StoredBytes, &r.Bytes); err != nil {
			return nil, fmt.Errorf("segment ranges: %w", err)
		}
		r.First, r.Last = walname.SegNo(first), walname.SegNo(last)
		out = append(out, r)
	}
	return out, rows.Err()
}

// SegRange is a half-open range [From, To) of segment numbers.
type SegRange struct {
	From, To walname.SegNo
}

// MissingSegments returns the ranges of segment numbers in [from, to) that are
// not stored on timeline tli.
func (c *Catalog) MissingSegments(ctx context.Context, serverID int64, tli walname.TimeLine, from, to walname.SegNo) ([]SegRange, error) {
	if to <= from {
		return nil, nil
	}
	// Each stored segment followed by a hole is found by comparing it with its
	// successor; the index walk is linear in the segments of the range.
	rows, err := c.db.QueryContext(ctx, `SELECT segno, next FROM (
			SELECT segno, LEAD(segno) OVER (ORDER BY segno) AS next
			FROM segments WHERE server_id = ? AND tli = ? AND segno >= ? AND segno < ?
		) WHERE next IS NULL OR next > segno + 1`,
		serverID, tli, int64(from), int64(to))
	if err != nil {
		return nil, fmt.Errorf("find missing segments: %w", err)
	}
	defer rows.Close()
	var out []SegRange
	for rows.Next() {
		var segno int64
		var next sql.NullInt64
		if err := rows.Scan(&segno, &next); err != nil {
			return nil, fmt.Errorf("find missing segments: %w", err)
		}
		if next.Valid {
			out = append(out, SegRange{walname.SegNo(segno + 1), walname.SegNo(next.Int64)})
		} else if walname.SegNo(segno+1) < to {
			out = append(out, SegRange{walname.SegNo(segno + 1), to})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find missing segments: %w", err)
	}
	// The hole before the first stored segment, if any.
	var firstSeg int64
	err = c.db.QueryRowContext(ctx, `SELECT COALESCE(MIN(segno), -1) FROM segments
		WHERE server_id = ? AND tli = ? AND segno >= ? AND segno < ?`, serverID, tli, int64(from), int64(to)).Scan(&firstSeg)
	if err != nil {
		return nil, fmt.Errorf("find missing segments: %w", err)
	}
	switch {
	case firstSeg < 0:
		return []SegRange{{from, to}}, nil
	case walname.SegNo(firstSeg) > from:
		out = append([]SegRange{{from, walname.SegNo(firstSeg)}}, out...)
	}
	return out, nil
}

// SegmentsBefore lists, oldest first, at most limit segments of any timeline
// whose number is below segno: what expire may remove.
func (c *Catalog) SegmentsBefore(ctx context.Context, serverID int64, segno walname.SegNo, limit int) ([]Segment, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+segmentColumns+` FROM segments
		WHERE server_id = ? AND segno < ? ORDER BY segno, tli LIMIT ?`, serverID, int64(segno), limit)
	if err != nil {
		return nil, fmt.Errorf("list old segments: %w", err)
	}
	defer rows.Close()
	var out []Segment
	for rows.Next() {
		s, err := scanSegment(rows)
		if err != nil {
			return nil, fmt.Errorf("list old segments: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// TimeLine is a timeline whose history file the repository holds.
type TimeLine struct {
	ServerID int64
	TimeLine walname.TimeLine
	// History is the content of the NNNNNNNN.history file (empty for timeline 1).
	History    []byte
	StoredPath string
	AddedAt    time.Time
}

// AddTimeLine records a timeline and its history, replacing an earlier row.
func (c *Catalog) AddTimeLine(ctx context.Context, t TimeLine) error {
	_, err := c.db.ExecContext(ctx, `INSERT INTO timelines (server_id, tli, history, stored_path, added_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (server_id, tli) DO UPDATE SET
		history = excluded.history, stored_path = excluded.stored_path, added_at = excluded.added_at`,
		t.ServerID, t.TimeLine, t.History, t.StoredPath, unixNano(t.AddedAt))
	if err != nil {
		return fmt.Errorf("catalog timeline %d: %w", t.TimeLine, err)
	}
	return nil
}

// TimeLine looks up one timeline.
func (c *Catalog) TimeLine(ctx context.Context, serverID int64, tli walname.TimeLine) (TimeLine, error) {
	var t TimeLine
	var added int64
	err := c.db.QueryRowContext(ctx, `SELECT server_id, tli, history, stored_path, added_at FROM timelines
		WHERE server_id = ? AND tli = ?`, serverID, tli).Scan(&t.ServerID, &t.TimeLine, &t.History, &t.StoredPath, &added)
	if errors.Is(err, sql.ErrNoRows) {
		return TimeLine{}, fmt.Errorf("timeline %d: %w", tli, ErrNotFound)
	}
	if err != nil {
		return TimeLine{}, fmt.Errorf("look up timeline %d: %w", tli, err)
	}
	t.AddedAt = fromUnixNano(added)
	return t, nil
}

// TimeLines lists a server's timelines in order.
func (c *Catalog) TimeLines(ctx context.Context, serverID int64) ([]TimeLine, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT server_id, tli, history, stored_path, added_at FROM timelines
		WHERE server_id = ? ORDER BY tli`, serverID)
	if err != nil {
		return nil, fmt.Errorf("list timelines: %w", err)
	}
	defer rows.Close()
	var out []TimeLine
	for rows.Next() {
		var t TimeLine
		var added int64
		if err := rows.Scan(&t.ServerID, &t.TimeLine, &t.History, &t.StoredPath, &added); err != nil {
			return nil, fmt.Errorf("list timelines: %w", err)
		}
		t.AddedAt = fromUnixNano(added)
		out = append(out, t)
	}
	return out, rows.Err()
}

// Gap is WAL the hub could not get: the server had removed it before the hub
// received it. Recovery cannot cross a gap.
type Gap struct {
	ID               int64
	ServerID         int64
	TimeLine         walname.TimeLine
	StartLSN, EndLSN walname.LSN
	Reason           string
	DetectedAt       time.Time
}

// AddGap records WAL that is lost to the archive.
func (c *Catalog) AddGap(ctx context.Context, g Gap) error {
	_, err := c.db.ExecContext(ctx, `INSERT INTO gaps (server_id, tli, start_lsn, end_lsn, reason, detected_at)
		VALUES (?, ?, ?, ?, ?, ?)`, g.ServerID, g.TimeLine, int64(g.StartLSN), int64(g.EndLSN), g.Reason, unixNano(g.DetectedAt))
	if err != nil {
		return fmt.Errorf("record gap %s-%s: %w", g.StartLSN, g.EndLSN, err)
	}
	return nil
}

// Gaps lists the recorded gaps of a server, oldest first.
func (c *Catalog) Gaps(ctx context.Context, serverID int64) ([]Gap, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT id, server_id, tli, start_lsn, end_lsn, reason, detected_at
		FROM gaps WHERE server_id = ? ORDER BY start_lsn`, serverID)
	if err != nil {
		return nil, fmt.Errorf("list gaps: %w", err)
	}
	defer rows.Close()
	var out []Gap
	for rows.Next() {
		var g Gap
		var start, end, detected int64
		if err := rows.Scan(&g.ID, &g.ServerID, &g.TimeLine, &start, &end, &g.Reason, &detected); err != nil {
			return nil, fmt.Errorf("list gaps: %w", err)
		}
		g.StartLSN, g.EndLSN, g.DetectedAt = walname.LSN(start), walname.LSN(end), fromUnixNano(detected)
		out = append(out, g)
	}
	return out, rows.Err()
}

// DeleteSegments removes the rows of the given segments in one transaction.
// Callers delete rows first and files after, so the catalog never points at a
// missing file; a crash in between leaves only orphan files, which expire sweeps.
func (c *Catalog) DeleteSegments(ctx context.Context, segs []Segment) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete segments: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `DELETE FROM segments WHERE server_id = ? AND tli = ? AND segno = ?`)
	if err != nil {
		return fmt.Errorf("delete segments: %w", err)
	}
	defer stmt.Close()
	for _, s := range segs {
		if _, err := stmt.ExecContext(ctx, s.ServerID, s.TimeLine, int64(s.SegNo)); err != nil {
			return fmt.Errorf("delete segment %s: %w", s.Name, err)
		}
	}
	return tx.Commit()
}
