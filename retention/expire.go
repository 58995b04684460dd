package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/walname"
)

// Report is what an expire did (or, with DryRun, would do).
type Report struct {
	Server string `json:"server"`
	DryRun bool   `json:"dry_run"`
	Plan
	// WALBeforeName names the oldest segment kept (on the oldest backup's timeline).
	WALBeforeName   string `json:"wal_before,omitempty"`
	RemovedSegments int    `json:"removed_segments"`
	RemovedBytes    int64  `json:"removed_bytes"`
	// Orphans are files or directories that no catalog row pointed at (left by an
	// expire or backup that was killed half-way), removed.
	Orphans []string `json:"orphans,omitempty"`
}

// Options are the inputs of one expire.
type Options struct {
	Server *config.Server
	// Repo is the repository (store, working area, catalog).
	Repo   *repository.Repository
	DryRun bool
	Log    *slog.Logger
	Now    time.Time
}

// batch is how many segments one catalog transaction removes.
const batch = 1000

// Expire applies the server's retention policy under the server's lock (the
// same lock a backup takes, so an expire never runs beside a backup).
func Expire(ctx context.Context, o Options) (Report, error) {
	name := o.Server.Name
	rep := Report{Server: name, DryRun: o.DryRun}
	l, err := o.Repo.Work.Lock(name, "expire", "")
	if err != nil {
		return rep, fmt.Errorf("expire %s: %w", name, err)
	}
	defer l.Release()
	srv, err := o.Repo.Catalog.ServerByName(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) {
		rep.Plan = Plan{Policy: Describe(o.Server.Retention)}
		return rep, nil // nothing was ever stored for it
	}
	if err != nil {
		return rep, err
	}
	backups, err := o.Repo.Catalog.Backups(ctx, srv.ID)
	if err != nil {
		return rep, err
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	rep.Plan = Decide(o.Server.Retention, backups, now, srv.SegmentSize)
	if rep.WALBeforeLSN != 0 {
		for _, v := range rep.Verdicts {
			if v.Keep && v.Backup.StartLSN == rep.WALBeforeLSN {
				rep.WALBeforeName = walname.SegmentName(v.Backup.StartTLI, rep.WALBefore, srv.SegmentSize)
			}
		}
	}
	if o.DryRun {
		segs, err := o.Repo.Catalog.SegmentsBefore(ctx, srv.ID, rep.WALBefore, 1<<30)
		if err != nil {
			return rep, err
		}
		for _, s := range segs {
			rep.RemovedSegments++
			rep.RemovedBytes += s.StoredSize
		}
		return rep, nil
	}
	for _, b := range rep.Removed() {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		// Row first, files after: a crash in between leaves orphan objects
		// that the sweep below removes next time, never a row without files.
		if err := o.Repo.RemoveBackup(ctx, name, b); err != nil {
			return rep, err
		}
		o.log().Info("backup removed", "server", name, "backup", b.ID)
	}
	for rep.WALBefore > 0 {
		segs, err := o.Repo.Catalog.SegmentsBefore(ctx, srv.ID, rep.WALBefore, batch)
		if err != nil {
			return rep, err
		}
		if len(segs) == 0 {
			break
		}
		n, err := o.Repo.RemoveSegments(ctx, segs)
		if err != nil {
			return rep, err
		}
		rep.RemovedSegments += len(segs)
		rep.RemovedBytes += n
		if err := l.Update(-1, fmt.Sprintf("%d segments removed", rep.RemovedSegments)); err != nil {
			return rep, err
		}
	}
	orphans, err := o.Repo.Sweep(ctx, srv, rep.WALBefore)
	rep.Orphans = orphans
	if err != nil {
		return rep, err
	}
	o.log().Info("expire done", "server", name, "backups_removed", len(rep.Removed()),
		"segments_removed", rep.RemovedSegments, "bytes_removed", rep.RemovedBytes, "orphans", len(orphans))
	return rep, nil
}

func (o Options) log() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.Default()
}
