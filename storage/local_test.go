package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/storetest"
)

func TestLocalStoreContract(t *testing.T) {
	storetest.Contract(t, func(t *testing.T) storage.ObjectStore {
		s, err := storage.NewLocalStore(filepath.Join(t.TempDir(), "repo"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestFaultyContract(t *testing.T) {
	storetest.Contract(t, func(t *testing.T) storage.ObjectStore {
		s, err := storage.NewLocalStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return storetest.NewFaulty(s)
	})
}

// The meta sidecar is a plain dot-file beside the object: no extended
// attributes, never listed, and ignored when a crash left it describing
// another version of the object.
func TestLocalStoreMetaSidecar(t *testing.T) {
	root := t.TempDir()
	s, err := storage.NewLocalStore(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, _ := s.Create(ctx, "srv/wal/seg", storage.Meta{"crc32c": "00ff00ff"})
	io.WriteString(w, "segment")
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "srv/wal"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != ".seg.meta seg" {
		t.Fatalf("directory holds %v", names)
	}
	// A crash while replacing the object: new data, old sidecar.
	if err := os.WriteFile(filepath.Join(root, "srv/wal/seg"), []byte("other data"), 0o640); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ctx, "srv/wal/seg")
	if err != nil || info.Meta != nil {
		t.Fatalf("Stat with a stale sidecar = %+v, %v; want no meta", info, err)
	}
}

func TestLocalStoreLink(t *testing.T) {
	root := t.TempDir()
	s, _ := storage.NewLocalStore(root)
	ctx := context.Background()
	src := filepath.Join(root, "srv", "wal", "seg.partial")
	os.MkdirAll(filepath.Dir(src), 0o750)
	os.WriteFile(src, []byte("0123456789"), 0o640)
	for range 2 { // the second replaces the first, as after a crash
		n, err := s.Link(ctx, src, "srv/wal/seg", storage.Meta{"crc32c": "1"})
		if err != nil || n != 10 {
			t.Fatalf("Link = %d, %v", n, err)
		}
	}
	// The second found the object already a link to src: a rename between
	// two links to one file does nothing (rename(2)), and left the
	// temporary link behind (walhub serve killed after storing a segment,
	// before cataloging it: TestServeResumesAfterKill9WithoutGap).
	entries, _ := os.ReadDir(filepath.Dir(src))
	for _, e := range entries {
		if storage.IsTemp(e.Name()) {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
	info, err := s.Stat(ctx, "srv/wal/seg")
	if err != nil || info.Size != 10 || info.Meta["crc32c"] != "1" {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	var keys []string
	s.List(ctx, "", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil })
	if strings.Join(keys, " ") != "srv/wal/seg srv/wal/seg.partial" {
		t.Fatalf("List = %v", keys)
	}
}

func TestLocalStoreReadOnly(t *testing.T) {
	s := storage.NewLocalStoreReadOnly(t.TempDir())
	if _, err := s.Create(context.Background(), "a", nil); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("Create: %v", err)
	}
	if err := s.Remove(context.Background(), "a"); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("Remove: %v", err)
	}
}

// Removing the last object of a directory removes the directory, and a
// writer racing with that still commits.
func TestLocalStoreRemoveTidiesDirectories(t *testing.T) {
	root := t.TempDir()
	s, _ := storage.NewLocalStore(root)
	ctx := context.Background()
	for _, k := range []string{"srv/backups/b1/base.tar", "srv/backups/b1/backup_manifest"} {
		w, _ := s.Create(ctx, k, nil)
		w.Commit(ctx)
	}
	for _, k := range []string{"srv/backups/b1/base.tar", "srv/backups/b1/backup_manifest"} {
		if err := s.Remove(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "srv/backups/b1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backup directory left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "srv")); err != nil {
		t.Fatalf("server directory removed: %v", err)
	}
}

func TestFaultyStore(t *testing.T) {
	ctx := context.Background()
	base, _ := storage.NewLocalStore(t.TempDir())
	f := storetest.NewFaulty(base)

	f.SetFreeSpace(10)
	w, _ := f.Create(ctx, "a", nil)
	n, err := w.Write([]byte("0123456789abc"))
	if n != 10 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write into a full store = %d, %v", n, err)
	}
	w.Abort()
	w, _ = f.Create(ctx, "b", nil)
	if _, err := w.Write([]byte("0123456789")); err != nil {
		t.Fatalf("aborted bytes not given back: %v", err)
	}
	w.Commit(ctx)
	f.Heal()

	f.FailWriteAt("srv/wal/", 5, syscall.EIO)
	w, _ = f.Create(ctx, "srv/wal/x", nil)
	if n, err := w.Write([]byte("0123456789")); n != 5 || !errors.Is(err, syscall.EIO) {
		t.Fatalf("write failing at byte 5 = %d, %v", n, err)
	}
	w.Abort()
	w, _ = f.Create(ctx, "srv/other", nil)
	if _, err := w.Write([]byte("0123456789")); err != nil {
		t.Fatalf("a key outside the prefix failed: %v", err)
	}
	w.Abort()
	f.Heal()

	f.SetDelay(50 * time.Millisecond)
	start := time.Now()
	w, _ = f.Create(ctx, "slow", nil)
	w.Write([]byte("x"))
	w.Commit(ctx)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("slow store took %v for create, write, commit", d)
	}
	if f.Failures() != 2 || f.Committed() != 2 {
		t.Fatalf("Failures %d, Committed %d", f.Failures(), f.Committed())
	}
}

// BenchmarkLocalStoreCommit measures what the meta sidecar costs a segment:
// one 1 MiB object created, written and committed (fsyncs included), with
// and without meta.
func BenchmarkLocalStoreCommit(b *testing.B) {
	data := make([]byte, 1<<20)
	for _, withMeta := range []bool{false, true} {
		b.Run(map[bool]string{false: "nometa", true: "meta"}[withMeta], func(b *testing.B) {
			s, err := storage.NewLocalStore(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			var meta storage.Meta
			if withMeta {
				meta = storage.Meta{"checksum": "crc32c:01234567", "size": "1048576", "system-id": "7300000000000000001"}
			}
			ctx := context.Background()
			b.SetBytes(int64(len(data)))
			for i := 0; b.Loop(); i++ {
				w, err := s.Create(ctx, fmt.Sprintf("main/wal/0000000100000000/%024X", i), meta)
				if err != nil {
					b.Fatal(err)
				}
				w.Write(data)
				if _, err := w.Commit(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
