// Package storetest holds what tests of storage.ObjectStore implementations
// and their users share: Contract, the behaviour every store must have, and
// Faulty, a store wrapper that injects faults (a full disk, a write failing
// at byte N, a slow store) for unit tests.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"sync"
	"testing"

	"github.com/walhub/walhub/storage"
)

// Contract runs the behaviour every storage.ObjectStore must have against
// stores made by newStore, each one new and empty (it may be called once per
// subtest).
func Contract(t *testing.T, newStore func(t *testing.T) storage.ObjectStore) {
	t.Run("CommitMakesVisible", func(t *testing.T) {
		s, ctx := newStore(t), context.Background()
		w, err := s.Create(ctx, "srv/wal/a", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		if _, err := io.WriteString(w, "hello, "); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, "world"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, "srv/wal/a"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("Stat before Commit: %v, want ErrNotExist", err)
		}
		if keys := listKeys(t, s, ""); len(keys) != 0 {
			t.Fatalf("List before Commit shows %v", keys)
		}
		n, err := w.Commit(ctx)
		if err != nil || n != 12 {
			t.Fatalf("Commit = %d, %v; want 12, nil", n, err)
		}
		if err := w.Abort(); err != nil {
			t.Fatalf("Abort after Commit: %v", err)
		}
		if got := read(t, s, "srv/wal/a"); got != "hello, world" {
			t.Fatalf("read %q", got)
		}
		info, err := s.Stat(ctx, "srv/wal/a")
		if err != nil || info.Size != 12 || info.Key != "srv/wal/a" {
			t.Fatalf("Stat = %+v, %v", info, err)
		}
	})

	t.Run("AbortLeavesNothing", func(t *testing.T) {
		s, ctx := newStore(t), context.Background()
		w, err := s.Create(ctx, "srv/backups/b1/base.tar", storage.Meta{"size": "3"})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(bytes.Repeat([]byte("x"), 1<<20))
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Commit(ctx); err == nil {
			t.Fatal("Commit after Abort succeeded")
		}
		if _, err := s.Stat(ctx, "srv/backups/b1/base.tar"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("Stat after Abort: %v, want ErrNotExist", err)
		}
		if keys := listKeys(t, s, ""); len(keys) != 0 {
			t.Fatalf("List after Abort shows %v", keys)
		}
	})

	t.Run("CanceledCommitLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		w, err := s.Create(ctx, "srv/wal/c", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		io.WriteString(w, "data")
		cancel()
		if _, err := w.Commit(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Commit with a canceled context: %v", err)
		}
		if _, err := s.Stat(context.Background(), "srv/wal/c"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("Stat after a canceled Commit: %v, want ErrNotExist", err)
		}
	})

	t.Run("MetaRoundTrip", func(t *testing.T) {
		s, ctx := newStore(t), context.Background()
		meta := storage.Meta{"crc32c": "0a1b2c3d", "size": "16777216", "compression": "zstd", "key-id": "k-1"}
		put(t, s, "srv/wal/0000000100000000/000000010000000000000001.zst", "seg", meta)
		info, err := s.Stat(ctx, "srv/wal/0000000100000000/000000010000000000000001.zst")
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(info.Meta) != fmt.Sprint(meta) {
			t.Fatalf("Stat meta %v, want %v", info.Meta, meta)
		}
		put(t, s, "srv/wal/none", "x", nil)
		if info, err := s.Stat(ctx, "srv/wal/none"); err != nil || len(info.Meta) != 0 {
			t.Fatalf("Stat of an object without meta: %+v, %v", info, err)
		}
	})

	t.Run("OverwriteReplaces", func(t *testing.T) {
		s, ctx := newStore(t), context.Background()
		put(t, s, "srv/wal/o", "first version", storage.Meta{"v": "1"})
		put(t, s, "srv/wal/o", "second", storage.Meta{"v": "2"})
		if got := read(t, s, "srv/wal/o"); got != "second" {
			t.Fatalf("read %q after overwrite", got)
		}
		info, err := s.Stat(ctx, "srv/wal/o")
		if err != nil || info.Size != 6 || info.Meta["v"] != "2" {
			t.Fatalf("Stat after overwrite: %+v, %v", info, err)
		}
		put(t, s, "srv/wal/o", "third", nil)
		if info, err := s.Stat(ctx, "srv/wal/o"); err != nil || len(info.Meta) != 0 {
			t.Fatalf("Stat after an overwrite without meta: %+v, %v", info, err)
		}
		if keys := listKeys(t, s, ""); strings.Join(keys, " ") != "srv/wal/o" {
			t.Fatalf("List after overwrites: %v", keys)
		}
	})

	t.Run("EmptyObject", func(t *testing.T) {
		s, ctx := newStore(t), context.Background()
		put(t, s, "srv/empty", "", nil)
		info, err := s.Stat(ctx, "srv/empty")
		if err != nil || info.Size != 0 {
			t.Fatalf("Stat = %+v, %v", info, err)
		}
		if got := read(t, s, "srv/empty"); got != "" {
			t.Fatalf("read %q", got)
		}
	})

	t.Run("RandomAccess", func(t *testing.T) {
		s, ctx := newStore(t), context.Background()
		data := make([]byte, 6<<20+123) // more than one S3 part of 5 MiB
		rand.New(rand.NewSource(1)).Read(data)
		w, err := s.Create(ctx, "srv/backups/b/base.tar.zst", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 100_000)
			if _, err := w.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if n, err := w.Commit(ctx); err != nil || n != int64(len(data)) {
			t.Fatalf("Commit = %d, %v", n, err)
		}
		r, err := s.Open(ctx, "srv/backups/b/base.tar.zst")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if r.Size() != int64(len(data)) {
			t.Fatalf("Size %d, want %d", r.Size(), len(data))
		}
		buf := make([]byte, 1000)
		if _, err := r.ReadAt(buf, 5<<20+7); err != nil || !bytes.Equal(buf, data[5<<20+7:5<<20+1007]) {
			t.Fatalf("ReadAt: %v or wrong bytes", err)
		}
		if _, err := r.Seek(int64(len(data))-10, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		tail, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(tail, data[len(data)-10:]) {
			t.Fatalf("read after Seek: %v or wrong bytes", err)
		}
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(all, data) {
			t.Fatalf("ReadAll: %v or wrong bytes (%d of %d)", err, len(all), len(data))
		}
	})

	t.Run("MissingObjects", func(t *testing.T) {
		s, ctx := newStore(t), context.Background()
		if _, err := s.Open(ctx, "srv/wal/missing"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("Open missing: %v, want ErrNotExist", err)
		}
		if _, err := s.Stat(ctx, "srv/wal/missing"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("Stat missing: %v, want ErrNotExist", err)
		}
		if err := s.Remove(ctx, "srv/wal/missing"); err != nil {
			t.Fatalf("Remove missing: %v", err)
		}
		put(t, s, "srv/wal/x", "x", storage.Meta{"a": "b"})
		if err := s.Remove(ctx, "srv/wal/x"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Open(ctx, "srv/wal/x"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("Open removed: %v, want ErrNotExist", err)
		}
		if _, err := s.Stat(ctx, "srv/wal/x"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("Stat removed: %v, want ErrNotExist", err)
		}
		if keys := listKeys(t, s, ""); len(keys) != 0 {
			t.Fatalf("List after Remove shows %v", keys)
		}
		// A "directory" is not an object.
		put(t, s, "srv/backups/b/f", "x", nil)
		if _, err := s.Stat(ctx, "srv/backups/b"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("Stat of a key prefix: %v, want ErrNotExist", err)
		}
	})

	t.Run("ListPrefixOrder", func(t *testing.T) {
		s, ctx := newStore(t), context.Background()
		keys := []string{
			"a/wal/0000000100000000/000000010000000000000002.zst",
			"a/wal/0000000100000000/000000010000000000000001.zst",
			"a/wal/0000000100000001/000000010000000100000000.zst",
			"a/wal/00000002.history",
			"a/backups/20260101T000000-1/base.tar.zst",
			"a/backups/20260101T000000-1/backup_manifest",
			"a/server.info",
			"a.c",
			"ab/x",
			"b/wal/00000002.history",
		}
		for i, k := range keys {
			put(t, s, k, strings.Repeat("x", i), nil)
		}
		cases := []struct{ prefix, want string }{
			{"", "a.c a/backups/20260101T000000-1/backup_manifest a/backups/20260101T000000-1/base.tar.zst a/server.info " +
				"a/wal/0000000100000000/000000010000000000000001.zst a/wal/0000000100000000/000000010000000000000002.zst " +
				"a/wal/0000000100000001/000000010000000100000000.zst a/wal/00000002.history ab/x b/wal/00000002.history"},
			{"a/", "a/backups/20260101T000000-1/backup_manifest a/backups/20260101T000000-1/base.tar.zst a/server.info " +
				"a/wal/0000000100000000/000000010000000000000001.zst a/wal/0000000100000000/000000010000000000000002.zst " +
				"a/wal/0000000100000001/000000010000000100000000.zst a/wal/00000002.history"},
			{"a/wal/0000000100000000/", "a/wal/0000000100000000/000000010000000000000001.zst a/wal/0000000100000000/000000010000000000000002.zst"},
			{"a/wal/00000001", "a/wal/0000000100000000/000000010000000000000001.zst a/wal/0000000100000000/000000010000000000000002.zst " +
				"a/wal/0000000100000001/000000010000000100000000.zst"},
			{"a/wal/0000000100000000/000000010000000000000002", "a/wal/0000000100000000/000000010000000000000002.zst"},
			{"a", "a.c a/backups/20260101T000000-1/backup_manifest a/backups/20260101T000000-1/base.tar.zst a/server.info " +
				"a/wal/0000000100000000/000000010000000000000001.zst a/wal/0000000100000000/000000010000000000000002.zst " +
				"a/wal/0000000100000001/000000010000000100000000.zst a/wal/00000002.history ab/x"},
			{"c/", ""},
			{"a/wal/9", ""},
		}
		for _, c := range cases {
			if got := strings.Join(listKeys(t, s, c.prefix), " "); got != c.want {
				t.Errorf("List(%q) =\n  %s\nwant\n  %s", c.prefix, got, c.want)
			}
		}
		sizes := map[string]int64{}
		s.List(ctx, "", func(o storage.ObjectInfo) error { sizes[o.Key] = o.Size; return nil })
		for i, k := range keys {
			if sizes[k] != int64(i) {
				t.Errorf("List size of %s = %d, want %d", k, sizes[k], i)
			}
		}
		stop := errors.New("stop")
		calls := 0
		err := s.List(ctx, "a/", func(storage.ObjectInfo) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("List with a failing fn: %v after %d calls", err, calls)
		}
	})

	t.Run("ConcurrentWriters", func(t *testing.T) {
		s, ctx := newStore(t), context.Background()
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := fmt.Sprintf("srv/wal/d%d/obj", i%2)
				key += fmt.Sprint(i)
				w, err := s.Create(ctx, key, storage.Meta{"i": fmt.Sprint(i)})
				if err != nil {
					errs <- err
					return
				}
				defer w.Abort()
				w.Write(bytes.Repeat([]byte{byte(i)}, 100_000))
				if i%3 == 0 {
					return // aborted
				}
				if _, err := w.Commit(ctx); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := strings.Join(listKeys(t, s, "srv/"), " "); got != "srv/wal/d0/obj2 srv/wal/d0/obj4 srv/wal/d1/obj1 srv/wal/d1/obj5 srv/wal/d1/obj7" {
			t.Fatalf("List = %s", got)
		}
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		s, ctx := newStore(t), context.Background()
		for _, key := range []string{"", "/abs", "../x", "a/../../x", "a//b", "./a", "a/", "a/.hidden"} {
			if w, err := s.Create(ctx, key, nil); err == nil {
				w.Abort()
				t.Errorf("Create(%q) accepted", key)
			}
			if _, err := s.Open(ctx, key); err == nil || errors.Is(err, storage.ErrNotExist) {
				t.Errorf("Open(%q): %v, want an invalid-key error", key, err)
			}
		}
	})

	t.Run("String", func(t *testing.T) {
		if newStore(t).String() == "" {
			t.Fatal("String is empty")
		}
	})
}

// put stores data at key, failing the test on error.
func put(t *testing.T, s storage.ObjectStore, key, data string, meta storage.Meta) {
	t.Helper()
	ctx := context.Background()
	w, err := s.Create(ctx, key, meta)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := io.WriteString(w, data); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, s storage.ObjectStore, key string) string {
	t.Helper()
	r, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != r.Size() {
		t.Fatalf("%s: read %d bytes, Size says %d", key, len(b), r.Size())
	}
	return string(b)
}

func listKeys(t *testing.T, s storage.ObjectStore, prefix string) []string {
	t.Helper()
	var keys []string
	if err := s.List(context.Background(), prefix, func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return keys
}
