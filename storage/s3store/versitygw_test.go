package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/s3store"
	"github.com/walhub/walhub/storage/storetest"
	"github.com/walhub/walhub/test/s3test"
)

func newStore(t *testing.T, srv *s3test.Server, prefix string, tune func(*s3store.Config)) *s3store.Store {
	t.Helper()
	cfg := srv.Config(prefix)
	if tune != nil {
		tune(&cfg)
	}
	st, err := s3store.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func put(t *testing.T, st storage.ObjectStore, key string, data []byte, meta storage.Meta) {
	t.Helper()
	ctx := context.Background()
	w, err := st.Create(ctx, key, meta)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	n, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) {
		t.Fatalf("commit %s: %d bytes stored, want %d", key, n, len(data))
	}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// TestContractOnVersitygw runs the contract every ObjectStore keeps, each
// subtest in a prefix of its own of one bucket.
func TestContractOnVersitygw(t *testing.T) {
	srv := s3test.Start(t)
	n := 0
	storetest.Contract(t, func(t *testing.T) storage.ObjectStore {
		n++
		return newStore(t, srv, fmt.Sprintf("contract/%d", n), nil)
	})
}

// TestStoreOnVersitygw runs the ObjectStore contract against a real
// S3-compatible server: what Commit stores is what Open, Stat and List give
// back, with its metadata; missing objects are ErrNotExist; Abort leaves
// nothing.
func TestStoreOnVersitygw(t *testing.T) {
	srv := s3test.Start(t)
	st := newStore(t, srv, "repo/one", nil)
	ctx := context.Background()

	t.Run("round trip with metadata", func(t *testing.T) {
		data := randomBytes(100_000, 1)
		meta := storage.Meta{"crc32c": "0a1b2c3d", "size": "100000", "start-lsn": "0/3000028"}
		put(t, st, "main/wal/000000010000000000000003.zst", data, meta)
		info, err := st.Stat(ctx, "main/wal/000000010000000000000003.zst")
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != int64(len(data)) || info.Key != "main/wal/000000010000000000000003.zst" || info.ModTime.IsZero() {
			t.Fatalf("stat: %+v", info)
		}
		for k, v := range meta {
			if info.Meta[k] != v {
				t.Fatalf("stat meta %s = %q, want %q (all: %v)", k, info.Meta[k], v, info.Meta)
			}
		}
		r, err := st.Open(ctx, "main/wal/000000010000000000000003.zst")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) || r.Size() != int64(len(data)) {
			t.Fatalf("read back %d bytes (size %d), err %v; want %d equal bytes", len(got), r.Size(), err, len(data))
		}
		// The prefix is where the object is in the bucket.
		if keys := srv.Objects("repo/one/main/wal/"); !slices.Equal(keys, []string{"repo/one/main/wal/000000010000000000000003.zst"}) {
			t.Fatalf("bucket holds %v", keys)
		}
	})

	t.Run("empty object", func(t *testing.T) {
		put(t, st, "main/empty", nil, nil)
		info, err := st.Stat(ctx, "main/empty")
		if err != nil || info.Size != 0 {
			t.Fatalf("stat empty: %+v %v", info, err)
		}
	})

	t.Run("missing is ErrNotExist", func(t *testing.T) {
		if _, err := st.Open(ctx, "main/nope"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("open missing: %v", err)
		}
		if _, err := st.Stat(ctx, "main/nope"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("stat missing: %v", err)
		}
		if err := st.Remove(ctx, "main/nope"); err != nil {
			t.Fatalf("remove missing: %v", err)
		}
	})

	t.Run("list in key order", func(t *testing.T) {
		var want []string
		for i := 20; i > 0; i-- {
			key := fmt.Sprintf("list/b/%03d", i)
			put(t, st, key, []byte(key), storage.Meta{"n": fmt.Sprint(i)})
			want = append(want, key)
		}
		put(t, st, "list/a", []byte("a"), nil)
		put(t, st, "list/bb", []byte("bb"), nil)
		slices.Sort(want)
		var got []string
		err := st.List(ctx, "list/b/", func(info storage.ObjectInfo) error {
			got = append(got, info.Key)
			if info.Size != int64(len(info.Key)) {
				return fmt.Errorf("listed %+v", info)
			}
			return nil
		})
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("list: %v %v, want %v", got, err, want)
		}
		stop := errors.New("stop")
		n := 0
		if err := st.List(ctx, "list/", func(storage.ObjectInfo) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Fatalf("fn's error: %v after %d", err, n)
		}
		for _, k := range want {
			if err := st.Remove(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		got = nil
		st.List(ctx, "list/b/", func(info storage.ObjectInfo) error { got = append(got, info.Key); return nil })
		if len(got) != 0 {
			t.Fatalf("after remove, listed %v", got)
		}
	})

	t.Run("abort leaves nothing", func(t *testing.T) {
		w, err := st.Create(ctx, "abort/small", nil)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("half"))
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Stat(ctx, "abort/small"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("after abort: %v", err)
		}
	})

	t.Run("invalid keys refused", func(t *testing.T) {
		for _, k := range []string{"", "/abs", "a/../b", "a//b", "a/./b"} {
			if _, err := st.Create(ctx, k, nil); err == nil {
				t.Errorf("create %q accepted", k)
			}
		}
	})
}

// TestMultipartUploadBoundedMemory writes 40 MiB through 5 MiB parts, two at
// a time: the object arrives whole with its metadata, no multipart upload
// stays pending, and the writer allocated about its (concurrency+1) part
// buffers, not the object's size.
func TestMultipartUploadBoundedMemory(t *testing.T) {
	srv := s3test.Start(t)
	st := newStore(t, srv, "mp", func(c *s3store.Config) { c.PartSize = 5 << 20; c.Concurrency = 2 })
	ctx := context.Background()
	const size = 40<<20 + 12345
	chunk := randomBytes(1<<20, 7)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	w, err := st.Create(ctx, "main/backups/b1/base.tar.zst", storage.Meta{"kind": "base"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for written := 0; written < size; {
		n := min(len(chunk), size-written)
		// Vary the content so that parts differ.
		chunk[0] = byte(written >> 20)
		if _, err := w.Write(chunk[:n]); err != nil {
			t.Fatal(err)
		}
		written += n
	}
	n, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if n != size {
		t.Fatalf("stored %d bytes, want %d", n, size)
	}
	// 3 part buffers of 5 MiB and the first small one; the SDK's own
	// buffers are small. The object is 40 MiB.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %.1f MiB while writing %.1f MiB", float64(alloc)/(1<<20), float64(size)/(1<<20))
	if alloc > 20<<20 {
		t.Errorf("writer allocated %d bytes for a %d-byte object: memory is not bounded by its parts", alloc, size)
	}
	if p := srv.PendingUploads(); len(p) != 0 {
		t.Fatalf("pending multipart uploads after commit: %v", p)
	}
	info, err := st.Stat(ctx, "main/backups/b1/base.tar.zst")
	if err != nil || info.Size != size || info.Meta["kind"] != "base" {
		t.Fatalf("stat: %+v %v", info, err)
	}
	r, err := st.Open(ctx, "main/backups/b1/base.tar.zst")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, len(chunk))
	for off := int64(0); off < size; off += int64(len(chunk)) {
		n, err := io.ReadFull(r, buf[:min(int64(len(chunk)), size-off)])
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		want := chunk[:n]
		if buf[0] != byte(off>>20) || !bytes.Equal(buf[1:n], want[1:]) {
			t.Fatalf("content differs at offset %d", off)
		}
	}
	if _, err := r.Read(buf); err != io.EOF {
		t.Fatalf("read past the end: %v", err)
	}
}

// TestMultipartAbortLeavesNothing aborts a multipart upload after parts were
// sent, and fails one by cancelling its context: neither leaves an object
// nor a pending multipart upload.
func TestMultipartAbortLeavesNothing(t *testing.T) {
	srv := s3test.Start(t)
	st := newStore(t, srv, "ab", func(c *s3store.Config) { c.PartSize = 5 << 20; c.Concurrency = 2 })
	data := randomBytes(12<<20, 3)

	t.Run("abort", func(t *testing.T) {
		w, err := st.Create(context.Background(), "x/aborted", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if p := srv.PendingUploads(); !slices.Equal(p, []string{"ab/x/aborted"}) {
			t.Fatalf("before abort, pending multipart uploads: %v", p)
		}
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Commit(context.Background()); err == nil {
			t.Fatal("commit after abort succeeded")
		}
	})
	t.Run("context cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		w, err := st.Create(ctx, "x/cancelled", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := w.Commit(context.Background()); !errors.Is(err, context.Canceled) {
			t.Fatalf("commit after cancel: %v", err)
		}
	})
	if keys := srv.Objects("ab/"); len(keys) != 0 {
		t.Fatalf("objects left: %v", keys)
	}
	if p := srv.PendingUploads(); len(p) != 0 {
		t.Fatalf("pending multipart uploads left: %v", p)
	}
}

// TestRangeReads reads a multipart object through Seek, ReadAt and short
// reads across part boundaries.
func TestRangeReads(t *testing.T) {
	srv := s3test.Start(t)
	st := newStore(t, srv, "", func(c *s3store.Config) { c.PartSize = 5 << 20 })
	data := randomBytes(11<<20+77, 9)
	put(t, st, "r/obj", data, nil)
	r, err := st.Open(context.Background(), "r/obj")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, c := range []struct {
		off int64
		n   int
	}{{0, 10}, {5<<20 - 3, 10}, {int64(len(data)) - 5, 5}, {1, 1 << 20}, {10 << 20, 1<<20 + 77}} {
		buf := make([]byte, c.n)
		if n, err := r.ReadAt(buf, c.off); err != nil || n != c.n || !bytes.Equal(buf, data[c.off:c.off+int64(c.n)]) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", c.off, c.n, n, err)
		}
		if _, err := r.Seek(c.off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if n, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, data[c.off:c.off+int64(c.n)]) {
			t.Fatalf("Seek(%d)+Read(%d) = %d, %v", c.off, c.n, n, err)
		}
	}
	buf := make([]byte, 10)
	if n, err := r.ReadAt(buf, int64(len(data))-4); n != 4 || err != io.EOF || !bytes.Equal(buf[:4], data[len(data)-4:]) {
		t.Fatalf("ReadAt across the end = %d, %v", n, err)
	}
	if pos, err := r.Seek(-3, io.SeekEnd); err != nil || pos != int64(len(data))-3 {
		t.Fatalf("Seek from end: %d %v", pos, err)
	}
	if rest, err := io.ReadAll(r); err != nil || !bytes.Equal(rest, data[len(data)-3:]) {
		t.Fatalf("read to end: %q %v", rest, err)
	}
}

// TestWrongSecretNotInErrors uses a wrong secret: the error says access was
// refused and names the bucket, and neither it nor the store's name holds
// the secret.
func TestWrongSecretNotInErrors(t *testing.T) {
	srv := s3test.Start(t)
	const secret = "not-the-secret-5b9e"
	st := newStore(t, srv, "p", func(c *s3store.Config) { c.SecretAccessKey = secret })
	_, err := st.Stat(context.Background(), "x")
	if err == nil {
		t.Fatal("stat with a wrong secret succeeded")
	}
	w, _ := st.Create(context.Background(), "x", nil)
	w.Write([]byte("x"))
	_, cerr := w.Commit(context.Background())
	if cerr == nil {
		t.Fatal("put with a wrong secret succeeded")
	}
	cfg := srv.Config("p")
	cfg.SecretAccessKey = secret
	for _, s := range []string{err.Error(), cerr.Error(), st.String(), fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg)} {
		if strings.Contains(s, secret) || strings.Contains(s, s3test.SecretAccessKey) {
			t.Errorf("secret in %q", s)
		}
	}
	if !strings.Contains(cerr.Error(), "s3://walhub/p") {
		t.Errorf("error does not name the bucket: %v", cerr)
	}
	t.Logf("error: %v", cerr)
}

// TestRemoveTempAbortsDeadUploads: a writer that died mid multipart upload
// (never committed nor aborted) leaves a pending upload; RemoveTemp of its
// prefix aborts it and leaves other prefixes' uploads alone.
func TestRemoveTempAbortsDeadUploads(t *testing.T) {
	srv := s3test.Start(t)
	st := newStore(t, srv, "rt", func(c *s3store.Config) { c.PartSize = 5 << 20; c.Concurrency = 1 })
	data := randomBytes(6<<20, 4)
	for _, key := range []string{"main/backups/b1/base.tar.zst", "main/backups/b2/base.tar.zst"} {
		w, err := st.Create(context.Background(), key, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		// Neither Commit nor Abort: the writer "died".
	}
	// A dead writer has no request in flight. These writers still send
	// their first part in the background: an abort that overtook it left
	// the upload pending in versitygw (the part arrived after the abort).
	for deadline := time.Now().Add(10 * time.Second); srv.PartsUploaded() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the writers' first parts did not arrive; pending uploads: %v", srv.PendingUploads())
		}
	}
	if p := srv.PendingUploads(); len(p) != 2 {
		t.Fatalf("pending uploads: %v", p)
	}
	if err := st.RemoveTemp(context.Background(), "main/backups/b1/"); err != nil {
		t.Fatal(err)
	}
	if p := srv.PendingUploads(); !slices.Equal(p, []string{"rt/main/backups/b2/base.tar.zst"}) {
		t.Fatalf("after RemoveTemp of b1, pending uploads: %v", p)
	}
	if err := st.RemoveTemp(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if p := srv.PendingUploads(); len(p) != 0 {
		t.Fatalf("after RemoveTemp of everything, pending uploads: %v", p)
	}
}
