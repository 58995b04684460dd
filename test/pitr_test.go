package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walhub/walhub/test/pgtest"
)

// ledger is a table one connection appends to, one row per transaction,
// while pgbench makes noise on other connections: the rows a restore holds
// say exactly where recovery stopped.
type ledger struct {
	t    *testing.T
	conn *pgx.Conn
	n    int
}

func newLedger(t *testing.T, p *pgtest.Cluster) *ledger {
	l := &ledger{t: t, conn: p.Connect("postgres")}
	if _, err := l.conn.Exec(context.Background(), "CREATE TABLE ledger (n int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	return l
}

// query runs one statement returning one text value on the ledger's connection.
func (l *ledger) query(sql string) string {
	l.t.Helper()
	var out string
	if err := l.conn.QueryRow(context.Background(), sql).Scan(&out); err != nil {
		l.t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// append commits k more rows, one transaction each.
func (l *ledger) append(k int) {
	l.t.Helper()
	for range k {
		l.n++
		if _, err := l.conn.Exec(context.Background(), fmt.Sprintf("INSERT INTO ledger VALUES (%d)", l.n)); err != nil {
			l.t.Fatal(err)
		}
	}
}

var restoredBackup = regexp.MustCompile(`restored backup (\S+) into`)

// TestPITRChoosesTheBackupThatReachesEachTarget takes four backups with a
// restore point, an LSN and a time between them, each written by the
// ledger's connection between two of its rows. A restore to each target
// without --backup must choose the newest backup that ends before it (today
// a restore point picked the newest backup, and PostgreSQL stopped with
// "recovery ended before configured recovery target was reached") and hold
// exactly the ledger rows committed before the target. Targets the archive
// cannot reach are refused before anything is written, locally and over
// --hub-url, saying what the archive can reach.
func TestPITRChoosesTheBackupThatReachesEachTarget(t *testing.T) {
	t.Parallel()
	s := newSite(t, pgtest.Options{})
	p := s.primary
	p.PgbenchInit(1)
	l := newLedger(t, p)
	noise := exec.Command(pgtest.Bin(t, "pgbench"), "-n", "-c", "2", "-T", "600", "-h", "127.0.0.1",
		"-p", fmt.Sprint(p.Port), "-U", "postgres", "postgres")
	if err := noise.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { noise.Process.Kill(); noise.Wait() })
	backup := func() string {
		s.walhub("backup", "--server", "main")
		return newestBackup(t, s).ID
	}
	want := map[string]int{}
	chosen := map[string]string{}
	before := time.Now().Add(-time.Hour)

	backupA := backup()
	l.append(20)
	l.query("SELECT pg_create_restore_point('rp1')::text")
	want["name"], chosen["name"] = l.n, backupA
	l.append(20)

	backupB := backup()
	l.append(20)
	lsn := l.query("SELECT pg_current_wal_insert_lsn()::text")
	want["lsn"], chosen["lsn"] = l.n, backupB
	l.append(20)

	backupC := backup()
	l.append(20)
	at := l.query("SELECT clock_timestamp()::text")
	want["time"], chosen["time"] = l.n, backupC
	time.Sleep(20 * time.Millisecond)
	l.append(20)

	backupD := backup()
	l.append(20)
	want["end"], chosen["end"] = l.n, backupD
	p.Query("SELECT pg_create_restore_point('rp2')")
	noise.Process.Kill()
	noise.Wait()
	s.waitArchived()

	// walhub restore-points lists them, in WAL order.
	var rps []struct {
		Name string `json:"name"`
		LSN  string `json:"lsn"`
	}
	if err := json.Unmarshal([]byte(s.walhub("restore-points", "--server", "main", "--output", "json")), &rps); err != nil {
		t.Fatal(err)
	}
	if len(rps) != 2 || rps[0].Name != "rp1" || rps[1].Name != "rp2" {
		t.Fatalf("restore-points: %+v", rps)
	}

	scratch := pgtest.TempDir(t, "pitr")
	refusals := []struct {
		name  string
		flags []string
		want  string
	}{
		{"unknown restore point", []string{"--target-name", "nope"}, `no restore point named "nope"`},
		{"after the last commit", []string{"--target-time", time.Now().Add(time.Hour).Format(time.RFC3339)}, "no commit or abort after"},
		{"before every backup", []string{"--target-time", before.Format(time.RFC3339)}, "before the end of backup"},
		{"lsn after the WAL held", []string{"--target-lsn", "FF/0"}, "after the end of the WAL held"},
	}
	for _, r := range refusals {
		for _, remote := range []bool{false, true} {
			dir := filepath.Join(scratch, "refused")
			args := append([]string{"restore", "--server", "main", "--target-dir", dir}, r.flags...)
			var out string
			var err error
			if remote {
				cmd := exec.Command(filepath.Join(binDir, "walhub"), append(args, "--config", "/nonexistent/walhub.toml",
					"--hub-url", s.hubURL, "--token", "read-secret", "--owner", pgOwner())...)
				b, e := cmd.CombinedOutput()
				out, err = string(b), e
			} else {
				out, err = s.tryWalhub(args...)
			}
			if err == nil || !strings.Contains(out, r.want) || !strings.Contains(out, "can recover server main from") {
				t.Errorf("%s (remote %v): %v\n%s", r.name, remote, err, out)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("%s: a refused restore wrote %s", r.name, dir)
			}
		}
	}

	restores := []struct {
		kind   string
		flags  []string
		remote bool
	}{
		{"name", []string{"--target-name", "rp1"}, false},
		{"lsn", []string{"--target-lsn", lsn}, true},
		{"time", []string{"--target-time", at}, false},
	}
	for _, r := range restores {
		dir := filepath.Join(scratch, r.kind)
		args := append([]string{"restore", "--server", "main", "--target-dir", dir, "--walfetch-token-file", s.tokenFile,
			"--target-action", "promote"}, r.flags...)
		var out string
		if r.remote {
			cmd := exec.Command(filepath.Join(binDir, "walhub"), append(args, "--config", "/nonexistent/walhub.toml",
				"--hub-url", s.hubURL, "--token", "read-secret", "--owner", pgOwner())...)
			b, err := cmd.CombinedOutput()
			if out = string(b); err != nil {
				t.Fatalf("restore to the %s target over HTTP: %v\n%s", r.kind, err, out)
			}
		} else {
			out = s.walhub(args...)
		}
		m := restoredBackup.FindStringSubmatch(out)
		if m == nil || m[1] != chosen[r.kind] {
			t.Logf("backups: %s\nrestore points: %s", s.walhub("list-backups", "--server", "main"), s.walhub("restore-points"))
			t.Fatalf("restore to the %s target chose %v, want backup %s\n%s", r.kind, m, chosen[r.kind], out)
		}
		c := startRestored(t, "pitr-"+r.kind, dir)
		waitPromoted(t, c)
		got := c.Query("SELECT count(*) || ':' || coalesce(max(n), 0) FROM ledger")
		if w := fmt.Sprintf("%d:%d", want[r.kind], want[r.kind]); got != w {
			t.Errorf("restored to the %s target: ledger count:max %s, want %s", r.kind, got, w)
		}
		c.Stop("fast")
	}
}
