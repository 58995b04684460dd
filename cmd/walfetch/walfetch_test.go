package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub"
	"github.com/walhub/walhub/pgfile"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/test/walfeed"
	"github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

// walfetchBin is the walfetch binary built once for the tests that run it as
// PostgreSQL does: a process, in the data directory, judged by its exit status.
var walfetchBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "walfetch-bin-")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755)
	walfetchBin, err = pgtest.BuildCommand(dir, "walfetch")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	testSegSize  = 1 << 20
	testSystemID = 7300000000000000042
	testToken    = "t0ken"
)

// fakeSegment makes a segment with a valid long page header, so walfetch's
// header check passes, and recognisable content.
func fakeSegment(tli walname.TimeLine, segno walname.SegNo) []byte {
	b := make([]byte, testSegSize)
	r := rand.New(rand.NewPCG(uint64(segno), uint64(tli)))
	for i := 40; i < len(b); i += 4096 {
		for j := i; j < i+256 && j < len(b); j++ {
			b[j] = byte(r.Uint32())
		}
	}
	pgfile.NewSegmentHeader(tli, segno, testSegSize, testSystemID).Put(b)
	return b
}

// testHub is a hub over a repository of fake segments, counting requests per path.
type testHub struct {
	url    string
	dir    string
	repo   *repository.Repository
	feeder *walfeed.Feeder
	segs   map[string][]byte
	mu     sync.Mutex
	gets   map[string]int
	delay  time.Duration
	// hold, when set, is called before each request is served.
	hold func(*http.Request)
}

func newTestHub(t testing.TB, count int) *testHub {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	cfg, err := config.Parse(fmt.Sprintf("repository = %q\n[hub]\nread_tokens = [%q]\n", dir, testToken))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := repository.OpenLocal(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	h := &testHub{dir: dir, repo: repo, segs: map[string][]byte{}, gets: map[string]int{}}
	if h.feeder, err = walfeed.New(ctx, h.repo, "main", fmt.Sprint(uint64(testSystemID)), testSegSize, "zstd"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= count; i++ {
		h.add(t, 1, walname.SegNo(i))
	}
	srv, err := hub.New(hub.Options{Config: cfg, Repo: h.repo, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.gets[r.URL.Path]++
		delay, hold := h.delay, h.hold
		h.mu.Unlock()
		time.Sleep(delay)
		if hold != nil {
			hold(r)
		}
		srv.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	h.url = hs.URL
	return h
}

func (h *testHub) add(t testing.TB, tli walname.TimeLine, segno walname.SegNo) string {
	t.Helper()
	name := walname.SegmentName(tli, segno, testSegSize)
	h.segs[name] = fakeSegment(tli, segno)
	if err := h.feeder.StoreSegment(context.Background(), name, h.segs[name]); err != nil {
		t.Fatal(err)
	}
	return name
}

func (h *testHub) fetches(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gets["/v1/servers/main/wal/"+name]
}

// dataDir makes a directory shaped like a data directory in recovery: pg_wal,
// global/pg_control (only its system identifier matters here) and the signal file.
func dataDir(t testing.TB, signal string, withControl bool) string {
	t.Helper()
	dir := t.TempDir()
	// Runs before the TempDir's removal (cleanups run last first).
	t.Cleanup(func() { stopPrefetchers(t, dir) })
	os.MkdirAll(filepath.Join(dir, "pg_wal"), 0o700)
	os.MkdirAll(filepath.Join(dir, "global"), 0o700)
	if withControl {
		var b [8192]byte
		pgfile.PutControlSystemID(b[:], testSystemID)
		if err := os.WriteFile(filepath.Join(dir, "global", "pg_control"), b[:], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if signal != "" {
		os.WriteFile(filepath.Join(dir, signal), nil, 0o600)
	}
	return dir
}

// stopPrefetchers kills the prefetchers walfetch started in the data
// directory dir (their working directory) and waits until they are gone: they
// are detached and outlive the call by their idle time, and one still
// creating its spool made the removal of a test's directory fail ("directory
// not empty").
func stopPrefetchers(t testing.TB, dir string) {
	t.Helper()
	for _, pid := range processesIn(dir) {
		if syscall.Kill(pid, syscall.SIGKILL) != nil {
			continue
		}
		pgtest.WaitFor(t, 10*time.Second, fmt.Sprintf("prefetcher %d to end", pid), func() bool {
			_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
			return err != nil
		})
	}
}

// processesIn lists the processes whose working directory is dir, or was
// (removed since).
func processesIn(dir string) []int {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return pgtest.Processes(func(proc string) bool {
		cwd, err := os.Readlink(filepath.Join(proc, "cwd"))
		return err == nil && (cwd == dir || cwd == dir+" (deleted)")
	})
}

// runWalfetch runs walfetch as PostgreSQL would and returns its exit status and stderr.
func runWalfetch(t testing.TB, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(walfetchBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "WALFETCH_IDLE_EXIT=3s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), stderr.String()
	}
	t.Fatalf("walfetch did not exit normally: %v\n%s", err, stderr.String())
	return -1, ""
}

func hubArgs(h *testHub, extra ...string) []string {
	return append([]string{"--url", h.url, "--server", "main", "--token", testToken}, extra...)
}

// leftovers lists files in pg_wal other than want (temporary files must not stay).
func leftovers(t *testing.T, dir string, want ...string) []string {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(dir, "pg_wal"))
	var out []string
	for _, e := range entries {
		if e.Name() == "walfetch-spool" || strings.Contains(strings.Join(want, "/"), e.Name()) {
			continue
		}
		out = append(out, e.Name())
	}
	return out
}

func TestServesVerifiedSegmentAndHistory(t *testing.T) {
	h := newTestHub(t, 3)
	if err := h.feeder.StoreHistory(context.Background(), 2, []byte("1\t0/300000\tbefore 3\n")); err != nil {
		t.Fatal(err)
	}
	dir := dataDir(t, "standby.signal", false)
	name := walname.SegmentName(1, 2, testSegSize)
	code, stderr := runWalfetch(t, dir, hubArgs(h, name, "pg_wal/RECOVERYXLOG")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "pg_wal", "RECOVERYXLOG"))
	if !bytes.Equal(got, h.segs[name]) {
		t.Fatal("RECOVERYXLOG differs from the stored segment")
	}
	code, stderr = runWalfetch(t, dir, hubArgs(h, "00000002.history", "pg_wal/RECOVERYHISTORY")...)
	got, _ = os.ReadFile(filepath.Join(dir, "pg_wal", "RECOVERYHISTORY"))
	if code != 0 || string(got) != "1\t0/300000\tbefore 3\n" {
		t.Fatalf("history: exit %d %q: %s", code, got, stderr)
	}
	if l := leftovers(t, dir, "RECOVERYXLOG", "RECOVERYHISTORY"); len(l) > 0 {
		t.Errorf("left in pg_wal: %v", l)
	}
}

func TestExitStatusByModeAndFailure(t *testing.T) {
	h := newTestHub(t, 2)
	missing := walname.SegmentName(1, 9, testSegSize)
	present := walname.SegmentName(1, 1, testSegSize)
	tests := []struct {
		name   string
		signal string
		args   []string
		want   int
		stderr string
	}{
		{"not in the hub, standby", "standby.signal", hubArgs(h, missing, "pg_wal/RECOVERYXLOG"), 1, ""},
		{"not in the hub, point-in-time recovery", "recovery.signal", hubArgs(h, missing, "pg_wal/RECOVERYXLOG"), 1, ""},
		{"next history probe", "recovery.signal", hubArgs(h, "00000002.history", "pg_wal/RECOVERYHISTORY"), 1, ""},
		{"unreachable, standby", "standby.signal",
			[]string{"--url", "http://127.0.0.1:1", "--server", "main", present, "pg_wal/RECOVERYXLOG"}, 1, "not restored"},
		{"unreachable, both signal files: a standby", "",
			[]string{"--url", "http://127.0.0.1:1", "--server", "main", present, "pg_wal/RECOVERYXLOG"}, 1, "not restored"},
		{"unreachable, point-in-time recovery", "recovery.signal",
			[]string{"--url", "http://127.0.0.1:1", "--server", "main", "--pitr-retry", "2s", present, "pg_wal/RECOVERYXLOG"}, 255, "stopping point-in-time recovery"},
		{"wrong token, standby", "standby.signal",
			[]string{"--url", h.url, "--server", "main", "--token", "nope", present, "pg_wal/RECOVERYXLOG"}, 1, "401"},
		{"wrong token, point-in-time recovery", "recovery.signal",
			[]string{"--url", h.url, "--server", "main", "--token", "nope", present, "pg_wal/RECOVERYXLOG"}, 255, "stopping point-in-time recovery"},
		{"unknown server, point-in-time recovery", "recovery.signal",
			[]string{"--url", h.url, "--server", "other", "--token", testToken, present, "pg_wal/RECOVERYXLOG"}, 255, "unknown"},
		{"no settings, standby", "standby.signal", []string{present, "pg_wal/RECOVERYXLOG"}, 1, "required"},
		{"not a WAL name, standby", "standby.signal", hubArgs(h, "../../etc/passwd", "pg_wal/RECOVERYXLOG"), 1, "not a WAL file name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := dataDir(t, tt.signal, false)
			if tt.signal == "" {
				os.WriteFile(filepath.Join(dir, "standby.signal"), nil, 0o600)
				os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600)
			}
			code, stderr := runWalfetch(t, dir, tt.args...)
			if code != tt.want || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("exit %d (want %d), stderr %q (want it to contain %q)", code, tt.want, stderr, tt.stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "pg_wal", "RECOVERYXLOG")); err == nil {
				t.Error("RECOVERYXLOG exists after a failure")
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Errorf("left in pg_wal: %v", l)
			}
		})
	}
}

func TestCorruptStoredSegmentNeverReachesPostgreSQL(t *testing.T) {
	h := newTestHub(t, 3)
	name := walname.SegmentName(1, 2, testSegSize)
	path := filepath.Join(h.dir, storage.SegmentPath("main", name, "zstd"))
	stored, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stored[len(stored)/2] ^= 0x55
	if err := os.WriteFile(path, stored, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, signal := range []string{"standby.signal", "recovery.signal"} {
		dir := dataDir(t, signal, true)
		code, stderr := runWalfetch(t, dir, hubArgs(h, "--pitr-retry", "1s", name, "pg_wal/RECOVERYXLOG")...)
		want := map[string]int{"standby.signal": 1, "recovery.signal": 255}[signal]
		if code != want || !strings.Contains(stderr, "verification") {
			t.Errorf("%s: exit %d (want %d): %s", signal, code, want, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "pg_wal", "RECOVERYXLOG")); err == nil {
			t.Errorf("%s: a corrupt segment was handed over", signal)
		}
		if l := leftovers(t, dir); len(l) > 0 {
			t.Errorf("%s: left in pg_wal: %v", signal, l)
		}
	}
}

func TestSegmentOfAnotherClusterRefused(t *testing.T) {
	h := newTestHub(t, 2)
	dir := dataDir(t, "standby.signal", false)
	var b [8]byte
	pgfile.PutControlSystemID(b[:], 12345)
	os.WriteFile(filepath.Join(dir, "global", "pg_control"), b[:], 0o600)
	code, stderr := runWalfetch(t, dir, hubArgs(h, "--prefetch", "0", walname.SegmentName(1, 1, testSegSize), "pg_wal/RECOVERYXLOG")...)
	if code != 1 || !strings.Contains(stderr, "database system") {
		t.Errorf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "pg_wal", "RECOVERYXLOG")); err == nil {
		t.Error("WAL of another cluster was handed over")
	}
}

func TestSignalRemovesTemporaryFileAndExitsOne(t *testing.T) {
	h := newTestHub(t, 2)
	h.delay = 3 * time.Second
	dir := dataDir(t, "standby.signal", false)
	cmd := exec.Command(walfetchBin, hubArgs(h, walname.SegmentName(1, 1, testSegSize), "pg_wal/RECOVERYXLOG")...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the temporary file exists: walfetch is mid-request.
	deadline := time.Now().Add(20 * time.Second)
	for len(leftovers(t, dir)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(leftovers(t, dir)) == 0 {
		t.Fatal("walfetch never created its temporary file")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Exited() || ee.ExitCode() != 1 {
		t.Fatalf("after SIGTERM: %v (want a normal exit with status 1)", err)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("left in pg_wal after SIGTERM: %v", l)
	}
}

// spoolDir is the spool walfetch uses in the data directory dir with the
// settings of hubArgs(h), created.
func spoolDir(t *testing.T, h *testHub, dir string) string {
	t.Helper()
	t.Chdir(dir) // OpenSpool reads global/pg_control relative to the data directory
	sp := walfetch.OpenSpool(walfetch.Settings{URL: h.url, Server: "main", Spool: "pg_wal/walfetch-spool", Prefetch: 16})
	if sp == nil {
		t.Fatal("no spool")
	}
	d := filepath.Join(dir, sp.Dir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestStopSignalWhileWaitingForTheSpoolExitsOne: walfetch ignores stop
// signals while a call may be a plain spool hit, and must handle them again
// before it waits for a download the prefetcher has under way.
func TestStopSignalWhileWaitingForTheSpoolExitsOne(t *testing.T) {
	h := newTestHub(t, 2)
	dir := dataDir(t, "standby.signal", true)
	name := walname.SegmentName(1, 1, testSegSize)
	// A download under way that does not grow, by a prefetcher that runs
	// (holds its lock): walfetch waits up to 5 s for it.
	spool := spoolDir(t, h, dir)
	holdPrefetcherLock(t, spool)
	if err := os.WriteFile(filepath.Join(spool, name+".part"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(walfetchBin, hubArgs(h, name, "pg_wal/RECOVERYXLOG")...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Exited() || ee.ExitCode() != 1 {
		t.Fatalf("after SIGTERM: %v (want a normal exit with status 1)\n%s", err, stderr.String())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("walfetch took %v to stop", d)
	}
	if !strings.Contains(stderr.String(), "terminated received") {
		t.Errorf("stderr: %s", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "pg_wal", "RECOVERYXLOG")); err == nil {
		t.Error("a file was handed over after SIGTERM")
	}
}

// holdPrefetcherLock holds spool's prefetcher lock until the test ends, as a
// running prefetcher does.
func holdPrefetcherLock(t *testing.T, spool string) {
	t.Helper()
	lock, err := os.OpenFile(filepath.Join(spool, walfetch.LockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
}

// TestDownloadNobodyMakesIsNotWaitedFor: walfetch waits for a segment the
// prefetcher is downloading (its .part in the spool), and gives up on a
// download that stopped, then fetches the segment from the hub itself. It
// then executed walfetch-net, which waited as long again: 10 s of recovery
// lost, in two cases.
func TestDownloadNobodyMakesIsNotWaitedFor(t *testing.T) {
	for _, tc := range []struct {
		name string
		// the prefetcher runs (holds its lock)
		prefetcherRuns bool
		// when the .part was last written
		writtenAgo time.Duration
	}{
		// It was killed (out of memory, kill -9) and left its .part:
		// nobody writes a .part but a running prefetcher.
		{"a .part a dead prefetcher left", false, 0},
		// The stall counts from the last write, so walfetch waits one more
		// second and walfetch-net not at all.
		{"a download stalled 4 s ago", true, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHub(t, 2)
			dir := dataDir(t, "standby.signal", true)
			name := walname.SegmentName(1, 1, testSegSize)
			spool := spoolDir(t, h, dir)
			if tc.prefetcherRuns {
				holdPrefetcherLock(t, spool)
			}
			part := filepath.Join(spool, name+".part")
			if err := os.WriteFile(part, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			written := time.Now().Add(-tc.writtenAgo)
			if err := os.Chtimes(part, written, written); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(walfetchBin, hubArgs(h, name, "pg_wal/RECOVERYXLOG")...)
			cmd.Dir = dir
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("walfetch: %v\n%s", err, out)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("walfetch took %v: it waited for a download nobody makes", d)
			}
			if _, err := os.Stat(filepath.Join(dir, "pg_wal", "RECOVERYXLOG")); err != nil {
				t.Errorf("the segment was not handed over: %v", err)
			}
		})
	}
}

// TestNoPrefetcherOutlivesItsDataDir: the prefetcher a test's walfetch call
// starts is gone when the test's data directory is removed. It used to live
// on for its idle time, detached, and one still creating its spool made the
// removal fail in a fresh-clone CI run ("unlinkat .../pg_wal: directory not
// empty", TestPointInTimeRecoveryUsesThePartialOfTheNewestSegmentOnly).
func TestNoPrefetcherOutlivesItsDataDir(t *testing.T) {
	h := newTestHub(t, 3)
	h.add(t, 1, 3)
	var dir string
	t.Run("a miss starts a prefetcher", func(t *testing.T) {
		dir = dataDir(t, "recovery.signal", true)
		if code, stderr := runWalfetch(t, dir, hubArgs(h, walname.SegmentName(1, 1, testSegSize), "pg_wal/RECOVERYXLOG")...); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		pgtest.WaitFor(t, 20*time.Second, "the prefetcher to start", func() bool { return len(processesIn(dir)) > 0 })
	})
	if left := processesIn(dir); len(left) > 0 {
		t.Errorf("processes still running in %s after its test: %v", dir, left)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s not removed: %v", dir, err)
	}
}

// TestPrefetcherStartedOnAHitIgnoresNoStopSignal: a hit with no prefetcher
// running starts one; it must not inherit the stop signals the hit ignored
// (a prefetcher that ignores SIGINT and SIGHUP cannot be stopped by them).
func TestPrefetcherStartedOnAHitIgnoresNoStopSignal(t *testing.T) {
	h := newTestHub(t, 3)
	dir := dataDir(t, "standby.signal", true)
	name := walname.SegmentName(1, 2, testSegSize)
	if err := os.WriteFile(filepath.Join(spoolDir(t, h, dir), name), h.segs[name], 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stderr := runWalfetch(t, dir, hubArgs(h, name, "pg_wal/RECOVERYXLOG")...); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if h.fetches(name) != 0 {
		t.Fatalf("%s was fetched from the hub: not a spool hit", name)
	}
	logPath := filepath.Join(dir, "pg_wal", "walfetch-spool", "prefetcher.log")
	var pid string
	pgtest.WaitFor(t, 20*time.Second, "the prefetcher to start", func() bool {
		log, _ := os.ReadFile(logPath)
		if i := bytes.Index(log, []byte("pid=")); i >= 0 {
			pid = strings.Fields(string(log[i+4:]))[0]
		}
		return pid != ""
	})
	status, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		t.Fatal(err)
	}
	var ignored uint64
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			ignored, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT} {
		if ignored&(1<<(sig-1)) != 0 {
			t.Errorf("the prefetcher ignores %v", sig)
		}
	}
	if p, err := strconv.Atoi(pid); err == nil {
		syscall.Kill(p, syscall.SIGTERM)
	}
}

func TestPrefetcherServesFromSpoolWithoutHub(t *testing.T) {
	h := newTestHub(t, 12)
	dir := dataDir(t, "standby.signal", true)
	args := func(segno walname.SegNo) []string {
		// A window of 6 1 MiB segments: --prefetch counts 16 MiB ones.
		return hubArgs(h, "--prefetch", "6", "--spool-max-mb", "6", "--parallel", "3", walname.SegmentName(1, segno, testSegSize), "pg_wal/RECOVERYXLOG")
	}
	if code, stderr := runWalfetch(t, dir, args(1)...); code != 0 {
		t.Fatalf("first segment: exit %d: %s", code, stderr)
	}
	// The prefetcher fills the spool with the next 6.
	spooled := func() []string {
		keys, _ := filepath.Glob(filepath.Join(dir, "pg_wal", "walfetch-spool", "*", "0*"))
		return keys
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(spooled()) < 6 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := spooled(); len(got) != 6 {
		log, _ := os.ReadFile(filepath.Join(dir, "pg_wal", "walfetch-spool", "prefetcher.log"))
		t.Fatalf("spool holds %d segments, want 6: %v\nprefetcher log:\n%s", len(got), got, log)
	}
	for segno := walname.SegNo(2); segno <= 12; segno++ {
		// PostgreSQL replays a segment between two calls; the prefetcher
		// uses that time to move its window.
		time.Sleep(50 * time.Millisecond)
		name := walname.SegmentName(1, segno, testSegSize)
		if code, stderr := runWalfetch(t, dir, args(segno)...); code != 0 {
			t.Fatalf("%s: exit %d: %s", name, code, stderr)
		}
		got, _ := os.ReadFile(filepath.Join(dir, "pg_wal", "RECOVERYXLOG"))
		if !bytes.Equal(got, h.segs[name]) {
			t.Fatalf("%s: served bytes differ", name)
		}
		if n := h.fetches(name); n != 1 {
			t.Errorf("%s fetched %d times from the hub, want once (by the prefetcher)", name, n)
		}
	}
	// Never more than the window, and nothing behind recovery.
	for _, p := range spooled() {
		t.Errorf("spool still holds %s after recovery passed it", filepath.Base(p))
	}
	// The prefetcher yields to recovery: every one of its threads is niced.
	if threads := prefetcherNice(t, dir); len(threads) == 0 {
		t.Error("no prefetcher thread found")
	} else {
		for tid, nice := range threads {
			if nice != 10 {
				t.Errorf("prefetcher thread %s runs at nice %d, want 10", tid, nice)
			}
		}
	}
	// A .history file is never prefetched.
	for path, n := range h.gets {
		if strings.HasSuffix(path, ".history") {
			t.Errorf("%s fetched %d times", path, n)
		}
	}
}

// TestMissStartsThePrefetcherBeforeItsDownload: on a miss, walfetch starts
// the prefetcher before it downloads the segment itself, not after: the
// prefetcher's start, its first peek and its first downloads overlap that
// download, and with a distant hub the segments recovery asks for next are in
// the spool a round trip or two sooner. The hub here answers the download
// only once the prefetcher has peeked (or after 5 s).
func TestMissStartsThePrefetcherBeforeItsDownload(t *testing.T) {
	h := newTestHub(t, 4)
	dir := dataDir(t, "standby.signal", true)
	first := walname.SegmentName(1, 1, testSegSize)
	peeked := make(chan struct{})
	var once sync.Once
	h.mu.Lock()
	h.hold = func(r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/peek"):
			once.Do(func() { close(peeked) })
		case strings.HasSuffix(r.URL.Path, "/"+first):
			select {
			case <-peeked:
			case <-time.After(5 * time.Second):
			}
		}
	}
	h.mu.Unlock()
	start := time.Now()
	code, stderr := runWalfetch(t, dir, hubArgs(h, first, "pg_wal/RECOVERYXLOG")...)
	elapsed := time.Since(start)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "pg_wal", "RECOVERYXLOG")); !bytes.Equal(got, h.segs[first]) {
		t.Fatal("served bytes differ")
	}
	if elapsed > 4*time.Second {
		t.Errorf("the download of %s waited %v for the prefetcher's first peek: the prefetcher was started after it", first, elapsed.Round(time.Millisecond))
	}
	// The prefetcher, told of the segment once, fetches what follows it.
	deadline := time.Now().Add(30 * time.Second)
	for h.fetches(walname.SegmentName(1, 2, testSegSize)) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := h.fetches(first); n != 1 {
		t.Errorf("%s fetched %d times, want once (by walfetch, not by the prefetcher too)", first, n)
	}
}

func TestSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "walfetch.toml")
	os.WriteFile(cfgPath, []byte("url = \"http://file:1\"\nserver = \"fromfile\"\nprefetch = 3\npitr_retry = \"7m\"\n"), 0o600)
	t.Setenv("WALFETCH_SERVER", "fromenv")
	t.Setenv("WALFETCH_PARALLEL", "9")
	s, pos, err := loadSettings([]string{"--config", cfgPath, "--parallel", "2", "a", "b"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if s.URL != "http://file:1" || s.Server != "fromenv" || s.Prefetch != 3 || s.Parallel != 2 || s.PITRRetry != 7*time.Minute || len(pos) != 2 {
		t.Errorf("settings %+v %v", s, pos)
	}
	os.WriteFile(cfgPath, []byte("url = \"http://file:1\"\nsevrer = \"typo\"\n"), 0o600)
	if _, _, err := loadSettings([]string{"--config", cfgPath, "a", "b"}, os.Stderr); err == nil || !strings.Contains(err.Error(), "sevrer") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestSpoolOfAnotherRestoreIsNeitherUsedNorKept(t *testing.T) {
	h := newTestHub(t, 4)
	dir := dataDir(t, "standby.signal", true)
	name := walname.SegmentName(1, 2, testSegSize)
	// A spool left by an unrelated restore: same segment name, other bytes.
	stale := filepath.Join(dir, "pg_wal", "walfetch-spool", "0123456789abcdef")
	os.MkdirAll(stale, 0o700)
	if err := os.WriteFile(filepath.Join(stale, name), fakeSegment(1, 99), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stderr := runWalfetch(t, dir, hubArgs(h, name, "pg_wal/RECOVERYXLOG")...); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "pg_wal", "RECOVERYXLOG"))
	if !bytes.Equal(got, h.segs[name]) {
		t.Fatal("served the stale spool's segment instead of the hub's")
	}
	waitFor(t, 20*time.Second, "the prefetcher to remove the stale spool", func() bool {
		_, err := os.Stat(stale)
		return os.IsNotExist(err)
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

func TestPrefetcherFollowsTimelineSwitch(t *testing.T) {
	h := newTestHub(t, 8)
	for segno := walname.SegNo(5); segno <= 8; segno++ {
		h.add(t, 2, segno)
	}
	dir := dataDir(t, "standby.signal", true)
	spooled := func(tli string) int {
		names, _ := filepath.Glob(filepath.Join(dir, "pg_wal", "walfetch-spool", "*", tli+"*"))
		n := 0
		for _, p := range names {
			if !strings.HasSuffix(p, ".part") {
				n++
			}
		}
		return n
	}
	args := func(name string) []string {
		return hubArgs(h, "--prefetch", "6", "--spool-max-mb", "6", name, "pg_wal/RECOVERYXLOG")
	}
	if code, stderr := runWalfetch(t, dir, args(walname.SegmentName(1, 1, testSegSize))...); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	waitFor(t, 20*time.Second, "timeline 1 segments in the spool", func() bool { return spooled("00000001") == 6 })
	// Recovery switches to timeline 2 at segment 5.
	name := walname.SegmentName(2, 5, testSegSize)
	if code, stderr := runWalfetch(t, dir, args(name)...); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	waitFor(t, 20*time.Second, "the spool to hold timeline 2's next segments only", func() bool {
		return spooled("00000001") == 0 && spooled("00000002") == 3
	})
}

// prefetcherNice returns the nice value of every thread of the prefetcher
// running for the data directory dir (its pid is in its log).
func prefetcherNice(t *testing.T, dir string) map[string]int {
	t.Helper()
	log, _ := os.ReadFile(filepath.Join(dir, "pg_wal", "walfetch-spool", "prefetcher.log"))
	m := regexp.MustCompile(`prefetcher started.* pid=(\d+)|pid=(\d+) .*prefetcher started`).FindSubmatch(log)
	if m == nil {
		t.Fatalf("no prefetcher start in its log:\n%s", log)
	}
	pid := string(m[1]) + string(m[2])
	tasks, _ := os.ReadDir(filepath.Join("/proc", pid, "task"))
	out := map[string]int{}
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join("/proc", pid, "task", task.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name (which ends with ')'): nice is the 19th field overall.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		nice, _ := strconv.Atoi(fields[16])
		out[task.Name()] = nice
	}
	return out
}

// TestPointInTimeRecoveryUsesThePartialOfTheNewestSegmentOnly: the hub holds
// segments 1 to 3 and what it received of 4 (a .partial). During
// point-in-time recovery, segment 4 is served from the .partial, padded with
// zeros; not on a standby, not with --partial off, and not for a segment
// followed by a stored one (a gap).
func TestPointInTimeRecoveryUsesThePartialOfTheNewestSegmentOnly(t *testing.T) {
	h := newTestHub(t, 3)
	writePartial := func(segno walname.SegNo, n int) string {
		name := walname.SegmentName(1, segno, testSegSize)
		p := h.repo.Work.PartialFile("main", name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, fakeSegment(1, segno)[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	newest := writePartial(4, 300000)
	gap := writePartial(6, 8192)
	h.add(t, 1, 7)

	tests := []struct {
		name, signal, segment string
		extra                 []string
		want                  int
	}{
		{"point-in-time recovery", "recovery.signal", newest, nil, 0},
		{"standby", "standby.signal", newest, nil, 1},
		{"--partial off", "recovery.signal", newest, []string{"--partial", "off"}, 1},
		{"a gap, not the newest segment", "recovery.signal", gap, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := dataDir(t, tt.signal, true)
			code, stderr := runWalfetch(t, dir, hubArgs(h, append(tt.extra, tt.segment, "pg_wal/RECOVERYXLOG")...)...)
			if code != tt.want {
				t.Fatalf("exit %d, want %d: %s", code, tt.want, stderr)
			}
			got, err := os.ReadFile(filepath.Join(dir, "pg_wal", "RECOVERYXLOG"))
			if tt.want != 0 {
				if err == nil {
					t.Error("RECOVERYXLOG exists")
				}
				return
			}
			want := append(fakeSegment(1, 4)[:300000:300000], make([]byte, testSegSize-300000)...)
			if !bytes.Equal(got, want) {
				t.Errorf("RECOVERYXLOG (%d bytes) is not the .partial padded with zeros to %d", len(got), testSegSize)
			}
			if l := leftovers(t, dir, "RECOVERYXLOG"); len(l) > 0 {
				t.Errorf("left in pg_wal: %v", l)
			}
		})
	}
}

// TestHelpShowsEveryDefault: the defaults --help prints, set as values, give
// back exactly the defaults: none is missing from the help, none is wrong.
func TestHelpShowsEveryDefault(t *testing.T) {
	texts := defaultTexts(defaults())
	var s walfetch.Settings
	for _, o := range options {
		if v, ok := texts[o.name]; ok {
			if err := o.set(&s, v); err != nil {
				t.Fatalf("--%s default %q does not parse: %v", o.name, v, err)
			}
		}
	}
	if s != defaults() {
		t.Errorf("the defaults shown give %+v,\nthe defaults are %+v", s, defaults())
	}
	help := usageText()
	for _, want := range []string{"(default 10m)", "(default 16)", "(default pg_wal/walfetch-spool)", "(default 30s)", "(default on)"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestWalfetchLinksNoHubClient: the program PostgreSQL starts for every
// segment links nothing that talks to the hub (HTTP, TLS, zstd): their
// start-up work would be paid on every spool hit. walfetch-net has them.
func TestWalfetchLinksNoHubClient(t *testing.T) {
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	// crypto/sha256 (the FIPS module's packages and their initialisation)
	// and os/exec (internal/godebug) were linked for one hash and one
	// process start each.
	heavy := []string{"net/http", "crypto/tls", "github.com/klauspost/compress/zstd", "github.com/walhub/walhub/hub/client",
		"crypto/sha256", "crypto/internal/fips140", "os/exec"}
	walfetchDeps := deps("github.com/walhub/walhub/cmd/walfetch")
	for _, p := range heavy {
		if slices.Contains(walfetchDeps, p) {
			t.Errorf("cmd/walfetch links %s: a spool hit would pay its start-up", p)
		}
	}
	if !slices.Contains(deps("github.com/walhub/walhub/cmd/walfetch-net"), "github.com/walhub/walhub/hub/client") {
		t.Error("cmd/walfetch-net does not link the hub client")
	}
}

// TestHistoryRequestStartsThePrefetcherAtTheBackup: recovery from a base
// backup asks for a timeline history file before any segment; walfetch then
// starts the prefetcher at the segment the backup_label names, so that the
// first segment recovery asks for is in the spool (with a distant hub, a
// round trip sooner than walfetch's own download). After the prefetcher's
// downloads (the first --parallel guessed, then what its peek lists), the
// call for that segment is a spool hit: it is downloaded once.
func TestHistoryRequestStartsThePrefetcherAtTheBackup(t *testing.T) {
	h := newTestHub(t, 12)
	dir := dataDir(t, "standby.signal", true)
	first := walname.SegmentName(1, 3, testSegSize)
	label := "START WAL LOCATION: 0/300028 (file " + first + ")\nCHECKPOINT LOCATION: 0/300060\nSTART TIMELINE: 1\n"
	if err := os.WriteFile(filepath.Join(dir, "backup_label"), []byte(label), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stderr := runWalfetch(t, dir, hubArgs(h, "00000002.history", "pg_wal/RECOVERYHISTORY")...); code != 1 {
		t.Fatalf("00000002.history, not in the hub: exit %d, want 1: %s", code, stderr)
	}
	spool := spoolDir(t, h, dir)
	waitFor(t, 20*time.Second, "the prefetcher to download "+first+" and the segments after it", func() bool {
		for segno := walname.SegNo(3); segno <= 12; segno++ {
			if _, err := os.Stat(filepath.Join(spool, walname.SegmentName(1, segno, testSegSize))); err != nil {
				return false
			}
		}
		return true
	})
	if code, stderr := runWalfetch(t, dir, hubArgs(h, first, "pg_wal/RECOVERYXLOG")...); code != 0 {
		t.Fatalf("%s: exit %d: %s", first, code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "pg_wal", "RECOVERYXLOG")); !bytes.Equal(got, h.segs[first]) {
		t.Fatal("served bytes differ")
	}
	for segno := walname.SegNo(1); segno <= 12; segno++ {
		want := 1
		if segno < 3 {
			want = 0 // before the backup: never asked for
		}
		if n := h.fetches(walname.SegmentName(1, segno, testSegSize)); n != want {
			t.Errorf("%s downloaded %d times, want %d", walname.SegmentName(1, segno, testSegSize), n, want)
		}
	}
}

// TestPrintRestoreCommand: --print-restore-command prints the line for
// postgresql.conf, quoted for it and for the shell, with this walfetch's
// absolute path and the flags given, and walfetch-take's when it lies beside
// walfetch (else mv: the test binary has none beside it); it refuses what
// would not work.
func TestPrintRestoreCommand(t *testing.T) {
	shellHit := func(server string) string {
		return `read -r b </proc/sys/kernel/random/boot_id && { read -r p; read -r d; read -r t; } <postmaster.pid && mv -f pg_wal/walfetch-spool/"$b.$t.$p".` +
			walfetch.HubTag(walfetch.Settings{URL: "http://hub:7480", Server: server}) + `/%f %p 2>/dev/null || `
	}
	for _, tt := range []struct {
		how        string
		args       []string
		wantStatus int
		want       string // the line, or what stderr says
	}{
		{"the shell's spool hit, then walfetch", []string{"--url", "http://hub:7480", "--server", "main"}, 0,
			"restore_command = '" + shellHit("main") + walfetchBin + " --url http://hub:7480 --server main %f %p'\n"},
		{"quoted for the shell, then for postgresql.conf", []string{"--url", "http://hub:7480", "--server", "it's"}, 0,
			"restore_command = '" + shellHit("it's") + walfetchBin + ` --url http://hub:7480 --server ''it''\''''s'' %f %p'` + "\n"},
		{"prefetching off: walfetch alone", []string{"--url", "http://hub:7480", "--server", "main", "--prefetch", "0"}, 0,
			"restore_command = '" + walfetchBin + " --url http://hub:7480 --server main --prefetch 0 %f %p'\n"},
		{"a spool outside pg_wal", []string{"--url", "http://hub:7480", "--server", "main", "--spool", "/var/spool/wf"}, 2, "is not in pg_wal"},
		{"%f and %p given", []string{"--url", "http://hub:7480", "--server", "main", "%f", "%p"}, 2, "takes flags only"},
		{"no hub", []string{"--server", "main"}, 2, "the hub URL and the server name are required"},
	} {
		t.Run(tt.how, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			status := printRestoreCommand(tt.args, &stdout, &stderr)
			if exe, _ := os.Executable(); exe != "" {
				// The test binary prints its own path: compare with walfetch's.
				stdout = *bytes.NewBufferString(strings.ReplaceAll(stdout.String(), exe, walfetchBin))
			}
			got := stdout.String()
			if tt.wantStatus != 0 {
				got = stderr.String()
			}
			if status != tt.wantStatus || tt.wantStatus == 0 && got != tt.want || tt.wantStatus != 0 && !strings.Contains(got, tt.want) {
				t.Errorf("status %d, printed %q (stderr %q); want %d, %q", status, stdout.String(), stderr.String(), tt.wantStatus, tt.want)
			}
			// No walfetch-take beside the test binary: said, when the line would use it.
			if says := strings.Contains(stderr.String(), "no walfetch-take beside"); tt.wantStatus == 0 && says != strings.Contains(tt.want, "mv -f") {
				t.Errorf("stderr %q: want the missing walfetch-take said exactly when the line has mv", stderr.String())
			}
		})
	}
	// The program itself, as a user runs it, walfetch-take beside it: nothing on stderr.
	var progErr bytes.Buffer
	prog := exec.Command(walfetchBin, "--print-restore-command", "--url", "http://hub:7480", "--server", "main")
	prog.Stderr = &progErr
	out, err := prog.Output()
	if progErr.Len() > 0 {
		t.Errorf("walfetch --print-restore-command said %q", progErr.String())
	}
	command := walfetchBin + " --url http://hub:7480 --server main"
	take := filepath.Join(filepath.Dir(walfetchBin), walfetch.TakeProgram)
	if want := "restore_command = 'read -r b </proc/sys/kernel/random/boot_id && { read -r p; read -r d; read -r t; } <postmaster.pid && exec " +
		take + ` pg_wal/walfetch-spool/"$b.$t.$p".` + walfetch.HubTag(walfetch.Settings{URL: "http://hub:7480", Server: "main"}) +
		"/%f %p " + command + " %f %p || exec " + command + " %f %p'\n"; err != nil || string(out) != want {
		t.Errorf("walfetch --print-restore-command: %q, %v; want %q", out, err, want)
	}
}
