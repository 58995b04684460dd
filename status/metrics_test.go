package status

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/walname"
)

// gathered indexes a registry's samples by name and labels ("name{a=b,c=d}").
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return 0
}

func TestCollectorExposesBackupsWALLocksAndChecks(t *testing.T) {
	ctx := context.Background()
	repo := t.TempDir()
	src := newSource(t, repo, closedConninfo)
	srv, _ := src.Catalog.EnsureServer(ctx, "main")
	if err := src.Catalog.BindIdentity(ctx, srv.ID, "7000000000000000001", segSize); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// Segments 3..9 and 12..19 on timeline 1: one hole, after the oldest backup.
	addSegments(t, src.Catalog, srv.ID, 1, 3, 10, now.Add(-2*time.Minute))
	addSegments(t, src.Catalog, srv.ID, 1, 12, 20, now.Add(-time.Minute))
	started := now.Add(-3 * time.Hour)
	for _, b := range []catalog.Backup{
		{ID: "b1", State: catalog.StateDone, StartLSN: walname.SegmentStart(4, segSize), StartedAt: started, FinishedAt: started.Add(90 * time.Second),
			OriginalSize: 1000, StoredSize: 400},
		{ID: "b2", State: catalog.StateDone, StartLSN: walname.SegmentStart(14, segSize), StartedAt: started.Add(time.Hour),
			FinishedAt: started.Add(time.Hour + 30*time.Second), OriginalSize: 3000, StoredSize: 1200},
		{ID: "b3", State: catalog.StateFailed, Reason: "disk full", StartLSN: walname.SegmentStart(16, segSize), StartedAt: started.Add(2 * time.Hour)},
	} {
		b.ServerID, b.Kind, b.StartTLI = srv.ID, catalog.KindBase, 1
		if err := src.Catalog.AddBackup(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	l, err := src.Work.Lock("main", "backup", "b4")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if err := l.Update(43, ""); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&Collector{Source: src})
	got := gathered(t, reg)
	lastEnd := started.Add(time.Hour + 30*time.Second)
	want := map[string]float64{
		"walhub_status_up{server=main}":                                 1,
		"walhub_postgres_up{server=main}":                               0,
		"walhub_receiver_running{server=main}":                          0,
		"walhub_receiver_state{server=main,state=absent}":               1,
		"walhub_receiver_state{server=main,state=streaming}":            0,
		"walhub_wal_segments{server=main}":                              15,
		"walhub_wal_bytes{server=main}":                                 15 * segSize,
		"walhub_wal_stored_bytes{server=main}":                          15 * 4 << 20,
		"walhub_wal_timelines{server=main}":                             1,
		"walhub_wal_gaps{server=main}":                                  1,
		"walhub_wal_blocking_gaps{server=main}":                         1,
		"walhub_backups{server=main,state=done}":                        2,
		"walhub_backups{server=main,state=failed}":                      1,
		"walhub_backups{server=main,state=waiting_wal}":                 0,
		"walhub_backups{server=main,state=running}":                     0,
		"walhub_backups_size_bytes{server=main}":                        4000,
		"walhub_backups_stored_bytes{server=main}":                      1600,
		"walhub_backup_last_success_timestamp_seconds{server=main}":     unixSeconds(lastEnd.UTC().Truncate(time.Microsecond)),
		"walhub_backup_last_success_duration_seconds{server=main}":      30,
		"walhub_backup_last_success_size_bytes{server=main}":            3000,
		"walhub_backup_last_success_stored_bytes{server=main}":          1200,
		"walhub_backup_failures_since_last_success{server=main}":        1,
		"walhub_operation_running{operation=backup,server=main}":        1,
		"walhub_operation_running{operation=expire,server=main}":        0,
		"walhub_operation_progress_ratio{operation=backup,server=main}": 0.43,
		"walhub_recoverable{server=main}":                               1,
		"walhub_recoverable_earliest_timestamp_seconds{server=main}":    unixSeconds(started.Add(90 * time.Second).UTC().Truncate(time.Microsecond)),
		"walhub_recoverable_latest_lsn_bytes{server=main}":              float64(walname.SegmentStart(20, segSize)),
		"walhub_check_status{check=connection,server=main}":             float64(Critical),
		"walhub_check_status{check=wal continuity,server=main}":         float64(Critical),
		"walhub_check_status{check=failed backups,server=main}":         float64(Warning),
		"walhub_check_status{check=minimum redundancy,server=main}":     float64(OK),
		"walhub_check_status{check=wal_level,server=main}":              float64(Unknown),
		"walhub_check_status{check=last backup age,server=main}":        float64(OK),
		"walhub_check_status{check=replication connection,server=main}": float64(Critical),
	}
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s missing", k)
		case strings.Contains(k, "timestamp"):
			// The catalog keeps nanoseconds; allow the float's rounding.
			if d := g - v; d > 0.01 || d < -0.01 {
				t.Errorf("%s = %f, want %f", k, g, v)
			}
		case g != v:
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	if a := got["walhub_backup_last_success_age_seconds{server=main}"]; a < 2*3600-60 || a > 2*3600 {
		t.Errorf("last backup age %v s, want about 2 h", a)
	}
	for _, absent := range []string{"walhub_slot_exists{server=main}", "walhub_postgres_current_lsn_bytes{server=main}",
		"walhub_receiver_lag_bytes{server=main}", "walhub_operation_progress_ratio{operation=expire,server=main}",
		// No commit is indexed in these made-up segments.
		"walhub_recoverable_latest_timestamp_seconds{server=main}"} {
		if _, ok := got[absent]; ok {
			t.Errorf("%s is exposed, but nothing is known of it", absent)
		}
	}
	if got["walhub_repository_size_bytes{}"] == 0 || got["walhub_repository_free_bytes{}"] == 0 {
		t.Errorf("repository file system not exposed: %v / %v", got["walhub_repository_size_bytes{}"], got["walhub_repository_free_bytes{}"])
	}
	// Every metric passes the client library's own lint (units, suffixes, help).
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestCollectorReportsAServerItCannotBuild: a broken catalog for one server
// gives walhub_status_up 0, and the scrape still succeeds.
func TestCollectorReportsAServerItCannotBuild(t *testing.T) {
	src := newSource(t, t.TempDir(), closedConninfo)
	src.Catalog.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(&Collector{Source: src})
	got := gathered(t, reg)
	if v, ok := got["walhub_status_up{server=main}"]; !ok || v != 0 {
		t.Errorf("walhub_status_up = %v (present %v), want 0", v, ok)
	}
	if _, ok := got["walhub_check_status{check=connection,server=main}"]; ok {
		t.Error("checks exposed for a server whose status could not be built")
	}
}

// TestCollectorFollowsTheConfigurationInForce: a server added by a reload is
// scraped from the next scrape on.
func TestCollectorFollowsTheConfigurationInForce(t *testing.T) {
	src := newSource(t, t.TempDir(), closedConninfo)
	cfg := src.Config
	reg := prometheus.NewRegistry()
	reg.MustRegister(&Collector{Source: src, Config: func() *config.Config { return cfg }})
	if got := gathered(t, reg); got["walhub_status_up{server=main}"] != 1 || len(got) == 0 {
		t.Fatalf("before the reload: walhub_status_up{server=main} = %v", got["walhub_status_up{server=main}"])
	}
	reloaded, err := config.Parse(fmt.Sprintf("repository = %q\n[[server]]\nname = \"other\"\nconninfo = %q\n", src.Config.Repository, closedConninfo))
	if err != nil {
		t.Fatal(err)
	}
	cfg = reloaded
	got := gathered(t, reg)
	if _, ok := got["walhub_status_up{server=main}"]; ok {
		t.Error("a server removed by the reload is still scraped")
	}
	if _, ok := got["walhub_status_up{server=other}"]; !ok {
		t.Error("a server added by the reload is not scraped")
	}
}
