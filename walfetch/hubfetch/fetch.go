package hubfetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/pgfile"
	"github.com/walhub/walhub/walname"
)

// headerWriter keeps the first bytes written through it: the long page header
// of a segment, checked before the segment is handed over. When whole is set,
// it is called with the header as soon as it is complete, before those bytes
// go on to w; its error ends the download.
type headerWriter struct {
	w     io.Writer
	hdr   [pgfile.LongPageHeaderSize]byte
	n     int
	whole func(hdr []byte) error
}

func (h *headerWriter) Write(p []byte) (int, error) {
	if h.n < len(h.hdr) {
		h.n += copy(h.hdr[h.n:], p)
		if h.n == len(h.hdr) && h.whole != nil {
			if err := h.whole(h.hdr[:]); err != nil {
				return 0, err
			}
		}
	}
	return h.w.Write(p)
}

// fetchInto downloads name into a temporary file in dir, verifies it and
// returns the temporary file's path; the caller renames it into place. On
// any error nothing is left behind. systemID, when not 0, must match the
// hub's server and the segment's header.
func fetchInto(ctx context.Context, c *client.Client, name, dir string, systemID uint64, reg *TempFiles) (string, error) {
	f, err := reg.create(dir)
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(f.Name())
		reg.remove(f.Name())
		return "", err
	}
	hw := &headerWriter{w: f}
	info, err := c.FetchWAL(ctx, name, hw)
	if err != nil {
		return fail(err)
	}
	n, perr := walname.Parse(name)
	if perr == nil && n.Kind == walname.KindSegment {
		if err := checkSegment(c, info, hw, name, systemID); err != nil {
			return fail(err)
		}
	}
	if err := f.Close(); err != nil {
		return fail(fmt.Errorf("write %s: %w", f.Name(), err))
	}
	return f.Name(), nil
}

// checkSegment verifies segment name, downloaded by c (the client checked its
// size and CRC-32C against what the hub recorded) with its first bytes in hw,
// against the segment size and system identifier the hub sent with it: a
// whole segment of that size, whose page header matches its name, the size
// and systemID (when not 0), which must also be the hub's server's.
func checkSegment(c *client.Client, info client.WALInfo, hw *headerWriter, name string, systemID uint64) error {
	if systemID != 0 && info.SystemID != strconv.FormatUint(systemID, 10) {
		return fmt.Errorf("%w: the hub's server %s is database system %s, but this data directory belongs to %d: wrong --server or --url?",
			client.ErrRefused, c.Server(), info.SystemID, systemID)
	}
	if walname.ValidSegmentSize(info.SegmentSize) != nil || uint64(info.Size) != info.SegmentSize {
		return fmt.Errorf("%w: segment %s is %d bytes, the server's segment size is %d", client.ErrCorrupt, name, info.Size, info.SegmentSize)
	}
	if err := pgfile.CheckSegmentHeader(hw.hdr[:hw.n], name, info.SegmentSize, systemID); err != nil {
		return fmt.Errorf("%w: %v", client.ErrCorrupt, err)
	}
	return nil
}

// fetchPartialInto downloads name.partial (the part of segment name the hub
// received) into a temporary file in dir, checks it as fetchInto checks a
// segment (system identifier, page header), pads it with zeros to the segment
// size and returns the temporary file's path. An empty .partial is
// client.ErrNotFound: there is nothing to recover from it.
func fetchPartialInto(ctx context.Context, c *client.Client, name, dir string, systemID uint64, reg *TempFiles) (string, client.WALInfo, error) {
	f, err := reg.create(dir)
	if err != nil {
		return "", client.WALInfo{}, err
	}
	fail := func(info client.WALInfo, err error) (string, client.WALInfo, error) {
		f.Close()
		os.Remove(f.Name())
		reg.remove(f.Name())
		return "", info, err
	}
	hw := &headerWriter{w: f}
	info, err := c.FetchWAL(ctx, name+".partial", hw)
	switch {
	case err != nil:
		return fail(info, err)
	case info.Size == 0:
		return fail(info, fmt.Errorf("%w: %s.partial is empty", client.ErrNotFound, name))
	case systemID != 0 && info.SystemID != fmt.Sprint(systemID):
		return fail(info, fmt.Errorf("%w: the hub's server %s is database system %s, but this data directory belongs to %d: wrong --server or --url?",
			client.ErrRefused, c.Server(), info.SystemID, systemID))
	case walname.ValidSegmentSize(info.SegmentSize) != nil || uint64(info.Size) > info.SegmentSize:
		return fail(info, fmt.Errorf("%w: %s.partial is %d bytes, the server's segment size is %d", client.ErrCorrupt, name, info.Size, info.SegmentSize))
	}
	if err := pgfile.CheckSegmentHeader(hw.hdr[:hw.n], name, info.SegmentSize, systemID); err != nil {
		return fail(info, fmt.Errorf("%w: %s.partial: %v", client.ErrCorrupt, name, err))
	}
	if err := f.Truncate(int64(info.SegmentSize)); err != nil {
		return fail(info, fmt.Errorf("pad %s to the segment size: %w", f.Name(), err))
	}
	if err := f.Close(); err != nil {
		return fail(info, fmt.Errorf("write %s: %w", f.Name(), err))
	}
	return f.Name(), info, nil
}

// TempFiles remembers temporary files, so a signal handler can remove them.
type TempFiles struct {
	mu     sync.Mutex
	paths  map[string]bool
	closed bool // RemoveAll has run: the process is exiting
}

// NewTempFiles returns an empty register.
func NewTempFiles() *TempFiles { return &TempFiles{paths: map[string]bool{}} }

// create makes a temporary file in dir and registers it, both under the
// lock RemoveAll takes: a signal's RemoveAll removes every file created
// before it (one created, then registered after it, was left in pg_wal),
// and once it has run no new file is made.
func (t *TempFiles) create(dir string) (*os.File, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("stopping on a signal: no new temporary file")
	}
	f, err := os.CreateTemp(dir, ".walfetch-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	t.paths[f.Name()] = true
	return f, nil
}

func (t *TempFiles) remove(p string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.paths, p)
}

// RemoveAll removes every remembered file (on a signal, before exiting);
// create makes none after it.
func (t *TempFiles) RemoveAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for p := range t.paths {
		os.Remove(p)
	}
	t.paths = map[string]bool{}
}

// install renames a verified temporary file into dst.
func install(tmp, dst string, reg *TempFiles) error {
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		reg.remove(tmp)
		return fmt.Errorf("rename into %s: %w", dst, err)
	}
	reg.remove(tmp)
	return nil
}

// removeStaleTemps removes temporary files that a walfetch killed with
// SIGKILL left in dir more than an hour ago.
func removeStaleTemps(dir string) {
	old, _ := filepath.Glob(filepath.Join(dir, ".walfetch-*.tmp"))
	for _, p := range old {
		if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > time.Hour {
			os.Remove(p)
		}
	}
}
