package basebackup

import (
	"context"

	"fmt"
	"github.com/jackc/pgx/v5/pgconn"
	"log/slog"
	"strings"
	"time"

	"github.com/walhub/walhub/catalog"
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

// pollInterval is how often WaitWAL looks at the catalog.
const pollInterval = 200 * time.Millisecond

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

// WaitWAL waits until the catalog holds every segment of the backup's WAL, or
// fails after the timeout with an error that names the WAL missing.
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
			return fmt.Errorf("WAL %s to %s (%s) not received within %s: is `walhub serve` streaming from this server?",
				w.StartLSN, w.StopLSN, describeMissing(missing, w.StopTLI, w.SegmentSize), w.Timeout)
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
		t := time.NewTimer(min(pollInterval, time.Until(deadline)))
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
// the process recorded in its row. It returns the ids it reaped.
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
		if _, err := repo.FailBackup(b, reason); err != nil {
			return reaped, fmt.Errorf("interrupted backup %s: %w", b.ID, err)
		}
		reaped = append(reaped, b.ID)
	}
	return reaped, nil
}

// SwitchWALOn returns a WALWait.SwitchWAL that runs pg_switch_wal() on a normal
// connection to conninfo, so the segment holding the stop position is
// completed and streamed.
func SwitchWALOn(conninfo string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		conn, err := pgconn.Connect(ctx, conninfo)
		if err != nil {
			return fmt.Errorf("connect to switch WAL: %w", err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "SELECT pg_switch_wal()").ReadAll(); err != nil {
			return fmt.Errorf("pg_switch_wal(): %w", err)
		}
		return nil
	}
}
