package hubfetch

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

func TestDownloadSlotsKeepBytesInFlightForSmallSegments(t *testing.T) {
	tests := []struct {
		name             string
		parallel, window int
		segSize          uint64
		want             int
	}{
		{"16 MiB: --parallel", 4, 16, 16 << 20, 4},
		{"64 MiB: --parallel", 4, 16, 64 << 20, 4},
		{"segment size not known yet: --parallel", 4, 16, 0, 4},
		{"1 MiB: up to the window", 4, 16, 1 << 20, 16},
		{"4 MiB: 4 x 16/4", 4, 16, 4 << 20, 16},
		{"8 MiB: 4 x 16/8", 4, 16, 8 << 20, 8},
		{"1 MiB, large window: at most maxAutoDownloads", 4, 200, 1 << 20, maxAutoDownloads},
		{"a window smaller than --parallel: --parallel", 4, 2, 1 << 20, 4},
		{"--parallel above the bound stays", 40, 200, 1 << 20, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := downloadSlots(tt.parallel, tt.window, tt.segSize); got != tt.want {
				t.Errorf("downloadSlots(%d, %d, %d) = %d, want %d", tt.parallel, tt.window, tt.segSize, got, tt.want)
			}
		})
	}
	if got := maxDownloads(walfetch.Settings{Parallel: 4, Prefetch: 16, SpoolMax: 1024}); got != maxAutoDownloads {
		t.Errorf("maxDownloads(parallel 4, prefetch 16) = %d, want %d (1 MiB segments)", got, maxAutoDownloads)
	}
}

// TestWindowHoldsTheSameBytesForSmallSegments: --prefetch counts 16 MiB
// segments; smaller segments get as many more as hold the same bytes, and
// --spool-max-mb bounds every window.
func TestWindowHoldsTheSameBytesForSmallSegments(t *testing.T) {
	for _, tt := range []struct {
		name     string
		prefetch int
		spoolMax int64
		segSize  uint64
		want     int
	}{
		{"16 MiB: --prefetch", 16, 1024, 16 << 20, 16},
		{"1 MiB: 16 x 16", 16, 1024, 1 << 20, 256},
		{"4 MiB: 16 x 4", 16, 1024, 4 << 20, 64},
		{"64 MiB: --prefetch", 16, 1024, 64 << 20, 16},
		{"1 GiB: the spool holds one", 16, 1024, 1 << 30, 1},
		{"1 MiB, --prefetch 6: 6 x 16", 6, 1024, 1 << 20, 96},
		{"1 MiB, --spool-max-mb 100", 16, 100, 1 << 20, 100},
		{"segment size not known yet: --prefetch", 16, 1024, 0, 16},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := walfetch.Settings{Prefetch: tt.prefetch, Parallel: 4, SpoolMax: tt.spoolMax}
			if got := window(s, tt.segSize); got != tt.want {
				t.Errorf("window(prefetch %d, spool %d MiB, %d-byte segments) = %d, want %d", tt.prefetch, tt.spoolMax, tt.segSize, got, tt.want)
			}
		})
	}
}

// TestPlanQueuesAsManyDownloadsAsSlots: with 1 MiB segments and the hub
// holding a whole window, 16 segments are downloaded at once (not 4, which
// leaves recovery waiting on round trips to a distant hub); with 16 MiB
// segments, 4 at once.
func TestPlanQueuesAsManyDownloadsAsSlots(t *testing.T) {
	for _, tt := range []struct {
		segSize uint64
		want    int
	}{{1 << 20, maxAutoDownloads}, {16 << 20, 4}} {
		dir := t.TempDir()
		p := &prefetcher{s: walfetch.Settings{Prefetch: 16, Parallel: 4, SpoolMax: 1024}, sp: &walfetch.Spool{Dir: dir, Root: dir},
			log: slog.New(slog.NewTextHandler(io.Discard, nil)), segSize: tt.segSize, lastPeek: time.Now(),
			inflight: map[string]bool{}, failed: map[string]time.Time{}, fetched: map[string]bool{}, known: map[walname.SegNo]api.PeekSegment{}}
		p.current = walname.SegmentName(1, 10, tt.segSize)
		p.setCurrent()
		for segno := walname.SegNo(11); segno <= 10+walname.SegNo(peekLead*p.window()); segno++ { // as far as peeks reach
			p.known[segno] = api.PeekSegment{Name: walname.SegmentName(1, segno, tt.segSize)}
			p.horizon = segno
		}
		jobs := make(chan download, 100)
		p.plan(jobs)
		if len(jobs) != tt.want {
			t.Errorf("%d MiB segments: %d downloads queued, want %d", tt.segSize>>20, len(jobs), tt.want)
		}
		if first := <-jobs; first.seg.Name != walname.SegmentName(1, 11, tt.segSize) {
			t.Errorf("%d MiB segments: first download %s, want the next segment", tt.segSize>>20, first.seg.Name)
		}
	}
}

// TestPeeksReachAWindowBeyondTheDownloads: the prefetcher asks the hub again
// while what it knows still reaches up to a window beyond the download
// window, so that no download waits for a peek's round trip; one peek at a
// time; at the hub's end, once a second at most, and only when the download
// window is not known whole.
func TestPeeksReachAWindowBeyondTheDownloads(t *testing.T) {
	const w = 16 // the window: --prefetch 16, 1 MiB segments
	for _, tc := range []struct {
		name      string
		horizon   walname.SegNo // known up to, past the current segment 100
		short     bool          // the last peek found the hub's end
		peekedAgo time.Duration
		peeking   bool // a peek is under way
		want      bool
	}{
		{"nothing known", 0, false, time.Minute, false, true},
		{"the download window known, not beyond", 100 + w, false, 0, false, true},
		{"half a window beyond it known", 100 + w + w/2, false, 0, false, true},
		{"half a window beyond it known, a peek under way", 100 + w + w/2, false, 0, true, false},
		{"a window beyond it known", 100 + 2*w, false, 0, false, false},
		{"at the hub's end, peeked just now", 100 + 4, true, 0, false, false},
		{"at the hub's end, a second ago", 100 + 4, true, time.Second, false, true},
		{"at the hub's end, the download window known", 100 + w, true, time.Minute, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &prefetcher{s: walfetch.Settings{Prefetch: w, Parallel: 4, SpoolMax: w}, segSize: 1 << 20,
				segno: 100, horizon: tc.horizon, peekShort: tc.short, lastPeek: time.Now().Add(-tc.peekedAgo), peeking: tc.peeking}
			if got := p.needPeek(); got != tc.want {
				t.Errorf("needPeek() = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDownloadsGoOnWhileAPeekIsUnderWay: with a distant hub, planning does
// not wait for a peek's answer. What is known already is queued for download
// at once, and the answer, when it comes, extends what is known.
func TestDownloadsGoOnWhileAPeekIsUnderWay(t *testing.T) {
	const systemID = 7300000000000000042
	const segSize = 1 << 20
	release := make(chan struct{})
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(r.URL.Path, "/")
		_, from, err := walname.ParseSegment(parts[len(parts)-2], segSize)
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if !strings.HasSuffix(r.URL.Path, "/peek") || err != nil || n < 1 {
			http.Error(w, "only peeks here", http.StatusBadRequest)
			return
		}
		select { // the hub far away
		case <-release:
		case <-r.Context().Done():
			return
		}
		p := api.Peek{Server: "main", SystemID: strconv.FormatUint(systemID, 10), SegmentSize: segSize, Limit: n}
		for segno := from; segno < from+walname.SegNo(n); segno++ {
			p.Segments = append(p.Segments, api.PeekSegment{Name: walname.SegmentName(1, segno, segSize), Checksum: "00000000"})
		}
		json.NewEncoder(w).Encode(p)
	}))
	defer hub.Close()
	// A window of 16 (--spool-max-mb 16 of 1 MiB segments).
	p := newTestPrefetcher(t, walfetch.Settings{Prefetch: 16, Parallel: 4, SpoolMax: 16, Timeout: 30 * time.Second}, hub.URL, systemID)
	p.segSize, p.current = segSize, walname.SegmentName(1, 10, segSize)
	p.setCurrent()
	for segno := walname.SegNo(11); segno <= 10+16; segno++ { // the download window, not beyond: time to peek
		p.known[segno] = api.PeekSegment{Name: walname.SegmentName(1, segno, segSize)}
		p.horizon = segno
	}

	jobs := make(chan download, 100)
	planned := make(chan struct{})
	go func() { p.plan(jobs); close(planned) }()
	select {
	case <-planned:
	case <-time.After(5 * time.Second):
		close(release)
		<-planned
		t.Fatal("planning waited for the peek's answer")
	}
	if len(jobs) != 16 {
		t.Errorf("%d downloads queued while the peek is under way, want 16 (the window)", len(jobs))
	}
	if !p.peeking || p.needPeek() {
		t.Errorf("peeking %v, needPeek %v: want one peek under way, no second", p.peeking, p.needPeek())
	}

	close(release)
	select {
	case a := <-p.peeked:
		p.peekDone(a)
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the peek")
	}
	if want := walname.SegNo(10 + peekLead*16); p.horizon != want || p.peeking {
		t.Errorf("after the answer: known up to %d (peeking %v), want %d", p.horizon, p.peeking, want)
	}
}

// TestAnAnswerAboutATimelineLeftIsDropped: recovery switched timelines while
// a peek was under way; the answer, about the old timeline and at the hub's
// end there, neither adds segments nor holds the next peek back a second.
func TestAnAnswerAboutATimelineLeftIsDropped(t *testing.T) {
	const segSize = 1 << 20
	p := newPrefetcher(walfetch.Settings{Prefetch: 16, Parallel: 4, SpoolMax: 16}, &walfetch.Spool{Dir: t.TempDir()}, "42", nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	p.segSize, p.current, p.lastPeek = segSize, walname.SegmentName(2, 5, segSize), time.Now()
	p.setCurrent()
	p.peeking = true
	old := api.Peek{SystemID: "42", SegmentSize: segSize, Limit: 64}
	for segno := walname.SegNo(6); segno <= 9; segno++ { // timeline 1 ended at 9
		old.Segments = append(old.Segments, api.PeekSegment{Name: walname.SegmentName(1, segno, segSize)})
	}
	p.peekDone(peekAnswer{count: 64, tli: 1, peek: old})
	if len(p.known) != 0 || p.peekShort || p.peeking || !p.needPeek() {
		t.Errorf("known %d, peekShort %v, peeking %v, needPeek %v: want nothing known and a peek on timeline 2 now",
			len(p.known), p.peekShort, p.peeking, p.needPeek())
	}
}

// TestPrefetcherDownloadsSmallSegmentsAWindowAtOnce runs the prefetcher
// against a hub whose segment downloads all hang (a hub far away: every
// response waits), and counts the downloads that are under way at once: with
// 1 MiB segments, --parallel 4 and a window of 16 (--spool-max-mb 16), all 16.
func TestPrefetcherDownloadsSmallSegmentsAWindowAtOnce(t *testing.T) {
	const systemID = 7300000000000000042
	const segSize = 1 << 20
	var mu sync.Mutex
	inFlight, peak := 0, 0
	release := make(chan struct{})
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/peek") {
			parts := strings.Split(r.URL.Path, "/")
			_, from, err := walname.ParseSegment(parts[len(parts)-2], segSize)
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			if err != nil || n < 1 {
				http.Error(w, "bad peek", http.StatusBadRequest)
				return
			}
			p := api.Peek{Server: "main", SystemID: strconv.FormatUint(systemID, 10), SegmentSize: segSize, Limit: n}
			for segno := from; segno < from+walname.SegNo(n); segno++ {
				p.Segments = append(p.Segments, api.PeekSegment{Name: walname.SegmentName(1, segno, segSize), Checksum: "00000000"})
			}
			json.NewEncoder(w).Encode(p)
			return
		}
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		http.Error(w, "not now", http.StatusServiceUnavailable)
	}))
	defer hub.Close()
	p := newTestPrefetcher(t, walfetch.Settings{Prefetch: 16, Parallel: 4, SpoolMax: 16, Timeout: 30 * time.Second, IdleExit: time.Second},
		hub.URL, systemID)
	p.served <- walname.SegmentName(1, 10, segSize)
	done := make(chan struct{})
	go func() { p.loop(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := peak
		mu.Unlock()
		if got >= 16 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // more than 16 would show now
	close(release)
	<-done
	if peak != 16 {
		t.Errorf("%d downloads at once, want 16 (the window: 1 MiB segments, --parallel 4)", peak)
	}
}

// TestServedSegmentsLeaveTheSpoolWithoutAListing: when recovery moves on, the
// segments it passed leave the spool at once (the spool is listed only on the
// loop's tick), those ahead and those downloading stay.
func TestServedSegmentsLeaveTheSpoolWithoutAListing(t *testing.T) {
	const segSize = 1 << 20
	dir := t.TempDir()
	p := &prefetcher{s: walfetch.Settings{Prefetch: 16, Parallel: 4, SpoolMax: 1024}, sp: &walfetch.Spool{Dir: dir, Root: dir},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), segSize: segSize,
		inflight: map[string]bool{}, failed: map[string]time.Time{}, fetched: map[string]bool{}, known: map[walname.SegNo]api.PeekSegment{}}
	name := func(segno walname.SegNo) string { return walname.SegmentName(1, segno, segSize) }
	for segno := walname.SegNo(10); segno <= 14; segno++ {
		if err := os.WriteFile(p.sp.Path(name(segno)), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		p.fetched[name(segno)] = true
	}
	p.onServed(name(12))
	for segno := walname.SegNo(10); segno <= 14; segno++ {
		_, err := os.Stat(p.sp.Path(name(segno)))
		if passed := segno <= 12; passed != errors.Is(err, os.ErrNotExist) {
			t.Errorf("recovery at %s: %s in the spool: %v", name(12), name(segno), err == nil)
		}
	}
	if len(p.fetched) != 2 {
		t.Errorf("fetched: %v, want the two ahead", p.fetched)
	}
}

// TestOneProcessorUnlessGOMAXPROCSIsSet: the prefetcher runs on one
// processor, unless the environment says otherwise.
func TestOneProcessorUnlessGOMAXPROCSIsSet(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, tt := range []struct {
		env  string
		want int
	}{{"", 1}, {"3", 3}} {
		runtime.GOMAXPROCS(3)
		t.Setenv("GOMAXPROCS", tt.env)
		oneProcessor()
		if got := runtime.GOMAXPROCS(0); got != tt.want {
			t.Errorf("GOMAXPROCS=%q: %d processors, want %d", tt.env, got, tt.want)
		}
	}
}
