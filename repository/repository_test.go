package repository_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	czstd "github.com/DataDog/zstd"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/storetest"
	"github.com/walhub/walhub/walname"
)

const segSize = 1 << 20

// newRepo is a local repository whose store injects faults, with server
// "main" registered.
func newRepo(t *testing.T) (*repository.Repository, *storetest.Faulty, catalog.Server, string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	local, err := storage.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	faulty := storetest.NewFaulty(local)
	work, err := storage.NewWorkArea(dir)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(ctx, work.CatalogPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	srv := addServer(t, cat, "main")
	return repository.New(faulty, work, cat), faulty, srv, dir
}

func addServer(t *testing.T, cat *catalog.Catalog, name string) catalog.Server {
	t.Helper()
	ctx := context.Background()
	srv, err := cat.EnsureServer(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.BindIdentity(ctx, srv.ID, "7300000000000000001", segSize); err != nil {
		t.Fatal(err)
	}
	srv, err = cat.ServerByName(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func segmentData(n walname.SegNo) []byte {
	return bytes.Repeat([]byte{byte(n), 0x5a, byte(n >> 8)}, segSize/3+1)[:segSize]
}

// newStorer makes a repository (newRepo) and a segment storer for its
// server with compression at level 1.
func newStorer(t *testing.T, compression string) (*repository.Repository, catalog.Server, string, *repository.SegmentStorer) {
	t.Helper()
	repo, _, srv, dir := newRepo(t)
	storer, err := repo.SegmentStorer(srv, compression, 1)
	if err != nil {
		t.Fatal(err)
	}
	return repo, srv, dir, storer
}

// Two servers' backups (and snapshots) started in the same second, and two
// processes racing for an ID, get distinct IDs.
func TestBackupIDsAreUniqueAcrossServersAndCommands(t *testing.T) {
	repo, _, main, _ := newRepo(t)
	other := addServer(t, repo.Catalog, "other")
	ctx := context.Background()
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	seen := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv, kind, prefix := main, catalog.KindBase, ""
			if i%2 == 1 {
				srv = other
			}
			if i%4 >= 2 {
				kind, prefix = catalog.KindSnapshot, "snap-"
			}
			b, err := repo.NewBackup(ctx, srv.Name, prefix, catalog.Backup{ServerID: srv.ID, Kind: kind, StartedAt: at})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[b.ID] {
				t.Errorf("backup ID %s given twice", b.ID)
			}
			seen[b.ID] = true
			if b.StoredPath != storage.BackupDir(srv.Name, b.ID) || b.State != catalog.StateRunning {
				t.Errorf("backup %+v", b)
			}
		}()
	}
	wg.Wait()
	for _, id := range []string{"20261202T100000Z", "20261202T100000Z-4", "snap-20261202T100000Z", "snap-20261202T100000Z-4"} {
		if !seen[id] {
			t.Errorf("no backup got ID %s (got %v)", id, seen)
		}
	}
}

// A segment whose object could not be committed has no catalog row, and
// nothing is left in the store; storing it again works. With zstd the
// object's writes fail while the segment is being compressed (random bytes:
// the frame is as large as the segment), or only when the encoder's last
// output is written (a frame of a few bytes, written by the final flush).
func TestSegmentIsDurableBeforeItsRow(t *testing.T) {
	random := make([]byte, segSize)
	r := rand.New(rand.NewPCG(5, 5))
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	for _, tt := range []struct {
		name, compression string
		data              []byte
		failAt            int64
	}{
		{"none", "none", segmentData(5), 1000},
		{"zstd while compressing", "zstd", random, 1000},
		{"zstd at the end", "zstd", segmentData(5), 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			repo, faulty, srv, dir := newRepo(t)
			ctx := context.Background()
			storer, err := repo.SegmentStorer(srv, tt.compression, 1)
			if err != nil {
				t.Fatal(err)
			}
			name := walname.SegmentName(1, 5, segSize)
			src := filepath.Join(dir, "src")
			os.WriteFile(src, tt.data, 0o600)

			faulty.FailWriteAt("main/wal/", tt.failAt, syscall.EIO)
			if _, _, err := storer.StoreFile(ctx, name, src); !errors.Is(err, syscall.EIO) {
				t.Fatalf("StoreFile with a failing store: %v", err)
			}
			if _, err := repo.Catalog.Segment(ctx, srv.ID, name); !errors.Is(err, catalog.ErrNotFound) {
				t.Fatalf("a segment that was not stored has a row: %v", err)
			}
			var keys []string
			repo.Store.List(ctx, "main/", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil })
			if len(keys) != 0 {
				t.Fatalf("the failed store left %v", keys)
			}

			faulty.Heal()
			row, stored, err := storer.StoreFile(ctx, name, src)
			if err != nil || !stored {
				t.Fatalf("StoreFile = %v, %v", stored, err)
			}
			if row.Checksum != checksum.Of(tt.data) || row.Size != segSize {
				t.Fatalf("row %+v", row)
			}
			var got bytes.Buffer
			if err := repo.ReadSegment(ctx, row, &got); err != nil || !bytes.Equal(got.Bytes(), tt.data) {
				t.Fatalf("the stored segment reads back as %d bytes, %v", got.Len(), err)
			}
			info, err := repo.Store.Stat(ctx, row.StoredPath)
			if err != nil || info.Meta["checksum"] != row.Checksum || info.Meta["size"] != "1048576" || info.Meta["system-id"] != srv.SystemID {
				t.Fatalf("object %+v, %v: does not carry its row's checksum, size and system id", info, err)
			}
			if _, stored, err := storer.StoreFile(ctx, name, src); err != nil || stored {
				t.Fatalf("storing a cataloged segment again: stored %v, %v", stored, err)
			}
		})
	}
}

// A failed backup leaves nothing, not even what a killed writer left; its
// row says why.
func TestFailBackupRemovesEverything(t *testing.T) {
	repo, _, srv, dir := newRepo(t)
	ctx := context.Background()
	b, err := repo.NewBackup(ctx, srv.Name, "", catalog.Backup{ServerID: srv.ID, Kind: catalog.KindBase})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := repo.CreateBackupFile(ctx, b, "base.tar.zst")
	io.WriteString(w, "archive")
	w.Commit(ctx)
	dead, _ := repo.CreateBackupFile(ctx, b, "16384.tar.zst") // a writer killed half-way: never aborted
	io.WriteString(dead, "half")

	b, err = repo.FailBackup(b, "interrupted")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, b.StoredPath)); !errors.Is(err, os.ErrNotExist) {
		entries, _ := os.ReadDir(filepath.Join(dir, b.StoredPath))
		t.Fatalf("failed backup left %v", entries)
	}
	row, err := repo.Catalog.Backup(ctx, b.ID)
	if err != nil || row.State != catalog.StateFailed || row.Reason != "interrupted" {
		t.Fatalf("row %+v, %v", row, err)
	}
}

// TestFailingABackupThatFinishedMeanwhileChangesNothing is the race of a
// reap (list-backups, verify) with a backup finishing: the reaper read the
// row as running, the backup then finished. Failing it from the stale row
// must neither change the row nor delete the files.
func TestFailingABackupThatFinishedMeanwhileChangesNothing(t *testing.T) {
	repo, _, srv, dir := newRepo(t)
	ctx := context.Background()
	stale, err := repo.NewBackup(ctx, srv.Name, "", catalog.Backup{ServerID: srv.ID, Kind: catalog.KindBase})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := repo.CreateBackupFile(ctx, stale, "base.tar.zst")
	io.WriteString(w, "archive")
	w.Commit(ctx)
	finished := stale
	finished.Files = []catalog.BackupFile{{Name: "base.tar.zst", Size: 7, StoredSize: 7, Compression: "none"}}
	if _, err := repo.FinishBackup(ctx, srv.Name, finished); err != nil {
		t.Fatal(err)
	}

	if _, err := repo.FailBackup(stale, "interrupted"); !errors.Is(err, repository.ErrNotRunning) {
		t.Fatalf("failing a finished backup from a stale row: %v", err)
	}
	row, err := repo.Catalog.Backup(ctx, stale.ID)
	if err != nil || row.State != catalog.StateDone || len(row.Files) != 1 {
		t.Fatalf("row after the stale fail: %+v, %v", row, err)
	}
	if _, err := os.Stat(filepath.Join(dir, stale.StoredPath, "base.tar.zst")); err != nil {
		t.Fatalf("the finished backup's files: %v", err)
	}
}

// A finished backup has its info object; removal takes the row first, then
// the objects; a sweep removes objects whose row is gone (a crash in
// between) and segments below the cut-off without a row.
func TestRemoveBackupAndSweep(t *testing.T) {
	repo, _, srv, _ := newRepo(t)
	ctx := context.Background()
	newDone := func() catalog.Backup {
		b, err := repo.NewBackup(ctx, srv.Name, "", catalog.Backup{ServerID: srv.ID, Kind: catalog.KindBase})
		if err != nil {
			t.Fatal(err)
		}
		w, _ := repo.CreateBackupFile(ctx, b, "base.tar")
		io.WriteString(w, "archive")
		w.Commit(ctx)
		if b, err = repo.FinishBackup(ctx, srv.Name, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b1, b2 := newDone(), newDone()
	if _, err := repo.Store.Stat(ctx, b1.StoredPath+"/"+repository.InfoName); err != nil {
		t.Fatalf("finished backup has no info object: %v", err)
	}

	// A crash between removing b1's row and its objects.
	if err := repo.Catalog.DeleteBackup(ctx, b1.ID); err != nil {
		t.Fatal(err)
	}
	if err := repo.RemoveBackup(ctx, srv.Name, b2); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Catalog.Backup(ctx, b2.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("removed backup's row: %v", err)
	}

	storer, _ := repo.SegmentStorer(srv, "zstd", 1)
	var segs []catalog.Segment
	for n := walname.SegNo(1); n <= 4; n++ {
		row, err := storer.Store(ctx, walname.SegmentName(1, n, segSize), segmentData(n))
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, row)
	}
	// Segment 1's row is gone but its object stayed (a crash in an expire).
	if err := repo.Catalog.DeleteSegments(ctx, segs[:1]); err != nil {
		t.Fatal(err)
	}
	orphans, err := repo.Sweep(ctx, srv, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{b1.StoredPath, segs[0].StoredPath}
	if strings.Join(orphans, " ") != strings.Join(want, " ") {
		t.Fatalf("Sweep removed %v, want %v", orphans, want)
	}
	var keys []string
	repo.Store.List(ctx, "main/", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil })
	if len(keys) != 3 {
		t.Fatalf("after the sweep the store holds %v, want segments 2..4", keys)
	}
	if n, err := repo.RemoveSegments(ctx, segs[1:2]); err != nil || n != segs[1].StoredSize {
		t.Fatalf("RemoveSegments = %d, %v", n, err)
	}
	if _, err := repo.Store.Stat(ctx, segs[1].StoredPath); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("removed segment's object: %v", err)
	}
}

// The catalog re-created from the store alone equals the one that was lost:
// servers with their identity, segments (compressed or not, with meta or,
// as written by older versions, without), histories, finished backups,
// recorded gaps with their reasons;
// unfinished backups are reported, not cataloged.
func TestRebuildRecreatesTheCatalogFromTheStore(t *testing.T) {
	repo, _, srv, dir := newRepo(t)
	ctx := context.Background()
	zstdStorer, _ := repo.SegmentStorer(srv, "zstd", 1)
	for n := walname.SegNo(3); n <= 6; n++ {
		if _, err := zstdStorer.Store(ctx, walname.SegmentName(1, n, segSize), segmentData(n)); err != nil {
			t.Fatal(err)
		}
	}
	plainStorer, _ := repo.SegmentStorer(srv, "none", 1)
	if _, err := plainStorer.Store(ctx, walname.SegmentName(2, 7, segSize), segmentData(7)); err != nil {
		t.Fatal(err)
	}
	// A segment as an older walhub stored it: no meta.
	old := walname.SegmentName(2, 8, segSize)
	w, _ := repo.Store.Create(ctx, storage.SegmentPath("main", old, "none"), nil)
	w.Write(segmentData(8))
	w.Commit(ctx)
	if err := repo.Catalog.AddSegment(ctx, catalog.Segment{ServerID: srv.ID, TimeLine: 2, SegNo: 8, Name: old, Size: segSize,
		StoredSize: segSize, Compression: "none", Checksum: checksum.Of(segmentData(8)),
		StoredPath: storage.SegmentPath("main", old, "none"), ReceivedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := repo.StoreHistory(ctx, srv, 2, []byte("1\t0/7000000\tno recovery target specified\n")); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{catalog.KindBase, catalog.KindSnapshot, "unfinished"} {
		k := kind
		if kind == "unfinished" {
			k = catalog.KindBase
		}
		b, err := repo.NewBackup(ctx, "main", "", catalog.Backup{ServerID: srv.ID, Kind: k, StartLSN: 0x3000028, StartTLI: 1,
			StopLSN: 0x5000100, StopTLI: 1, StartedAt: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), BackupLabel: "label " + kind})
		if err != nil {
			t.Fatal(err)
		}
		if k == catalog.KindBase {
			w, _ := repo.CreateBackupFile(ctx, b, "base.tar.zst")
			io.WriteString(w, "archive of "+kind)
			n, _ := w.Commit(ctx)
			b.Files = []catalog.BackupFile{{Name: "base.tar.zst", Size: 100, StoredSize: n, Compression: "zstd", SHA256Stored: "ab"}}
			b.OriginalSize, b.StoredSize = 100, n
		}
		if kind == "unfinished" {
			continue
		}
		b.FinishedAt = time.Date(2026, 12, 1, 10, 5, 0, 0, time.UTC)
		if _, err := repo.FinishBackup(ctx, "main", b); err != nil {
			t.Fatal(err)
		}
	}
	// WAL the server removed before the receiver got it.
	if err := repo.RecordGap(ctx, srv, catalog.Gap{TimeLine: 1, StartLSN: walname.SegmentStart(1, segSize),
		EndLSN: walname.SegmentStart(3, segSize), Reason: "requested WAL segment has already been removed",
		DetectedAt: time.Date(2026, 12, 1, 9, 0, 0, 123, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	// The unfinished one is running in the old catalog; it is not in the new.
	before := catalogDump(t, repo.Catalog, "main", true)
	if !strings.Contains(before, "gap 1 ") {
		t.Fatalf("the gap is not in the catalog:\n%s", before)
	}

	fresh, err := catalog.Open(ctx, filepath.Join(dir, "rebuilt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	rebuilt := repository.New(repo.Store, repo.Work, fresh)
	rep, err := rebuilt.Rebuild(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Segments != 6 || rep.TimeLines != 1 || rep.Backups != 2 || rep.Gaps != 1 || rep.Checksummed != 1 || len(rep.Skipped) != 1 {
		t.Fatalf("report %+v", rep)
	}
	if after := catalogDump(t, fresh, "main", false); after != before {
		t.Fatalf("rebuilt catalog differs:\n%s\nwant\n%s", after, before)
	}
	if _, err := rebuilt.Rebuild(ctx); err == nil {
		t.Fatal("a second rebuild into a catalog with rows was accepted")
	}
}

// catalogDump is what status and restore read from a catalog, as text;
// without running, only finished backups are shown.
func catalogDump(t *testing.T, cat *catalog.Catalog, server string, skipRunning bool) string {
	t.Helper()
	ctx := context.Background()
	srv, err := cat.ServerByName(ctx, server)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "server %s %s %d\n", srv.Name, srv.SystemID, srv.SegmentSize)
	ranges, _ := cat.SegmentRanges(ctx, srv.ID)
	fmt.Fprintf(&sb, "ranges %+v\n", ranges)
	for _, r := range ranges {
		segs, _ := cat.Segments(ctx, srv.ID, r.TimeLine, r.First, r.Last+1)
		for _, s := range segs {
			fmt.Fprintf(&sb, "segment %s %d %d %s %s %s\n", s.Name, s.Size, s.StoredSize, s.Compression, s.Checksum, s.StoredPath)
		}
	}
	tls, _ := cat.TimeLines(ctx, srv.ID)
	for _, tl := range tls {
		fmt.Fprintf(&sb, "timeline %d %q %s\n", tl.TimeLine, tl.History, tl.StoredPath)
	}
	backups, _ := cat.Backups(ctx, srv.ID)
	for _, b := range backups {
		if skipRunning && b.State == catalog.StateRunning {
			continue
		}
		b.ServerID = 0
		fmt.Fprintf(&sb, "backup %+v\n", b)
	}
	gaps, _ := cat.Gaps(ctx, srv.ID)
	for _, g := range gaps {
		fmt.Fprintf(&sb, "gap %d %s-%s %q %s\n", g.TimeLine, g.StartLSN, g.EndLSN, g.Reason, g.DetectedAt.UTC().Format(time.RFC3339Nano))
	}
	return sb.String()
}

// A read-only hub's catalog follows the store another hub writes: Refresh
// adds what appeared (segments, histories, finished backups, gaps), deletes the
// rows of what was removed, and changes nothing when nothing changed.
func TestRefreshFollowsTheStore(t *testing.T) {
	writer, _, srv, dir := newRepo(t)
	ctx := context.Background()
	storer, _ := writer.SegmentStorer(srv, "zstd", 1)
	var segs []catalog.Segment
	for n := walname.SegNo(3); n <= 5; n++ {
		seg, err := storer.Store(ctx, walname.SegmentName(1, n, segSize), segmentData(n))
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, seg)
	}
	b, err := writer.NewBackup(ctx, "main", "", catalog.Backup{ServerID: srv.ID, Kind: catalog.KindBase, StartLSN: 0x3000028, StartTLI: 1,
		StopLSN: 0x4000100, StopTLI: 1, StartedAt: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), BackupLabel: "label"})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := writer.CreateBackupFile(ctx, b, "base.tar.zst")
	io.WriteString(w, "archive")
	n, _ := w.Commit(ctx)
	b.Files = []catalog.BackupFile{{Name: "base.tar.zst", Size: 100, StoredSize: n, Compression: "zstd", SHA256Stored: "ab"}}
	b.OriginalSize, b.StoredSize, b.FinishedAt = 100, n, time.Date(2026, 12, 1, 10, 5, 0, 0, time.UTC)
	if b, err = writer.FinishBackup(ctx, "main", b); err != nil {
		t.Fatal(err)
	}

	cat, err := catalog.Open(ctx, filepath.Join(dir, "reader.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	reader := repository.New(writer.Store, writer.Work, cat)
	rep, err := reader.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep != (repository.RefreshReport{SegmentsAdded: 3, BackupsAdded: 1, SegmentsIndexed: 3}) {
		t.Fatalf("first refresh: %+v", rep)
	}
	if got, want := catalogDump(t, cat, "main", false), catalogDump(t, writer.Catalog, "main", false); got != want {
		t.Fatalf("refreshed catalog differs:\n%s\nwant\n%s", got, want)
	}
	if rep, err := reader.Refresh(ctx); err != nil || rep.Changed() {
		t.Fatalf("refresh with nothing new: %+v, %v", rep, err)
	}

	// The writer stores more, expires a segment and the backup.
	if _, err := storer.Store(ctx, walname.SegmentName(1, 6, segSize), segmentData(6)); err != nil {
		t.Fatal(err)
	}
	if err := writer.StoreHistory(ctx, srv, 2, []byte("1\t0/7000000\tno recovery target specified\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.RemoveSegments(ctx, segs[:1]); err != nil {
		t.Fatal(err)
	}
	if err := writer.RemoveBackup(ctx, "main", b); err != nil {
		t.Fatal(err)
	}
	if err := writer.RecordGap(ctx, srv, catalog.Gap{TimeLine: 1, StartLSN: walname.SegmentStart(7, segSize),
		EndLSN: walname.SegmentStart(9, segSize), Reason: "replication slot invalidated", DetectedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rep, err = reader.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep != (repository.RefreshReport{SegmentsAdded: 1, SegmentsRemoved: 1, TimeLinesAdded: 1, BackupsRemoved: 1, GapsAdded: 1, SegmentsIndexed: 1}) {
		t.Fatalf("second refresh: %+v", rep)
	}
	if rep, err := reader.Refresh(ctx); err != nil || rep.Changed() {
		t.Fatalf("refresh after the gap: %+v, %v", rep, err)
	}
	// Every segment cataloged was read into the WAL index (restore points,
	// commit times): restores to a name or a time work through this hub.
	followed, err := cat.ServerByName(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	if todo, err := cat.SegmentsWithoutContents(ctx, followed.ID, 10); err != nil || len(todo) != 0 {
		t.Fatalf("after the refresh, %d segments are not in the WAL index (%v)", len(todo), err)
	}
	if got, want := catalogDump(t, cat, "main", false), catalogDump(t, writer.Catalog, "main", false); got != want {
		t.Fatalf("refreshed catalog differs:\n%s\nwant\n%s", got, want)
	}
}

// PutFile runs for many segments at once, each with an encoder of its own:
// every object gives back its own segment, none is cataloged before
// CatalogFile, and CatalogFile in order catalogs them all.
func TestPutFileConcurrently(t *testing.T) {
	for _, compression := range []string{"zstd", "none"} {
		t.Run(compression, func(t *testing.T) {
			repo, srv, dir, storer := newStorer(t, compression)
			ctx := context.Background()
			const n = 8
			rows := make([]catalog.Segment, n)
			srcs := make([]string, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				srcs[i] = filepath.Join(dir, fmt.Sprintf("src%d", i))
				if err := os.WriteFile(srcs[i], segmentData(walname.SegNo(20+i)), 0o600); err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					var cataloged bool
					// Half with the checksum known (the receiver's case), half without.
					sum := ""
					if i%2 == 0 {
						sum = checksum.Of(segmentData(walname.SegNo(20 + i)))
					}
					rows[i], cataloged, errs[i] = storer.PutFile(ctx, walname.SegmentName(1, walname.SegNo(20+i), segSize), srcs[i], sum)
					if cataloged {
						errs[i] = fmt.Errorf("segment %d reported cataloged", 20+i)
					}
				}()
			}
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				if _, err := repo.Catalog.Segment(ctx, srv.ID, rows[i].Name); !errors.Is(err, catalog.ErrNotFound) {
					t.Fatalf("segment %s cataloged by PutFile: %v", rows[i].Name, err)
				}
			}
			for i := range n {
				if _, err := storer.CatalogFile(ctx, rows[i], srcs[i]); err != nil {
					t.Fatal(err)
				}
			}
			for i := range n {
				row, err := repo.Catalog.Segment(ctx, srv.ID, rows[i].Name)
				if err != nil {
					t.Fatal(err)
				}
				var got bytes.Buffer
				if err := repo.ReadSegment(ctx, row, &got); err != nil {
					t.Fatal(err)
				}
				want := segmentData(walname.SegNo(20 + i))
				if !bytes.Equal(got.Bytes(), want) || row.Checksum != checksum.Of(want) {
					t.Errorf("segment %s does not give back its bytes", row.Name)
				}
			}
			// Cataloged segments are not stored again.
			if _, cataloged, err := storer.PutFile(ctx, rows[0].Name, srcs[0], ""); err != nil || !cataloged {
				t.Errorf("PutFile of a cataloged segment: cataloged %v, %v", cataloged, err)
			}
		})
	}
}

// A .partial whose bytes are not what the receiver checksummed as it wrote
// them (changed on disk since) is not stored under that checksum: PutFile
// fails and leaves no object, compressed or copied (the test store cannot
// link: linked, the object is the file itself and keeps the checksum of what
// was received).
func TestPutFileRefusesBytesThatDifferFromTheirChecksum(t *testing.T) {
	for _, compression := range []string{"zstd", "none"} {
		t.Run(compression, func(t *testing.T) {
			repo, srv, dir, storer := newStorer(t, compression)
			ctx := context.Background()
			name := walname.SegmentName(1, 40, segSize)
			data := segmentData(40)
			sent := checksum.Of(data)
			data[segSize/2] ^= 1 // one bit flipped on disk
			src := filepath.Join(dir, "src")
			if err := os.WriteFile(src, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := storer.PutFile(ctx, name, src, sent); err == nil || !strings.Contains(err.Error(), sent) {
				t.Fatalf("PutFile of changed bytes: %v", err)
			}
			key := storage.SegmentPath(srv.Name, name, compression)
			if _, err := repo.Store.Stat(ctx, key); !errors.Is(err, storage.ErrNotExist) {
				t.Fatalf("object %s left: %v", key, err)
			}
			// With the right checksum it is stored, and gives back its bytes.
			row, _, err := storer.PutFile(ctx, name, src, checksum.Of(data))
			if err == nil {
				row, err = storer.CatalogFile(ctx, row, src)
			}
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := repo.ReadSegment(ctx, row, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("stored segment does not give back its bytes: %v", err)
			}
		})
	}
}

// ReadSegment gives back a segment's bytes only when they are the size and
// checksum of its catalog row: an object changed in the store (zstd objects
// carry no frame checksum of their own) is an error, for the WAL index and
// the restore target's resolution alike.
func TestReadSegmentRefusesAChangedObject(t *testing.T) {
	for _, compression := range []string{"zstd", "none"} {
		t.Run(compression, func(t *testing.T) {
			repo, _, dir, storer := newStorer(t, compression)
			ctx := context.Background()
			data := segmentData(50)
			row, err := storer.Store(ctx, walname.SegmentName(1, 50, segSize), data)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := repo.ReadSegment(ctx, row, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("intact segment: %v", err)
			}
			path := filepath.Join(dir, filepath.FromSlash(row.StoredPath))
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0x01
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := repo.ReadSegment(ctx, row, io.Discard); err == nil {
				t.Fatal("a changed object read without error")
			}
			short := row
			short.Size--
			b[len(b)/2] ^= 0x01 // the stored bytes again
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := repo.ReadSegment(ctx, short, io.Discard); err == nil || !strings.Contains(err.Error(), "the catalog says") {
				t.Fatalf("a size other than the row's: %v", err)
			}
		})
	}
}

// A compressed segment's object is written in pieces of 256 kB, not one
// write per zstd block (a few kB each for WAL): each write is a system call
// (or a piece of an upload), and per block they cost the receiver more CPU
// than the bytes. Checked with bytes that compress about 2:1 (half of every
// 64 random), so that the object spans several pieces.
func TestPutFileWritesACompressedObjectInLargePieces(t *testing.T) {
	repo, faulty, srv, dir := newRepo(t)
	storer, err := repo.SegmentStorer(srv, "zstd", 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := make([]byte, segSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		if i%64 < 32 {
			data[i] = byte(rng.IntN(256))
		}
	}
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	name := walname.SegmentName(1, 7, segSize)
	row, _, err := storer.PutFile(ctx, name, src, checksum.Of(data))
	if err != nil {
		t.Fatal(err)
	}
	if max := int(row.StoredSize/(256<<10)) + 1; faulty.Writes() > max {
		t.Errorf("%d bytes stored in %d writes, want at most %d", row.StoredSize, faulty.Writes(), max)
	}
	if row, err = storer.CatalogFile(ctx, row, src); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := repo.ReadSegment(ctx, row, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("stored segment does not give back its bytes: %v", err)
	}
}

// A damaged gap record is left out of a rebuilt catalog and listed as
// skipped; the gaps whose records read well are rebuilt, and a read-only
// hub's refresh takes them too.
func TestRebuildSkipsADamagedGapRecord(t *testing.T) {
	repo, _, srv, dir := newRepo(t)
	ctx := context.Background()
	good := catalog.Gap{TimeLine: 1, StartLSN: walname.SegmentStart(2, segSize), EndLSN: walname.SegmentStart(4, segSize),
		Reason: "requested WAL segment has already been removed", DetectedAt: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	if err := repo.RecordGap(ctx, srv, good); err != nil {
		t.Fatal(err)
	}
	bad := storage.GapPath("main", 1, walname.SegmentStart(6, segSize), walname.SegmentStart(7, segSize))
	w, _ := repo.Store.Create(ctx, bad, nil)
	io.WriteString(w, "{not json")
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		run  func(*repository.Repository) (int, []string, error)
	}{
		{"rebuild", func(r *repository.Repository) (int, []string, error) {
			rep, err := r.Rebuild(ctx)
			return rep.Gaps, rep.Skipped, err
		}},
		{"refresh", func(r *repository.Repository) (int, []string, error) {
			rep, err := r.Refresh(ctx)
			return rep.GapsAdded, nil, err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fresh, err := catalog.Open(ctx, filepath.Join(dir, tt.name+".db"))
			if err != nil {
				t.Fatal(err)
			}
			defer fresh.Close()
			gaps, skipped, err := tt.run(repository.New(repo.Store, repo.Work, fresh))
			if err != nil || gaps != 1 {
				t.Fatalf("%d gaps, %v", gaps, err)
			}
			if tt.name == "rebuild" && (len(skipped) != 1 || !strings.HasPrefix(skipped[0], bad+": ")) {
				t.Fatalf("skipped %q, want %s", skipped, bad)
			}
			followed, _ := fresh.ServerByName(ctx, "main")
			got, err := fresh.Gaps(ctx, followed.ID)
			if err != nil || len(got) != 1 || got[0].StartLSN != good.StartLSN || got[0].Reason != good.Reason || !got[0].DetectedAt.Equal(good.DetectedAt) {
				t.Fatalf("gaps %+v, %v", got, err)
			}
		})
	}
}

// A compression level outside 1..4 is refused when the storer is made,
// not at the first segment.
func TestSegmentStorerRefusesABadLevel(t *testing.T) {
	repo, _, srv, _ := newRepo(t)
	for _, level := range []int{0, 5} {
		if _, err := repo.SegmentStorer(srv, "zstd", level); err == nil || !strings.Contains(err.Error(), "out of range 1..4") {
			t.Errorf("level %d: %v, want out of range", level, err)
		}
	}
	if _, err := repo.SegmentStorer(srv, "none", 0); err != nil {
		t.Errorf("no compression, no level: %v", err)
	}
}

// A compressed segment is a zstd frame for each MiB, each compressed on its
// own, whether stored from a file (the receiver) or from memory (the test
// feeder); read back through one stream, the frames are the segment again.
func TestSegmentIsAFramePerMiB(t *testing.T) {
	const big = 4 << 20
	repo, _, _, dir := newRepo(t)
	ctx := context.Background()
	srv, err := repo.Catalog.EnsureServer(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Catalog.BindIdentity(ctx, srv.ID, "7300000000000000002", big); err != nil {
		t.Fatal(err)
	}
	if srv, err = repo.Catalog.ServerByName(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	// Text and noise, so that each frame holds something different.
	data := make([]byte, big)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range data {
		if i%4096 < 1024 {
			data[i] = byte(r.Uint32())
		} else {
			data[i] = "pg_wal record "[i%14]
		}
	}
	var want []byte
	for off := 0; off < big; off += 1 << 20 {
		frame, err := czstd.CompressLevel(nil, data[off:off+1<<20], 1)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, frame...)
	}
	for _, tt := range []struct {
		name  string
		segno walname.SegNo
		store func(*repository.SegmentStorer, string) (catalog.Segment, error)
	}{
		{"from a file", 1, func(s *repository.SegmentStorer, name string) (catalog.Segment, error) {
			src := filepath.Join(dir, "src")
			if err := os.WriteFile(src, data, 0o600); err != nil {
				return catalog.Segment{}, err
			}
			row, _, err := s.StoreFile(ctx, name, src)
			return row, err
		}},
		{"from memory", 2, func(s *repository.SegmentStorer, name string) (catalog.Segment, error) {
			return s.Store(ctx, name, data)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			storer, err := repo.SegmentStorer(srv, "zstd", 1)
			if err != nil {
				t.Fatal(err)
			}
			name := walname.SegmentName(1, tt.segno, big)
			row, err := tt.store(storer, name)
			if err != nil {
				t.Fatal(err)
			}
			f, err := repo.OpenSegment(ctx, row)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := io.ReadAll(f)
			f.Close()
			if err != nil || !bytes.Equal(stored, want) || row.StoredSize != int64(len(want)) {
				t.Fatalf("the object is %d bytes (row: %d), %v; want the 4 frames of %d bytes", len(stored), row.StoredSize, err, len(want))
			}
			var got bytes.Buffer
			if err := repo.ReadSegment(ctx, row, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("read back: %d bytes, %v", got.Len(), err)
			}
		})
	}
}
