// Package storage is where walhub's bytes live: the repository. Store is one
// small interface; Local keeps files under a directory. Every file is written
// to a temporary name, fsynced, renamed and its directory fsynced before Put
// returns, so a reader never sees a torn file under a final name.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotExist is returned (wrapped) when a stored file does not exist.
var ErrNotExist = fs.ErrNotExist

// Store holds files by relative, slash-separated path.
type Store interface {
	// Put writes the file at rel with what write writes, durably and atomically:
	// when Put returns nil the whole file is there and survives a crash; when it
	// fails nothing is left under rel. It returns the bytes written.
	Put(ctx context.Context, rel string, write func(w io.Writer) error) (int64, error)
	// Open opens a stored file for reading.
	Open(rel string) (File, error)
	// Remove deletes a file; removing a missing file is not an error.
	Remove(rel string) error
}

// File is an open stored file.
type File interface {
	io.ReadSeekCloser
	io.ReaderAt
	Stat() (fs.FileInfo, error)
}

// Local is a Store on the local file system, rooted at Root.
type Local struct {
	Root string
}

// Path returns the local path of rel, refusing anything that would leave Root.
func (l Local) Path(rel string) (string, error) {
	if rel == "" || strings.HasPrefix(rel, "/") || !fs.ValidPath(rel) {
		return "", fmt.Errorf("invalid repository path %q", rel)
	}
	return filepath.Join(l.Root, filepath.FromSlash(rel)), nil
}

// Put implements Store.
func (l Local) Put(ctx context.Context, rel string, write func(w io.Writer) error) (int64, error) {
	path, err := l.Path(rel)
	if err != nil {
		return 0, err
	}
	f, err := CreateTemp(path)
	if err != nil {
		return 0, err
	}
	cw := &countingWriter{w: f}
	if err := write(cw); err != nil {
		f.Abort()
		return 0, fmt.Errorf("write %s: %w", rel, err)
	}
	if err := ctx.Err(); err != nil {
		f.Abort()
		return 0, fmt.Errorf("write %s: %w", rel, err)
	}
	if err := f.Commit(); err != nil {
		return 0, err
	}
	return cw.n, nil
}

// Open implements Store.
func (l Local) Open(rel string) (File, error) {
	path, err := l.Path(rel)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", rel, err)
	}
	return f, nil
}

// Remove implements Store.
func (l Local) Remove(rel string) error {
	path, err := l.Path(rel)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", rel, err)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

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
	if err := t.Sync(); err != nil {
		t.Abort()
		return fmt.Errorf("fsync %s: %w", t.final, err)
	}
	if err := t.Close(); err != nil {
		os.Remove(t.Name())
		return fmt.Errorf("close %s: %w", t.final, err)
	}
	if err := os.Rename(t.Name(), t.final); err != nil {
		os.Remove(t.Name())
		return fmt.Errorf("rename into %s: %w", t.final, err)
	}
	return SyncDir(filepath.Dir(t.final))
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

// RemoveAll deletes a directory and everything in it; a missing directory is
// not an error.
func (l Local) RemoveAll(rel string) error {
	path, err := l.Path(rel)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove %s: %w", rel, err)
	}
	return SyncDir(filepath.Dir(path))
}
