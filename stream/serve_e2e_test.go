package stream_test

import (
	"bytes"
	"encoding/binary"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/stream"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
	"github.com/walhub/walhub/walrecord"
)

// TestServeResumesAfterKill9WithoutGap kills `walhub serve` with SIGKILL at
// several moments under pgbench load and restarts it: the slot never passes
// what the hub holds, and the archive ends up whole.
func TestServeResumesAfterKill9WithoutGap(t *testing.T) {
	t.Parallel()
	for _, compression := range []string{"zstd", "none"} {
		t.Run(compression, func(t *testing.T) {
			t.Parallel()
			pg := pgtest.NewPrimary(t, "kill9-"+compression, pgtest.Options{SegmentSizeMB: 1})
			pg.PgbenchInit(5)
			tr := newTestRepo(t)
			cfg := writeConfig(t, tr, serverTOML(pg, "main", "compression = \""+compression+"\""))
			wait := pg.StartPgbench(4, 30*time.Second)
			for _, delay := range []time.Duration{2 * time.Second, 700 * time.Millisecond, 3 * time.Second,
				1200 * time.Millisecond, 2500 * time.Millisecond} {
				c := startServe(t, cfg)
				time.Sleep(delay)
				c.kill9()
				if _, err := tr.cat.ServerByName(t.Context(), "main"); err != nil {
					continue
				}
				if pg.Query("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walhub_main'") == "0" {
					continue // killed before it created the slot
				}
				restart, held := pg.SlotRestartLSN("walhub_main"), heldEnd(t, tr, "main", 1)
				t.Logf("killed after %s: slot restart_lsn %s, hub holds up to %s", delay, restart, held)
				if restart > held {
					t.Fatalf("slot restart_lsn %s is beyond what the hub holds (%s): the server may recycle WAL the hub lacks", restart, held)
				}
			}
			wait()
			c := startServe(t, cfg)
			waitStored(t, tr, "main", 1, pg.SwitchWAL())
			stopWhole(t, c, tr)
		})
	}
}

func TestServeReceivesFromTwoServers(t *testing.T) {
	t.Parallel()
	a := pgtest.NewPrimary(t, "two-a", pgtest.Options{SegmentSizeMB: 1})
	b := pgtest.NewPrimary(t, "two-b", pgtest.Options{})
	tr := newTestRepo(t)
	c := startServe(t, writeConfig(t, tr, serverTOML(a, "alpha", ""), serverTOML(b, "beta", "compression = \"none\"")))
	a.GenerateWAL(5)
	b.GenerateWAL(40)
	waitStored(t, tr, "alpha", 1, a.SwitchWAL())
	waitStored(t, tr, "beta", 1, b.SwitchWAL())
	c.stop()
	checkTimeLine(t, tr, "alpha", 1)
	checkTimeLine(t, tr, "beta", 1)
	for name, size := range map[string]uint64{"alpha": 1 << 20, "beta": 16 << 20} {
		st, err := stream.ReadState(tr.repo.Work, name)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "stopped" || st.SegmentSize != size {
			t.Errorf("%s state after SIGTERM: %s with %d-byte segments", name, st.State, st.SegmentSize)
		}
	}
}

// TestSynchronousReceiverHoldsCommits lists the hub as the only synchronous
// standby: commits succeed while it runs, wait while it is stopped, and
// complete once it is back.
func TestSynchronousReceiverHoldsCommits(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "sync", pgtest.Options{SegmentSizeMB: 1,
		Conf: []string{"synchronous_standby_names = 'walhub_main'"}})
	tr := newTestRepo(t)
	srv := serverConfig(t, tr, pg, "main", "synchronous = true")
	_, stop := runReceiver(t, tr, srv)
	pg.WaitFor(60*time.Second, "the hub to be the synchronous standby", func() bool {
		s, _ := pg.TryQuery("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'walhub_main'")
		return s == "sync"
	})
	pg.Query("CREATE TABLE t (x int)")
	for i := range 50 {
		pg.Query("INSERT INTO t VALUES (" + strconv.Itoa(i) + ")")
	}
	stop()

	// A commit issued while the hub is down completes once it is back.
	bg := exec.Command(pgtest.Bin(t, "psql"), "-X", "-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port), "-U", "postgres",
		"-d", "postgres", "-c", "INSERT INTO t VALUES (1000)")
	var bgOut strings.Builder
	bg.Stdout, bg.Stderr = &bgOut, &bgOut
	if err := bg.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- bg.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("commit finished with the synchronous hub stopped: %v %s", err, bgOut.String())
	case <-time.After(3 * time.Second):
	}
	if n := pg.Query("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"); n != "1" {
		t.Fatalf("%s sessions wait for synchronous replication, want 1", n)
	}
	_, stop = runReceiver(t, tr, srv)
	select {
	case err := <-done:
		if err != nil || strings.Contains(bgOut.String(), "WARNING") {
			t.Fatalf("waiting commit: %v %s", err, bgOut.String())
		}
	case <-time.After(120 * time.Second):
		t.Fatal("the waiting commit did not complete after the hub came back")
	}
	stop()
}

// TestServeResumesInsidePartialAfterKill9 kills `walhub serve` with SIGKILL
// in the middle of segments under pgbench load and restarts it: it resumes
// inside the .partial at what it proves whole (not at the segment start),
// logs what it recovered, the slot's restart_lsn never moves backwards, and
// the archive ends up whole (pg_waldump reads it).
func TestServeResumesInsidePartialAfterKill9(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewPrimary(t, "resume-partial", pgtest.Options{SegmentSizeMB: 1})
	pg.PgbenchInit(2)
	tr := newTestRepo(t)
	cfg := writeConfig(t, tr, serverTOML(pg, "main", ""))

	// Watch restart_lsn for the whole test.
	stopWatch := make(chan struct{})
	watched := make(chan []walname.LSN, 1)
	go func() {
		var seen []walname.LSN
		defer func() { watched <- seen }()
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(50 * time.Millisecond):
			}
			out, err := pg.TryQuery("SELECT COALESCE(restart_lsn, '0/0') FROM pg_replication_slots WHERE slot_name = 'walhub_main'")
			if lsn, perr := walname.ParseLSN(out); err == nil && perr == nil && lsn != 0 &&
				(len(seen) == 0 || lsn != seen[len(seen)-1]) {
				seen = append(seen, lsn)
			}
		}
	}()

	wait := pg.StartPgbench(2, 20*time.Second)
	resumedInside := 0
	c := startServe(t, cfg)
	// A clean stop too: its last status update reported all it received,
	// often in the middle of a record, past the page the restart resumes at.
	for round, kill := range []bool{true, true, false, true} {
		time.Sleep(2500 * time.Millisecond)
		if kill {
			c.kill9()
		} else {
			c.stop()
		}
		c = startServe(t, cfg)
		line := waitLogLine(t, c, "starting replication")
		t.Logf("after stop %d (kill: %v): %s", round+1, kill, line)
		if m := regexp.MustCompile(` offset=(\d+)`).FindStringSubmatch(line); m != nil && m[1] != "0" {
			resumedInside++
		}
		if !kill {
			continue
		}
		if rec := waitLogLine(t, c, "recovered after an unclean stop"); !strings.Contains(rec, "durable_lsn=") {
			t.Errorf("recovery line: %s", rec)
		}
	}
	wait()
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	c.stop()
	close(stopWatch)
	seen := <-watched
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Errorf("slot restart_lsn moved backwards from %s to %s", seen[i-1], seen[i])
		}
	}
	if len(seen) < 5 {
		t.Errorf("restart_lsn seen at %d positions only: %v", len(seen), seen)
	}
	if resumedInside == 0 {
		t.Error("no restart resumed inside the .partial: each started at a segment boundary")
	}
	checkTimeLine(t, tr, "main", 1)
}

// waitLogLine waits until the child's log has a line containing s, after
// the lines an earlier call returned, and returns it.
func waitLogLine(t *testing.T, c *child, s string) string {
	t.Helper()
	var found string
	pgtest.WaitFor(t, 60*time.Second, "walhub serve to log "+s, func() bool {
		data, _ := os.ReadFile(c.log)
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, s) {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

// TestServeRecyclesPartialsSafely runs `walhub serve` under pgbench load,
// where the receiver makes its .partial files from the files of segments it
// stored, holding an older segment's WAL past what is received:
//   - the hub serves a .partial only up to what was received: no page of
//     another segment is ever served;
//   - after a kill -9 the newest .partial is such a file at its full size:
//     the restart keeps of it what its WAL proves and nothing of the older
//     segment's, and resumes there;
//
// and the archive ends up whole.
func TestServeRecyclesPartialsSafely(t *testing.T) {
	t.Parallel()
	const segSize = 1 << 20
	pg := pgtest.NewPrimary(t, "recycle", pgtest.Options{SegmentSizeMB: 1})
	pg.PgbenchInit(5)
	tr := newTestRepo(t)
	cfg := writeConfig(t, tr, serverTOML(pg, "main", ""))
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	listen := regexp.MustCompile(`listen = "([^"]+)"`).FindSubmatch(text)
	hc, err := client.New(client.Options{URL: "http://" + string(listen[1]), Server: "main"})
	if err != nil {
		t.Fatal(err)
	}
	wait := pg.StartPgbench(4, 40*time.Second)
	c := startServe(t, cfg)
	servedRecycled, crashedStale := 0, false
	for round := 0; round < 6 && (servedRecycled == 0 || !crashedStale); round++ {
		// Fetch the newest .partial until it is a recycled file that the
		// hub served (the first two segments after a start are new files:
		// spares come from segments stored since), then kill.
		for end := time.Now().Add(15 * time.Second); time.Now().Before(end); {
			p, ok := newestPartial(t, tr.dir)
			if !ok {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			var body bytes.Buffer
			if _, err := hc.FetchWAL(t.Context(), p.name+".partial", &body); err != nil {
				continue // stored meanwhile, or not yet served
			}
			if off := foreignPage(body.Bytes(), p.segNo, segSize); off >= 0 {
				t.Fatalf("the hub served %s.partial (%d bytes) with another segment's page at %d", p.name, body.Len(), off)
			}
			if data, err := os.ReadFile(p.path); err == nil && len(data) == segSize && foreignPage(data, p.segNo, segSize) > 0 && body.Len() > 0 {
				servedRecycled++
				break
			}
		}
		c.kill9()
		p, ok := newestPartial(t, tr.dir)
		if !ok {
			c = startServe(t, cfg)
			continue
		}
		data, err := os.ReadFile(p.path)
		if err != nil {
			t.Fatal(err)
		}
		stale := foreignPage(data, p.segNo, segSize)
		c = startServe(t, cfg)
		if len(data) != segSize || stale <= 0 {
			continue // not a recycled file with WAL of its own (killed at the wrong moment)
		}
		crashedStale = true
		// What the test proves of the file without the previous segment's
		// decoder state; the receiver, with it, may prove a little more.
		dec := walrecord.NewDecoder(segSize, walname.SegmentStart(p.segNo, segSize))
		dec.Write(data[:stale])
		proven := int64(walname.SegmentOffset(dec.VerifiedAtEnd(), segSize))
		line := waitLogLine(t, c, "recovered after an unclean stop")
		t.Logf("killed with %s.partial recycled, another segment's pages from %d: %s", p.name, stale, line)
		m := regexp.MustCompile(` partial=(\S+) whole_bytes=(\d+) cut_bytes=(\d+)`).FindStringSubmatch(line)
		if m == nil || m[1] != p.name+".partial" {
			t.Fatalf("the restart did not recover %s.partial: %s", p.name, line)
		}
		whole, _ := strconv.ParseInt(m[2], 10, 64)
		cut, _ := strconv.ParseInt(m[3], 10, 64)
		if whole > int64(stale) || whole < proven || whole+cut != segSize {
			t.Errorf("kept %d bytes and cut %d: want at least the %d proven, nothing from %d on", whole, cut, proven, stale)
		}
	}
	if servedRecycled == 0 || !crashedStale {
		t.Fatalf("no recycled .partial seen: served %d, crashed with one %v", servedRecycled, crashedStale)
	}
	wait()
	waitStored(t, tr, "main", 1, pg.SwitchWAL())
	stopWhole(t, c, tr)
}

type partialPath struct {
	path, name string
	segNo      walname.SegNo
}

// newestPartial finds the newest .partial of server "main" in the working
// area dir (without WorkArea.Partials, which removes the receiver's spares).
func newestPartial(t *testing.T, dir string) (partialPath, bool) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "main", "wal", "*", "*.partial"))
	if err != nil || len(paths) == 0 {
		return partialPath{}, false
	}
	sort.Slice(paths, func(i, j int) bool { return filepath.Base(paths[i])[8:] < filepath.Base(paths[j])[8:] })
	p := paths[len(paths)-1]
	name := strings.TrimSuffix(filepath.Base(p), ".partial")
	_, segNo, err := walname.ParseSegment(name, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return partialPath{path: p, name: name, segNo: segNo}, true
}

// foreignPage returns the offset of the first page of data (a segment's
// bytes from its start) whose header gives another address than its own,
// -1 when there is none.
func foreignPage(data []byte, segNo walname.SegNo, segSize uint64) int {
	start := uint64(walname.SegmentStart(segNo, segSize))
	for off := 0; off+16 <= len(data); off += walrecord.PageSize {
		if binary.LittleEndian.Uint64(data[off+8:]) != start+uint64(off) {
			return off
		}
	}
	return -1
}

// stopWhole stops walhub serve and checks what it left: timeline 1 of
// server main whole in the archive, no temporary file anywhere.
func stopWhole(t *testing.T, c *child, tr *testRepo) {
	t.Helper()
	c.stop()
	checkTimeLine(t, tr, "main", 1)
	filepath.WalkDir(tr.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", path)
		}
		return nil
	})
}
