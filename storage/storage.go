// Package storage is where walhub's bytes live. ObjectStore is the one
// interface every archived byte goes through (LocalStore keeps objects as
// files under a directory; an S3-compatible bucket is another); WorkArea is
// the repository's local working area; layout.go defines every key and path.
//
// TempFile is the one way walhub writes a local file durably: to a temporary
// name beside the final one, fsynced, renamed (or linked, when it must not
// replace a file: CommitNew), directory fsynced, so a reader never sees a
// torn file under a final name.
package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrNotExist is returned (wrapped) when a stored file does not exist.
var ErrNotExist = fs.ErrNotExist

// TempFile is a file being written under a temporary name next to its final
// path. Commit makes it durable under the final name; Abort removes it.
type TempFile struct {
	*os.File
	final string
}

// CreateTemp creates the directories leading to final (fsyncing the new ones'
// parents) and a temporary file beside final.
func CreateTemp(final string) (*TempFile, error) {
	dir := filepath.Dir(final)
	var f *os.File
	var err error
	// Twice: a concurrent Remove may take away a directory it left empty
	// between its creation and the file's.
	for try := 0; try < 2; try++ {
		if err = MkdirAllDurable(dir); err != nil {
			return nil, err
		}
		f, err = os.CreateTemp(dir, "."+filepath.Base(final)+".tmp-*")
		if !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create temporary file for %s: %w", final, err)
	}
	return &TempFile{File: f, final: final}, nil
}

// Commit fsyncs the file, renames it to its final name and fsyncs the directory.
func (t *TempFile) Commit() error {
	if err := t.Replace(); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(t.final))
}

// Replace fsyncs the file and renames it to its final name, leaving the
// directory's fsync to the caller (one for several files); Commit does both.
// On error the temporary file is removed.
func (t *TempFile) Replace() error {
	if err := t.finish(); err != nil {
		return err
	}
	if err := os.Rename(t.Name(), t.final); err != nil {
		os.Remove(t.Name())
		return fmt.Errorf("rename into %s: %w", t.final, err)
	}
	return nil
}

// finish fsyncs and closes the file; on error it removes it.
func (t *TempFile) finish() error {
	if err := t.Sync(); err != nil {
		t.Abort()
		return fmt.Errorf("fsync %s: %w", t.final, err)
	}
	if err := t.Close(); err != nil {
		os.Remove(t.Name())
		return fmt.Errorf("close %s: %w", t.final, err)
	}
	return nil
}

// CommitNew is Commit for a file that must not replace another: it fsyncs
// the file and links it under its final name, which fails (fs.ErrExist) when
// a file is there, then removes the temporary name and fsyncs the directory.
// Like Commit, it never shows a torn file under the final name. On error the
// temporary file is removed.
func (t *TempFile) CommitNew() error {
	if err := t.finish(); err != nil {
		return err
	}
	err := os.Link(t.Name(), t.final)
	os.Remove(t.Name())
	if err != nil {
		return linkError(t.final, err)
	}
	return SyncDir(filepath.Dir(t.final))
}

// linkError is what CommitNew reports when the link to final failed: an
// error on final, not on the temporary name, which says so when the file
// system refuses hard links (vfat, some FUSE and network file systems),
// without which a file can't be created durably under a name that must not
// be replaced.
func linkError(final string, err error) error {
	le := (*os.LinkError)(nil)
	if !errors.As(err, &le) {
		return err
	}
	perr := &fs.PathError{Op: "create", Path: final, Err: le.Err}
	if errors.Is(le.Err, syscall.EPERM) || errors.Is(le.Err, syscall.ENOTSUP) || errors.Is(le.Err, syscall.EMLINK) {
		return fmt.Errorf("%w (the file system of %s may not support hard links, which creating a file that must never replace another needs: choose a directory on another file system)",
			perr, filepath.Dir(final))
	}
	return perr
}

// WriteFile writes data to path durably and atomically (a TempFile
// committed): a reader sees the old file or the new one, never a torn one,
// and the new one is kept by a crash after WriteFile returns. The file gets
// mode perm and is given to uid:gid, where -1 leaves either as the writer's
// (as os.Chown).
func WriteFile(path string, data []byte, perm fs.FileMode, uid, gid int) error {
	f, err := CreateTemp(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if uid != -1 || gid != -1 {
		if err := f.Chown(uid, gid); err != nil {
			f.Abort()
			return fmt.Errorf("give %s to %d:%d: %w", path, uid, gid, err)
		}
	}
	return f.Commit()
}

// IsTemp tells whether a file name is that of a temporary file made by
// CreateTemp (".<final name>.tmp-<random>").
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// Abort closes and removes the temporary file.
func (t *TempFile) Abort() {
	t.Close()
	os.Remove(t.Name())
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// MkdirAllDurable creates dir and its missing parents, fsyncing each parent
// that gained an entry.
func MkdirAllDurable(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAllDurable(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return SyncDir(parent)
}

// CleanTemp removes temporary files that a crashed writer left below dir.
func CleanTemp(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() && IsTemp(d.Name()) {
			return os.Remove(path)
		}
		return nil
	})
}
