package storage

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestPutIsAtomic(t *testing.T) {
	l := Local{Root: t.TempDir()}
	ctx := context.Background()
	n, err := l.Put(ctx, "main/wal/a", func(w io.Writer) error { _, err := io.WriteString(w, "hello"); return err })
	if err != nil || n != 5 {
		t.Fatalf("Put = %d, %v", n, err)
	}
	boom := errors.New("boom")
	if _, err := l.Put(ctx, "main/wal/b", func(w io.Writer) error { io.WriteString(w, "half"); return boom }); !errors.Is(err, boom) {
		t.Fatalf("failing Put err = %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(l.Root, "main/wal"))
	if len(entries) != 1 || entries[0].Name() != "a" {
		t.Fatalf("after a failed Put the directory holds %v, want only a", entries)
	}
	f, err := l.Open("main/wal/a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "hello" {
		t.Fatalf("read %q", b)
	}
	if err := l.Remove("main/wal/a"); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove("main/wal/a"); err != nil {
		t.Fatalf("removing a missing file: %v", err)
	}
	if _, err := l.Open("main/wal/a"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("open removed: %v", err)
	}
}

func TestPathRefusesEscapes(t *testing.T) {
	l := Local{Root: "/repo"}
	for _, rel := range []string{"../x", "/etc/passwd", "a/../../x", "", "a//b", "./a"} {
		if _, err := l.Path(rel); err == nil {
			t.Errorf("Path(%q) accepted", rel)
		}
	}
}

func TestCleanTemp(t *testing.T) {
	dir := t.TempDir()
	f, err := CreateTemp(filepath.Join(dir, "x", "seg"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := CleanTemp(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "x"))
	if len(entries) != 0 {
		t.Fatalf("left %v", entries)
	}
}
