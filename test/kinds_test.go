package test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/walhub/walhub/test/pgtest"
)

// TestASnapshotDoesNotStandInForABaseBackup takes one base backup and then
// one snapshot (the newest backup). walhub restore, verify and expire must
// each treat the snapshot for what it is, an external copy walhub holds no
// files of: a plain restore restores the base backup (it used to pick the
// snapshot and refuse it), verify checks the base backup and succeeds (it
// used to report the snapshot FAILED), and expire with redundancy = 1 keeps
// the base backup (it used to count the snapshot and remove the only base
// backup).
func TestASnapshotDoesNotStandInForABaseBackup(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{})
	s := newSiteOn(t, p, p, "retention.redundancy = 1", "retention.auto_expire = false")
	p.PgbenchInit(1)
	s.walhub("backup", "--server", "main")
	base := s.walhub("list-backups", "--server", "main")
	s.walhub("snapshot", "start", "--server", "main", "--fast")
	p.Pgbench(1, 50)
	s.walhub("snapshot", "stop", "--server", "main")
	s.waitArchived()

	dir := filepath.Join(pgtest.TempDir(t, "plain"), "data")
	if out, err := s.tryWalhub("restore", "--server", "main", "--target-dir", dir, "--walfetch-token-file", s.tokenFile); err != nil ||
		!strings.Contains(out, "verified against its manifest") {
		t.Errorf("plain restore with a snapshot newest: %v\n%s", err, out)
	}
	if out, err := s.tryWalhub("verify", "--server", "main"); err != nil || !strings.Contains(out, ": OK") || strings.Contains(out, "FAILED") {
		t.Errorf("verify with a snapshot newest: %v\n%s", err, out)
	}
	if out, err := s.tryWalhub("expire", "--server", "main"); err != nil {
		t.Fatalf("expire: %v\n%s", err, out)
	}
	list := s.walhub("list-backups", "--server", "main")
	baseID := strings.Fields(strings.Split(strings.TrimSpace(base), "\n")[1])[1]
	if !strings.Contains(list, baseID) {
		t.Errorf("expire with redundancy 1 removed the only base backup %s:\n%s", baseID, list)
	}
}
