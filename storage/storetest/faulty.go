package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/walhub/walhub/storage"
)

// Faulty wraps an ObjectStore and injects faults, for unit tests of what is
// built on a store: a full disk (writes fail with ENOSPC once the free space
// set is used up), a write failing at byte N of an object, and a slow store
// (every write and commit delayed). The zero settings inject nothing; they
// may be changed while the store is in use.
type Faulty struct {
	storage.ObjectStore

	mu sync.Mutex
	// free is the bytes writes may still take; negative is unlimited.
	free      int64
	failAt    []failRule
	delay     time.Duration
	failures  int
	committed int
	writes    int
}

type failRule struct {
	prefix string
	at     int64
	err    error
}

// NewFaulty wraps s; it injects nothing until told to.
func NewFaulty(s storage.ObjectStore) *Faulty {
	return &Faulty{ObjectStore: s, free: -1}
}

// SetFreeSpace makes the store full once n more bytes are written: a write
// beyond fails with ENOSPC, as a full file system does. Aborting a writer
// and removing an object give their bytes back. A negative n is unlimited.
func (f *Faulty) SetFreeSpace(n int64) {
	f.mu.Lock()
	f.free = n
	f.mu.Unlock()
}

// FailWriteAt makes writing any object whose key starts with prefix fail with
// err when its byte at offset n would be written (the bytes before it are
// written).
func (f *Faulty) FailWriteAt(prefix string, n int64, err error) {
	f.mu.Lock()
	f.failAt = append(f.failAt, failRule{prefix: prefix, at: n, err: err})
	f.mu.Unlock()
}

// SetDelay delays every write, commit, open and stat by d: a slow store.
func (f *Faulty) SetDelay(d time.Duration) {
	f.mu.Lock()
	f.delay = d
	f.mu.Unlock()
}

// Heal takes away every fault: unlimited space, no failing writes, no delay.
func (f *Faulty) Heal() {
	f.mu.Lock()
	f.free, f.failAt, f.delay = -1, nil, 0
	f.mu.Unlock()
}

// Failures is how many writes failed by an injected fault.
func (f *Faulty) Failures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failures
}

// Writes is how many Write calls the objects written through the wrapper
// got, all objects together.
func (f *Faulty) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// Committed is how many objects were committed through the wrapper.
func (f *Faulty) Committed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.committed
}

func (f *Faulty) wait(ctx context.Context) error {
	f.mu.Lock()
	d := f.delay
	f.mu.Unlock()
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Create implements storage.ObjectStore.
func (f *Faulty) Create(ctx context.Context, key string, meta storage.Meta) (storage.ObjectWriter, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	w, err := f.ObjectStore.Create(ctx, key, meta)
	if err != nil {
		return nil, err
	}
	return &faultyWriter{f: f, w: w, key: key}, nil
}

// Open implements storage.ObjectStore.
func (f *Faulty) Open(ctx context.Context, key string) (storage.ObjectReader, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	return f.ObjectStore.Open(ctx, key)
}

// Stat implements storage.ObjectStore.
func (f *Faulty) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := f.wait(ctx); err != nil {
		return storage.ObjectInfo{}, err
	}
	return f.ObjectStore.Stat(ctx, key)
}

// Remove implements storage.ObjectStore.
func (f *Faulty) Remove(ctx context.Context, key string) error {
	info, err := f.ObjectStore.Stat(ctx, key)
	if err := f.ObjectStore.Remove(ctx, key); err != nil {
		return err
	}
	if err == nil {
		f.mu.Lock()
		if f.free >= 0 {
			f.free += info.Size
		}
		f.mu.Unlock()
	}
	return nil
}

// RemoveTemp implements storage.TempRemover when the wrapped store does.
func (f *Faulty) RemoveTemp(ctx context.Context, prefix string) error {
	if t, ok := f.ObjectStore.(storage.TempRemover); ok {
		return t.RemoveTemp(ctx, prefix)
	}
	return nil
}

// String implements storage.ObjectStore.
func (f *Faulty) String() string { return "faulty " + f.ObjectStore.String() }

type faultyWriter struct {
	f   *Faulty
	w   storage.ObjectWriter
	key string
	n   int64
	// taken is what this writer took from the free space.
	taken int64
}

func (w *faultyWriter) Write(p []byte) (int, error) {
	f := w.f
	if err := f.wait(context.Background()); err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.writes++
	allow, ferr := int64(len(p)), error(nil)
	for _, r := range f.failAt {
		if strings.HasPrefix(w.key, r.prefix) && w.n+allow > r.at {
			allow, ferr = max(0, r.at-w.n), r.err
		}
	}
	if f.free >= 0 && allow > f.free {
		allow, ferr = f.free, syscall.ENOSPC
	}
	if f.free >= 0 {
		f.free -= allow
		w.taken += allow
	}
	if ferr != nil {
		f.failures++
	}
	f.mu.Unlock()
	n, err := w.w.Write(p[:allow])
	w.n += int64(n)
	if err != nil {
		return n, err
	}
	if ferr != nil {
		return n, fmt.Errorf("write %s at byte %d: %w", w.key, w.n, ferr)
	}
	return n, nil
}

func (w *faultyWriter) Commit(ctx context.Context) (int64, error) {
	if err := w.f.wait(ctx); err != nil {
		w.Abort()
		return 0, err
	}
	n, err := w.w.Commit(ctx)
	if err != nil {
		w.giveBack()
		return n, err
	}
	w.f.mu.Lock()
	w.f.committed++
	w.f.mu.Unlock()
	w.taken = 0
	return n, nil
}

func (w *faultyWriter) Abort() error {
	w.giveBack()
	return w.w.Abort()
}

func (w *faultyWriter) giveBack() {
	w.f.mu.Lock()
	if w.f.free >= 0 {
		w.f.free += w.taken
	}
	w.taken = 0
	w.f.mu.Unlock()
}
