package basebackup

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitReady waits until p has n files created and not yet taken.
func waitReady(t *testing.T, p *precreator, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		ready := p.ready
		p.mu.Unlock()
		if ready == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d files ready, want %d", ready, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPrecreatorCreatesAheadInManifestOrderAndLeavesTheRestToTheWriters(t *testing.T) {
	target, ts := t.TempDir(), t.TempDir()
	m := &Manifest{Files: []ManifestFile{
		{Path: "backup_label"}, {Path: "base/5/1"}, {Path: "base/5/sub/2"}, {Path: controlFile},
		{Path: "../outside"}, {Path: "pg_tblspc/16400/PG_15/5/3"}, {Path: "global/1262"},
	}}
	roots := []archiveRoot{{dir: target}, {dir: ts, prefix: "pg_tblspc/16400/"}}
	var mu sync.Mutex
	p := newPrecreator(context.Background(), m, roots, nil, &mu)
	p.ahead = 2
	// A writer that comes first creates its file itself.
	if p.take(filepath.Join(target, "backup_label")) {
		t.Fatal("take of a file not created yet said it was")
	}
	p.start()
	waitReady(t, p, 2) // base/5/1 and base/5/sub/2, then it waits
	if _, err := os.Stat(filepath.Join(ts, "PG_15/5/3")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("created more than 2 files ahead: %v", err)
	}
	for _, f := range []string{"base/5/1", "base/5/sub/2"} {
		if fi, err := os.Stat(filepath.Join(target, f)); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}
	if !p.take(filepath.Join(target, "base/5/1")) {
		t.Fatal("take of a file created ahead said it was not")
	}
	waitReady(t, p, 2) // global/1262 now: base's files come first
	if !p.take(filepath.Join(target, "base/5/sub/2")) || !p.take(filepath.Join(target, "global/1262")) {
		t.Fatal("take of a file created ahead said it was not")
	}
	// A second entry of the same path creates it again, and fails there.
	if p.take(filepath.Join(target, "base/5/1")) {
		t.Fatal("a file was taken twice")
	}
	waitReady(t, p, 1) // then the tablespace's
	if !p.take(filepath.Join(ts, "PG_15/5/3")) {
		t.Fatal("take of a file created ahead said it was not")
	}
	dirs := p.stop()
	slices.Sort(dirs)
	want := []string{filepath.Join(target, "base"), filepath.Join(target, "base/5"), filepath.Join(target, "base/5/sub"),
		filepath.Join(target, "global"), filepath.Join(ts, "PG_15"), filepath.Join(ts, "PG_15/5")}
	if !slices.Equal(dirs, want) {
		t.Errorf("made directories %q, want %q", dirs, want)
	}
	for _, f := range []string{filepath.Join(target, "backup_label"), filepath.Join(target, controlFile),
		filepath.Join(filepath.Dir(target), "outside")} {
		if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s was created ahead: %v", f, err)
		}
	}
}

func TestUnpackFsyncsTheDirectoriesMadeAhead(t *testing.T) {
	// A large file first keeps the reader busy while the precreator makes
	// base/ (the archive lists base/5/ but not base/) for the files after it.
	repo := openTestRepo(t, t.TempDir())
	files := append([]fakeFile{{"global/big", dataDirFiles(8 << 20)[122].data}}, dataDirFiles(0)...)
	b := storeArchive(t, repo, "b1", files, files, 0)
	target, m, x := newTestExtractor(t, repo, b)
	x.ahead = m
	if err := x.extractArchives(context.Background(), RepoOpener(repo, b), archives(b), target, nil); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && !slices.Contains(x.dirs, p) {
			t.Errorf("directory %s is not fsynced", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAFailedUnpackCreatesNothingMoreAfterItReturns(t *testing.T) {
	// The manifest lists a file the archive does not have, and many after
	// it: the precreator creates ahead, the unpack fails, and once it has
	// returned nothing more appears (restore removes what is there).
	repo := openTestRepo(t, t.TempDir())
	files := dataDirFiles(4 << 20)
	listed := append([]fakeFile{{"base/1/missing", nil}}, files...)
	b := storeArchive(t, repo, "b1", files, listed, 0)
	target := filepath.Join(t.TempDir(), "data")
	err := UnpackFrom(context.Background(), RepoOpener(repo, b), b, target, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "base/1/missing is in the manifest but not in the backup") {
		t.Fatalf("err = %v", err)
	}
	list := func() []string {
		var names []string
		filepath.WalkDir(target, func(p string, _ fs.DirEntry, err error) error {
			names = append(names, p)
			return nil
		})
		return names
	}
	before := list()
	time.Sleep(50 * time.Millisecond)
	if after := list(); !slices.Equal(before, after) {
		t.Errorf("files appeared after the unpack returned: %d entries, then %d", len(before), len(after))
	}
	if _, err := os.Stat(filepath.Join(target, controlFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed unpack left global/pg_control: %v", err)
	}
}
