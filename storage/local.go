package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// LocalStore is the ObjectStore on a local directory: every object is a plain
// file under root at its key.
//
// Commit writes the object to a temporary name beside its final one, fsyncs
// it, renames it into place and fsyncs the directory, so a reader never sees
// a torn object under a final name and a committed object survives a crash.
//
// Meta is kept in a sidecar file beside the object, ".<name>.meta", a small
// JSON document that also records the object's size. It is written (to a
// temporary name, fsynced, renamed) before the object itself is renamed into
// place, and one directory fsync then makes both durable, so a committed
// object always has its meta. Plain files and JSON work on every file system
// (user extended attributes do not: tmpfs and some NFS servers refuse them).
// A sidecar whose recorded size differs from the object's is ignored: a crash
// came in the middle of replacing the object.
//
// Names beginning with '.' are the store's own (temporaries and sidecars):
// keys may not contain such elements and List never shows them.
type LocalStore struct {
	root     string
	readOnly bool
}

// NewLocalStore returns the store rooted at root, creating root (durably)
// when missing.
func NewLocalStore(root string) (*LocalStore, error) {
	if err := MkdirAllDurable(root); err != nil {
		return nil, fmt.Errorf("repository %s: %w", root, err)
	}
	return &LocalStore{root: root}, nil
}

// NewLocalStoreReadOnly returns the store rooted at root for reading only:
// Create and Remove fail with ErrReadOnly.
func NewLocalStoreReadOnly(root string) *LocalStore {
	return &LocalStore{root: root, readOnly: true}
}

// Root is the directory the store keeps its objects in.
func (l *LocalStore) Root() string { return l.root }

// String implements ObjectStore.
func (l *LocalStore) String() string { return l.root }

// Features implements ObjectStore.
func (l *LocalStore) Features() Features { return Features{LocalPaths: true, Rename: true} }

// ValidKey tells whether key is a key an ObjectStore accepts: a relative,
// slash-separated path with no empty, ".", ".." or dot-prefixed element.
func ValidKey(key string) error {
	if key == "" || !fs.ValidPath(key) {
		return fmt.Errorf("invalid object key %q", key)
	}
	for _, e := range strings.Split(key, "/") {
		if strings.HasPrefix(e, ".") {
			return fmt.Errorf("invalid object key %q: an element begins with '.'", key)
		}
	}
	return nil
}

// validMeta checks Meta keys: lower-case ASCII letters, digits and '-'.
func validMeta(m Meta) error {
	for k := range m {
		if k == "" {
			return errors.New("empty meta key")
		}
		for _, c := range k {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("invalid meta key %q", k)
			}
		}
	}
	return nil
}

func (l *LocalStore) path(key string) (string, error) {
	if err := ValidKey(key); err != nil {
		return "", err
	}
	return filepath.Join(l.root, filepath.FromSlash(key)), nil
}

func sidecarPath(p string) string {
	return filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".meta")
}

// sidecar is the JSON document kept beside an object that has Meta.
type sidecar struct {
	Size int64 `json:"size"`
	Meta Meta  `json:"meta"`
}

// Create implements ObjectStore.
func (l *LocalStore) Create(ctx context.Context, key string, meta Meta) (ObjectWriter, error) {
	if l.readOnly {
		return nil, fmt.Errorf("create %s: %w", key, ErrReadOnly)
	}
	p, err := l.path(key)
	if err != nil {
		return nil, err
	}
	if err := validMeta(meta); err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	f, err := CreateTemp(p)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	m := make(Meta, len(meta))
	for k, v := range meta {
		m[k] = v
	}
	return &localWriter{tmp: f, key: key, meta: m}, nil
}

type localWriter struct {
	tmp  *TempFile
	key  string
	meta Meta
	n    int64
	done bool
}

func (w *localWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("write %s: writer is finished", w.key)
	}
	n, err := w.tmp.Write(p)
	w.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("write %s: %w", w.key, err)
	}
	return n, nil
}

func (w *localWriter) Commit(ctx context.Context) (int64, error) {
	if w.done {
		return 0, fmt.Errorf("commit %s: writer is finished", w.key)
	}
	w.done = true
	if err := ctx.Err(); err != nil {
		w.tmp.Abort()
		return 0, fmt.Errorf("commit %s: %w", w.key, err)
	}
	// The sidecar is in place before the object's rename, so the object
	// never shows under its name without its metadata.
	side := sidecarPath(w.tmp.final)
	var err error
	if len(w.meta) > 0 {
		err = writeSidecar(side, sidecar{Size: w.n, Meta: w.meta})
	} else if err = os.Remove(side); errors.Is(err, fs.ErrNotExist) {
		err = nil
	} else if err != nil {
		err = fmt.Errorf("remove old meta: %w", err)
	}
	if err != nil {
		w.tmp.Abort()
		return 0, fmt.Errorf("commit %s: %w", w.key, err)
	}
	if err := w.tmp.Commit(); err != nil {
		return 0, fmt.Errorf("commit %s: %w", w.key, err)
	}
	return w.n, nil
}

func (w *localWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.tmp.Abort()
	return nil
}

// writeSidecar writes a sidecar durably under its final name (the directory
// fsync is the caller's).
func writeSidecar(p string, s sidecar) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	f, err := CreateTemp(p)
	if err == nil {
		if _, err = f.Write(b); err != nil {
			f.Abort()
		} else {
			err = f.Replace()
		}
	}
	if err != nil {
		return fmt.Errorf("write meta: %w", err)
	}
	return nil
}

func readSidecar(p string, size int64) (Meta, error) {
	b, err := os.ReadFile(sidecarPath(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read meta: %w", err)
	}
	var s sidecar
	if err := json.Unmarshal(b, &s); err != nil || s.Size != size {
		// Torn by a crash while the object was being replaced: no meta is
		// better than wrong meta.
		return nil, nil
	}
	return s.Meta, nil
}

// Open implements ObjectStore.
func (l *LocalStore) Open(ctx context.Context, key string) (ObjectReader, error) {
	p, err := l.path(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	if fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", key, ErrNotExist)
	}
	return localReader{File: f, size: fi.Size()}, nil
}

type localReader struct {
	*os.File
	size int64
}

func (r localReader) Size() int64 { return r.size }

// Stat implements ObjectStore.
func (l *LocalStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := l.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	fi, err := os.Stat(p)
	if err == nil && fi.IsDir() {
		err = ErrNotExist
	}
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	meta, err := readSidecar(p, fi.Size())
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime(), Meta: meta}, nil
}

// Remove implements ObjectStore. The removal is not fsynced: an object that
// comes back after a crash is a leftover that the repository's sweep removes.
func (l *LocalStore) Remove(ctx context.Context, key string) error {
	if l.readOnly {
		return fmt.Errorf("remove %s: %w", key, ErrReadOnly)
	}
	p, err := l.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	if err := os.Remove(sidecarPath(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	// Leave no empty directory behind (a backup's, or a WAL directory whose
	// segments expired); the repository root and server directories stay.
	l.removeEmptyDirs(filepath.Dir(p))
	return nil
}

// RemoveTemp implements TempRemover: it removes the temporary files below the
// directory of prefix, and that directory when it is left empty.
func (l *LocalStore) RemoveTemp(ctx context.Context, prefix string) error {
	if l.readOnly {
		return nil
	}
	dir := l.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		p, err := l.path(prefix[:i])
		if err != nil {
			return err
		}
		dir = p
	}
	if err := CleanTemp(dir); err != nil {
		return fmt.Errorf("remove temporary files below %s: %w", prefix, err)
	}
	if dir != l.root {
		l.removeEmptyDirs(dir)
	}
	return nil
}

// removeEmptyDirs removes dir and its parents while they are empty, up to
// (not including) the server directories at the top.
func (l *LocalStore) removeEmptyDirs(dir string) {
	for d := dir; strings.Count(strings.TrimPrefix(d, l.root), string(filepath.Separator)) > 1; d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
}

// List implements ObjectStore. Meta is not filled in (Stat gives it).
func (l *LocalStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	dir := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		dir = prefix[:i]
	}
	start := l.root
	if dir != "" {
		p, err := l.path(dir)
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		start = p
	}
	var infos []ObjectInfo
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != start {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			// Skip directories that cannot hold a key with the prefix.
			if p != start && !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		infos = append(infos, ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
	for _, info := range infos {
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Link makes the local file src the object at key without copying it, by a
// hard link, and makes it durable (the caller has fsynced src). An object
// already at key is replaced. Stores that are plain local files offer it
// (see Linker); src must be on the same file system as the store.
func (l *LocalStore) Link(ctx context.Context, src, key string, meta Meta) (int64, error) {
	if l.readOnly {
		return 0, fmt.Errorf("link %s: %w", key, ErrReadOnly)
	}
	p, err := l.path(key)
	if err != nil {
		return 0, err
	}
	if err := validMeta(meta); err != nil {
		return 0, fmt.Errorf("link %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("link %s: %w", key, err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return 0, fmt.Errorf("link %s: %w", key, err)
	}
	if err := MkdirAllDurable(filepath.Dir(p)); err != nil {
		return 0, fmt.Errorf("link %s: %w", key, err)
	}
	// Link to a temporary name and rename it into place: a link cannot
	// replace an existing file, and a crash must leave old or new, never none.
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp-link")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("link %s: %w", key, err)
	}
	if err := os.Link(src, tmp); err != nil {
		return 0, fmt.Errorf("link %s: %w", key, err)
	}
	side := sidecarPath(p)
	if len(meta) > 0 {
		err = writeSidecar(side, sidecar{Size: fi.Size(), Meta: meta})
	} else if err = os.Remove(side); errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("link %s: %w", key, err)
	}
	// When the object already was a link to src (a crash after an earlier
	// Link, before the caller recorded it), the rename did nothing: two
	// names of one file (rename(2)). The temporary name goes too.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("link %s: %w", key, err)
	}
	if err := SyncDir(filepath.Dir(p)); err != nil {
		return 0, fmt.Errorf("link %s: %w", key, err)
	}
	return fi.Size(), nil
}

// Linker is implemented by stores that can take a local file as an object
// without copying it (LocalStore). Wrappers that transform bytes (encryption)
// do not implement it, so callers fall back to Create and copying.
type Linker interface {
	Link(ctx context.Context, src, key string, meta Meta) (int64, error)
}
