package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/status"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
)

// hubGet GETs path from the site's hub with a token and returns the body;
// it fails the test unless the answer is 200.
func (s *site) hubGet(path, token string) []byte {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.hubURL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET %s: %d %v\n%.400s", path, resp.StatusCode, err, b)
	}
	return b
}

// statusDoc is the hub's status document of server main.
func (s *site) statusDoc() status.Document {
	s.t.Helper()
	var doc status.Document
	if err := json.Unmarshal(s.hubGet(api.StatusPath("main"), "read-secret"), &doc); err != nil {
		s.t.Fatal(err)
	}
	return doc
}

// sampleNames are the sample names of a text exposition (histograms give
// their _bucket, _sum and _count).
func sampleNames(exposition []byte) map[string]bool {
	names := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(exposition)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

var walhubMetricRE = regexp.MustCompile(`\bwalhub_[a-z0-9_]*[a-z0-9]`)

// shippedMetricNames are the walhub_* names that the alert rules and the
// Grafana dashboard in deploy/ use, with where each is used.
func shippedMetricNames(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	for _, f := range []string{"../deploy/prometheus/walhub-alerts.yml", "../deploy/grafana/walhub.json"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			// Only queries: annotations and descriptions may name things in prose.
			if !strings.Contains(line, "expr") {
				continue
			}
			for _, m := range walhubMetricRE.FindAllString(line, -1) {
				if !slices.Contains(used[m], f) {
					used[m] = append(used[m], f)
				}
			}
		}
	}
	return used
}

// humanBytes is the page's formatting of sizes (binary units).
func humanBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	if v < 10 {
		return fmt.Sprintf("%.2f %s", v, units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// TestObservabilityOfARealHub runs walhub serve against a primary with a
// streaming standby, takes a backup and makes a gap in the catalog, then:
// every metric the shipped alert rules and dashboard use is in the hub's
// /metrics, agreeing with the status document; and the status page, in a
// real headless Chromium, shows what the JSON status says, marks the gap,
// and shows a new backup and running work without a reload.
func TestObservabilityOfARealHub(t *testing.T) {
	s := newSite(t, pgtest.Options{SegmentSizeMB: 1, Conf: []string{"max_slot_wal_keep_size = 2GB"}})
	standby := s.primary.NewStandby("standby1", pgtest.StandbyOptions{})
	s.primary.GenerateWAL(3)
	s.waitArchived()
	s.walhub("backup", "--server", "main")
	s.primary.GenerateWAL(3)
	s.waitArchived()
	standby.WaitReplay(s.primary.CurrentLSN(), 60*time.Second)

	// A gap after the backup: a segment the catalog no longer lists.
	cat := openCatalog(t, s)
	srv, err := cat.ServerByName(context.Background(), "main")
	if err != nil {
		t.Fatal(err)
	}
	last, err := cat.LastSegment(context.Background(), srv.ID)
	if err != nil {
		t.Fatal(err)
	}
	holeSeg := last.SegNo - 2
	hole := walname.SegmentName(last.TimeLine, holeSeg, srv.SegmentSize)
	if err := cat.DeleteSegments(context.Background(), []catalog.Segment{{ServerID: srv.ID, TimeLine: last.TimeLine, SegNo: holeSeg}}); err != nil {
		t.Fatal(err)
	}
	// walfetch's traffic: a segment served, one not there yet.
	s.hubGet(api.WALPath("main", last.Name), "read-secret")
	req, _ := http.NewRequest(http.MethodGet, s.hubURL+api.WALPath("main", walname.SegmentName(last.TimeLine, last.SegNo+1000, srv.SegmentSize)), nil)
	req.Header.Set("Authorization", "Bearer read-secret")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a segment not yet held: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	t.Run("metrics", func(t *testing.T) {
		used := shippedMetricNames(t)
		if len(used) < 20 {
			t.Fatalf("only %d metric names found in deploy/: %v", len(used), used)
		}
		// Lag times are reported while WAL flows: keep some flowing while we look.
		var names map[string]bool
		var exposition []byte
		pgtest.WaitFor(t, 60*time.Second, "every metric of deploy/ in /metrics", func() bool {
			s.primary.Query("SELECT pg_logical_emit_message(false, 'walhub', repeat('x', 10000))::text")
			exposition = s.hubGet("/metrics", "")
			names = sampleNames(exposition)
			for n := range used {
				if !names[n] {
					return false
				}
			}
			return true
		})
		for n, where := range used {
			if !names[n] {
				t.Errorf("%s is used in %s but the hub does not expose it", n, strings.Join(where, ", "))
			}
		}
		doc := s.statusDoc()
		for _, want := range []string{
			fmt.Sprintf(`walhub_wal_segments{server="main"} %d`, doc.WAL.Segments),
			`walhub_backups{server="main",state="done"} 1`,
			`walhub_wal_blocking_gaps{server="main"} 1`,
			fmt.Sprintf(`walhub_check_status{check="wal continuity",server="main"} %d`, status.Critical),
			fmt.Sprintf(`walhub_check_status{check="receiver",server="main"} %d`, status.OK),
			`walhub_receiver_running{server="main"} 1`,
			`walhub_replication_sync_stage{application_name="standby1",server="main"}`,
			`walhub_hub_wal_requests_total{kind="segment",result="not_found"} 1`,
			`walhub_hub_wal_requests_total{kind="segment",result="served"} 1`,
			`walhub_build_info{`,
		} {
			if !strings.Contains(string(exposition), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	t.Run("page", func(t *testing.T) {
		testStatusPage(t, s, hole)
	})
}

// browser starts a headless Chromium for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin := "/usr/bin/chromium"
	if _, err := os.Stat(bin); err != nil {
		t.Fatal("chromium not found: apt-get install -y chromium (.ci/run installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.Flag("headless", true), chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1280, 1800),
		chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	return ctx
}

// pageErrors collects what the page logs as an error, and its uncaught exceptions.
type pageErrors struct {
	mu   sync.Mutex
	msgs []string
}

func watchConsole(ctx context.Context) *pageErrors {
	p := &pageErrors{}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				p.mu.Lock()
				p.msgs = append(p.msgs, m.String())
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *pageErrors) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.msgs
	p.msgs = nil
	return out
}

// run runs one browser action and fails the test on error.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// do runs browser steps, each given 30 seconds; on failure it shows what the
// page says and what it logged.
func do(t *testing.T, ctx context.Context, console *pageErrors, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	for _, step := range steps {
		stepCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := chromedp.Do(stepCtx, step)
		cancel()
		if err != nil {
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%v\npage errors: %v\npage text:\n%s", err, console.take(), text)
		}
	}
}

// viewerZone is the time zone the browser is put in: half-hour offset, so
// that times shown in UTC or the host's zone would not match.
const viewerZone = "America/St_Johns"

func testStatusPage(t *testing.T, s *site, hole string) {
	ctx := browser(t)
	console := watchConsole(ctx)
	if _, err := chromedp.Call(ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: viewerZone}); err != nil {
		t.Fatal(err)
	}

	// Without a token: the login form, and no server shown.
	do(t, ctx, console, chromedp.Navigate(s.hubURL+"/"), chromedp.WaitVisible("#login"))
	if n := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("section.server").length`)); n != 0 {
		t.Fatalf("before a token: %d server sections shown", n)
	}

	// With the read token: the servers.
	do(t, ctx, console, chromedp.SendKeys("#token", "read-secret"), chromedp.Click(`#login button[type="submit"]`),
		chromedp.WaitVisible(`section.server[data-server="main"] rect.gap`))
	doc := s.statusDoc()
	var backups []api.Backup
	if err := json.Unmarshal(s.hubGet(api.BackupsPath("main"), "read-secret"), &backups); err != nil || len(backups) != 1 {
		t.Fatalf("backups: %v %v", backups, err)
	}
	text := run(t, ctx, chromedp.Text(`section.server[data-server="main"]`))
	gapFirst := run(t, ctx, chromedp.AttributeValue(`section.server[data-server="main"] rect.gap`, "data-first"))
	meta := run(t, ctx, chromedp.Text("#meta"))
	clients := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("[data-client]")].map(e => e.dataset.client)`))
	startedText := run(t, ctx, chromedp.Text(fmt.Sprintf(`tr[data-backup-row=%q] td:nth-child(4)`, backups[0].ID)))
	if gapFirst.Value != hole {
		t.Errorf("the gap is marked at %q, want %s", gapFirst.Value, hole)
	}
	for _, want := range []string{
		doc.WAL.SystemID, doc.Slot.Name, doc.Slot.WALStatus, backups[0].ID, "standby1", "/5 ", "/3 ",
		fmt.Sprintf("WAL held: %d segments, %s", doc.WAL.Segments, humanBytes(doc.WAL.Bytes)),
		fmt.Sprintf("Backups: %d done, %d failed", doc.Backups.Count, doc.Backups.Failed),
		"1 gap(s), 1 after the oldest backup", "streaming",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the page does not show %q; it shows:\n%s", want, text)
		}
	}
	if doc.Recoverable == nil || !strings.Contains(text, "recoverable window: ") || !strings.Contains(text, "end of "+doc.Recoverable.EarliestBackup) {
		t.Errorf("recoverable window: the status has %+v, the page shows:\n%s", doc.Recoverable, text)
	}
	// The standbys are those the JSON status lists.
	var wantClients []string
	for _, c := range doc.Clients {
		wantClients = append(wantClients, c.ApplicationName)
	}
	slices.Sort(wantClients)
	slices.Sort(clients)
	if !slices.Equal(clients, wantClients) || !slices.Contains(clients, "standby1") {
		t.Errorf("clients shown %v, the status has %v", clients, wantClients)
	}
	// Times are in the viewer's zone.
	zone, err := time.LoadLocation(viewerZone)
	if err != nil {
		t.Fatal(err)
	}
	if wantTime := backups[0].StartedAt.In(zone).Format("3:04"); !strings.Contains(meta, viewerZone) || !strings.Contains(startedText, wantTime) {
		t.Errorf("times: header %q, backup started %q, want %s in %s", meta, startedText, wantTime, viewerZone)
	}

	// A new backup appears without a reload.
	s.walhub("backup", "--server", "main")
	newest := newestBackup(t, s)
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(waitCtx, chromedp.WaitVisible(fmt.Sprintf(`rect[data-backup=%q]`, newest.ID))); err != nil {
		t.Fatalf("the page did not show backup %s: %v", newest.ID, err)
	}

	// The new backup starts after the gap: the recoverable window now reaches
	// the end of the WAL from it.
	do(t, ctx, console, chromedp.WaitVisible(`section.server[data-server="main"] rect.window`))
	var windowText string
	pgtest.WaitFor(t, 20*time.Second, "the window to reach past the gap", func() bool {
		windowText = run(t, ctx, chromedp.Text(`section.server[data-server="main"] [data-field="recoverable"]`))
		return strings.Contains(windowText, "from "+newest.ID)
	})
	if doc := s.statusDoc(); doc.Recoverable == nil || !strings.Contains(windowText, "end of "+doc.Recoverable.EarliestBackup) ||
		!strings.Contains(windowText, doc.Recoverable.LatestLSN.String()) || !strings.Contains(windowText, "1 gap(s)") {
		t.Errorf("the page's recoverable window %q, the status has %+v", windowText, doc.Recoverable)
	}

	// Running work: a snapshot holds the server's lock until it is stopped.
	s.walhub("snapshot", "start", "--server", "main", "--fast")
	do(t, ctx, console, chromedp.WaitVisible(`section.server[data-server="main"] [data-work="snapshot"]`))
	if m := string(s.hubGet("/metrics", "")); !strings.Contains(m, `walhub_operation_running{operation="snapshot",server="main"} 1`) {
		t.Error("/metrics does not show the snapshot running")
	}

	png := run(t, ctx, chromedp.FullScreenshot(100))
	s.walhub("snapshot", "stop", "--server", "main")
	dir := os.Getenv("WALHUB_SCREENSHOT_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	shot := filepath.Join(dir, "walhub-status-page.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the status page: %s (%d bytes)", shot, len(png))
	if errs := console.take(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}

	// A wrong token shows the form again, with the reason, and nothing else.
	run(t, ctx, chromedp.Evaluate[bool](`sessionStorage.setItem("walhub.readToken", "wrong"); location.reload(); true`))
	do(t, ctx, console, chromedp.WaitVisible("#login"))
	var loginError string
	pgtest.WaitFor(t, 10*time.Second, "the login form to say why", func() bool {
		loginError = run(t, ctx, chromedp.Evaluate[string](`document.getElementById("login-error").textContent`))
		return loginError != ""
	})
	if n := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("section.server").length`)); n != 0 || !strings.Contains(loginError, "refused") {
		t.Errorf("with a wrong token: %d server sections, login error %q", n, loginError)
	}
}
