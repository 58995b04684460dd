package restore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/walname"
)

// TestResolverChoosesWithTheWALIndex builds a catalog with three backups,
// segments 1..9 indexed (one commit per segment, a restore point in segment
// 3) and checks the backup chosen for each target, and the refusals. Before
// the index, a restore point target picked the newest backup, whose end is
// after the restore point.
func TestResolverChoosesWithTheWALIndex(t *testing.T) {
	ctx := context.Background()
	repo, err := repository.OpenLocal(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	cat := repo.Catalog
	const segSize = 16 << 20
	srv, err := cat.EnsureServer(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.BindIdentity(ctx, srv.ID, "7", segSize); err != nil {
		t.Fatal(err)
	}
	srv.SegmentSize = segSize
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	lsn := func(n walname.SegNo, off uint64) walname.LSN {
		return walname.SegmentStart(n, segSize) + walname.LSN(off)
	}
	var segs []catalog.Segment
	for n := walname.SegNo(1); n <= 9; n++ {
		name := walname.SegmentName(1, n, segSize)
		s := catalog.Segment{ServerID: srv.ID, TimeLine: 1, SegNo: n, Name: name, Size: segSize, StoredSize: 1,
			Compression: "none", Checksum: "crc32c:00000000", StoredPath: "main/wal/" + name, ReceivedAt: t0,
			Contents: &catalog.SegmentContents{}}
		// Segment n ends transaction n at 10:0n.
		s.Contents.Add(catalog.XactRecord{LSN: lsn(n, 1000), Time: t0.Add(time.Duration(n) * time.Minute), XID: uint32(100 + n)})
		if n == 3 {
			s.Contents.RestorePoints = []catalog.RestorePoint{{Name: "rp1", TimeLine: 1, LSN: lsn(3, 5000), EndLSN: lsn(3, 5100), Time: t0}}
		}
		segs = append(segs, s)
	}
	if err := cat.AddSegments(ctx, segs); err != nil {
		t.Fatal(err)
	}
	for _, b := range []catalog.Backup{
		{ID: "a", StartLSN: lsn(1, 0), StopLSN: lsn(2, 100)},
		{ID: "b", StartLSN: lsn(4, 0), StopLSN: lsn(5, 100)},
		{ID: "c", StartLSN: lsn(7, 0), StopLSN: lsn(8, 100)},
	} {
		b.ServerID, b.Kind, b.State, b.StartTLI, b.StopTLI, b.StartedAt = srv.ID, catalog.KindBase, catalog.StateDone, 1, 1, t0
		if err := cat.AddBackup(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	r := Resolver{Repo: repo, Server: srv}
	tests := []struct {
		name   string
		id     string
		target Target
		want   string
		err    string
	}{
		{"restore point before two backups", "", Target{Name: "rp1"}, "a", ""},
		{"unknown restore point", "", Target{Name: "nope"}, "", `no restore point named "nope"`},
		{"named backup after the restore point", "c", Target{Name: "rp1"}, "", "restore point \"rp1\" is before backup c"},
		{"time", "", Target{Time: t0.Add(6*time.Minute + 30*time.Second)}, "b", ""},
		{"time stopping at a commit inside a backup", "", Target{Time: t0.Add(3*time.Minute + 30*time.Second)}, "a", ""},
		{"time after the last commit", "", Target{Time: t0.Add(time.Hour)}, "", "no commit or abort after"},
		{"time before every backup", "", Target{Time: t0}, "", "before the end of backup a"},
		{"lsn", "", Target{LSN: lsn(6, 0)}, "b", ""},
		{"lsn after the WAL held", "", Target{LSN: lsn(12, 0)}, "", "after the end of the WAL held"},
		{"immediate", "", Target{Immediate: true}, "c", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := r.Choose(ctx, tt.id, tt.target)
			if tt.err != "" {
				var u *UnreachableError
				if err == nil || !errors.As(err, &u) || !strings.Contains(err.Error(), tt.err) ||
					!strings.Contains(err.Error(), "can recover server main from") {
					t.Fatalf("err = %v, want a refusal with %q and the window", err, tt.err)
				}
				return
			}
			if err != nil || b.ID != tt.want {
				t.Fatalf("chose %q, %v; want %q", b.ID, err, tt.want)
			}
		})
	}
}
