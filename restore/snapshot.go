package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/walhub/walhub/catalog"
)

// FinishSnapshot makes a directory that holds the files of an external
// snapshot (copied between walhub snapshot start and stop) ready to start: it
// writes the backup_label and tablespace_map that pg_backup_stop returned,
// removes what must not come from a running server's copy (postmaster.pid and
// .opts, WAL in pg_wal, replication slots), and writes the recovery settings
// (Settings.Write, which also clears those the copy brought along).
func FinishSnapshot(ctx context.Context, src Source, id, dir string, s Settings) (catalog.Backup, Cleared, error) {
	if err := s.Target.Validate(); err != nil {
		return catalog.Backup{}, Cleared{}, err
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		return catalog.Backup{}, Cleared{}, fmt.Errorf("--snapshot-dir %s does not look like a copied data directory (no PG_VERSION): %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "backup_label")); err == nil {
		return catalog.Backup{}, Cleared{}, fmt.Errorf("%s already has a backup_label: was it finished already?", dir)
	}
	backups, err := src.Backups(ctx)
	if err != nil {
		return catalog.Backup{}, Cleared{}, err
	}
	var snaps []catalog.Backup
	for _, b := range backups {
		if b.Kind == catalog.KindSnapshot {
			snaps = append(snaps, b)
		}
	}
	b, err := ChooseBackup(snaps, id, s.Target)
	if err != nil {
		return catalog.Backup{}, Cleared{}, fmt.Errorf("snapshot: %w", err)
	}
	if b.BackupLabel == "" {
		return catalog.Backup{}, Cleared{}, fmt.Errorf("snapshot %s has no backup_label recorded", b.ID)
	}
	for _, name := range []string{"postmaster.pid", "postmaster.opts"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return catalog.Backup{}, Cleared{}, err
		}
	}
	for _, sub := range []string{"pg_wal", "pg_replslot"} {
		clearDir(filepath.Join(dir, sub))
	}
	if err := os.MkdirAll(filepath.Join(dir, "pg_wal", "archive_status"), 0o700); err != nil {
		return catalog.Backup{}, Cleared{}, err
	}
	if err := createSynced(filepath.Join(dir, "backup_label"), []byte(b.BackupLabel)); err != nil {
		return catalog.Backup{}, Cleared{}, err
	}
	if b.TablespaceMap != "" {
		if err := createSynced(filepath.Join(dir, "tablespace_map"), []byte(b.TablespaceMap)); err != nil {
			return catalog.Backup{}, Cleared{}, err
		}
	}
	cleared, err := s.Write(dir)
	return b, cleared, err
}
