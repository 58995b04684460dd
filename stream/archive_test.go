package stream

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/walname"
)

// writeCompletePartial writes a whole segment as a .partial, as walWriter leaves it.
func writeCompletePartial(t *testing.T, repo *repository.Repository, segNo walname.SegNo) (completedSegment, []byte) {
	t.Helper()
	name := walname.SegmentName(1, segNo, testSegSize)
	path := repo.Work.PartialFile("main", name)
	os.MkdirAll(filepath.Dir(path), 0o750)
	data := pattern(walname.SegmentStart(segNo, testSegSize), testSegSize)
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	return completedSegment{TimeLine: 1, SegNo: segNo, Name: name, Partial: path}, data
}

func TestSegmentStoreStoresThenCatalogsThenRemovesPartial(t *testing.T) {
	for _, compression := range []string{"zstd", "none"} {
		t.Run(compression, func(t *testing.T) {
			ctx := context.Background()
			repo, cat, srv := testRepository(t)
			var stored []string
			store, err := newSegmentStore(repo, srv, compression, 1,
				func(c completedSegment, _ catalog.Segment) { stored = append(stored, c.Name) })
			if err != nil {
				t.Fatal(err)
			}
			seg, data := writeCompletePartial(t, repo, 7)
			if err := store.store(ctx, seg); err != nil {
				t.Fatal(err)
			}
			row, err := cat.Segment(ctx, srv.ID, seg.Name)
			if err != nil {
				t.Fatalf("not cataloged: %v", err)
			}
			if row.Checksum != checksum.Of(data) || row.Size != testSegSize || row.Compression != compression {
				t.Errorf("catalog row %+v", row)
			}
			f, err := repo.Store.Open(ctx, row.StoredPath)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			if compression == "zstd" {
				dec, _ := zstd.NewReader(f)
				got, err = io.ReadAll(dec)
				dec.Close()
			} else {
				got, err = io.ReadAll(f)
			}
			f.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("stored file does not give back the segment: %v", err)
			}
			if _, err := os.Stat(seg.Partial); !os.IsNotExist(err) {
				t.Errorf(".partial still there after storing: %v", err)
			}
			// A crash between the catalog and the removal leaves the .partial:
			// storing again only removes it.
			seg, _ = writeCompletePartial(t, repo, 7)
			if err := store.store(ctx, seg); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(seg.Partial); !os.IsNotExist(err) {
				t.Errorf(".partial of a cataloged segment not removed: %v", err)
			}
			if len(stored) != 1 {
				t.Errorf("stored %v, want one segment once", stored)
			}
		})
	}
}

func TestSegmentStoreRefusesShortPartial(t *testing.T) {
	ctx := context.Background()
	repo, cat, srv := testRepository(t)
	store, _ := newSegmentStore(repo, srv, "zstd", 1, func(completedSegment, catalog.Segment) {})
	seg, _ := writeCompletePartial(t, repo, 3)
	os.Truncate(seg.Partial, 1000)
	if err := store.store(ctx, seg); err == nil {
		t.Fatal("a torn segment was stored")
	}
	if _, err := cat.Segment(ctx, srv.ID, seg.Name); err == nil {
		t.Fatal("a torn segment was cataloged")
	}
}

// testRepository is a local repository in a temporary directory with server
// "main" registered (segments of testSegSize).
func testRepository(t *testing.T) (*repository.Repository, *catalog.Catalog, catalog.Server) {
	t.Helper()
	ctx := context.Background()
	repo, err := repository.OpenLocal(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	srv, err := repo.Catalog.EnsureServer(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Catalog.BindIdentity(ctx, srv.ID, "7000000000000000001", testSegSize); err != nil {
		t.Fatal(err)
	}
	srv, err = repo.Catalog.ServerByName(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	return repo, repo.Catalog, srv
}
