package crypt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/storetest"
)

func newIdentity(t testing.TB) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newKeyring(t testing.TB, current *age.X25519Identity, previous ...*age.X25519Identity) *Keyring {
	t.Helper()
	kr, err := NewKeyring(current, previous...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// plaintext returns n deterministic pseudo-random bytes containing marker
// every 4 KiB (or once, if shorter).
func plaintext(n int, marker string) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	for i := 0; i+len(marker) <= n; i += 4096 {
		copy(b[i:], marker)
	}
	return b
}

// newLocal is a LocalStore in a temporary directory.
func newLocal(t testing.TB) *storage.LocalStore {
	t.Helper()
	s, err := storage.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// path is where a LocalStore keeps the object at key.
func path(s *storage.LocalStore, key string) string {
	return filepath.Join(s.Root(), filepath.FromSlash(key))
}

func TestContract(t *testing.T) {
	storetest.Contract(t, func(t *testing.T) storage.ObjectStore {
		return New(newLocal(t), newKeyring(t, newIdentity(t)))
	})
}

func put(t testing.TB, s storage.ObjectStore, key string, meta storage.Meta, data []byte) int64 {
	t.Helper()
	ctx := context.Background()
	w, err := s.Create(ctx, key, meta)
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
	return n
}

func readAll(s storage.ObjectStore, key string) ([]byte, error) {
	r, err := s.Open(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func TestRoundTripKeepsBytesSizesAndMeta(t *testing.T) {
	ctx := context.Background()
	id := newIdentity(t)
	kr := newKeyring(t, id)
	inner := newLocal(t)
	s := New(inner, kr)
	const marker = "MARKER-crypt-roundtrip"
	for _, n := range []int{0, 1, len(marker), chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 5, 4 * chunkSize} {
		key := "srv/wal/obj-" + strings.Repeat("x", n%7)
		key = key + "-" + string(rune('a'+n%26))
		data := plaintext(n, marker)
		if got := put(t, s, key, storage.Meta{"crc32c": "1234"}, data); got != int64(n) {
			t.Fatalf("size %d: Commit returned %d", n, got)
		}
		raw, err := os.ReadFile(path(inner, key))
		if err != nil {
			t.Fatal(err)
		}
		if n >= len(marker) && bytes.Contains(raw, []byte(marker)) {
			t.Fatalf("size %d: the stored object contains the plaintext marker", n)
		}
		info, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != int64(n) || len(info.Meta) != 1 || info.Meta["crc32c"] != "1234" {
			t.Fatalf("size %d: Stat = %+v", n, info)
		}
		if info2, id, err := s.StatKey(ctx, key); err != nil || id != kr.CurrentID() || info2.Size != info.Size || len(info2.Meta) != 1 {
			t.Fatalf("size %d: StatKey = %+v, %s, %v; want key %s", n, info2, id, err, kr.CurrentID())
		}
		got, err := readAll(s, key)
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back differs", n)
		}

		r, err := s.Open(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if r.Size() != int64(n) {
			t.Fatalf("size %d: reader Size %d", n, r.Size())
		}
		if end, err := r.Seek(0, io.SeekEnd); err != nil || end != int64(n) {
			t.Fatalf("size %d: Seek end = %d, %v", n, end, err)
		}
		rng := rand.New(rand.NewPCG(uint64(n), 2))
		for range 20 {
			if n == 0 {
				break
			}
			off := rng.IntN(n)
			l := rng.IntN(min(n-off, 3*chunkSize)) + 1
			p := make([]byte, l)
			if m, err := r.ReadAt(p, int64(off)); m != l || (err != nil && err != io.EOF) || !bytes.Equal(p, data[off:off+l]) {
				t.Fatalf("size %d: ReadAt(%d, %d) = %d, %v", n, l, off, m, err)
			}
			if _, err := r.Seek(int64(off), io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(r, p); err != nil || !bytes.Equal(p, data[off:off+l]) {
				t.Fatalf("size %d: Seek(%d)+Read(%d): %v", n, off, l, err)
			}
		}
		r.Close()
	}
	var listed int
	err := s.List(ctx, "srv/", func(info storage.ObjectInfo) error {
		st, err := s.Stat(ctx, info.Key)
		if err != nil || st.Size != info.Size {
			t.Errorf("List size %d, Stat size %d (%v)", info.Size, st.Size, err)
		}
		listed++
		return nil
	})
	if err != nil || listed == 0 {
		t.Fatalf("List: %d objects, %v", listed, err)
	}
	if CurrentKeyID(s) != kr.CurrentID() || CurrentKeyID(inner) != "" {
		t.Errorf("CurrentKeyID: %q over the wrapper, %q over the plain store", CurrentKeyID(s), CurrentKeyID(inner))
	}
	if _, ok := storage.ObjectStore(s).(storage.Linker); ok {
		t.Error("the wrapper offers Link, which would store a file in the clear")
	}
}

// heapPeak samples the heap in use until stop is closed.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// chachaReader yields deterministic pseudo-random bytes.
type chachaReader struct{ r *rand.ChaCha8 }

func (c chachaReader) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestLargeObjectStreamsInBoundedMemory(t *testing.T) {
	const size = 96 << 20
	ctx := context.Background()
	s := New(newLocal(t), newKeyring(t, newIdentity(t)))
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	stop := make(chan struct{})
	peak := heapPeak(stop)

	w, err := s.Create(ctx, "big", nil)
	if err != nil {
		t.Fatal(err)
	}
	src := io.LimitReader(chachaReader{rand.NewChaCha8([32]byte{7})}, size)
	if _, err := io.CopyBuffer(w, src, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := io.LimitReader(chachaReader{rand.NewChaCha8([32]byte{7})}, size)
	if err := sameStream(r, want); err != nil {
		t.Fatal(err)
	}
	close(stop)
	grew := int64(<-peak) - int64(base.HeapInuse)
	t.Logf("%d MiB object: heap in use grew by at most %.1f MiB", size>>20, float64(grew)/(1<<20))
	if grew > 24<<20 {
		t.Fatalf("heap in use grew by %d MiB for a %d MiB object: not streaming", grew>>20, size>>20)
	}
}

// sameStream compares two readers in 256 KiB steps.
func sameStream(got, want io.Reader) error {
	a, b := make([]byte, 256<<10), make([]byte, 256<<10)
	var off int64
	for {
		n, errA := io.ReadFull(got, a)
		m, errB := io.ReadFull(want, b)
		if n != m || !bytes.Equal(a[:n], b[:m]) {
			return fmt.Errorf("streams differ near offset %d", off)
		}
		off += int64(n)
		if errB == io.EOF || errB == io.ErrUnexpectedEOF {
			if errA != errB {
				return errors.New("got ended with " + errA.Error())
			}
			return nil
		}
		if errA != nil {
			return errA
		}
	}
}

// TestTamperedObjectIsRefused flips one byte at several places, or cuts the
// object short: Open or a read fails, and no read ever returns bytes that
// differ from what was written.
func TestTamperedObjectIsRefused(t *testing.T) {
	ctx := context.Background()
	inner := newLocal(t)
	s := New(inner, newKeyring(t, newIdentity(t)))
	data := plaintext(3*chunkSize+100, "tamper")
	put(t, s, "obj", nil, data)
	pristine, err := os.ReadFile(path(inner, "obj"))
	if err != nil {
		t.Fatal(err)
	}
	hs := len(pristine) - (len(data) + 4*tagSize)
	cases := []struct {
		name   string
		mangle func(b []byte) []byte
	}{
		{"flip in header", func(b []byte) []byte { b[40] ^= 1; return b }},
		{"flip in nonce", func(b []byte) []byte { b[hs-3] ^= 1; return b }},
		{"flip in first chunk", func(b []byte) []byte { b[hs+1000] ^= 0x80; return b }},
		{"flip in first tag", func(b []byte) []byte { b[hs+chunkSize+3] ^= 1; return b }},
		{"flip in last chunk", func(b []byte) []byte { b[len(b)-50] ^= 1; return b }},
		{"flip last byte", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"truncate at a chunk boundary", func(b []byte) []byte { return b[:hs+2*encChunkSize] }},
		{"truncate mid-chunk", func(b []byte) []byte { return b[:hs+2*encChunkSize+77] }},
		{"truncate the last byte", func(b []byte) []byte { return b[:len(b)-1] }},
		{"swap two chunks", func(b []byte) []byte {
			c := append([]byte(nil), b...)
			copy(c[hs:], b[hs+encChunkSize:hs+2*encChunkSize])
			copy(c[hs+encChunkSize:], b[hs:hs+encChunkSize])
			return c
		}},
		{"append a chunk", func(b []byte) []byte { return append(b, b[hs:hs+encChunkSize]...) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mangle(append([]byte(nil), pristine...))
			if err := os.WriteFile(path(inner, "obj"), b, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := readAll(s, "obj")
			if err == nil {
				t.Fatal("tampered object read without error")
			}
			if len(got) > 0 && !bytes.Equal(got, data[:len(got)]) {
				t.Fatal("bytes that were never written were returned")
			}
			r, err := s.Open(ctx, "obj")
			if err != nil {
				return
			}
			defer r.Close()
			p := make([]byte, len(data))
			if n, err := r.ReadAt(p, 0); err == nil || !bytes.Equal(p[:n], data[:n]) {
				t.Fatalf("ReadAt of a tampered object: %d bytes, %v", n, err)
			}
		})
	}
}

func TestWrongKeyErrorNamesTheKeyID(t *testing.T) {
	inner := newLocal(t)
	a, b := newIdentity(t), newIdentity(t)
	writer := New(inner, newKeyring(t, a))
	put(t, writer, "obj", nil, []byte("secret"))
	reader := New(inner, newKeyring(t, b))
	got, err := readAll(reader, "obj")
	if got != nil {
		t.Fatalf("returned %q", got)
	}
	ke, ok := errors.AsType[*KeyError](err)
	if !ok || !errors.Is(err, ErrWrongKey) {
		t.Fatalf("error %v is not a KeyError", err)
	}
	aID := KeyID(a.Recipient().String())
	if ke.KeyID != aID || !strings.Contains(err.Error(), aID) || !strings.Contains(err.Error(), KeyID(b.Recipient().String())) {
		t.Fatalf("error %q does not name key %s and the configured one", err, aID)
	}
	if strings.Contains(err.Error(), "AGE-SECRET-KEY") {
		t.Fatal("the error holds a secret key")
	}
}

func TestRotationReadsObjectsUnderBothKeys(t *testing.T) {
	ctx := context.Background()
	inner := newLocal(t)
	old, cur := newIdentity(t), newIdentity(t)
	put(t, New(inner, newKeyring(t, old)), "a", nil, []byte("under the old key"))
	rotated := New(inner, newKeyring(t, cur, old))
	put(t, rotated, "b", nil, []byte("under the new key"))
	for key, want := range map[string]string{"a": "under the old key", "b": "under the new key"} {
		got, err := readAll(rotated, key)
		if err != nil || string(got) != want {
			t.Fatalf("%s: %q, %v", key, got, err)
		}
	}
	_, ia, _ := rotated.StatKey(ctx, "a")
	_, ib, _ := rotated.StatKey(ctx, "b")
	if ia != KeyID(old.Recipient().String()) || ib != KeyID(cur.Recipient().String()) {
		t.Fatalf("key IDs recorded: a %s, b %s", ia, ib)
	}
	// Without the old key, its object is refused by name.
	_, err := readAll(New(inner, newKeyring(t, cur)), "a")
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), ia) {
		t.Fatalf("old object without the old key: %v", err)
	}
}

func TestPlainObjectIsRefused(t *testing.T) {
	ctx := context.Background()
	inner := newLocal(t)
	put(t, inner, "plain", storage.Meta{"crc32c": "1"}, []byte("not encrypted at all, just text"))
	s := New(inner, newKeyring(t, newIdentity(t)))
	if _, err := readAll(s, "plain"); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("Open of a plain object: %v", err)
	}
	if _, err := s.Stat(ctx, "plain"); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("Stat of a plain object: %v", err)
	}
	var listed []storage.ObjectInfo
	if err := s.List(ctx, "", func(o storage.ObjectInfo) error { listed = append(listed, o); return nil }); err != nil || len(listed) != 1 || listed[0].Size != 31 {
		t.Fatalf("List over a plain object: %+v, %v; want it as it is", listed, err)
	}
}

func TestAbortLeavesNothingAndReservedMetaIsRefused(t *testing.T) {
	ctx := context.Background()
	inner := newLocal(t)
	s := New(inner, newKeyring(t, newIdentity(t)))
	w, err := s.Create(ctx, "gone", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("abc"))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := inner.Stat(ctx, "gone"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("after Abort: %v", err)
	}
	ents, _ := os.ReadDir(inner.Root())
	if len(ents) != 0 {
		t.Fatalf("after Abort the store holds %v", ents)
	}
	if _, err := s.Create(ctx, "x", storage.Meta{MetaKeyID: "forged"}); err == nil {
		t.Fatal("Create accepted a reserved metadata key")
	}
}

func TestConcurrentReadAt(t *testing.T) {
	s := New(newLocal(t), newKeyring(t, newIdentity(t)))
	data := plaintext(10*chunkSize+3, "c")
	put(t, s, "obj", nil, data)
	r, err := s.Open(context.Background(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var wg sync.WaitGroup
	var bad atomic.Int32
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			p := make([]byte, 5000)
			for range 200 {
				off := rng.IntN(len(data) - len(p))
				if n, err := r.ReadAt(p, int64(off)); n != len(p) || (err != nil && err != io.EOF) || !bytes.Equal(p, data[off:off+len(p)]) {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d concurrent ReadAt calls returned wrong bytes", bad.Load())
	}
}

func TestLoadKeyFromFileAndEnvironment(t *testing.T) {
	id := newIdentity(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "key.txt")
	content := "# created: today\n# public key: " + id.Recipient().String() + "\n" + id.String() + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WALHUB_TEST_KEY", id.String())
	for _, src := range []string{"file:" + path, "env:WALHUB_TEST_KEY"} {
		kr, err := LoadKeyring(src, nil)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if kr.CurrentID() != KeyID(id.Recipient().String()) {
			t.Fatalf("%s: key ID %s", src, kr.CurrentID())
		}
	}
	secret := id.String()
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte(secret[:len(secret)-3]+"qqq\n"), 0o600)
	two := filepath.Join(dir, "two.txt")
	os.WriteFile(two, []byte(secret+"\n"+newIdentity(t).String()+"\n"), 0o600)
	t.Setenv("WALHUB_TEST_BAD", secret[:20])
	for _, src := range []string{"file:" + bad, "file:" + two, "file:" + filepath.Join(dir, "missing"), "file:relative/key", "env:WALHUB_TEST_BAD", "env:WALHUB_TEST_UNSET", secret, "plain text"} {
		_, err := LoadKeyring(src, nil)
		if err == nil {
			t.Fatalf("%s: accepted", src)
		}
		if strings.Contains(err.Error(), secret[16:30]) {
			t.Fatalf("the error for a bad key source shows key material: %v", err)
		}
	}
	if _, err := LoadKeyring("file:"+path, []string{"env:WALHUB_TEST_KEY"}); err == nil {
		t.Fatal("the same key twice was accepted")
	}
}

// BenchmarkEncryptDecrypt measures the wrapper alone over the file-backed
// fake: go test -run '^$' -bench . ./storage/crypt
func BenchmarkEncryptDecrypt(b *testing.B) {
	const size = 64 << 20
	data := plaintext(size, "bench")
	for _, enc := range []bool{false, true} {
		var s storage.ObjectStore = newLocal(b)
		name := "plain"
		if enc {
			s, name = New(s, newKeyring(b, newIdentity(b))), "encrypted"
		}
		b.Run(name+"/write", func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				put(b, s, "obj", nil, data)
			}
		})
		b.Run(name+"/read", func(b *testing.B) {
			b.SetBytes(size)
			buf := make([]byte, 256<<10)
			for b.Loop() {
				r, err := s.Open(context.Background(), "obj")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}
