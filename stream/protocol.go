package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/walhub/walhub/walname"
)

// This file holds the replication-protocol commands only the receiver sends
// over a replication=true connection, one function per command; those it
// shares with backups and checks (IDENTIFY_SYSTEM, wal_segment_size, slots)
// are in package replication.

func timelineHistory(ctx context.Context, conn *pgconn.PgConn, tli walname.TimeLine) ([]byte, error) {
	r, err := pglogrepl.TimelineHistory(ctx, conn, int32(tli))
	if err != nil {
		return nil, fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
	}
	return r.Content, nil
}

// timelineEnd is how the server says that the timeline being streamed ended:
// NextTimeLine begins at SwitchLSN.
type timelineEnd struct {
	NextTimeLine walname.TimeLine
	SwitchLSN    walname.LSN
}

func (e *timelineEnd) Error() string {
	return fmt.Sprintf("timeline ends at %s; timeline %d follows", e.SwitchLSN, e.NextTimeLine)
}

// startStreaming sends START_REPLICATION and returns once the server starts
// COPY. When start is exactly the end of timeline tli the server skips COPY
// and answers with the next timeline: that comes back as a *timelineEnd. On a
// server error the connection is left ready for the next command.
func startStreaming(ctx context.Context, conn *pgconn.PgConn, slot string, start walname.LSN, tli walname.TimeLine) error {
	conn.Frontend().SendQuery(&pgproto3.Query{
		String: fmt.Sprintf("START_REPLICATION SLOT %s PHYSICAL %s TIMELINE %d", slot, start, tli)})
	if err := conn.Frontend().Flush(); err != nil {
		return fmt.Errorf("send START_REPLICATION: %w", err)
	}
	var serverErr error
	var end *timelineEnd
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return fmt.Errorf("START_REPLICATION: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
			return nil
		case *pgproto3.ErrorResponse:
			serverErr = pgconn.ErrorResponseToPgError(m)
		case *pgproto3.DataRow:
			if end, err = parseTimelineRow(m); err != nil {
				return fmt.Errorf("START_REPLICATION: %w", err)
			}
		case *pgproto3.ReadyForQuery:
			switch {
			case serverErr != nil:
				return fmt.Errorf("START_REPLICATION %s on timeline %d: %w", start, tli, serverErr)
			case end != nil:
				return end
			}
			return fmt.Errorf("START_REPLICATION %s on timeline %d: server ended without streaming", start, tli)
		}
	}
}

// parseTimelineRow reads the (next_tli, next_tli_startpos) row the server
// sends when a timeline ends.
func parseTimelineRow(m *pgproto3.DataRow) (*timelineEnd, error) {
	if len(m.Values) != 2 {
		return nil, fmt.Errorf("end of timeline: expected 2 columns, got %d", len(m.Values))
	}
	tli, err := strconv.ParseUint(string(m.Values[0]), 10, 32)
	if err != nil || tli == 0 {
		return nil, fmt.Errorf("end of timeline: invalid next timeline %q", m.Values[0])
	}
	lsn, err := walname.ParseLSN(string(m.Values[1]))
	if err != nil {
		return nil, fmt.Errorf("end of timeline: %w", err)
	}
	return &timelineEnd{NextTimeLine: walname.TimeLine(tli), SwitchLSN: lsn}, nil
}

// errServerEndedStream is returned when the server ends COPY without naming a
// next timeline: it is shutting down.
var errServerEndedStream = errors.New("server ended the replication stream (shutting down?)")

// finishCopy answers the server's CopyDone with ours and reads what follows:
// the next timeline, or nothing when the server is going away.
func finishCopy(ctx context.Context, conn *pgconn.PgConn) (*timelineEnd, error) {
	conn.Frontend().Send(&pgproto3.CopyDone{})
	if err := conn.Frontend().Flush(); err != nil {
		return nil, fmt.Errorf("%w: %v", errServerEndedStream, err)
	}
	var end *timelineEnd
	var serverErr error
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errServerEndedStream, err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			if end, err = parseTimelineRow(m); err != nil {
				return nil, err
			}
		case *pgproto3.ErrorResponse:
			serverErr = pgconn.ErrorResponseToPgError(m)
		case *pgproto3.ReadyForQuery:
			switch {
			case serverErr != nil:
				return nil, fmt.Errorf("end of replication stream: %w", serverErr)
			case end != nil:
				return end, nil
			}
			return nil, errServerEndedStream
		}
	}
}

// pgEpoch is PostgreSQL's epoch for timestamps in the replication protocol.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// statusMessage builds a standby status update. It is built here rather than
// with pglogrepl, which would replace a zero flush position with the write
// position: flush must only ever be what is fsynced. Apply is always zero
// (the hub applies nothing), as pg_receivewal reports it.
func statusMessage(write, flush walname.LSN, replyRequested bool) []byte {
	msg := make([]byte, 34)
	msg[0] = 'r'
	binary.BigEndian.PutUint64(msg[1:], uint64(write))
	binary.BigEndian.PutUint64(msg[9:], uint64(flush))
	binary.BigEndian.PutUint64(msg[17:], 0)
	binary.BigEndian.PutUint64(msg[25:], uint64(time.Since(pgEpoch).Microseconds()))
	if replyRequested {
		msg[33] = 1
	}
	return msg
}

// sendStatus sends a standby status update: written up to write, fsynced up to flush.
func sendStatus(conn *pgconn.PgConn, write, flush walname.LSN) error {
	buf, err := (&pgproto3.CopyData{Data: statusMessage(write, flush, false)}).Encode(nil)
	if err != nil {
		return fmt.Errorf("encode status update: %w", err)
	}
	if err := conn.Frontend().SendUnbufferedEncodedCopyData(buf); err != nil {
		return fmt.Errorf("send status update: %w", err)
	}
	return nil
}

// isWALRemoved tells whether err is the server saying that WAL the receiver
// asked for is gone ("requested WAL segment ... has already been removed").
func isWALRemoved(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && strings.Contains(pgErr.Message, "has already been removed")
}
