package test

import (
	"os"
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

// TestDeltaRestoreOfADivergedFormerPrimaryThenFollowsTheNewOne: after a
// failover the old primary wrote on timeline 1 past the switch point. A delta
// restore from a backup of the new primary (refused while the old one runs)
// must make it a standby that follows the new primary.
func TestDeltaRestoreOfADivergedFormerPrimaryThenFollowsTheNewOne(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{})
	p.PgbenchInit(1)
	sb := p.NewStandby("standby", pgtest.StandbyOptions{})
	s := newSiteOn(t, p, sb)
	sb.WaitReplay(p.CurrentLSN(), 60*time.Second)

	sb.Promote()
	p.Pgbench(2, 200) // the old primary diverges
	sb.Pgbench(2, 200)
	s.walhub("backup", "--server", "main")
	sb.Pgbench(1, 50)

	args := []string{"restore", "--server", "main", "--target-dir", p.DataDir, "--delta", "--standby",
		"--primary-conninfo", sb.ConnString(""), "--walfetch-token-file", s.tokenFile}
	if out, err := s.tryWalhub(args...); err == nil || !strings.Contains(out, "runs on") {
		t.Fatalf("delta restore while the server runs: %v\n%s", err, out)
	}
	p.Stop("fast")
	out := s.walhub(args...)
	if !strings.Contains(out, "delta: wrote") || !strings.Contains(out, "verified against its manifest") {
		t.Fatalf("delta restore output:\n%s", out)
	}
	t.Logf("delta restore: %s", out[strings.Index(out, "delta: wrote"):][:strings.Index(out[strings.Index(out, "delta: wrote"):], "\n")])
	former := startRestored(t, "former-primary", p.DataDir)
	sb.Query("CREATE TABLE after_delta AS SELECT 7 AS x")
	former.WaitReplay(sb.CurrentLSN(), 120*time.Second)
	if got, want := former.Query(checksum), sb.Query(checksum); got != want {
		t.Fatal("the former primary's data differs from the new primary's")
	}
	former.WaitFor(60*time.Second, "the former primary to stream from the new one", func() bool {
		out, err := former.TryQuery("SELECT status FROM pg_stat_wal_receiver")
		return err == nil && out == "streaming"
	})
}

// TestDeadPrimaryRecoveredToItsLastCommit is the RPO-0 story: the hub is the
// primary's synchronous standby, so a commit returns only once the hub has
// fsynced its WAL. The primary is killed with kill -9 and never started
// again; a restore to the end of WAL must hold the last committed row, which
// is in the segment the hub had not completed (its .partial).
func TestDeadPrimaryRecoveredToItsLastCommit(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{Conf: []string{"synchronous_standby_names = 'walhub_main'"}})
	s := newSiteOn(t, p, p, "synchronous = true")
	p.PgbenchInit(1)
	p.WaitFor(60*time.Second, "the hub to be the synchronous standby", func() bool {
		out, err := p.TryQuery("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'walhub_main'")
		return err == nil && out == "sync"
	})
	s.walhub("backup", "--server", "main")
	p.Pgbench(2, 200)
	p.Query("CREATE TABLE ledger (entry text); INSERT INTO ledger VALUES ('last commit before the crash')")
	want := p.Query(checksum)
	p.Kill9()

	dir := pgtest.TempDir(t, "rpo0") + "/data"
	s.walhub("restore", "--server", "main", "--target-dir", dir, "--walfetch-token-file", s.tokenFile)
	c := startRestored(t, "rpo0", dir)
	waitPromoted(t, c)
	if got, _ := c.TryQuery("SELECT entry FROM ledger"); got != "last commit before the crash" {
		log, _ := os.ReadFile(c.LogFile)
		t.Fatalf("the last commit is not in the restore (ledger: %q)\n%s", got, log)
	}
	if c.Query(checksum) != want {
		t.Fatal("the restore's pgbench data differs from the dead primary's")
	}
	log, _ := os.ReadFile(c.LogFile)
	if !strings.Contains(string(log), ".partial") {
		t.Errorf("the restore's log does not show the .partial used")
	}
}
