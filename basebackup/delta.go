package basebackup

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage"
)

// DeltaStats says what a delta restore did.
type DeltaStats struct {
	// KeptFiles already matched the manifest (size and checksum) and were left alone.
	KeptFiles int   `json:"kept_files"`
	KeptBytes int64 `json:"kept_bytes"`
	// WrittenFiles were missing or different, and were written.
	WrittenFiles int   `json:"written_files"`
	WrittenBytes int64 `json:"written_bytes"`
	// FullBytes is what a full restore writes: every file of the backup.
	FullBytes int64 `json:"full_bytes"`
	// Removed lists what was there and is not in the backup (relative to the
	// data directory; directories end in "/").
	Removed []string `json:"removed,omitempty"`
}

// DeltaFrom brings the existing data directory target (and each tablespace
// directory) to exactly backup b: a file whose size and checksum match the
// backup's manifest is kept, every other file of the backup is written, and
// what the backup does not have is removed (including all of pg_wal, as in a
// fresh backup; inside a tablespace directory only the version directories the
// backup has are touched). Every file and directory is fsynced, kept ones too.
// The caller makes sure no server runs on target.
func DeltaFrom(ctx context.Context, open Opener, b catalog.Backup, target string, tablespaceDirs map[uint32]string,
	progress func(done int64)) (DeltaStats, error) {
	arcs, dirs, moved, err := tablespaceTargets(b, tablespaceDirs)
	if err != nil {
		return DeltaStats{}, err
	}
	manifest, m, err := loadManifest(ctx, open)
	if err != nil {
		return DeltaStats{}, err
	}
	for _, d := range append([]string{target}, mapValues(dirs)...) {
		if err := storage.MkdirAllDurable(d); err != nil {
			return DeltaStats{}, err
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return DeltaStats{}, err
		}
	}
	d := &delta{want: make(map[string]ManifestFile, len(m.Files)), inBackup: map[string]bool{}, dirs: map[string]bool{}}
	for _, f := range m.Files {
		d.want[f.Path] = f
	}
	x := newExtractor(progress)
	x.delta = d
	x.check = newFileCheck(m, nil)
	if err := x.extractArchives(ctx, open, arcs, target, dirs); err != nil {
		return d.stats, err
	}
	if err := x.check.result(); err != nil {
		return d.stats, err
	}
	if len(dirs) > 0 {
		if err := linkTablespaces(target, dirs, nil); err != nil {
			return d.stats, err
		}
	}
	if moved {
		if err := rewriteTablespaceMap(target, dirs, nil); err != nil {
			return d.stats, err
		}
	}
	if err := storage.WriteFile(filepath.Join(target, ManifestName), manifest, 0o600, -1, -1); err != nil {
		return d.stats, err
	}
	if err := d.removeExtras(x, target, "", dirs); err != nil {
		return d.stats, err
	}
	d.stats.FullBytes = x.done
	d.stats.WrittenBytes = x.done - d.stats.KeptBytes
	return d.stats, x.finish(ctx)
}

// delta is the state of a delta restore, in manifest paths (relative to the
// data directory, slash-separated).
type delta struct {
	want map[string]ManifestFile
	// inBackup and dirs are the files and directories the archives hold.
	inBackup map[string]bool
	dirs     map[string]bool
	stats    DeltaStats
}

// entry prepares the way for one directory or regular file entry of the
// archive: what is in the way is removed, and a file that already matches the
// manifest is kept (then its data is skipped and entry returns true).
func (d *delta) entry(x *extractor, isDir bool, rel, full string, r io.Reader) (bool, error) {
	mpath := x.prefix + rel
	lfi, err := os.Lstat(full)
	exists := err == nil
	if isDir {
		d.dirs[mpath] = true
		// A directory, or a link to one (pg_wal on another disk), stays.
		if fi, err := os.Stat(full); exists && (err != nil || !fi.IsDir()) {
			return false, removePath(full)
		}
		return false, nil
	}
	d.inBackup[mpath] = true
	for p := path.Dir(mpath); p != "." && !d.dirs[p]; p = path.Dir(p) {
		d.dirs[p] = true // archives need not list every directory
	}
	if !exists {
		d.stats.WrittenFiles++
		return false, nil
	}
	if mf, ok := d.want[mpath]; ok && lfi.Mode().IsRegular() && lfi.Size() == mf.Size && mf.Algorithm != "NONE" {
		same, err := matches(full, mf, x.buf)
		if err != nil {
			return false, err
		}
		if same {
			n, err := io.CopyBuffer(io.Discard, r, x.buf)
			if err != nil {
				return false, fmt.Errorf("read %s: %w", mpath, err)
			}
			x.check.expect(mpath) // checked just now
			d.stats.KeptFiles++
			d.stats.KeptBytes += n
			x.done += n
			if x.progress != nil {
				x.progress(x.done)
			}
			x.files = append(x.files, full)
			return true, nil
		}
	}
	d.stats.WrittenFiles++
	return false, removePath(full)
}

// matches reports whether the file at full has the manifest's checksum.
func matches(full string, mf ManifestFile, buf []byte) (bool, error) {
	f, err := os.Open(full)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h, err := newManifestHash(mf.Algorithm)
	if err != nil {
		return false, err
	}
	if _, err := io.CopyBuffer(h, f, buf); err != nil {
		return false, fmt.Errorf("read %s: %w", full, err)
	}
	return h.Hex() == mf.Checksum, nil
}

// removeExtras removes, below dir (manifest path mpath), what the backup does
// not hold. In pg_tblspc it keeps the links of the backup's tablespaces and
// looks inside them only at the version directories the backup has (a
// tablespace directory may be shared with another cluster's version).
func (d *delta) removeExtras(x *extractor, dir, mpath string, tablespaces map[uint32]string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		full := filepath.Join(dir, e.Name())
		child := path.Join(mpath, e.Name())
		if child == ManifestName || full == x.heldBack {
			continue
		}
		if mpath == "pg_tblspc" {
			oid, err := strconv.ParseUint(e.Name(), 10, 32)
			if _, ok := tablespaces[uint32(oid)]; err == nil && ok {
				if err := d.removeExtrasInTablespace(x, full, child, tablespaces); err != nil {
					return err
				}
				continue
			}
		}
		fi, err := os.Stat(full) // follows pg_wal on another disk
		switch {
		case err == nil && fi.IsDir() && d.dirs[child]:
			if err := d.removeExtras(x, full, child, tablespaces); err != nil {
				return err
			}
			continue
		case err == nil && !fi.IsDir() && d.inBackup[child]:
			continue
		}
		if err := removePath(full); err != nil {
			return err
		}
		if err == nil && fi.IsDir() {
			child += "/"
		}
		d.stats.Removed = append(d.stats.Removed, child)
		removed = true
	}
	if removed {
		x.dirs = append(x.dirs, dir)
	}
	return nil
}

func (d *delta) removeExtrasInTablespace(x *extractor, link, mpath string, tablespaces map[uint32]string) error {
	entries, err := os.ReadDir(link)
	if err != nil {
		return err
	}
	for _, e := range entries {
		child := path.Join(mpath, e.Name())
		if d.dirs[child] {
			if err := d.removeExtras(x, filepath.Join(link, e.Name()), child, tablespaces); err != nil {
				return err
			}
		}
	}
	return nil
}

// removePath removes a file, a link (not what it points at) or a directory tree.
func removePath(full string) error {
	if err := os.RemoveAll(full); err != nil {
		return fmt.Errorf("remove %s: %w", full, err)
	}
	return nil
}

func mapValues(m map[uint32]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
