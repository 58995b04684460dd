package retention

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// fixture is a repository with 4 daily done backups, each starting 10
// segments after the previous, and segments 5..49 stored.
type fixture struct {
	cat  *catalog.Catalog
	repo *repository.Repository
	srv  catalog.Server
	cfg  *config.Server
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	root := t.TempDir()
	repo, err := repository.OpenLocal(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	cat := repo.Catalog
	srv, _ := cat.EnsureServer(ctx, "main")
	if err := cat.BindIdentity(ctx, srv.ID, "1", segSize); err != nil {
		t.Fatal(err)
	}
	put := func(rel string) {
		w, err := repo.Store.Create(ctx, rel, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "x")
		if _, err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range daily(4, nil) {
		b.ServerID, b.StartTLI, b.StopTLI = srv.ID, 1, 1
		b.StoredPath = storage.BackupDir("main", b.ID)
		put(b.StoredPath + "/base.tar.zst")
		if err := cat.AddBackup(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	for n := walname.SegNo(5); n < 50; n++ {
		name := walname.SegmentName(1, n, segSize)
		rel := storage.SegmentPath("main", name, "zstd")
		put(rel)
		if err := cat.AddSegment(ctx, catalog.Segment{ServerID: srv.ID, TimeLine: 1, SegNo: n, Name: name, Size: segSize,
			StoredSize: 1, Compression: "zstd", Checksum: "crc32c:00000000", StoredPath: rel}); err != nil {
			t.Fatal(err)
		}
	}
	put(storage.HistoryPath("main", 2))
	cfg := &config.Server{Name: "main", Retention: config.Retention{Redundancy: 2, MinRedundancy: 1}}
	return fixture{cat, repo, srv, cfg}
}

// exists tells whether the store holds the object key, or objects below it
// (a backup's directory).
func (f fixture) exists(t *testing.T, key string) bool {
	t.Helper()
	ctx := context.Background()
	if _, err := f.repo.Store.Stat(ctx, key); err == nil {
		return true
	} else if !errors.Is(err, storage.ErrNotExist) {
		t.Fatal(err)
	}
	found := false
	if err := f.repo.Store.List(ctx, key+"/", func(storage.ObjectInfo) error { found = true; return nil }); err != nil {
		t.Fatal(err)
	}
	return found
}

func TestExpireRemovesObsoleteBackupsAndTheirWAL(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	dry, err := Expire(ctx, Options{Server: f.cfg, Repo: f.repo, DryRun: true, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Removed()) != 2 || dry.RemovedSegments != 25 || !f.exists(t, storage.BackupDir("main", "b0")) {
		t.Fatalf("dry run: removed %d backups, %d segments; b0 exists=%v", len(dry.Removed()), dry.RemovedSegments,
			f.exists(t, storage.BackupDir("main", "b0")))
	}
	// A crash of an earlier expire left b1's row deleted but its files there,
	// and segment 6's row deleted but its file there.
	if err := f.cat.DeleteBackup(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	seg6, _ := f.cat.Segment(ctx, f.srv.ID, walname.SegmentName(1, 6, segSize))
	if err := f.cat.DeleteSegments(ctx, []catalog.Segment{seg6}); err != nil {
		t.Fatal(err)
	}
	rep, err := Expire(ctx, Options{Server: f.cfg, Repo: f.repo, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	// Backups b2, b3 kept (redundancy 2); b2 starts at segment 30.
	if rep.WALBefore != 30 || rep.WALBeforeName != walname.SegmentName(1, 30, segSize) {
		t.Fatalf("WAL kept from %d (%s)", rep.WALBefore, rep.WALBeforeName)
	}
	for id, want := range map[string]bool{"b0": false, "b1": false, "b2": true, "b3": true} {
		if got := f.exists(t, storage.BackupDir("main", id)); got != want {
			t.Errorf("backup %s exists=%v, want %v", id, got, want)
		}
	}
	for n := walname.SegNo(5); n < 50; n++ {
		name := walname.SegmentName(1, n, segSize)
		_, rowErr := f.cat.Segment(ctx, f.srv.ID, name)
		onDisk := f.exists(t, storage.SegmentPath("main", name, "zstd"))
		if want := n >= 30; onDisk != want || (rowErr == nil) != want {
			t.Errorf("segment %d: file=%v row=%v, want both %v", n, onDisk, rowErr == nil, want)
		}
	}
	if !f.exists(t, storage.HistoryPath("main", 2)) {
		t.Error("a .history file was removed")
	}
	joined := strings.Join(rep.Orphans, " ")
	if !strings.Contains(joined, "backups/b1") || !strings.Contains(joined, walname.SegmentName(1, 6, segSize)) {
		t.Errorf("orphans = %v, want b1's directory and segment 6", rep.Orphans)
	}
	again, err := Expire(ctx, Options{Server: f.cfg, Repo: f.repo, Now: now})
	if err != nil || len(again.Removed()) != 0 || again.RemovedSegments != 0 || len(again.Orphans) != 0 {
		t.Fatalf("a second expire must find nothing: %+v, %v", again, err)
	}
}

func TestExpireRefusedWhileBackupRuns(t *testing.T) {
	f := newFixture(t)
	l, err := f.repo.Work.Lock("main", "backup", "b9")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	_, err = Expire(context.Background(), Options{Server: f.cfg, Repo: f.repo, Now: now})
	var held *lock.HeldError
	if !errors.As(err, &held) || held.Holder.Command != "backup" {
		t.Fatalf("err = %v, want refusal naming the backup", err)
	}
	if !f.exists(t, storage.BackupDir("main", "b0")) {
		t.Fatal("a refused expire removed something")
	}
}

func TestExpireNeverRemovesRunningBackup(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	running := catalog.Backup{ID: "b9", ServerID: f.srv.ID, Kind: catalog.KindBase, State: catalog.StateRunning,
		StartedAt: now.Add(-10 * 24 * time.Hour), StoredPath: storage.BackupDir("main", "b9")}
	if err := f.cat.AddBackup(ctx, running); err != nil {
		t.Fatal(err)
	}
	rep, err := Expire(ctx, Options{Server: f.cfg, Repo: f.repo, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range rep.Removed() {
		if b.ID == "b9" {
			t.Fatal("a running backup was removed")
		}
	}
	if _, err := f.cat.Backup(ctx, "b9"); err != nil {
		t.Fatal(err)
	}
}
