// Package replication opens walhub's connections to a PostgreSQL server and
// holds the replication-protocol commands every part of walhub shares: the
// receiver (stream), base backups (basebackup) and walhub check (status),
// like PostgreSQL's streamutil.c serves pg_receivewal and pg_basebackup.
// It runs IDENTIFY_SYSTEM, reads wal_segment_size, and reads, creates and
// drops physical replication slots. What only the receiver sends
// (START_REPLICATION, TIMELINE_HISTORY, status updates) and only backups send
// (BASE_BACKUP) stays with them.
//
// # Application names
//
// Every connection walhub opens names itself, whatever application_name the
// conninfo gives: the receiver with the server's application_name setting
// (default walhub_<name>: what synchronous_standby_names lists, and what
// walhub status recognises the hub's receiver by in pg_stat_replication),
// every other connection with a walhub_<purpose> name of its own (the App*
// constants). So pg_stat_activity tells them apart, and no backup or check
// is ever taken for the receiver or counted as a synchronous standby.
package replication

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/walhub/walhub/walname"
)

// Application names of the connections other than the receiver's.
const (
	// AppBackup: BASE_BACKUP, and the pg_switch_wal() that completes its WAL.
	AppBackup = "walhub_backup"
	// AppCheck: the replication connection walhub check probes.
	AppCheck = "walhub_check"
	// AppStatus: the queries of walhub status.
	AppStatus = "walhub_status"
	// AppSnapshot: the session that holds pg_backup_start for a snapshot.
	AppSnapshot = "walhub_snapshot"
)

// Options say how to open a connection.
type Options struct {
	// ApplicationName names the connection on the server (see the package
	// comment): the receiver's setting, or one of the App* constants.
	ApplicationName string
	// ConnectTimeout, when not 0, caps the conninfo's connect_timeout.
	ConnectTimeout time.Duration
	// ReadBufferSize, when not 0, is the size of the socket read buffer
	// (pgproto3's default is 8 kB): large for a long run of big messages.
	ReadBufferSize int
}

func (o Options) apply(cfg *pgconn.Config) {
	if o.ConnectTimeout > 0 && (cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > o.ConnectTimeout) {
		cfg.ConnectTimeout = o.ConnectTimeout
	}
	if o.ApplicationName != "" {
		cfg.RuntimeParams["application_name"] = o.ApplicationName
	}
	if o.ReadBufferSize > 0 {
		size := o.ReadBufferSize
		cfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
			return pgproto3.NewFrontend(bufio.NewReaderSize(r, size), w)
		}
	}
}

// ParseConfig parses a libpq conninfo for a physical replication connection
// (replication=true) named and bounded by o. Its errors are
// *pgconn.ParseConfigError.
func ParseConfig(conninfo string, o Options) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(conninfo)
	if err != nil {
		return nil, err
	}
	if err := checkKeywords(conninfo, cfg); err != nil {
		return nil, err
	}
	cfg.RuntimeParams["replication"] = "true"
	o.apply(cfg)
	return cfg, nil
}

// Connect opens a physical replication connection. A conninfo that does not
// parse comes back as a *pgconn.ParseConfigError (no retry helps); other
// errors are pgconn's, unwrapped.
func Connect(ctx context.Context, conninfo string, o Options) (*pgconn.PgConn, error) {
	cfg, err := ParseConfig(conninfo, o)
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	return conn, Explain(err)
}

// ParseSQLConfig parses a conninfo for a normal (SQL) connection, named and
// bounded by the same policy as replication connections.
func ParseSQLConfig(conninfo string, o Options) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(conninfo)
	if err != nil {
		return nil, err
	}
	if err := checkKeywords(conninfo, &cfg.Config); err != nil {
		return nil, err
	}
	o.apply(&cfg.Config)
	return cfg, nil
}

// Identity is what IDENTIFY_SYSTEM says about the server.
type Identity struct {
	SystemID string           `json:"system_id"`
	TimeLine walname.TimeLine `json:"timeline"`
	XLogPos  walname.LSN      `json:"xlogpos"`
}

// IdentifySystem runs IDENTIFY_SYSTEM.
func IdentifySystem(ctx context.Context, conn *pgconn.PgConn) (Identity, error) {
	res, err := conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		return Identity{}, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) < 3 {
		return Identity{}, errors.New("IDENTIFY_SYSTEM: unexpected result shape")
	}
	row := res[0].Rows[0]
	tli, err := strconv.ParseUint(string(row[1]), 10, 32)
	if err != nil || tli == 0 {
		return Identity{}, fmt.Errorf("IDENTIFY_SYSTEM: invalid timeline %q", row[1])
	}
	pos, err := walname.ParseLSN(strings.TrimSpace(string(row[2])))
	if err != nil {
		return Identity{}, fmt.Errorf("IDENTIFY_SYSTEM: xlogpos: %w", err)
	}
	if len(row[0]) == 0 {
		return Identity{}, errors.New("IDENTIFY_SYSTEM: no system identifier")
	}
	return Identity{SystemID: string(row[0]), TimeLine: walname.TimeLine(tli), XLogPos: pos}, nil
}

// SegmentSize asks the server for wal_segment_size: it is a property of the
// cluster, chosen at initdb, and never assumed.
func SegmentSize(ctx context.Context, conn *pgconn.PgConn) (uint64, error) {
	res, err := conn.Exec(ctx, "SHOW wal_segment_size").ReadAll()
	if err != nil {
		return 0, fmt.Errorf("SHOW wal_segment_size: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return 0, errors.New("SHOW wal_segment_size: unexpected result shape")
	}
	size, err := walname.ParseSize(string(res[0].Rows[0][0]))
	if err != nil {
		return 0, fmt.Errorf("SHOW wal_segment_size: %w", err)
	}
	if err := walname.ValidSegmentSize(size); err != nil {
		return 0, err
	}
	return size, nil
}

// Slot is what READ_REPLICATION_SLOT says about a physical slot.
type Slot struct {
	Exists bool
	// Lost is true for a slot that exists but holds no WAL any more: it was
	// invalidated (max_slot_wal_keep_size) and cannot be used to stream.
	Lost       bool
	RestartLSN walname.LSN
	// RestartTimeLine is the timeline of RestartLSN (0 when Lost).
	RestartTimeLine walname.TimeLine
}

// ReadSlot runs READ_REPLICATION_SLOT (PostgreSQL 15 and later). A slot
// that does not exist is no error: Exists is false. A logical slot of that
// name is an error.
func ReadSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (Slot, error) {
	res, err := conn.Exec(ctx, "READ_REPLICATION_SLOT "+slot).ReadAll()
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42601" {
			return Slot{}, fmt.Errorf("READ_REPLICATION_SLOT %s: %w (walhub needs PostgreSQL 15 or later)", slot, err)
		}
		return Slot{}, fmt.Errorf("READ_REPLICATION_SLOT %s: %w", slot, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 3 {
		return Slot{}, fmt.Errorf("READ_REPLICATION_SLOT %s: unexpected result shape", slot)
	}
	row := res[0].Rows[0]
	if row[0] == nil {
		return Slot{}, nil
	}
	if string(row[0]) != "physical" {
		return Slot{}, fmt.Errorf("replication slot %s is a %s slot, not a physical one", slot, row[0])
	}
	if row[1] == nil {
		return Slot{Exists: true, Lost: true}, nil
	}
	lsn, err := walname.ParseLSN(string(row[1]))
	if err != nil {
		return Slot{}, fmt.Errorf("READ_REPLICATION_SLOT %s: %w", slot, err)
	}
	s := Slot{Exists: true, RestartLSN: lsn}
	if row[2] != nil {
		tli, err := strconv.ParseUint(string(row[2]), 10, 32)
		if err != nil {
			return Slot{}, fmt.Errorf("READ_REPLICATION_SLOT %s: restart timeline %q: %w", slot, row[2], err)
		}
		s.RestartTimeLine = walname.TimeLine(tli)
	}
	return s, nil
}

// CreateSlot creates a physical slot that reserves WAL at once.
func CreateSlot(ctx context.Context, conn *pgconn.PgConn, slot string) error {
	if _, err := conn.Exec(ctx, "CREATE_REPLICATION_SLOT "+slot+" PHYSICAL (RESERVE_WAL)").ReadAll(); err != nil {
		return fmt.Errorf("create replication slot %s: %w", slot, err)
	}
	return nil
}

// DropSlot drops a replication slot.
func DropSlot(ctx context.Context, conn *pgconn.PgConn, slot string) error {
	if _, err := conn.Exec(ctx, "DROP_REPLICATION_SLOT "+slot).ReadAll(); err != nil {
		return fmt.Errorf("drop replication slot %s: %w", slot, err)
	}
	return nil
}
