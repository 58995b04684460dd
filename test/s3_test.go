package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/walhub/walhub/status"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/test/s3test"
)

// s3Prefix is where an S3 site keeps its repository in the bucket.
const s3Prefix = "site"

// newS3Site starts versitygw, a primary and `walhub serve` whose repository
// is the prefix s3Prefix of the bucket; s.repo is the local working area
// (catalog.db, .partial files, locks, receiver state).
func newS3Site(t *testing.T, opts pgtest.Options) (*site, *s3test.Server) {
	t.Helper()
	bucket := s3test.Start(t)
	p := pgtest.NewPrimary(t, "primary", opts)
	s := newSiteWith(t, p, p, func(s *site) string {
		s.repo = filepath.Join(s.dir, "work")
		return bucket.TOML(s3Prefix, s.repo, s.dir)
	})
	return s, bucket
}

// TestS3BackupRestorePITRAndArchiveOnlyStandby: with the repository in a
// bucket, a backup goes to the bucket (nothing of it on local disk); a
// point-in-time restore over HTTP from the S3-backed hub, and an archive-only
// standby fed by walfetch alone, reach the primary's data.
func TestS3BackupRestorePITRAndArchiveOnlyStandby(t *testing.T) {
	t.Parallel()
	s, bucket := newS3Site(t, pgtest.Options{})
	p := s.primary
	p.PgbenchInit(2)
	s.walhub("backup", "--server", "main")
	id := newestBackup(t, s).ID
	objs := bucket.Objects(s3Prefix + "/main/backups/" + id + "/")
	for _, f := range []string{"base.tar.zst", "backup_manifest"} {
		if !slices.Contains(objs, s3Prefix+"/main/backups/"+id+"/"+f) {
			t.Fatalf("backup %s: no %s in the bucket (holds %v)", id, f, objs)
		}
	}
	if _, err := os.Stat(filepath.Join(s.repo, "main", "backups")); !os.IsNotExist(err) {
		t.Fatalf("backup files in the local working area: %v", err)
	}
	if p := bucket.PendingUploads(); len(p) != 0 {
		t.Fatalf("multipart uploads left pending: %v", p)
	}

	p.Pgbench(2, 200)
	want := p.Query(checksum)
	p.Query("SELECT pg_create_restore_point('s3_point')")
	p.Pgbench(2, 100)
	s.waitArchived()

	// PITR from another host: backup and WAL through the hub, from the bucket.
	dir := filepath.Join(pgtest.TempDir(t, "pitr"), "data")
	cmd := exec.Command(filepath.Join(binDir, "walhub"), "restore", "--config", "/nonexistent/walhub.toml",
		"--hub-url", s.hubURL, "--server", "main", "--owner", pgOwner(), "--target-dir", dir, "--target-name", "s3_point",
		"--target-action", "promote", "--walfetch-token-file", s.tokenFile)
	cmd.Env = append(os.Environ(), "WALHUB_TOKEN=read-secret")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "verified against its manifest") {
		t.Fatalf("restore over HTTP from the S3-backed hub: %v\n%s", err, out)
	}
	c := startRestored(t, "pitr", dir)
	waitPromoted(t, c)
	if got := c.Query(checksum); got != want {
		t.Fatal("PITR from the bucket reached other data than the primary's at the restore point")
	}

	// An archive-only standby (no primary_conninfo): every segment it
	// replays comes from the bucket through the hub and walfetch.
	sdir := filepath.Join(pgtest.TempDir(t, "standby"), "data")
	s.walhub("restore", "--server", "main", "--target-dir", sdir, "--standby", "--walfetch-token-file", s.tokenFile)
	sb := startRestored(t, "standby", sdir)
	p.Pgbench(2, 100)
	lsn := s.waitArchived()
	sb.WaitReplay(lsn, 120*time.Second)
	if got, want := sb.Query(checksum), p.Query(checksum); got != want {
		t.Fatal("the archive-only standby's data differs from the primary's")
	}
	if out := sb.Query("SELECT count(*) FROM pg_stat_wal_receiver"); out != "0" {
		t.Fatalf("the archive-only standby streams (%s wal receivers)", out)
	}
}

// expireReport is the part of `walhub expire --output=json` this test reads.
type expireReport struct {
	Backups []struct {
		ID   string `json:"id"`
		Keep bool   `json:"keep"`
	} `json:"backups"`
	WALBefore       string `json:"wal_before"`
	RemovedSegments int    `json:"removed_segments"`
}

func runExpire(t *testing.T, s *site, args ...string) expireReport {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "walhub"), append([]string{"expire", "--server", "main", "--output=json", "--config", s.config}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("walhub expire: %v\n%s", err, stderr.String())
	}
	var reps []expireReport
	if err := json.Unmarshal(out, &reps); err != nil || len(reps) != 1 {
		t.Fatalf("expire output: %v\n%s", err, out)
	}
	return reps[0]
}

// TestS3ExpireRemovesExactlyWhatItSays: with redundancy 1, expire on a
// bucket removes the older backup's objects and the WAL objects before the
// kept backup's start, exactly what --dry-run announced and nothing else.
func TestS3ExpireRemovesExactlyWhatItSays(t *testing.T) {
	t.Parallel()
	s, bucket := newS3Site(t, pgtest.Options{SegmentSizeMB: 1})
	os.WriteFile(s.config, append(mustRead(t, s.config), []byte("[server.retention]\nredundancy = 1\nauto_expire = false\n")...), 0o600)
	p := s.primary
	p.PgbenchInit(1)
	s.walhub("backup", "--server", "main")
	first := newestBackup(t, s).ID
	p.Pgbench(2, 300)
	s.walhub("backup", "--server", "main")
	second := newestBackup(t, s).ID
	s.waitArchived()

	before := bucket.Objects(s3Prefix + "/")
	dry := runExpire(t, s, "--dry-run")
	var drop []string
	for _, b := range dry.Backups {
		if !b.Keep {
			drop = append(drop, b.ID)
		}
	}
	if !slices.Equal(drop, []string{first}) || dry.WALBefore == "" || dry.RemovedSegments == 0 {
		t.Fatalf("dry run: removes backups %v, WAL before %q (%d segments); want %s and some WAL", drop, dry.WALBefore, dry.RemovedSegments, first)
	}
	if after := bucket.Objects(s3Prefix + "/"); !slices.Equal(after, before) {
		t.Fatal("expire --dry-run changed the bucket")
	}
	rep := runExpire(t, s)
	if rep.WALBefore != dry.WALBefore || rep.RemovedSegments != dry.RemovedSegments {
		t.Fatalf("expire did %+v, the dry run said %+v", rep, dry)
	}
	after := bucket.Objects(s3Prefix + "/")
	var removed []string
	for _, k := range before {
		if !slices.Contains(after, k) {
			removed = append(removed, k)
		}
	}
	walRemoved := 0
	for _, k := range removed {
		rel := strings.TrimPrefix(k, s3Prefix+"/main/")
		switch {
		case strings.HasPrefix(rel, "backups/"+first+"/"):
		case strings.HasPrefix(rel, "wal/"):
			name := filepath.Base(rel)
			if name[:24] >= dry.WALBefore {
				t.Errorf("expire removed %s, at or after the kept WAL's start %s", k, dry.WALBefore)
			}
			walRemoved++
		default:
			t.Errorf("expire removed %s, which it did not announce", k)
		}
	}
	if walRemoved != dry.RemovedSegments {
		t.Errorf("%d WAL objects left the bucket, expire said %d", walRemoved, dry.RemovedSegments)
	}
	for _, k := range after {
		rel := strings.TrimPrefix(k, s3Prefix+"/main/")
		if strings.HasPrefix(rel, "backups/"+first+"/") {
			t.Errorf("the expired backup's object %s remains", k)
		}
		if strings.HasPrefix(rel, "wal/") && !strings.HasSuffix(rel, ".history") && filepath.Base(rel)[:24] < dry.WALBefore {
			t.Errorf("WAL object %s before %s remains", k, dry.WALBefore)
		}
	}
	if !slices.ContainsFunc(after, func(k string) bool { return strings.Contains(k, "/backups/"+second+"/base.tar") }) {
		t.Fatalf("the kept backup %s lost its base archive", second)
	}
	if list := s.walhub("list-backups", "--server", "main"); strings.Contains(list, first) || !strings.Contains(list, second) {
		t.Fatalf("list-backups after expire:\n%s", list)
	}
}

// TestS3CatalogRebuiltFromTheBucketAlone: catalog.db deleted, rebuilt from
// the bucket alone, gives the same catalog and a restore with the primary's
// data; a new hub (another working area) over that bucket refuses to start
// an empty repository there and says to rebuild the catalog.
func TestS3CatalogRebuiltFromTheBucketAlone(t *testing.T) {
	t.Parallel()
	s, bucket := newS3Site(t, pgtest.Options{SegmentSizeMB: 1})
	checkCatalogRebuilt(t, s)

	other := filepath.Join(s.dir, "other.toml")
	text := strings.Replace(string(mustRead(t, s.config)), "work_dir = \""+s.repo+"\"", "work_dir = \""+filepath.Join(s.dir, "work2")+"\"", 1)
	if err := os.WriteFile(other, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binDir, "walhub"), "init", "--config", other).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "holds a repository already") || !strings.Contains(string(out), "repair --rebuild-catalog") {
		t.Fatalf("init of a new working area over a bucket holding a repository: %v\n%s", err, out)
	}
	if p := bucket.PendingUploads(); len(p) != 0 {
		t.Fatalf("multipart uploads left pending: %v", p)
	}
}

// startReadOnlyHub starts a second hub over the bucket of site s:
// read_only, no [[server]], its own working area, refreshing every second;
// s3Lines are added to its [s3] section (e.g. "max_attempts = 1").
func startReadOnlyHub(t *testing.T, s *site, bucket *s3test.Server, s3Lines ...string) *site {
	t.Helper()
	dir := pgtest.TempDir(t, "hub2")
	port := pgtest.FreePort(t)
	hub2 := &site{t: t, primary: s.primary, dir: dir, repo: filepath.Join(dir, "work"), config: filepath.Join(dir, "walhub.toml"),
		hubURL: "http://127.0.0.1:" + strconv.Itoa(port), tokenFile: s.tokenFile, readOnly: true}
	text := strings.Replace(bucket.TOML(s3Prefix, hub2.repo, dir), "\n[s3]", "read_only = true\nrefresh_interval = \"1s\"\n\n[s3]", 1) +
		strings.Join(s3Lines, "\n") + fmt.Sprintf("\n[hub]\nlisten = \"127.0.0.1:%d\"\nread_tokens = [\"read-secret\"]\n", port)
	if err := os.WriteFile(hub2.config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	hub2.startServe()
	return hub2
}

// TestS3SecondHubServesTheBucketReadOnly: a second hub over the same bucket,
// read-only (no [[server]], its own working area), builds its catalog from
// the bucket and keeps it refreshed, WAL index included; the CLI works
// against its configuration; a point-in-time restore to a named restore
// point through it alone (backup and WAL from the bucket, walfetch pointed
// at it) gives the primary's data at that point.
func TestS3SecondHubServesTheBucketReadOnly(t *testing.T) {
	t.Parallel()
	s, bucket := newS3Site(t, pgtest.Options{SegmentSizeMB: 1})
	p := s.primary
	p.PgbenchInit(1)
	s.walhub("backup", "--server", "main")

	hub2 := startReadOnlyHub(t, s, bucket)

	p.Pgbench(2, 200)
	want := p.Query(checksum)
	p.Query("SELECT pg_create_restore_point('via_hub2')")
	p.Pgbench(2, 100)
	s.waitArchived()
	hub2.waitArchived() // its catalog follows the bucket
	// The restore point is in its WAL index, as the CLI run against the
	// read-only configuration (no [[server]]) says.
	pgtest.WaitFor(t, 60*time.Second, "the read-only hub's WAL index to hold the restore point", func() bool {
		out, err := hub2.tryWalhub("restore-points", "--server", "main")
		if err != nil {
			t.Fatalf("walhub restore-points on the read-only hub: %v\n%s", err, out)
		}
		return strings.Contains(out, "via_hub2")
	})
	id := newestBackup(t, s).ID
	if out := hub2.walhub("list-backups"); !strings.Contains(out, id) {
		t.Fatalf("walhub list-backups on the read-only hub does not list %s:\n%s", id, out)
	}
	if out, err := hub2.tryWalhub("backup", "--server", "main"); err == nil || !strings.Contains(out, "read-only hub") {
		t.Fatalf("walhub backup on the read-only hub: %v\n%s", err, out)
	}
	req, _ := http.NewRequest(http.MethodGet, hub2.hubURL+"/v1/servers/main/backups", nil)
	req.Header.Set("Authorization", "Bearer read-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), id) {
		t.Fatalf("the read-only hub's backups (%d) do not list %s:\n%s", resp.StatusCode, id, body)
	}

	target := filepath.Join(pgtest.TempDir(t, "via-hub2"), "data")
	cmd := exec.Command(filepath.Join(binDir, "walhub"), "restore", "--config", "/nonexistent/walhub.toml",
		"--hub-url", hub2.hubURL, "--server", "main", "--owner", pgOwner(), "--target-dir", target, "--target-name", "via_hub2",
		"--target-action", "promote", "--walfetch-token-file", s.tokenFile)
	cmd.Env = append(os.Environ(), "WALHUB_TOKEN=read-secret")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), hub2.hubURL) {
		t.Fatalf("restore through the read-only hub: %v\n%s", err, out)
	}
	s.stopServe() // everything now comes from the second hub and the bucket
	c := startRestored(t, "via-hub2", target)
	waitPromoted(t, c)
	if got := c.Query(checksum); got != want {
		t.Fatal("restore through the read-only hub reached other data than the primary's at the restore point")
	}
	if p := bucket.PendingUploads(); len(p) != 0 {
		t.Fatalf("multipart uploads left pending: %v", p)
	}
}

// TestS3ReadOnlyHubStatusAndCheck: a read-only hub's status, check (JSON,
// Nagios), status endpoint and /metrics cover the server its catalog
// follows (its WAL, its backups) and the catalog refresh, without a
// [[server]] or a connection to PostgreSQL; with the bucket gone, the
// refresh's failure and its error show as a WARNING.
func TestS3ReadOnlyHubStatusAndCheck(t *testing.T) {
	t.Parallel()
	s, bucket := newS3Site(t, pgtest.Options{SegmentSizeMB: 1})
	p := s.primary
	p.PgbenchInit(1)
	s.walhub("backup", "--server", "main")
	id := newestBackup(t, s).ID
	s.waitArchived()
	hub2 := startReadOnlyHub(t, s, bucket, "max_attempts = 1")
	hub2.waitArchived()

	var doc status.Document
	// The refresh commits the catalog, then records itself: status may
	// show the backup while the first refresh is still "never" (running).
	pgtest.WaitFor(t, 60*time.Second, "the read-only hub's status to show the backup and a refresh done", func() bool {
		doc = status.Document{}
		out := hub2.walhub("status", "--server", "main", "--output=json")
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("status JSON: %v\n%s", err, out)
		}
		return doc.Backups.Count == 1 && doc.Refresh != nil && doc.Refresh.State == "ok"
	})
	if !doc.ReadOnly || doc.Refresh == nil || doc.Refresh.State != "ok" || doc.Refresh.IntervalSeconds != 1 ||
		doc.WAL.Segments == 0 || len(doc.WAL.Timelines) != 1 || doc.WAL.LastSegment == "" ||
		doc.Backups.Last == nil || doc.Backups.Last.ID != id || doc.Recoverable == nil || doc.Postgres.Reachable {
		t.Fatalf("the read-only hub's status: %+v\nrefresh %+v", doc, doc.Refresh)
	}
	if out := hub2.walhub("status"); !strings.Contains(out, "read-only") || !strings.Contains(out, "Catalog refresh   : last success") {
		t.Fatalf("walhub status on the read-only hub:\n%s", out)
	}
	if out, err := hub2.tryWalhub("status", "--server", "nope"); err == nil || !strings.Contains(out, `"nope"`) || !strings.Contains(out, "main") {
		t.Fatalf("walhub status --server nope on the read-only hub: %v\n%s", err, out)
	}
	// The hub's copy, and /metrics.
	var served status.Document
	if err := json.Unmarshal(hub2.hubGet("/v1/servers/main/status", "read-secret"), &served); err != nil ||
		!served.ReadOnly || served.Refresh == nil || served.Backups.Count != 1 {
		t.Fatalf("GET status from the read-only hub: %v %+v", err, served)
	}
	if list := string(hub2.hubGet("/v1/servers", "read-secret")); !strings.Contains(list, `"main"`) {
		t.Errorf("GET /v1/servers from the read-only hub: %s", list)
	}
	metrics := string(hub2.hubGet("/metrics", ""))
	for _, want := range []string{`walhub_status_up{server="main"} 1`, `walhub_backups{server="main",state="done"} 1`,
		"\nwalhub_refresh_last_success_timestamp_seconds ", `walhub_check_status{check="catalog refresh",server="main"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("the read-only hub's /metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, "walhub_receiver_running") {
		t.Error("the read-only hub's /metrics has walhub_receiver_running")
	}

	// A reload (SIGHUP) of the read-only hub's configuration is taken: a read token added.
	text, err := os.ReadFile(hub2.config)
	if err != nil {
		t.Fatal(err)
	}
	hub2.reload(strings.Replace(string(text), `read_tokens = ["read-secret"]`, `read_tokens = ["read-secret", "read-2"]`, 1), "configuration reloaded")
	if code := hub2.hubStatus("/v1/servers", "read-2"); code != http.StatusOK {
		t.Fatalf("GET /v1/servers with the token added by the reload: %d", code)
	}
	// And refresh_interval: at 1h the refreshes (one a second so far) stop
	// for an hour; back at 1s the next comes at once.
	lastAttempt := func() string {
		m := string(hub2.hubGet("/metrics", ""))
		_, line, _ := strings.Cut(m, "\nwalhub_refresh_last_attempt_timestamp_seconds ")
		line, _, _ = strings.Cut(line, "\n")
		return line
	}
	text, err = os.ReadFile(hub2.config)
	if err != nil {
		t.Fatal(err)
	}
	hub2.reload(strings.Replace(string(text), `refresh_interval = "1s"`, `refresh_interval = "1h"`, 1), "refresh_interval applied")
	time.Sleep(1500 * time.Millisecond) // a refresh under way ends
	if a := lastAttempt(); a == "" {
		t.Fatal("no walhub_refresh_last_attempt_timestamp_seconds")
	} else if time.Sleep(3 * time.Second); lastAttempt() != a {
		t.Fatal("the catalog refresh still runs every second after a reload set refresh_interval to 1h")
	}
	a := lastAttempt()
	hub2.reload(string(text), "refresh_interval applied")
	pgtest.WaitFor(t, 10*time.Second, "a catalog refresh after refresh_interval went back to 1s", func() bool { return lastAttempt() != a })

	// The status page shows the server, its backup and the refresh.
	ctx := browser(t)
	console := watchConsole(ctx)
	do(t, ctx, console, chromedp.Navigate(hub2.hubURL+"/"), chromedp.WaitVisible("#login"),
		chromedp.SendKeys("#token", "read-secret"), chromedp.Click(`#login button[type="submit"]`),
		chromedp.WaitVisible(`section.server[data-server="main"]`))
	page := run(t, ctx, chromedp.Text(`section.server[data-server="main"]`))
	for _, want := range []string{"read-only", "Catalog refresh", "last success", id, "WAL held: "} {
		if !strings.Contains(page, want) {
			t.Errorf("the read-only hub's page does not show %q; it shows:\n%s", want, page)
		}
	}
	if errs := console.take(); len(errs) > 0 {
		t.Errorf("the read-only hub's page logged errors: %v", errs)
	}

	// check: every check OK (the disk's free space aside: the test machine's), exit 0.
	checkArgs := []string{"check", "--server", "main", "--disk-free-warning", "0.5", "--disk-free-critical", "0.1", "--refresh-age-warning", "20s", "--refresh-age-critical", "10m"}
	report := readOnlyCheck(t, hub2, 0, append(checkArgs, "--output=json")...)
	names := map[string]status.Level{}
	for _, r := range report.Results {
		names[r.Name] = r.Level
	}
	for _, n := range []string{"read-only hub", "catalog refresh", "wal continuity", "last wal age", "last backup age", "recoverable window", "failed backups", "repository disk space"} {
		if l, ok := names[n]; !ok || l != status.OK {
			t.Errorf("check %q: %v (present %v)", n, l, ok)
		}
	}
	for _, n := range []string{"connection", "receiver", "replication slot", "system id"} {
		if _, ok := names[n]; ok {
			t.Errorf("the read-only hub runs the %q check", n)
		}
	}
	if out := readOnlyCheckText(t, hub2, 0, append(checkArgs, "--nagios")...); !strings.HasPrefix(out, "WALHUB OK - ") {
		t.Fatalf("Nagios line: %s", out)
	}

	// The bucket goes away: the refresh fails, and says why.
	bucket.Stop()
	checkArgs[len(checkArgs)-3] = "3s"
	pgtest.WaitFor(t, 90*time.Second, "check to warn of the failing refresh", func() bool {
		report = readOnlyCheck(t, hub2, -1, append(checkArgs, "--output=json")...)
		return report.Level == status.Warning
	})
	for _, r := range report.Results {
		if r.Name == "catalog refresh" && (r.Level != status.Warning || !strings.Contains(r.Message, "failed") || r.Hint == "") {
			t.Fatalf("catalog refresh with the bucket stopped: %+v", r)
		}
	}
	if out := readOnlyCheckText(t, hub2, 1, append(checkArgs, "--nagios")...); !strings.HasPrefix(out, "WALHUB WARNING - main catalog refresh WARNING") {
		t.Fatalf("Nagios line with the bucket stopped: %s", out)
	} else {
		t.Logf("walhub check --nagios with the bucket stopped:\n%s", out)
	}
	if out := hub2.walhub("status"); !strings.Contains(out, "FAILING") {
		t.Fatalf("walhub status with the bucket stopped:\n%s", out)
	}
	// The writing hub's status and check answer too: they read the catalog
	// and the working area, not the bucket.
	start := time.Now()
	if out, err := s.tryWalhub("status", "--server", "main", "--output=json"); err != nil || !strings.Contains(out, `"server": "main"`) {
		t.Fatalf("the writing hub's walhub status with the bucket stopped: %v\n%s", err, out)
	}
	if out, err := s.tryWalhub("check", "--server", "main", "--nagios"); strings.HasPrefix(out, "WALHUB UNKNOWN") || !strings.HasPrefix(out, "WALHUB ") {
		t.Fatalf("the writing hub's walhub check with the bucket stopped: %v\n%s", err, out)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the writing hub's status and check took %s with the bucket stopped", d)
	}
	bucket.Restart()
}

// readOnlyCheck runs walhub check --output=json on hub and returns its
// report; code is the exit status wanted (-1: any).
func readOnlyCheck(t *testing.T, hub *site, code int, args ...string) (report struct {
	Level   status.Level
	Results []status.Result
}) {
	t.Helper()
	out := readOnlyCheckText(t, hub, code, args...)
	var raw struct {
		Level   string          `json:"level"`
		Results json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("check JSON: %v\n%s", err, out)
	}
	var results []struct {
		status.Result
		Level string `json:"level"`
	}
	if err := json.Unmarshal(raw.Results, &results); err != nil {
		t.Fatalf("check JSON results: %v\n%s", err, out)
	}
	report.Level = levelOf(raw.Level)
	for _, r := range results {
		r.Result.Level = levelOf(r.Level)
		report.Results = append(report.Results, r.Result)
	}
	return report
}

func levelOf(s string) status.Level {
	for _, l := range []status.Level{status.OK, status.Warning, status.Critical} {
		if l.String() == s {
			return l
		}
	}
	return status.Unknown
}

// readOnlyCheckText runs walhub check on hub and returns its standard
// output; code is the exit status wanted (-1: any).
func readOnlyCheckText(t *testing.T, hub *site, code int, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "walhub"), append(args, "--config", hub.config)...)
	out, err := cmd.Output()
	got := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		got = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	if code >= 0 && got != code {
		t.Fatalf("walhub %s: exit %d, want %d\n%s%s", strings.Join(args, " "), got, code, out, stderrOf(err))
	}
	return string(out)
}

func stderrOf(err error) string {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(exit.Stderr)
	}
	return ""
}
