package storage

import (
	"os"
	"path/filepath"
	"testing"
)

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
