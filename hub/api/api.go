// Package api is the wire format of walhub's HTTP hub: routes, headers, and
// the JSON bodies the server sends and the client reads. It imports nothing
// heavier than walname, so small clients (walfetch) can use it.
package api

import (
	"net/url"
	"strconv"
	"time"

	"github.com/walhub/walhub/walname"
)

// Version is the path prefix of every route of this API.
const Version = "/v1"

// Headers every WAL response carries.
const (
	// HeaderChecksum is the checksum of the uncompressed bytes (package checksum's format).
	HeaderChecksum = "X-Walhub-Checksum"
	// HeaderSize is the size of the uncompressed bytes.
	HeaderSize = "X-Walhub-Size"
	// HeaderSystemID is the database system identifier of the server the WAL comes from.
	HeaderSystemID = "X-Walhub-System-Id"
	// HeaderSegmentSize is the server's wal_segment_size.
	HeaderSegmentSize = "X-Walhub-Segment-Size"
	// HeaderSHA256Stored is the SHA-256 (hex) of the stored bytes of a backup file.
	HeaderSHA256Stored = "X-Walhub-Sha256-Stored"
)

// Error codes in ErrorBody.Code, for clients that must tell cases apart.
const (
	CodeNotFound      = "not_found"          // the file or backup does not exist (yet)
	CodeUnknownServer = "unknown_server"     // the hub does not serve this server
	CodeBadRequest    = "bad_request"        // malformed name, id or parameter
	CodeUnauthorized  = "unauthorized"       // missing or wrong token
	CodeUnavailable   = "unavailable"        // the hub cannot answer this now
	CodeInternal      = "internal"           // the hub failed; see its log
	CodeConflict      = "conflict"           // the request clashes with work in progress (a running snapshot or backup)
	CodeFailed        = "failed"             // the hub tried and PostgreSQL refused or failed
	CodeTooLarge      = "too_large"          // the request's headers or body are over the hub's limit
	CodeTimeout       = "timeout"            // the request's body did not arrive in time
	CodeUnreachable   = "unreachable_target" // no backup plus the WAL held can reach the recovery target
)

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Code  string `json:"code"`
	Error string `json:"error"`
}

// PeekSegment is one segment a peek found.
type PeekSegment struct {
	Name     string `json:"name"`
	Size     int64  `json:"size"`
	Checksum string `json:"checksum"`
}

// Peek answers a peek: the requested segment and the consecutive ones after it
// on the same timeline that the hub holds now, at most the n asked for (capped
// by the hub's max_peek). Segments is empty when the requested one is missing.
type Peek struct {
	Server      string `json:"server"`
	SystemID    string `json:"system_id"`
	SegmentSize uint64 `json:"segment_size"`
	// Limit is the n the hub applied (the n asked for, capped by max_peek):
	// fewer segments than Limit means the hub holds no more now.
	Limit    int           `json:"limit"`
	Segments []PeekSegment `json:"segments"`
}

// BackupFile is one stored file of a backup.
type BackupFile struct {
	Name        string `json:"name"`
	Tablespace  uint32 `json:"tablespace,omitempty"`
	Location    string `json:"location,omitempty"`
	Size        int64  `json:"size"`
	StoredSize  int64  `json:"stored_size"`
	Compression string `json:"compression"`
	// CompressedOn is where a compressed archive was compressed: "server"
	// (PostgreSQL) or "hub"; absent when not compressed or not recorded.
	CompressedOn string `json:"compressed_on,omitempty"`
	// SHA256Stored is the SHA-256 of the stored (compressed) bytes, hex.
	SHA256Stored string `json:"sha256_stored,omitempty"`
}

// Backup describes one backup.
type Backup struct {
	ID            string           `json:"id"`
	Server        string           `json:"server"`
	Kind          string           `json:"kind"`
	State         string           `json:"state"`
	Reason        string           `json:"reason,omitempty"`
	Label         string           `json:"label,omitempty"`
	StartLSN      walname.LSN      `json:"start_lsn"`
	StartTLI      walname.TimeLine `json:"start_tli"`
	StopLSN       walname.LSN      `json:"stop_lsn"`
	StopTLI       walname.TimeLine `json:"stop_tli"`
	StartedAt     time.Time        `json:"started_at"`
	FinishedAt    time.Time        `json:"finished_at,omitzero"`
	OriginalSize  int64            `json:"original_size"`
	StoredSize    int64            `json:"stored_size"`
	Compression   string           `json:"compression"`
	Files         []BackupFile     `json:"files"`
	BackupLabel   string           `json:"backup_label,omitempty"`
	TablespaceMap string           `json:"tablespace_map,omitempty"`
}

// Paths of the routes, built from their parts (escaped).

// ServersPath is the route of the list of servers the hub serves.
const ServersPath = Version + "/servers"

// Servers is the body of GET /v1/servers.
type Servers struct {
	// Servers are the names of the configured servers, in configuration order.
	Servers []string `json:"servers"`
}

// ServerPath is the prefix of one server's routes.
func ServerPath(server string) string { return Version + "/servers/" + url.PathEscape(server) }

// WALPath is the route of a WAL file (segment, .history or .partial).
func WALPath(server, name string) string { return ServerPath(server) + "/wal/" + url.PathEscape(name) }

// PeekPath is the route of a peek starting at name for up to n segments.
func PeekPath(server, name string, n int) string {
	return WALPath(server, name) + "/peek?n=" + strconv.Itoa(n)
}

// BackupsPath is the route of a server's backup list.
func BackupsPath(server string) string { return ServerPath(server) + "/backups" }

// BackupPath is the route of one backup.
func BackupPath(server, id string) string { return BackupsPath(server) + "/" + url.PathEscape(id) }

// BackupFilePath is the route of one stored file of a backup.
func BackupFilePath(server, id, file string) string {
	return BackupPath(server, id) + "/files/" + url.PathEscape(file)
}

// ChooseBackupPath is the route that picks the backup a restore to a
// recovery target starts from; q holds "backup" (an id, or empty for the
// newest that reaches the target) and the target (restore.Target.Query).
// It answers a Backup, or 422 with CodeUnreachable saying what the archive
// can reach.
func ChooseBackupPath(server string, q url.Values) string {
	return ServerPath(server) + "/choose-backup?" + q.Encode()
}

// RestorePointsPath is the route of a server's restore points ([]RestorePoint).
func RestorePointsPath(server string) string { return ServerPath(server) + "/restore-points" }

// RestorePoint is a named restore point in the WAL the hub holds.
type RestorePoint struct {
	Name     string           `json:"name"`
	TimeLine walname.TimeLine `json:"timeline"`
	// LSN is where its record starts, EndLSN where it ends.
	LSN    walname.LSN `json:"lsn"`
	EndLSN walname.LSN `json:"end_lsn"`
	Time   time.Time   `json:"time"`
}

// StatusPath is the route of a server's status.
func StatusPath(server string) string { return ServerPath(server) + "/status" }

// SnapshotStart is the body of POST .../snapshot/start.
type SnapshotStart struct {
	Label string `json:"label,omitempty"`
	// Fast asks for an immediate checkpoint instead of a spread one.
	Fast bool `json:"fast,omitempty"`
}

// SnapshotStarted answers POST .../snapshot/start.
type SnapshotStarted struct {
	Server   string           `json:"server"`
	BackupID string           `json:"backup_id"`
	StartLSN walname.LSN      `json:"start_lsn"`
	TimeLine walname.TimeLine `json:"timeline"`
	// Deadline is when an unstopped snapshot is ended and marked failed.
	Deadline time.Time `json:"deadline"`
}

// SnapshotStopped answers POST .../snapshot/stop: what must go with the copy.
type SnapshotStopped struct {
	Server        string      `json:"server"`
	BackupID      string      `json:"backup_id"`
	StartLSN      walname.LSN `json:"start_lsn"`
	StopLSN       walname.LSN `json:"stop_lsn"`
	BackupLabel   string      `json:"backup_label"`
	TablespaceMap string      `json:"tablespace_map"`
}

// SnapshotPath is the route of a snapshot action ("start" or "stop").
func SnapshotPath(server, action string) string { return ServerPath(server) + "/snapshot/" + action }
