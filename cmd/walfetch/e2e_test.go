package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub"
	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/stream"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

// e2e is a primary streamed into a hub repository by the real receiver
// (stream.Receiver, in this process), and a hub serving that repository on
// a real port that can be stopped and started again.
type e2e struct {
	t        *testing.T
	primary  *pgtest.Cluster
	cat      *catalog.Catalog
	repo     *repository.Repository
	cfg      *config.Config
	receiver *stream.Receiver
	url      string
	stop     context.CancelFunc
	done     chan error
}

func newE2E(t *testing.T, segMB int) *e2e {
	t.Helper()
	ctx := context.Background()
	primary := pgtest.NewPrimary(t, "primary", pgtest.Options{SegmentSizeMB: segMB})
	dir := t.TempDir()
	repo, err := repository.OpenLocal(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	cat := repo.Catalog
	port := pgtest.FreePort(t)
	cfg, err := config.Parse(fmt.Sprintf(`repository = %q
[hub]
listen = "127.0.0.1:%d"
read_tokens = [%q]
[[server]]
name = "main"
conninfo = %q
status_interval = "1s"
`, dir, port, testToken, primary.ConnString("")))
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, primary: primary, cat: cat, repo: repo, cfg: cfg, url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	e.receiver = stream.NewReceiver(stream.Options{Server: &cfg.Servers[0], Repo: repo,
		Log: slog.New(slog.DiscardHandler)})
	recvCtx, stopReceiver := context.WithCancel(ctx)
	received := make(chan error, 1)
	go func() { received <- e.receiver.Run(recvCtx) }()
	t.Cleanup(func() {
		stopReceiver()
		if err := <-received; err != nil {
			t.Errorf("receiver: %v", err)
		}
	})
	// Base backups taken from now on find their WAL in the hub.
	pgtest.WaitFor(t, 60*time.Second, "the receiver to stream", func() bool { return e.receiver.State().State == "streaming" })
	e.startHub()
	t.Cleanup(e.stopHub)
	return e
}

// holds reports whether the hub's catalog has the segment.
func (e *e2e) holds(name string) bool {
	srv, err := e.cat.ServerByName(context.Background(), "main")
	if err != nil {
		return false
	}
	_, err = e.cat.Segment(context.Background(), srv.ID, name)
	return err == nil
}

func (e *e2e) startHub() {
	e.t.Helper()
	srv, err := hub.New(hub.Options{Config: e.cfg, Repo: e.repo, Log: slog.New(slog.DiscardHandler),
		Status: func(context.Context, string) (any, error) { return e.receiver.State(), nil },
		// As the daemon does: a .partial only up to what the receiver
		// wrote (a recycled one holds an older segment's WAL past it).
		Partial: func(ctx context.Context, _, name string) (hub.PartialFile, int64, error) {
			f, err := e.receiver.OpenPartial(ctx, name)
			if err != nil {
				return nil, 0, err
			}
			return f, f.Size, nil
		}})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.stop, e.done = cancel, make(chan error, 1)
	go func() { e.done <- srv.Run(ctx) }()
	pgtest.WaitFor(e.t, 30*time.Second, "the hub to listen", func() bool {
		resp, err := http.Get(e.url + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
}

func (e *e2e) stopHub() {
	if e.stop == nil {
		return
	}
	e.stop()
	if err := <-e.done; err != nil {
		e.t.Errorf("hub: %v", err)
	}
	e.stop = nil
}

func (e *e2e) restoreCommand(extra string) string {
	return fmt.Sprintf("restore_command = '%s --url %s --server main --token %s --idle-exit 5s %s %%f %%p'",
		walfetchBin, e.url, testToken, extra)
}

// backlog writes the table backlog in n steps of 1 MiB segments, a WAL
// switch after each, and waits until the hub holds the last segment. It
// returns how many segments the backlog spans, and an LSN in its last: a
// standby that replayed up to it has the whole table.
func (e *e2e) backlog(n int) (int, walname.LSN) {
	from := e.primary.CurrentLSN()
	e.primary.Query(fmt.Sprintf(`CREATE TABLE backlog (x int, pad text);
		DO $$ BEGIN FOR i IN 1..%d LOOP
			INSERT INTO backlog SELECT i, repeat('b', 500) FROM generate_series(1, 400);
			PERFORM pg_switch_wal();
		END LOOP; END $$`, n))
	end := e.switchAndMark()
	last := walname.SegmentName(e.primary.TimeLine(), walname.SegmentOf(end, 1<<20), 1<<20)
	pgtest.WaitFor(e.t, 180*time.Second, "the hub to hold "+last, func() bool { return e.holds(last) })
	return int(walname.SegmentOf(end, 1<<20) - walname.SegmentOf(from, 1<<20)), end
}

// switchAndMark ends the current segment and returns an LSN inside it: once a
// standby has replayed up to it, it has everything written before the call.
func (e *e2e) switchAndMark() walname.LSN {
	lsn := e.primary.CurrentLSN()
	e.primary.SwitchWAL()
	return lsn
}

func sameData(t *testing.T, a, b *pgtest.Cluster, queries ...string) {
	t.Helper()
	for _, q := range queries {
		if x, y := a.Query(q), b.Query(q); x != y {
			t.Errorf("%s: %s has %q, %s has %q", q, a.Name, x, b.Name, y)
		}
	}
}

func TestArchiveOnlyStandbyFollowsPrimaryUnderLoad(t *testing.T) {
	t.Parallel()
	e := newE2E(t, 1)
	e.primary.PgbenchInit(5)
	standby := e.primary.NewStandby("standby", pgtest.StandbyOptions{NoStream: true,
		Conf: []string{e.restoreCommand("--prefetch 8 --parallel 4")}})
	start := standby.CurrentLSN()
	e.primary.PgbenchFor(4, 20*time.Second)
	if now := standby.CurrentLSN(); now <= start {
		t.Errorf("the standby did not replay anything while pgbench ran (at %s)", now)
	}
	standby.WaitReplay(e.switchAndMark(), 180*time.Second)
	sameData(t, e.primary, standby,
		"SELECT count(*), sum(abalance) FROM pgbench_accounts",
		"SELECT count(*), sum(delta) FROM pgbench_history",
		"SELECT sum(tbalance) FROM pgbench_tellers")

	// The hub's status route reports the receiver that fed it.
	c, err := client.New(client.Options{URL: e.url, Server: "main", Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := c.Status(context.Background())
	if err != nil || !strings.Contains(string(raw), `"state":"streaming"`) {
		t.Errorf("status: %s, %v", raw, err)
	}
}

func TestBacklogOf200SegmentsReplaysToTheEnd(t *testing.T) {
	t.Parallel()
	e := newE2E(t, 1)
	standby := e.primary.NewStandby("standby", pgtest.StandbyOptions{NoStream: true, NoStart: true,
		Conf: []string{e.restoreCommand("")}})
	segments, end := e.backlog(210)
	if segments < 200 {
		t.Fatalf("the backlog is only %d segments", segments)
	}
	standby.Start()
	standby.WaitReplay(end, 300*time.Second)
	sameData(t, e.primary, standby, "SELECT count(*), sum(x) FROM backlog")
}

// TestBacklogReplaysThroughTheShellsSpoolHits: a standby whose
// restore_command is the line walfetch --print-restore-command prints
// (with walfetch-take, which lies beside walfetch here; and the line with mv
// instead) replays a backlog of 1 MiB segments to the end, with the
// primary's data. Most segments are taken from the spool in the shell's
// process, no walfetch started (walfetch here is a script that counts its
// calls, then runs walfetch), the prefetcher following recovery by the
// renames out of its spool alone; and the shell's link leaves with the
// prefetcher, which exits once recovery stops asking.
func TestBacklogReplaysThroughTheShellsSpoolHits(t *testing.T) {
	t.Parallel()
	for _, form := range []string{walfetch.TakeProgram, "mv"} {
		t.Run(form, func(t *testing.T) {
			t.Parallel()
			backlogThroughShellHits(t, form == "mv")
		})
	}
}

func backlogThroughShellHits(t *testing.T, mv bool) {
	e := newE2E(t, 1)
	dir := pgtest.TempDir(t, "counted")
	calls := filepath.Join(dir, "calls")
	counted := filepath.Join(dir, "walfetch")
	if err := os.WriteFile(counted, []byte("#!/bin/sh\necho \"$*\" >>"+calls+"\nexec "+walfetchBin+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(calls, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, dir)
	// The mv form is what a walfetch installed without walfetch-take prints:
	// the same programs, linked into a directory without it.
	bin := walfetchBin
	if mv {
		bare := pgtest.TempDir(t, "bare")
		bin = filepath.Join(bare, "walfetch")
		for _, n := range []string{"walfetch", walfetch.NetProgram} {
			if err := os.Link(filepath.Join(filepath.Dir(walfetchBin), n), filepath.Join(bare, n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	out, err := exec.Command(bin, "--print-restore-command", "--url", e.url, "--server", "main",
		"--token", testToken, "--idle-exit", "3s").Output()
	if err != nil || !strings.HasPrefix(string(out), "restore_command = ") {
		t.Fatalf("walfetch --print-restore-command: %q, %v", out, err)
	}
	line := strings.TrimSpace(string(out))
	if takes := strings.Contains(line, "exec "+filepath.Join(filepath.Dir(bin), walfetch.TakeProgram)+" "); takes == mv {
		t.Fatalf("walfetch --print-restore-command (mv form %v): %s", mv, line)
	}
	line = strings.ReplaceAll(line, bin+" ", counted+" ")
	standby := e.primary.NewStandby("standby", pgtest.StandbyOptions{NoStream: true, NoStart: true, Conf: []string{line}})
	segments, end := e.backlog(120)
	standby.Start()
	standby.WaitReplay(end, 300*time.Second)
	sameData(t, e.primary, standby, "SELECT count(*), sum(x) FROM backlog")
	b, _ := os.ReadFile(calls)
	called := strings.Count(string(b), "\n")
	t.Logf("%d segments replayed, walfetch called %d times", segments, called)
	if called > segments/4 {
		t.Errorf("walfetch called %d times for %d segments, want most taken by the shell:\n%s", called, segments, b)
	}
	spool := filepath.Join(standby.DataDir, "pg_wal", "walfetch-spool")
	links := func() (n []string) {
		entries, _ := os.ReadDir(spool)
		for _, e := range entries {
			if e.Type()&os.ModeSymlink != 0 {
				n = append(n, e.Name())
			}
		}
		return n
	}
	if l := links(); len(l) != 1 {
		t.Errorf("links in the spool while the prefetcher runs: %v, want one", l)
	}
	// A standby asks for the next segment every few seconds, which keeps the
	// prefetcher alive; stopped, it asks no more.
	standby.Stop("fast")
	pgtest.WaitFor(t, 60*time.Second, "the idle prefetcher to remove its link", func() bool { return len(links()) == 0 })
}

func TestStandbyRidesOutHubOutage(t *testing.T) {
	t.Parallel()
	e := newE2E(t, 1)
	e.primary.PgbenchInit(1)
	standby := e.primary.NewStandby("standby", pgtest.StandbyOptions{NoStream: true,
		Conf: []string{e.restoreCommand("")}})
	standby.WaitReplay(e.switchAndMark(), 120*time.Second)

	e.stopHub()
	e.primary.GenerateWAL(8)
	during := e.switchAndMark()
	pgtest.WaitFor(t, 120*time.Second, "walfetch to report the hub unreachable in the standby's log", func() bool {
		log, _ := os.ReadFile(standby.LogFile)
		return strings.Contains(string(log), "hub unreachable")
	})
	if got := standby.CurrentLSN(); got >= during {
		t.Fatalf("the standby replayed %s while the hub was down (WAL it cannot have had)", got)
	}
	if r := standby.Query("SELECT pg_is_in_recovery()"); r != "t" {
		t.Fatalf("the standby left recovery while the hub was down: %s", r)
	}

	e.startHub()
	standby.WaitReplay(during, 180*time.Second)
	sameData(t, e.primary, standby, "SELECT count(*), sum(x) FROM walfill", "SELECT count(*) FROM pgbench_accounts")
}

func TestPointInTimeRecoveryWithHubDownStopsInsteadOfEndingEarly(t *testing.T) {
	t.Parallel()
	e := newE2E(t, 1)
	e.primary.PgbenchInit(1)
	restore := e.primary.NewStandby("pitr", pgtest.StandbyOptions{NoStream: true, NoStart: true,
		Conf: []string{e.restoreCommand("--pitr-retry 3s")}})
	os.Remove(filepath.Join(restore.DataDir, "standby.signal"))
	signal := filepath.Join(restore.DataDir, "recovery.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, signal)

	e.primary.Query("CREATE TABLE after_backup AS SELECT g FROM generate_series(1, 1000) g")
	mark := e.switchAndMark()
	last := walname.SegmentName(e.primary.TimeLine(), walname.SegmentOf(mark, 1<<20), 1<<20)
	pgtest.WaitFor(t, 120*time.Second, "the hub to hold "+last, func() bool { return e.holds(last) })

	e.stopHub()
	pgtest.Run(t, pgtest.ServerCommand(t, "pg_ctl", "-D", restore.DataDir, "-l", restore.LogFile, "-W", "start"))
	pgtest.WaitFor(t, 120*time.Second, "PostgreSQL to stop recovery", func() bool {
		log, _ := os.ReadFile(restore.LogFile)
		_, err := os.Stat(filepath.Join(restore.DataDir, "postmaster.pid"))
		return strings.Contains(string(log), "database system is shut down") && os.IsNotExist(err)
	})
	log, _ := os.ReadFile(restore.LogFile)
	if !strings.Contains(string(log), "stopping point-in-time recovery") {
		t.Errorf("the log does not say why recovery stopped:\n%s", log)
	}
	for _, early := range []string{"archive recovery complete", "selected new timeline ID"} {
		if strings.Contains(string(log), early) {
			t.Fatalf("recovery ended early while the hub was down (%q in the log)", early)
		}
	}

	e.startHub()
	restore.Start()
	restore.WaitFor(180*time.Second, "recovery to complete", func() bool {
		r, err := restore.TryQuery("SELECT pg_is_in_recovery()")
		return err == nil && r == "f"
	})
	if got := restore.Query("SELECT count(*) FROM after_backup"); got != "1000" {
		t.Errorf("after recovery, after_backup has %s rows, want 1000", got)
	}
}
