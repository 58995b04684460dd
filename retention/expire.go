package retention

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/storage"
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
	Server  *config.Server
	Catalog *catalog.Catalog
	Repo    storage.Local
	DryRun  bool
	Log     *slog.Logger
	Now     time.Time
}

// batch is how many segments one catalog transaction removes.
const batch = 1000

// Expire applies the server's retention policy under the server's lock (the
// same lock a backup takes, so an expire never runs beside a backup).
func Expire(ctx context.Context, o Options) (Report, error) {
	name := o.Server.Name
	rep := Report{Server: name, DryRun: o.DryRun}
	lockPath := filepath.Join(o.Repo.Root, filepath.FromSlash(storage.LockPath(name)))
	l, err := lock.Acquire(lockPath, "expire", "")
	if err != nil {
		return rep, fmt.Errorf("expire %s: %w", name, err)
	}
	defer l.Release()
	srv, err := o.Catalog.ServerByName(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) {
		rep.Plan = Plan{Policy: Describe(o.Server.Retention)}
		return rep, nil // nothing was ever stored for it
	}
	if err != nil {
		return rep, err
	}
	backups, err := o.Catalog.Backups(ctx, srv.ID)
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
		segs, err := o.Catalog.SegmentsBefore(ctx, srv.ID, rep.WALBefore, 1<<30)
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
		// Row first, files after: a crash in between leaves an orphan directory
		// that the sweep below removes next time, never a row without files.
		if err := o.Catalog.DeleteBackup(ctx, b.ID); err != nil {
			return rep, err
		}
		if err := o.Repo.RemoveAll(storage.BackupDir(name, b.ID)); err != nil {
			return rep, err
		}
		o.log().Info("backup removed", "server", name, "backup", b.ID)
	}
	for rep.WALBefore > 0 {
		segs, err := o.Catalog.SegmentsBefore(ctx, srv.ID, rep.WALBefore, batch)
		if err != nil {
			return rep, err
		}
		if len(segs) == 0 {
			break
		}
		if err := o.Catalog.DeleteSegments(ctx, segs); err != nil {
			return rep, err
		}
		for _, s := range segs {
			if err := o.Repo.Remove(s.StoredPath); err != nil {
				return rep, err
			}
			rep.RemovedSegments++
			rep.RemovedBytes += s.StoredSize
		}
		if err := l.Update(-1, fmt.Sprintf("%d segments removed", rep.RemovedSegments)); err != nil {
			return rep, err
		}
	}
	orphans, err := sweep(ctx, o, srv, rep.WALBefore)
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

// sweep removes what no catalog row points at: backup directories without a
// row, and segment files below the cut-off. It runs under the lock, so no
// backup is writing meanwhile; the receiver never writes below the cut-off.
func sweep(ctx context.Context, o Options, srv catalog.Server, walBefore walname.SegNo) ([]string, error) {
	var orphans []string
	backupsDir := filepath.Join(o.Repo.Root, filepath.FromSlash(path.Join(srv.Name, "backups")))
	entries, err := os.ReadDir(backupsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sweep backups: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := o.Catalog.Backup(ctx, e.Name()); err == nil {
			continue
		} else if !errors.Is(err, catalog.ErrNotFound) {
			return orphans, err
		}
		rel := storage.BackupDir(srv.Name, e.Name())
		if err := o.Repo.RemoveAll(rel); err != nil {
			return orphans, err
		}
		orphans = append(orphans, rel)
	}
	if walBefore == 0 || srv.SegmentSize == 0 {
		return orphans, nil
	}
	walDir := filepath.Join(o.Repo.Root, filepath.FromSlash(storage.WALDir(srv.Name)))
	dirs, err := os.ReadDir(walDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return orphans, fmt.Errorf("sweep WAL: %w", err)
	}
	for _, d := range dirs {
		if !d.IsDir() || len(d.Name()) != 16 {
			continue
		}
		files, err := os.ReadDir(filepath.Join(walDir, d.Name()))
		if err != nil {
			return orphans, fmt.Errorf("sweep WAL: %w", err)
		}
		left := len(files)
		for _, f := range files {
			base := strings.TrimSuffix(f.Name(), storage.Extension("zstd"))
			tli, segno, err := walname.ParseSegment(base, srv.SegmentSize)
			if err != nil || segno >= walBefore {
				continue // .partial, temp files and anything still needed stay
			}
			if _, err := o.Catalog.Segment(ctx, srv.ID, walname.SegmentName(tli, segno, srv.SegmentSize)); err == nil {
				continue
			}
			rel := path.Join(storage.WALDir(srv.Name), d.Name(), f.Name())
			if err := o.Repo.Remove(rel); err != nil {
				return orphans, err
			}
			orphans = append(orphans, rel)
			left--
		}
		if left == 0 {
			os.Remove(filepath.Join(walDir, d.Name())) // only succeeds when empty
		}
	}
	return orphans, nil
}
