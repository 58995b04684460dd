package repository

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/walhub/walhub/storage"
)

// RefreshState is what a read-only hub records of its catalog refreshes, in
// its working area (storage.RefreshStateFile), so that `walhub status`,
// `walhub check` and /metrics can tell how current its catalog is without
// the daemon. It is rewritten, durably, after every refresh.
type RefreshState struct {
	PID  int    `json:"pid"`
	Host string `json:"host"`
	// IntervalSeconds is the daemon's refresh_interval when it wrote the file.
	IntervalSeconds float64 `json:"interval_seconds"`
	// RunningSince is when the refresh under way started; zero between refreshes.
	RunningSince time.Time `json:"running_since,omitzero"`
	// LastAttemptAt is when the last refresh ended, successful or not.
	LastAttemptAt time.Time `json:"last_attempt_at"`
	// LastSuccessAt is when the last successful refresh ended; zero when
	// none has succeeded yet.
	LastSuccessAt time.Time `json:"last_success_at,omitzero"`
	// LastError is the error of the last refresh, empty when it succeeded;
	// LastErrorAt is when the last failed refresh ended (kept after a success).
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Failures counts the failed refreshes since the last successful one.
	Failures int `json:"failures"`
	// LastReport is what the last successful refresh changed.
	LastReport RefreshReport `json:"last_report"`
}

// RecordRefresh folds the outcome of one refresh that ended at now into
// prev (the state last recorded, zero when none) and returns the new state.
func RecordRefresh(prev RefreshState, now time.Time, rep RefreshReport, err error) RefreshState {
	s := prev
	s.RunningSince = time.Time{}
	s.LastAttemptAt = now.UTC()
	if err != nil {
		s.LastError, s.LastErrorAt = err.Error(), now.UTC()
		s.Failures++
		return s
	}
	s.LastSuccessAt, s.LastError, s.Failures, s.LastReport = now.UTC(), "", 0, rep
	return s
}

// WriteRefreshState writes s into the working area, durably and atomically.
func WriteRefreshState(work *storage.WorkArea, s RefreshState) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return work.WriteRefreshState(data)
}

// ReadRefreshState reads the refresh state last written. It returns an error
// wrapping os.ErrNotExist when no refresh was ever recorded.
func ReadRefreshState(work *storage.WorkArea) (RefreshState, error) {
	data, err := work.ReadRefreshState()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return RefreshState{}, fmt.Errorf("no catalog refresh recorded in %s: %w", work.Dir(), err)
		}
		return RefreshState{}, err
	}
	var s RefreshState
	if err := json.Unmarshal(data, &s); err != nil {
		return RefreshState{}, fmt.Errorf("read refresh state in %s: %w", work.Dir(), err)
	}
	return s, nil
}
