package storage

import (
	"path"

	"github.com/walhub/walhub/walname"
)

// Repository layout, relative to the repository root:
//
//	catalog.db
//	<server>/wal/<TLI><LOG>/<SEGMENT>[.zst]   completed segments
//	<server>/wal/<TLI><LOG>/<SEGMENT>.partial the segment being received
//	<server>/wal/<TLI>.history                timeline history files
//	<server>/backups/<id>/                    base.tar.zst, <oid>.tar.zst, backup_manifest
//	<server>/lock, <server>/lock.json         the backup/expire lock and its holder

// CatalogFile is the catalog's file name in the repository root.
const CatalogFile = "catalog.db"

// Extension returns the file extension of a compression ("zstd" → ".zst").
func Extension(compression string) string {
	if compression == "zstd" {
		return ".zst"
	}
	return ""
}

// SegmentPath is where a completed segment is stored.
func SegmentPath(server, name, compression string) string {
	return path.Join(server, "wal", name[:16], name+Extension(compression))
}

// PartialPath is where the segment being received is kept, uncompressed.
func PartialPath(server, name string) string {
	return path.Join(server, "wal", name[:16], name+".partial")
}

// WALDir is the directory of a server's WAL.
func WALDir(server string) string { return path.Join(server, "wal") }

// HistoryPath is where a timeline's history file is stored.
func HistoryPath(server string, tli walname.TimeLine) string {
	return path.Join(server, "wal", walname.HistoryName(tli))
}

// BackupDir is the directory of one backup.
func BackupDir(server, id string) string { return path.Join(server, "backups", id) }

// LockPath is the server's backup/expire lock file.
func LockPath(server string) string { return path.Join(server, "lock") }
