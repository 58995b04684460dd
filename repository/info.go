package repository

import (
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/walname"
)

// backupInfo is the content of a backup's info object (backup.info, JSON):
// its catalog row, and the identity of its server. Fields are only ever
// added.
type backupInfo struct {
	Version       int                  `json:"version"`
	Server        string               `json:"server"`
	SystemID      string               `json:"system_id,omitempty"`
	SegmentSize   uint64               `json:"segment_size,omitempty"`
	ID            string               `json:"id"`
	Kind          string               `json:"kind"`
	State         string               `json:"state"`
	Label         string               `json:"label"`
	StartLSN      walname.LSN          `json:"start_lsn"`
	StartTLI      walname.TimeLine     `json:"start_tli"`
	StopLSN       walname.LSN          `json:"stop_lsn"`
	StopTLI       walname.TimeLine     `json:"stop_tli"`
	StartedAt     time.Time            `json:"started_at"`
	FinishedAt    time.Time            `json:"finished_at"`
	OriginalSize  int64                `json:"original_size"`
	StoredSize    int64                `json:"stored_size"`
	Compression   string               `json:"compression,omitempty"`
	Files         []catalog.BackupFile `json:"files,omitempty"`
	BackupLabel   string               `json:"backup_label,omitempty"`
	TablespaceMap string               `json:"tablespace_map,omitempty"`
	PID           int                  `json:"pid,omitempty"`
	Host          string               `json:"host,omitempty"`
}

func infoOf(srv catalog.Server, b catalog.Backup) backupInfo {
	return backupInfo{Version: 1, Server: srv.Name, SystemID: srv.SystemID, SegmentSize: srv.SegmentSize,
		ID: b.ID, Kind: b.Kind, State: b.State, Label: b.Label, StartLSN: b.StartLSN, StartTLI: b.StartTLI,
		StopLSN: b.StopLSN, StopTLI: b.StopTLI, StartedAt: b.StartedAt, FinishedAt: b.FinishedAt,
		OriginalSize: b.OriginalSize, StoredSize: b.StoredSize, Compression: b.Compression, Files: b.Files,
		BackupLabel: b.BackupLabel, TablespaceMap: b.TablespaceMap, PID: b.PID, Host: b.Host}
}

// row is the catalog row the info describes, for server row serverID.
func (i backupInfo) row(serverID int64, storedPath string) catalog.Backup {
	return catalog.Backup{ID: i.ID, ServerID: serverID, Kind: i.Kind, State: i.State, Label: i.Label,
		StartLSN: i.StartLSN, StartTLI: i.StartTLI, StopLSN: i.StopLSN, StopTLI: i.StopTLI,
		StartedAt: i.StartedAt, FinishedAt: i.FinishedAt, OriginalSize: i.OriginalSize, StoredSize: i.StoredSize,
		Compression: i.Compression, StoredPath: storedPath, Files: i.Files, BackupLabel: i.BackupLabel,
		TablespaceMap: i.TablespaceMap, PID: i.PID, Host: i.Host}
}
