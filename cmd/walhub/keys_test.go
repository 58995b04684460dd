package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage/crypt"
)

func TestKeygenWritesAPrivateKeyFileAndPrintsOnlyItsID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repo.key")
	out, err := run(t, "keygen", "--output", path)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := crypt.LoadKeyring("file:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "key "+kr.CurrentID()) || strings.Contains(out, "AGE-SECRET-KEY") {
		t.Fatalf("output %q", out)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	before, _ := os.ReadFile(path)
	if _, err := run(t, "keygen", "--output", path); err == nil || !strings.Contains(err.Error(), path+" already exists") {
		t.Fatalf("keygen over an existing file: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("the existing key file changed")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("beside the key: %v", entries)
	}
}

func TestKeyViewsJoinConfiguredKeysAndCatalog(t *testing.T) {
	dir := t.TempDir()
	var srcs []string
	for _, n := range []string{"new", "old", "retired"} {
		p := filepath.Join(dir, n)
		if _, err := run(t, "keygen", "--output", p); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, "file:"+p)
	}
	kr, err := crypt.LoadKeyring(srcs[0], srcs[1:])
	if err != nil {
		t.Fatal(err)
	}
	ids := kr.IDs()
	use := []catalog.KeyUse{{KeyID: "", Segments: 1}, {KeyID: "0123456789abcdef", Segments: 2}, {KeyID: ids[0], Segments: 3, Backups: 1, BackupFiles: 2}, {KeyID: ids[1], HistoryFiles: 1}}
	views := keyViews(kr, use)
	got := ""
	for _, v := range views {
		got += fmt.Sprintf("%s:%s:%d:%d:%d ", v.ID, v.Role, v.Segments, v.HistoryFiles, v.Backups)
	}
	want := ids[0] + ":current:3:0:1 " + ids[1] + ":previous:0:1:0 " + ids[2] + ":previous:0:0:0 :none:1:0:0 0123456789abcdef:missing:2:0:0 "
	if got != want {
		t.Fatalf("keyViews =\n%s\nwant\n%s", got, want)
	}
	var out strings.Builder
	printKeys(&out, kr, views)
	for _, s := range []string{"key " + ids[2] + " protects nothing", "key 0123456789abcdef is not configured", "not always encrypted"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("keys output lacks %q:\n%s", s, out.String())
		}
	}
}
