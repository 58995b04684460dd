package status

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/stream"
	"github.com/walhub/walhub/walname"
)

const segSize = 16 << 20

// closedConninfo points at a port nobody listens on: a server that is down.
const closedConninfo = "host=127.0.0.1 port=1 user=postgres dbname=postgres sslmode=disable connect_timeout=2"

// newSource makes a repository with a catalog and a configuration of one
// server "main" reached through conninfo, with extra configuration lines.
func newSource(t testing.TB, repo, conninfo string, extra ...string) Source {
	t.Helper()
	text := fmt.Sprintf("repository = %q\n[[server]]\nname = \"main\"\nconninfo = %q\nstatus_interval = \"1s\"\n%s\n",
		repo, conninfo, strings.Join(extra, "\n"))
	cfg, err := config.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	work, err := storage.NewWorkArea(repo)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(context.Background(), work.CatalogPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	return Source{Config: cfg, Catalog: cat, Work: work, ConnectTimeout: 5 * time.Second}
}

func build(t testing.TB, src Source) *Document {
	t.Helper()
	doc, err := src.Build(context.Background(), "main")
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func result(t testing.TB, results []Result, name string) Result {
	t.Helper()
	for _, r := range results {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no check %q in %+v", name, results)
	return Result{}
}

// deadPID returns the PID of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestReceiverIsRunningOnlyWhenAliveAndFresh(t *testing.T) {
	repo := t.TempDir()
	src := newSource(t, repo, closedConninfo)
	now := time.Now()
	cases := []struct {
		name    string
		state   *stream.State
		running bool
		reason  string
	}{
		{"never ran", nil, false, "no receiver has run"},
		{"fresh and alive", &stream.State{PID: os.Getpid(), Host: hostname, State: "streaming", UpdatedAt: now}, true, ""},
		{"stale file, live pid", &stream.State{PID: os.Getpid(), Host: hostname, State: "streaming", UpdatedAt: now.Add(-time.Minute)}, false, "last written"},
		{"fresh file, dead pid", &stream.State{PID: deadPID(t), Host: hostname, State: "streaming", UpdatedAt: now}, false, "is gone"},
		{"other host, fresh", &stream.State{PID: 1 << 22, Host: "elsewhere", State: "streaming", UpdatedAt: now}, true, ""},
		{"other host, stale", &stream.State{PID: 1 << 22, Host: "elsewhere", State: "streaming", UpdatedAt: now.Add(-time.Hour)}, false, "last written"},
		{"stopped", &stream.State{PID: os.Getpid(), Host: hostname, State: "stopped", UpdatedAt: now}, false, "stopped"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(filepath.Join(repo, storage.ReceiverStatePath("main")))
			if c.state != nil {
				c.state.Server = "main"
				if err := stream.WriteState(src.Work, *c.state); err != nil {
					t.Fatal(err)
				}
			}
			doc := build(t, src)
			if doc.Receiver.Running != c.running || !strings.Contains(doc.Receiver.NotRunning, c.reason) {
				t.Fatalf("receiver = running %v (%q), want %v (%q)", doc.Receiver.Running, doc.Receiver.NotRunning, c.running, c.reason)
			}
			recv := result(t, Evaluate(doc, &src.Config.Servers[0], Probe{}, DefaultThresholds), "receiver")
			if c.running != (recv.Level != Critical) {
				t.Fatalf("receiver check = %s %q, running %v", recv.Level, recv.Message, c.running)
			}
			if recv.Level == Critical && !strings.Contains(recv.Hint, "walhub serve") {
				t.Fatalf("receiver hint %q does not say what to do", recv.Hint)
			}
		})
	}
}

func TestBackupInProgressShowsAsRunningInTextAndJSON(t *testing.T) {
	repo := t.TempDir()
	src := newSource(t, repo, closedConninfo)
	l, err := storage.OpenWorkArea(repo).Lock("main", "backup", "20261121T100000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if err := l.Update(43, "copying base.tar"); err != nil {
		t.Fatal(err)
	}
	doc := build(t, src)
	var text bytes.Buffer
	if err := WriteText(&text, doc); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("backup running - 43%% (pid %d on %s", os.Getpid(), hostname)
	if !strings.Contains(text.String(), want) || !strings.Contains(text.String(), "copying base.tar") {
		t.Fatalf("text lacks %q:\n%s", want, text.String())
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Lock map[string]map[string]any `json:"lock"`
	}
	if err := json.Unmarshal(data, &parsed); err != nil {
		t.Fatal(err)
	}
	b := parsed.Lock["backup"]
	if b["held"] != true || b["progress"] != 43.0 || b["pid"] != float64(os.Getpid()) || b["host"] != hostname || b["since"] == nil {
		t.Fatalf("lock.backup = %v", b)
	}
	if parsed.Lock["expire"]["held"] != false {
		t.Fatalf("lock.expire = %v, want held false", parsed.Lock["expire"])
	}
	l.Release()
	if doc := build(t, src); doc.Lock.Backup.Held {
		t.Fatal("a released lock still shows as held")
	}
}

// TestUnreachableServerStillReportsTheRest proves the document shows the
// catalog, the lock and the receiver when PostgreSQL is down, and that the
// checks that need the server say CRITICAL or UNKNOWN rather than OK.
func TestUnreachableServerStillReportsTheRest(t *testing.T) {
	ctx := context.Background()
	repo := t.TempDir()
	src := newSource(t, repo, closedConninfo)
	srv, err := src.Catalog.EnsureServer(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Catalog.BindIdentity(ctx, srv.ID, "7000000000000000001", segSize); err != nil {
		t.Fatal(err)
	}
	addSegments(t, src.Catalog, srv.ID, 1, 1, 10, time.Now())
	doc := build(t, src)
	if doc.Postgres.Reachable || !strings.Contains(doc.Postgres.Error, "cannot connect") {
		t.Fatalf("postgres = %+v", doc.Postgres)
	}
	if doc.WAL.Segments != 9 || doc.WAL.LastSegment != walname.SegmentName(1, 9, segSize) {
		t.Fatalf("wal = %+v", doc.WAL)
	}
	results := Evaluate(doc, &src.Config.Servers[0], Probe{Err: fmt.Errorf("connection refused")}, DefaultThresholds)
	for name, want := range map[string]Level{"connection": Critical, "replication connection": Critical,
		"wal_level": Unknown, "replication slot": Unknown, "receiver": Critical, "system id": Unknown} {
		if got := result(t, results, name); got.Level != want {
			t.Errorf("%s = %s (%s), want %s", name, got.Level, got.Message, want)
		}
	}
	var text bytes.Buffer
	if err := WriteText(&text, doc); err != nil || !strings.Contains(text.String(), "UNREACHABLE") ||
		!strings.Contains(text.String(), "9 segments") {
		t.Fatalf("text: %v\n%s", err, text.String())
	}
}

// addSegments catalogs segments [from, to) of a timeline, received at.
func addSegments(t testing.TB, cat *catalog.Catalog, serverID int64, tli walname.TimeLine, from, to walname.SegNo, at time.Time) {
	t.Helper()
	segs := make([]catalog.Segment, 0, to-from)
	for n := from; n < to; n++ {
		name := walname.SegmentName(tli, n, segSize)
		segs = append(segs, catalog.Segment{ServerID: serverID, TimeLine: tli, SegNo: n, Name: name, Size: segSize,
			StoredSize: 4 << 20, Compression: "zstd", Checksum: "crc32c:00000000",
			StoredPath: storage.SegmentPath("main", name, "zstd"), ReceivedAt: at})
	}
	if err := cat.AddSegments(context.Background(), segs); err != nil {
		t.Fatal(err)
	}
}

func TestGapsAfterTheOldestBackupAreCritical(t *testing.T) {
	ctx := context.Background()
	repo := t.TempDir()
	src := newSource(t, repo, closedConninfo)
	srv, _ := src.Catalog.EnsureServer(ctx, "main")
	if err := src.Catalog.BindIdentity(ctx, srv.ID, "7000000000000000001", segSize); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// Timeline 1 holds 3..9 and 12..19 (10 and 11 missing); timeline 2 starts at 22 (20, 21 missing).
	addSegments(t, src.Catalog, srv.ID, 1, 3, 10, now)
	addSegments(t, src.Catalog, srv.ID, 1, 12, 20, now)
	addSegments(t, src.Catalog, srv.ID, 2, 22, 25, now)
	// The oldest backup starts in segment 5, the newest failed.
	for _, b := range []catalog.Backup{
		{ID: "b1", State: catalog.StateDone, StartLSN: walname.SegmentStart(5, segSize) + 40, StartTLI: 1,
			StopLSN: walname.SegmentStart(6, segSize), StartedAt: now.Add(-3 * time.Hour), FinishedAt: now.Add(-2 * time.Hour), OriginalSize: 100, StoredSize: 10},
		{ID: "b2", State: catalog.StateFailed, Reason: "connection lost", StartedAt: now.Add(-time.Hour)},
	} {
		b.ServerID, b.Kind = srv.ID, catalog.KindBase
		if err := src.Catalog.AddBackup(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Catalog.AddGap(ctx, catalog.Gap{ServerID: srv.ID, TimeLine: 1, StartLSN: walname.SegmentStart(1, segSize),
		EndLSN: walname.SegmentStart(3, segSize), Reason: "removed by the server", DetectedAt: now}); err != nil {
		t.Fatal(err)
	}
	doc := build(t, src)
	var got []string
	for _, g := range doc.WAL.Gaps {
		got = append(got, fmt.Sprintf("%s %s..%s %d %v", g.Source, g.FirstSegment, g.LastSegment, g.Segments, g.AfterOldestBackup))
	}
	want := []string{
		fmt.Sprintf("missing %s..%s 2 true", walname.SegmentName(1, 10, segSize), walname.SegmentName(1, 11, segSize)),
		fmt.Sprintf("missing %s..%s 2 true", walname.SegmentName(2, 20, segSize), walname.SegmentName(2, 21, segSize)),
		fmt.Sprintf("recorded %s..%s 2 false", walname.SegmentName(1, 1, segSize), walname.SegmentName(1, 2, segSize)),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("gaps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if doc.WAL.Timelines[0].MissingSegments != 2 || doc.Backups.Count != 1 || doc.Backups.FailedSinceLast != 1 {
		t.Fatalf("timelines %+v, backups %+v", doc.WAL.Timelines, doc.Backups)
	}
	var text bytes.Buffer
	if err := WriteText(&text, doc); err != nil || !strings.Contains(text.String(), "2 MISSING") ||
		!strings.Contains(text.String(), "AFTER the oldest backup's start") {
		t.Errorf("text: %v\n%s", err, text.String())
	}
	results := Evaluate(doc, &src.Config.Servers[0], Probe{}, DefaultThresholds)
	if r := result(t, results, "wal continuity"); r.Level != Critical || !strings.Contains(r.Hint, "walhub backup --server main") {
		t.Fatalf("wal continuity = %+v", r)
	}
	if r := result(t, results, "failed backups"); r.Level != Warning || !strings.Contains(r.Message, "connection lost") {
		t.Fatalf("failed backups = %+v", r)
	}
	if r := result(t, results, "minimum redundancy"); r.Level != OK {
		t.Fatalf("minimum redundancy = %+v", r)
	}
	if r := result(t, results, "last backup age"); r.Level != OK {
		t.Fatalf("last backup age = %+v", r)
	}
	th := DefaultThresholds
	th.BackupAgeWarning, th.BackupAgeCritical = time.Hour, 90*time.Minute
	if r := result(t, Evaluate(doc, &src.Config.Servers[0], Probe{}, th), "last backup age"); r.Level != Critical || r.Hint == "" {
		t.Fatalf("last backup age with a 90m limit = %+v", r)
	}
}

func TestNagiosLineCarriesWorstLevelAndPerfdata(t *testing.T) {
	results := []Result{
		{Server: "main", Name: "receiver", Level: Critical, Message: "not running | really", Perf: []Perf{{Label: "receiver_lag", Value: 12, Unit: "B", Warn: "10", Crit: "20"}}},
		{Server: "main", Name: "last wal age", Level: Warning, Message: "old", Perf: []Perf{{Label: "wal_age", Value: 1.5, Unit: "s"}}},
		{Server: "main", Name: "wal_level", Level: OK, Message: "replica"},
	}
	var out bytes.Buffer
	if err := WriteNagios(&out, results, false); err != nil {
		t.Fatal(err)
	}
	want := "WALHUB CRITICAL - main receiver CRITICAL; main last wal age WARNING | 'receiver_lag'=12B;10;20 'wal_age'=1.5s;;\n" +
		"main receiver CRITICAL: not running / really\n" +
		"main last wal age WARNING: old\n"
	if out.String() != want {
		t.Fatalf("nagios line:\n%q\nwant\n%q", out.String(), want)
	}
	if Worst(OK, Warning, Unknown) != Unknown || Worst(Unknown, Critical) != Critical || Worst() != OK {
		t.Fatal("Worst ranks OK < WARNING < UNKNOWN < CRITICAL")
	}
}

func TestReceiverReconnectingWarnsThenTurnsCritical(t *testing.T) {
	srv := &config.Server{Name: "main"}
	now := time.Now()
	cases := []struct {
		state       string
		lastMessage time.Time
		want        Level
	}{
		{"streaming", now, OK},
		{"waiting", now.Add(-10 * time.Second), Warning},
		{"connecting", now.Add(-time.Hour), Critical},
		{"waiting", time.Time{}, Critical},
		{"failed", now, Critical},
	}
	for _, c := range cases {
		doc := &Document{Server: "main", GeneratedAt: now, Receiver: Receiver{Running: true, State: c.state,
			LastMessageAt: c.lastMessage, LastError: "connection refused"}}
		if r := checkReceiver(doc, srv, Probe{}, DefaultThresholds); r.Level != c.want || r.Hint == "" && c.want != OK {
			t.Errorf("%s, last message %v ago: %s %q, want %s", c.state, now.Sub(c.lastMessage).Round(time.Second), r.Level, r.Message, c.want)
		}
	}
}

// TestSlotCheckReadsTheReceiversState: an inactive slot while the receiver
// runs but cannot store says so, with the receiver's error, instead of
// asking to start walhub serve.
func TestSlotCheckReadsTheReceiversState(t *testing.T) {
	srv := &config.Server{Name: "main"}
	doc := &Document{Server: "main", Slot: Slot{Name: "walhub_main", Known: true, Exists: true, RestartLSN: 1 << 24},
		Receiver: Receiver{Running: true, State: "waiting", LastError: "store WAL at 0/1000000: write: no space left on device"}}
	r := checkSlot(doc, srv, Probe{}, DefaultThresholds)
	if r.Level != Critical || !strings.Contains(r.Message, "the receiver runs (waiting) but is not streaming: store WAL") ||
		!strings.Contains(r.Message, "no space left on device") || strings.Contains(r.Hint, "start walhub serve") {
		t.Errorf("receiver running: %s %q hint %q", r.Level, r.Message, r.Hint)
	}
	doc.Receiver = Receiver{Running: false, State: "stopped"}
	if r := checkSlot(doc, srv, Probe{}, DefaultThresholds); !strings.Contains(r.Hint, "start walhub serve") {
		t.Errorf("receiver stopped: %q hint %q", r.Message, r.Hint)
	}
}

// TestASnapshotDoesNotPassTheBackupChecks: a done snapshot is newer than the
// only base backup, which is too old. The checks go by the backups whose
// files walhub holds: the snapshot neither makes the last backup young nor
// counts toward the minimum redundancy.
func TestASnapshotDoesNotPassTheBackupChecks(t *testing.T) {
	ctx := context.Background()
	src := newSource(t, t.TempDir(), closedConninfo)
	srv, _ := src.Catalog.EnsureServer(ctx, "main")
	if err := src.Catalog.BindIdentity(ctx, srv.ID, "7000000000000000001", segSize); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	addSegments(t, src.Catalog, srv.ID, 1, 3, 10, now)
	for _, b := range []catalog.Backup{
		{ID: "old", Kind: catalog.KindBase, StartLSN: walname.SegmentStart(4, segSize), StopLSN: walname.SegmentStart(5, segSize),
			StartedAt: now.Add(-72 * time.Hour), FinishedAt: now.Add(-71 * time.Hour)},
		{ID: "snap-new", Kind: catalog.KindSnapshot, StartLSN: walname.SegmentStart(8, segSize), StopLSN: walname.SegmentStart(9, segSize),
			StartedAt: now.Add(-time.Hour), FinishedAt: now.Add(-time.Hour)},
	} {
		b.ServerID, b.State, b.StartTLI, b.StopTLI = srv.ID, catalog.StateDone, 1, 1
		if err := src.Catalog.AddBackup(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	doc := build(t, src)
	if doc.Backups.Count != 1 || doc.Backups.Uncounted != 1 || doc.Backups.Last == nil || doc.Backups.Last.ID != "old" {
		t.Fatalf("backups %+v", doc.Backups)
	}
	th := DefaultThresholds
	th.BackupAgeWarning, th.BackupAgeCritical = 24*time.Hour, 48*time.Hour
	if r := result(t, Evaluate(doc, &src.Config.Servers[0], Probe{}, th), "last backup age"); r.Level != Critical {
		t.Fatalf("last backup age = %+v", r)
	}
}
