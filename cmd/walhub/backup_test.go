package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walhub/walhub/test/pgtest"
)

// writeConfig writes a configuration for one server "main" on cluster c.
func writeConfig(t *testing.T, c *pgtest.Cluster, extra string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "walhub.toml")
	conf := fmt.Sprintf("repository = %q\n\n[[server]]\nname = \"main\"\nconninfo = %q\n%s", filepath.Join(dir, "repo"),
		c.ConnString(""), extra)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBackupCommandRecordsAFailedBackupThatListBackupsShows(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{SegmentSizeMB: 1})
	conf := writeConfig(t, p, "[server.backup]\nwal_timeout = \"2s\"\n")

	out, err := run(t, "--config", conf, "backup", "--server", "main", "--checkpoint", "fast")
	if err == nil || !strings.Contains(err.Error(), "not received within 2s") {
		t.Fatalf("backup without a receiver: err = %v\n%s", err, out)
	}
	if !strings.Contains(out, "failed") || !strings.Contains(out, "WAL ") {
		t.Errorf("backup output does not show the failure:\n%s", out)
	}

	out, err = run(t, "--config", conf, "list-backups", "--output=json")
	if err != nil {
		t.Fatalf("list-backups: %v\n%s", err, out)
	}
	var views []backupView
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("list-backups json: %v\n%s", err, out)
	}
	if len(views) != 1 || views[0].State != "failed" || !strings.Contains(views[0].Reason, "not received within 2s") ||
		views[0].StartLSN == "" || views[0].StopLSN == "" || views[0].Server != "main" {
		t.Fatalf("list-backups: %+v", views)
	}

	out, err = run(t, "--config", conf, "verify", "--backup", views[0].ID)
	if err == nil || !strings.Contains(err.Error(), "is failed: it has no files to verify") {
		t.Fatalf("verify of a failed backup: %v\n%s", err, out)
	}
}

func TestBackupCommandRejectsBadFlags(t *testing.T) {
	p := filepath.Join(t.TempDir(), "walhub.toml")
	os.WriteFile(p, []byte("repository = \"/tmp/walhub-flags\"\n[[server]]\nname = \"main\"\nconninfo = \"host=x\"\n"), 0o600)
	for _, args := range [][]string{
		{"backup", "--checkpoint", "now"},
		{"backup", "--max-rate", "5"},
		{"backup", "--server", "other"},
	} {
		if _, err := run(t, append([]string{"--config", p}, args...)...); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}
