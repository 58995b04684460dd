package basebackup

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/walhub/walhub/replication"
	"github.com/walhub/walhub/walname"
)

// ErrChecksumFailure is returned (wrapped) when the server reported invalid
// page checksums (SQLSTATE XX001) at the end of a BASE_BACKUP: the data was all
// sent, but some pages in it are corrupt.
var ErrChecksumFailure = errors.New("page checksum failure")

// readBufferSize is the read buffer of the replication connection.
const readBufferSize = 1 << 20

// connect opens the replication connection a backup runs on.
func connect(ctx context.Context, conninfo string) (*pgconn.PgConn, error) {
	// The backup arrives as a long run of 32 kB messages: read the socket in
	// large chunks rather than pgproto3's default 8 kB, saving system calls.
	conn, err := replication.Connect(ctx, conninfo, replication.Options{
		ApplicationName: replication.AppBackup, ReadBufferSize: readBufferSize})
	switch {
	case replication.IsBadConninfo(err):
		return nil, fmt.Errorf("parse conninfo: %w", err)
	case err != nil:
		return nil, fmt.Errorf("connect for replication: %w", err)
	}
	return conn, nil
}

// command options for BASE_BACKUP.
type command struct {
	Label             string
	FastCheckpoint    bool
	MaxRate           int // kB/s, 0 = unlimited
	ManifestChecksums string
	// Compression and CompressionDetail ask the server to compress
	// ("zstd", "level=1,workers=2"); empty: it sends the archives plain.
	Compression, CompressionDetail string
}

// quote makes a single-quoted SQL string literal.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// String builds the PostgreSQL 15 BASE_BACKUP command. WAL is not included
// (the hub streams it) and the server does not wait for archiving.
func (c command) String() string {
	checkpoint := "spread"
	if c.FastCheckpoint {
		checkpoint = "fast"
	}
	opts := []string{
		"LABEL " + quote(c.Label),
		"PROGRESS",
		"CHECKPOINT " + quote(checkpoint),
		"WAL false",
		"WAIT false",
		"TABLESPACE_MAP",
		"VERIFY_CHECKSUMS",
		"MANIFEST 'yes'",
		"MANIFEST_CHECKSUMS " + quote(c.ManifestChecksums),
	}
	if c.MaxRate > 0 {
		opts = append(opts, fmt.Sprintf("MAX_RATE %d", c.MaxRate))
	}
	if c.Compression != "" {
		opts = append(opts, "COMPRESSION "+quote(c.Compression))
		if c.CompressionDetail != "" {
			opts = append(opts, "COMPRESSION_DETAIL "+quote(c.CompressionDetail))
		}
	}
	return "BASE_BACKUP (" + strings.Join(opts, ", ") + ")"
}

// Tablespace is one row of BASE_BACKUP's tablespace result set.
type Tablespace struct {
	// OID is 0 for the base directory.
	OID uint32
	// Location is the tablespace's directory on the server ("" for base).
	Location string
	// Size is the server's estimate in bytes (from PROGRESS).
	Size int64
}

// handler receives the decoded BASE_BACKUP stream. The byte slices passed to
// Data and ManifestData are only valid during the call.
type handler interface {
	Start(lsn walname.LSN, tli walname.TimeLine, tablespaces []Tablespace) error
	NewArchive(name, location string) error
	Data(p []byte) error
	Manifest() error
	ManifestData(p []byte) error
	Progress(done int64)
	End(lsn walname.LSN, tli walname.TimeLine) error
}

// streamBackup sends cmd and decodes the single typed COPY stream of PostgreSQL 15+
// into h, until ReadyForQuery. It returns ErrChecksumFailure (wrapped) when the
// server ended with SQLSTATE XX001 after sending everything.
func streamBackup(ctx context.Context, conn *pgconn.PgConn, cmd command, h handler) error {
	conn.Frontend().SendQuery(&pgproto3.Query{String: cmd.String()})
	if err := conn.Frontend().Flush(); err != nil {
		return fmt.Errorf("send BASE_BACKUP: %w", err)
	}
	// Result sets arrive in order: start position, tablespaces, then (after the
	// COPY stream) the end position. Each is closed by CommandComplete; a new
	// RowDescription or the COPY also closes an open one.
	d := decoder{h: h}
	var serverErr error
	// Receive without a context: pgconn would watch it anew for each of the
	// many small messages. Cancellation instead ends the read by a deadline.
	stop := context.AfterFunc(ctx, func() { conn.Conn().SetDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return fmt.Errorf("BASE_BACKUP: %w", ctxErr)
			}
			return fmt.Errorf("BASE_BACKUP: connection lost: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.RowDescription:
			if err := d.closeResultSet(); err != nil {
				return err
			}
			d.open = true
		case *pgproto3.DataRow:
			row := make([][]byte, len(m.Values))
			for i, v := range m.Values {
				if v != nil {
					row[i] = append([]byte{}, v...)
				}
			}
			d.rows = append(d.rows, row)
		case *pgproto3.CommandComplete, *pgproto3.CopyOutResponse:
			if err := d.closeResultSet(); err != nil {
				return err
			}
		case *pgproto3.CopyData:
			if err := d.copyData(m.Data); err != nil {
				return err
			}
		case *pgproto3.CopyDone, *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		case *pgproto3.ErrorResponse:
			pgErr := pgconn.ErrorResponseToPgError(m)
			if pgErr.Code == "XX001" {
				serverErr = fmt.Errorf("%w: %s", ErrChecksumFailure, pgErr.Message)
			} else {
				serverErr = fmt.Errorf("BASE_BACKUP failed on the server: %w", pgErr)
			}
		case *pgproto3.ReadyForQuery:
			if err := d.closeResultSet(); err != nil {
				return err
			}
			if serverErr != nil {
				return serverErr
			}
			if d.sets < 3 {
				return errors.New("BASE_BACKUP ended without reporting its end position")
			}
			return nil
		default:
			return fmt.Errorf("BASE_BACKUP: unexpected message %T", msg)
		}
	}
}

// decoder holds the state of one BASE_BACKUP response.
type decoder struct {
	h          handler
	open       bool
	rows       [][][]byte
	sets       int
	startLSN   walname.LSN
	startTLI   walname.TimeLine
	inManifest bool
}

// closeResultSet interprets the open result set by its position.
func (d *decoder) closeResultSet() error {
	if !d.open {
		return nil
	}
	rows := d.rows
	d.open, d.rows = false, nil
	d.sets++
	switch d.sets {
	case 1:
		lsn, tli, err := positionRow(rows)
		if err != nil {
			return fmt.Errorf("BASE_BACKUP start position: %w", err)
		}
		d.startLSN, d.startTLI = lsn, tli
	case 2:
		var tablespaces []Tablespace
		for _, r := range rows {
			if len(r) < 3 {
				return errors.New("BASE_BACKUP tablespace list: unexpected row shape")
			}
			var ts Tablespace
			if r[0] != nil {
				oid, err := strconv.ParseUint(string(r[0]), 10, 32)
				if err != nil {
					return fmt.Errorf("BASE_BACKUP tablespace oid %q: %w", r[0], err)
				}
				ts.OID = uint32(oid)
			}
			ts.Location = string(r[1])
			if r[2] != nil {
				kb, err := strconv.ParseInt(string(r[2]), 10, 64)
				if err != nil {
					return fmt.Errorf("BASE_BACKUP tablespace size %q: %w", r[2], err)
				}
				ts.Size = kb * 1024
			}
			tablespaces = append(tablespaces, ts)
		}
		return d.h.Start(d.startLSN, d.startTLI, tablespaces)
	case 3:
		lsn, tli, err := positionRow(rows)
		if err != nil {
			return fmt.Errorf("BASE_BACKUP end position: %w", err)
		}
		return d.h.End(lsn, tli)
	}
	return nil
}

func positionRow(rows [][][]byte) (walname.LSN, walname.TimeLine, error) {
	if len(rows) != 1 || len(rows[0]) < 2 {
		return 0, 0, errors.New("unexpected result shape")
	}
	lsn, err := walname.ParseLSN(string(rows[0][0]))
	if err != nil {
		return 0, 0, err
	}
	tli, err := strconv.ParseUint(string(rows[0][1]), 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("timeline %q: %w", rows[0][1], err)
	}
	return lsn, walname.TimeLine(tli), nil
}

// copyData decodes one typed CopyData message of the PG15 stream. Data
// messages after 'm' belong to the manifest.
func (d *decoder) copyData(data []byte) error {
	if len(data) == 0 {
		return errors.New("BASE_BACKUP: empty CopyData message")
	}
	body := data[1:]
	switch data[0] {
	case 'n':
		name, rest, ok1 := cutNUL(body)
		location, _, ok2 := cutNUL(rest)
		if !ok1 || !ok2 {
			return errors.New("BASE_BACKUP: malformed new-archive message")
		}
		return d.h.NewArchive(name, location)
	case 'd':
		if d.inManifest {
			return d.h.ManifestData(body)
		}
		return d.h.Data(body)
	case 'p':
		if len(body) != 8 {
			return errors.New("BASE_BACKUP: malformed progress message")
		}
		var n uint64
		for _, b := range body {
			n = n<<8 | uint64(b)
		}
		d.h.Progress(int64(n))
		return nil
	case 'm':
		d.inManifest = true
		return d.h.Manifest()
	}
	return fmt.Errorf("BASE_BACKUP: unknown CopyData type %q", data[0])
}

func cutNUL(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}
