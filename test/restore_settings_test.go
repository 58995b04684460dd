package test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walhub/walhub/test/pgtest"
)

// TestRestoreOfAStandbysBackup backs up a standby (the hub streams from it and
// takes the backup there), so the backup brings the standby's
// primary_conninfo and standby.signal along. A point-in-time restore of it
// must run as a recovery that ends, not as a standby; a --standby restore
// without --primary-conninfo must follow the hub alone, and so cross the
// standby's promotion to timeline 2 while the old primary keeps writing on
// timeline 1.
func TestRestoreOfAStandbysBackup(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{})
	p.PgbenchInit(1)
	sb := p.NewStandby("standby", pgtest.StandbyOptions{})
	s := newSiteOn(t, p, sb)
	// A standby cannot switch WAL: the primary does, so the backup's stop
	// segment is completed and reaches the hub.
	stop := keepSwitchingWAL(p)
	s.walhub("backup", "--server", "main")
	stop()
	p.Pgbench(2, 200)
	want := p.Query(checksum)
	s.waitArchived()

	pitrDir := pgtest.TempDir(t, "pitr") + "/data"
	out := s.walhub("restore", "--server", "main", "--target-dir", pitrDir, "--walfetch-token-file", s.tokenFile)
	for _, w := range []string{"recovery.signal written", "removed standby.signal", "commented out postgresql.auto.conf"} {
		if !strings.Contains(out, w) {
			t.Fatalf("restore output lacks %q:\n%s", w, out)
		}
	}
	pitr := startRestored(t, "pitr", pitrDir)
	pitr.WaitFor(90*time.Second, "the point-in-time restore to end recovery", func() bool {
		out, err := pitr.TryQuery("SELECT pg_is_in_recovery()")
		return err == nil && out == "f"
	})
	if got := pitr.Query(checksum); got != want {
		t.Fatal("the point-in-time restore has other data than the primary's")
	}

	standbyDir := pgtest.TempDir(t, "archive-standby") + "/data"
	out = s.walhub("restore", "--server", "main", "--target-dir", standbyDir, "--standby", "--walfetch-token-file", s.tokenFile)
	if !strings.Contains(out, "primary_conninfo = ''") || !strings.Contains(out, "standby.signal written") {
		t.Fatalf("restore --standby output:\n%s", out)
	}
	r := startRestored(t, "archive-standby", standbyDir)
	p.Pgbench(1, 100)
	r.WaitReplay(s.waitArchived(), 120*time.Second)

	// Failover: the standby the hub streams from is promoted to timeline 2;
	// the old primary goes on writing on timeline 1 past the switch point.
	sb.Promote()
	p.Pgbench(1, 200)
	p.SwitchWAL()
	sb.Query("CREATE TABLE after_promotion AS SELECT 42 AS x")
	sb.SwitchWAL()
	r.WaitFor(120*time.Second, "the restored standby to follow the promotion to timeline 2", func() bool {
		out, err := r.TryQuery("SELECT x FROM after_promotion")
		return err == nil && out == "42"
	})
}

// keepSwitchingWAL writes a little and switches WAL on c every 300 ms until
// the returned function is called.
func keepSwitchingWAL(c *pgtest.Cluster) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(300 * time.Millisecond):
			}
			c.TryQuery("CREATE TABLE IF NOT EXISTS wal_tick (x int); INSERT INTO wal_tick VALUES (1); SELECT pg_switch_wal()")
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}
