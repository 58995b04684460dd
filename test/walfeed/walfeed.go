// Package walfeed fills a walhub repository with real WAL for tests and
// benchmarks, the way the receiver stores it (through the repository layer:
// zstd or none, checksum of the uncompressed bytes, object durable before its
// catalog row), without the receiver: it ingests completed segments and history files that a
// PostgreSQL archive_command copied into a directory.
package walfeed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/walname"
)

// ArchiveCommand is an archive_command that copies each completed WAL file
// into dir atomically (copy to a temporary name, then rename), so a reader of
// dir never sees a half-copied file. dir must not contain spaces or quotes.
func ArchiveCommand(dir string) string {
	return fmt.Sprintf(`test ! -f %[1]s/%%f && cp %%p %[1]s/.%%f.tmp && mv %[1]s/.%%f.tmp %[1]s/%%f`, dir)
}

// Feeder stores WAL files into one server's part of a repository, through
// the repository layer that the receiver uses.
type Feeder struct {
	Repo   *repository.Repository
	Server catalog.Server

	mu     sync.Mutex
	storer *repository.SegmentStorer
	done   map[string]bool
}

// New registers server in the catalog with its identity and returns a feeder for it.
func New(ctx context.Context, repo *repository.Repository, server, systemID string, segSize uint64, compression string) (*Feeder, error) {
	cat := repo.Catalog
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
	storer, err := repo.SegmentStorer(srv, compression, int(zstd.SpeedFastest))
	if err != nil {
		return nil, err
	}
	return &Feeder{Repo: repo, Server: srv, storer: storer, done: map[string]bool{}}, nil
}

// StoreSegment stores one complete segment as the receiver does.
func (f *Feeder) StoreSegment(ctx context.Context, name string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.storer.Store(ctx, name, data)
	return err
}

// StoreHistory stores a timeline history file.
func (f *Feeder) StoreHistory(ctx context.Context, tli walname.TimeLine, content []byte) error {
	return f.Repo.StoreHistory(ctx, f.Server, tli, content)
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
