package status

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/stream"
	"github.com/walhub/walhub/test/pgtest"
)

// healthyChecks are the checks a streaming receiver on a fresh primary passes
// (there is no backup yet, so the backup checks are left out).
var healthyChecks = []string{"connection", "replication connection", "wal_level", "max_wal_senders",
	"replication slot", "receiver", "wal continuity", "last wal age", "system id"}

// waitHealthy waits until every healthy check is OK, generating WAL so that
// segments get stored.
func waitHealthy(t *testing.T, src Source, p *pgtest.Cluster) {
	t.Helper()
	ctx := context.Background()
	var results []Result
	pgtest.WaitFor(t, 120*time.Second, "every check but the backup ones OK", func() bool {
		p.SwitchWAL()
		var err error
		if _, results, err = src.Check(ctx, "main", DefaultThresholds); err != nil {
			t.Fatal(err)
		}
		for _, name := range healthyChecks {
			if result(t, results, name).Level != OK {
				return false
			}
		}
		return true
	})
}

// waitReceiverCritical waits, for at most a minute, until the receiver and
// slot checks are CRITICAL, and reports how long it took.
func waitReceiverCritical(t *testing.T, src Source, since time.Time) {
	t.Helper()
	var results []Result
	pgtest.WaitFor(t, 60*time.Second, "receiver and slot CRITICAL", func() bool {
		_, results, _ = src.Check(context.Background(), "main", DefaultThresholds)
		return result(t, results, "receiver").Level == Critical && result(t, results, "replication slot").Level == Critical
	})
	t.Logf("CRITICAL %s after the receiver ended: receiver: %s; slot: %s", time.Since(since).Round(time.Millisecond),
		result(t, results, "receiver").Message, result(t, results, "replication slot").Message)
}

// startReceiver runs the hub's receiver for "main" in this process; the
// returned function stops it (it is also called when the test ends).
func startReceiver(t *testing.T, src Source) (stop func()) {
	t.Helper()
	store, err := storage.NewLocalStore(src.Work.Dir())
	if err != nil {
		t.Fatal(err)
	}
	rcv := stream.NewReceiver(stream.Options{Server: &src.Config.Servers[0], Repo: repository.New(store, src.Work, src.Catalog),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rcv.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("receiver Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestRealReceiverStoppedTurnsCheckCritical(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{SegmentSizeMB: 1})
	src := newSource(t, t.TempDir(), p.ConnString(""))
	stop := startReceiver(t, src)
	waitHealthy(t, src, p)
	stop()
	waitReceiverCritical(t, src, time.Now())
}

func TestKilledWalhubServeTurnsCheckCritical(t *testing.T) {
	t.Parallel()
	bin, err := pgtest.BuildCommand(t.TempDir(), "walhub")
	if err != nil {
		t.Fatal(err)
	}
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{SegmentSizeMB: 1})
	repo := t.TempDir()
	listen := fmt.Sprintf("hub.listen = \"127.0.0.1:%d\"", pgtest.FreePort(t))
	src := newSource(t, repo, p.ConnString(""))
	configPath := filepath.Join(t.TempDir(), "walhub.toml")
	text := fmt.Sprintf("repository = %q\n%s\n[[server]]\nname = \"main\"\nconninfo = %q\nstatus_interval = \"1s\"\n",
		repo, listen, p.ConnString(""))
	if err := os.WriteFile(configPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := exec.Command(bin, "serve", "--init", "--config", configPath)
	logPath := filepath.Join(t.TempDir(), "serve.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	serve.Stdout, serve.Stderr = logFile, logFile
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	logFile.Close()
	t.Cleanup(func() {
		if serve.ProcessState == nil {
			serve.Process.Kill()
			serve.Wait()
		}
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("walhub serve log:\n%s", data)
		}
	})

	waitHealthy(t, src, p)
	if doc := build(t, src); doc.Receiver.PID != serve.Process.Pid {
		t.Fatalf("receiver pid %d, walhub serve is %d", doc.Receiver.PID, serve.Process.Pid)
	}
	serve.Process.Kill() // SIGKILL: no goodbye in the state file
	serve.Wait()
	waitReceiverCritical(t, src, time.Now())
}

// TestRestartedReceiverShowsStoredPositionWhileServerIsDown restarts the
// receiver while PostgreSQL is down: before it ever connects, status shows
// the position the hub holds (not 0/0), the lag as of the server's last
// word, and the receiver check says WARNING (a recent outage), not CRITICAL.
func TestRestartedReceiverShowsStoredPositionWhileServerIsDown(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{SegmentSizeMB: 1})
	src := newSource(t, t.TempDir(), p.ConnString(""))
	stop := startReceiver(t, src)
	waitHealthy(t, src, p)
	stop()
	before := build(t, src).Receiver
	if before.FlushedLSN == 0 || before.LastSegment == "" {
		t.Fatalf("after a clean stop: %+v", before)
	}
	p.Stop("fast")

	startReceiver(t, src)
	var doc *Document
	pgtest.WaitFor(t, 60*time.Second, "the restarted receiver to fail to connect", func() bool {
		doc = build(t, src)
		return doc.Receiver.Running && doc.Receiver.LastError != ""
	})
	rc := doc.Receiver
	t.Logf("restarted: state %s, flushed %s, server %s, lag %d, last segment %s: %s", rc.State, rc.FlushedLSN, rc.ServerLSN,
		rc.LagBytes, rc.LastSegment, rc.LastError)
	// The restart keeps the .partial up to its last whole record: at most a
	// record less than the last session reported.
	if rc.FlushedLSN > before.FlushedLSN || rc.FlushedLSN+8192 <= before.FlushedLSN || rc.ReceivedLSN != rc.FlushedLSN {
		t.Errorf("flushed %s received %s, want %s (what the hub holds)", rc.FlushedLSN, rc.ReceivedLSN, before.FlushedLSN)
	}
	if rc.LastSegment != before.LastSegment || rc.ServerLSN < before.FlushedLSN || rc.LagBytes != int64(rc.ServerLSN-rc.FlushedLSN) ||
		rc.LagBytes > 1<<20 {
		t.Errorf("last segment %s (want %s), server %s, lag %d", rc.LastSegment, before.LastSegment, rc.ServerLSN, rc.LagBytes)
	}
	_, results, err := src.Check(context.Background(), "main", DefaultThresholds)
	if err != nil {
		t.Fatal(err)
	}
	if r := result(t, results, "receiver"); r.Level != Warning {
		t.Errorf("receiver check %s: %s, want WARNING while the outage is recent", r.Level, r.Message)
	}
}
