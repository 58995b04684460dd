package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walhub/walhub/test/pgtest"
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
		!strings.Contains(lines[0], " | 'receiver_lag'=") || len(lines) != 11 ||
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
	if jerr := json.Unmarshal([]byte(out), &report); jerr != nil || report.Level != "CRITICAL" || len(report.Results) != 15 {
		t.Fatalf("json check: %v %v\n%s", err, jerr, out)
	}
	_, err = run(t, "--config", cfg, "check", "other", "--nagios")
	if !errors.As(err, &ee) || ee.code != 3 {
		t.Fatalf("an unconfigured server: exit = %v, want 3 (UNKNOWN)", err)
	}
	// --server, as every other command takes it.
	byFlag, err := run(t, "--config", cfg, "check", "--server", "main", "--nagios")
	if !errors.As(err, &ee) || ee.code != 2 || !strings.HasPrefix(byFlag, "WALHUB CRITICAL - main connection") {
		t.Fatalf("check --server main: %v\n%s", err, byFlag)
	}
	if _, err = run(t, "--config", cfg, "status", "--server", "other"); err == nil || !strings.Contains(err.Error(), `no server "other"`) {
		t.Fatalf("status --server other: %v", err)
	}
	if _, err = run(t, "--config", cfg, "check", "--server", "main", "other"); err == nil || !strings.Contains(err.Error(), "name the server once") {
		t.Fatalf("--server and a different argument: %v", err)
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

// TestCheckPrintsTheGrantsTheRoleLacks runs walhub check as a role with
// REPLICATION only: the privileges check names what is missing and prints the
// exact statements that grant it.
func TestCheckPrintsTheGrantsTheRoleLacks(t *testing.T) {
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{})
	p.Query(`CREATE ROLE walhub_t LOGIN REPLICATION`)
	dir := t.TempDir()
	path := filepath.Join(dir, "walhub.toml")
	conninfo := strings.Replace(p.ConnString(""), "user=postgres", "user=walhub_t", 1)
	os.WriteFile(path, []byte(fmt.Sprintf("repository = %q\n[[server]]\nname = \"main\"\nconninfo = %q\n", filepath.Join(dir, "repo"), conninfo)), 0o600)
	mustInit(t, path)
	out, _ := run(t, "--config", path, "check", "--server", "main")
	for _, want := range []string{
		"privileges:", "role walhub_t lacks pg_monitor",
		`GRANT pg_monitor TO "walhub_t";`,
		`GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO "walhub_t";`,
		`GRANT EXECUTE ON FUNCTION pg_catalog.pg_backup_start(text, boolean) TO "walhub_t";`,
		`GRANT EXECUTE ON FUNCTION pg_catalog.pg_backup_stop(boolean) TO "walhub_t";`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ALTER ROLE") {
		t.Errorf("the role has REPLICATION, yet check asks for it:\n%s", out)
	}
	for _, g := range []string{"GRANT pg_monitor TO walhub_t", "GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO walhub_t",
		"GRANT EXECUTE ON FUNCTION pg_catalog.pg_backup_start(text, boolean) TO walhub_t",
		"GRANT EXECUTE ON FUNCTION pg_catalog.pg_backup_stop(boolean) TO walhub_t"} {
		p.Query(g)
	}
	out, _ = run(t, "--config", path, "check", "--server", "main")
	if !strings.Contains(out, "role walhub_t holds every privilege walhub needs") {
		t.Errorf("after the grants:\n%s", out)
	}
}
