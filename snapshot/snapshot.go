// Package snapshot brackets an external file-system backup (LVM, ZFS, SAN,
// general backup software) with pg_backup_start and pg_backup_stop. The
// non-exclusive backup API needs one session held open between the two calls;
// the walhub daemon is long-running, so it holds that session.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhub/walhub/basebackup"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/privileges"
	"github.com/walhub/walhub/replication"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/walname"
)

// ErrNotRunning is returned by Stop when no snapshot was started.
var ErrNotRunning = errors.New("no snapshot is running")

// ErrBusy is returned by Start when a snapshot, backup or expire of the server runs.
var ErrBusy = errors.New("the server is busy")

// WaitWAL waits until the WAL of backup b (start to stop LSN) is in the
// catalog, switching WAL on the server when the last segment is not complete.
type WaitWAL func(ctx context.Context, srv *config.Server, b catalog.Backup) error

// HubWAL is the WaitWAL of the daemon: it waits, as a base backup does, for
// the receiver to catalog the WAL, for at most the server's backup.wal_timeout.
func HubWAL(cat *catalog.Catalog, log *slog.Logger) WaitWAL {
	return func(ctx context.Context, srv *config.Server, b catalog.Backup) error {
		cs, err := cat.ServerByName(ctx, srv.Name)
		if err != nil {
			return err
		}
		return basebackup.WaitWAL(ctx, basebackup.WALWait{Catalog: cat, ServerID: cs.ID, SegmentSize: cs.SegmentSize,
			StartLSN: b.StartLSN, StartTLI: b.StartTLI, StopLSN: b.StopLSN, StopTLI: b.StopTLI,
			Timeout: srv.Backup.WALTimeout.Duration, SwitchWAL: basebackup.SwitchWALOn(srv.Conninfo), Log: log})
	}
}

// Manager holds the sessions of running snapshots, at most one per server.
type Manager struct {
	Config *config.Config
	// Repo is the repository (store, working area, catalog).
	Repo    *repository.Repository
	Log     *slog.Logger
	WaitWAL WaitWAL
	// Timeout, when set, overrides every server's snapshot_timeout (tests).
	Timeout time.Duration

	// mu guards running and closed only: it is never held across a
	// connection, a checkpoint or a wait, so one server's slow start does not
	// hold up another's snapshot, or a stop.
	mu      sync.Mutex
	running map[string]*session
	closed  bool
	// reloaded is the configuration put in force by SetConfig, if any.
	reloaded atomic.Pointer[config.Config]
}

// SetConfig puts a reloaded configuration in force for the snapshots started
// and stopped after it. A running snapshot keeps the timeout it started with.
func (m *Manager) SetConfig(cfg *config.Config) { m.reloaded.Store(cfg) }

// config is the configuration in force.
func (m *Manager) config() *config.Config {
	if cfg := m.reloaded.Load(); cfg != nil {
		return cfg
	}
	return m.Config
}

type session struct {
	// starting is set while Start connects and runs pg_backup_start: the
	// server is taken, but the session is not ready to stop.
	starting bool
	conn     *pgx.Conn
	lock     *lock.Lock
	backup   catalog.Backup
	timer    *time.Timer
}

func (m *Manager) timeout(srv *config.Server) time.Duration {
	if m.Timeout > 0 {
		return m.Timeout
	}
	return srv.SnapshotTimeout.Duration
}

// FailInterrupted marks snapshots left running by an earlier daemon as failed:
// the session that held pg_backup_start died with it, so PostgreSQL has ended
// that backup and its backup_label can never be had. Call it at daemon start.
func (m *Manager) FailInterrupted(ctx context.Context) error {
	servers, err := m.Repo.Catalog.Servers(ctx)
	if err != nil {
		return err
	}
	for _, s := range servers {
		backups, err := m.Repo.Catalog.Backups(ctx, s.ID)
		if err != nil {
			return err
		}
		for _, b := range backups {
			if b.Kind != catalog.KindSnapshot || b.State != catalog.StateRunning {
				continue
			}
			b.State, b.FinishedAt = catalog.StateFailed, time.Now()
			b.Reason = "the walhub daemon restarted during the snapshot: the session holding pg_backup_start was lost, so this copy has no backup_label and cannot be restored"
			if err := m.Repo.Catalog.UpdateBackup(ctx, b); err != nil {
				return err
			}
			m.log().Error("snapshot failed", "server", s.Name, "backup", b.ID, "reason", b.Reason)
		}
	}
	return nil
}

// Start runs pg_backup_start in a session the manager keeps open.
func (m *Manager) Start(ctx context.Context, server, label string, fast bool) (api.SnapshotStarted, error) {
	srv, err := m.config().Server(server)
	if err != nil {
		return api.SnapshotStarted{}, err
	}
	// Take the server, then do the slow part (lock, connect, checkpoint)
	// without holding the manager's mutex.
	m.mu.Lock()
	if m.running == nil {
		m.running = map[string]*session{}
	}
	if s, ok := m.running[server]; ok {
		m.mu.Unlock()
		if s.starting {
			return api.SnapshotStarted{}, fmt.Errorf("%w: a snapshot of %s is starting", ErrBusy, server)
		}
		return api.SnapshotStarted{}, fmt.Errorf("%w: a snapshot of %s is already running (backup %s, started %s): stop it first",
			ErrBusy, server, s.backup.ID, s.backup.StartedAt.Local().Format(time.DateTime))
	}
	if m.closed {
		m.mu.Unlock()
		return api.SnapshotStarted{}, fmt.Errorf("%w: the daemon is stopping", ErrBusy)
	}
	s := &session{starting: true}
	m.running[server] = s
	m.mu.Unlock()
	started := false
	defer func() {
		if !started {
			m.mu.Lock()
			if m.running[server] == s {
				delete(m.running, server)
			}
			m.mu.Unlock()
		}
	}()
	l, err := m.Repo.Work.Lock(server, "snapshot", "")
	if err != nil {
		return api.SnapshotStarted{}, fmt.Errorf("%w: snapshot of %s: %w", ErrBusy, server, err)
	}
	ok := false
	defer func() {
		if !ok {
			l.Release()
		}
	}()
	cs, err := m.Repo.Catalog.EnsureServer(ctx, server)
	if err != nil {
		return api.SnapshotStarted{}, err
	}
	// The session must outlive this request: it is not tied to ctx.
	connCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := replication.ParseSQLConfig(srv.Conninfo, replication.Options{ApplicationName: replication.AppSnapshot})
	var conn *pgx.Conn
	if err == nil {
		conn, err = pgx.ConnectConfig(connCtx, cfg)
	}
	if err != nil {
		return api.SnapshotStarted{}, fmt.Errorf("snapshot of %s: connect: %w", server, replication.Explain(err))
	}
	if label == "" {
		label = "walhub snapshot"
	}
	var startText, walFile string
	err = conn.QueryRow(ctx, `SELECT lsn::text, pg_walfile_name(lsn) FROM pg_backup_start($1, $2) AS lsn`, label, fast).
		Scan(&startText, &walFile)
	if err != nil {
		conn.Close(context.Background())
		return api.SnapshotStarted{}, fmt.Errorf("snapshot of %s: pg_backup_start: %w", server,
			privileges.Explain(err, privileges.BackupStart, conn.Config().User))
	}
	start, err := walname.ParseLSN(startText)
	if err != nil {
		conn.Close(context.Background())
		return api.SnapshotStarted{}, err
	}
	tli, _ := walname.Parse(walFile)
	now := time.Now().UTC()
	b, err := m.Repo.NewBackup(ctx, server, "snap-", catalog.Backup{ServerID: cs.ID, Kind: catalog.KindSnapshot,
		Label: label, StartLSN: start, StartTLI: tli.TimeLine, StartedAt: now})
	if err != nil {
		conn.Close(context.Background())
		return api.SnapshotStarted{}, err
	}
	l.Update(-1, "backup "+b.ID)
	timeout := m.timeout(srv)
	deadline := now.Add(timeout)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		conn.Close(context.Background())
		b.State, b.FinishedAt, b.Reason = catalog.StateFailed, time.Now().UTC(), "the walhub daemon stopped during the snapshot's start"
		m.Repo.Catalog.UpdateBackup(context.Background(), b)
		return api.SnapshotStarted{}, fmt.Errorf("%w: the daemon is stopping", ErrBusy)
	}
	s.starting, s.conn, s.lock, s.backup = false, conn, l, b
	s.timer = time.AfterFunc(timeout, func() { m.abandon(server, s, timeout) })
	ok, started = true, true
	m.mu.Unlock()
	m.log().Info("snapshot started", "server", server, "backup", b.ID, "start_lsn", start, "deadline", deadline)
	return api.SnapshotStarted{Server: server, BackupID: b.ID, StartLSN: start, TimeLine: tli.TimeLine, Deadline: deadline}, nil
}

// abandon ends a snapshot that was not stopped in time.
func (m *Manager) abandon(server string, s *session, timeout time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running[server] != s {
		return
	}
	delete(m.running, server)
	s.conn.Close(context.Background()) // ends the backup on the server
	s.lock.Release()
	s.backup.State, s.backup.FinishedAt = catalog.StateFailed, time.Now().UTC()
	s.backup.Reason = fmt.Sprintf("abandoned: not stopped within %s", timeout)
	if err := m.Repo.Catalog.UpdateBackup(context.Background(), s.backup); err != nil {
		m.log().Error("snapshot: record failure", "server", server, "err", err)
	}
	m.log().Error("snapshot abandoned", "server", server, "backup", s.backup.ID, "timeout", timeout)
}

// Stop runs pg_backup_stop in the snapshot's session, records backup_label
// and tablespace_map in the catalog, and waits until the hub holds the WAL up
// to the stop LSN.
func (m *Manager) Stop(ctx context.Context, server string) (api.SnapshotStopped, error) {
	srv, err := m.config().Server(server)
	if err != nil {
		return api.SnapshotStopped{}, err
	}
	m.mu.Lock()
	s, ok := m.running[server]
	if ok && s.starting {
		m.mu.Unlock()
		return api.SnapshotStopped{}, fmt.Errorf("%w: the snapshot of %s is still starting: stop it once walhub snapshot start has returned", ErrBusy, server)
	}
	if ok {
		delete(m.running, server)
		s.timer.Stop()
	}
	m.mu.Unlock()
	if !ok {
		return api.SnapshotStopped{}, fmt.Errorf("snapshot stop %s: %w (start one with walhub snapshot start)", server, ErrNotRunning)
	}
	defer s.lock.Release()
	defer s.conn.Close(context.Background())
	b := s.backup
	fail := func(err error) (api.SnapshotStopped, error) {
		b.State, b.FinishedAt, b.Reason = catalog.StateFailed, time.Now().UTC(), err.Error()
		if uerr := m.Repo.Catalog.UpdateBackup(context.Background(), b); uerr != nil {
			m.log().Error("snapshot: record failure", "server", server, "err", uerr)
		}
		return api.SnapshotStopped{}, fmt.Errorf("snapshot stop %s: %w", server, err)
	}
	var stopText, walFile, label, spcmap string
	err = s.conn.QueryRow(ctx, `SELECT lsn::text, pg_walfile_name(lsn), labelfile, COALESCE(spcmapfile, '')
		FROM pg_backup_stop(false)`).Scan(&stopText, &walFile, &label, &spcmap)
	if err != nil {
		return fail(fmt.Errorf("pg_backup_stop: %w", privileges.Explain(err, privileges.BackupStop, s.conn.Config().User)))
	}
	stop, err := walname.ParseLSN(stopText)
	if err != nil {
		return fail(err)
	}
	stopName, _ := walname.Parse(walFile)
	b.StopLSN, b.StopTLI, b.BackupLabel, b.TablespaceMap = stop, stopName.TimeLine, label, spcmap
	b.FinishedAt = time.Now().UTC()
	// Recorded before the wait, so a copy is never left without its label.
	if err := m.Repo.Catalog.UpdateBackup(ctx, b); err != nil {
		return fail(err)
	}
	if m.WaitWAL != nil {
		if err := m.WaitWAL(ctx, srv, b); err != nil {
			return fail(fmt.Errorf("WAL up to %s not in the hub: %w", b.StopLSN, err))
		}
	}
	if b, err = m.Repo.FinishBackup(ctx, server, b); err != nil {
		return fail(err)
	}
	m.log().Info("snapshot stopped", "server", server, "backup", b.ID, "stop_lsn", stop)
	return api.SnapshotStopped{Server: server, BackupID: b.ID, StartLSN: b.StartLSN, StopLSN: stop, BackupLabel: label, TablespaceMap: spcmap}, nil
}

// Close ends every running snapshot (daemon shutdown): they are marked failed.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for server, s := range m.running {
		if s.starting {
			continue // its Start sees closed and ends it
		}
		s.timer.Stop()
		s.conn.Close(context.Background())
		s.lock.Release()
		s.backup.State, s.backup.FinishedAt = catalog.StateFailed, time.Now().UTC()
		s.backup.Reason = "the walhub daemon stopped during the snapshot"
		m.Repo.Catalog.UpdateBackup(context.Background(), s.backup)
		delete(m.running, server)
	}
}

func (m *Manager) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	return slog.Default()
}
