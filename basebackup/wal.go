package basebackup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/privileges"
	"github.com/walhub/walhub/replication"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/walname"
)

// WALWait describes the WAL a backup needs.
type WALWait struct {
	Catalog     *catalog.Catalog
	ServerID    int64
	SegmentSize uint64
	StartLSN    walname.LSN
	StartTLI    walname.TimeLine
	StopLSN     walname.LSN
	StopTLI     walname.TimeLine
	// Timeout bounds the wait.
	Timeout time.Duration
	// SwitchWAL, when set, is called once if the WAL is incomplete: the segment
	// holding the stop position may otherwise wait for more WAL before the
	// server completes it (on an idle server, for as long as
	// archive_timeout or forever). The switch costs one partly empty segment.
	SwitchWAL func(ctx context.Context) error
	Log       *slog.Logger
}

// How often WaitWAL looks at the catalog: often at first, since the receiver
// usually stores the last segment within a fraction of a second of the
// backup's end, and a look is one small query; less often once the WAL is
// late.
const (
	fastPollInterval = 20 * time.Millisecond
	fastPollFor      = 5 * time.Second
	pollInterval     = 200 * time.Millisecond
)

// NeededSegments returns the range of segments [from, to) that hold the WAL
// from start to stop (the stop position is the end of the last record needed).
func NeededSegments(start, stop walname.LSN, segSize uint64) (walname.SegNo, walname.SegNo) {
	from := walname.SegmentOf(start, segSize)
	to := from + 1
	if stop > start {
		to = walname.SegmentOf(stop-1, segSize) + 1
	}
	return from, to
}

// MissingWAL returns the segment ranges of the backup's WAL that the catalog
// does not hold. A backup whose start and stop timelines differ (taken on a
// standby that was promoted meanwhile) counts a segment as held when it is
// stored on either timeline; the switch point itself is not checked.
func (w WALWait) MissingWAL(ctx context.Context) ([]catalog.SegRange, error) {
	from, to := NeededSegments(w.StartLSN, w.StopLSN, w.SegmentSize)
	missing, err := w.Catalog.MissingSegments(ctx, w.ServerID, w.StopTLI, from, to)
	if err != nil || w.StartTLI == w.StopTLI || w.StartTLI == 0 {
		return missing, err
	}
	var still []catalog.SegRange
	for _, m := range missing {
		rest, err := w.Catalog.MissingSegments(ctx, w.ServerID, w.StartTLI, m.From, m.To)
		if err != nil {
			return nil, err
		}
		still = append(still, rest...)
	}
	return still, nil
}

// WALLateError says that a backup's WAL did not reach the catalog in time.
type WALLateError struct {
	Start, Stop walname.LSN
	// Missing names the segments not yet held.
	Missing string
	Timeout time.Duration
}

func (e *WALLateError) Error() string {
	return fmt.Sprintf("WAL %s to %s (%s) not received within %s", e.Start, e.Stop, e.Missing, e.Timeout)
}

// WaitWAL waits until the catalog holds every segment of the backup's WAL, or
// returns a *WALLateError after the timeout.
func WaitWAL(ctx context.Context, w WALWait) error {
	if w.Log == nil {
		w.Log = slog.Default()
	}
	started := time.Now()
	deadline := started.Add(w.Timeout)
	switched := w.SwitchWAL == nil
	lastLog := started
	for {
		missing, err := w.MissingWAL(ctx)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			return nil
		}
		now := time.Now()
		if !now.Before(deadline) {
			return &WALLateError{Start: w.StartLSN, Stop: w.StopLSN, Missing: describeMissing(missing, w.StopTLI, w.SegmentSize),
				Timeout: w.Timeout}
		}
		if !switched {
			switched = true
			w.Log.Info("switching WAL on the server so the stop segment is completed")
			if err := w.SwitchWAL(ctx); err != nil {
				w.Log.Warn("could not switch WAL; waiting for the server to complete the segment", "err", err)
			}
		}
		if now.Sub(lastLog) >= 15*time.Second {
			lastLog = now
			w.Log.Info("waiting for the backup's WAL to reach the hub", "missing", describeMissing(missing, w.StopTLI, w.SegmentSize),
				"timeout_in", time.Until(deadline).Round(time.Second))
		}
		interval := pollInterval
		if now.Sub(started) < fastPollFor {
			interval = fastPollInterval
		}
		t := time.NewTimer(min(interval, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for WAL: %w", ctx.Err())
		case <-t.C:
		}
	}
}

func describeMissing(missing []catalog.SegRange, tli walname.TimeLine, segSize uint64) string {
	var parts []string
	for i, m := range missing {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more ranges", len(missing)-3))
			break
		}
		first := walname.SegmentName(tli, m.From, segSize)
		if m.To-m.From == 1 {
			parts = append(parts, "segment "+first)
		} else {
			parts = append(parts, fmt.Sprintf("segments %s to %s", first, walname.SegmentName(tli, m.To-1, segSize)))
		}
	}
	return "missing " + strings.Join(parts, ", ")
}

// ReapInterrupted turns the running backups of server whose process is gone
// (killed, host crashed) into failed ones with the reason "interrupted" and
// removes their files. A backup is alive while the server's lock is held by
// the process recorded in its row. The rows are read before the lock, and a
// row is failed only if it is still running then (FailBackup's
// compare-and-set), so a backup that finishes in between is left alone. It
// returns the ids it reaped.
func ReapInterrupted(ctx context.Context, repo *repository.Repository, server string) ([]string, error) {
	srv, err := repo.Catalog.ServerByName(ctx, server)
	if err != nil {
		return nil, err
	}
	backups, err := repo.Catalog.Backups(ctx, srv.ID)
	if err != nil {
		return nil, err
	}
	holder, held, err := repo.Work.ReadLock(server)
	if err != nil {
		return nil, err
	}
	var reaped []string
	for _, b := range backups {
		if b.State != catalog.StateRunning || b.Kind != catalog.KindBase {
			continue
		}
		if held && holder.PID == b.PID && holder.Host == b.Host {
			continue
		}
		reason := fmt.Sprintf("interrupted: process %d on %s stopped before the backup finished", b.PID, b.Host)
		_, err := repo.FailBackup(b, reason)
		if errors.Is(err, repository.ErrNotRunning) {
			continue // it finished between the two reads: alive after all
		}
		if err != nil {
			return reaped, fmt.Errorf("interrupted backup %s: %w", b.ID, err)
		}
		reaped = append(reaped, b.ID)
	}
	return reaped, nil
}

// NeededWAL is the WAL a backup needs to become consistent (from its start to
// its stop position) and what the catalog holds of it.
type NeededWAL struct {
	// FirstSegment and LastSegment name the range, on the stop timeline.
	FirstSegment string `json:"first_segment"`
	LastSegment  string `json:"last_segment"`
	Segments     int64  `json:"segments"`
	// Missing lists the segments (or ranges "A to B") the catalog lacks.
	Missing []string `json:"missing,omitempty"`
	// Complete is true when every needed segment is held.
	Complete bool `json:"complete"`
}

// BackupWAL says which WAL backup b of server srv needs and whether the
// catalog holds all of it.
func BackupWAL(ctx context.Context, cat *catalog.Catalog, srv catalog.Server, b catalog.Backup) (NeededWAL, error) {
	if srv.SegmentSize == 0 || b.StopLSN == 0 {
		return NeededWAL{}, fmt.Errorf("backup %s has no stop position or its server no segment size yet", b.ID)
	}
	from, to := NeededSegments(b.StartLSN, b.StopLSN, srv.SegmentSize)
	n := NeededWAL{FirstSegment: walname.SegmentName(b.StartTLI, from, srv.SegmentSize),
		LastSegment: walname.SegmentName(b.StopTLI, to-1, srv.SegmentSize), Segments: int64(to - from)}
	missing, err := (WALWait{Catalog: cat, ServerID: srv.ID, SegmentSize: srv.SegmentSize, StartLSN: b.StartLSN,
		StartTLI: b.StartTLI, StopLSN: b.StopLSN, StopTLI: b.StopTLI}).MissingWAL(ctx)
	if err != nil {
		return NeededWAL{}, err
	}
	for _, m := range missing {
		name := walname.SegmentName(b.StopTLI, m.From, srv.SegmentSize)
		if m.To-m.From > 1 {
			name += " to " + walname.SegmentName(b.StopTLI, m.To-1, srv.SegmentSize)
		}
		n.Missing = append(n.Missing, name)
	}
	n.Complete = len(missing) == 0
	return n, nil
}

// CompleteWaiting marks done every backup of server that waits for its WAL
// (state waiting_wal) once the catalog holds all of it: its info object is
// rewritten as done, then its row is finished by a compare-and-set, so
// processes that run it at the same time agree. It returns the ids it
// finished.
func CompleteWaiting(ctx context.Context, repo *repository.Repository, server string) ([]string, error) {
	cat := repo.Catalog
	srv, err := cat.ServerByName(ctx, server)
	if err != nil {
		return nil, err
	}
	backups, err := cat.Backups(ctx, srv.ID)
	if err != nil {
		return nil, err
	}
	var finished []string
	for _, b := range backups {
		if b.State != catalog.StateWaitingWAL || srv.SegmentSize == 0 {
			continue
		}
		missing, err := (WALWait{Catalog: cat, ServerID: srv.ID, SegmentSize: srv.SegmentSize, StartLSN: b.StartLSN,
			StartTLI: b.StartTLI, StopLSN: b.StopLSN, StopTLI: b.StopTLI}).MissingWAL(ctx)
		if err != nil {
			return finished, err
		}
		if len(missing) > 0 {
			continue
		}
		done := b
		done.State, done.Reason = catalog.StateDone, ""
		if err := repo.StoreBackupInfo(ctx, server, done); err != nil {
			return finished, err
		}
		ok, err := cat.FinishWaitingBackup(ctx, b.ID)
		if err != nil {
			return finished, err
		}
		if ok {
			finished = append(finished, b.ID)
		}
	}
	return finished, nil
}

// SwitchWALOn returns a WALWait.SwitchWAL that runs pg_switch_wal() on a normal
// connection to conninfo, so the segment holding the stop position is
// completed and streamed.
func SwitchWALOn(conninfo string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		cfg, err := replication.ParseSQLConfig(conninfo, replication.Options{ApplicationName: replication.AppBackup})
		var conn *pgconn.PgConn
		if err == nil {
			conn, err = pgconn.ConnectConfig(ctx, &cfg.Config)
		}
		if err != nil {
			return fmt.Errorf("connect to switch WAL: %w", err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "SELECT pg_switch_wal()").ReadAll(); err != nil {
			return fmt.Errorf("pg_switch_wal(): %w", privileges.Explain(err, privileges.SwitchWAL, cfg.User))
		}
		return nil
	}
}
