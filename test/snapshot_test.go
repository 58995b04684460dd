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

// TestSnapshotCopiedUnderLoadRecoversThroughWalfetch plays the external tool:
// walhub snapshot start, `cp -a` of the running primary's data directory while
// pgbench writes, walhub snapshot stop, then walhub restore --snapshot-dir. The
// copy must recover through walfetch to exactly the primary's data.
func TestSnapshotCopiedUnderLoadRecoversThroughWalfetch(t *testing.T) {
	t.Parallel()
	s := newSite(t, pgtest.Options{})
	p := s.primary
	p.PgbenchInit(2)
	if out, err := s.tryWalhub("snapshot", "stop", "--server", "main"); err == nil || !strings.Contains(out, "no snapshot is running") {
		t.Fatalf("stop without start: %v\n%s", err, out)
	}
	out := s.walhub("snapshot", "start", "--server", "main", "--label", "zfs-nightly", "--fast")
	if !strings.Contains(out, "started at") {
		t.Fatalf("start output: %s", out)
	}
	if out, err := s.tryWalhub("snapshot", "start", "--server", "main"); err == nil || !strings.Contains(out, "already running") {
		t.Fatalf("second start: %v\n%s", err, out)
	}
	if out, err := s.tryWalhub("backup", "--server", "main"); err == nil || !strings.Contains(out, "snapshot") {
		t.Fatalf("backup during a snapshot: %v\n%s", err, out)
	}

	wait := p.StartPgbench(2, 8*time.Second)
	time.Sleep(time.Second)
	copyDir := filepath.Join(pgtest.TempDir(t, "snapcopy"), "data")
	if out, err := exec.Command("cp", "-a", p.DataDir, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	wait()
	want := p.Query(checksum)

	labelDir := pgtest.TempDir(t, "label")
	out = s.walhub("snapshot", "stop", "--server", "main", "--write-to", labelDir)
	if !strings.Contains(out, "stopped at") {
		t.Fatalf("stop output: %s", out)
	}
	label, err := os.ReadFile(filepath.Join(labelDir, "backup_label"))
	if err != nil || !strings.Contains(string(label), "LABEL: zfs-nightly") {
		t.Fatalf("backup_label: %v\n%s", err, label)
	}
	list := s.walhub("list-backups", "--server", "main")
	if !strings.Contains(list, "snapshot") || !strings.Contains(list, "done") {
		t.Fatalf("list-backups does not show the snapshot as done:\n%s", list)
	}

	out = s.walhub("restore", "--server", "main", "--snapshot-dir", copyDir, "--walfetch-token-file", s.tokenFile)
	if !strings.Contains(out, "backup_label written") {
		t.Fatalf("restore --snapshot-dir: %s", out)
	}
	c := startRestored(t, "snapcopy", copyDir)
	waitPromoted(t, c)
	if got := c.Query(checksum); got != want {
		t.Fatal("the snapshot copy recovered to other data than the primary's")
	}
	log, _ := os.ReadFile(c.LogFile)
	if !strings.Contains(string(log), "restored log file") {
		t.Fatalf("the copy did not recover through walfetch:\n%s", log)
	}
}
