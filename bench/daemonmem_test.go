// BenchmarkDaemonMemory measures whether the daemon's memory grows with the
// number of segments its catalog holds: a real `walhub serve` streams from a
// real PostgreSQL while its catalog holds each count of segments in
// BENCH_CATALOG_SEGMENTS (default "10000 1000000"; a million 16 MiB
// segments is 16 TiB of WAL), and is asked what an operator's tools ask all
// day: /metrics scrapes, the status document, peeks and the backup list.
// Its peak RSS (VmHWM) and the median time of each request are printed per
// count.
//
//	go test -run XXX -bench DaemonMemory -benchtime 1x -timeout 30m ./bench
//
// How the catalog gets that many segments without 16 TiB of WAL: the
// primary's WAL is moved past them with pg_resetwal -l before the hub first
// streams, and the older segments are then written into the catalog (as an
// import of an existing archive would), not into the repository: nothing
// the measured requests do reads a segment's object. BENCH_SCRAPES sets how
// many times each request is made (default 30; peeks 10 times that).
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/status"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
)

func BenchmarkDaemonMemory(b *testing.B) {
	counts := []int{10_000, 1_000_000}
	if s := os.Getenv("BENCH_CATALOG_SEGMENTS"); s != "" {
		counts = nil
		for _, f := range strings.Fields(s) {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				b.Fatalf("BENCH_CATALOG_SEGMENTS: %q is not a count of segments", f)
			}
			counts = append(counts, n)
		}
	}
	scrapes := envInt("BENCH_SCRAPES", 30)
	walhub, err := pgtest.BuildCommand(pgtest.TempDir(b, "bin"), "walhub")
	if err != nil {
		b.Fatal(err)
	}
	var rows []string
	for _, n := range counts {
		rows = append(rows, daemonMemoryAt(b, walhub, n, scrapes))
	}
	fmt.Println("\nthe daemon with N segments cataloged (VmHWM: peak RSS; request times are medians):")
	for _, r := range rows {
		fmt.Println(r)
	}
}

// daemonMemoryAt runs one daemon over a catalog of n segments and returns its
// line of the report.
func daemonMemoryAt(b *testing.B, walhub string, n, scrapes int) string {
	ctx := context.Background()
	const segSize = 16 << 20
	primary := pgtest.NewPrimary(b, fmt.Sprintf("primary%d", n), pgtest.Options{})
	// The primary's WAL starts past the n segments the catalog will hold.
	primary.Stop("fast")
	pgtest.Run(b, pgtest.ServerCommand(b, "pg_resetwal", "-l", walname.SegmentName(1, walname.SegNo(n+16), segSize), primary.DataDir))
	primary.Start()
	// Stopped when this count is measured (after its daemon: defers run last
	// first), so the next count's run has no other PostgreSQL beside it.
	defer primary.Stop("fast")

	dir := pgtest.TempDir(b, "daemon")
	repo := filepath.Join(dir, "repo")
	port := pgtest.FreePort(b)
	hubURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	config := filepath.Join(dir, "walhub.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`repository = %q
[hub]
listen = "127.0.0.1:%d"
[[server]]
name = "main"
conninfo = %q
`, repo, port, primary.ConnString(""))), 0o600); err != nil {
		b.Fatal(err)
	}

	// First start: the hub binds the server and streams from where its WAL is.
	d := startDaemon(b, walhub, config, hubURL)
	primary.SwitchWAL()
	waitCataloged(b, hubURL, walname.SegmentName(1, walname.SegNo(n+16), segSize))
	d.stop()

	// The older segments, as an import of an archive writes them.
	cat, err := catalog.Open(ctx, filepath.Join(repo, storage.CatalogFile))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := cat.EnsureServer(ctx, "main") // bound by the first start
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	received := time.Now().Add(-time.Duration(n) * time.Minute)
	for lo := 0; lo < n; lo += 20_000 {
		var segs []catalog.Segment
		for i := lo; i < min(lo+20_000, n); i++ {
			name := walname.SegmentName(1, walname.SegNo(i), segSize)
			segs = append(segs, catalog.Segment{ServerID: srv.ID, TimeLine: 1, SegNo: walname.SegNo(i), Name: name,
				Size: segSize, StoredSize: segSize / 3, Compression: "zstd", Checksum: "crc32c:00000000",
				StoredPath: "wal/main/" + name + ".zst", ReceivedAt: received.Add(time.Duration(i) * time.Minute)})
		}
		if err := cat.AddSegments(ctx, segs); err != nil {
			b.Fatal(err)
		}
	}
	cat.Close()
	b.Logf("cataloged %d segments in %s", n, time.Since(start).Round(time.Millisecond))

	// Second start: the daemon over the whole catalog, streaming.
	d = startDaemon(b, walhub, config, hubURL)
	defer d.stop()
	primary.SwitchWAL()
	hwmStart := vmHWM(b, d.cmd.Process.Pid)
	var doc status.Document
	if err := getJSON(hubURL+api.StatusPath("main"), &doc); err != nil || doc.WAL.Segments < int64(n) {
		b.Fatalf("the status counts %d segments, not %d or more (%v)", doc.WAL.Segments, n, err)
	}

	// medianTime asks for each path in turn and returns the median answer time.
	medianTime := func(paths ...string) time.Duration {
		var ds []time.Duration
		for _, path := range paths {
			t0 := time.Now()
			if code := get(b, hubURL+path); code != http.StatusOK {
				b.Fatalf("GET %s: HTTP %d", path, code)
			}
			ds = append(ds, time.Since(t0))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	metrics := medianTime(slices.Repeat([]string{"/metrics"}, scrapes)...)
	statusTime := medianTime(slices.Repeat([]string{api.StatusPath("main")}, scrapes)...)
	// Peeks spread evenly over the whole catalog, from its oldest segment.
	var peeks []string
	for i := 0; i < 10*scrapes; i++ {
		peeks = append(peeks, api.PeekPath("main", walname.SegmentName(1, walname.SegNo(i*n/(10*scrapes)), segSize), 16))
	}
	peek := medianTime(peeks...)
	backups := medianTime(slices.Repeat([]string{api.BackupsPath("main")}, scrapes)...)
	hwm := vmHWM(b, d.cmd.Process.Pid)
	return fmt.Sprintf("  %9d segments: VmHWM %3d MB after start, %3d MB after the requests; /metrics %s, status %s, peek %s, backups %s",
		n, hwmStart>>10, hwm>>10, metrics.Round(10*time.Microsecond), statusTime.Round(10*time.Microsecond),
		peek.Round(10*time.Microsecond), backups.Round(10*time.Microsecond))
}

// daemon is a running `walhub serve`.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startDaemon starts `walhub serve --init` and waits until its hub answers.
func startDaemon(b *testing.B, walhub, config, hubURL string) *daemon {
	b.Helper()
	cmd := exec.Command(walhub, "serve", "--init", "--config", config)
	logFile, err := os.Create(config + ".log")
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	b.Cleanup(d.stop)
	pgtest.WaitFor(b, time.Minute, "the hub to answer", func() bool {
		select {
		case <-d.done:
			log, _ := os.ReadFile(config + ".log")
			b.Fatalf("walhub serve exited:\n%s", log)
		default:
		}
		return get(b, hubURL+"/healthz") == http.StatusOK
	})
	return d
}

// stop ends the daemon with SIGTERM and waits for it.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(time.Minute):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// waitCataloged waits until the hub lists segment name (a peek from it
// answers with it).
func waitCataloged(b *testing.B, hubURL, name string) {
	b.Helper()
	pgtest.WaitFor(b, time.Minute, "the hub to catalog "+name, func() bool {
		resp, err := http.Get(hubURL + api.PeekPath("main", name, 1))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), name)
	})
}

// get requests url, reads the whole answer and returns its status code (0
// when the request failed).
func get(b *testing.B, url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// getJSON decodes the JSON answer to a GET of url into v.
func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// vmHWM is a process's peak resident set size in kB.
func vmHWM(b *testing.B, pid int) int {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				b.Fatalf("VmHWM: %q", v)
			}
			return kb
		}
	}
	b.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
