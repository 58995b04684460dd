package repository

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// InfoName is the name of the small object written beside a finished
// backup's files: everything its catalog row holds, so the catalog can be
// rebuilt from the store.
const InfoName = "backup.info"

// backupIDFormat is the UTC timestamp a backup ID is made of.
const backupIDFormat = "20060102T150405Z"

// NewBackup records b as a running backup of server under an ID unique in
// the repository (across servers, commands and processes): prefix followed
// by the UTC time of b.StartedAt ("20261121T104500Z", "snap-20261121T104500Z"),
// with "-2", "-3", ... when another backup has it. It fills in ID, State,
// StoredPath, and PID and Host when unset, and returns the recorded row.
func (r *Repository) NewBackup(ctx context.Context, server, prefix string, b catalog.Backup) (catalog.Backup, error) {
	if b.StartedAt.IsZero() {
		b.StartedAt = time.Now().UTC()
	}
	if b.PID == 0 {
		b.PID = os.Getpid()
	}
	if b.Host == "" {
		b.Host, _ = os.Hostname()
	}
	b.State = catalog.StateRunning
	base := prefix + b.StartedAt.UTC().Format(backupIDFormat)
	for i := 1; i < 1000; i++ {
		b.ID = base
		if i > 1 {
			b.ID = fmt.Sprintf("%s-%d", base, i)
		}
		if _, err := r.Catalog.Backup(ctx, b.ID); err == nil {
			continue // taken
		} else if !errors.Is(err, catalog.ErrNotFound) {
			return catalog.Backup{}, err
		}
		b.StoredPath = storage.BackupDir(server, b.ID)
		if b.Label == "" {
			b.Label = "walhub " + server + " " + b.ID
		}
		err := r.Catalog.AddBackup(ctx, b)
		if err == nil {
			return b, nil
		}
		// Another process took the ID between the look-up and the insert?
		if _, lookErr := r.Catalog.Backup(ctx, b.ID); lookErr != nil {
			return catalog.Backup{}, err
		}
	}
	return catalog.Backup{}, fmt.Errorf("no free backup id for %s", base)
}

// CreateBackupFile starts writing the file name of running backup b.
func (r *Repository) CreateBackupFile(ctx context.Context, b catalog.Backup, name string) (storage.ObjectWriter, error) {
	return r.Store.Create(ctx, path.Join(b.StoredPath, name), nil)
}

// OpenBackupFile opens the stored file name of backup b.
func (r *Repository) OpenBackupFile(ctx context.Context, b catalog.Backup, name string) (storage.ObjectReader, error) {
	return r.Store.Open(ctx, path.Join(b.StoredPath, name))
}

// FinishBackup records b as done: its info object is stored (durably) first,
// then its row says done. b's files must all be committed.
func (r *Repository) FinishBackup(ctx context.Context, server string, b catalog.Backup) (catalog.Backup, error) {
	b.State = catalog.StateDone
	if b.FinishedAt.IsZero() {
		b.FinishedAt = time.Now().UTC()
	}
	if err := r.StoreBackupInfo(ctx, server, b); err != nil {
		return b, err
	}
	if err := r.Catalog.UpdateBackup(ctx, b); err != nil {
		return b, err
	}
	return b, nil
}

// StoreBackupInfo stores the info object of backup b (see InfoName), with
// the state it has: done, or complete but waiting for its WAL. The caller
// records the row afterwards.
func (r *Repository) StoreBackupInfo(ctx context.Context, server string, b catalog.Backup) error {
	if b.StoredPath == "" {
		b.StoredPath = storage.BackupDir(server, b.ID)
	}
	srv, err := r.Catalog.ServerByName(ctx, server)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(infoOf(srv, b), "", "  ")
	if err != nil {
		return err
	}
	if err := r.put(ctx, path.Join(b.StoredPath, InfoName), nil, data); err != nil {
		return fmt.Errorf("store %s of backup %s: %w", InfoName, b.ID, err)
	}
	return nil
}

// ErrNotRunning is returned by FailBackup when the backup's row is no longer
// running: another process finished or failed it after the caller read it.
var ErrNotRunning = errors.New("the backup is no longer running")

// FailBackup records running backup b as failed with reason, then removes
// what it stored. The row changes only if it is still running (a
// compare-and-set): a caller that judged b from a row read earlier (a reap of
// interrupted backups) never fails a backup that finished meanwhile, nor
// deletes its files; it gets ErrNotRunning. The files go after the row says
// failed: a crash in between leaves files of a failed backup, which retention
// removes with it. It runs even when ctx is done (an interrupted backup),
// bounded by its own timeout.
func (r *Repository) FailBackup(b catalog.Backup, reason string) (catalog.Backup, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b.State = catalog.StateFailed
	b.Reason = reason
	if b.FinishedAt.IsZero() {
		b.FinishedAt = time.Now().UTC()
	}
	files := b.Files
	b.Files, b.StoredSize = nil, 0
	ok, err := r.Catalog.UpdateBackupIf(ctx, b, catalog.StateRunning)
	if err != nil {
		return b, fmt.Errorf("record failed backup %s: %w", b.ID, err)
	}
	if !ok {
		b.Files = files
		return b, fmt.Errorf("fail backup %s: %w", b.ID, ErrNotRunning)
	}
	if b.StoredPath != "" {
		if err := r.removeAll(ctx, b.StoredPath+"/"); err != nil {
			return b, fmt.Errorf("remove files of failed backup %s: %w", b.ID, err)
		}
	}
	return b, nil
}

// RemoveBackup removes backup b: its row first, then its objects. A crash in
// between leaves objects without a row, which Sweep removes.
func (r *Repository) RemoveBackup(ctx context.Context, server string, b catalog.Backup) error {
	if err := r.Catalog.DeleteBackup(ctx, b.ID); err != nil {
		return err
	}
	return r.removeAll(ctx, storage.BackupDir(server, b.ID)+"/")
}

// Sweep removes what no catalog row points at, for server: the objects of
// backups without a row (left by an expire or a backup that was killed
// half-way) and segments below walBefore without a row. It returns the keys
// (a backup's key prefix) it removed. Run it under the server's lock, so no
// backup is writing meanwhile; the receiver never writes below walBefore.
func (r *Repository) Sweep(ctx context.Context, srv catalog.Server, walBefore walname.SegNo) ([]string, error) {
	var orphans []string
	ids := map[string]bool{}
	var order []string
	prefix := storage.BackupsDir(srv.Name) + "/"
	if err := r.Store.List(ctx, prefix, func(o storage.ObjectInfo) error {
		id, _, ok := strings.Cut(strings.TrimPrefix(o.Key, prefix), "/")
		if ok && !ids[id] {
			ids[id] = true
			order = append(order, id)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("sweep backups: %w", err)
	}
	for _, id := range order {
		if _, err := r.Catalog.Backup(ctx, id); err == nil {
			continue
		} else if !errors.Is(err, catalog.ErrNotFound) {
			return orphans, err
		}
		dir := storage.BackupDir(srv.Name, id)
		if err := r.removeAll(ctx, dir+"/"); err != nil {
			return orphans, err
		}
		orphans = append(orphans, dir)
	}
	if walBefore == 0 || srv.SegmentSize == 0 {
		return orphans, nil
	}
	var stale []string
	if err := r.Store.List(ctx, storage.WALDir(srv.Name)+"/", func(o storage.ObjectInfo) error {
		k, ok := storage.ParseKey(o.Key)
		if !ok || k.Kind != storage.KeySegment {
			return nil // .partial files of a shared working area, history files
		}
		tli, segno, err := walname.ParseSegment(k.Name, srv.SegmentSize)
		if err != nil || segno >= walBefore {
			return nil
		}
		if _, err := r.Catalog.Segment(ctx, srv.ID, walname.SegmentName(tli, segno, srv.SegmentSize)); err == nil {
			return nil
		} else if !errors.Is(err, catalog.ErrNotFound) {
			return err
		}
		stale = append(stale, o.Key)
		return nil
	}); err != nil {
		return orphans, fmt.Errorf("sweep WAL: %w", err)
	}
	for _, k := range stale {
		if err := r.Store.Remove(ctx, k); err != nil {
			return orphans, err
		}
		orphans = append(orphans, k)
	}
	return orphans, nil
}
