package basebackup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
)

// fakeFile is one regular file of a fake archive, in archive order.
type fakeFile struct {
	name string
	data []byte
}

// storeArchive stores files as the base archive of backup id (zstd, in the
// order given) and a manifest of manifestFiles, and returns its catalog row.
// When cut is set, the stored archive ends cut bytes before the tar stream does.
func storeArchive(t *testing.T, repo *repository.Repository, id string, files, manifestFiles []fakeFile, cut int) catalog.Backup {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	dirs := map[string]bool{}
	for _, f := range files {
		if d := filepath.Dir(f.name); d != "." && !dirs[d] {
			dirs[d] = true
			tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o700})
		}
		tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(f.data))})
		tw.Write(f.data)
	}
	tw.Close()
	var entries []string
	for _, f := range manifestFiles {
		h, _ := newManifestHash("CRC32C")
		h.Write(f.data)
		entries = append(entries, fmt.Sprintf(`{ "Path": %q, "Size": %d, "Checksum-Algorithm": "CRC32C", "Checksum": %q }`,
			f.name, len(f.data), h.Hex()))
	}
	b := catalog.Backup{ID: id, StoredPath: storage.BackupDir("main", id)}
	ctx := context.Background()
	w, err := newArchiveWriter(ctx, repo, b, "base.tar.zst", Compression{Method: "zstd", Level: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(tarBuf.Bytes()[:tarBuf.Len()-cut])
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mw, err := repo.CreateBackupFile(ctx, b, ManifestName)
	if err != nil {
		t.Fatal(err)
	}
	mw.Write(manifestFor(strings.Join(entries, ",\n")))
	if _, err := mw.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b.Files = []catalog.BackupFile{{Name: "base.tar.zst", Compression: "zstd"}, {Name: ManifestName, Compression: "none"}}
	return b
}

// dataDirFiles is a small data directory in the order PostgreSQL sends it:
// many small files, one large relation file (streamed through the writers in
// many chunks and more than one writeback range), pg_control last.
func dataDirFiles(large int) []fakeFile {
	rng := rand.New(rand.NewPCG(1, 2))
	files := []fakeFile{{"backup_label", []byte("START WAL LOCATION: 0/2000028\n")}, {"PG_VERSION", []byte("15\n")}}
	for i := range 120 {
		data := make([]byte, 8192*(i%3))
		for j := range data {
			data[j] = byte(rng.IntN(16)) // compressible, like a table
		}
		files = append(files, fakeFile{fmt.Sprintf("base/5/%d", 16384+i), data})
	}
	big := make([]byte, large)
	for j := range big {
		big[j] = byte(rng.IntN(256))
	}
	files = append(files, fakeFile{"base/5/90000", big})
	return append(files, fakeFile{controlFile, bytes.Repeat([]byte("c"), 8192)})
}

// openTestRepo opens a local repository in dir, closed when the test ends.
func openTestRepo(t *testing.T, dir string) *repository.Repository {
	t.Helper()
	repo, err := repository.OpenLocal(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	return repo
}

func TestUnpackWritesManySmallFilesAndALargeOneThroughTheWriterPool(t *testing.T) {
	repo := openTestRepo(t, t.TempDir())
	files := dataDirFiles(20*chunkSize + 123)
	b := storeArchive(t, repo, "b1", files, files, 0)
	target := filepath.Join(t.TempDir(), "data")
	var total int64
	for _, f := range files {
		total += int64(len(f.data))
	}
	var last int64
	if err := UnpackFrom(context.Background(), RepoOpener(repo, b), b, target, nil, func(n int64) {
		if n < last {
			t.Errorf("progress went back from %d to %d", last, n)
		}
		last = n
	}); err != nil {
		t.Fatal(err)
	}
	if last != total {
		t.Errorf("progress ended at %d, want %d", last, total)
	}
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(target, f.name))
		if err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("%s: %d bytes (%v), want %d", f.name, len(got), err, len(f.data))
		}
	}
	if _, err := os.Stat(filepath.Join(target, controlFile+heldBackSuffix)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pg_control's temporary name is still there: %v", err)
	}
	if err := VerifyDir(context.Background(), target); err != nil {
		t.Fatal(err)
	}
}

func TestUnpackFailsAndSaysWhatWhenTheBackupIsDamaged(t *testing.T) {
	good := dataDirFiles(4 * chunkSize)
	const i = 4 // base/5/16386, 16384 bytes
	damaged := append([]fakeFile(nil), good...)
	damaged[i] = fakeFile{good[i].name, append([]byte("X"), good[i].data[1:]...)}
	shorter := append([]fakeFile(nil), good...)
	shorter[i] = fakeFile{good[i].name, good[i].data[1:]}
	for _, tc := range []struct {
		name          string
		files, listed []fakeFile
		cut           int
		want          string
	}{
		{"damaged file", damaged, good, 0, "base/5/16386 has CRC32C checksum"},
		{"shorter file", shorter, good, 0, "base/5/16386 has size 16383, the manifest says 16384"},
		{"file not in the manifest", good, good[1:], 0, "backup_label is in the backup but not in the manifest"},
		{"file missing from the backup", good[1:], good, 0, "backup_label is in the manifest but not in the backup"},
		{"archive cut short", good, good, 1024 + 4096, "unpack base.tar.zst into DIR: read global/pg_control: unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := openTestRepo(t, t.TempDir())
			b := storeArchive(t, repo, "b1", tc.files, tc.listed, tc.cut)
			target := filepath.Join(t.TempDir(), "data")
			err := UnpackFrom(context.Background(), RepoOpener(repo, b), b, target, nil, nil)
			if err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), target, "DIR"), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			// Not startable: pg_control is only put in place at the end.
			if _, err := os.Stat(filepath.Join(target, controlFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed unpack left global/pg_control: %v", err)
			}
		})
	}
}

func TestAWriterErrorStopsTheReader(t *testing.T) {
	// A damaged file first, then far more data than the writers can hold:
	// the reader must stop soon after the writer finds the damage.
	files := dataDirFiles(0)[:3]
	listed := append([]fakeFile(nil), files...)
	listed[1].data = []byte("14\n")
	big := make([]byte, 24<<20)
	files = append(files, fakeFile{"base/1/big", big})
	listed = append(listed, files[3])
	repo := openTestRepo(t, t.TempDir())
	b := storeArchive(t, repo, "b1", files, listed, 0)
	target, _, x := newTestExtractor(t, repo, b)
	x.writers = 2
	err := x.extractArchives(context.Background(), RepoOpener(repo, b), archives(b), target, nil)
	var ve *VerifyError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "PG_VERSION has CRC32C checksum") {
		t.Fatalf("err = %v", err)
	}
	if x.done > 16<<20 {
		t.Errorf("the reader went on for %d bytes after the damage", x.done)
	}
}

func TestParallelRunsEveryPathAndReturnsTheFirstError(t *testing.T) {
	paths := make([]string, 100)
	for i := range paths {
		paths[i] = fmt.Sprint(i)
	}
	seen := make(chan string, len(paths))
	if err := parallel(context.Background(), paths, func(p string) error { seen <- p; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(paths) {
		t.Fatalf("ran %d of %d", len(seen), len(paths))
	}
	boom := errors.New("boom")
	err := parallel(context.Background(), paths, func(p string) error {
		if p == "7" {
			return fmt.Errorf("fsync %s: %w", p, boom)
		}
		return nil
	})
	if !errors.Is(err, boom) || err.Error() != "fsync 7: boom" {
		t.Fatalf("err = %v", err)
	}
}

func TestUnpackGivesEveryFileAndDirectoryToTheOwnerAsItWritesThem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give files to another user")
	}
	repo := openTestRepo(t, t.TempDir())
	files := append(dataDirFiles(3*chunkSize), fakeFile{"pg_wal/archive_status/x", nil}, fakeFile{"global/1262", []byte("db")})
	b := storeArchive(t, repo, "b1", files, files, 0)
	const uid, gid = 4321, 4322
	for _, owner := range []*Owner{nil, {UID: uid, GID: gid}} {
		target := filepath.Join(t.TempDir(), "data")
		if err := UnpackFromAs(context.Background(), RepoOpener(repo, b), b, target, nil, owner, nil); err != nil {
			t.Fatal(err)
		}
		want := [2]uint32{0, 0}
		if owner != nil {
			want = [2]uint32{uid, gid}
		}
		n := 0
		err := filepath.WalkDir(target, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			st := fi.Sys().(*syscall.Stat_t)
			if got := [2]uint32{st.Uid, st.Gid}; got != want {
				t.Errorf("%s is owned by %v, want %v", p, got, want)
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// The files, their directories (base, base/5, global, pg_wal,
		// pg_wal/archive_status), the target and the manifest.
		if want := len(files) + 5 + 1 + 1; n != want {
			t.Errorf("walked %d entries, want %d", n, want)
		}
	}
}

// newTestExtractor makes an empty target directory and an extractor that
// checks the files of backup b against its manifest m, as a full unpack does.
func newTestExtractor(t *testing.T, repo *repository.Repository, b catalog.Backup) (string, *Manifest, *extractor) {
	t.Helper()
	target := filepath.Join(t.TempDir(), "data")
	if err := prepareEmptyDir(target); err != nil {
		t.Fatal(err)
	}
	_, m, err := loadManifest(context.Background(), RepoOpener(repo, b))
	if err != nil {
		t.Fatal(err)
	}
	x := newExtractor(nil)
	x.check = newFileCheck(m, nil)
	return target, m, x
}

func TestSyncQueueKeepsMaxFilesOpenAndTheRestByPath(t *testing.T) {
	q := newSyncQueue(2)
	var fds []int
	for range 3 {
		fd, err := unix.Dup(0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	byPath := []bool{q.push(fds[0], "a"), q.push(fds[1], "b"), q.push(fds[2], "c"), q.push(-1, "d")}
	if want := []bool{false, false, true, true}; !slices.Equal(byPath, want) {
		t.Errorf("queued by path: %v, want %v", byPath, want)
	}
	if err := unix.Close(fds[2]); !errors.Is(err, unix.EBADF) {
		t.Errorf("the descriptor of a file queued by path is still open (close: %v)", err)
	}
	q.close()
	var got []string
	for {
		r, ok := q.pop()
		if !ok {
			break
		}
		if (r.fd >= 0) != (r.path == "a" || r.path == "b") {
			t.Errorf("%s popped with descriptor %d", r.path, r.fd)
		}
		if r.fd >= 0 {
			unix.Close(r.fd)
		}
		got = append(got, r.path)
	}
	if want := []string{"a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Errorf("popped %v, want %v", got, want)
	}
}

// Before, the files that found the early syncers' queue full were left to
// the final pass after the last file, when the syncers had been idle.
func TestEarlySyncersFsyncEveryFileEvenWhenTheirQueueIsFull(t *testing.T) {
	for _, tc := range []struct {
		name    string
		open    int  // files queued with their descriptor
		missing bool // one file is gone before its fsync
		want    string
	}{
		{"all fsynced", 3, false, ""},
		// Every file waits by path. The syncers, blocked in fsync, take
		// one each, in order: the last is still queued when it goes.
		{"a file queued by path is gone", 0, true, "fsync DIR/f9: no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := newFileWriters(context.Background(), 2, nil)
			w.early.max = tc.open
			release := make(chan struct{})
			var mu sync.Mutex
			synced := map[string]int{}
			w.fsync = func(fd int) error {
				<-release // nothing is fsynced until every file is queued
				p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
				if err != nil {
					return err
				}
				mu.Lock()
				synced[p]++
				mu.Unlock()
				return fsyncFD(fd)
			}
			const n = earlySyncers + 2
			for i := range n {
				p := filepath.Join(dir, fmt.Sprintf("f%d", i))
				if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
					t.Fatal(err)
				}
				fd, err := openFD(p, unix.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				w.finished(fd, p, 0)
				unix.Close(fd)
			}
			if tc.missing {
				os.Remove(filepath.Join(dir, fmt.Sprintf("f%d", n-1)))
			}
			close(release)
			err := w.wait()
			if tc.want != "" {
				if err == nil || strings.ReplaceAll(err.Error(), dir, "DIR") != tc.want {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if p := filepath.Join(dir, fmt.Sprintf("f%d", i)); synced[p] != 1 {
					t.Errorf("%s fsynced %d times by the early syncers, want 1", p, synced[p])
				}
			}
		})
	}
}
