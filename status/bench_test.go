package status

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
)

// benchSegments is the catalog size the status must stay fast with: a million
// 16 MiB segments is 16 TiB of WAL.
const benchSegments = 1_000_000

// BenchmarkStatusMillionSegments measures building the whole status document
// (PostgreSQL reachable, receiver state, lock, 20 backups) with a million
// segments cataloged: complete, then with three holes to find.
func BenchmarkStatusMillionSegments(b *testing.B) {
	ctx := context.Background()
	p := pgtest.NewPrimary(b, "bench", pgtest.Options{})
	p.CreateSlot("walhub_main")
	src := newSource(b, b.TempDir(), p.ConnString(""))
	srv, _ := src.Catalog.EnsureServer(ctx, "main")
	if err := src.Catalog.BindIdentity(ctx, srv.ID, p.Query("SELECT system_identifier FROM pg_control_system()"), segSize); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for lo := walname.SegNo(0); lo < benchSegments; lo += 20000 {
		addSegments(b, src.Catalog, srv.ID, 1, lo, lo+20000, time.Now())
	}
	for i := 0; i < 20; i++ {
		at := time.Now().Add(-time.Duration(20-i) * 24 * time.Hour)
		if err := src.Catalog.AddBackup(ctx, catalog.Backup{ID: fmt.Sprintf("b%02d", i), ServerID: srv.ID, Kind: catalog.KindBase,
			State: catalog.StateDone, StartLSN: walname.SegmentStart(walname.SegNo(i*50000), segSize), StartTLI: 1,
			StartedAt: at, FinishedAt: at.Add(time.Hour), OriginalSize: 1 << 30, StoredSize: 1 << 28}); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("cataloged %d segments in %s", benchSegments, time.Since(start).Round(time.Millisecond))

	run := func(b *testing.B, wantGaps int) {
		for i := 0; i < b.N; i++ {
			doc, err := src.Build(ctx, "main")
			if err != nil {
				b.Fatal(err)
			}
			if !doc.Postgres.Reachable || doc.WAL.Segments < benchSegments-3 || len(doc.WAL.Gaps) != wantGaps {
				b.Fatalf("reachable %v (%s), %d segments, gaps %+v", doc.Postgres.Reachable, doc.Postgres.Error, doc.WAL.Segments, doc.WAL.Gaps)
			}
		}
	}
	b.Run("complete", func(b *testing.B) { run(b, 0) })
	// What `walhub status main` does per run: open the catalog, build, close.
	b.Run("open_build_close", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cat, err := catalog.Open(ctx, src.Work.CatalogPath())
			if err != nil {
				b.Fatal(err)
			}
			fresh := src
			fresh.Catalog = cat
			if _, err := fresh.Build(ctx, "main"); err != nil {
				b.Fatal(err)
			}
			cat.Close()
		}
	})
	// A Prometheus scrape of /metrics: the document, the checks and their
	// metrics (the replication probe is reused between scrapes, as in the daemon).
	b.Run("metrics_scrape", func(b *testing.B) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(&Collector{Source: src})
		for i := 0; i < b.N; i++ {
			families, err := reg.Gather()
			if err != nil || len(families) < 20 {
				b.Fatalf("%d families, %v", len(families), err)
			}
		}
	})
	// The recoverable window alone (part of each scrape), over 20 backups.
	b.Run("recoverable_window", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := src.Catalog.RecoverableWindow(ctx, srv.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	var holes []catalog.Segment
	for _, n := range []walname.SegNo{1000, 500000, 999000} {
		holes = append(holes, catalog.Segment{ServerID: srv.ID, TimeLine: 1, SegNo: n})
	}
	if err := src.Catalog.DeleteSegments(ctx, holes); err != nil {
		b.Fatal(err)
	}
	b.Run("three_holes", func(b *testing.B) { run(b, 3) })
}
