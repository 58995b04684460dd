package stream

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/walhub/walhub/walname"
)

// State is what a running receiver tells the world about itself. The daemon
// writes it to <repo>/<server>/receiver.json on every change of state and at
// least every status interval, so `walhub status` and `walhub check` can read
// it without the hub; a stale UpdatedAt or a dead PID means the receiver is not
// running, whatever the file says.
type State struct {
	Server string `json:"server"`
	PID    int    `json:"pid"`
	Host   string `json:"host"`
	// State is "starting", "connecting", "streaming", "waiting" (backoff after an
	// error), "stopped" or "failed" (a condition that needs a person).
	State string `json:"state"`
	// LastError is the cause of the last failure, empty while healthy.
	LastError      string           `json:"last_error,omitempty"`
	ConnectedSince time.Time        `json:"connected_since,omitzero"`
	SystemID       string           `json:"system_id,omitempty"`
	SegmentSize    uint64           `json:"segment_size,omitempty"`
	TimeLine       walname.TimeLine `json:"timeline,omitempty"`
	// ReceivedLSN is the end of the WAL written to the .partial (last byte + 1),
	// FlushedLSN the end of what is fsynced and reported to the server as flushed.
	ReceivedLSN walname.LSN `json:"received_lsn"`
	FlushedLSN  walname.LSN `json:"flushed_lsn"`
	// ServerLSN is the server's WAL end as of its last keepalive or message.
	ServerLSN walname.LSN `json:"server_lsn"`
	// LastMessageAt is when the server last sent anything (data or keepalive).
	LastMessageAt time.Time `json:"last_message_at,omitzero"`
	// LastSegment is the newest completed segment stored, and when.
	LastSegment   string    `json:"last_segment,omitempty"`
	LastSegmentAt time.Time `json:"last_segment_at,omitzero"`
	// Partial is the .partial segment being received.
	Partial   string    `json:"partial,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// StatePath is where the receiver of server keeps its State, relative to the
// repository root.
func StatePath(server string) string { return path.Join(server, "receiver.json") }

// WriteState writes s atomically under the repository root.
func WriteState(repoRoot string, s State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	final := filepath.Join(repoRoot, filepath.FromSlash(StatePath(s.Server)))
	if err := os.MkdirAll(filepath.Dir(final), 0o750); err != nil {
		return fmt.Errorf("write receiver state: %w", err)
	}
	tmp := final + ".tmp"
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		return fmt.Errorf("write receiver state: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("write receiver state: %w", err)
	}
	return nil
}

// ReadState reads the last State written for server. It returns an error
// wrapping os.ErrNotExist when no receiver ever ran.
func ReadState(repoRoot, server string) (State, error) {
	data, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(StatePath(server))))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return State{}, fmt.Errorf("no receiver has run for %s: %w", server, err)
		}
		return State{}, fmt.Errorf("read receiver state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, fmt.Errorf("read receiver state of %s: %w", server, err)
	}
	return s, nil
}
