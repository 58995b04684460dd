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
	// KeyID names the key the stored object is encrypted with ("" when the
	// repository is not encrypted).
	KeyID string
	// Contents, when set, is recorded with the segment, in the same
	// transaction (see SegmentContents).
	Contents *SegmentContents
}

const addSegmentSQL = `INSERT INTO segments
		(server_id, tli, segno, name, size, stored_size, compression, checksum, stored_path, received_at, key_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (server_id, tli, segno) DO UPDATE SET
		  name = excluded.name, size = excluded.size, stored_size = excluded.stored_size,
		  compression = excluded.compression, checksum = excluded.checksum,
		  stored_path = excluded.stored_path, received_at = excluded.received_at, key_id = excluded.key_id`

// AddSegment records a stored segment. Adding the same segment again (a
// restart that received it twice) replaces the row.
func (c *Catalog) AddSegment(ctx context.Context, s Segment) error {
	if s.Contents != nil {
		return c.AddSegments(ctx, []Segment{s})
	}
	_, err := c.db.ExecContext(ctx, addSegmentSQL, s.ServerID, s.TimeLine, int64(s.SegNo), s.Name, s.Size, s.StoredSize, s.Compression, s.Checksum,
		s.StoredPath, unixNano(s.ReceivedAt), s.KeyID)
	if err != nil {
		return fmt.Errorf("catalog segment %s: %w", s.Name, err)
	}
	return nil
}

// AddSegments records many stored segments in one transaction, as AddSegment
// does each: for importing an existing archive, where one commit per segment
// would cost a million fsyncs.
func (c *Catalog) AddSegments(ctx context.Context, segs []Segment) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("catalog segments: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, addSegmentSQL)
	if err != nil {
		return fmt.Errorf("catalog segments: %w", err)
	}
	defer stmt.Close()
	for _, s := range segs {
		if _, err := stmt.ExecContext(ctx, s.ServerID, s.TimeLine, int64(s.SegNo), s.Name, s.Size, s.StoredSize,
			s.Compression, s.Checksum, s.StoredPath, unixNano(s.ReceivedAt), s.KeyID); err != nil {
			return fmt.Errorf("catalog segment %s: %w", s.Name, err)
		}
		if s.Contents != nil {
			if err := putContents(ctx, tx, s.ServerID, s.TimeLine, s.SegNo, *s.Contents); err != nil {
				return fmt.Errorf("catalog segment %s: %w", s.Name, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("catalog segments: %w", err)
	}
	return nil
}

const segmentColumns = `server_id, tli, segno, name, size, stored_size, compression, checksum, stored_path, received_at, key_id`

func scanSegment(row interface{ Scan(...any) error }) (Segment, error) {
	var s Segment
	var segno, received int64
	err := row.Scan(&s.ServerID, &s.TimeLine, &segno, &s.Name, &s.Size, &s.StoredSize, &s.Compression,
		&s.Checksum, &s.StoredPath, &received, &s.KeyID)
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

// SegmentRanges summarises, per timeline, which segments are held. It reads
// the trigger-kept totals and the index ends, so it costs the same for ten
// segments or ten million.
func (c *Catalog) SegmentRanges(ctx context.Context, serverID int64) ([]TimeLineRange, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT tli, segments, stored_bytes, bytes FROM segment_totals
		WHERE server_id = ? AND segments > 0 ORDER BY tli`, serverID)
	if err != nil {
		return nil, fmt.Errorf("segment ranges: %w", err)
	}
	var out []TimeLineRange
	for rows.Next() {
		var r TimeLineRange
		if err := rows.Scan(&r.TimeLine, &r.Count, &r.StoredBytes, &r.Bytes); err != nil {
			rows.Close()
			return nil, fmt.Errorf("segment ranges: %w", err)
		}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("segment ranges: %w", err)
	}
	for i := range out {
		var first, last int64
		// Two subqueries: SQLite answers a lone MIN or MAX from the index end, not both at once.
		if err := c.db.QueryRowContext(ctx, `SELECT
				(SELECT MIN(segno) FROM segments WHERE server_id = ?1 AND tli = ?2),
				(SELECT MAX(segno) FROM segments WHERE server_id = ?1 AND tli = ?2)`,
			serverID, out[i].TimeLine).Scan(&first, &last); err != nil {
			return nil, fmt.Errorf("segment ranges of timeline %d: %w", out[i].TimeLine, err)
		}
		out[i].First, out[i].Last = walname.SegNo(first), walname.SegNo(last)
	}
	return out, nil
}

// SegRange is a half-open range [From, To) of segment numbers.
type SegRange struct {
	From, To walname.SegNo
}

// missingScanBlock is the size of range below which MissingSegments lists the
// stored numbers instead of halving the range again.
const missingScanBlock = 4096

// MissingSegments returns the ranges of segment numbers in [from, to) that are
// not stored on timeline tli.
//
// A range whose count of stored segments equals its length has no hole, so the
// search halves only the ranges that lack segments: a complete timeline costs
// two index lookups, and each hole about one count over the range.
func (c *Catalog) MissingSegments(ctx context.Context, serverID int64, tli walname.TimeLine, from, to walname.SegNo) ([]SegRange, error) {
	if to <= from {
		return nil, nil
	}
	var total, first, last sql.NullInt64
	err := c.db.QueryRowContext(ctx, `SELECT
			(SELECT segments FROM segment_totals WHERE server_id = ?1 AND tli = ?2),
			(SELECT MIN(segno) FROM segments WHERE server_id = ?1 AND tli = ?2),
			(SELECT MAX(segno) FROM segments WHERE server_id = ?1 AND tli = ?2)`,
		serverID, tli).Scan(&total, &first, &last)
	if err != nil {
		return nil, fmt.Errorf("find missing segments: %w", err)
	}
	if !first.Valid || walname.SegNo(last.Int64) < from || walname.SegNo(first.Int64) >= to {
		return []SegRange{{from, to}}, nil
	}
	m := missingFinder{c: c, ctx: ctx, serverID: serverID, tli: tli}
	// Outside the stored ends everything is missing; inside, count and halve.
	lo, hi := max(from, walname.SegNo(first.Int64)), min(to, walname.SegNo(last.Int64)+1)
	m.add(SegRange{from, lo})
	var n int64
	if lo == walname.SegNo(first.Int64) && hi == walname.SegNo(last.Int64)+1 && total.Valid {
		n = total.Int64
	} else if n, err = m.count(lo, hi); err != nil {
		return nil, err
	}
	if err := m.find(lo, hi, n); err != nil {
		return nil, err
	}
	m.add(SegRange{hi, to})
	return m.out, nil
}

// missingFinder carries the state of one MissingSegments search.
type missingFinder struct {
	c        *Catalog
	ctx      context.Context
	serverID int64
	tli      walname.TimeLine
	out      []SegRange
}

// add appends a missing range, merging it with the previous one when they touch.
func (m *missingFinder) add(r SegRange) {
	if r.To <= r.From {
		return
	}
	if n := len(m.out); n > 0 && m.out[n-1].To == r.From {
		m.out[n-1].To = r.To
		return
	}
	m.out = append(m.out, r)
}

func (m *missingFinder) count(from, to walname.SegNo) (int64, error) {
	var n int64
	err := m.c.db.QueryRowContext(m.ctx, `SELECT COUNT(*) FROM segments INDEXED BY segments_seq
		WHERE server_id = ? AND tli = ? AND segno >= ? AND segno < ?`, m.serverID, m.tli, int64(from), int64(to)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("find missing segments: %w", err)
	}
	return n, nil
}

// find adds the holes of [from, to), which holds n stored segments.
func (m *missingFinder) find(from, to walname.SegNo, n int64) error {
	switch length := int64(to - from); {
	case n == length:
		return nil
	case n == 0:
		m.add(SegRange{from, to})
		return nil
	case length <= missingScanBlock:
		return m.scan(from, to)
	}
	mid := from + (to-from)/2
	left, err := m.count(from, mid)
	if err != nil {
		return err
	}
	if err := m.find(from, mid, left); err != nil {
		return err
	}
	return m.find(mid, to, n-left)
}

// scan lists the stored numbers of a small range and adds the holes between them.
func (m *missingFinder) scan(from, to walname.SegNo) error {
	rows, err := m.c.db.QueryContext(m.ctx, `SELECT segno FROM segments
		WHERE server_id = ? AND tli = ? AND segno >= ? AND segno < ? ORDER BY segno`,
		m.serverID, m.tli, int64(from), int64(to))
	if err != nil {
		return fmt.Errorf("find missing segments: %w", err)
	}
	defer rows.Close()
	next := from
	for rows.Next() {
		var segno int64
		if err := rows.Scan(&segno); err != nil {
			return fmt.Errorf("find missing segments: %w", err)
		}
		m.add(SegRange{next, walname.SegNo(segno)})
		next = walname.SegNo(segno) + 1
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find missing segments: %w", err)
	}
	m.add(SegRange{next, to})
	return nil
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
	// KeyID names the key the history file is encrypted with ("" when not).
	KeyID string
}

// AddTimeLine records a timeline and its history, replacing an earlier row.
func (c *Catalog) AddTimeLine(ctx context.Context, t TimeLine) error {
	_, err := c.db.ExecContext(ctx, `INSERT INTO timelines (server_id, tli, history, stored_path, added_at, key_id)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (server_id, tli) DO UPDATE SET
		history = excluded.history, stored_path = excluded.stored_path, added_at = excluded.added_at,
		key_id = excluded.key_id`,
		t.ServerID, t.TimeLine, t.History, t.StoredPath, unixNano(t.AddedAt), t.KeyID)
	if err != nil {
		return fmt.Errorf("catalog timeline %d: %w", t.TimeLine, err)
	}
	return nil
}

// TimeLine looks up one timeline.
func (c *Catalog) TimeLine(ctx context.Context, serverID int64, tli walname.TimeLine) (TimeLine, error) {
	var t TimeLine
	var added int64
	err := c.db.QueryRowContext(ctx, `SELECT server_id, tli, history, stored_path, added_at, key_id FROM timelines
		WHERE server_id = ? AND tli = ?`, serverID, tli).Scan(&t.ServerID, &t.TimeLine, &t.History, &t.StoredPath, &added, &t.KeyID)
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
	rows, err := c.db.QueryContext(ctx, `SELECT server_id, tli, history, stored_path, added_at, key_id FROM timelines
		WHERE server_id = ? ORDER BY tli`, serverID)
	if err != nil {
		return nil, fmt.Errorf("list timelines: %w", err)
	}
	defer rows.Close()
	var out []TimeLine
	for rows.Next() {
		var t TimeLine
		var added int64
		if err := rows.Scan(&t.ServerID, &t.TimeLine, &t.History, &t.StoredPath, &added, &t.KeyID); err != nil {
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
