package snapshot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/test/pgtest"
)

func newManager(t *testing.T, p *pgtest.Cluster, timeout time.Duration) *Manager {
	t.Helper()
	root := t.TempDir()
	cfg, err := config.Parse("repository = \"" + root + "\"\n[[server]]\nname = \"main\"\nconninfo = \"" + p.ConnString("") + "\"\n")
	if err != nil {
		t.Fatal(err)
	}
	repo, err := repository.OpenLocal(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	m := &Manager{Config: cfg, Repo: repo, Timeout: timeout}
	t.Cleanup(m.Close)
	return m
}

func TestSnapshotStartStopRecordsLabel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pgtest.NewPrimary(t, "snap", pgtest.Options{})
	m := newManager(t, p, time.Hour)
	if _, err := m.Stop(ctx, "main"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("stop without start: %v", err)
	}
	started, err := m.Start(ctx, "main", "nightly", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, "main", "again", true); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second start: %v", err)
	}
	// The lock keeps a backup or expire out meanwhile.
	_, err = m.Repo.Work.Lock("main", "backup", "")
	var held *lock.HeldError
	if !errors.As(err, &held) || held.Holder.Command != "snapshot" {
		t.Fatalf("backup during snapshot: %v", err)
	}
	if got := p.Query("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND state = 'idle'"); got == "0" {
		t.Fatal("the session holding pg_backup_start is gone")
	}
	p.GenerateWAL(2)
	stopped, err := m.Stop(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stopped.BackupLabel, "START WAL LOCATION: "+started.StartLSN.String()) ||
		!strings.Contains(stopped.BackupLabel, "LABEL: nightly") || stopped.StopLSN <= started.StartLSN {
		t.Fatalf("stopped = %+v", stopped)
	}
	b, err := m.Repo.Catalog.Backup(ctx, started.BackupID)
	if err != nil || b.State != catalog.StateDone || b.Kind != catalog.KindSnapshot || b.BackupLabel != stopped.BackupLabel {
		t.Fatalf("catalog row = %+v, %v", b, err)
	}
	if _, held, _ := m.Repo.Work.ReadLock("main"); held {
		t.Fatal("lock still held after stop")
	}
}

func TestAbandonedSnapshotTimesOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pgtest.NewPrimary(t, "snapto", pgtest.Options{})
	m := newManager(t, p, 2*time.Second)
	started, err := m.Start(ctx, "main", "", false)
	if err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 30*time.Second, "the snapshot to be abandoned", func() bool {
		b, err := m.Repo.Catalog.Backup(ctx, started.BackupID)
		return err == nil && b.State == catalog.StateFailed && strings.Contains(b.Reason, "abandoned")
	})
	if _, err := m.Stop(ctx, "main"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("stop after timeout: %v", err)
	}
	// The server's backup ended with the session: a new one can start.
	if _, err := m.Start(ctx, "main", "", false); err != nil {
		t.Fatalf("start after an abandoned snapshot: %v", err)
	}
}

func TestDaemonRestartFailsRunningSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pgtest.NewPrimary(t, "snaprs", pgtest.Options{})
	m := newManager(t, p, time.Hour)
	started, err := m.Start(ctx, "main", "", false)
	if err != nil {
		t.Fatal(err)
	}
	// A new daemon: same catalog, no sessions.
	m2 := &Manager{Config: m.Config, Repo: m.Repo}
	if err := m2.FailInterrupted(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := m.Repo.Catalog.Backup(ctx, started.BackupID)
	if b.State != catalog.StateFailed || !strings.Contains(b.Reason, "daemon restarted") {
		t.Fatalf("after restart: %+v", b)
	}
}

// Two servers' snapshots started in the same second get distinct backup IDs
// (they used to collide on the catalog's unique ID, failing the second).
func TestSnapshotsOfTwoServersStartedTogetherBothStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pgtest.NewPrimary(t, "snap2", pgtest.Options{})
	root := t.TempDir()
	cfg, err := config.Parse(fmt.Sprintf("repository = %q\n[[server]]\nname = \"a\"\nconninfo = %q\n[[server]]\nname = \"b\"\nconninfo = %q\n",
		root, p.ConnString(""), p.ConnString("")))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := repository.OpenLocal(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	m := &Manager{Config: cfg, Repo: repo, Timeout: time.Hour}
	t.Cleanup(m.Close)
	// Both within one second, as far as the clock allows: retry until they
	// start in the same second, which is what made them collide.
	for attempt := 0; ; attempt++ {
		a, errA := m.Start(ctx, "a", "", true)
		b, errB := m.Start(ctx, "b", "", true)
		if errA != nil || errB != nil {
			t.Fatalf("starting two snapshots: %v; %v", errA, errB)
		}
		if a.BackupID == b.BackupID {
			t.Fatalf("both snapshots got backup ID %s", a.BackupID)
		}
		sameSecond := strings.TrimSuffix(b.BackupID, "-2") == a.BackupID
		for _, s := range []string{"a", "b"} {
			if _, err := m.Stop(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		if sameSecond || attempt == 5 {
			t.Logf("snapshot IDs %s and %s", a.BackupID, b.BackupID)
			return
		}
	}
}

// TestASlowStartHoldsUpNoOtherSnapshot: the start of a snapshot on a server
// that takes long to answer (here one that accepts connections and never
// replies) must not hold up a snapshot of another server, as it did while
// the manager held its one mutex across the connect and the checkpoint.
func TestASlowStartHoldsUpNoOtherSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pgtest.NewPrimary(t, "snapfast", pgtest.Options{})
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			time.AfterFunc(6*time.Second, func() { c.Close() })
		}
	}()
	root := t.TempDir()
	cfg, err := config.Parse(fmt.Sprintf("repository = %q\n[[server]]\nname = \"main\"\nconninfo = %q\n[[server]]\nname = \"slow\"\nconninfo = \"host=127.0.0.1 port=%d user=x sslmode=disable\"\n",
		root, p.ConnString(""), silent.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := repository.OpenLocal(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	m := &Manager{Config: cfg, Repo: repo, Timeout: time.Hour}
	defer m.Close()

	slowDone := make(chan time.Time, 1)
	go func() {
		m.Start(ctx, "slow", "", true)
		slowDone <- time.Now()
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := m.Start(ctx, "slow", "", true); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "starting") {
		t.Errorf("a second start of the slow server: %v", err)
	}
	if _, err := m.Stop(ctx, "slow"); !errors.Is(err, ErrBusy) {
		t.Errorf("stop of the starting snapshot: %v", err)
	}
	if _, err := m.Start(ctx, "main", "", true); err != nil {
		t.Fatal(err)
	}
	mainDone := time.Now()
	if _, err := m.Stop(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	if slow := <-slowDone; !mainDone.Before(slow) {
		t.Fatalf("the snapshot of main started only after the slow server's start gave up (%s later)", mainDone.Sub(slow))
	}
}

// TestStartExplainsAConnectionFailure checks that snapshot start says why it
// could not connect and what to do, in one line, like the other connections.
func TestStartExplainsAConnectionFailure(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr)
	l.Close() // nothing listens there now
	root := t.TempDir()
	cfg, err := config.Parse(fmt.Sprintf("repository = %q\n[[server]]\nname = \"main\"\nconninfo = \"host=127.0.0.1 port=%d user=walhub password=s3cret sslmode=disable connect_timeout=5\"\n",
		root, addr.Port))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := repository.OpenLocal(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	m := &Manager{Config: cfg, Repo: repo, Timeout: time.Hour}
	t.Cleanup(m.Close)
	_, err = m.Start(context.Background(), "main", "x", true)
	if err == nil {
		t.Fatal("snapshot start with nothing listening succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "connection refused") || !strings.Contains(msg, "-- fix: is PostgreSQL running") ||
		strings.Contains(msg, "\n") || strings.Contains(msg, "s3cret") {
		t.Errorf("snapshot start: %q, want one line with the cause and the fix", msg)
	}
}
