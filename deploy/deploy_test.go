// Package deploy holds what ships for Prometheus and Grafana: alerting rules
// (prometheus/) and a dashboard (grafana/). Its tests validate both with
// promtool; test/ checks their metric names against a real hub's /metrics.
package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// promtool finds promtool (Debian's prometheus package ships it).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: apt-get install -y prometheus (.ci/run installs it)")
	}
	return p
}

func run(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func TestAlertRulesPassPromtoolCheckAndTheirUnitTests(t *testing.T) {
	run(t, "prometheus", "check", "rules", "walhub-alerts.yml")
	run(t, "prometheus", "test", "rules", "walhub-alerts.test.yml")
}

// Dashboard is the part of a Grafana dashboard the test reads.
type Dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []Panel `json:"panels"`
}

// Panel is one panel of the dashboard.
type Panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// TestGrafanaDashboardQueriesAreValidPromQL parses the dashboard and has
// promtool parse every query (as recording rules, with $server filled in).
func TestGrafanaDashboardQueriesAreValidPromQL(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("grafana", "walhub.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d Dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana/walhub.json: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard without uid or title: %q %q", d.UID, d.Title)
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for i, tg := range p.Targets {
			if !strings.Contains(tg.Expr, "walhub_") {
				t.Errorf("panel %q query %d reads no walhub metric: %s", p.Title, i, tg.Expr)
			}
			expr := strings.ReplaceAll(tg.Expr, "$server", ".*")
			fmt.Fprintf(&rules, "      - record: panel_%d_%d\n        expr: %q\n", p.ID, i, expr)
			queries++
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard-rules.yml"), []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "check", "rules", "dashboard-rules.yml")
	if queries < 20 {
		t.Errorf("only %d queries in the dashboard", queries)
	}
}
