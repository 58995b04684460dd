package pgtest

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/walhub/walhub/walname"
)

// TestPrimaryStandbyReplayAndTeardown is the harness's own proof: a primary
// with pgbench data, a physical slot, a standby made from it that replays
// through the slot, promotion, and every directory gone afterwards.
func TestPrimaryStandbyReplayAndTeardown(t *testing.T) {
	t.Parallel()
	var dirs []string
	t.Run("clusters", func(t *testing.T) {
		p := NewPrimary(t, "primary", Options{})
		dirs = append(dirs, p.Dir)
		if got := p.Query("SHOW data_checksums"); got != "on" {
			t.Fatalf("data_checksums = %s, want on", got)
		}
		p.PgbenchInit(1)
		p.CreateSlot("standby1")
		s := p.NewStandby("standby1", StandbyOptions{Slot: "standby1"})
		dirs = append(dirs, s.Dir)
		p.Pgbench(2, 200)
		lsn := p.CurrentLSN()
		s.WaitReplay(lsn, 60*time.Second)
		want := p.Query("SELECT sum(abalance) FROM pgbench_accounts")
		if got := s.Query("SELECT sum(abalance) FROM pgbench_accounts"); got != want {
			t.Fatalf("standby sum = %s, primary %s", got, want)
		}
		if active := p.Query("SELECT active FROM pg_replication_slots WHERE slot_name = 'standby1'"); active != "t" {
			t.Fatalf("slot active = %s", active)
		}
		if p.SlotRestartLSN("standby1") == 0 {
			t.Fatal("slot has no restart_lsn")
		}
		s.Promote()
		if tli := s.TimeLine(); tli != 2 {
			t.Fatalf("promoted standby is on timeline %d, want 2", tli)
		}
		p.Kill9()
		p.Start()
		if got := p.Query("SELECT count(*) > 0 FROM pgbench_accounts"); got != "t" {
			t.Fatalf("after kill -9 and restart: %s", got)
		}
	})
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still exists after the test (err %v)", d, err)
		}
	}
}

// TestSmallSegments checks that a primary with 1 MiB segments can be made.
func TestSmallSegments(t *testing.T) {
	t.Parallel()
	p := NewPrimary(t, "small", Options{SegmentSizeMB: 1})
	if got := p.Query("SHOW wal_segment_size"); got != "1MB" {
		t.Fatalf("wal_segment_size = %s", got)
	}
	if n, _ := strconv.Atoi(p.Query("SELECT 1")); n != 1 {
		t.Fatal("query failed")
	}
}

// TestSwitchWALReturnsTheEndOfTheSegmentItCompleted: while another session
// writes WAL all the time, SwitchWAL still returns a segment boundary that
// the server has reached, the end of the segment it completed: a test that
// waits for the segments before it to be stored waits for complete ones
// only. (Read afterwards with pg_current_wal_lsn(), it would lie in the next,
// incomplete segment: an outage test waited three minutes for one.)
func TestSwitchWALReturnsTheEndOfTheSegmentItCompleted(t *testing.T) {
	t.Parallel()
	p := NewPrimary(t, "switch", Options{SegmentSizeMB: 1})
	const segSize = 1 << 20
	conn := p.Connect("postgres")
	ctx, stop := context.WithCancel(context.Background())
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		for ctx.Err() == nil {
			// Small records, one at a time, non-transactional: WAL written
			// between any two statements of the test.
			conn.Exec(ctx, "SELECT pg_logical_emit_message(false, 'pgtest', 'x')")
		}
	}()
	defer func() { stop(); <-writing }()
	for range 5 {
		lsn := p.SwitchWAL()
		if off := walname.SegmentOffset(lsn, segSize); off != 0 {
			t.Fatalf("SwitchWAL returned %s, %d bytes into a segment: not the end of the segment it completed", lsn, off)
		}
		if now := p.CurrentLSN(); now < lsn {
			t.Fatalf("SwitchWAL returned %s, beyond the server's %s", lsn, now)
		}
	}
}
