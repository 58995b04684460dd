package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/walname"
)

// headerWriter keeps the first bytes written through it: the long page header
// of a segment, checked before the segment is handed over.
type headerWriter struct {
	w   io.Writer
	hdr [40]byte
	n   int
}

func (h *headerWriter) Write(p []byte) (int, error) {
	if h.n < len(h.hdr) {
		h.n += copy(h.hdr[h.n:], p)
	}
	return h.w.Write(p)
}

// checkSegmentHeader checks the long page header that opens every segment:
// right magic-independent fields for this name, this cluster and this size.
// A stale or recycled segment under a final name fails here, not in
// PostgreSQL (where it would cause endless "unexpected pageaddr" retries).
func checkSegmentHeader(hdr []byte, name string, segSize uint64, systemID uint64) error {
	if len(hdr) < 40 {
		return fmt.Errorf("segment %s is shorter than a page header", name)
	}
	tli, segno, err := walname.ParseSegment(name, segSize)
	if err != nil {
		return err
	}
	const xlpLongHeader = 0x0002
	info := binary.NativeEndian.Uint16(hdr[2:])
	pageTLI := walname.TimeLine(binary.NativeEndian.Uint32(hdr[4:]))
	pageAddr := walname.LSN(binary.NativeEndian.Uint64(hdr[8:]))
	sysid := binary.NativeEndian.Uint64(hdr[24:])
	size := binary.NativeEndian.Uint32(hdr[32:])
	switch want := walname.SegmentStart(segno, segSize); {
	case info&xlpLongHeader == 0:
		return fmt.Errorf("segment %s does not start with a long page header", name)
	case pageAddr != want:
		return fmt.Errorf("segment %s starts at %s, not at %s: a stale or misnamed segment", name, pageAddr, want)
	case pageTLI > tli:
		return fmt.Errorf("segment %s holds pages of timeline %d", name, pageTLI)
	case uint64(size) != segSize:
		return fmt.Errorf("segment %s says it is %d bytes long, not %d", name, size, segSize)
	case systemID != 0 && sysid != systemID:
		return fmt.Errorf("segment %s belongs to database system %d, this data directory to %d", name, sysid, systemID)
	}
	return nil
}

// fetchInto downloads name into a temporary file in dir, verifies it and
// returns the temporary file's path; the caller renames it into place. On
// any error nothing is left behind. systemID, when not 0, must match the
// hub's server and the segment's header.
func fetchInto(ctx context.Context, c *client.Client, name, dir string, systemID uint64, reg *tempFiles) (string, error) {
	f, err := os.CreateTemp(dir, ".walfetch-*.tmp")
	if err != nil {
		return "", fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	reg.add(f.Name())
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
		if systemID != 0 && info.SystemID != fmt.Sprint(systemID) {
			return fail(fmt.Errorf("%w: the hub's server %s is database system %s, but this data directory belongs to %d: wrong --server or --url?",
				client.ErrRefused, c.Server(), info.SystemID, systemID))
		}
		if walname.ValidSegmentSize(info.SegmentSize) != nil || uint64(info.Size) != info.SegmentSize {
			return fail(fmt.Errorf("%w: segment %s is %d bytes, the server's segment size is %d", client.ErrCorrupt, name, info.Size, info.SegmentSize))
		}
		if err := checkSegmentHeader(hw.hdr[:hw.n], name, info.SegmentSize, systemID); err != nil {
			return fail(fmt.Errorf("%w: %v", client.ErrCorrupt, err))
		}
	}
	if err := f.Close(); err != nil {
		return fail(fmt.Errorf("write %s: %w", f.Name(), err))
	}
	return f.Name(), nil
}

// tempFiles remembers temporary files, so a signal handler can remove them.
type tempFiles struct {
	mu    sync.Mutex
	paths map[string]bool
}

func newTempFiles() *tempFiles { return &tempFiles{paths: map[string]bool{}} }

func (t *tempFiles) add(p string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.paths[p] = true
}

func (t *tempFiles) remove(p string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.paths, p)
}

// removeAll removes every remembered file (on a signal, before exiting).
func (t *tempFiles) removeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p := range t.paths {
		os.Remove(p)
	}
	t.paths = map[string]bool{}
}

// install renames a verified temporary file into dst.
func install(tmp, dst string, reg *tempFiles) error {
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
