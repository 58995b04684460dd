// Package walfeed fills a walhub repository with real WAL for tests and
// benchmarks, the way the receiver stores it (zstd or none, checksum of the
// uncompressed bytes, file written durably before its catalog row), without
// the receiver: it ingests completed segments and history files that a
// PostgreSQL archive_command copied into a directory.
package walfeed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// ArchiveCommand is an archive_command that copies each completed WAL file
// into dir atomically (copy to a temporary name, then rename), so a reader of
// dir never sees a half-copied file. dir must not contain spaces or quotes.
func ArchiveCommand(dir string) string {
	return fmt.Sprintf(`test ! -f %[1]s/%%f && cp %%p %[1]s/.%%f.tmp && mv %[1]s/.%%f.tmp %[1]s/%%f`, dir)
}

// Feeder stores WAL files into one server's part of a repository.
type Feeder struct {
	Repo        storage.Local
	Catalog     *catalog.Catalog
	Server      catalog.Server
	Compression string // "zstd" or "none"

	mu   sync.Mutex
	enc  *zstd.Encoder
	done map[string]bool
}

// New registers server in the catalog with its identity and returns a feeder for it.
func New(ctx context.Context, repo storage.Local, cat *catalog.Catalog, server, systemID string, segSize uint64, compression string) (*Feeder, error) {
	srv, err := cat.EnsureServer(ctx, server)
	if err != nil {
		return nil, err
	}
	if err := cat.BindIdentity(ctx, srv.ID, systemID, segSize); err != nil {
		return nil, err
	}
	if srv, err = cat.ServerByName(ctx, server); err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &Feeder{Repo: repo, Catalog: cat, Server: srv, Compression: compression, enc: enc, done: map[string]bool{}}, nil
}

// StoreSegment stores one complete segment as the receiver does.
func (f *Feeder) StoreSegment(ctx context.Context, name string, data []byte) error {
	tli, segno, err := walname.ParseSegment(name, f.Server.SegmentSize)
	if err != nil {
		return err
	}
	if uint64(len(data)) != f.Server.SegmentSize {
		return fmt.Errorf("segment %s has %d bytes, want %d", name, len(data), f.Server.SegmentSize)
	}
	stored := data
	if f.Compression == "zstd" {
		f.mu.Lock()
		stored = f.enc.EncodeAll(data, nil)
		f.mu.Unlock()
	}
	rel := storage.SegmentPath(f.Server.Name, name, f.Compression)
	n, err := f.Repo.Put(ctx, rel, func(w io.Writer) error { _, err := w.Write(stored); return err })
	if err != nil {
		return fmt.Errorf("store segment %s: %w", name, err)
	}
	return f.Catalog.AddSegment(ctx, catalog.Segment{ServerID: f.Server.ID, TimeLine: tli, SegNo: segno, Name: name,
		Size: int64(len(data)), StoredSize: n, Compression: f.Compression, Checksum: checksum.Of(data),
		StoredPath: rel, ReceivedAt: time.Now()})
}

// StoreHistory stores a timeline history file.
func (f *Feeder) StoreHistory(ctx context.Context, tli walname.TimeLine, content []byte) error {
	rel := storage.HistoryPath(f.Server.Name, tli)
	if _, err := f.Repo.Put(ctx, rel, func(w io.Writer) error { _, err := w.Write(content); return err }); err != nil {
		return fmt.Errorf("store history %d: %w", tli, err)
	}
	return f.Catalog.AddTimeLine(ctx, catalog.TimeLine{ServerID: f.Server.ID, TimeLine: tli, History: content,
		StoredPath: rel, AddedAt: time.Now()})
}

// IngestDir stores every segment and history file in dir not stored yet, in
// name order, and returns how many it stored.
func (f *Feeder) IngestDir(ctx context.Context, dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	stored := 0
	for _, name := range names {
		if f.done[name] || strings.HasPrefix(name, ".") {
			continue
		}
		n, err := walname.Parse(name)
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return stored, err
		}
		switch n.Kind {
		case walname.KindSegment:
			err = f.StoreSegment(ctx, name, data)
		case walname.KindHistory:
			err = f.StoreHistory(ctx, n.TimeLine, data)
		default:
			f.done[name] = true
			continue
		}
		if err != nil {
			return stored, err
		}
		f.done[name] = true
		stored++
	}
	return stored, nil
}

// Follow ingests dir every interval until ctx ends, reporting the first error.
func (f *Feeder) Follow(ctx context.Context, dir string, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := f.IngestDir(ctx, dir); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
