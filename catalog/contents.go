package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/walhub/walhub/walname"
)

// XactRecord is a commit or abort record: where it starts, when the
// transaction ended (xact_time) and its xid.
type XactRecord struct {
	LSN  walname.LSN `json:"lsn"`
	Time time.Time   `json:"time"`
	XID  uint32      `json:"xid"`
}

// SegmentContents is what recovery targets need from the WAL records of one
// segment: the commit and abort records whose end it holds, summarised, and
// its restore points. The receiver reads it from each segment as it stores
// it (walrecord).
type SegmentContents struct {
	// Xacts counts the commit and abort records; First and Last are the
	// first and last of them in WAL order.
	Xacts       int64
	First, Last XactRecord
	// MinTime and MaxTime bound their times, MinXID and MaxXID their xids.
	MinTime, MaxTime time.Time
	MinXID, MaxXID   uint32
	RestorePoints    []RestorePoint
	// Carry is the reader's state at the end of the segment
	// (walrecord.Decoder.MarshalState), for the next segment after a restart.
	Carry []byte
}

// Add counts one commit or abort record, given in WAL order.
func (c *SegmentContents) Add(r XactRecord) {
	if c.Xacts == 0 {
		c.First, c.MinTime, c.MaxTime, c.MinXID, c.MaxXID = r, r.Time, r.Time, r.XID, r.XID
	}
	c.Xacts++
	c.Last = r
	if r.Time.Before(c.MinTime) {
		c.MinTime = r.Time
	}
	if r.Time.After(c.MaxTime) {
		c.MaxTime = r.Time
	}
	c.MinXID, c.MaxXID = min(c.MinXID, r.XID), max(c.MaxXID, r.XID)
}

// RestorePoint is a named restore point (pg_create_restore_point) in the WAL.
type RestorePoint struct {
	Name     string           `json:"name"`
	TimeLine walname.TimeLine `json:"timeline"`
	// LSN is where its record starts, EndLSN where it ends: recovery to it
	// stops after the record.
	LSN    walname.LSN   `json:"lsn"`
	EndLSN walname.LSN   `json:"end_lsn"`
	Time   time.Time     `json:"time"`
	SegNo  walname.SegNo `json:"-"`
}

// putContents replaces the contents of one segment.
func putContents(ctx context.Context, tx *sql.Tx, serverID int64, tli walname.TimeLine, segno walname.SegNo, c SegmentContents) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM restore_points WHERE server_id = ? AND tli = ? AND segno = ?`,
		serverID, tli, int64(segno)); err != nil {
		return fmt.Errorf("record segment contents: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO segment_contents (server_id, tli, segno, xacts,
		first_lsn, first_time, last_lsn, last_time, min_time, max_time, min_xid, max_xid, carry)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, serverID, tli, int64(segno), c.Xacts,
		int64(c.First.LSN), unixNano(c.First.Time), int64(c.Last.LSN), unixNano(c.Last.Time),
		unixNano(c.MinTime), unixNano(c.MaxTime), c.MinXID, c.MaxXID, c.Carry); err != nil {
		return fmt.Errorf("record segment contents: %w", err)
	}
	for _, rp := range c.RestorePoints {
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO restore_points
			(server_id, tli, segno, lsn, end_lsn, name, time) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			serverID, tli, int64(segno), int64(rp.LSN), int64(rp.EndLSN), rp.Name, unixNano(rp.Time)); err != nil {
			return fmt.Errorf("record restore point %s: %w", rp.Name, err)
		}
	}
	return nil
}

// SetSegmentContents records, in one transaction, the contents of stored
// segments read after the fact (the backfill of an archive stored before
// the index existed).
func (c *Catalog) SetSegmentContents(ctx context.Context, serverID int64, segs []IndexedSegment) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record segment contents: %w", err)
	}
	defer tx.Rollback()
	for _, s := range segs {
		if err := putContents(ctx, tx, serverID, s.TimeLine, s.SegNo, s.SegmentContents); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Carry returns the reader's state recorded at the end of segment segno
// (SegmentContents.Carry), from the newest timeline up to tli that has it.
// ErrNotFound when there is none.
func (c *Catalog) Carry(ctx context.Context, serverID int64, tli walname.TimeLine, segno walname.SegNo) ([]byte, error) {
	var carry []byte
	err := c.db.QueryRowContext(ctx, `SELECT carry FROM segment_contents WHERE server_id = ? AND segno = ? AND tli <= ?
		AND carry IS NOT NULL ORDER BY tli DESC LIMIT 1`, serverID, int64(segno), tli).Scan(&carry)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("state after segment %d: %w", segno, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read state after segment %d: %w", segno, err)
	}
	return carry, nil
}

// ClearSegmentContents forgets the recorded contents of every segment of a
// server (and its restore points), so that they are read again: the
// receiver's backfill does it at its next start.
func (c *Catalog) ClearSegmentContents(ctx context.Context, serverID int64) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("clear segment contents: %w", err)
	}
	defer tx.Rollback()
	for _, q := range []string{`DELETE FROM segment_contents WHERE server_id = ?`, `DELETE FROM restore_points WHERE server_id = ?`} {
		if _, err := tx.ExecContext(ctx, q, serverID); err != nil {
			return fmt.Errorf("clear segment contents: %w", err)
		}
	}
	return tx.Commit()
}

// SegmentsWithoutContents lists, oldest first, at most limit stored segments
// whose contents are not recorded.
func (c *Catalog) SegmentsWithoutContents(ctx context.Context, serverID int64, limit int) ([]Segment, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT s.`+strings.ReplaceAll(segmentColumns, ", ", ", s.")+` FROM segments s
		WHERE s.server_id = ? AND NOT EXISTS (SELECT 1 FROM segment_contents c
			WHERE c.server_id = s.server_id AND c.tli = s.tli AND c.segno = s.segno)
		ORDER BY s.segno, s.tli LIMIT ?`, serverID, limit)
	if err != nil {
		return nil, fmt.Errorf("list segments to index: %w", err)
	}
	defer rows.Close()
	var out []Segment
	for rows.Next() {
		s, err := scanSegment(rows)
		if err != nil {
			return nil, fmt.Errorf("list segments to index: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

const contentsColumns = `segno, xacts, first_lsn, first_time, last_lsn, last_time, min_time, max_time, min_xid, max_xid`

// IndexedSegment is the recorded contents of one segment.
type IndexedSegment struct {
	TimeLine walname.TimeLine
	SegNo    walname.SegNo
	SegmentContents
}

func scanContents(tli walname.TimeLine, row interface{ Scan(...any) error }) (IndexedSegment, error) {
	var s IndexedSegment
	var segno, firstLSN, firstTime, lastLSN, lastTime, minTime, maxTime int64
	err := row.Scan(&segno, &s.Xacts, &firstLSN, &firstTime, &lastLSN, &lastTime, &minTime, &maxTime, &s.MinXID, &s.MaxXID)
	s.TimeLine, s.SegNo = tli, walname.SegNo(segno)
	s.First = XactRecord{LSN: walname.LSN(firstLSN), Time: fromUnixNano(firstTime)}
	s.Last = XactRecord{LSN: walname.LSN(lastLSN), Time: fromUnixNano(lastTime)}
	s.MinTime, s.MaxTime = fromUnixNano(minTime), fromUnixNano(maxTime)
	return s, err
}

// SegmentContentsRange lists the recorded contents of the segments of a
// timeline from from (inclusive) to to (exclusive), in order; segments not
// read are absent.
func (c *Catalog) SegmentContentsRange(ctx context.Context, serverID int64, tli walname.TimeLine, from, to walname.SegNo) ([]IndexedSegment, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+contentsColumns+` FROM segment_contents
		WHERE server_id = ? AND tli = ? AND segno >= ? AND segno < ? ORDER BY segno`, serverID, tli, int64(from), int64(to))
	if err != nil {
		return nil, fmt.Errorf("read segment contents: %w", err)
	}
	defer rows.Close()
	var out []IndexedSegment
	for rows.Next() {
		s, err := scanContents(tli, rows)
		if err != nil {
			return nil, fmt.Errorf("read segment contents: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// FirstSegmentAfter returns the first segment of a timeline in [from, to)
// holding a commit or abort with a time after t: where recovery to time t
// stops. ErrNotFound when there is none.
func (c *Catalog) FirstSegmentAfter(ctx context.Context, serverID int64, tli walname.TimeLine, from, to walname.SegNo, t time.Time) (IndexedSegment, error) {
	s, err := scanContents(tli, c.db.QueryRowContext(ctx, `SELECT `+contentsColumns+` FROM segment_contents
		WHERE server_id = ? AND tli = ? AND segno >= ? AND segno < ? AND xacts > 0 AND max_time > ?
		ORDER BY segno LIMIT 1`, serverID, tli, int64(from), int64(to), unixNano(t)))
	if errors.Is(err, sql.ErrNoRows) {
		return IndexedSegment{}, fmt.Errorf("commit after %s: %w", t.Format(time.RFC3339), ErrNotFound)
	}
	if err != nil {
		return IndexedSegment{}, fmt.Errorf("find commit after %s: %w", t.Format(time.RFC3339), err)
	}
	return s, nil
}

// SegmentsWithXID lists the segments of a timeline in [from, to) whose
// commits and aborts may include xid (it is within their xid range).
func (c *Catalog) SegmentsWithXID(ctx context.Context, serverID int64, tli walname.TimeLine, from, to walname.SegNo, xid uint32) ([]IndexedSegment, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+contentsColumns+` FROM segment_contents
		WHERE server_id = ? AND tli = ? AND segno >= ? AND segno < ? AND xacts > 0 AND min_xid <= ? AND max_xid >= ?
		ORDER BY segno`, serverID, tli, int64(from), int64(to), xid, xid)
	if err != nil {
		return nil, fmt.Errorf("find xid %d: %w", xid, err)
	}
	defer rows.Close()
	var out []IndexedSegment
	for rows.Next() {
		s, err := scanContents(tli, rows)
		if err != nil {
			return nil, fmt.Errorf("find xid %d: %w", xid, err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// LastXactBefore returns the last segment of a timeline in [from, to) that
// holds a commit or abort: its MaxTime is the newest time recovery to a time
// can reach in that range. ErrNotFound when there is none.
func (c *Catalog) LastXactBefore(ctx context.Context, serverID int64, tli walname.TimeLine, from, to walname.SegNo) (IndexedSegment, error) {
	s, err := scanContents(tli, c.db.QueryRowContext(ctx, `SELECT `+contentsColumns+` FROM segment_contents
		WHERE server_id = ? AND tli = ? AND segno >= ? AND segno < ? AND xacts > 0 ORDER BY segno DESC LIMIT 1`,
		serverID, tli, int64(from), int64(to)))
	if errors.Is(err, sql.ErrNoRows) {
		return IndexedSegment{}, fmt.Errorf("last commit: %w", ErrNotFound)
	}
	if err != nil {
		return IndexedSegment{}, fmt.Errorf("find last commit: %w", err)
	}
	return s, nil
}

// RestorePoints lists a server's restore points in WAL order; with name
// set, only those of that name.
func (c *Catalog) RestorePoints(ctx context.Context, serverID int64, name string) ([]RestorePoint, error) {
	q := `SELECT tli, segno, lsn, end_lsn, name, time FROM restore_points WHERE server_id = ?`
	args := []any{serverID}
	if name != "" {
		q += ` AND name = ?`
		args = append(args, name)
	}
	rows, err := c.db.QueryContext(ctx, q+` ORDER BY lsn, tli`, args...)
	if err != nil {
		return nil, fmt.Errorf("list restore points: %w", err)
	}
	defer rows.Close()
	var out []RestorePoint
	for rows.Next() {
		var rp RestorePoint
		var segno, lsn, end, t int64
		if err := rows.Scan(&rp.TimeLine, &segno, &lsn, &end, &rp.Name, &t); err != nil {
			return nil, fmt.Errorf("list restore points: %w", err)
		}
		rp.SegNo, rp.LSN, rp.EndLSN, rp.Time = walname.SegNo(segno), walname.LSN(lsn), walname.LSN(end), fromUnixNano(t)
		out = append(out, rp)
	}
	return out, rows.Err()
}
