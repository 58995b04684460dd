package catalog

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/walhub/walhub/walname"
)

func TestKeyUsageCountsObjectsPerKey(t *testing.T) {
	ctx := context.Background()
	c, s := openTest(t)
	for i, id := range []string{"", "aaaa", "aaaa", "bbbb"} {
		sg := seg(s.ID, 1, walname.SegNo(10+i))
		sg.KeyID = id
		if err := c.AddSegment(ctx, sg); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Segment(ctx, s.ID, seg(s.ID, 1, 13).Name)
	if err != nil || got.KeyID != "bbbb" {
		t.Fatalf("Segment key ID = %q, %v", got.KeyID, err)
	}
	if err := c.AddTimeLine(ctx, TimeLine{ServerID: s.ID, TimeLine: 2, History: []byte("1\t0/3000000\tno reason\n"),
		StoredPath: "main/wal/00000002.history", AddedAt: time.Unix(1, 0), KeyID: "bbbb"}); err != nil {
		t.Fatal(err)
	}
	if tl, err := c.TimeLine(ctx, s.ID, 2); err != nil || tl.KeyID != "bbbb" {
		t.Fatalf("TimeLine key ID = %q, %v", tl.KeyID, err)
	}
	b := Backup{ID: "20261121T104000", ServerID: s.ID, Kind: KindBase, State: StateDone, StartedAt: time.Unix(1, 0),
		Files: []BackupFile{{Name: "base.tar.zst", KeyID: "aaaa"}, {Name: "backup_manifest", KeyID: "aaaa"}}}
	if err := c.AddBackup(ctx, b); err != nil {
		t.Fatal(err)
	}
	use, err := c.KeyUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []KeyUse{
		{KeyID: "", Segments: 1, SegmentBytes: 1000},
		{KeyID: "aaaa", Segments: 2, SegmentBytes: 2000, Backups: 1, BackupFiles: 2},
		{KeyID: "bbbb", Segments: 1, SegmentBytes: 1000, HistoryFiles: 1},
	}
	if !reflect.DeepEqual(use, want) {
		t.Fatalf("KeyUsage =\n %+v\nwant\n %+v", use, want)
	}
}
