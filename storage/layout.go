package storage

import (
	"path"
	"strconv"
	"strings"

	"github.com/walhub/walhub/walname"
)

// The repository layout, defined here and nowhere else. Object keys, in the
// object store (relative to a local repository's directory, or to an S3
// bucket's prefix):
//
//	<server>/wal/<TLI><LOG>/<SEGMENT>[.zst]   completed segments
//	<server>/wal/<TLI>.history                timeline history files
//	<server>/backups/<id>/                    base.tar[.zst], <oid>.tar[.zst], backup_manifest, backup.info
//
// The local working area (WorkArea; for a local repository the same
// directory):
//
//	catalog.db
//	<server>/wal/<TLI><LOG>/<SEGMENT>.partial the segment being received
//	<server>/wal/.spare.tmp-<N>               a stored segment's file, kept for reuse as a .partial
//	<server>/lock, <server>/lock.json         the backup/expire/snapshot lock and its holder
//	<server>/receiver.lock                    held by the running receiver
//	<server>/receiver.json                    the receiver's state, for status
//	refresh.json                              a read-only hub's last catalog refresh, for status

// CatalogFile is the catalog's file name in the working area.
const CatalogFile = "catalog.db"

// RefreshStateFile is where a read-only hub records the outcome of its
// catalog refreshes, in the working area.
const RefreshStateFile = "refresh.json"

// Extension returns the file extension of a compression ("zstd" → ".zst").
func Extension(compression string) string {
	if compression == "zstd" {
		return ".zst"
	}
	return ""
}

// SegmentPath is the key of a completed segment.
func SegmentPath(server, name, compression string) string {
	return path.Join(server, "wal", name[:16], name+Extension(compression))
}

// PartialPath is where the segment being received is kept, uncompressed, in
// the working area.
func PartialPath(server, name string) string {
	return path.Join(server, "wal", name[:16], name+".partial")
}

// SparePath is where the receiver keeps the file of a stored segment for
// reuse as a later .partial (see package stream), in the working area. It is
// a temporary file's name (IsTemp): listings skip it and WorkArea.Partials
// removes it, so a restart never takes it for WAL.
func SparePath(server string, n int) string {
	return path.Join(server, "wal", ".spare.tmp-"+strconv.Itoa(n))
}

// WALDir is the key prefix (and working-area directory) of a server's WAL.
func WALDir(server string) string { return path.Join(server, "wal") }

// HistoryPath is the key of a timeline's history file.
func HistoryPath(server string, tli walname.TimeLine) string {
	return path.Join(server, "wal", walname.HistoryName(tli))
}

// BackupsDir is the key prefix of a server's backups.
func BackupsDir(server string) string { return path.Join(server, "backups") }

// BackupDir is the key prefix of one backup's objects.
func BackupDir(server, id string) string { return path.Join(server, "backups", id) }

// BackupFilePath is the key of one file of a backup.
func BackupFilePath(server, id, name string) string { return path.Join(server, "backups", id, name) }

// LockPath is the server's backup/expire lock file in the working area.
func LockPath(server string) string { return path.Join(server, "lock") }

// ReceiverLockPath is the lock a running receiver holds, in the working area.
func ReceiverLockPath(server string) string { return path.Join(server, "receiver.lock") }

// ReceiverStatePath is the receiver's state file in the working area.
func ReceiverStatePath(server string) string { return path.Join(server, "receiver.json") }

// KeyKind is what a key of the layout names.
type KeyKind int

// Kinds of keys.
const (
	KeySegment KeyKind = iota + 1
	KeyHistory
	KeyBackupFile
)

// Key is a key of the layout, parsed.
type Key struct {
	Kind   KeyKind
	Server string
	// Name is the segment's name (without extension), the history file's, or
	// the backup file's.
	Name string
	// Compression is a segment's, from its extension.
	Compression string
	// BackupID is a backup file's backup.
	BackupID string
}

// ParseKey parses a key of the layout. Anything else (a .partial or state
// file of a working area sharing a local repository's directory) is not ok.
func ParseKey(key string) (Key, bool) {
	parts := strings.Split(key, "/")
	switch {
	case len(parts) == 4 && parts[1] == "wal":
		name, compression := parts[3], "none"
		if base, ok := strings.CutSuffix(name, Extension("zstd")); ok {
			name, compression = base, "zstd"
		}
		n, err := walname.Parse(name)
		if err != nil || n.Kind != walname.KindSegment || name[:16] != parts[2] {
			return Key{}, false
		}
		return Key{Kind: KeySegment, Server: parts[0], Name: name, Compression: compression}, true
	case len(parts) == 3 && parts[1] == "wal":
		n, err := walname.Parse(parts[2])
		if err != nil || n.Kind != walname.KindHistory {
			return Key{}, false
		}
		return Key{Kind: KeyHistory, Server: parts[0], Name: parts[2]}, true
	case len(parts) == 4 && parts[1] == "backups":
		return Key{Kind: KeyBackupFile, Server: parts[0], BackupID: parts[2], Name: parts[3]}, true
	}
	return Key{}, false
}
