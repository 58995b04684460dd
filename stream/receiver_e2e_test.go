package stream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/storetest"
	"github.com/walhub/walhub/stream"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
	"golang.org/x/sys/unix"
)

func TestReceiverArchivesPgbenchLoadContiguously(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "pgbench", pgtest.Options{SegmentSizeMB: 1})
	tr := newTestRepo(t)
	srv := serverConfig(t, tr, pg, "main", "")
	reg := prometheus.NewRegistry()
	r, stop := runReceiverWithMetrics(t, tr, srv, stream.NewMetrics(reg))
	pg.PgbenchInit(5)
	pg.PgbenchFor(4, 15*time.Second)
	end := pg.SwitchWAL()
	waitStored(t, tr, "main", 1, end)
	// The state file says where the receiver is.
	st, err := stream.ReadState(tr.repo.Work, "main")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "streaming" || st.SegmentSize != 1<<20 || st.LastSegment == "" {
		t.Errorf("state file: %+v", st)
	}
	if held := heldEnd(t, tr, "main", 1); pg.SlotRestartLSN(srv.Slot) > held {
		t.Errorf("slot restart_lsn %s is beyond what the hub holds (%s)", pg.SlotRestartLSN(srv.Slot), held)
	}
	stop()
	st = r.State()
	if st.State != "stopped" || st.FlushedLSN < end {
		t.Errorf("after stop: state %s flushed %s, want stopped and flushed ≥ %s", st.State, st.FlushedLSN, end)
	}
	// The last status update on stop told the server all that is flushed.
	pg.WaitFor(30*time.Second, "the slot to reach the final flush position", func() bool {
		return pg.SlotRestartLSN(srv.Slot) == st.FlushedLSN
	})
	segments := metricValue(t, reg, "walhub_receiver_segments_total", "main")
	flushed := metricValue(t, reg, "walhub_receiver_durable_lsn_bytes", "main")
	if segments < 20 || walname.LSN(flushed) < end || metricValue(t, reg, "walhub_receiver_wal_bytes_total", "main") == 0 {
		t.Errorf("metrics: %v segments, flushed %s", segments, walname.LSN(flushed))
	}
	first, last := checkTimeLine(t, tr, "main", 1)
	if walname.SegmentStart(last+1, 1<<20) < end || last-first < 20 {
		t.Errorf("stored segments %d..%d, want at least 20 reaching %s", first, last, end)
	}
}

func TestReceiverReconnectsAfterPrimaryRestart(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "restart", pgtest.Options{SegmentSizeMB: 1})
	tr := newTestRepo(t)
	srv := serverConfig(t, tr, pg, "main", "")
	reg := prometheus.NewRegistry()
	_, stop := runReceiverWithMetrics(t, tr, srv, stream.NewMetrics(reg))
	pg.PgbenchInit(2)
	for _, mode := range []string{"fast", "immediate"} {
		wait := pg.StartPgbench(2, 5*time.Second)
		wait()
		lsn := pg.SwitchWAL()
		if mode == "fast" {
			// A fast shutdown waits for the hub to flush what was sent.
			waitStored(t, tr, "main", 1, lsn)
		}
		pg.Restart(mode)
		pg.GenerateWAL(3)
		lsn = pg.SwitchWAL()
		waitStored(t, tr, "main", 1, lsn)
	}
	stop()
	checkTimeLine(t, tr, "main", 1)
	// Each restart ended a session with an error and started another.
	if r, e := metricValue(t, reg, "walhub_receiver_reconnects_total", "main"), metricValue(t, reg, "walhub_receiver_errors_total", "main"); r < 2 || e < 2 {
		t.Errorf("after two restarts: %v reconnects, %v errors counted, want at least 2 each", r, e)
	}
}

func TestReceiverRefusesAnotherSystemID(t *testing.T) {
	t.Parallel()
	a := pgtest.NewPrimary(t, "sysid-a", pgtest.Options{SegmentSizeMB: 1})
	b := pgtest.NewPrimary(t, "sysid-b", pgtest.Options{SegmentSizeMB: 1})
	tr := newTestRepo(t)
	r, stop := runReceiver(t, tr, serverConfig(t, tr, a, "main", ""))
	waitStored(t, tr, "main", 1, a.SwitchWAL())
	stop()
	before := heldEnd(t, tr, "main", 1)

	r, stop = runReceiver(t, tr, serverConfig(t, tr, b, "main", ""))
	pgtest.WaitFor(t, 60*time.Second, "receiver to refuse the other cluster", func() bool {
		return r.State().State == "failed"
	})
	if st := r.State(); !strings.Contains(st.LastError, "system id") {
		t.Errorf("last error %q does not name the system id", st.LastError)
	}
	stop()
	if after := heldEnd(t, tr, "main", 1); after != before {
		t.Errorf("the hub took WAL from another cluster: held %s before, %s after", before, after)
	}
	if b.Query("SELECT count(*) FROM pg_replication_slots") != "0" {
		t.Error("a slot was created on the refused cluster")
	}
}

func TestReceiverCreatesMissingSlotOnlyWhenAllowed(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "slot", pgtest.Options{SegmentSizeMB: 1})
	tr := newTestRepo(t)
	r, stop := runReceiver(t, tr, serverConfig(t, tr, pg, "main", "create_slot = false"))
	pgtest.WaitFor(t, 60*time.Second, "receiver to fail for want of a slot", func() bool {
		return r.State().State == "failed"
	})
	if st := r.State(); !strings.Contains(st.LastError, "does not exist") {
		t.Errorf("last error %q does not say the slot is missing", st.LastError)
	}
	stop()
	_, stop = runReceiver(t, tr, serverConfig(t, tr, pg, "main", ""))
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	if got := pg.Query("SELECT slot_type FROM pg_replication_slots WHERE slot_name = 'walhub_main'"); got != "physical" {
		t.Fatalf("slot walhub_main: %q", got)
	}
	stop()
}

func TestReceiverFollowsTimelineSwitchOfCascadingStandby(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "tl-primary", pgtest.Options{SegmentSizeMB: 1})
	pg.PgbenchInit(2)
	sb := pg.NewStandby("tl-standby", pgtest.StandbyOptions{})
	tr := newTestRepo(t)
	_, stop := runReceiver(t, tr, serverConfig(t, tr, sb, "main", ""))
	pg.Pgbench(2, 500)
	lsn := pg.SwitchWAL()
	sb.WaitReplay(lsn, 120*time.Second)
	waitStored(t, tr, "main", 1, lsn)

	sb.Promote()
	if sb.TimeLine() != 2 {
		t.Fatalf("promoted standby is on timeline %d", sb.TimeLine())
	}
	sb.Pgbench(2, 500)
	lsn = sb.SwitchWAL()
	waitStored(t, tr, "main", 2, lsn)
	stop()

	ctx := context.Background()
	id, segSize := serverID(t, tr, "main")
	tl, err := tr.cat.TimeLine(ctx, id, 2)
	if err != nil {
		t.Fatalf("timeline 2 not cataloged: %v", err)
	}
	hist, err := walname.ParseHistory(tl.History)
	if err != nil || len(hist) != 1 {
		t.Fatalf("history of timeline 2: %v %+v", err, hist)
	}
	if _, err := tr.repo.Store.Open(context.Background(), tl.StoredPath); err != nil {
		t.Fatalf("history file: %v", err)
	}
	_, last1 := checkTimeLine(t, tr, "main", 1)
	first2, _ := checkTimeLine(t, tr, "main", 2)
	switchSeg := walname.SegmentOf(hist[0].SwitchLSN, segSize)
	if first2 != switchSeg {
		t.Errorf("timeline 2 starts at segment %d, switch point %s is in %d", first2, hist[0].SwitchLSN, switchSeg)
	}
	if last1+1 < switchSeg {
		t.Errorf("timeline 1 ends at segment %d, before the switch segment %d: a gap", last1, switchSeg)
	}
}

func TestReceiverRecordsGapWhenSlotIsLost(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "lost", pgtest.Options{SegmentSizeMB: 1,
		Conf: []string{"max_slot_wal_keep_size = 8MB", "max_wal_size = 32MB", "min_wal_size = 2MB"}})
	tr := newTestRepo(t)
	srv := serverConfig(t, tr, pg, "main", "")
	_, stop := runReceiver(t, tr, srv)
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	stop()
	// With the hub stopped, more WAL than the slot may keep.
	for range 3 {
		pg.GenerateWAL(10)
		pg.Query("CHECKPOINT")
	}
	if got := pg.Query("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'walhub_main'"); got != "lost" {
		t.Fatalf("slot wal_status is %q, the test needs it lost", got)
	}
	_, stop = runReceiver(t, tr, srv)
	lsn := pg.SwitchWAL()
	waitStored(t, tr, "main", 1, lsn)
	stop()
	id, _ := serverID(t, tr, "main")
	gaps, err := tr.cat.Gaps(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(gaps) != 1 || gaps[0].EndLSN <= gaps[0].StartLSN {
		t.Fatalf("gaps: %+v, want one", gaps)
	}
	t.Logf("gap recorded: %s-%s: %s", gaps[0].StartLSN, gaps[0].EndLSN, gaps[0].Reason)
	// The repository holds the gap too: a catalog rebuilt from it, or a
	// read-only hub's, knows it and why.
	key := storage.GapPath("main", gaps[0].TimeLine, gaps[0].StartLSN, gaps[0].EndLSN)
	f, err := tr.repo.Store.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("the gap's record in the repository: %v", err)
	}
	rec, err := io.ReadAll(f)
	f.Close()
	if err != nil || !strings.Contains(string(rec), "removed") {
		t.Fatalf("the gap's record %s: %q, %v", key, rec, err)
	}
	if _, err := tr.cat.LastSegment(context.Background(), id); errors.Is(err, catalog.ErrNotFound) {
		t.Fatal("nothing stored after the gap")
	}
}

// TestReceiverStopsAcknowledgingWhenStoreIsFull fills the object store (by
// fault injection: no root, no mount): the receiver says why and never
// reports as flushed what it holds neither in the store nor in fsynced
// .partial files; given room, it carries on by itself, with no gap.
func TestReceiverStopsAcknowledgingWhenStoreIsFull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	local, err := storage.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	store := storetest.NewFaulty(local)
	work, err := storage.NewWorkArea(dir)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(context.Background(), work.CatalogPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	tr := &testRepo{dir: dir, toml: fmt.Sprintf("repository = %q\n", dir), repo: repository.New(store, work, cat), cat: cat}

	pg := pgtest.NewPrimary(t, "storefull", pgtest.Options{SegmentSizeMB: 1})
	srv := serverConfig(t, tr, pg, "main", `compression = "none"`)
	r, stop := runReceiver(t, tr, srv)
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	store.SetFreeSpace(2<<20 + 4096) // two more segments, then full
	pg.GenerateWAL(12)
	pg.SwitchWAL()
	pgtest.WaitFor(t, 120*time.Second, "the receiver to report the full store", func() bool {
		return strings.Contains(r.State().LastError, "no space left on device")
	})
	t.Logf("receiver says: %s", r.State().LastError)
	if restart, held := pg.SlotRestartLSN(srv.Slot), heldEnd(t, tr, "main", 1); restart > held {
		t.Fatalf("slot restart_lsn %s is beyond what the hub holds (%s)", restart, held)
	}
	if store.Failures() == 0 {
		t.Fatal("no write failed")
	}
	store.Heal()
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	stop()
	checkTimeLine(t, tr, "main", 1)
}

// TestReceiverStopsAcknowledgingWhenDiskIsFull puts the whole repository
// (store and working area, .partial files included) on a tiny tmpfs: when it
// fills, the receiver says why and never reports as flushed what it could not
// store; given room, it carries on by itself, with no gap.
func TestReceiverStopsAcknowledgingWhenDiskIsFull(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs for the repository needs root (TestReceiverStopsAcknowledgingWhenStoreIsFull needs none)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	repo, err := repository.OpenLocal(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	tr := &testRepo{dir: dir, toml: fmt.Sprintf("repository = %q\n", dir), repo: repo, cat: repo.Catalog}

	pg := pgtest.NewPrimary(t, "diskfull", pgtest.Options{SegmentSizeMB: 1})
	srv := serverConfig(t, tr, pg, "main", `compression = "none"`)
	r, stop := runReceiver(t, tr, srv)
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	pg.GenerateWAL(12)
	pg.SwitchWAL()
	pgtest.WaitFor(t, 120*time.Second, "the receiver to report the full disk", func() bool {
		e := r.State().LastError
		return strings.Contains(e, "no space left on device") || strings.Contains(e, "disk is full")
	})
	t.Logf("receiver says: %s", r.State().LastError)
	if restart, held := pg.SlotRestartLSN(srv.Slot), heldEnd(t, tr, "main", 1); restart > held {
		t.Fatalf("slot restart_lsn %s is beyond what the hub holds (%s)", restart, held)
	}
	if out, err := exec.Command("mount", "-o", "remount,size=200m", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	stop()
	checkTimeLine(t, tr, "main", 1)
}

// TestReceiverCatchesUpAcrossTimelineSwitchAfterDowntime stops the hub, then
// promotes the standby it streams from: on restart the hub finds its resume
// point on timeline 1, streams the rest of it, then follows to timeline 2.
func TestReceiverCatchesUpAcrossTimelineSwitchAfterDowntime(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "tl2-primary", pgtest.Options{SegmentSizeMB: 1})
	pg.PgbenchInit(2)
	sb := pg.NewStandby("tl2-standby", pgtest.StandbyOptions{})
	tr := newTestRepo(t)
	srv := serverConfig(t, tr, sb, "main", "")
	_, stop := runReceiver(t, tr, srv)
	lsn := pg.SwitchWAL()
	sb.WaitReplay(lsn, 120*time.Second)
	waitStored(t, tr, "main", 1, lsn)
	stop()

	pg.Pgbench(2, 300)
	lsn = pg.SwitchWAL()
	sb.WaitReplay(lsn, 120*time.Second)
	sb.Promote()
	sb.Pgbench(2, 300)
	lsn = sb.SwitchWAL()

	_, stop = runReceiver(t, tr, srv)
	waitStored(t, tr, "main", 2, lsn)
	stop()
	_, last1 := checkTimeLine(t, tr, "main", 1)
	first2, _ := checkTimeLine(t, tr, "main", 2)
	if last1+1 < first2 {
		t.Errorf("timeline 1 ends at segment %d, timeline 2 starts at %d: a gap", last1, first2)
	}
}

// TestReceiverResumesBeforeATornPage stops the receiver, then tears its
// .partial as an OS crash can leave the bytes written after the last fsync
// (a page whose header is intact and whose second half is zeros, the pages
// after it intact) and restarts it: it resumes at or before the tear, and
// the archive holds the server's WAL, not the zeros (pg_waldump reads it).
func TestReceiverResumesBeforeATornPage(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "torn", pgtest.Options{SegmentSizeMB: 1})
	tr := newTestRepo(t)
	srv := serverConfig(t, tr, pg, "main", "")
	_, stop := runReceiver(t, tr, srv)
	pg.PgbenchInit(1)
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	// Fill the next segment part of the way.
	pg.Pgbench(2, 400)
	var partial string
	var size int64
	pgtest.WaitFor(t, 60*time.Second, "a .partial of at least 6 pages", func() bool {
		partials, err := tr.repo.Work.Partials("main", 1<<20, 0)
		if err != nil || len(partials) == 0 {
			return false
		}
		p := partials[len(partials)-1]
		partial, size = p.Path, p.Size
		return size >= 6*8192
	})
	stop()
	fi, err := os.Stat(partial)
	if err != nil {
		t.Fatal(err)
	}
	size = fi.Size()
	tearAt := (size/8192-3)*8192 + 4096
	f, err := os.OpenFile(partial, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), tearAt); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Logf("tore %s (%d bytes) at %d..%d", partial, size, tearAt, tearAt+4096)

	var log logLines
	r := stream.NewReceiver(stream.Options{Server: srv, Repo: tr.repo, Log: slog.New(slog.NewTextHandler(&log, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var runErr error
	stopped := false
	stopTorn := func() {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
	}
	t.Cleanup(stopTorn)
	// Segments after the torn one, so that pg_waldump reads it whole.
	pg.GenerateWAL(2)
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	stopTorn()
	if runErr != nil {
		t.Fatal(runErr)
	}
	line := log.find("starting replication")
	t.Log(line)
	m := regexp.MustCompile(` offset=(\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("the receiver did not resume inside the .partial: %s", line)
	}
	if off, _ := strconv.ParseInt(m[1], 10, 64); off > tearAt {
		t.Errorf("resumed at offset %d, past the tear at %d", off, tearAt)
	}
	checkTimeLine(t, tr, "main", 1)
}

// logLines collects a logger's output, for tests that look for a line.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// find returns the first line containing s, "" when none does.
func (l *logLines) find(s string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// TestReceiverBacksOffWhileItCannotStore runs `walhub serve` (compression
// "none") with a file size limit (RLIMIT_FSIZE, no root, no mount) below the
// segment size, so every write into the .partial past the limit fails, as on
// a full disk. Each session streams but stores nothing: the retries must back
// off (1 s, 2 s, 4 s), not come every second, and each resumes inside the
// .partial instead of truncating it. Given room, it carries on by itself.
func TestReceiverBacksOffWhileItCannotStore(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "cannot-store", pgtest.Options{SegmentSizeMB: 1})
	tr := newTestRepo(t)
	cfg := writeConfig(t, tr, serverTOML(pg, "main", `compression = "none"`))
	c := startServe(t, cfg)
	limit := func(n uint64) {
		t.Helper()
		if err := unix.Prlimit(c.cmd.Process.Pid, unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: n, Max: unix.RLIM_INFINITY}, nil); err != nil {
			t.Fatalf("prlimit: %v", err)
		}
	}
	limit(900 << 10)
	pg.GenerateWAL(2)

	failures := func() []string {
		data, _ := os.ReadFile(c.log)
		var out []string
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, "receiver failed, will retry") {
				out = append(out, l)
			}
		}
		return out
	}
	pgtest.WaitFor(t, 90*time.Second, "three failed sessions", func() bool { return len(failures()) >= 3 })
	var waits []string
	for _, l := range failures()[:3] {
		m := regexp.MustCompile(` retry_in=(\S+)`).FindStringSubmatch(l)
		if m == nil || !strings.Contains(l, "file too large") {
			t.Fatalf("failure line: %s", l)
		}
		waits = append(waits, m[1])
	}
	// The first session stored WAL up to the limit; the next ones stored none.
	if strings.Join(waits, " ") != "1s 2s 4s" {
		t.Errorf("retries after %v, want 1s 2s 4s", waits)
	}
	data, _ := os.ReadFile(c.log)
	starts := 0
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.Contains(l, "starting replication") {
			continue
		}
		if starts++; starts > 1 && !strings.Contains(l, "resuming_in=") {
			t.Errorf("a retry started over instead of resuming inside the .partial: %s", l)
		}
	}
	limit(unix.RLIM_INFINITY)
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	c.stop()
	checkTimeLine(t, tr, "main", 1)
}
