package basebackup

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/klauspost/compress/zstd"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/stream"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
)

// env is a repository and catalog for one test, and the primary it backs up.
type env struct {
	t       *testing.T
	primary *pgtest.Cluster
	root    string
	repo    *repository.Repository
	cat     *catalog.Catalog
	server  string
}

func newEnv(t *testing.T, opts pgtest.Options) *env {
	t.Helper()
	if opts.SegmentSizeMB == 0 {
		opts.SegmentSizeMB = 1
	}
	p := pgtest.NewPrimary(t, "primary", opts)
	// The repository must be readable by the postgres user: restored copies
	// fetch WAL from it.
	root := pgtest.TempDir(t, "repo")
	repo, err := repository.OpenLocal(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	return &env{t: t, primary: p, root: root, repo: repo, cat: repo.Catalog, server: "main"}
}

func (e *env) options() Options {
	return Options{
		Server: e.server, Conninfo: e.primary.ConnString(""), Repo: e.repo,
		Compression: Compression{Method: "zstd", Level: 1}, FastCheckpoint: true, WALTimeout: 2 * time.Minute,
	}
}

// startReceiver runs walhub's WAL receiver for the env's server in-process
// until the test ends, so the backup's WAL reaches the catalog.
func (e *env) startReceiver() {
	e.t.Helper()
	cfg, err := config.Parse(fmt.Sprintf("repository = %q\n[[server]]\nname = %q\nconninfo = %q\n",
		e.root, e.server, e.primary.ConnString("")))
	if err != nil {
		e.t.Fatal(err)
	}
	r := stream.NewReceiver(stream.Options{Server: &cfg.Servers[0], Repo: e.repo})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			e.t.Errorf("receiver: %v", err)
		}
	})
}

// runBackup takes a backup with opts and fails the test on an unexpected error.
func (e *env) runBackup(opts Options) catalog.Backup {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := Run(ctx, opts)
	if err != nil {
		e.t.Fatalf("backup: %v", err)
	}
	return b
}

func TestBackupWithTablespaceVerifiesUnpacksAndRecovers(t *testing.T) {
	t.Parallel()
	for _, on := range []string{"hub", "server"} {
		t.Run("compressed on the "+on, func(t *testing.T) {
			t.Parallel()
			testBackupVerifiesUnpacksAndRecovers(t, on == "server")
		})
	}
}

// compressedByHub says who compressed backup b's base.tar.zst, as the stored
// archive shows: the hub writes frames that give their size (decoded in
// parallel on restore), PostgreSQL streams frames that do not.
func (e *env) compressedByHub(b catalog.Backup) bool {
	e.t.Helper()
	head := make([]byte, zstd.HeaderMaxSize)
	f, err := os.Open(filepath.Join(e.root, filepath.FromSlash(b.StoredPath), "base.tar.zst"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, head); err != nil {
		e.t.Fatal(err)
	}
	return parallelFrames(head)
}

// assertCompressedOn checks that the catalog says every archive of backup b
// was compressed on where, and nothing else.
func (e *env) assertCompressedOn(b catalog.Backup, where string) {
	e.t.Helper()
	row, err := e.cat.Backup(context.Background(), b.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, f := range row.Files {
		want := where
		if f.Name == ManifestName {
			want = ""
		}
		if f.CompressedOn != want {
			e.t.Errorf("%s: compressed on %q in the catalog, want %q", f.Name, f.CompressedOn, want)
		}
	}
}

// testBackupVerifiesUnpacksAndRecovers backs up a primary with a
// tablespace, compressed by the hub or by the server, checks the copy,
// unpacks it with the tablespace moved, and recovers it.
func testBackupVerifiesUnpacksAndRecovers(t *testing.T, onServer bool) {
	e := newEnv(t, pgtest.Options{})
	e.startReceiver()
	tsDir := pgtest.TempDir(t, "ts")
	e.primary.Query(fmt.Sprintf("CREATE TABLESPACE ts LOCATION '%s'", tsDir))
	e.primary.PgbenchInit(2)
	e.primary.Query("CREATE TABLE in_ts TABLESPACE ts AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g")
	e.primary.Pgbench(2, 200)
	wantAccounts := e.primary.Query("SELECT sum(abalance) FROM pgbench_accounts")
	wantTS := e.primary.Query("SELECT count(*), sum(g) FROM in_ts")

	opts := e.options()
	if onServer {
		opts.Compression.Where = "server"
	}
	b := e.runBackup(opts)
	if b.State != catalog.StateDone {
		t.Fatalf("backup state %s (%s), want done", b.State, b.Reason)
	}
	if byHub := e.compressedByHub(b); byHub == onServer {
		t.Errorf("base.tar.zst starts with a frame of the hub's: %v; compressed on the server: %v", byHub, onServer)
	}
	e.assertCompressedOn(b, map[bool]string{true: "server", false: "hub"}[onServer])
	if b.StartLSN == 0 || b.StopLSN <= b.StartLSN || b.StartTLI != 1 || b.StopTLI != 1 {
		t.Errorf("positions: start %s/%d stop %s/%d", b.StartLSN, b.StartTLI, b.StopLSN, b.StopTLI)
	}
	if !strings.Contains(b.BackupLabel, "START WAL LOCATION: "+b.StartLSN.String()) ||
		!strings.Contains(b.BackupLabel, "LABEL: walhub main "+b.ID) {
		t.Errorf("backup_label:\n%s", b.BackupLabel)
	}
	if !strings.Contains(b.TablespaceMap, " "+tsDir) {
		t.Errorf("tablespace_map %q does not name %s", b.TablespaceMap, tsDir)
	}
	var tsArchive catalog.BackupFile
	names := map[string]bool{}
	for _, f := range b.Files {
		names[f.Name] = true
		if f.Tablespace != 0 {
			tsArchive = f
		}
	}
	if !names["base.tar.zst"] || !names[ManifestName] || tsArchive.Name == "" || tsArchive.Location != tsDir {
		t.Fatalf("files %+v", b.Files)
	}
	if b.StoredSize <= 0 || b.StoredSize >= b.OriginalSize {
		t.Errorf("stored %d of %d bytes: zstd should shrink a pgbench database", b.StoredSize, b.OriginalSize)
	}
	got, err := e.cat.Backup(context.Background(), b.ID)
	if err != nil || got.State != catalog.StateDone || got.StopLSN != b.StopLSN || len(got.Files) != len(b.Files) {
		t.Fatalf("catalog row %+v, %v", got, err)
	}
	checked, err := Verify(context.Background(), RepoOpener(e.repo, b), b)
	if err != nil {
		t.Fatalf("verify stored backup: %v", err)
	}
	if checked.Files < 900 || checked.Bytes < b.OriginalSize/2 {
		t.Errorf("verify checked only %d files, %d bytes", checked.Files, checked.Bytes)
	}

	// Unpack with the tablespace moved; pg_verifybackup accepts the copy.
	copyRoot := pgtest.TempDir(t, "copy")
	target := filepath.Join(copyRoot, "data")
	newTS := pgtest.TempDir(t, "ts-copy")
	var progressed int64
	err = Unpack(context.Background(), e.repo, b, target, map[uint32]string{tsArchive.Tablespace: newTS},
		func(done int64) { progressed = done })
	if err != nil {
		t.Fatalf("unpack: %v", err)
	}
	if progressed < b.OriginalSize/2 {
		t.Errorf("progress reported %d of about %d bytes", progressed, b.OriginalSize)
	}
	if link, err := os.Readlink(filepath.Join(target, "pg_tblspc", fmt.Sprint(tsArchive.Tablespace))); err != nil || link != newTS {
		t.Errorf("pg_tblspc link -> %q (%v), want %s", link, err, newTS)
	}
	if err := VerifyDir(context.Background(), target, "tablespace_map"); err != nil {
		t.Errorf("VerifyDir: %v", err)
	}
	pgtest.Run(t, exec.Command(pgtest.Bin(t, "pg_verifybackup"), "-n", "-i", "tablespace_map", target))

	// The copy recovers with WAL from the repository and holds the same data.
	script := filepath.Join(copyRoot, "fetch.sh")
	fetch := fmt.Sprintf(`#!/bin/sh
f=$1; d=%s
case $f in *.history) src=$d/$f ;; *) src=$d/$(echo "$f" | cut -c1-16)/$f ;; esac
if [ -f "$src.zst" ]; then exec zstd -q -d -f -o "$2" "$src.zst"; fi
if [ -f "$src" ]; then exec cp "$src" "$2"; fi
exit 1
`, filepath.Join(e.root, storage.WALDir(e.server)))
	if err := os.WriteFile(script, []byte(fetch), 0o755); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, newTS)
	pgtest.Chown(t, e.root)
	c := pgtest.AdoptDataDir(t, "copy", target)
	c.AppendConf(fmt.Sprintf("restore_command = '%s %%f %%p'", script), "recovery_target_action = 'promote'")
	if err := os.WriteFile(filepath.Join(target, "recovery.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, target)
	c.Start()
	c.WaitFor(3*time.Minute, "the copy to finish recovery", func() bool {
		s, err := c.TryQuery("SELECT pg_is_in_recovery()")
		return err == nil && s == "f"
	})
	// The WAL came from the hub's repository, through the restore_command.
	startSeg := walname.SegmentName(b.StartTLI, walname.SegmentOf(b.StartLSN, 1<<20), 1<<20)
	if log, _ := os.ReadFile(c.LogFile); !strings.Contains(string(log), `restored log file "`+startSeg+`" from archive`) {
		t.Errorf("the copy's log does not show %s restored from the repository", startSeg)
	}
	if got := c.Query("SELECT sum(abalance) FROM pgbench_accounts"); got != wantAccounts {
		t.Errorf("copy: sum(abalance) = %s, primary had %s", got, wantAccounts)
	}
	if got := c.Query("SELECT count(*), sum(g) FROM in_ts"); got != wantTS {
		t.Errorf("copy: tablespace table %s, primary had %s", got, wantTS)
	}
}

// TestBackupWhoseWALIsLateWaitsThenBecomesDone takes a backup with no
// receiver running: the copy is complete and verified but its WAL does not
// come. The backup must be kept, waiting for its WAL (it used to be failed
// and its files deleted), and become done once a receiver has stored it.
func TestBackupWhoseWALIsLateWaitsThenBecomesDone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, pgtest.Options{})
	opts := e.options()
	opts.WALTimeout = 3 * time.Second
	b, err := Run(context.Background(), opts)
	if err != nil || b.State != catalog.StateWaitingWAL {
		t.Fatalf("backup whose WAL is late: state %s, err %v; want waiting_wal", b.State, err)
	}
	if !strings.Contains(b.Reason, "not received within 3s") || !strings.Contains(b.Reason, "WAL "+b.StartLSN.String()) {
		t.Errorf("reason %q does not say which WAL is missing", b.Reason)
	}
	row, _ := e.cat.Backup(context.Background(), b.ID)
	if row.State != catalog.StateWaitingWAL || len(row.Files) == 0 {
		t.Fatalf("catalog row: %s, %d files", row.State, len(row.Files))
	}
	if _, err := Verify(context.Background(), RepoOpener(e.repo, row), row); err != nil {
		t.Fatalf("the waiting backup's files: %v", err)
	}
	if done, err := CompleteWaiting(context.Background(), e.repo, e.server); err != nil || len(done) != 0 {
		t.Fatalf("completed without its WAL: %v %v", done, err)
	}

	e.startReceiver()
	e.primary.SwitchWAL()
	waitFor(t, time.Minute, "the waiting backup to become done", func() bool {
		done, err := CompleteWaiting(context.Background(), e.repo, e.server)
		if err != nil {
			t.Fatal(err)
		}
		return len(done) == 1 && done[0] == b.ID
	})
	row, _ = e.cat.Backup(context.Background(), b.ID)
	if row.State != catalog.StateDone || row.Reason != "" || !row.FinishedAt.Equal(b.FinishedAt) {
		t.Fatalf("after the WAL arrived: %s %q finished %s (was %s)", row.State, row.Reason, row.FinishedAt, b.FinishedAt)
	}
	info, err := os.ReadFile(filepath.Join(e.root, filepath.FromSlash(b.StoredPath), repository.InfoName))
	if err != nil || !strings.Contains(string(info), `"state": "done"`) {
		t.Errorf("the backup's info object after the WAL arrived: %v\n%s", err, info)
	}
	if again, _ := e.cat.FinishWaitingBackup(context.Background(), b.ID); again {
		t.Error("a done backup was finished a second time")
	}
}

func assertNoFiles(t *testing.T, e *env, b catalog.Backup) {
	t.Helper()
	dir := filepath.Join(e.root, filepath.FromSlash(b.StoredPath))
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		entries, _ := os.ReadDir(dir)
		t.Errorf("failed backup left %s with %d entries", dir, len(entries))
	}
}

// waitFor polls cond every 100 ms, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runningBackup returns the running backup of the env's server, if any.
func (e *env) runningBackup() (catalog.Backup, bool) {
	srv, err := e.cat.ServerByName(context.Background(), e.server)
	if err != nil {
		return catalog.Backup{}, false
	}
	bs, _ := e.cat.Backups(context.Background(), srv.ID)
	for _, b := range bs {
		if b.State == catalog.StateRunning && b.StartLSN != 0 {
			return b, true
		}
	}
	return catalog.Backup{}, false
}

func TestSecondBackupIsRefusedNamingTheHolderAndACancelledBackupFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, pgtest.Options{})
	e.primary.PgbenchInit(1)
	slow := e.options()
	slow.MaxRate = 32 // kB/s: the backup takes minutes
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		b   catalog.Backup
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := Run(ctx, slow)
		done <- result{b, err}
	}()
	waitFor(t, 60*time.Second, "the first backup to start streaming", func() bool {
		_, ok := e.runningBackup()
		return ok
	})

	_, err := Run(context.Background(), e.options())
	var locked *LockedError
	if !errors.As(err, &locked) {
		t.Fatalf("second backup: err = %v, want a LockedError", err)
	}
	want := fmt.Sprintf("locked by backup (pid %d on ", os.Getpid())
	if !strings.Contains(err.Error(), want) || locked.Holder.PID != os.Getpid() {
		t.Errorf("refusal %q does not name the holder (%q)", err, want)
	}

	cancel()
	r := <-done
	if r.err == nil || r.b.State != catalog.StateFailed || !strings.Contains(r.b.Reason, "interrupted") {
		t.Fatalf("cancelled backup: state %s reason %q err %v", r.b.State, r.b.Reason, r.err)
	}
	assertNoFiles(t, e, r.b)
	if _, ok := e.runningBackup(); ok {
		t.Error("a backup is still recorded as running")
	}
}

// TestMain lets the test binary act as a backup process that a test kills.
func TestMain(m *testing.M) {
	if root := os.Getenv("WALHUB_TEST_BACKUP_CHILD_REPO"); root != "" {
		os.Exit(backupChild(root, os.Getenv("WALHUB_TEST_BACKUP_CHILD_CONNINFO")))
	}
	os.Exit(m.Run())
}

func backupChild(root, conninfo string) int {
	ctx := context.Background()
	repo, err := repository.OpenLocal(ctx, root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer repo.Close()
	_, err = Run(ctx, Options{Server: "main", Conninfo: conninfo, Repo: repo,
		Compression: Compression{Method: "zstd", Level: 1}, FastCheckpoint: true, MaxRate: 32, WALTimeout: time.Minute})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestKilledBackupIsMarkedFailedByTheNextCommand(t *testing.T) {
	t.Parallel()
	e := newEnv(t, pgtest.Options{})
	e.primary.PgbenchInit(1)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "WALHUB_TEST_BACKUP_CHILD_REPO="+e.root,
		"WALHUB_TEST_BACKUP_CHILD_CONNINFO="+e.primary.ConnString(""))
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	var b catalog.Backup
	waitFor(t, 60*time.Second, "the child's backup to write its first archive", func() bool {
		var ok bool
		if b, ok = e.runningBackup(); !ok {
			return false
		}
		dir := filepath.Join(e.root, filepath.FromSlash(b.StoredPath))
		entries, _ := os.ReadDir(dir)
		return len(entries) > 0
	})
	if b.PID != child.Process.Pid {
		t.Fatalf("running backup pid %d, child is %d", b.PID, child.Process.Pid)
	}
	// While the child lives, its backup is not reaped.
	if reaped, err := ReapInterrupted(context.Background(), e.repo, e.server); err != nil || len(reaped) != 0 {
		t.Fatalf("reaped a live backup: %v %v", reaped, err)
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()

	reaped, err := ReapInterrupted(context.Background(), e.repo, e.server)
	if err != nil || len(reaped) != 1 || reaped[0] != b.ID {
		t.Fatalf("reaped %v, %v; want [%s]", reaped, err, b.ID)
	}
	row, err := e.cat.Backup(context.Background(), b.ID)
	if err != nil || row.State != catalog.StateFailed || !strings.Contains(row.Reason, "interrupted") {
		t.Fatalf("killed backup: %s %q %v", row.State, row.Reason, err)
	}
	assertNoFiles(t, e, row)
}

func TestCorruptPageFailsTheBackupWithAChecksumMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, pgtest.Options{})
	e.primary.Query("CREATE TABLE victim AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
	e.primary.Query("CHECKPOINT")
	rel := e.primary.Query("SELECT pg_relation_filepath('victim')")
	e.primary.Stop("fast")
	f, err := os.OpenFile(filepath.Join(e.primary.DataDir, rel), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The middle of the third page: the page header (and its LSN) stay intact.
	if _, err := f.WriteAt([]byte("corrupted by walhub's test!"), 2*8192+4000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.primary.Start()

	opts := e.options()
	opts.WALTimeout = 5 * time.Second
	b, err := Run(context.Background(), opts)
	if !errors.Is(err, ErrChecksumFailure) || b.State != catalog.StateFailed {
		t.Fatalf("backup of a corrupt cluster: state %s, err %v; want failed with a checksum failure", b.State, err)
	}
	if !strings.Contains(b.Reason, "invalid page checksums") {
		t.Errorf("reason %q does not say checksums failed", b.Reason)
	}
	assertNoFiles(t, e, b)
}

// proxy listens on a free loopback port and, for every connection it
// accepts, dials the server on port and hands both to relay, on a goroutine
// of its own. It returns the port it listens on.
func proxy(t *testing.T, port int, relay func(client, server net.Conn)) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				client.Close()
				continue
			}
			go relay(client, server)
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// corruptingProxy forwards TCP connections to the server on port, replacing
// every occurrence of from in what the server sends by to (the same length,
// so the protocol's framing stays intact). It returns the port it listens on.
func corruptingProxy(t *testing.T, port int, from, to []byte) int {
	t.Helper()
	if len(from) != len(to) {
		t.Fatal("corruptingProxy: from and to differ in length")
	}
	var replaced atomic.Int64
	t.Cleanup(func() {
		if replaced.Load() == 0 {
			t.Errorf("the proxy never saw %q", from)
		}
	})
	return proxy(t, port, func(client, server net.Conn) {
		go func() { io.Copy(server, client); server.Close() }()
		defer client.Close()
		var held []byte
		buf := make([]byte, 64<<10)
		for {
			n, err := server.Read(buf)
			data := append(held, buf[:n]...)
			if c := bytes.Count(data, from); c > 0 {
				replaced.Add(int64(c))
				data = bytes.ReplaceAll(data, from, to)
			}
			// Hold back a tail that may be the start of from, and only
			// that: the server may be waiting for an answer.
			keep := 0
			for k := min(len(from)-1, len(data)); k > 0; k-- {
				if bytes.HasSuffix(data, from[:k]) {
					keep = k
					break
				}
			}
			if _, werr := client.Write(data[:len(data)-keep]); werr != nil {
				return
			}
			held = append([]byte{}, data[len(data)-keep:]...)
			if err != nil {
				client.Write(held)
				return
			}
		}
	})
}

// refusingProxy passes connections to the server on port through, except
// the first query that contains match: it answers that one itself, as a
// PostgreSQL built without zstd answers BASE_BACKUP ... COMPRESSION 'zstd'
// (feature_not_supported, then ready for the next query). The count of
// queries refused is returned with the proxy's port.
func refusingProxy(t *testing.T, port int, match []byte) (int, *atomic.Int64) {
	t.Helper()
	refusal, err := (&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "0A000",
		Message: "zstd compression is not supported by this build"}).Encode(nil)
	if err == nil {
		refusal, err = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(refusal)
	}
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	return proxy(t, port, func(client, server net.Conn) {
		var toClient sync.Mutex // the server's bytes and the refusal
		go func() {
			defer client.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := server.Read(buf)
				toClient.Lock()
				_, werr := client.Write(buf[:n])
				toClient.Unlock()
				if err != nil || werr != nil {
					return
				}
			}
		}()
		defer server.Close()
		r := bufio.NewReader(client)
		// The startup message has no type byte (sslmode=disable: no SSL
		// request before it); every message after it has.
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:4]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[:4])-4)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		if _, err := server.Write(append(hdr[:4:4], body...)); err != nil {
			return
		}
		for {
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return
			}
			body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
			if _, err := io.ReadFull(r, body); err != nil {
				return
			}
			if hdr[0] == 'Q' && bytes.Contains(body, match) && refused.CompareAndSwap(0, 1) {
				toClient.Lock()
				_, err := client.Write(refusal)
				toClient.Unlock()
				if err != nil {
					return
				}
				continue
			}
			if _, err := server.Write(append(hdr[:5:5], body...)); err != nil {
				return
			}
		}
	}), &refused
}

// TestAutoCompressesOnTheHubWhenTheServerCannot: a server built without zstd
// refuses BASE_BACKUP ... COMPRESSION 'zstd' before the backup starts. Left
// to choose, walhub asks again on the same connection without it, and the
// hub compresses; asked for compression on the server, the backup fails
// with the server's words and keeps nothing. A proxy plays that server.
// Left to choose with a maximum rate set, walhub never asks the server to
// compress (PostgreSQL would throttle the compressed bytes, not its reads).
func TestAutoCompressesOnTheHubWhenTheServerCannot(t *testing.T) {
	t.Parallel()
	e := newEnv(t, pgtest.Options{})
	e.startReceiver()
	for _, tc := range []struct {
		name    string
		c       Compression
		maxRate int // kB/s
		refused int64
		failed  bool
	}{
		{"auto", Compression{Method: "zstd", Level: 1, Where: "auto"}, 0, 1, false},
		{"server", Compression{Method: "zstd", Level: 1, Where: "server"}, 0, 1, true},
		{"auto with a max rate", Compression{Method: "zstd", Level: 1, Where: "auto"}, 1048576, 0, false},
	} {
		port, refused := refusingProxy(t, e.primary.Port, []byte("COMPRESSION 'zstd'"))
		opts := e.options()
		opts.Conninfo = fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", port)
		opts.Compression, opts.MaxRate = tc.c, tc.maxRate
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		b, err := Run(ctx, opts)
		cancel()
		if refused.Load() != tc.refused {
			t.Fatalf("%s: the proxy refused %d queries, want %d", tc.name, refused.Load(), tc.refused)
		}
		if tc.failed {
			if err == nil || b.State != catalog.StateFailed || !strings.Contains(err.Error(), "not supported by this build") {
				t.Errorf("%s: state %s, err %v; want failed with the server's refusal", tc.name, b.State, err)
			}
			assertNoFiles(t, e, b)
			continue
		}
		if err != nil || b.State != catalog.StateDone {
			t.Fatalf("%s: state %s (%s), err %v; want done", tc.name, b.State, b.Reason, err)
		}
		if !e.compressedByHub(b) {
			t.Errorf("%s: base.tar.zst was not compressed by the hub", tc.name)
		}
		e.assertCompressedOn(b, "hub")
		if _, err := Verify(context.Background(), RepoOpener(e.repo, b), b); err != nil {
			t.Errorf("%s: verify: %v", tc.name, err)
		}
	}
}

// TestFileCorruptedInTransitFailsTheBackupAndNothingIsKept changes a file's
// bytes between the server (which wrote its checksum in the manifest) and
// the hub: the check made while the backup streams in must fail the backup,
// leave no file in the repository, and never let it be done.
func TestFileCorruptedInTransitFailsTheBackupAndNothingIsKept(t *testing.T) {
	t.Parallel()
	e := newEnv(t, pgtest.Options{})
	e.startReceiver()
	content := strings.Repeat("walhub test: these bytes are changed on their way to the hub\n", 200)
	if err := os.WriteFile(filepath.Join(e.primary.DataDir, "walhub_transit_test"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	port := corruptingProxy(t, e.primary.Port, []byte("changed on their way"), []byte("CHANGED ON THEIR WAY"))
	opts := e.options()
	opts.Conninfo = fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", port)
	opts.WALTimeout = 10 * time.Second
	b, err := Run(context.Background(), opts)
	var ve *VerifyError
	if !errors.As(err, &ve) || b.State != catalog.StateFailed {
		t.Fatalf("backup with a file corrupted in transit: state %s, err %v; want failed by verification", b.State, err)
	}
	if len(ve.Problems) != 1 || !strings.Contains(ve.Problems[0], "walhub_transit_test has CRC32C checksum") {
		t.Errorf("problems %q, want exactly the corrupted file's checksum", ve.Problems)
	}
	row, err := e.cat.Backup(context.Background(), b.ID)
	if err != nil || row.State != catalog.StateFailed || len(row.Files) != 0 ||
		!strings.Contains(row.Reason, "verification against the manifest") {
		t.Fatalf("catalog row: %s, %d files, reason %q, %v", row.State, len(row.Files), row.Reason, err)
	}
	assertNoFiles(t, e, b)
}

// TestBackupOfAPrimaryDoesNotSwitchWALAgain: the server completes the segment
// of the backup's stop position itself (a primary switches WAL at the end of
// every backup), so walhub must not switch again, which on a busy server cuts
// another, mostly empty segment. The receiver starts only once the backup has
// streamed, so the stop segment is surely not in the catalog when walhub
// first looks; the backup must wait for it and be done once the catalog
// holds its WAL up to the stop position.
func TestBackupOfAPrimaryDoesNotSwitchWALAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, pgtest.Options{})
	e.primary.CreateSlot("walhub_" + e.server) // the receiver started later gets the backup's WAL from it
	e.primary.PgbenchInit(1)
	e.primary.Query("ALTER SYSTEM SET log_statement = 'all'")
	e.primary.Query("SELECT pg_reload_conf()")
	opts := e.options()
	var receiverStarted bool
	opts.OnProgress = func(p Progress) {
		if p.Phase == PhaseVerifying && !receiverStarted {
			receiverStarted = true
			e.startReceiver()
		}
	}
	b := e.runBackup(opts)
	if !receiverStarted || b.State != catalog.StateDone {
		t.Fatalf("backup state %s (%s), receiver started %v; want done", b.State, b.Reason, receiverStarted)
	}
	srv, err := e.cat.ServerByName(context.Background(), e.server)
	if err != nil {
		t.Fatal(err)
	}
	missing, err := (WALWait{Catalog: e.cat, ServerID: srv.ID, SegmentSize: srv.SegmentSize, StartLSN: b.StartLSN,
		StartTLI: b.StartTLI, StopLSN: b.StopLSN, StopTLI: b.StopTLI}).MissingWAL(context.Background())
	if err != nil || len(missing) != 0 {
		t.Fatalf("done backup, but its WAL is missing from the catalog: %v %v", missing, err)
	}
	e.primary.Query("SELECT 'walhub log probe'")
	log, err := os.ReadFile(e.primary.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "walhub log probe") {
		t.Fatal("the server logs no statements: log_statement did not take effect")
	}
	if strings.Contains(string(log), "pg_switch_wal") {
		t.Error("walhub switched WAL although the server had completed the backup's last segment")
	}
}

// TestBackupWaitsForARunningExpireOnly: a backup that finds an expire holding
// the server's lock waits for it up to ExpireWait, then runs; it is refused
// at once, naming the holder, when it may not wait or when a snapshot holds
// the lock.
func TestBackupWaitsForARunningExpireOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, pgtest.Options{})
	e.primary.PgbenchInit(1)
	e.startReceiver()

	refusals := []struct {
		holder string
		wait   time.Duration
	}{
		{"expire", 0},
		{"snapshot", time.Minute},
		{"backup", time.Minute},
	}
	for _, r := range refusals {
		lk, err := e.repo.Work.Lock(e.server, r.holder, "")
		if err != nil {
			t.Fatal(err)
		}
		opts := e.options()
		opts.ExpireWait = r.wait
		start := time.Now()
		_, err = Run(context.Background(), opts)
		lk.Release()
		var locked *LockedError
		if !errors.As(err, &locked) || locked.Holder.Command != r.holder {
			t.Fatalf("held by %s, ExpireWait %v: err = %v, want a LockedError naming %s", r.holder, r.wait, err, r.holder)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("held by %s, ExpireWait %v: refused after %v, want at once", r.holder, r.wait, d)
		}
	}

	lk, err := e.repo.Work.Lock(e.server, "expire", "")
	if err != nil {
		t.Fatal(err)
	}
	opts := e.options()
	opts.ExpireWait = 2 * time.Minute
	type result struct {
		b   catalog.Backup
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := Run(context.Background(), opts)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		lk.Release()
		t.Fatalf("the backup did not wait for the expire: %+v, %v", r.b, r.err)
	case <-time.After(2 * time.Second):
	}
	lk.Release()
	r := <-done
	if r.err != nil || r.b.State != catalog.StateDone {
		t.Fatalf("after the expire: backup %s (%s), %v; want done", r.b.State, r.b.Reason, r.err)
	}
}
