package stream

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// State is what a running receiver tells the world about itself. The daemon
// writes it to <work area>/<server>/receiver.json on every change of state and at
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

// WriteState writes s into the working area, atomically.
func WriteState(work *storage.WorkArea, s State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return work.WriteState(s.Server, data)
}

// ReadState reads the last State written for server. It returns an error
// wrapping os.ErrNotExist when no receiver ever ran.
func ReadState(work *storage.WorkArea, server string) (State, error) {
	data, err := work.ReadState(server)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return State{}, fmt.Errorf("no receiver has run for %s: %w", server, err)
		}
		return State{}, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, fmt.Errorf("read receiver state of %s: %w", server, err)
	}
	return s, nil
}
