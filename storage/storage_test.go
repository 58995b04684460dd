package storage

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// WriteFile leaves exactly the new bytes under the final name, with the mode
// and owner asked for, and no temporary file beside it.
func TestWriteFile(t *testing.T) {
	root := os.Geteuid() == 0
	cases := []struct {
		name     string
		existing string // "" for none
		perm     fs.FileMode
		uid, gid int
	}{
		{"new file", "", 0o600, -1, -1},
		{"replaces an existing file", "old and longer content", 0o640, -1, -1},
		{"new directory", "", 0o600, -1, -1},
		{"given away", "old", 0o600, 4321, 4322},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.uid != -1 && !root {
				t.Skip("only root can give files away")
			}
			dir := t.TempDir()
			p := filepath.Join(dir, "f")
			if c.name == "new directory" {
				p = filepath.Join(dir, "sub", "f")
			}
			if c.existing != "" {
				if err := os.WriteFile(p, []byte(c.existing), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFile(p, []byte("new"), c.perm, c.uid, c.gid); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != "new" {
				t.Fatalf("content %q, %v", got, err)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != c.perm {
				t.Errorf("mode %v, want %v", fi.Mode().Perm(), c.perm)
			}
			st := fi.Sys().(*syscall.Stat_t)
			wantUID, wantGID := c.uid, c.gid
			if c.uid == -1 {
				wantUID, wantGID = os.Geteuid(), os.Getegid()
			}
			if int(st.Uid) != wantUID || int(st.Gid) != wantGID {
				t.Errorf("owner %d:%d, want %d:%d", st.Uid, st.Gid, wantUID, wantGID)
			}
			entries, _ := os.ReadDir(filepath.Dir(p))
			if len(entries) != 1 {
				t.Errorf("left beside it: %v", entries)
			}
		})
	}
}

// CommitNew creates the final file, or leaves the one there as it was and
// says fs.ErrExist under the final name (not the temporary one); either way
// no temporary file stays behind.
// TestCommitNewSaysWhenHardLinksAreRefused: a file system without hard links
// (vfat answers EPERM) is named as the likely cause, on the final name; a
// file already there is not.
func TestCommitNewSaysWhenHardLinksAreRefused(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		hint  bool
	}{
		{syscall.EPERM, true},
		{syscall.ENOTSUP, true},
		{syscall.EMLINK, true},
		{syscall.EEXIST, false},
		{syscall.EACCES, false},
	} {
		t.Run(tc.errno.Error(), func(t *testing.T) {
			err := linkError("/keys/repo.key", &os.LinkError{Op: "link", Old: "/keys/.repo.key.tmp-1", New: "/keys/repo.key", Err: tc.errno})
			if !errors.Is(err, tc.errno) || !strings.HasPrefix(err.Error(), "create /keys/repo.key: ") || strings.Contains(err.Error(), ".tmp-") {
				t.Errorf("error %q: want the errno, on the final name only", err)
			}
			if got := strings.Contains(err.Error(), "may not support hard links"); got != tc.hint {
				t.Errorf("error %q: hint about hard links %v, want %v", err, got, tc.hint)
			}
		})
	}
}

func TestCommitNew(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing string // "" for none
		wantErr  error
		want     string
	}{
		{"new file", "", nil, "new"},
		{"a file is there", "old", fs.ErrExist, "old"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "key")
			if tc.existing != "" {
				if err := os.WriteFile(p, []byte(tc.existing), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			f, err := CreateTemp(p)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("new")
			err = f.CommitNew()
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("CommitNew: %v, want %v", err, tc.wantErr)
			}
			if err != nil && (!strings.Contains(err.Error(), p) || strings.Contains(err.Error(), ".tmp-")) {
				t.Errorf("error %q names the temporary file, or not %s", err, p)
			}
			if got, _ := os.ReadFile(p); string(got) != tc.want {
				t.Errorf("%s holds %q, want %q", p, got, tc.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("directory holds %v, want only %s", entries, p)
			}
		})
	}
}
