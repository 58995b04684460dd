package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// downConfig writes a configuration whose one server "main" does not answer.
func downConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "walhub.toml")
	text := fmt.Sprintf("repository = %q\n[[server]]\nname = \"main\"\nconninfo = \"host=127.0.0.1 port=1 user=x dbname=postgres connect_timeout=2\"\n",
		filepath.Join(dir, "repo"))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	mustInit(t, path)
	return path
}

func TestCheckNagiosExitsCriticalWhenServerIsDown(t *testing.T) {
	cfg := downConfig(t)
	out, err := run(t, "--config", cfg, "check", "main", "--nagios")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("exit = %v, want code 2 (CRITICAL)", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "WALHUB CRITICAL - main connection, main replication connection, ") ||
		!strings.Contains(lines[0], " | 'receiver_lag'=") || len(lines) != 10 ||
		!strings.HasPrefix(lines[1], "main connection CRITICAL: cannot connect") || !strings.Contains(lines[1], "hint: ") {
		t.Fatalf("nagios output:\n%s", out)
	}
	out, err = run(t, "--config", cfg, "check", "--output=json")
	var report struct {
		Level   string `json:"level"`
		Results []struct {
			Name, Level, Hint string
		} `json:"results"`
	}
	if jerr := json.Unmarshal([]byte(out), &report); jerr != nil || report.Level != "CRITICAL" || len(report.Results) != 13 {
		t.Fatalf("json check: %v %v\n%s", err, jerr, out)
	}
	_, err = run(t, "--config", cfg, "check", "other", "--nagios")
	if !errors.As(err, &ee) || ee.code != 3 {
		t.Fatalf("an unconfigured server: exit = %v, want 3 (UNKNOWN)", err)
	}
}

func TestStatusJSONIsOneDocumentPerServer(t *testing.T) {
	cfg := downConfig(t)
	out, err := run(t, "--config", cfg, "status", "main", "--output=json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc["schema"] != "walhub.status/1" || doc["server"] != "main" {
		t.Fatalf("status main --output=json: %v\n%s", err, out)
	}
	out, err = run(t, "--config", cfg, "status", "--output=json")
	var docs []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &docs) != nil || len(docs) != 1 {
		t.Fatalf("status --output=json (all): %v\n%s", err, out)
	}
	out, err = run(t, "--config", cfg, "status")
	if err != nil || !strings.Contains(out, "UNREACHABLE") || !strings.Contains(out, "NOT RUNNING") {
		t.Fatalf("status text: %v\n%s", err, out)
	}
}
