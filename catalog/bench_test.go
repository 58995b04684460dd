package catalog

import (
	"context"
	"sync"
	"testing"

	"github.com/walhub/walhub/walname"
)

// benchSegments is how many segments the lookup and peek benchmarks catalog:
// a million 16 MiB segments is 16 TiB of WAL, years of a busy server.
const benchSegments = 1_000_000

var (
	bigOnce    sync.Once
	bigCatalog *Catalog
	bigServer  Server
)

// bigFixture builds the million-segment catalog once per benchmark run.
func bigFixture(b *testing.B) (*Catalog, Server) {
	bigOnce.Do(func() {
		ctx := context.Background()
		c, err := Open(ctx, b.TempDir()+"/catalog.db")
		if err != nil {
			b.Fatal(err)
		}
		s, _ := c.EnsureServer(ctx, "main")
		if err := fill(ctx, c, s.ID, 0, benchSegments); err != nil {
			b.Fatal(err)
		}
		bigCatalog, bigServer = c, s
	})
	if bigCatalog == nil {
		b.Fatal("fixture failed")
	}
	return bigCatalog, bigServer
}

// fill inserts segments [from, to) in batches, as a long-lived receiver would
// have over time.
func fill(ctx context.Context, c *Catalog, serverID int64, from, to int) error {
	const batch = 10000
	for lo := from; lo < to; lo += batch {
		tx, err := c.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO segments
			(server_id, tli, segno, name, size, stored_size, compression, checksum, stored_path, received_at)
			VALUES (?, 1, ?, ?, ?, ?, 'zstd', 'crc32c:00000000', ?, 1)`)
		if err != nil {
			return err
		}
		for n := lo; n < min(lo+batch, to); n++ {
			name := walname.SegmentName(1, walname.SegNo(n), segSize)
			if _, err := stmt.ExecContext(ctx, serverID, n, name, segSize, 4<<20, "main/wal/"+name[:16]+"/"+name+".zst"); err != nil {
				return err
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkAddSegment measures AddSegment as the receiver calls it: one
// committed (fsynced) transaction per segment, on a catalog that already holds
// a million segments.
func BenchmarkAddSegment(b *testing.B) {
	c, s := bigFixture(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.AddSegment(ctx, seg(s.ID, 2, walname.SegNo(i))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookup measures finding one segment by name among a million.
func BenchmarkLookup(b *testing.B) {
	c, s := bigFixture(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := walname.SegmentName(1, walname.SegNo((i*7919)%benchSegments), segSize)
		if _, err := c.Segment(ctx, s.ID, name); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPeek16 measures a peek of 16 names among a million.
func BenchmarkPeek16(b *testing.B) {
	c, s := bigFixture(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := c.Peek(ctx, s.ID, 1, walname.SegNo((i*7919)%(benchSegments-16)), 16)
		if err != nil || len(got) != 16 {
			b.Fatalf("peek: %d, %v", len(got), err)
		}
	}
}

// BenchmarkMissingSegments measures a gap scan over the whole million.
func BenchmarkMissingSegments(b *testing.B) {
	c, s := bigFixture(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.MissingSegments(ctx, s.ID, 1, 0, benchSegments); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBulkInsert measures the raw insert rate in batched transactions
// (segments per second is reported).
func BenchmarkBulkInsert(b *testing.B) {
	ctx := context.Background()
	c, s := openTest(b)
	b.ResetTimer()
	if err := fill(ctx, c, s.ID, 0, b.N); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "segments/s")
}
