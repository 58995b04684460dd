package test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
)

// TestExpireKeepsTwoBackupsAndTheirWAL takes three backups with redundancy 2
// (expire runs after each backup), checks that the oldest backup and the WAL
// before the second one's start are gone and nothing else, that a PITR
// between the second and third backups still works, and that an expire is
// refused while a backup runs.
func TestExpireKeepsTwoBackupsAndTheirWAL(t *testing.T) {
	t.Parallel()
	s := newSite(t, pgtest.Options{SegmentSizeMB: 1})
	os.WriteFile(s.config, append(mustRead(t, s.config), []byte("[server.retention]\nredundancy = 2\n")...), 0o600)
	p := s.primary
	p.PgbenchInit(1)
	var ids []string
	for i := 0; i < 3; i++ {
		p.Pgbench(2, 200)
		s.walhub("backup", "--server", "main")
		ids = append(ids, newestBackup(t, s).ID)
		if i == 1 {
			p.Pgbench(2, 200)
		}
	}
	// Between backups 2 and 3 sits the restore point we recover to below.
	list := s.walhub("list-backups", "--server", "main")
	if strings.Contains(list, ids[0]) || !strings.Contains(list, ids[1]) || !strings.Contains(list, ids[2]) {
		t.Fatalf("after three backups with redundancy 2, list-backups shows:\n%s", list)
	}
	if _, err := os.Stat(filepath.Join(s.repo, storage.BackupDir("main", ids[0]))); !os.IsNotExist(err) {
		t.Fatalf("the expired backup's files remain: %v", err)
	}
	cat := openCatalog(t, s)
	srv, _ := cat.ServerByName(context.Background(), "main")
	second, _ := cat.Backup(context.Background(), ids[1])
	ranges, _ := cat.SegmentRanges(context.Background(), srv.ID)
	keepFrom := walname.SegmentOf(second.StartLSN, srv.SegmentSize)
	if len(ranges) != 1 || ranges[0].First != keepFrom {
		t.Fatalf("WAL held %+v, want it to start at segment %d (the second backup's start)", ranges, keepFrom)
	}
	missing, _ := cat.MissingSegments(context.Background(), srv.ID, 1, ranges[0].First, ranges[0].Last+1)
	if len(missing) != 0 {
		t.Fatalf("expire left holes in the WAL it kept: %v", missing)
	}
	dry := s.walhub("expire", "--server", "main", "--dry-run")
	if !strings.Contains(dry, "one of the newest 2") {
		t.Fatalf("expire --dry-run does not say why it keeps backups:\n%s", dry)
	}

	// An expire is refused while a backup runs (a slow one: --max-rate).
	slow := exec.Command(filepath.Join(binDir, "walhub"), "backup", "--server", "main", "--max-rate", "1024", "--config", s.config)
	var slowOut bytes.Buffer
	slow.Stdout, slow.Stderr = &slowOut, &slowOut
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- slow.Wait() }()
	// Watch the lock without taking it: an expire run while the backup is
	// still starting would take the lock first and make the backup fail.
	work := storage.OpenWorkArea(s.repo) // s.repo holds the working area: catalog.db, the locks
	pgtest.WaitFor(t, 30*time.Second, "the slow backup to take the lock", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("the slow backup ended (%v) before it held the lock:\n%s", err, slowOut.String())
		default:
		}
		h, held, err := work.ReadLock("main")
		if err != nil {
			t.Fatal(err)
		}
		return held && h.Command == "backup"
	})
	if out, _ := s.tryWalhub("expire", "--server", "main"); !strings.Contains(out, "locked by backup") {
		t.Fatalf("expire during a backup:\n%s", out)
	}
	slow.Process.Signal(syscall.SIGTERM)
	<-exited
	if got := newestBackup(t, s); got.State != catalog.StateFailed {
		t.Fatalf("an interrupted backup is %s, want failed", got.State)
	}

	// A PITR to a point after the oldest kept backup still works.
	p.Pgbench(2, 100)
	want := p.Query(checksum)
	p.Query("SELECT pg_create_restore_point('after_expire')")
	p.Pgbench(2, 100)
	s.waitArchived()
	dir := filepath.Join(pgtest.TempDir(t, "pitr"), "data")
	s.walhub("restore", "--server", "main", "--target-dir", dir, "--backup", ids[1], "--target-name", "after_expire",
		"--target-action", "promote", "--walfetch-token-file", s.tokenFile)
	c := startRestored(t, "pitr", dir)
	waitPromoted(t, c)
	if got := c.Query(checksum); got != want {
		t.Fatal("PITR from the oldest kept backup reached other data")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openCatalog(t *testing.T, s *site) *catalog.Catalog {
	t.Helper()
	cat, err := catalog.Open(context.Background(), filepath.Join(s.repo, storage.CatalogFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	return cat
}

// newestBackup returns the most recently started backup of server main.
func newestBackup(t *testing.T, s *site) catalog.Backup {
	t.Helper()
	cat := openCatalog(t, s)
	srv, err := cat.ServerByName(context.Background(), "main")
	if err != nil {
		t.Fatal(err)
	}
	list, err := cat.Backups(context.Background(), srv.ID)
	if err != nil || len(list) == 0 {
		t.Fatalf("no backups: %v", err)
	}
	return list[len(list)-1]
}
