package hubfetch

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

// TestPrefetcherKeepsTheSpoolLockWhileItRuns: the spool's lock is held from
// the prefetcher's start to its exit, garbage collections included. It was
// held by an open file nothing referred to after the flock, which the next
// collection closed: a second prefetcher (started by a walfetch call that
// came before the first one's socket existed) then ran beside the first,
// removed its downloads under way, and one renamed the other's unfinished
// file into the spool, which recovery took: "archive file ... has wrong
// size" in a point-in-time recovery test. The prefetcher runs in a process
// of its own, as walfetch starts it (it lowers its priority and its
// processors), collecting garbage as often as it can (GOGC=1).
func TestPrefetcherKeepsTheSpoolLockWhileItRuns(t *testing.T) {
	const childEnv = "HUBFETCH_TEST_RUN_PREFETCHER"
	if os.Getenv(childEnv) != "" {
		os.Exit(RunPrefetcher())
	}
	const systemID = 7300000000000000042
	const segSize = 1 << 20
	hub := &segmentHub{segSize: segSize, systemID: systemID, first: 1, last: 40}
	srv := hub.start(t)
	dir := t.TempDir()
	cfg, err := json.Marshal(walfetch.PrefetcherConfig{
		Settings: walfetch.Settings{URL: srv.URL, Server: "main", Prefetch: 8, Parallel: 2, SpoolMax: 1024,
			Timeout: 10 * time.Second, IdleExit: 2 * time.Second},
		Dir: dir, Root: dir, SystemID: strconv.FormatUint(systemID, 10), Next: walname.SegmentName(1, 11, segSize)})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPrefetcherKeepsTheSpoolLockWhileItRuns$")
	cmd.Env = append(os.Environ(), childEnv+"=1", walfetch.PrefetcherEnv+"="+string(cfg), "GOGC=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	sp := &walfetch.Spool{Dir: dir, Root: dir, SystemID: systemID}
	last := sp.Path(walname.SegmentName(1, 18, segSize))
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(last); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the prefetcher did not fill its window (%s) within 20 s", last)
		}
	}
	// Time for the finalizers its collections queued to run.
	time.Sleep(100 * time.Millisecond)
	f, err := os.OpenFile(sp.Path(walfetch.LockName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Errorf("a second prefetcher's flock of the spool's lock while the first runs: %v, want %v", err, syscall.EWOULDBLOCK)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the prefetcher: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the prefetcher did not exit once idle")
	}
}

// TestDownloadReplacedUnderwayStaysOutOfTheSpool: when a download's .part
// file is removed while it runs and another writer makes a file of that
// name, the download renames nothing: the other writer's file, unfinished
// and unchecked as far as this download knows, is neither put in the spool
// under the segment's name nor removed.
func TestDownloadReplacedUnderwayStaysOutOfTheSpool(t *testing.T) {
	const systemID = 7300000000000000042
	const segSize = 1 << 20
	hub := &segmentHub{segSize: segSize, systemID: systemID, first: 1, last: 40}
	var p *prefetcher
	name := walname.SegmentName(1, 11, segSize)
	whole, _ := hub.segment(name)
	replaced := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set(api.HeaderChecksum, checksum.Of(whole))
		hd.Set(api.HeaderSize, strconv.Itoa(segSize))
		hd.Set(api.HeaderSystemID, strconv.FormatUint(systemID, 10))
		hd.Set(api.HeaderSegmentSize, strconv.Itoa(segSize))
		w.Write(whole[:segSize/2])
		w.(http.Flusher).Flush()
		// Another writer, halfway through: what the other prefetcher did.
		part := p.sp.Path(name + ".part")
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if fi, err := os.Stat(part); err == nil && fi.Size() > 0 || time.Now().After(deadline) {
				break
			}
		}
		err := os.Remove(part)
		if err == nil {
			err = os.WriteFile(part, []byte("another writer's"), 0o600)
		}
		replaced <- err
		w.Write(whole[segSize/2:])
	}))
	t.Cleanup(srv.Close)
	s := walfetch.Settings{Prefetch: 16, Parallel: 4, SpoolMax: 1024, Timeout: 30 * time.Second}
	p = newTestPrefetcher(t, s, srv.URL, systemID)
	p.inflight[name] = true
	p.fetch(download{seg: api.PeekSegment{Name: name, Checksum: checksum.Of(whole)}, segSize: segSize})
	if err := <-replaced; err != nil {
		t.Fatalf("replacing the .part: %v", err)
	}
	if _, err := os.Stat(p.sp.Path(name)); !errors.Is(err, os.ErrNotExist) || p.fetched[name] {
		t.Errorf("%s in the spool (%v, fetched %v), want the download refused", name, err, p.fetched[name])
	}
	if b, err := os.ReadFile(p.sp.Path(name + ".part")); err != nil || string(b) != "another writer's" {
		t.Errorf("the other writer's %s.part: %q, %v; want it left alone", name, b, err)
	}
}
