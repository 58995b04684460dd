package status

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/replication"
	"github.com/walhub/walhub/walname"
)

// Postgres is what the server says of itself over a normal connection.
type Postgres struct {
	Reachable bool `json:"reachable"`
	// Error is why the server could not be reached or queried.
	Error      string `json:"error,omitempty"`
	Version    string `json:"version,omitempty"`
	SystemID   string `json:"system_id,omitempty"`
	InRecovery bool   `json:"in_recovery"`
	// CurrentLSN is pg_current_wal_lsn() on a primary, pg_last_wal_receive_lsn() on a standby.
	CurrentLSN          walname.LSN      `json:"current_lsn"`
	TimeLine            walname.TimeLine `json:"timeline,omitempty"`
	WALLevel            string           `json:"wal_level,omitempty"`
	MaxWALSenders       int              `json:"max_wal_senders"`
	WALSenders          int              `json:"wal_senders"`
	MaxReplicationSlots int              `json:"max_replication_slots"`
	WALSegmentSize      uint64           `json:"wal_segment_size,omitempty"`
}

// Slot is the hub's replication slot on the server.
type Slot struct {
	Name string `json:"name"`
	// Known is false when the server could not be asked.
	Known     bool `json:"known"`
	Exists    bool `json:"exists"`
	Active    bool `json:"active"`
	ActivePID int  `json:"active_pid,omitempty"`
	// RestartLSN is the oldest WAL the slot keeps on the server.
	RestartLSN walname.LSN `json:"restart_lsn"`
	// WALStatus is reserved, extended, unreserved or lost (pg_replication_slots.wal_status).
	WALStatus string `json:"wal_status,omitempty"`
	// SafeWALSize is how much more WAL can be written before the slot is in
	// danger of invalidation; absent when max_slot_wal_keep_size is -1.
	SafeWALSize *int64 `json:"safe_wal_size,omitempty"`
	// RetainedBytes is the WAL the slot holds back on the server: current LSN - restart_lsn.
	RetainedBytes int64 `json:"retained_bytes"`
}

// Client is one replication connection from pg_stat_replication.
type Client struct {
	PID             int       `json:"pid"`
	User            string    `json:"user"`
	ApplicationName string    `json:"application_name"`
	ClientAddr      string    `json:"client_addr,omitempty"`
	ClientPort      int       `json:"client_port,omitempty"`
	BackendStart    time.Time `json:"backend_start,omitzero"`
	// State is startup, catchup, streaming, backup or stopping.
	State string `json:"state"`
	// SyncState is async, potential, sync or quorum; SyncPriority its rank in synchronous_standby_names.
	SyncState    string `json:"sync_state"`
	SyncPriority int    `json:"sync_priority"`
	SlotName     string `json:"slot_name,omitempty"`
	// Kind is "standby" when the client replays WAL (it reports replay_lsn),
	// "wal_streamer" otherwise (pg_receivewal, walhub, barman).
	Kind string `json:"kind"`
	// Walhub is true for this hub's own receiver.
	Walhub bool `json:"walhub"`
	// SyncStage is Barman's ladder: "5/5 Hot standby (max)", "4/5 2-safe",
	// "3/5 Remote write", "2/5 WAL Sent (min)", "1/5 1-safe"; over 3 for WAL streamers.
	SyncStage      string       `json:"sync_stage"`
	SyncStageLevel int          `json:"sync_stage_level"`
	SyncStageMax   int          `json:"sync_stage_max"`
	SentLSN        *walname.LSN `json:"sent_lsn"`
	WriteLSN       *walname.LSN `json:"write_lsn"`
	FlushLSN       *walname.LSN `json:"flush_lsn"`
	ReplayLSN      *walname.LSN `json:"replay_lsn"`
	// The *_lag_bytes are the server's current LSN minus each position; absent with the position.
	SentLagBytes   *int64 `json:"sent_lag_bytes"`
	WriteLagBytes  *int64 `json:"write_lag_bytes"`
	FlushLagBytes  *int64 `json:"flush_lag_bytes"`
	ReplayLagBytes *int64 `json:"replay_lag_bytes"`
	// The *_lag_seconds are pg_stat_replication's write_lag, flush_lag, replay_lag.
	WriteLagSeconds  *float64  `json:"write_lag_seconds"`
	FlushLagSeconds  *float64  `json:"flush_lag_seconds"`
	ReplayLagSeconds *float64  `json:"replay_lag_seconds"`
	ReplyTime        time.Time `json:"reply_time,omitzero"`
}

// connect opens a normal connection for status, bounded by timeout.
func connect(ctx context.Context, conninfo string, timeout time.Duration) (*pgx.Conn, error) {
	cfg, err := replication.ParseSQLConfig(conninfo, replication.Options{ApplicationName: replication.AppStatus, ConnectTimeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("conninfo: %w", err)
	}
	// Simple protocol: no prepared statements, one round trip per query, works through poolers.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	return conn, replication.Explain(err)
}

// queryPostgres fills doc.Postgres, doc.Slot and doc.Clients. Whatever fails is
// written into doc.Postgres.Error; it never fails the document.
func queryPostgres(ctx context.Context, srv *config.Server, timeout time.Duration, doc *Document) {
	doc.Slot.Name = srv.Slot
	ctx, cancel := context.WithTimeout(ctx, 3*timeout)
	defer cancel()
	conn, err := connect(ctx, srv.Conninfo, timeout)
	if err != nil {
		doc.Postgres.Error = "cannot connect: " + oneLine(err.Error())
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	pg := &doc.Postgres
	pg.Reachable = true
	if err := readServer(ctx, conn, pg); err != nil {
		pg.Error = err.Error()
		return
	}
	if err := readSlot(ctx, conn, pg, &doc.Slot); err != nil {
		pg.Error = err.Error()
		return
	}
	clients, err := readClients(ctx, conn, srv, pg.CurrentLSN)
	if err != nil {
		pg.Error = err.Error()
		return
	}
	doc.Clients = clients
}

func readServer(ctx context.Context, conn *pgx.Conn, pg *Postgres) error {
	var lsn, tli string
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version'),
			(SELECT system_identifier::text FROM pg_control_system()),
			pg_is_in_recovery(),
			current_setting('wal_level'),
			current_setting('max_wal_senders')::int,
			current_setting('max_replication_slots')::int,
			(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
			(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int,
			CASE WHEN pg_is_in_recovery()
				THEN COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), '0/0')::text
				ELSE pg_current_wal_lsn()::text END,
			CASE WHEN pg_is_in_recovery()
				THEN (SELECT lpad(to_hex(timeline_id), 8, '0') FROM pg_control_checkpoint())
				ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END`).
		Scan(&pg.Version, &pg.SystemID, &pg.InRecovery, &pg.WALLevel, &pg.MaxWALSenders, &pg.MaxReplicationSlots,
			&pg.WALSegmentSize, &pg.WALSenders, &lsn, &tli)
	if err != nil {
		return fmt.Errorf("read server settings: %w", err)
	}
	if pg.CurrentLSN, err = walname.ParseLSN(lsn); err != nil {
		return fmt.Errorf("read current WAL position: %w", err)
	}
	var n uint32
	if _, err := fmt.Sscanf(tli, "%x", &n); err != nil {
		return fmt.Errorf("read timeline %q: %w", tli, err)
	}
	pg.TimeLine = walname.TimeLine(n)
	return nil
}

func readSlot(ctx context.Context, conn *pgx.Conn, pg *Postgres, slot *Slot) error {
	var activePID *int32
	var restart, walStatus *string
	err := conn.QueryRow(ctx, `SELECT active, active_pid, restart_lsn::text, wal_status, safe_wal_size
		FROM pg_replication_slots WHERE slot_name = $1`, slot.Name).
		Scan(&slot.Active, &activePID, &restart, &walStatus, &slot.SafeWALSize)
	slot.Known = true
	if err == pgx.ErrNoRows {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read slot %s: %w", slot.Name, err)
	}
	slot.Exists = true
	if activePID != nil {
		slot.ActivePID = int(*activePID)
	}
	if walStatus != nil {
		slot.WALStatus = *walStatus
	}
	if restart != nil {
		if slot.RestartLSN, err = walname.ParseLSN(*restart); err != nil {
			return fmt.Errorf("slot %s restart_lsn: %w", slot.Name, err)
		}
		if pg.CurrentLSN > slot.RestartLSN {
			slot.RetainedBytes = int64(pg.CurrentLSN - slot.RestartLSN)
		}
	}
	return nil
}

func readClients(ctx context.Context, conn *pgx.Conn, srv *config.Server, current walname.LSN) ([]Client, error) {
	rows, err := conn.Query(ctx, `SELECT r.pid, COALESCE(r.usename::text, ''), r.application_name,
			COALESCE(host(r.client_addr), ''), COALESCE(r.client_port, 0), r.backend_start,
			COALESCE(r.state, ''), COALESCE(r.sync_state, ''), COALESCE(r.sync_priority, 0),
			COALESCE(s.slot_name::text, ''),
			r.sent_lsn::text, r.write_lsn::text, r.flush_lsn::text, r.replay_lsn::text,
			EXTRACT(EPOCH FROM r.write_lag)::float8, EXTRACT(EPOCH FROM r.flush_lag)::float8,
			EXTRACT(EPOCH FROM r.replay_lag)::float8, r.reply_time
		FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
		ORDER BY r.sync_priority DESC, r.application_name, r.pid`)
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_replication: %w", err)
	}
	defer rows.Close()
	out := []Client{}
	for rows.Next() {
		var c Client
		var pid, port, prio int32
		var start, reply *time.Time
		var sent, write, flush, replay *string
		if err := rows.Scan(&pid, &c.User, &c.ApplicationName, &c.ClientAddr, &port, &start, &c.State,
			&c.SyncState, &prio, &c.SlotName, &sent, &write, &flush, &replay,
			&c.WriteLagSeconds, &c.FlushLagSeconds, &c.ReplayLagSeconds, &reply); err != nil {
			return nil, fmt.Errorf("read pg_stat_replication: %w", err)
		}
		c.PID, c.ClientPort, c.SyncPriority = int(pid), int(port), int(prio)
		if start != nil {
			c.BackendStart = start.UTC()
		}
		if reply != nil {
			c.ReplyTime = reply.UTC()
		}
		for _, p := range []struct {
			text *string
			lsn  **walname.LSN
			lag  **int64
		}{{sent, &c.SentLSN, &c.SentLagBytes}, {write, &c.WriteLSN, &c.WriteLagBytes},
			{flush, &c.FlushLSN, &c.FlushLagBytes}, {replay, &c.ReplayLSN, &c.ReplayLagBytes}} {
			if p.text == nil {
				continue
			}
			lsn, err := walname.ParseLSN(*p.text)
			if err != nil {
				return nil, fmt.Errorf("pg_stat_replication of pid %d: %w", pid, err)
			}
			lag := int64(current) - int64(lsn)
			*p.lsn, *p.lag = &lsn, &lag
		}
		c.Walhub = c.ApplicationName == srv.ApplicationName || (c.SlotName != "" && c.SlotName == srv.Slot)
		c.Kind, c.SyncStageLevel, c.SyncStageMax, c.SyncStage = syncStage(c)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pg_stat_replication: %w", err)
	}
	return out, nil
}

// syncStage places a client on Barman's ladder. Only a standby reports a
// replay position; it reaches 5 when it has replayed everything and 4 (2-safe)
// when it has flushed everything. Below that, for standbys and WAL streamers
// alike: everything written (3), everything sent (2), else 1-safe (1).
func syncStage(c Client) (kind string, level, top int, label string) {
	kind, top = "wal_streamer", 3
	if c.ReplayLSN != nil {
		kind, top = "standby", 5
	}
	caughtUp := func(lag *int64) bool { return lag != nil && *lag <= 0 }
	switch {
	case kind == "standby" && caughtUp(c.ReplayLagBytes):
		level, label = 5, "Hot standby (max)"
	case kind == "standby" && caughtUp(c.FlushLagBytes):
		level, label = 4, "2-safe"
	case caughtUp(c.WriteLagBytes):
		level, label = 3, "Remote write"
	case caughtUp(c.SentLagBytes):
		level, label = 2, "WAL Sent (min)"
	default:
		level, label = 1, "1-safe"
	}
	return kind, level, top, fmt.Sprintf("%d/%d %s", level, top, label)
}

// IdentifySystem opens a physical replication connection (replication=true),
// as the receiver and backups do, and runs IDENTIFY_SYSTEM.
func IdentifySystem(ctx context.Context, conninfo string, timeout time.Duration) (replication.Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*timeout)
	defer cancel()
	conn, err := replication.Connect(ctx, conninfo, replication.Options{ApplicationName: replication.AppCheck, ConnectTimeout: timeout})
	switch {
	case replication.IsBadConninfo(err):
		return replication.Identity{}, fmt.Errorf("conninfo: %w", err)
	case err != nil:
		return replication.Identity{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return replication.IdentifySystem(ctx, conn)
}
