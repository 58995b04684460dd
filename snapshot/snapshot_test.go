package snapshot

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/test/pgtest"
)

func newManager(t *testing.T, p *pgtest.Cluster, timeout time.Duration) *Manager {
	t.Helper()
	root := t.TempDir()
	cfg, err := config.Parse("repository = \"" + root + "\"\n[[server]]\nname = \"main\"\nconninfo = \"" + p.ConnString("") + "\"\n")
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(context.Background(), filepath.Join(root, storage.CatalogFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	m := &Manager{Config: cfg, Catalog: cat, Repo: storage.Local{Root: root}, Timeout: timeout}
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
	_, err = lock.Acquire(filepath.Join(m.Repo.Root, storage.LockPath("main")), "backup", "")
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
	b, err := m.Catalog.Backup(ctx, started.BackupID)
	if err != nil || b.State != catalog.StateDone || b.Kind != catalog.KindSnapshot || b.BackupLabel != stopped.BackupLabel {
		t.Fatalf("catalog row = %+v, %v", b, err)
	}
	if _, held, _ := lock.Read(filepath.Join(m.Repo.Root, storage.LockPath("main"))); held {
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
		b, err := m.Catalog.Backup(ctx, started.BackupID)
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
	m2 := &Manager{Config: m.Config, Catalog: m.Catalog, Repo: m.Repo}
	if err := m2.FailInterrupted(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := m.Catalog.Backup(ctx, started.BackupID)
	if b.State != catalog.StateFailed || !strings.Contains(b.Reason, "daemon restarted") {
		t.Fatalf("after restart: %+v", b)
	}
}
