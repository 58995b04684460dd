package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/basebackup"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/status"
	"github.com/walhub/walhub/stream"
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
	mustInit(t, path)
	return path
}

// TestBackupCommandRefusesAtOnceWithoutAReceiver: with no walhub serve
// streaming from the server, the backup's WAL would never arrive. The backup
// must be refused at once, saying why, and record nothing (it used to run,
// wait wal_timeout and fail).
func TestBackupCommandRefusesAtOnceWithoutAReceiver(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{SegmentSizeMB: 1})
	conf := writeConfig(t, p, "[server.backup]\nwal_timeout = \"1m\"\n")

	started := time.Now()
	out, err := run(t, "--config", conf, "backup", "--server", "main", "--checkpoint", "fast")
	if err == nil || !strings.Contains(err.Error(), "no WAL receiver is running") ||
		!strings.Contains(err.Error(), "no receiver has run for this server") {
		t.Fatalf("backup without a receiver: err = %v\n%s", err, out)
	}
	if d := time.Since(started); d > 10*time.Second {
		t.Errorf("the refusal took %s", d)
	}
	out, err = run(t, "--config", conf, "list-backups", "--output=json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("list-backups after a refused backup: %v\n%s", err, out)
	}
}

func TestBackupCommandRejectsBadFlags(t *testing.T) {
	p := filepath.Join(t.TempDir(), "walhub.toml")
	os.WriteFile(p, []byte(fmt.Sprintf("repository = %q\n[[server]]\nname = \"main\"\nconninfo = \"host=x\"\n", filepath.Join(t.TempDir(), "repo"))+
		"[[server]]\nname = \"plain\"\nconninfo = \"host=x\"\ncompression = \"none\"\n"), 0o600)
	mustInit(t, p)
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"backup", "--checkpoint", "now"}, `--checkpoint: "now" is not one of fast, spread`},
		{[]string{"backup", "--max-rate", "5"}, "--max-rate: 5 kB/s is out of range"},
		{[]string{"backup", "--compress-on", "client"}, `--compress-on: "client" is not one of auto, hub, server`},
		{[]string{"backup", "--server", "other"}, "other"},
		{[]string{"backup", "--compress-on", "server", "--server", "plain"}, `backup of plain refused: --compress-on "server" needs compression = "zstd", not "none"`},
	} {
		if _, err := run(t, append([]string{"--config", p}, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

func TestBackupListAndVerifyCommandsWithTheReceiverRunning(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{SegmentSizeMB: 1})
	p.PgbenchInit(1)
	conf := writeConfig(t, p, "compression = \"none\"\n[server.backup]\ncheckpoint = \"spread\"\nwal_timeout = \"2m\"\n")
	a := &app{configPath: conf}
	cfg, err := a.config()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	repo, err := a.repository(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	r := stream.NewReceiver(stream.Options{Server: &cfg.Servers[0], Repo: repo})
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// walhub backup refuses to run without a receiver: wait until it is seen.
	pgtest.WaitFor(t, 30*time.Second, "the receiver to run", func() bool {
		return status.ReadReceiver(repo.Work, &cfg.Servers[0]).Running
	})

	out, err := run(t, "--config", conf, "-q", "backup", "--checkpoint", "fast", "--output=json")
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	var taken []backupView
	if err := json.Unmarshal([]byte(out), &taken); err != nil || len(taken) != 1 {
		t.Fatalf("backup json: %v\n%s", err, out)
	}
	b := taken[0]
	if b.State != "done" || b.Compression != "none" || b.Size == 0 || b.StoredSize < b.Size || len(b.Files) != 2 {
		t.Fatalf("backup: %+v", b)
	}
	if _, err := os.Stat(filepath.Join(cfg.Repository, "main", "backups", b.ID, "base.tar")); err != nil {
		t.Errorf("uncompressed archive: %v", err)
	}

	out, err = run(t, "--config", conf, "list-backups")
	if err != nil || !strings.Contains(out, b.ID) || !strings.Contains(out, "done") {
		t.Fatalf("list-backups: %v\n%s", err, out)
	}
	out, err = run(t, "--config", conf, "verify", "--server", "main")
	if err != nil || !strings.Contains(out, "main "+b.ID+": OK") {
		t.Fatalf("verify latest: %v\n%s", err, out)
	}

	out, err = run(t, "--config", conf, "show-backup", b.ID, "--output=json")
	var d backupDetail
	if err != nil || json.Unmarshal([]byte(out), &d) != nil {
		t.Fatalf("show-backup json: %v\n%s", err, out)
	}
	if d.ID != b.ID || d.StartLSN == "" || d.StopLSN == "" || d.StopTLI != 1 || d.Seconds <= 0 || d.CompressionRatio <= 0 ||
		len(d.Tablespaces) != 1 || d.Tablespaces[0].Archive != "base.tar" || d.WAL == nil || !d.WAL.Complete ||
		d.WAL.Segments < 1 || !strings.HasPrefix(d.WAL.FirstSegment, "00000001") {
		t.Fatalf("show-backup: %+v %+v", d, d.WAL)
	}
	out, err = run(t, "--config", conf, "show-backup", b.ID)
	if err != nil || !strings.Contains(out, "all in the hub") || !strings.Contains(out, "ratio 1.") || !strings.Contains(out, "base directory") {
		t.Fatalf("show-backup text: %v\n%s", err, out)
	}
	if out, err := run(t, "--config", conf, "show-backup", "19990101T000000Z"); err == nil || !strings.Contains(err.Error(), "no backup") {
		t.Fatalf("show-backup of an unknown id: %v\n%s", err, out)
	}

	// Damage the stored archive: verify names the file and fails.
	archive := filepath.Join(cfg.Repository, "main", "backups", b.ID, "base.tar")
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	// The top-level PG_VERSION's header starts at a 512-byte boundary with its
	// name; its content follows the header.
	i := 0
	for i = 0; i < len(data); i += 512 {
		if bytes.HasPrefix(data[i:], []byte("PG_VERSION\x00")) {
			break
		}
	}
	if i >= len(data) {
		t.Fatal("no PG_VERSION in base.tar")
	}
	copy(data[i+512:], "99")
	if err := os.WriteFile(archive, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "--config", conf, "verify", "--backup", b.ID)
	if err == nil || !strings.Contains(out, "FAILED") || !strings.Contains(out, "PG_VERSION has CRC32C checksum") {
		t.Fatalf("verify of a damaged backup: %v\n%s", err, out)
	}
}

// TestBackupOptionsFollowTheConfiguration: where a backup is compressed, at
// which level and on how many workers comes from the server's configuration.
func TestBackupOptionsFollowTheConfiguration(t *testing.T) {
	for _, tc := range []struct {
		conf string
		want basebackup.Compression
	}{
		{"", basebackup.Compression{Method: "zstd", Level: 1, Where: "auto"}},
		{"compression_level = 2\n[server.backup]\nworkers = 3\n", basebackup.Compression{Method: "zstd", Level: 2, Workers: 3, Where: "auto"}},
		{"[server.backup]\ncompress_on = \"server\"\nworkers = 2\n", basebackup.Compression{Method: "zstd", Level: 1, Workers: 2, Where: "server"}},
		{"[server.backup]\ncompress_on = \"hub\"\n", basebackup.Compression{Method: "zstd", Level: 1, Where: "hub"}},
		{"[server.backup]\ncompress_on = \"auto\"\n", basebackup.Compression{Method: "zstd", Level: 1, Where: "auto"}},
		{"compression = \"none\"\n", basebackup.Compression{Method: "none", Level: 1, Where: "auto"}},
	} {
		cfg, err := config.Parse("repository = \"/r\"\n[[server]]\nname = \"main\"\nconninfo = \"host=db1\"\n" + tc.conf)
		if err != nil {
			t.Fatalf("%q: %v", tc.conf, err)
		}
		if got := backupOptions(&cfg.Servers[0], nil, nil).Compression; got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.conf, got, tc.want)
		}
	}
}

// TestShowBackupSaysWhereItWasCompressed: show-backup tells where the
// archives were compressed, as the catalog recorded it, in its text and JSON,
// and says nothing of it for a backup that does not record it.
func TestShowBackupSaysWhereItWasCompressed(t *testing.T) {
	for _, tc := range []struct {
		on, want string
	}{
		{"server", "(zstd, compressed by the server)"},
		{"hub", "(zstd, compressed by the hub)"},
		{"", "(zstd)"},
	} {
		b := catalog.Backup{ID: "20261203T120000Z", Kind: catalog.KindBase, State: catalog.StateDone, Compression: "zstd",
			OriginalSize: 1 << 30, StoredSize: 1 << 26, Files: []catalog.BackupFile{
				{Name: "base.tar.zst", Size: 1 << 30, StoredSize: 1 << 26, Compression: "zstd", CompressedOn: tc.on},
				{Name: basebackup.ManifestName, Size: 1000, StoredSize: 1000, Compression: "none"},
			}}
		d := detailOf("main", b)
		if d.CompressedOn != tc.on {
			t.Errorf("%q: detail says compressed on %q", tc.on, d.CompressedOn)
		}
		var out strings.Builder
		if err := printDetail(&out, d); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("%q: show-backup says\n%s\nwant %q in it", tc.on, out.String(), tc.want)
		}
	}
}
