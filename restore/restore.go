package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/walhub/walhub/basebackup"
	"github.com/walhub/walhub/catalog"
)

// Options are the inputs of one restore.
type Options struct {
	Source Source
	// BackupID names the backup; "" or "latest" picks the newest that reaches the target.
	BackupID string
	// TargetDir is the data directory to write: empty or missing.
	TargetDir string
	// Tablespaces moves tablespaces: OID → new directory (default: original path).
	Tablespaces map[uint32]string
	Settings    Settings
	// Progress, when set, is told the bytes written so far and the total expected.
	Progress func(done, total int64)
	// Delta restores into an existing data directory (no server may run on
	// it): files that match the backup's manifest are kept, the others
	// written, extra files removed.
	Delta bool
	// Owner, when set, is given every file and directory a full restore
	// writes, as it writes them (basebackup.UnpackFromAs), and the files
	// of the recovery settings. A delta restore ignores it: the caller
	// gives the directory away afterwards.
	Owner *basebackup.Owner
}

// Result says what was restored.
type Result struct {
	Backup      catalog.Backup    `json:"-"`
	BackupID    string            `json:"backup_id"`
	TargetDir   string            `json:"target_dir"`
	Tablespaces map[uint32]string `json:"tablespaces,omitempty"`
	Bytes       int64             `json:"bytes"`
	Seconds     float64           `json:"seconds"`
	// Signal is recovery.signal or standby.signal.
	Signal         string   `json:"signal"`
	RecoveryConfig []string `json:"recovery_settings"`
	// Cleared is what came with the backup and was taken out: recovery
	// settings commented out and signal files removed.
	Cleared Cleared `json:"cleared"`
	// Delta says what a delta restore kept, wrote and removed.
	Delta *basebackup.DeltaStats `json:"delta,omitempty"`
}

// Run restores a backup. Every input is checked before anything is written;
// when unpacking fails half-way, what was written is removed again (except in
// a delta restore, which leaves the directory for the next attempt).
func Run(ctx context.Context, o Options) (Result, error) {
	if err := o.Settings.Target.Validate(); err != nil {
		return Result{}, err
	}
	if o.Settings.Standby && o.Settings.Target.Kind() != "" {
		return Result{}, errors.New("--standby follows to the end of WAL: it does not go with a recovery target")
	}
	if o.TargetDir == "" || !filepath.IsAbs(o.TargetDir) {
		return Result{}, fmt.Errorf("--target-dir %q: give an absolute path", o.TargetDir)
	}
	if o.Delta {
		if err := checkDeltaTarget(o.TargetDir); err != nil {
			return Result{}, err
		}
	} else if err := checkEmpty("target directory", o.TargetDir); err != nil {
		return Result{}, err
	}
	b, err := o.Source.Choose(ctx, o.BackupID, o.Settings.Target)
	if err != nil {
		return Result{}, err
	}
	if !catalog.KindOf(b).Restorable {
		return Result{}, fmt.Errorf("backup %s is a %s backup: its files are not in walhub (see walhub restore --snapshot-dir)", b.ID, b.Kind)
	}
	tsDirs := map[uint32]string{}
	for _, f := range b.Files {
		if f.Tablespace == 0 {
			continue
		}
		dir := f.Location
		if d, ok := o.Tablespaces[f.Tablespace]; ok {
			dir = d
		}
		if !filepath.IsAbs(dir) {
			return Result{}, fmt.Errorf("--tablespace %d=%s: give an absolute path", f.Tablespace, dir)
		}
		if o.Delta {
			if err := checkNoPostmaster(dir); err != nil {
				return Result{}, err
			}
		} else if err := checkEmpty(fmt.Sprintf("tablespace %d directory", f.Tablespace), dir); err != nil {
			return Result{}, fmt.Errorf("%w (move it with --tablespace %d=DIR)", err, f.Tablespace)
		}
		tsDirs[f.Tablespace] = dir
	}
	for oid := range o.Tablespaces {
		if _, ok := tsDirs[oid]; !ok {
			return Result{}, fmt.Errorf("--tablespace %d: backup %s has no tablespace with that OID", oid, b.ID)
		}
	}

	created := []string{}
	for _, d := range append([]string{o.TargetDir}, values(tsDirs)...) {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			created = append(created, d)
		}
	}
	cleanup := func() {
		if o.Delta {
			return // the directory was not empty: a next delta restore repairs it
		}
		for _, d := range append([]string{o.TargetDir}, values(tsDirs)...) {
			clearDir(d)
		}
		for _, d := range created {
			os.Remove(d)
		}
	}
	start := time.Now()
	var total int64
	for _, f := range b.Files {
		total += f.Size
	}
	var done int64
	progress := func(n int64) {
		done = n
		if o.Progress != nil {
			o.Progress(n, total)
		}
	}
	var delta *basebackup.DeltaStats
	if o.Delta {
		st, err := basebackup.DeltaFrom(ctx, o.Source.Opener(b), b, o.TargetDir, tsDirs, progress)
		if err != nil {
			return Result{}, fmt.Errorf("delta restore of backup %s from %s (the directory is half-restored: "+
				"run the delta restore again): %w", b.ID, o.Source, err)
		}
		delta = &st
	} else if err := basebackup.UnpackFromAs(ctx, o.Source.Opener(b), b, o.TargetDir, tsDirs, o.Owner, progress); err != nil {
		cleanup()
		return Result{}, fmt.Errorf("restore backup %s from %s: %w", b.ID, o.Source, err)
	}
	// A full restore checked every file against the manifest as it wrote
	// it, into an empty directory. A delta restore also kept files and
	// removed others: read the directory again to prove it is the backup.
	if o.Delta {
		var ignore []string
		if moved(b, tsDirs) {
			ignore = append(ignore, "tablespace_map") // rewritten with the new paths
		}
		if err := basebackup.VerifyDir(ctx, o.TargetDir, ignore...); err != nil {
			return Result{}, fmt.Errorf("restored files of backup %s do not match its manifest: %w", b.ID, err)
		}
	}
	cleared, err := o.Settings.Write(o.TargetDir)
	if err != nil {
		cleanup()
		return Result{}, err
	}
	return Result{Backup: b, BackupID: b.ID, TargetDir: o.TargetDir, Tablespaces: tsDirs, Bytes: done,
		Seconds: time.Since(start).Seconds(), Signal: o.Settings.Signal(), RecoveryConfig: o.Settings.Lines(),
		Cleared: cleared, Delta: delta}, nil
}

// moved reports whether any tablespace goes elsewhere than its original path.
func moved(b catalog.Backup, tsDirs map[uint32]string) bool {
	for _, f := range b.Files {
		if d, ok := tsDirs[f.Tablespace]; ok && f.Tablespace != 0 && filepath.Clean(d) != filepath.Clean(f.Location) {
			return true
		}
	}
	return false
}

func values(m map[uint32]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// clearDir removes what is inside dir, leaving dir itself.
func clearDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}
