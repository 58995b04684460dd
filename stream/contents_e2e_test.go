package stream_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
)

// TestReceiverIndexesRestorePointsAndCommits checks the WAL index the
// receiver keeps as it stores segments, across receiver restarts: every
// restore point with the LSN pg_create_restore_point returned, and per
// segment as many commits and aborts as pg_waldump shows in the same WAL.
func TestReceiverIndexesRestorePointsAndCommits(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "walindex", pgtest.Options{SegmentSizeMB: 1, Conf: []string{"wal_keep_size = 1GB"}})
	tr := newTestRepo(t)
	srv := serverConfig(t, tr, pg, "main", "")
	_, stop := runReceiver(t, tr, srv)
	pg.PgbenchInit(1)
	want := map[string]walname.LSN{}
	for round := range 3 {
		wait := pg.StartPgbench(2, 3*time.Second)
		for i := range 5 {
			name := fmt.Sprintf("rp-%d-%d", round, i)
			lsn, err := walname.ParseLSN(pg.Query(fmt.Sprintf("SELECT pg_create_restore_point('%s')", name)))
			if err != nil {
				t.Fatal(err)
			}
			want[name] = lsn
			pg.GenerateWAL(1)
		}
		wait()
		if round < 2 {
			// A restart: the next segment is read on from the state recorded with the last one.
			waitStored(t, tr, "main", 1, pg.SwitchWAL())
			stop()
			pg.GenerateWAL(1)
			_, stop = runReceiver(t, tr, srv)
		}
	}
	end := pg.SwitchWAL()
	waitStored(t, tr, "main", 1, end)
	stop()

	ctx := context.Background()
	id, segSize := serverID(t, tr, "main")
	rps, err := tr.cat.RestorePoints(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]walname.LSN{}
	for _, rp := range rps {
		got[rp.Name] = rp.EndLSN
		if time.Since(rp.Time).Abs() > time.Hour || rp.TimeLine != 1 || rp.LSN >= rp.EndLSN {
			t.Errorf("restore point %+v", rp)
		}
	}
	for name, lsn := range want {
		if got[name] != lsn {
			t.Errorf("restore point %s ends at %s in the index, pg_create_restore_point said %s", name, got[name], lsn)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d restore points indexed, %d made", len(got), len(want))
	}
	if todo, err := tr.cat.SegmentsWithoutContents(ctx, id, 10); err != nil || len(todo) > 0 {
		t.Fatalf("segments without contents: %d, %v", len(todo), err)
	}

	first, last := checkTimeLine(t, tr, "main", 1)
	segs, err := tr.cat.SegmentContentsRange(ctx, id, 1, first, last+1)
	if err != nil {
		t.Fatal(err)
	}
	var xacts int64
	for _, s := range segs {
		xacts += s.Xacts
	}
	// pg_waldump over the same segments, in the primary's pg_wal.
	cmd := exec.Command(pgtest.Bin(t, "pg_waldump"), "-p", filepath.Join(pg.DataDir, "pg_wal"), "-r", "Transaction",
		walname.SegmentName(1, first, segSize), walname.SegmentName(1, last, segSize))
	out, _ := cmd.CombinedOutput()
	n := len(regexp.MustCompile(`desc: (COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED) `).FindAllString(string(out), -1))
	if n < 100 || int64(n) != xacts {
		t.Errorf("the index holds %d commits and aborts in segments %d..%d, pg_waldump shows %d\n%s", xacts, first, last, n,
			tail([]byte(strings.TrimSpace(string(out))), 300))
	}

	// An archive stored before the index existed is read at the receiver's
	// start, to the same result.
	if err := tr.cat.ClearSegmentContents(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, stop = runReceiver(t, tr, srv)
	pgtest.WaitFor(t, 60*time.Second, "the backfill", func() bool {
		todo, err := tr.cat.SegmentsWithoutContents(ctx, id, 1)
		return err == nil && len(todo) == 0
	})
	stop()
	again, err := tr.cat.RestorePoints(ctx, id, "")
	if err != nil || len(again) != len(rps) {
		t.Fatalf("after the backfill: %d restore points, %v; want %d", len(again), err, len(rps))
	}
	for i := range rps {
		if again[i] != rps[i] {
			t.Errorf("after the backfill: %+v, want %+v", again[i], rps[i])
		}
	}
}
