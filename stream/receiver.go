package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// Options configure a Receiver.
type Options struct {
	// Server is the server's configuration section: conninfo, slot, create_slot,
	// compression and level, synchronous, application_name, status_interval.
	Server *config.Server
	// Repo is the repository: store, working area, catalog.
	Repo *repository.Repository
	Log  *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

// Reconnect backoff: the first retry after minBackoff, doubling up to maxBackoff.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// commandTimeout bounds every setup command sent to the server.
const commandTimeout = 60 * time.Second

// Receiver streams the WAL of one server into the repository.
type Receiver struct {
	o   Options
	log *slog.Logger
	m   *serverMetrics
	// files are its .partial and spare files (see partialFiles).
	files *partialFiles

	mu    sync.Mutex
	state State
	// writeMu serialises writes of the state file.
	writeMu sync.Mutex

	// walRemoved is set when the server said that WAL the receiver asked for
	// is gone; the next session records the gap and starts after it.
	walRemoved *walRemovedError
}

// NewReceiver returns a receiver for o.Server; Run starts it.
func NewReceiver(o Options) *Receiver {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	host, _ := os.Hostname()
	return &Receiver{
		o:     o,
		log:   log.With("server", o.Server.Name),
		m:     o.Metrics.forServer(o.Server.Name),
		files: newPartialFiles(workArea(o.Repo), o.Server.Name),
		state: State{Server: o.Server.Name, PID: os.Getpid(), Host: host, State: "starting"},
	}
}

// workArea is repo's working area, nil without a repository.
func workArea(repo *repository.Repository) *storage.WorkArea {
	if repo == nil {
		return nil
	}
	return repo.Work
}

// State returns a copy of the receiver's current state.
func (r *Receiver) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// update changes the state in memory; with publish it also writes the state file.
func (r *Receiver) update(publish bool, change func(*State)) {
	r.mu.Lock()
	change(&r.state)
	r.mu.Unlock()
	if publish {
		r.publish()
	}
}

// publish writes the state file with a fresh UpdatedAt.
func (r *Receiver) publish() {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	r.mu.Lock()
	r.state.UpdatedAt = time.Now().UTC()
	s := r.state
	r.mu.Unlock()
	if err := WriteState(r.o.Repo.Work, s); err != nil {
		r.log.Warn("cannot write receiver state file", "error", err)
	}
}

// failedError marks a failure that needs a person (wrong server, missing slot
// that may not be created, ...): the receiver reports the state "failed" and
// keeps retrying at the longest interval.
type failedError struct{ err error }

func (e *failedError) Error() string { return e.err.Error() }
func (e *failedError) Unwrap() error { return e.err }

// walRemovedError says the server no longer has WAL the receiver needs.
type walRemovedError struct {
	TimeLine walname.TimeLine
	At       walname.LSN
	err      error
}

func (e *walRemovedError) Error() string {
	return fmt.Sprintf("WAL from %s on timeline %d is no longer on the server: %v", e.At, e.TimeLine, e.err)
}
func (e *walRemovedError) Unwrap() error { return e.err }

// Run receives WAL until ctx is cancelled, reconnecting after every failure
// with a backoff from 1 s doubling to 30 s. When ctx is cancelled it fsyncs
// what it received, sends a last status update and returns nil. It returns an
// error at once, touching nothing, when another receiver (in this process or
// another) already runs for the same server and repository.
func (r *Receiver) Run(ctx context.Context) error {
	held, err := r.o.Repo.Work.ReceiverLock(r.o.Server.Name)
	if err != nil {
		return fmt.Errorf("receiver for %s: %w", r.o.Server.Name, err)
	}
	defer held.Release()
	prev, prevErr := ReadState(r.o.Repo.Work, r.o.Server.Name)
	r.update(true, func(s *State) { s.State = "starting" })
	if err := r.loadDurable(ctx, prev, prevErr); err != nil {
		// The first session works it out again, or says what is wrong
		// (and only then are .partial files read: partialFiles.ready).
		r.log.Warn("could not read the position the hub holds", "error", err)
	} else {
		r.files.setReady()
	}
	// Segments stored before the WAL index existed are read in the background.
	var indexing sync.WaitGroup
	defer indexing.Wait()
	indexCtx, stopIndexing := context.WithCancel(ctx)
	defer stopIndexing()
	indexing.Add(1)
	go func() {
		defer indexing.Done()
		start := time.Now()
		n, err := r.o.Repo.IndexStoredWAL(indexCtx, r.o.Server.Name, r.log)
		if err != nil && indexCtx.Err() == nil {
			r.log.Warn("WAL index: backfill stopped", "error", err)
		}
		if n > 0 {
			r.log.Info("WAL index: read the segments stored before it existed", "segments", n,
				"seconds", time.Since(start).Seconds())
		}
	}()
	heartbeatCtx, stopHeartbeat := context.WithCancel(ctx)
	var heartbeat sync.WaitGroup
	heartbeat.Add(1)
	go func() {
		defer heartbeat.Done()
		t := time.NewTicker(r.o.Server.StatusInterval.Duration)
		defer t.Stop()
		for {
			select {
			case <-heartbeatCtx.Done():
				return
			case <-t.C:
				r.publish()
			}
		}
	}()
	defer func() {
		stopHeartbeat()
		heartbeat.Wait()
		// A stopped receiver leaves no spare file behind (a crashed one's go
		// at the next start).
		r.files.dropSpares()
		r.update(true, func(s *State) { s.State = "stopped"; s.ConnectedSince = time.Time{} })
		r.log.Info("receiver stopped")
	}()

	backoff := minBackoff
	for first := true; ; first = false {
		if !first && r.m != nil {
			r.m.reconnects.Inc()
		}
		stored, err := r.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if r.m != nil && err != nil {
			r.m.errors.Inc()
		}
		if stored {
			backoff = minBackoff
		}
		var removed *walRemovedError
		if errors.As(err, &removed) {
			// Not a reason to wait: the next session starts after the gap.
			r.walRemoved = removed
			r.log.Error("WAL needed by the hub was removed from the server", "error", err)
			r.update(true, func(s *State) { s.State = "connecting"; s.LastError = err.Error() })
			continue
		}
		stateName, wait := "waiting", backoff
		var failed *failedError
		if errors.As(err, &failed) {
			stateName, wait = "failed", maxBackoff
		}
		r.log.Error("receiver failed, will retry", "error", err, "retry_in", wait)
		r.update(true, func(s *State) {
			s.State = stateName
			s.LastError = err.Error()
			s.ConnectedSince = time.Time{}
		})
		if r.m != nil {
			r.m.conn.Set(0)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}
