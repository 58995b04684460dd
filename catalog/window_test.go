package catalog

import (
	"context"
	"math"
	"testing"

	"github.com/walhub/walhub/walname"
)

// TestContiguousEndFromEveryStartMatchesAWalkOfTheSegments compares the
// contiguous end, read once for all starts, with a segment-by-segment walk of
// what is stored, along a path that switches timeline at segment 15.
func TestContiguousEndFromEveryStartMatchesAWalkOfTheSegments(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	stored := map[walname.TimeLine]map[walname.SegNo]bool{1: {}, 2: {}}
	add := func(tli walname.TimeLine, from, to walname.SegNo, holes ...walname.SegNo) {
		for n := from; n < to; n++ {
			skip := false
			for _, h := range holes {
				skip = skip || h == n
			}
			if skip {
				continue
			}
			if err := c.AddSegment(ctx, seg(s.ID, tli, n)); err != nil {
				t.Fatal(err)
			}
			stored[tli][n] = true
		}
	}
	add(1, 3, 17, 5, 12, 13) // timeline 1 goes on past the switch, as the old primary's WAL does
	add(2, 15, 31, 25)
	path := []PathPart{{TimeLine: 1, From: 0, To: 15}, {TimeLine: 2, From: 15, To: math.MaxInt64}}
	h, err := c.heldAlong(ctx, s.ID, path)
	if err != nil {
		t.Fatal(err)
	}
	for start := walname.SegNo(0); start < 35; start++ {
		wantTLI, want := walname.TimeLine(0), start
		for {
			tli := walname.TimeLine(1)
			if want >= 15 {
				tli = 2
			}
			if !stored[tli][want] {
				wantTLI = tli
				break
			}
			want++
		}
		tli, got := h.contiguousEnd(start)
		if got != want || tli != wantTLI {
			t.Errorf("from %d: end %d on timeline %d, want %d on %d", start, got, tli, want, wantTLI)
		}
		if tli2, got2, err := c.ContiguousEnd(ctx, s.ID, path, start); err != nil || got2 != got || tli2 != tli {
			t.Errorf("from %d: ContiguousEnd %d/%d %v, want %d/%d", start, got2, tli2, err, got, tli)
		}
	}
}
