package stream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/replication"
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

// countingReader counts the reads made of it.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// The receiver's connection reads WAL that waits in the socket in large
// pieces: a run of 128 kB XLogData messages (what a walsender sends while
// the receiver catches up) takes a read per few messages, not two or three
// per message as with pgproto3's own 8 kB buffer.
func TestReceiverReadsWaitingWALInLargePieces(t *testing.T) {
	cfg, err := config.Parse(`repository = "/unused"
[[server]]
name = "main"
conninfo = "host=127.0.0.1 port=1"
`)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReceiver(Options{Server: &cfg.Servers[0]})
	pcfg, err := replication.ParseConfig(cfg.Servers[0].Conninfo, r.connOptions())
	if err != nil {
		t.Fatal(err)
	}
	const messages = 64
	var wire []byte
	wal := make([]byte, 128<<10)
	for i := range messages {
		data := append([]byte{pglogrepl.XLogDataByteID}, make([]byte, 24)...)
		binary.BigEndian.PutUint64(data[1:], uint64(i*len(wal)))
		data = append(data, wal...)
		if wire, err = (&pgproto3.CopyData{Data: data}).Encode(wire); err != nil {
			t.Fatal(err)
		}
	}
	in := &countingReader{r: bytes.NewReader(wire)}
	fe := pcfg.BuildFrontend(in, io.Discard)
	for i := range messages {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m, ok := msg.(*pgproto3.CopyData); !ok || len(m.Data) != 25+len(wal) {
			t.Fatalf("message %d: %T", i, msg)
		}
	}
	if max := len(wire)/(1<<20) + 1; in.reads > max {
		t.Errorf("%d messages (%d bytes) took %d reads, want at most %d", messages, len(wire), in.reads, max)
	}
}
