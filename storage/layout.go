package storage

import (
	"fmt"
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
//	<server>/gaps/<TLI>-<START>-<END>.json    WAL lost before the hub got it (a gap), and why
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

// GapPath is the key of the record of a gap: the WAL of timeline tli from
// start to end, which the server removed before the hub received it. The
// name spells the three in hex, so that recording the same gap again
// replaces its record.
func GapPath(server string, tli walname.TimeLine, start, end walname.LSN) string {
	return path.Join(server, "gaps", fmt.Sprintf("%08X-%016X-%016X.json", uint32(tli), uint64(start), uint64(end)))
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
	KeyGap
)

// Key is a key of the layout, parsed.
type Key struct {
	Kind   KeyKind
	Server string
	// Name is the segment's name (without extension), the history file's,
	// the backup file's, or the gap record's.
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
	case len(parts) == 3 && parts[1] == "gaps" && strings.HasSuffix(parts[2], ".json") && !IsTemp(parts[2]):
		return Key{Kind: KeyGap, Server: parts[0], Name: parts[2]}, true
	}
	return Key{}, false
}
