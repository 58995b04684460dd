package status

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/stream"
	"github.com/walhub/walhub/walname"
)

// Receiver is the hub's WAL receiver for the server, from its state file,
// judged: Running is true only when the process is alive (checked when it runs
// on this host) and the file was refreshed recently.
type Receiver struct {
	Running bool `json:"running"`
	// NotRunning says why Running is false.
	NotRunning string `json:"not_running,omitempty"`
	// State is the receiver's own word ("streaming", "connecting", "waiting",
	// "stopped", "failed"), or "absent" when no receiver ever ran.
	State     string    `json:"state"`
	LastError string    `json:"last_error,omitempty"`
	PID       int       `json:"pid,omitempty"`
	Host      string    `json:"host,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// UpdatedAgeSeconds is how old the state file is.
	UpdatedAgeSeconds float64 `json:"updated_age_seconds"`
	// StaleAfterSeconds is the age beyond which the file is not believed (3× status_interval).
	StaleAfterSeconds float64          `json:"stale_after_seconds"`
	ConnectedSince    time.Time        `json:"connected_since,omitzero"`
	SystemID          string           `json:"system_id,omitempty"`
	TimeLine          walname.TimeLine `json:"timeline,omitempty"`
	ReceivedLSN       walname.LSN      `json:"received_lsn"`
	FlushedLSN        walname.LSN      `json:"flushed_lsn"`
	// ServerLSN is the server's WAL end: from PostgreSQL when reachable, else
	// as the receiver last heard it.
	ServerLSN walname.LSN `json:"server_lsn"`
	// LagBytes is ServerLSN - FlushedLSN: WAL the server has and the hub does not hold durably.
	LagBytes int64 `json:"lag_bytes"`
	// LagSeconds is the server's measure of the receiver's flush lag
	// (pg_stat_replication.flush_lag of the hub's connection); absent when the
	// server cannot be asked or the receiver is not connected.
	LagSeconds            *float64  `json:"lag_seconds"`
	LastMessageAt         time.Time `json:"last_message_at,omitzero"`
	LastSegment           string    `json:"last_segment,omitempty"`
	LastSegmentAt         time.Time `json:"last_segment_at,omitzero"`
	LastSegmentAgeSeconds float64   `json:"last_segment_age_seconds,omitempty"`
	Partial               string    `json:"partial,omitempty"`
}

// staleAfter is how old a state file may be and still be believed: the
// receiver rewrites it at least every status interval.
func staleAfter(srv *config.Server) time.Duration {
	return 3 * srv.StatusInterval.Duration
}

// ReadReceiver judges the receiver of srv now, from its state file in the
// working area.
func ReadReceiver(work *storage.WorkArea, srv *config.Server) Receiver {
	return readReceiver(work, srv, time.Now())
}

func readReceiver(work *storage.WorkArea, srv *config.Server, now time.Time) Receiver {
	r := Receiver{StaleAfterSeconds: staleAfter(srv).Seconds()}
	st, err := stream.ReadState(work, srv.Name)
	if err != nil {
		r.State = "absent"
		if errors.Is(err, os.ErrNotExist) {
			r.NotRunning = "no receiver has run for this server (is walhub serve running?)"
		} else {
			r.NotRunning = err.Error()
		}
		return r
	}
	r.State, r.LastError, r.PID, r.Host = st.State, st.LastError, st.PID, st.Host
	r.UpdatedAt, r.ConnectedSince, r.SystemID, r.TimeLine = st.UpdatedAt.UTC(), st.ConnectedSince.UTC(), st.SystemID, st.TimeLine
	r.ReceivedLSN, r.FlushedLSN, r.ServerLSN = st.ReceivedLSN, st.FlushedLSN, st.ServerLSN
	r.LastMessageAt, r.LastSegment, r.LastSegmentAt, r.Partial = st.LastMessageAt.UTC(), st.LastSegment, st.LastSegmentAt.UTC(), st.Partial
	r.UpdatedAgeSeconds = now.Sub(st.UpdatedAt).Seconds()
	if !st.LastSegmentAt.IsZero() {
		r.LastSegmentAgeSeconds = now.Sub(st.LastSegmentAt).Seconds()
	}
	switch {
	case st.State == "stopped":
		r.NotRunning = "the receiver stopped"
	case st.Host == hostname && st.PID > 0 && !processAlive(st.PID):
		r.NotRunning = fmt.Sprintf("process %d is gone (its state file says %q)", st.PID, st.State)
	case now.Sub(st.UpdatedAt) > staleAfter(srv):
		r.NotRunning = fmt.Sprintf("its state file was last written %s ago (more than 3× status_interval %s): the process is hung or gone",
			age(now.Sub(st.UpdatedAt)), srv.StatusInterval.Duration)
	default:
		r.Running = true
	}
	return r
}

// processAlive tells whether a process with this PID exists on this host.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// age formats a duration for people: "3s", "4m10s", "2h5m", "3d4h".
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	days := int(d / (24 * time.Hour))
	return fmt.Sprintf("%dd%dh", days, int((d-time.Duration(days)*24*time.Hour)/time.Hour))
}
