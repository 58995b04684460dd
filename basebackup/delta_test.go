package basebackup

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestDeltaKeepsMatchingFilesRewritesTheRestAndRemovesExtras(t *testing.T) {
	repo := openTestRepo(t, t.TempDir())
	backup := map[string]string{"PG_VERSION": "15\n", "base/1/1259": strings.Repeat("page", 4096),
		"base/1/2000": strings.Repeat("a", 100), "global/pg_control": "control"}
	b := storeFakeBackup(t, repo, "b1", backup, backup)

	dir := t.TempDir()
	existing := map[string]string{"PG_VERSION": "15\n", "base/1/1259": strings.Repeat("page", 4096),
		"base/1/2000": strings.Repeat("b", 100), // same size, other bytes
		"base/1/9999": "dropped table", "base/5/1": "a database created after the backup",
		"pg_wal/000000010000000000000003": "diverged WAL", "postmaster.pid": "4242\n"}
	for name, content := range existing {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	inode := func(name string) uint64 {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	keptInode := inode("base/1/1259")

	st, err := DeltaFrom(context.Background(), RepoOpener(repo, b), b, dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.KeptFiles != 2 || st.KeptBytes != 3+4*4096 || st.WrittenFiles != 2 || st.WrittenBytes != 100+7 ||
		st.FullBytes != 3+4*4096+100+7 {
		t.Errorf("stats %+v", st)
	}
	slices.Sort(st.Removed)
	if want := []string{"base/1/9999", "base/5/", "pg_wal/", "postmaster.pid"}; !slices.Equal(st.Removed, want) {
		t.Errorf("removed %v, want %v", st.Removed, want)
	}
	if inode("base/1/1259") != keptInode {
		t.Error("a file that matched the manifest was rewritten")
	}
	if err := VerifyDir(context.Background(), dir); err != nil {
		t.Fatalf("after the delta restore: %v", err)
	}
	// A second delta restore writes nothing.
	st, err = DeltaFrom(context.Background(), RepoOpener(repo, b), b, dir, nil, nil)
	if err != nil || st.WrittenFiles != 0 || st.KeptFiles != 4 || len(st.Removed) != 0 {
		t.Fatalf("second delta: %+v %v", st, err)
	}
}
