package walrecord_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
	"github.com/walhub/walhub/walrecord"
)

// realSegment returns a complete 16 MiB segment of pgbench WAL from a real
// PostgreSQL 15.
func realSegment(b *testing.B) ([]byte, walname.LSN) {
	b.Helper()
	pg := pgtest.NewPrimary(b, "bench", pgtest.Options{Conf: []string{"wal_keep_size = 1GB"}})
	pg.PgbenchInit(1)
	start := pg.CurrentLSN()
	const segSize = 16 << 20
	for pg.CurrentLSN() < start+2*segSize {
		pg.Pgbench(4, 500)
	}
	seg := walname.SegmentOf(start, segSize) + 1
	data, err := os.ReadFile(filepath.Join(pg.DataDir, "pg_wal", walname.SegmentName(1, seg, segSize)))
	if err != nil {
		b.Fatal(err)
	}
	return data, walname.SegmentStart(seg, segSize)
}

// BenchmarkSegment measures, on one real 16 MiB segment of pgbench WAL, what
// the receiver does to each segment it stores: the WAL index's decoding,
// beside the CRC-32C and the zstd compression (level 1) it already did.
//
//	go test -run XXX -bench Segment -benchtime 20x ./walrecord
func BenchmarkSegment(b *testing.B) {
	data, start := realSegment(b)
	b.Run("index", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		n := 0
		for b.Loop() {
			d := walrecord.NewDecoder(16<<20, start)
			d.Write(data)
			n = len(d.Events())
		}
		b.ReportMetric(float64(n), "events")
	})
	// The receiver's index keeps one decoder from segment to segment.
	b.Run("index-reused", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		d := walrecord.NewDecoder(16<<20, start)
		n := 0
		for b.Loop() {
			d.Reset(start)
			d.Write(data)
			n = len(d.Events())
		}
		b.ReportMetric(float64(n), "events")
	})
	b.Run("crc32c", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			h := checksum.New()
			h.Write(data)
		}
	})
	b.Run("zstd", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		enc, _ := zstd.NewWriter(io.Discard, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		for b.Loop() {
			enc.Reset(io.Discard)
			enc.Write(data)
			enc.Close()
		}
	})
}
