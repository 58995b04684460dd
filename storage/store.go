package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// ObjectStore is the one interface every archived byte goes through: WAL
// segments, history files, backup archives, manifests and backup info. Local
// files and S3-compatible buckets implement it; an encryption layer wraps one.
//
// Keys are relative, slash-separated paths built by this package's layout
// functions only (SegmentPath, BackupDir, ...). Every method takes a context
// and honours its cancellation.
type ObjectStore interface {
	// Create starts writing the object at key. Nothing is visible under key
	// until Commit returns nil; Abort (or a failed Commit) leaves nothing.
	// meta is small metadata stored with the object (S3 user metadata; the
	// local implementation keeps a sidecar file) and returned by Stat, so the
	// catalog can be rebuilt from the store alone.
	Create(ctx context.Context, key string, meta Meta) (ObjectWriter, error)
	// Open opens an object for reading, with random access (the hub serves
	// Range requests). A missing object is an error wrapping ErrNotExist.
	Open(ctx context.Context, key string) (ObjectReader, error)
	// Stat describes an object; a missing one wraps ErrNotExist.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Remove deletes an object; removing a missing object is not an error.
	Remove(ctx context.Context, key string) error
	// List calls fn for every object whose key starts with prefix, in key
	// order. Temporary or uncommitted objects are never listed. ObjectInfo.Meta
	// may be nil in a listing (S3 lists no user metadata): ask Stat for it.
	// An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Features tells what the store can do, for callers that would otherwise
	// assume it.
	Features() Features
	// String names the store for messages and logs, never with credentials.
	String() string
}

// ObjectWriter is an object being written. Write may be called from one
// goroutine at a time; Commit makes the whole object durable and visible;
// Abort discards it. After either, the writer is finished; calling Abort after
// Commit is a no-op, so `defer w.Abort()` is the idiom.
type ObjectWriter interface {
	io.Writer
	// Commit makes the object durable (fsynced, or acknowledged by the bucket)
	// and visible under its key. It returns the bytes stored.
	Commit(ctx context.Context) (int64, error)
	// Abort discards everything written; nothing is left under the key or as
	// a temporary (an S3 multipart upload is aborted).
	Abort() error
}

// ObjectReader reads one stored object.
type ObjectReader interface {
	io.ReadSeekCloser
	io.ReaderAt
	// Size is the object's stored size in bytes.
	Size() int64
}

// Meta is small string metadata stored with an object: what its catalog row
// needs when the catalog is rebuilt from the repository (checksum, sizes,
// compression, key ID). Keys are lower-case ASCII letters, digits and '-'.
type Meta map[string]string

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
	Meta    Meta
}

// Features are the capabilities of a store that callers ask for instead of
// assuming.
type Features struct {
	// LocalPaths: objects are plain files under a local directory, on the
	// same file system as a local working area made for it (the store may
	// then implement Linker).
	LocalPaths bool
	// Atomic rename of a committed object is cheap (false on S3: a copy).
	Rename bool
	// MultipartUpload: large objects are uploaded in parts, in parallel.
	MultipartUpload bool
}

// ErrReadOnly is returned (wrapped) by a store opened read-only when asked to
// write or remove.
var ErrReadOnly = errors.New("repository is read-only")

// TempRemover is implemented by stores in which a writer that died (kill -9)
// can leave something behind that is not an object: the local store's
// temporary files, an S3 store's incomplete multipart uploads. RemoveTemp
// removes those below prefix. Call it only where no writer can be active (a
// failed or interrupted backup, under the server's lock).
type TempRemover interface {
	RemoveTemp(ctx context.Context, prefix string) error
}
