package repository_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/crypt"
	"github.com/walhub/walhub/walname"
)

// newEncryptedRepo is a local repository encrypted with a new key, with
// server "main" registered.
func newEncryptedRepo(t *testing.T) (*repository.Repository, *crypt.Keyring, catalog.Server, string) {
	t.Helper()
	dir := t.TempDir()
	local, err := storage.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := age.GenerateX25519Identity()
	kr, err := crypt.NewKeyring(id)
	if err != nil {
		t.Fatal(err)
	}
	work, err := storage.NewWorkArea(dir)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(context.Background(), work.CatalogPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	return repository.New(crypt.New(local, kr), work, cat), kr, addServer(t, cat, "main"), dir
}

// VerifyWAL reads every segment and history file: in an encrypted repository
// the rows carry the key ID, a flipped byte anywhere is found and named, and
// so is an object under a key not configured.
func TestVerifyWALFindsTamperedAndUnreadableObjects(t *testing.T) {
	ctx := context.Background()
	repo, kr, srv, dir := newEncryptedRepo(t)
	var rows []catalog.Segment
	for i, comp := range []string{"zstd", "zstd", "none"} {
		storer, err := repo.SegmentStorer(srv, comp, 1)
		if err != nil {
			t.Fatal(err)
		}
		n := walname.SegNo(3 + i)
		row, err := storer.Store(ctx, walname.SegmentName(1, n, segSize), segmentData(n))
		if err != nil {
			t.Fatal(err)
		}
		if row.KeyID != kr.CurrentID() {
			t.Fatalf("segment row key ID %q, want %s", row.KeyID, kr.CurrentID())
		}
		rows = append(rows, row)
	}
	if err := repo.StoreHistory(ctx, srv, 2, []byte("1\t0/5000000\tno recovery target specified\n")); err != nil {
		t.Fatal(err)
	}
	c, err := repo.VerifyWAL(ctx, srv)
	if err != nil || len(c.Problems) != 0 || c.Segments != 3 || c.HistoryFiles != 1 {
		t.Fatalf("VerifyWAL of an intact repository = %+v, %v", c, err)
	}

	for _, row := range rows[1:] {
		path := filepath.Join(dir, filepath.FromSlash(row.StoredPath))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x01
		os.WriteFile(path, b, 0o600)
	}
	c, err = repo.VerifyWAL(ctx, srv)
	if err != nil || len(c.Problems) != 2 || !strings.Contains(c.Problems[0], rows[1].Name) || !strings.Contains(c.Problems[1], rows[2].Name) {
		t.Fatalf("VerifyWAL after flipping a byte in two segments = %+v, %v", c, err)
	}

	// The same objects read with another key: every one is named, with the key it needs.
	other, _ := age.GenerateX25519Identity()
	okr, _ := crypt.NewKeyring(other)
	local, _ := storage.NewLocalStore(dir)
	wrong := repository.New(crypt.New(local, okr), repo.Work, repo.Catalog)
	c, err = wrong.VerifyWAL(ctx, srv)
	if err != nil || len(c.Problems) != 4 || !strings.Contains(c.Problems[0], kr.CurrentID()) {
		t.Fatalf("VerifyWAL with another key = %+v, %v", c, err)
	}
}
