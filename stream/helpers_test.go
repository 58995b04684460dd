package stream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/stream"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/test/s3test"
	"github.com/walhub/walhub/walname"
)

// walhubBin is the walhub binary built once for the tests that run the
// receiver as a child process (to kill it with SIGKILL).
var walhubBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "walhub-stream-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	walhubBin, err = pgtest.BuildCommand(dir, "walhub")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testRepo is a repository with its catalog, for one test.
type testRepo struct {
	dir  string // the working area (the repository itself when local)
	toml string // the configuration's repository lines
	repo *repository.Repository
	cat  *catalog.Catalog
}

func newTestRepo(t *testing.T) *testRepo {
	t.Helper()
	dir := t.TempDir()
	repo, err := repository.OpenLocal(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	return &testRepo{dir: dir, toml: fmt.Sprintf("repository = %q\n", dir), repo: repo, cat: repo.Catalog}
}

// newS3TestRepo is a repository in the bucket of a real S3 server (under
// the prefix "repo"), with its working area in a temporary directory,
// opened the way walhub opens it from its configuration.
func newS3TestRepo(t *testing.T, bucket *s3test.Server) *testRepo {
	t.Helper()
	dir := t.TempDir()
	text := bucket.TOML("repo", dir, t.TempDir())
	cfg, err := config.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repository.Init(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	repo, err := repository.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	return &testRepo{dir: dir, toml: text, repo: repo, cat: repo.Catalog}
}

// serverTOML is the [[server]] section for a cluster, with extra keys.
func serverTOML(c *pgtest.Cluster, name, extra string) string {
	return fmt.Sprintf("[[server]]\nname = %q\nconninfo = %q\nstatus_interval = \"1s\"\n%s\n", name, c.ConnString(""), extra)
}

// serverConfig parses a server section the way walhub does, defaults included.
func serverConfig(t *testing.T, tr *testRepo, c *pgtest.Cluster, name, extra string) *config.Server {
	t.Helper()
	cfg, err := config.Parse(tr.toml + serverTOML(c, name, extra))
	if err != nil {
		t.Fatal(err)
	}
	return &cfg.Servers[0]
}

// runReceiver runs a receiver in this process; stop cancels it and waits.
func runReceiver(t *testing.T, tr *testRepo, srv *config.Server) (*stream.Receiver, func()) {
	t.Helper()
	return runReceiverWithMetrics(t, tr, srv, nil)
}

func runReceiverWithMetrics(t *testing.T, tr *testRepo, srv *config.Server, m *stream.Metrics) (*stream.Receiver, func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	r := stream.NewReceiver(stream.Options{Server: srv, Repo: tr.repo, Log: log, Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("receiver did not stop within 60s")
		}
	}
	t.Cleanup(stop)
	return r, stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// child is `walhub serve` running as a child process.
type child struct {
	t   *testing.T
	cmd *exec.Cmd
	log string
}

// writeConfig writes a walhub configuration file with the given server sections.
func writeConfig(t *testing.T, tr *testRepo, sections ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "walhub.toml")
	// Each daemon's hub listens on a port of its own: tests run in parallel.
	text := fmt.Sprintf("%s\n[hub]\nlisten = \"127.0.0.1:%d\"\n%s", tr.toml, pgtest.FreePort(t),
		strings.Join(sections, "\n"))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func startServe(t *testing.T, configPath string) *child {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), fmt.Sprintf("serve-%d.log", time.Now().UnixNano()))
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(walhubBin, "serve", "--init", "--config", configPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logFile.Close()
	c := &child{t: t, cmd: cmd, log: logPath}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("--- walhub serve log:\n%s", tail(data, 8000))
		}
	})
	return c
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// kill9 kills the child with SIGKILL.
func (c *child) kill9() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
}

// stop sends SIGTERM and expects a clean exit.
func (c *child) stop() {
	c.t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			c.t.Errorf("walhub serve exited with %v after SIGTERM", err)
		}
	case <-time.After(60 * time.Second):
		c.t.Fatal("walhub serve did not stop within 60s of SIGTERM")
	}
}

func serverID(t *testing.T, tr *testRepo, name string) (int64, uint64) {
	t.Helper()
	s, err := tr.cat.ServerByName(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.ID, s.SegmentSize
}

// waitStored waits until the segment before the one holding lsn is stored on
// timeline tli (lsn is typically what pg_switch_wal returned).
func waitStored(t *testing.T, tr *testRepo, name string, tli walname.TimeLine, lsn walname.LSN) {
	t.Helper()
	pgtest.WaitFor(t, 180*time.Second, fmt.Sprintf("%s: segments up to %s stored", name, lsn), func() bool {
		s, err := tr.cat.ServerByName(context.Background(), name)
		if err != nil || s.SegmentSize == 0 {
			return false
		}
		want := walname.SegmentName(tli, walname.SegmentOf(lsn-1, s.SegmentSize), s.SegmentSize)
		_, err = tr.cat.Segment(context.Background(), s.ID, want)
		return err == nil
	})
}

// checkTimeLine checks that the segments of tli are contiguous from first to
// last, match their checksums, and that pg_waldump reads them without error.
// It returns the first and last segment numbers.
func checkTimeLine(t *testing.T, tr *testRepo, name string, tli walname.TimeLine) (first, last walname.SegNo) {
	t.Helper()
	ctx := context.Background()
	id, segSize := serverID(t, tr, name)
	ranges, err := tr.cat.SegmentRanges(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range ranges {
		if r.TimeLine == tli {
			first, last, found = r.First, r.Last, true
		}
	}
	if !found {
		t.Fatalf("%s: no segment stored on timeline %d", name, tli)
	}
	missing, err := tr.cat.MissingSegments(ctx, id, tli, first, last+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%s timeline %d: segments missing between %d and %d: %v", name, tli, first, last, missing)
	}
	gaps, err := tr.cat.Gaps(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(gaps) > 0 {
		t.Fatalf("%s: gaps recorded: %+v", name, gaps)
	}
	segs, err := tr.cat.Segments(ctx, id, tli, first, last+1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for _, s := range segs {
		f, err := tr.repo.Store.Open(context.Background(), s.StoredPath)
		if err != nil {
			t.Fatalf("segment %s cataloged but not readable: %v", s.Name, err)
		}
		var data []byte
		if s.Compression == "zstd" {
			if err := dec.Reset(f); err != nil {
				t.Fatal(err)
			}
			data, err = io.ReadAll(dec)
		} else {
			data, err = io.ReadAll(f)
		}
		f.Close()
		if err != nil {
			t.Fatalf("read %s: %v", s.Name, err)
		}
		if uint64(len(data)) != segSize || checksum.Of(data) != s.Checksum {
			t.Fatalf("segment %s: %d bytes with %s, catalog says %d bytes with %s", s.Name, len(data), checksum.Of(data), segSize, s.Checksum)
		}
		if err := os.WriteFile(filepath.Join(dir, s.Name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if last > first {
		start := walname.SegmentStart(first, segSize)
		end := walname.SegmentStart(last, segSize)
		cmd := exec.Command(pgtest.Bin(t, "pg_waldump"), "-q", "-p", dir, "-t", fmt.Sprint(tli), "-s", start.String(), "-e", end.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pg_waldump over %s timeline %d segments %d..%d: %v\n%s", name, tli, first, last, err, tail(out, 4000))
		}
	}
	t.Logf("%s timeline %d: segments %d..%d stored, checksums match, pg_waldump reads them", name, tli, first, last)
	return first, last
}

// heldEnd is the end of the WAL the hub holds contiguously on tli: the
// stored segments, then the .partial that follows them, if any.
func heldEnd(t *testing.T, tr *testRepo, name string, tli walname.TimeLine) walname.LSN {
	t.Helper()
	ctx := context.Background()
	id, segSize := serverID(t, tr, name)
	last, err := tr.cat.LastSegment(ctx, id)
	var end walname.LSN
	switch {
	case err == nil:
		end = walname.SegmentStart(last.SegNo+1, segSize)
	case !errors.Is(err, catalog.ErrNotFound):
		t.Fatal(err)
	}
	// Complete .partial files not yet stored count too, then the newest: up
	// to its first page of another segment (a recycled file holds an older
	// segment's WAL past what was received).
	for {
		segNo := walname.SegmentOf(end, segSize)
		data, err := os.ReadFile(tr.repo.Work.PartialFile(name, walname.SegmentName(tli, segNo, segSize)))
		if err != nil {
			return end
		}
		if off := foreignPage(data, segNo, segSize); off >= 0 {
			data = data[:off]
		}
		end += walname.LSN(len(data))
		if uint64(len(data)) < segSize {
			return end
		}
	}
}

// metricValue returns the value of a metric for server, from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name, server string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "server" && l.GetValue() == server {
					if c := m.GetCounter(); c != nil {
						return c.GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s for server %s", name, server)
	return 0
}
