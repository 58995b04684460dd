package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// newReadOnlySource makes a read-only hub's configuration (refreshing every
// interval) over a working area whose catalog follows one server "main",
// with WAL and a done backup.
func newReadOnlySource(t testing.TB, interval time.Duration) Source {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	cfg, err := config.Parse(fmt.Sprintf("repository = %q\nread_only = true\nrefresh_interval = %q\n", dir, interval))
	if err != nil {
		t.Fatal(err)
	}
	work, err := storage.NewWorkArea(dir)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(ctx, work.CatalogPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	srv, _ := cat.EnsureServer(ctx, "main")
	if err := cat.BindIdentity(ctx, srv.ID, "7000000000000000001", segSize); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	addSegments(t, cat, srv.ID, 1, 3, 10, now.Add(-time.Minute))
	if err := cat.AddBackup(ctx, catalog.Backup{ID: "b1", ServerID: srv.ID, Kind: catalog.KindBase, State: catalog.StateDone,
		StartLSN: walname.SegmentStart(4, segSize), StartTLI: 1, StopLSN: walname.SegmentStart(5, segSize),
		StartedAt: now.Add(-2 * time.Hour), FinishedAt: now.Add(-time.Hour), OriginalSize: 100, StoredSize: 10}); err != nil {
		t.Fatal(err)
	}
	return Source{Config: cfg, Catalog: cat, Work: work}
}

// TestRefreshCheck: the "catalog refresh" check of a read-only hub judges
// the age of the last successful refresh against refresh_interval (or the
// thresholds given), says the last error, and is CRITICAL when no refresh
// ever succeeded.
func TestRefreshCheck(t *testing.T) {
	const interval = time.Minute
	ago := func(d time.Duration) time.Time { return time.Now().Add(-d) }
	custom := DefaultThresholds
	custom.RefreshAgeWarning, custom.RefreshAgeCritical = time.Hour, 2*time.Hour
	for _, c := range []struct {
		name  string
		state *repository.RefreshState // nil: none recorded
		raw   string                   // written as is instead of state
		th    Thresholds
		want  Level
		in    []string
	}{
		{name: "never recorded", want: Critical, in: []string{"never refreshed"}},
		{name: "never succeeded", state: &repository.RefreshState{LastAttemptAt: ago(time.Second), LastError: "dial tcp: connection refused",
			LastErrorAt: ago(time.Second), Failures: 4}, want: Critical, in: []string{"never refreshed", "last 4 refresh(es) failed", "connection refused"}},
		{name: "fresh", state: &repository.RefreshState{LastAttemptAt: ago(10 * time.Second), LastSuccessAt: ago(10 * time.Second)},
			want: OK, in: []string{"last successful refresh 10s ago", "refresh_interval 1m0s"}},
		{name: "one failure after a recent success", state: &repository.RefreshState{LastAttemptAt: ago(time.Second),
			LastSuccessAt: ago(70 * time.Second), LastError: "503 SlowDown", LastErrorAt: ago(time.Second), Failures: 1},
			want: OK, in: []string{"last 1 refresh(es) failed", "503 SlowDown"}},
		{name: "failing beyond 3 intervals", state: &repository.RefreshState{LastAttemptAt: ago(time.Second),
			LastSuccessAt: ago(4 * interval), LastError: "bucket unreachable", LastErrorAt: ago(time.Second), Failures: 4},
			want: Warning, in: []string{"bucket unreachable", "warning at 3m0s"}},
		{name: "daemon gone", state: &repository.RefreshState{LastAttemptAt: ago(11 * interval), LastSuccessAt: ago(11 * interval)},
			want: Critical, in: []string{"limit 10m0s"}},
		{name: "custom thresholds", state: &repository.RefreshState{LastAttemptAt: ago(11 * interval), LastSuccessAt: ago(11 * interval)},
			th: custom, want: OK},
		{name: "unreadable", raw: "{not json", want: Unknown, in: []string{"read refresh state"}},
		{name: "first refresh running", state: &repository.RefreshState{RunningSince: ago(30 * time.Second), PID: os.Getpid(), Host: hostname},
			want: Warning, in: []string{"first refresh from the repository is running"}},
		{name: "first refresh running too long", state: &repository.RefreshState{RunningSince: ago(11 * interval), PID: os.Getpid(), Host: hostname},
			want: Critical, in: []string{"never refreshed"}},
		{name: "first refresh of a dead daemon", state: &repository.RefreshState{RunningSince: ago(30 * time.Second), PID: deadPID(t), Host: hostname},
			want: Critical, in: []string{"never refreshed"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := newReadOnlySource(t, interval)
			switch {
			case c.raw != "":
				if err := src.Work.WriteRefreshState([]byte(c.raw)); err != nil {
					t.Fatal(err)
				}
			case c.state != nil:
				if err := repository.WriteRefreshState(src.Work, *c.state); err != nil {
					t.Fatal(err)
				}
			}
			th := c.th
			if th == (Thresholds{}) {
				th = DefaultThresholds
			}
			doc, results, err := src.Check(context.Background(), "main", th)
			if err != nil {
				t.Fatal(err)
			}
			r := result(t, results, "catalog refresh")
			if r.Level != c.want {
				t.Fatalf("level %s, want %s: %+v", r.Level, c.want, r)
			}
			for _, s := range c.in {
				if !strings.Contains(r.Message, s) {
					t.Errorf("message %q lacks %q", r.Message, s)
				}
			}
			if r.Level != OK && r.Hint == "" {
				t.Errorf("no hint: %+v", r)
			}
			var text bytes.Buffer
			if err := WriteText(&text, doc); err != nil || !strings.Contains(text.String(), "Catalog refresh") {
				t.Errorf("text: %v\n%s", err, text.String())
			}
		})
	}
}

// TestReadOnlyHubStatusAndChecks: on a read-only hub a server its catalog
// follows has a document (WAL, backups, refresh; nothing asked of
// PostgreSQL), the checks that need the server or a receiver are left out
// with one OK line naming them, an unknown server is ErrUnknownServer, and
// /metrics has its series and the refresh's but none of the server's own.
func TestReadOnlyHubStatusAndChecks(t *testing.T) {
	ctx := context.Background()
	src := newReadOnlySource(t, time.Minute)
	now := time.Now()
	if err := repository.WriteRefreshState(src.Work, repository.RecordRefresh(repository.RefreshState{IntervalSeconds: 60},
		now, repository.RefreshReport{SegmentsAdded: 7}, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Build(ctx, "other"); !errors.Is(err, ErrUnknownServer) {
		t.Fatalf("Build(other) = %v, want ErrUnknownServer", err)
	}
	doc, results, err := src.Check(ctx, "main", DefaultThresholds)
	if err != nil {
		t.Fatal(err)
	}
	if !doc.ReadOnly || doc.Refresh == nil || doc.Refresh.State != "ok" || doc.WAL.Segments != 7 || doc.Backups.Count != 1 ||
		doc.Recoverable == nil || doc.Postgres.Reachable {
		t.Fatalf("document: %+v", doc)
	}
	var names []string
	for _, r := range results {
		names = append(names, r.Name)
		if r.Level == Critical {
			t.Errorf("false CRITICAL on a read-only hub: %+v", r)
		}
	}
	want := []string{"read-only hub", "catalog refresh", "wal continuity", "last wal age", "last backup age",
		"recoverable window", "failed backups", "repository disk space"}
	if !slices.Equal(names, want) {
		t.Fatalf("checks %v, want %v", names, want)
	}
	if r := result(t, results, "read-only hub"); !strings.Contains(r.Message, "replication slot") || !strings.Contains(r.Message, "system id") {
		t.Errorf("read-only hub line: %+v", r)
	}
	data, err := json.Marshal(doc)
	if err != nil || !strings.Contains(string(data), `"read_only":true`) || !strings.Contains(string(data), `"refresh":{"state":"ok"`) {
		t.Fatalf("JSON: %v\n%s", err, data)
	}
	var text bytes.Buffer
	if err := WriteText(&text, doc); err != nil || !strings.Contains(text.String(), "read-only") ||
		strings.Contains(text.String(), "UNREACHABLE") || strings.Contains(text.String(), "Receiver") {
		t.Fatalf("text: %v\n%s", err, text.String())
	}
	var nagios bytes.Buffer
	if err := WriteNagios(&nagios, results, false); err != nil || !strings.HasPrefix(nagios.String(), "WALHUB ") ||
		!strings.Contains(nagios.String(), "'refresh_age'=") {
		t.Fatalf("nagios: %v\n%s", err, nagios.String())
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(&Collector{Source: src})
	got := gathered(t, reg)
	for _, k := range []string{`walhub_status_up{server=main}`, `walhub_wal_segments{server=main}`, `walhub_refresh_interval_seconds{}`,
		`walhub_refresh_last_success_timestamp_seconds{}`, `walhub_refresh_failures{}`, `walhub_check_status{check=catalog refresh,server=main}`} {
		if _, ok := got[k]; !ok {
			t.Errorf("metrics lack %s", k)
		}
	}
	if got[`walhub_status_up{server=main}`] != 1 || got[`walhub_wal_segments{server=main}`] != 7 {
		t.Errorf("status_up %v, wal_segments %v", got[`walhub_status_up{server=main}`], got[`walhub_wal_segments{server=main}`])
	}
	for k := range got {
		for _, p := range []string{"walhub_receiver_", "walhub_postgres_", "walhub_slot_"} {
			if strings.HasPrefix(k, p) {
				t.Errorf("a read-only hub exposes %s", k)
			}
		}
	}
}
