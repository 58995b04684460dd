package status

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
)

// Refresh is how current a read-only hub's catalog is: the outcome of the
// daemon's last refreshes from the repository (repository.RefreshState),
// read from the working area.
type Refresh struct {
	// State is "ok" (the last refresh succeeded), "failing" (it failed) or
	// "never" (none has succeeded, or none is recorded: is walhub serve running?).
	State string `json:"state"`
	// IntervalSeconds is the hub's refresh_interval.
	IntervalSeconds float64   `json:"interval_seconds"`
	LastAttemptAt   time.Time `json:"last_attempt_at,omitzero"`
	LastSuccessAt   time.Time `json:"last_success_at,omitzero"`
	// LastSuccessAgeSeconds is how long ago the last successful refresh
	// ended; null when none has.
	LastSuccessAgeSeconds *float64 `json:"last_success_age_seconds"`
	// LastError is the error of the last refresh, when it failed.
	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitzero"`
	LastErrorAgeSeconds float64   `json:"last_error_age_seconds,omitempty"`
	// RunningSince is when the refresh under way started, when the daemon
	// that started it is alive (checked when it runs on this host).
	RunningSince time.Time `json:"running_since,omitzero"`
	// Failures counts the failed refreshes since the last successful one.
	Failures int    `json:"failures"`
	PID      int    `json:"pid,omitempty"`
	Host     string `json:"host,omitempty"`
	// Error says why the refresh state could not be read (other than none
	// being recorded yet).
	Error string `json:"error,omitempty"`
}

// notAsked is what a read-only hub's document says of the server itself.
const notAsked = "not asked: a read-only hub (read_only = true) has no connection to the server; the hub that writes the repository has"

// buildFollowed builds the document of a server a read-only hub's catalog
// follows: what the catalog and the working area say, nothing from
// PostgreSQL or a receiver.
func (s Source) buildFollowed(ctx context.Context, server string) (*Document, error) {
	if _, err := s.Catalog.ServerByName(ctx, server); err != nil {
		if errors.Is(err, catalog.ErrNotFound) {
			return nil, fmt.Errorf("%w: no server %q in the repository this read-only hub follows", ErrUnknownServer, server)
		}
		return nil, err
	}
	now := time.Now().UTC()
	srv := &config.Server{Name: server}
	doc := &Document{Schema: Schema, Server: server, GeneratedAt: now, Clients: []Client{}, ReadOnly: true,
		Postgres: Postgres{Error: notAsked},
		Receiver: Receiver{State: "absent", NotRunning: "a read-only hub runs no receiver: the hub that writes the repository does"}}
	if err := s.fromCatalog(ctx, srv, now, doc); err != nil {
		return nil, err
	}
	doc.Lock = readLock(s.Work, server)
	doc.Repository = diskSpace(s.Work)
	doc.Refresh = readRefresh(s.Work, s.Config.RefreshInterval.Duration, now)
	return doc, nil
}

// readRefresh judges the refresh state recorded in the working area.
func readRefresh(work *storage.WorkArea, interval time.Duration, now time.Time) *Refresh {
	r := &Refresh{State: "never", IntervalSeconds: interval.Seconds()}
	st, err := repository.ReadRefreshState(work)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.Error = err.Error()
		}
		return r
	}
	r.LastAttemptAt, r.Failures, r.PID, r.Host = st.LastAttemptAt.UTC(), st.Failures, st.PID, st.Host
	if !st.RunningSince.IsZero() && (st.Host != hostname || st.PID <= 0 || processAlive(st.PID)) {
		r.RunningSince = st.RunningSince.UTC()
	}
	if !st.LastSuccessAt.IsZero() {
		r.State, r.LastSuccessAt = "ok", st.LastSuccessAt.UTC()
		a := now.Sub(st.LastSuccessAt).Seconds()
		r.LastSuccessAgeSeconds = &a
	}
	if st.LastError != "" {
		r.LastError, r.LastErrorAt = st.LastError, st.LastErrorAt.UTC()
		r.LastErrorAgeSeconds = now.Sub(st.LastErrorAt).Seconds()
		if !r.LastSuccessAt.IsZero() {
			r.State = "failing"
		}
	}
	return r
}
