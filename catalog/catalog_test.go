package catalog

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/walhub/walhub/walname"
)

const segSize = 16 << 20

func openTest(t testing.TB) (*Catalog, Server) {
	t.Helper()
	ctx := context.Background()
	c, err := Open(ctx, filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.EnsureServer(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

func seg(serverID int64, tli walname.TimeLine, n walname.SegNo) Segment {
	name := walname.SegmentName(tli, n, segSize)
	return Segment{ServerID: serverID, TimeLine: tli, SegNo: n, Name: name, Size: segSize, StoredSize: 1000,
		Compression: "zstd", Checksum: "crc32c:00000000", StoredPath: "main/wal/" + name[:16] + "/" + name + ".zst",
		ReceivedAt: time.Unix(1700000000, 0).UTC()}
}

func TestReopenKeepsSchemaAndRows(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "catalog.db")
	c, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := c.EnsureServer(ctx, "main")
	if err := c.AddSegment(ctx, seg(s.ID, 1, 5)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Segment(ctx, s.ID, walname.SegmentName(1, 5, segSize)); err != nil {
		t.Fatal(err)
	}
}

func TestSegmentLookupAndReplace(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	want := seg(s.ID, 1, 3)
	if err := c.AddSegment(ctx, want); err != nil {
		t.Fatal(err)
	}
	want.StoredSize = 2000
	if err := c.AddSegment(ctx, want); err != nil {
		t.Fatalf("adding a segment again must replace it: %v", err)
	}
	got, err := c.Segment(ctx, s.ID, want.Name)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Segment = %+v, %v; want %+v", got, err, want)
	}
	if _, err := c.Segment(ctx, s.ID, walname.SegmentName(1, 4, segSize)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing segment: err = %v, want ErrNotFound", err)
	}
}

func TestPeekAndMissing(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	// timeline 1: 1..5, 8..9 ; timeline 2: 5..6
	for _, n := range []walname.SegNo{1, 2, 3, 4, 5, 8, 9} {
		if err := c.AddSegment(ctx, seg(s.ID, 1, n)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []walname.SegNo{5, 6} {
		if err := c.AddSegment(ctx, seg(s.ID, 2, n)); err != nil {
			t.Fatal(err)
		}
	}
	peeks := []struct {
		tli  walname.TimeLine
		from walname.SegNo
		n    int
		want []walname.SegNo
	}{
		{1, 1, 10, []walname.SegNo{1, 2, 3, 4, 5}},
		{1, 2, 2, []walname.SegNo{2, 3}},
		{1, 6, 10, nil},
		{1, 8, 10, []walname.SegNo{8, 9}},
		{2, 5, 10, []walname.SegNo{5, 6}},
		{2, 4, 10, nil},
		{1, 1, 0, nil},
	}
	for _, p := range peeks {
		got, err := c.Peek(ctx, s.ID, p.tli, p.from, p.n)
		if err != nil {
			t.Fatal(err)
		}
		var nums []walname.SegNo
		for _, g := range got {
			nums = append(nums, g.SegNo)
		}
		if !reflect.DeepEqual(nums, p.want) {
			t.Errorf("Peek(tli %d, %d, %d) = %v, want %v", p.tli, p.from, p.n, nums, p.want)
		}
	}
	missing := []struct {
		tli      walname.TimeLine
		from, to walname.SegNo
		want     []SegRange
	}{
		{1, 1, 10, []SegRange{{6, 8}}},
		{1, 0, 12, []SegRange{{0, 1}, {6, 8}, {10, 12}}},
		{1, 2, 5, nil},
		{1, 20, 30, []SegRange{{20, 30}}},
		{2, 5, 7, nil},
		{3, 1, 2, []SegRange{{1, 2}}},
	}
	for _, m := range missing {
		got, err := c.MissingSegments(ctx, s.ID, m.tli, m.from, m.to)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m.want) {
			t.Errorf("MissingSegments(tli %d, %d, %d) = %v, want %v", m.tli, m.from, m.to, got, m.want)
		}
	}
	last, err := c.LastSegment(ctx, s.ID)
	if err != nil || last.TimeLine != 2 || last.SegNo != 6 {
		t.Errorf("LastSegment = %+v, %v", last, err)
	}
	ranges, err := c.SegmentRanges(ctx, s.ID)
	if err != nil || len(ranges) != 2 || ranges[0].Count != 7 || ranges[0].First != 1 || ranges[0].Last != 9 {
		t.Errorf("SegmentRanges = %+v, %v", ranges, err)
	}
}

func TestBindIdentityRefusesAnotherCluster(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	if err := c.BindIdentity(ctx, s.ID, "7001", segSize); err != nil {
		t.Fatal(err)
	}
	if err := c.BindIdentity(ctx, s.ID, "7001", segSize); err != nil {
		t.Fatalf("same identity again: %v", err)
	}
	if err := c.BindIdentity(ctx, s.ID, "7002", segSize); !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("other system id: err = %v", err)
	}
	if err := c.BindIdentity(ctx, s.ID, "7001", 1<<20); !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("other segment size: err = %v", err)
	}
}

func TestBackupsRoundTrip(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	b := Backup{ID: "20261121T104000", ServerID: s.ID, Kind: KindBase, State: StateRunning, Label: "walhub",
		StartedAt: time.Unix(1700000000, 0).UTC(), PID: 42, Host: "h", Files: []BackupFile{}}
	if err := c.AddBackup(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.State, b.StartLSN, b.StopLSN, b.StartTLI, b.StopTLI = StateDone, 0x3000028, 0x3000100, 1, 1
	b.Files = []BackupFile{{Name: "base.tar.zst", Size: 10, StoredSize: 5, Compression: "zstd"}}
	b.FinishedAt = b.StartedAt.Add(time.Minute)
	if err := c.UpdateBackup(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := c.Backup(ctx, b.ID)
	if err != nil || !reflect.DeepEqual(got, b) {
		t.Fatalf("Backup = %+v, %v\nwant %+v", got, err, b)
	}
	list, err := c.Backups(ctx, s.ID)
	if err != nil || len(list) != 1 {
		t.Fatalf("Backups = %v, %v", list, err)
	}
	if err := c.DeleteBackup(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Backup(ctx, b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted backup: %v", err)
	}
	if err := c.UpdateBackup(ctx, b); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of a deleted backup: %v", err)
	}
}

func TestTimeLinesAndGaps(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	tl := TimeLine{ServerID: s.ID, TimeLine: 2, History: []byte("1\t0/3000000\tx\n"), StoredPath: "main/wal/00000002.history",
		AddedAt: time.Unix(1, 0).UTC()}
	if err := c.AddTimeLine(ctx, tl); err != nil {
		t.Fatal(err)
	}
	got, err := c.TimeLine(ctx, s.ID, 2)
	if err != nil || !reflect.DeepEqual(got, tl) {
		t.Fatalf("TimeLine = %+v, %v", got, err)
	}
	if _, err := c.TimeLine(ctx, s.ID, 3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing timeline: %v", err)
	}
	g := Gap{ServerID: s.ID, TimeLine: 1, StartLSN: 0x1000000, EndLSN: 0x5000000, Reason: "removed", DetectedAt: time.Unix(2, 0).UTC()}
	if err := c.AddGap(ctx, g); err != nil {
		t.Fatal(err)
	}
	gaps, err := c.Gaps(ctx, s.ID)
	if err != nil || len(gaps) != 1 || gaps[0].EndLSN != g.EndLSN {
		t.Fatalf("Gaps = %+v, %v", gaps, err)
	}
}
