package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	if _, err := run(t, "keygen", "--output", path); err == nil {
		t.Fatal("keygen overwrote an existing file")
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("the existing key file changed")
	}
}
