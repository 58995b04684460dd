package crypt

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/walhub/walhub/storage"
)

// fileStore is an in-process fake storage.ObjectStore for unit tests: objects
// are files under dir (so a large object costs no memory), metadata is kept
// in a map.
type fileStore struct {
	dir  string
	mu   sync.Mutex
	meta map[string]storage.Meta
}

func newFileStore(dir string) *fileStore {
	return &fileStore{dir: dir, meta: map[string]storage.Meta{}}
}

func (s *fileStore) path(key string) string { return filepath.Join(s.dir, filepath.FromSlash(key)) }

func (s *fileStore) Create(ctx context.Context, key string, meta storage.Meta) (storage.ObjectWriter, error) {
	p := s.path(key)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return nil, err
	}
	return &fileWriter{s: s, key: key, f: f, meta: maps.Clone(meta)}, nil
}

type fileWriter struct {
	s    *fileStore
	key  string
	f    *os.File
	meta storage.Meta
	n    int64
	done bool
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *fileWriter) Commit(ctx context.Context) (int64, error) {
	if w.done {
		return 0, fmt.Errorf("finished")
	}
	w.done = true
	if err := w.f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(w.f.Name(), w.s.path(w.key)); err != nil {
		return 0, err
	}
	w.s.mu.Lock()
	w.s.meta[w.key] = w.meta
	w.s.mu.Unlock()
	return w.n, nil
}

func (w *fileWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	return os.Remove(w.f.Name())
}

type fileReader struct {
	*os.File
	size int64
}

func (r fileReader) Size() int64 { return r.size }

func (s *fileStore) Open(ctx context.Context, key string) (storage.ObjectReader, error) {
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return fileReader{File: f, size: fi.Size()}, nil
}

func (s *fileStore) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	fi, err := os.Stat(s.path(key))
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime(), Meta: maps.Clone(s.meta[key])}, nil
}

func (s *fileStore) Remove(ctx context.Context, key string) error {
	err := os.Remove(s.path(key))
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func (s *fileStore) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	var keys []string
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".tmp-") {
			return err
		}
		rel, _ := filepath.Rel(s.dir, p)
		if k := filepath.ToSlash(rel); strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(keys)
	for _, k := range keys {
		info, err := s.Stat(ctx, k)
		if err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

func (s *fileStore) Features() storage.Features {
	return storage.Features{LocalPaths: true, Rename: true}
}

func (s *fileStore) String() string { return "files " + s.dir }
