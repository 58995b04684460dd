package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/test/pgtest"
)

// TestRestoreToEndAndToEachKindOfTarget takes one backup, then records the
// data's fingerprint at a named restore point, an LSN and a time, each at a
// quiet moment, and more load after each. A restore to each target must find
// exactly the data of that moment; a restore to the end of WAL the final data.
// The backup has a user tablespace, relocated by one of the restores.
func TestRestoreToEndAndToEachKindOfTarget(t *testing.T) {
	t.Parallel()
	s := newSite(t, pgtest.Options{})
	p := s.primary
	p.PgbenchInit(2)
	tsDir := filepath.Join(pgtest.TempDir(t, "ts"), "ts1")
	os.Mkdir(tsDir, 0o700)
	pgtest.Chown(t, tsDir)
	p.Query("CREATE TABLESPACE ts1 LOCATION '" + tsDir + "'")
	p.Query("CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g")
	tsOID := p.Query("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")
	s.walhub("backup", "--server", "main")

	p.Pgbench(2, 300)
	want := map[string]string{}
	want["name"] = p.Query(checksum)
	p.Query("SELECT pg_create_restore_point('before_batch')")
	p.Pgbench(2, 300)
	want["lsn"] = p.Query(checksum)
	lsn := p.CurrentLSN().String()
	p.Pgbench(2, 300)
	want["time"] = p.Query(checksum)
	time.Sleep(1100 * time.Millisecond)
	at := p.Query("SELECT now()")
	time.Sleep(1100 * time.Millisecond)
	p.Pgbench(2, 300)
	want["end"] = p.Query(checksum)
	s.waitArchived()

	restores := []struct {
		kind  string
		flags []string
	}{
		{"end", nil},
		{"name", []string{"--target-name", "before_batch", "--target-action", "promote"}},
		{"lsn", []string{"--target-lsn", lsn, "--target-action", "promote"}},
		{"time", []string{"--target-time", at, "--target-action", "promote"}},
	}
	for _, r := range restores {
		t.Run(r.kind, func(t *testing.T) {
			scratch := pgtest.TempDir(t, "restore-"+r.kind)
			dir, newTS := filepath.Join(scratch, "data"), filepath.Join(scratch, "ts1")
			// The original tablespace directory belongs to the running primary:
			// every restore relocates it.
			args := append([]string{"restore", "--server", "main", "--target-dir", dir, "--tablespace", tsOID + "=" + newTS,
				"--walfetch-token-file", s.tokenFile}, r.flags...)
			out := s.walhub(args...)
			if !strings.Contains(out, "verified against its manifest") {
				t.Fatalf("restore output: %s", out)
			}
			c := startRestored(t, "restored-"+r.kind, dir, newTS)
			waitPromoted(t, c)
			if got := c.Query(checksum); got != want[r.kind] {
				t.Fatalf("restored data at the %s target differs from the primary's at that point", r.kind)
			}
			if got := c.Query("SELECT count(*) FROM in_ts"); got != "5000" {
				t.Fatalf("relocated tablespace table has %s rows", got)
			}
			if loc := c.Query("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"); loc != newTS {
				t.Fatalf("tablespace location = %s, want %s", loc, newTS)
			}
		})
	}
}

// TestRestoredStandbyCatchesUpThroughWalfetchThenStreams restores a standby
// that must first replay WAL written after the backup from the hub, then
// switches to streaming from the primary.
func TestRestoredStandbyCatchesUpThroughWalfetchThenStreams(t *testing.T) {
	t.Parallel()
	s := newSite(t, pgtest.Options{})
	p := s.primary
	p.PgbenchInit(1)
	s.walhub("backup", "--server", "main")
	p.Pgbench(2, 300)
	s.waitArchived()
	p.CreateSlot("standby1")
	dir := filepath.Join(pgtest.TempDir(t, "standby"), "data")
	s.walhub("restore", "--server", "main", "--target-dir", dir, "--standby", "--walfetch-token-file", s.tokenFile,
		"--primary-conninfo", p.ConnString("")+" application_name=standby1", "--primary-slot", "standby1")
	c := startRestored(t, "standby1", dir)
	p.Pgbench(2, 100)
	c.WaitReplay(p.CurrentLSN(), 180*time.Second)
	if got, want := c.Query(checksum), p.Query(checksum); got != want {
		t.Fatal("standby data differs from the primary's")
	}
	c.WaitFor(60*time.Second, "the standby to stream", func() bool {
		out, err := c.TryQuery("SELECT status FROM pg_stat_wal_receiver")
		return err == nil && out == "streaming"
	})
	log, _ := os.ReadFile(c.LogFile)
	if !strings.Contains(string(log), "restored log file") {
		t.Fatalf("the standby did not replay anything through walfetch:\n%s", log)
	}
}

// TestRestoreRefusesBadInputAndWritesNothing checks every input error is
// caught before anything is written.
func TestRestoreRefusesBadInputAndWritesNothing(t *testing.T) {
	t.Parallel()
	s := newSite(t, pgtest.Options{})
	s.primary.PgbenchInit(1)
	s.walhub("backup", "--server", "main")
	backupEnd := s.primary.Query("SELECT now() - interval '1 hour'")
	scratch := pgtest.TempDir(t, "bad")
	full := filepath.Join(scratch, "full")
	os.Mkdir(full, 0o700)
	os.WriteFile(filepath.Join(full, "keep"), []byte("x"), 0o600)
	empty := filepath.Join(scratch, "new")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"non-empty target", []string{"--target-dir", full}, "is not empty"},
		{"unknown backup", []string{"--target-dir", empty, "--backup", "19990101T000000Z"}, "no backup 19990101T000000Z"},
		{"target before every backup", []string{"--target-dir", empty, "--target-time", backupEnd}, "no backup can reach the time target"},
		{"two targets", []string{"--target-dir", empty, "--target-name", "x", "--target-immediate"}, "at most one"},
		{"bad lsn", []string{"--target-dir", empty, "--target-lsn", "zz"}, "--target-lsn"},
		{"bad tablespace flag", []string{"--target-dir", empty, "--tablespace", "x=/y"}, "want OID=DIR"},
		{"unknown server", []string{"--target-dir", empty}, "no server"},
		{"standby with target", []string{"--target-dir", empty, "--standby", "--target-immediate"}, "does not go with"},
	}
	for _, tt := range tests {
		server := "main"
		if tt.name == "unknown server" {
			server = "other"
		}
		out, err := s.tryWalhub(append([]string{"restore", "--server", server}, tt.args...)...)
		if err == nil || !strings.Contains(out, tt.want) {
			t.Errorf("%s: err %v, output %q; want an error saying %q", tt.name, err, out, tt.want)
		}
		if _, err := os.Stat(empty); !os.IsNotExist(err) {
			t.Fatalf("%s: %s was created", tt.name, empty)
		}
		if entries, _ := os.ReadDir(full); len(entries) != 1 {
			t.Fatalf("%s: the non-empty target was touched", tt.name)
		}
	}
}

// TestRestoreFromAnotherHostOverHTTP restores with no configuration and no
// repository at hand, only the hub's URL and a read token, as on another host.
func TestRestoreFromAnotherHostOverHTTP(t *testing.T) {
	t.Parallel()
	s := newSite(t, pgtest.Options{})
	p := s.primary
	p.PgbenchInit(1)
	s.walhub("backup", "--server", "main")
	p.Pgbench(2, 200)
	want := p.Query(checksum)
	s.waitArchived()
	dir := filepath.Join(pgtest.TempDir(t, "remote"), "data")
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(binDir, "walhub"), append([]string{"restore", "--config", "/nonexistent/walhub.toml",
			"--hub-url", s.hubURL, "--server", "main", "--owner", pgOwner()}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(nil, "--target-dir", dir); err == nil || !strings.Contains(out, "401") {
		t.Fatalf("without a token: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("a refused restore created the target directory")
	}
	out, err := run([]string{"WALHUB_TOKEN=read-secret"}, "--target-dir", dir, "--walfetch-token-file", s.tokenFile)
	if err != nil || !strings.Contains(out, "verified against its manifest") || !strings.Contains(out, s.hubURL) {
		t.Fatalf("restore over HTTP: %v\n%s", err, out)
	}
	c := startRestored(t, "remote", dir)
	waitPromoted(t, c)
	if got := c.Query(checksum); got != want {
		t.Fatal("data restored over HTTP differs from the primary's")
	}
}
