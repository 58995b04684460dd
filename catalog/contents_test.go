package catalog

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/walhub/walhub/walname"
)

// TestSegmentContentsAndWindow records segments with their contents, reads
// restore points and the recoverable window back, and checks that expiring a
// segment takes its contents with it.
func TestSegmentContentsAndWindow(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	if err := c.BindIdentity(ctx, s.ID, "7", segSize); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecoverableWindow(ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("window without backups: %v, want ErrNotFound", err)
	}
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	lsn := func(n walname.SegNo, off uint64) walname.LSN {
		return walname.SegmentStart(n, segSize) + walname.LSN(off)
	}
	for n := walname.SegNo(1); n <= 6; n++ {
		row := seg(s.ID, 1, n)
		row.Contents = &SegmentContents{}
		row.Contents.Add(XactRecord{LSN: lsn(n, 100), Time: t0.Add(time.Duration(n) * time.Minute), XID: uint32(n * 10)})
		row.Contents.Add(XactRecord{LSN: lsn(n, 200), Time: t0.Add(time.Duration(n)*time.Minute - time.Second), XID: uint32(n*10 + 1)})
		if n == 3 {
			row.Contents.RestorePoints = []RestorePoint{{Name: "rp1", TimeLine: 1, LSN: lsn(3, 300), EndLSN: lsn(3, 400), Time: t0}}
		}
		if n != 5 { // a hole at 5
			if err := c.AddSegment(ctx, row); err != nil {
				t.Fatal(err)
			}
		}
	}
	rps, err := c.RestorePoints(ctx, s.ID, "rp1")
	if err != nil || len(rps) != 1 || rps[0].LSN != lsn(3, 300) || rps[0].SegNo != 3 || !rps[0].Time.Equal(t0) {
		t.Fatalf("restore points %+v, %v", rps, err)
	}
	got, err := c.FirstSegmentAfter(ctx, s.ID, 1, 0, 100, t0.Add(2*time.Minute))
	if err != nil || got.SegNo != 3 || got.Xacts != 2 || got.First.LSN != lsn(3, 100) || got.Last.LSN != lsn(3, 200) ||
		!got.MaxTime.Equal(t0.Add(3*time.Minute)) || got.MinXID != 30 || got.MaxXID != 31 {
		t.Fatalf("first segment after 10:02: %+v, %v", got, err)
	}
	if xs, err := c.SegmentsWithXID(ctx, s.ID, 1, 0, 100, 41); err != nil || len(xs) != 1 || xs[0].SegNo != 4 {
		t.Fatalf("segments with xid 41: %+v, %v", xs, err)
	}
	b := Backup{ID: "b1", ServerID: s.ID, Kind: KindBase, State: StateDone, StartLSN: lsn(1, 0), StartTLI: 1,
		StopLSN: lsn(2, 50), StopTLI: 1, StartedAt: t0, FinishedAt: t0.Add(time.Minute)}
	if err := c.AddBackup(ctx, b); err != nil {
		t.Fatal(err)
	}
	w, err := c.RecoverableWindow(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if w.Earliest.LSN != b.StopLSN || w.Latest.LSN != lsn(5, 0) || !w.Latest.Time.Equal(t0.Add(4*time.Minute)) || w.EarliestBackup != "b1" {
		t.Fatalf("window %+v", w)
	}
	if err := c.DeleteSegments(ctx, []Segment{seg(s.ID, 1, 3)}); err != nil {
		t.Fatal(err)
	}
	if rps, _ := c.RestorePoints(ctx, s.ID, ""); len(rps) != 0 {
		t.Fatalf("restore points of an expired segment remain: %+v", rps)
	}
	if todo, err := c.SegmentsWithoutContents(ctx, s.ID, 10); err != nil || len(todo) != 0 {
		t.Fatalf("segments without contents: %+v, %v", todo, err)
	}
}
