package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/walname"
	"golang.org/x/sys/unix"
)

// WorkArea is the repository's local working area: what is local by nature
// and never goes to the object store. It holds the .partial segment being
// received (written and fsynced in place), the per-server locks, the
// receiver's state file and catalog.db.
//
// For a repository on local disk the working area is the repository
// directory itself, so the layout of existing repositories is unchanged; for
// an object-store repository it is a local directory of its own (work_dir).
type WorkArea struct {
	root string
}

// NewWorkArea returns the working area rooted at dir, creating it (durably)
// when missing.
func NewWorkArea(dir string) (*WorkArea, error) {
	if err := MkdirAllDurable(dir); err != nil {
		return nil, fmt.Errorf("working area %s: %w", dir, err)
	}
	return &WorkArea{root: dir}, nil
}

// OpenWorkArea returns the working area at dir without creating anything,
// for readers (status).
func OpenWorkArea(dir string) *WorkArea { return &WorkArea{root: dir} }

// Dir is the working area's directory.
func (w *WorkArea) Dir() string { return w.root }

func (w *WorkArea) path(rel string) string { return filepath.Join(w.root, filepath.FromSlash(rel)) }

// Foreign returns the name of an entry in the working area's directory
// (lost+found aside), "" when it is empty or missing: Init refuses to take
// over a directory that holds something else.
func (w *WorkArea) Foreign() (string, error) {
	entries, err := os.ReadDir(w.root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("working area %s: %w", w.root, err)
	}
	for _, e := range entries {
		if e.Name() != "lost+found" {
			return e.Name(), nil
		}
	}
	return "", nil
}

// CatalogPath is the catalog database's file.
func (w *WorkArea) CatalogPath() string { return w.path(CatalogFile) }

// Lock takes server's backup/expire/snapshot lock for command (see package
// lock); it returns a *lock.HeldError naming the holder when it is taken.
func (w *WorkArea) Lock(server, command, detail string) (*lock.Lock, error) {
	return lock.Acquire(w.path(LockPath(server)), command, detail)
}

// ReadLock tells who holds server's backup/expire/snapshot lock.
func (w *WorkArea) ReadLock(server string) (lock.Holder, bool, error) {
	return lock.Read(w.path(LockPath(server)))
}

// ReceiverLock takes the lock a running receiver of server holds: one
// receiver per server and working area.
func (w *WorkArea) ReceiverLock(server string) (*lock.Lock, error) {
	return lock.Acquire(w.path(ReceiverLockPath(server)), "receiver", "")
}

// WriteState replaces the receiver state file of server with data,
// atomically (a reader sees the old or the new file). It is not fsynced: it
// is rewritten every few seconds and only read for status.
func (w *WorkArea) WriteState(server string, data []byte) error {
	final := w.path(ReceiverStatePath(server))
	if err := os.MkdirAll(filepath.Dir(final), 0o750); err != nil {
		return fmt.Errorf("write receiver state: %w", err)
	}
	tmp := final + ".tmp"
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		return fmt.Errorf("write receiver state: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("write receiver state: %w", err)
	}
	return nil
}

// ReadState returns the receiver state file of server; an error wrapping
// ErrNotExist when no receiver ever ran.
func (w *WorkArea) ReadState(server string) ([]byte, error) {
	data, err := os.ReadFile(w.path(ReceiverStatePath(server)))
	if err != nil {
		return nil, fmt.Errorf("read receiver state: %w", err)
	}
	return data, nil
}

// WriteRefreshState replaces the read-only hub's refresh state file with
// data, durably and atomically (TempFile): a reader sees the old or the new
// file, and a crash after it returns keeps the new one.
func (w *WorkArea) WriteRefreshState(data []byte) error {
	// Readable by the group, as the receiver's state: status may run as another user.
	if err := WriteFile(w.path(RefreshStateFile), data, 0o640, -1, -1); err != nil {
		return fmt.Errorf("write refresh state: %w", err)
	}
	return nil
}

// ReadRefreshState returns the read-only hub's refresh state file; an error
// wrapping ErrNotExist when no refresh has been recorded.
func (w *WorkArea) ReadRefreshState() ([]byte, error) {
	data, err := os.ReadFile(w.path(RefreshStateFile))
	if err != nil {
		return nil, fmt.Errorf("read refresh state: %w", err)
	}
	return data, nil
}

// FreeSpace is the size of the working area's file system and what is free
// for walhub (available to an unprivileged user), in bytes.
func (w *WorkArea) FreeSpace() (total, free uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(w.root, &st); err != nil {
		return 0, 0, fmt.Errorf("free space of %s: %w", w.root, err)
	}
	return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize), nil
}

// PartialFile is the local path of the .partial file of segment name.
func (w *WorkArea) PartialFile(server, name string) string { return w.path(PartialPath(server, name)) }

// CreatePartial creates (or truncates) the .partial file of segment name,
// creating its directory durably. The new directory entry is not yet
// durable: fsync the directory (SyncDir of the file's directory) before
// relying on it.
func (w *WorkArea) CreatePartial(server, name string) (*os.File, error) {
	p := w.PartialFile(server, name)
	var f *os.File
	var err error
	for try := 0; try < 2; try++ { // a concurrent Remove may take an empty directory away
		if err = MkdirAllDurable(filepath.Dir(p)); err != nil {
			return nil, err
		}
		f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		if !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", p, err)
	}
	return f, nil
}

// SpareFile is the local path of the receiver's spare file number n (SparePath).
func (w *WorkArea) SpareFile(server string, n int) string { return w.path(SparePath(server, n)) }

// RecyclePartial makes the spare file at spare the .partial file of segment
// name, by a rename (replacing a .partial already there), and opens it for
// writing from its start, creating its directory durably. The file keeps its
// old bytes past what is written: they are another segment's WAL, which the
// caller must never let pass for this one's. As with CreatePartial, the new
// directory entry is not yet durable.
func (w *WorkArea) RecyclePartial(server, name, spare string) (*os.File, error) {
	p := w.PartialFile(server, name)
	var err error
	for try := 0; try < 2; try++ { // a concurrent Remove may take an empty directory away
		if err = MkdirAllDurable(filepath.Dir(p)); err != nil {
			return nil, err
		}
		err = os.Rename(spare, p)
		if !errors.Is(err, fs.ErrNotExist) || !dirMissing(filepath.Dir(p)) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reuse %s as %s: %w", spare, p, err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	return f, nil
}

// dirMissing tells whether dir does not exist.
func dirMissing(dir string) bool {
	_, err := os.Stat(dir)
	return errors.Is(err, fs.ErrNotExist)
}

// AppendPartial opens the existing .partial file of segment name for
// appending (a receiver resuming inside it); a missing one wraps ErrNotExist.
func (w *WorkArea) AppendPartial(server, name string) (*os.File, error) {
	p := w.PartialFile(server, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s for appending: %w", p, err)
	}
	return f, nil
}

// TruncatePartial cuts the .partial file at path to size bytes and makes
// what is left durable: the file fsynced, then its directory (the file may
// never have been synced since it was created).
func TruncatePartial(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("truncate %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// Partial is a .partial segment file found in the working area.
type Partial struct {
	TimeLine walname.TimeLine
	SegNo    walname.SegNo
	// Name is the segment's name, without ".partial".
	Name string
	// Path is the file's local path.
	Path string
	Size int64
}

// Partials removes the temporary files a crash left in the working area's
// WAL directories of server and lists its .partial files, oldest first (by
// segment, then timeline). It only looks into the directories that can hold
// segments from from on, so that it stays quick however large a local
// archive grows.
func (w *WorkArea) Partials(server string, segSize uint64, from walname.SegNo) ([]Partial, error) {
	walDir := w.path(WALDir(server))
	entries, err := os.ReadDir(walDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("scan WAL directory: %w", err)
	}
	perLog := walname.SegNo(walname.SegmentsPerLog(segSize))
	var out []Partial
	for _, e := range entries {
		dir := filepath.Join(walDir, e.Name())
		if !e.IsDir() {
			if IsTemp(e.Name()) {
				if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, fmt.Errorf("remove temporary file: %w", err)
				}
			}
			continue
		}
		// Directories are named TLI and LOG, 8 hex digits each; LOG holds
		// segments LOG*perLog to (LOG+1)*perLog-1.
		dirLog, err := strconv.ParseUint(e.Name()[min(8, len(e.Name())):], 16, 32)
		if err != nil || len(e.Name()) != 16 || walname.SegNo(dirLog+1)*perLog <= from {
			continue
		}
		if err := CleanTemp(dir); err != nil {
			return nil, fmt.Errorf("remove temporary files: %w", err)
		}
		files, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("scan WAL directory: %w", err)
		}
		for _, f := range files {
			n, err := walname.Parse(f.Name())
			if err != nil || n.Kind != walname.KindPartial {
				continue
			}
			segNo, err := n.SegNo(segSize)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", filepath.Join(dir, f.Name()), err)
			}
			fi, err := f.Info()
			if err != nil {
				return nil, err
			}
			out = append(out, Partial{TimeLine: n.TimeLine, SegNo: segNo,
				Name: strings.TrimSuffix(f.Name(), ".partial"), Path: filepath.Join(dir, f.Name()), Size: fi.Size()})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].SegNo != out[j].SegNo {
			return out[i].SegNo < out[j].SegNo
		}
		return out[i].TimeLine < out[j].TimeLine
	})
	return out, nil
}

// RemovePartial removes a .partial file by its local path; a missing one is
// not an error.
func RemovePartial(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// OpenPartial opens the .partial of segment name for reading (the hub serves
// it on request); a missing one wraps ErrNotExist.
func (w *WorkArea) OpenPartial(server, name string) (*os.File, error) {
	f, err := os.Open(w.PartialFile(server, name))
	if err != nil {
		return nil, fmt.Errorf("open %s.partial: %w", name, err)
	}
	return f, nil
}
