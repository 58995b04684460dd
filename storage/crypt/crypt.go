// Package crypt encrypts a repository at rest: Store wraps any
// storage.ObjectStore so that every object (WAL segments, history files,
// backup archives, manifests, backup info) is stored as an age file
// (filippo.io/age, https://age-encryption.org/v1) encrypted to the keyring's
// current key, and decrypted and authenticated when read. Callers see
// plaintext and do not change; compression happens before, so the wrapper sees
// already-compressed bytes.
//
// age's payload is ChaCha20-Poly1305 in 64 KiB chunks (STREAM), each chunk
// authenticated and the last one flagged, so a flipped byte, a truncation or a
// reordering is detected and nothing unauthenticated is ever returned. Writing
// holds one chunk in memory; reading holds one or two (age's ReaderAt keeps the
// last decrypted chunk). Each object has its own random file key, wrapped for
// the recipient in the header (one X25519 exchange per object, tens of µs).
//
// Sizes: ObjectInfo.Size (Stat, List), ObjectReader.Size and Commit's return
// value are all the plaintext size, the bytes a caller wrote and reads back,
// exactly as without encryption. The stored object is larger by a fixed
// header (age's header for one X25519 recipient plus the nonce, HeaderSize
// bytes) and 16 bytes per 64 KiB chunk (0.02%); List needs no metadata to
// report plaintext sizes.
//
// Each object's metadata records the ID of the key that encrypted it
// (MetaKeyID; Stat and List leave it out of Meta, so the wrapper is
// transparent, and StatKey reads it), so keys can be rotated without
// rewriting: new objects use the current key while objects under previous keys
// stay readable. An object no configured key opens is a *KeyError naming the
// key it needs.
package crypt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"

	"filippo.io/age"
	"github.com/walhub/walhub/storage"
)

// MetaKeyID is the metadata key, added to every object, that records the ID of
// the key that encrypted it (see KeyID). Callers may not set it.
const MetaKeyID = "crypt-key-id"

// HeaderSize is what precedes the first chunk of every object: age's header
// for one X25519 recipient (intro, one stanza, MAC: 168 bytes in age v1) and
// the 16-byte nonce. It is part of the repository's format: Create refuses to
// write an object whose header differs (a future age adding stanzas would be
// caught by the first write, in the tests), so sizes computed from it are exact.
const HeaderSize = 184

// age's STREAM parameters (age-encryption.org/v1): 64 KiB plaintext chunks,
// each followed by a 16-byte Poly1305 tag; a 16-byte nonce after the header.
const (
	chunkSize    = 64 << 10
	tagSize      = 16
	encChunkSize = chunkSize + tagSize
	// headPrefetch is how much of an object Open reads at once to parse the
	// header (one X25519 stanza is about 200 bytes).
	headPrefetch = 4 << 10
)

// ErrNotEncrypted is returned (wrapped) for an object that was not written
// through the encryption layer (no age header, or no metadata of its own).
// An encrypted repository serves nothing it cannot authenticate.
var ErrNotEncrypted = errors.New("not an encrypted object")

// Store is a storage.ObjectStore that encrypts into, and decrypts from, the
// store it wraps.
type Store struct {
	inner storage.ObjectStore
	keys  *Keyring
}

// New wraps inner: objects are encrypted to keys' current key and decrypted
// with any of its keys.
func New(inner storage.ObjectStore, keys *Keyring) *Store {
	return &Store{inner: inner, keys: keys}
}

// Inner is the wrapped store (holding ciphertext).
func (s *Store) Inner() storage.ObjectStore { return s.inner }

// Keys is the keyring the store encrypts and decrypts with.
func (s *Store) Keys() *Keyring { return s.keys }

// String implements storage.ObjectStore.
func (s *Store) String() string {
	return fmt.Sprintf("%s (encrypted, key %s)", s.inner.String(), s.keys.CurrentID())
}

// Features implements storage.ObjectStore: the inner store's. (Store does
// not implement storage.Linker: a local file linked in would be stored in the
// clear, so callers copy it through Create.)
func (s *Store) Features() storage.Features {
	return s.inner.Features()
}

// Remove implements storage.ObjectStore.
func (s *Store) Remove(ctx context.Context, key string) error {
	return s.inner.Remove(ctx, key)
}

// Create implements storage.ObjectStore: what is written is encrypted, one
// 64 KiB chunk at a time, into an object of the inner store.
func (s *Store) Create(ctx context.Context, key string, meta storage.Meta) (storage.ObjectWriter, error) {
	if _, ok := meta[MetaKeyID]; ok {
		return nil, fmt.Errorf("create %s: metadata key %s is reserved for the encryption layer", key, MetaKeyID)
	}
	// age writes the header and nonce as soon as the stream starts: catch
	// them, to check their size before the inner object exists.
	sw := &switchWriter{}
	enc, err := age.Encrypt(sw, s.keys.current.recipient)
	if err != nil {
		return nil, fmt.Errorf("create %s: start encryption: %w", key, err)
	}
	head := sw.buf.Bytes()
	if int64(len(head)) != HeaderSize {
		return nil, fmt.Errorf("create %s: age header of %d bytes, want %d", key, len(head), HeaderSize)
	}
	m := maps.Clone(meta)
	if m == nil {
		m = storage.Meta{}
	}
	m[MetaKeyID] = s.keys.current.id
	w, err := s.inner.Create(ctx, key, m)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(head); err != nil {
		w.Abort()
		return nil, fmt.Errorf("create %s: write header: %w", key, err)
	}
	sw.w = w
	return &writer{key: key, enc: enc, inner: w}, nil
}

// switchWriter buffers what is written until w is set, then writes to w.
type switchWriter struct {
	buf bytes.Buffer
	w   io.Writer
}

func (s *switchWriter) Write(p []byte) (int, error) {
	if s.w == nil {
		return s.buf.Write(p)
	}
	return s.w.Write(p)
}

type writer struct {
	key   string
	enc   io.WriteCloser
	inner storage.ObjectWriter
	n     int64 // plaintext bytes written
	done  bool
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("write %s: object already committed or aborted", w.key)
	}
	n, err := w.enc.Write(p)
	w.n += int64(n)
	return n, err
}

// Commit seals the last chunk and commits the inner object. It returns the
// plaintext size, like Stat.
func (w *writer) Commit(ctx context.Context) (int64, error) {
	if w.done {
		return 0, fmt.Errorf("commit %s: object already committed or aborted", w.key)
	}
	if err := w.enc.Close(); err != nil {
		w.Abort()
		return 0, fmt.Errorf("commit %s: seal last chunk: %w", w.key, err)
	}
	w.done = true
	stored, err := w.inner.Commit(ctx)
	if err != nil {
		return 0, err
	}
	if want := storedSize(w.n); stored != want {
		return 0, fmt.Errorf("commit %s: the store holds %d bytes, want %d for %d bytes of plaintext", w.key, stored, want, w.n)
	}
	return w.n, nil
}

func (w *writer) Abort() error {
	w.done = true
	return w.inner.Abort()
}

// storedSize is the size of the object holding plain bytes.
func storedSize(plain int64) int64 {
	chunks := (plain + chunkSize - 1) / chunkSize
	if chunks == 0 {
		chunks = 1 // empty plaintext is one empty, tagged chunk
	}
	return HeaderSize + plain + chunks*tagSize
}

// plainSize inverts storedSize, refusing sizes no object of ours can have.
func plainSize(stored int64) (int64, error) {
	payload := stored - HeaderSize
	chunks := (payload + encChunkSize - 1) / encChunkSize
	plain := payload - chunks*tagSize
	if payload < tagSize || storedSize(plain) != stored {
		return 0, fmt.Errorf("%w: %d bytes is not the size of an encrypted object", ErrNotEncrypted, stored)
	}
	return plain, nil
}

// plainInfo turns the inner store's description of an object into the
// plaintext one: plaintext size, the caller's metadata only.
func plainInfo(info storage.ObjectInfo) (storage.ObjectInfo, error) {
	plain, err := plainSize(info.Size)
	if err != nil {
		return info, fmt.Errorf("%s: %w", info.Key, err)
	}
	info.Size = plain
	if _, ok := info.Meta[MetaKeyID]; ok {
		info.Meta = maps.Clone(info.Meta)
		delete(info.Meta, MetaKeyID)
	}
	return info, nil
}

// Stat implements storage.ObjectStore: Size is the plaintext size and Meta
// what the caller gave Create (StatKey also tells the key). An object without
// a key ID was not written through this layer: ErrNotEncrypted.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	info, _, err := s.StatKey(ctx, key)
	return info, err
}

// StatKey is Stat that also returns the ID of the key that encrypted the
// object, as its metadata records it, in one request to the inner store (for
// the catalog when it is rebuilt from the store, and for messages).
func (s *Store) StatKey(ctx context.Context, key string) (storage.ObjectInfo, string, error) {
	info, err := s.inner.Stat(ctx, key)
	if err != nil {
		return info, "", err
	}
	id := info.Meta[MetaKeyID]
	if id == "" {
		return info, "", fmt.Errorf("stat %s: %w (no %s in its metadata)", key, ErrNotEncrypted, MetaKeyID)
	}
	info, err = plainInfo(info)
	if err != nil {
		return info, "", fmt.Errorf("stat %w", err)
	}
	return info, id, nil
}

// CurrentKeyID returns the ID of the key store encrypts new objects with, ""
// when store is not an encrypting Store: what the catalog records beside each
// object stored.
func CurrentKeyID(store storage.ObjectStore) string {
	if s, ok := store.(*Store); ok {
		return s.keys.CurrentID()
	}
	return ""
}

// List implements storage.ObjectStore; sizes are plaintext sizes, computed
// from the stored size (listings carry no metadata on S3). Files that were not
// written through this layer (a local working area sharing the repository's
// directory keeps .partial and state files there) are listed as they are, with
// their own size when it is not one an encrypted object can have; Stat and
// Open refuse them with ErrNotEncrypted. MarkerKey is not listed.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	return s.inner.List(ctx, prefix, func(info storage.ObjectInfo) error {
		if info.Key == MarkerKey {
			return nil // the layer's own, not an object of the repository
		}
		if plain, err := plainInfo(info); err == nil {
			info = plain
		}
		return fn(info)
	})
}

// Open implements storage.ObjectStore. It authenticates the header and the
// final chunk (so a truncated object, or one under a key not configured, fails
// here, before any byte is read), then decrypts as the caller reads: every
// chunk is authenticated before a byte of it is returned.
func (s *Store) Open(ctx context.Context, key string) (storage.ObjectReader, error) {
	in, err := s.inner.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	r, err := s.open(ctx, key, in)
	if err != nil {
		in.Close()
		return nil, err
	}
	return r, nil
}

func (s *Store) open(ctx context.Context, key string, in storage.ObjectReader) (*reader, error) {
	size := in.Size()
	src := &seqReaderAt{r: in, pos: -1, lastEnd: -1}
	head := make([]byte, min(size, headPrefetch))
	if n, err := in.ReadAt(head, 0); n < len(head) {
		return nil, fmt.Errorf("decrypt %s: read header: %w", key, err)
	}
	src.head = head
	header, err := age.ExtractHeader(io.NewSectionReader(src, 0, size))
	if err != nil {
		return nil, fmt.Errorf("decrypt %s: %w: %v", key, ErrNotEncrypted, err)
	}
	fileKey, err := age.DecryptHeader(header, s.keys.identities("")...)
	if err != nil {
		if _, ok := errors.AsType[*age.NoIdentityMatchError](err); ok {
			return nil, s.keyError(ctx, key)
		}
		return nil, fmt.Errorf("decrypt %s: header: %w", key, err)
	}
	plain, plainSize, err := age.DecryptReaderAt(src, size, age.NewInjectedFileKeyIdentity(fileKey))
	if err != nil {
		return nil, fmt.Errorf("decrypt %s: %w", key, err)
	}
	return &reader{key: key, inner: in, plain: plain, size: plainSize}, nil
}

// keyError describes an object no configured key opens, with the key ID its
// metadata records (read only now: the usual case needs no Stat).
func (s *Store) keyError(ctx context.Context, key string) error {
	e := &KeyError{Key: key, Configured: s.keys.IDs()}
	if info, err := s.inner.Stat(ctx, key); err == nil {
		e.KeyID = info.Meta[MetaKeyID]
	}
	return e
}

// reader decrypts one object. Read serves from one decrypted chunk at a time;
// ReadAt goes straight to age's ReaderAt (safe for concurrent use).
type reader struct {
	key    string
	inner  storage.ObjectReader
	plain  io.ReaderAt
	size   int64
	pos    int64
	buf    []byte // the decrypted chunk at bufOff
	bufOff int64
}

func (r *reader) Size() int64 { return r.size }

func (r *reader) Close() error { return r.inner.Close() }

func (r *reader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if r.buf == nil || r.pos < r.bufOff || r.pos >= r.bufOff+int64(len(r.buf)) {
		off := r.pos - r.pos%chunkSize
		if cap(r.buf) == 0 {
			r.buf = make([]byte, chunkSize)
		}
		r.buf = r.buf[:min(chunkSize, r.size-off)]
		if n, err := r.plain.ReadAt(r.buf, off); n < len(r.buf) {
			r.buf = nil
			return 0, fmt.Errorf("decrypt %s: %w", r.key, err)
		}
		r.bufOff = off
	}
	n := copy(p, r.buf[r.pos-r.bufOff:])
	r.pos += int64(n)
	return n, nil
}

func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", r.key, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	n, err := r.plain.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("decrypt %s: %w", r.key, err)
	}
	return n, err
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, fmt.Errorf("seek %s: invalid whence %d", r.key, whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek %s: negative position %d", r.key, offset)
	}
	r.pos = offset
	return offset, nil
}

// seqReaderAt is the ciphertext source of age's ReaderAt. Reads of whole
// chunks, and reads that continue the previous one, become one sequential
// stream of the inner reader (Seek once, then Read: one request on S3 for a
// whole object); other reads (the header, the final chunk, a jump) are single
// ReadAt calls. The first bytes, read once at Open, are served from memory.
type seqReaderAt struct {
	mu      sync.Mutex
	r       storage.ObjectReader
	head    []byte
	pos     int64 // where r's Read continues; -1 before the first Seek
	lastEnd int64 // end of the previous read
}

func (s *seqReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= 0 && off+int64(len(p)) <= int64(len(s.head)) {
		return copy(p, s.head[off:]), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sequential := off == s.lastEnd || len(p) >= encChunkSize
	s.lastEnd = -1
	if off != s.pos && !sequential {
		n, err := s.r.ReadAt(p, off)
		s.lastEnd = off + int64(n)
		return n, err
	}
	if off != s.pos {
		if _, err := s.r.Seek(off, io.SeekStart); err != nil {
			s.pos = -1
			return 0, err
		}
		s.pos = off
	}
	n, err := io.ReadFull(s.r, p)
	s.pos += int64(n)
	s.lastEnd = s.pos
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	} else if err != nil && err != io.EOF {
		s.pos = -1 // the reader's position is unknown after a failed read
	}
	return n, err
}
