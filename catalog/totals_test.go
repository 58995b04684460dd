package catalog

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/walhub/walhub/walname"
)

func TestSegmentTotalsFollowInsertReplaceDelete(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	for n := walname.SegNo(10); n < 20; n++ {
		if err := c.AddSegment(ctx, seg(s.ID, 1, n)); err != nil {
			t.Fatal(err)
		}
	}
	again := seg(s.ID, 1, 12)
	again.StoredSize = 5000
	if err := c.AddSegment(ctx, again); err != nil { // a replaced segment is counted once, with its new size
		t.Fatal(err)
	}
	if err := c.DeleteSegments(ctx, []Segment{seg(s.ID, 1, 19)}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddSegment(ctx, seg(s.ID, 2, 18)); err != nil {
		t.Fatal(err)
	}
	got, err := c.SegmentRanges(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := []TimeLineRange{
		{TimeLine: 1, First: 10, Last: 18, Count: 9, StoredBytes: 8*1000 + 5000, Bytes: 9 * segSize},
		{TimeLine: 2, First: 18, Last: 18, Count: 1, StoredBytes: 1000, Bytes: segSize},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("SegmentRanges = %+v\nwant %+v", got, want)
	}
	if err := c.DeleteSegments(ctx, []Segment{seg(s.ID, 2, 18)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.SegmentRanges(ctx, s.ID); len(got) != 1 {
		t.Fatalf("a timeline whose segments are all deleted must not be listed: %+v", got)
	}
}

func TestSegmentTotalsMigrationCountsExistingSegments(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "catalog.db")
	// A catalog made by the first schema version, with segments in it.
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(migrations[0] + `; PRAGMA user_version = 1;
		INSERT INTO servers (name, created_at) VALUES ('main', 1);
		INSERT INTO segments VALUES (1, 1, 5, 'a', 16, 4, 'zstd', '', 'p', 1), (1, 1, 7, 'b', 16, 6, 'zstd', '', 'p', 1);`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.SegmentRanges(ctx, 1)
	want := []TimeLineRange{{TimeLine: 1, First: 5, Last: 7, Count: 2, StoredBytes: 10, Bytes: 32}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("SegmentRanges after upgrade = %+v, %v; want %+v", got, err, want)
	}
}

// TestMissingSegmentsMatchesBruteForce checks the halving search against a
// plain walk over ranges large enough to be halved many times.
func TestMissingSegmentsMatchesBruteForce(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	const span = 40000
	rng := rand.New(rand.NewPCG(1, 2))
	held := make([]bool, span)
	for n := range held {
		held[n] = true
	}
	// A few holes of every width, one long one, and a ragged start.
	for _, h := range []SegRange{{0, 3}, {100, 101}, {5000, 5003}, {12000, 20500}, {30001, 30002}} {
		for n := h.From; n < h.To; n++ {
			held[n] = false
		}
	}
	for i := 0; i < 20; i++ {
		held[rng.IntN(span)] = false
	}
	held[span-1] = true
	if err := fillHeld(ctx, c, s.ID, held); err != nil {
		t.Fatal(err)
	}
	for _, r := range []SegRange{{0, span}, {0, span + 50}, {7, 31000}, {12500, 13000}, {50000, 50010}} {
		got, err := c.MissingSegments(ctx, s.ID, 1, r.From, r.To)
		if err != nil {
			t.Fatal(err)
		}
		if want := bruteMissing(held, r); !reflect.DeepEqual(got, want) {
			t.Errorf("MissingSegments(%d, %d) = %v\nwant %v", r.From, r.To, got, want)
		}
	}
}

func fillHeld(ctx context.Context, c *Catalog, serverID int64, held []bool) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for n, ok := range held {
		if !ok {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO segments VALUES (?, 1, ?, ?, 16, 4, 'zstd', '', 'p', 1, '')`,
			serverID, n, walname.SegmentName(1, walname.SegNo(n), segSize)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func bruteMissing(held []bool, r SegRange) []SegRange {
	var out []SegRange
	for n := r.From; n < r.To; n++ {
		if int(n) < len(held) && held[n] {
			continue
		}
		if k := len(out); k > 0 && out[k-1].To == n {
			out[k-1].To++
		} else {
			out = append(out, SegRange{n, n + 1})
		}
	}
	return out
}

// BenchmarkSegmentRanges measures the per-timeline summary over a million segments.
func BenchmarkSegmentRanges(b *testing.B) {
	c, s := bigFixture(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r, err := c.SegmentRanges(ctx, s.ID); err != nil || len(r) == 0 || r[0].Count < benchSegments {
			b.Fatalf("SegmentRanges = %+v, %v", r, err)
		}
	}
}

// BenchmarkMissingSegmentsThreeHoles measures finding three holes among a
// million segments (the million-segment catalog with three rows removed).
func BenchmarkMissingSegmentsThreeHoles(b *testing.B) {
	ctx := context.Background()
	c, err := Open(ctx, filepath.Join(b.TempDir(), "catalog.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s, _ := c.EnsureServer(ctx, "main")
	if err := fill(ctx, c, s.ID, 0, benchSegments); err != nil {
		b.Fatal(err)
	}
	for _, n := range []walname.SegNo{1000, 500000, 999000} {
		if err := c.DeleteSegments(ctx, []Segment{seg(s.ID, 1, n)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if got, err := c.MissingSegments(ctx, s.ID, 1, 0, benchSegments); err != nil || len(got) != 3 {
			b.Fatalf("MissingSegments = %v, %v", got, err)
		}
	}
}

func TestAddSegmentsRecordsABatch(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	batch := []Segment{seg(s.ID, 1, 1), seg(s.ID, 1, 2), seg(s.ID, 1, 4), seg(s.ID, 1, 2)}
	if err := c.AddSegments(ctx, batch); err != nil {
		t.Fatal(err)
	}
	got, err := c.SegmentRanges(ctx, s.ID)
	want := []TimeLineRange{{TimeLine: 1, First: 1, Last: 4, Count: 3, StoredBytes: 3000, Bytes: 3 * segSize}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("SegmentRanges = %+v, %v; want %+v", got, err, want)
	}
	if _, err := c.Segment(ctx, s.ID, walname.SegmentName(1, 4, segSize)); err != nil {
		t.Fatal(err)
	}
}
