package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/test/pgtest"
)

// TestCatalogRebuiltFromTheRepositoryAlone streams with the real receiver
// and takes a real backup, deletes catalog.db, rebuilds it with walhub
// repair --rebuild-catalog, and checks that what status and restore read
// (WAL range, segments, timelines, backups) equals the original, and that a
// restore from the rebuilt catalog gives the primary's data.
func TestCatalogRebuiltFromTheRepositoryAlone(t *testing.T) {
	t.Parallel()
	checkCatalogRebuilt(t, newSite(t, pgtest.Options{SegmentSizeMB: 1}))
}

// checkCatalogRebuilt is the test above on the site s (its repository local
// or in a bucket; catalog.db is in s.repo).
func checkCatalogRebuilt(t *testing.T, s *site) {
	t.Helper()
	p := s.primary
	p.PgbenchInit(1)
	s.walhub("backup", "--server", "main")
	p.Pgbench(2, 200)
	want := p.Query(checksum)
	s.waitArchived()
	s.stopServe()

	catPath := filepath.Join(s.repo, storage.CatalogFile)
	before := dumpCatalog(t, catPath)
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(catPath + suffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	out := s.walhub("repair", "--rebuild-catalog")
	t.Logf("repair: %s", strings.TrimSpace(out))
	if after := dumpCatalog(t, catPath); after != before {
		t.Fatalf("rebuilt catalog differs:\n%s\nwant\n%s", after, before)
	}
	if _, err := s.tryWalhub("repair", "--rebuild-catalog"); err == nil {
		t.Fatal("a rebuild over a catalog with rows was accepted")
	}

	s.startServe()
	dir := filepath.Join(pgtest.TempDir(t, "restore-rebuilt"), "data")
	if out := s.walhub("restore", "--server", "main", "--target-dir", dir, "--walfetch-token-file", s.tokenFile); !strings.Contains(out, "verified against its manifest") {
		t.Fatalf("restore output: %s", out)
	}
	c := startRestored(t, "restored-rebuilt", dir)
	waitPromoted(t, c)
	if got := c.Query(checksum); got != want {
		t.Fatal("data restored with the rebuilt catalog differs from the primary's")
	}
}

// dumpCatalog is what status and restore read from the catalog of server
// main, as text: identity, WAL ranges and segments, timelines, finished backups.
func dumpCatalog(t *testing.T, path string) string {
	t.Helper()
	ctx := context.Background()
	cat, err := catalog.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	srv, err := cat.ServerByName(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "server %s %s %d\n", srv.Name, srv.SystemID, srv.SegmentSize)
	ranges, err := cat.SegmentRanges(ctx, srv.ID)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&sb, "ranges %+v\n", ranges)
	for _, r := range ranges {
		segs, _ := cat.Segments(ctx, srv.ID, r.TimeLine, r.First, r.Last+1)
		for _, s := range segs {
			fmt.Fprintf(&sb, "segment %s %d %d %s %s %s\n", s.Name, s.Size, s.StoredSize, s.Compression, s.Checksum, s.StoredPath)
		}
	}
	tls, _ := cat.TimeLines(ctx, srv.ID)
	for _, tl := range tls {
		fmt.Fprintf(&sb, "timeline %d %q %s\n", tl.TimeLine, tl.History, tl.StoredPath)
	}
	backups, _ := cat.Backups(ctx, srv.ID)
	for _, b := range backups {
		if b.State != catalog.StateDone {
			continue
		}
		b.ServerID = 0
		fmt.Fprintf(&sb, "backup %+v\n", b)
	}
	return sb.String()
}
