package stream

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/repository"
)

func TestSecondReceiverForTheSameServerIsRefused(t *testing.T) {
	repo, err := repository.OpenLocal(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	cfg, err := config.Parse(`repository = "/unused"
[[server]]
name = "main"
conninfo = "host=127.0.0.1 port=1 connect_timeout=1"
status_interval = "1s"
`)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1}))
	first := NewReceiver(Options{Server: &cfg.Servers[0], Repo: repo, Log: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for first.State().State == "starting" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	before, err := ReadState(repo.Work, "main")
	if err != nil {
		t.Fatal(err)
	}

	second := NewReceiver(Options{Server: &cfg.Servers[0], Repo: repo, Log: log})
	err = second.Run(context.Background())
	var held *lock.HeldError
	if !errors.As(err, &held) || held.Holder.PID != os.Getpid() {
		t.Fatalf("second receiver: %v, want a refusal naming the holder", err)
	}
	if after, _ := ReadState(repo.Work, "main"); after.PID != before.PID || after.State == "stopped" {
		t.Errorf("the refused receiver touched the state file: %+v", after)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("first receiver: %v", err)
	}
}
