package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/walhub/walhub/walname"
)

// Backup kinds.
const (
	KindBase     = "base"     // BASE_BACKUP streamed into the repository
	KindSnapshot = "snapshot" // pg_backup_start/stop around an external copy
)

// What each kind of backup means to the commands that handle backups lives
// here, beside the kinds, so that restore, verify, retention, the backup
// checks and the recoverable window all ask the same place.

// KindInfo is what one kind of backup is to walhub.
type KindInfo struct {
	// Restorable: walhub restore --target-dir restores it from the files it
	// stored. A snapshot is finished from the user's own copy instead
	// (walhub restore --snapshot-dir).
	Restorable bool
	// Verifiable: it has stored files to check against its manifest.
	Verifiable bool
	// Counted: it counts toward retention's redundancy and min_redundancy and
	// in the backup checks (last backup age, minimum redundancy). Only what
	// walhub holds counts: a snapshot's copy is somewhere walhub neither
	// holds nor can check, so counting it would let retention remove the
	// only backup walhub can restore, and let the checks pass without one.
	Counted bool
}

// kinds holds every kind of backup there is.
var kinds = map[string]KindInfo{
	KindBase:     {Restorable: true, Verifiable: true, Counted: true},
	KindSnapshot: {},
}

// KindOf says what b's kind is; an unknown kind is none of the above.
func KindOf(b Backup) KindInfo { return kinds[b.Kind] }

// Restorable tells whether walhub restore can restore b by itself: done, and
// of a restorable kind.
func Restorable(b Backup) bool { return b.State == StateDone && KindOf(b).Restorable }

// Verifiable tells whether b has stored files to verify against its manifest.
func Verifiable(b Backup) bool { return b.State == StateDone && KindOf(b).Verifiable }

// Counted tells whether b counts as a usable backup for retention and for
// the backup checks: done, and of a kind that counts.
func Counted(b Backup) bool { return b.State == StateDone && KindOf(b).Counted }

// Backup states: running, then done or failed; a backup whose copy is
// complete but whose WAL has not reached the hub in time is waiting_wal until
// the WAL arrives (then done).
const (
	StateRunning    = "running"
	StateDone       = "done"
	StateFailed     = "failed"
	StateWaitingWAL = "waiting_wal"
)

// BackupFile is one stored file of a backup (an archive or the manifest).
type BackupFile struct {
	// Name is the file name inside the backup's directory ("base.tar.zst").
	Name string `json:"name"`
	// Tablespace is the tablespace OID for a tablespace archive, 0 for base and the manifest.
	Tablespace uint32 `json:"tablespace,omitempty"`
	// Location is the tablespace's original path on the server.
	Location    string `json:"location,omitempty"`
	Size        int64  `json:"size"`
	StoredSize  int64  `json:"stored_size"`
	Compression string `json:"compression"`
	// CompressedOn is where a compressed archive was compressed: "server"
	// (PostgreSQL) or "hub"; "" for the manifest, an uncompressed archive,
	// or one stored before walhub recorded it.
	CompressedOn string `json:"compressed_on,omitempty"`
	SHA256Stored string `json:"sha256_stored,omitempty"`
	// KeyID names the key the stored file is encrypted with ("" when not).
	KeyID string `json:"key_id,omitempty"`
}

// Backup is a base or snapshot backup.
type Backup struct {
	ID       string
	ServerID int64
	Kind     string
	State    string
	// Reason says why a backup failed.
	Reason                string
	Label                 string
	StartLSN              walname.LSN
	StartTLI              walname.TimeLine
	StopLSN               walname.LSN
	StopTLI               walname.TimeLine
	StartedAt, FinishedAt time.Time
	// OriginalSize is the size of the data as the server sent it, StoredSize after compression.
	OriginalSize, StoredSize int64
	Compression              string
	// StoredPath is the backup's directory, relative to the repository root.
	StoredPath    string
	Files         []BackupFile
	BackupLabel   string
	TablespaceMap string
	// PID and Host are the process that took the backup.
	PID  int
	Host string
}

const backupColumns = `id, server_id, kind, state, reason, label, start_lsn, start_tli, stop_lsn, stop_tli,
	started_at, finished_at, original_size, stored_size, compression, stored_path, files, backup_label,
	tablespace_map, pid, host`

func backupArgs(b Backup) ([]any, error) {
	files, err := json.Marshal(b.Files)
	if err != nil {
		return nil, err
	}
	if b.Files == nil {
		files = []byte("[]")
	}
	return []any{b.ID, b.ServerID, b.Kind, b.State, b.Reason, b.Label, int64(b.StartLSN), b.StartTLI,
		int64(b.StopLSN), b.StopTLI, unixNano(b.StartedAt), unixNano(b.FinishedAt), b.OriginalSize,
		b.StoredSize, b.Compression, b.StoredPath, string(files), b.BackupLabel, b.TablespaceMap, b.PID, b.Host}, nil
}

func scanBackup(row interface{ Scan(...any) error }) (Backup, error) {
	var b Backup
	var start, stop, started, finished int64
	var files string
	err := row.Scan(&b.ID, &b.ServerID, &b.Kind, &b.State, &b.Reason, &b.Label, &start, &b.StartTLI, &stop,
		&b.StopTLI, &started, &finished, &b.OriginalSize, &b.StoredSize, &b.Compression, &b.StoredPath, &files,
		&b.BackupLabel, &b.TablespaceMap, &b.PID, &b.Host)
	if err != nil {
		return Backup{}, err
	}
	b.StartLSN, b.StopLSN = walname.LSN(start), walname.LSN(stop)
	b.StartedAt, b.FinishedAt = fromUnixNano(started), fromUnixNano(finished)
	if err := json.Unmarshal([]byte(files), &b.Files); err != nil {
		return Backup{}, fmt.Errorf("backup %s: files: %w", b.ID, err)
	}
	return b, nil
}

// AddBackup inserts a new backup row.
func (c *Catalog) AddBackup(ctx context.Context, b Backup) error {
	args, err := backupArgs(b)
	if err != nil {
		return fmt.Errorf("add backup %s: %w", b.ID, err)
	}
	if _, err := c.db.ExecContext(ctx, `INSERT INTO backups (`+backupColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...); err != nil {
		return fmt.Errorf("add backup %s: %w", b.ID, err)
	}
	return nil
}

// UpdateBackup writes every field of an existing backup.
func (c *Catalog) UpdateBackup(ctx context.Context, b Backup) error {
	ok, err := c.updateBackup(ctx, b, "")
	if err == nil && !ok {
		err = fmt.Errorf("update backup %s: %w", b.ID, ErrNotFound)
	}
	return err
}

// UpdateBackupIf writes every field of backup b only when its row is still in
// state from: a compare-and-set, for a process that decides from a row it
// read earlier (another process may have finished the backup since). It
// returns false, changing nothing, when the row is in another state or gone.
func (c *Catalog) UpdateBackupIf(ctx context.Context, b Backup, from string) (bool, error) {
	return c.updateBackup(ctx, b, from)
}

func (c *Catalog) updateBackup(ctx context.Context, b Backup, from string) (bool, error) {
	args, err := backupArgs(b)
	if err != nil {
		return false, fmt.Errorf("update backup %s: %w", b.ID, err)
	}
	q := `UPDATE backups SET server_id = ?, kind = ?, state = ?, reason = ?,
		label = ?, start_lsn = ?, start_tli = ?, stop_lsn = ?, stop_tli = ?, started_at = ?, finished_at = ?,
		original_size = ?, stored_size = ?, compression = ?, stored_path = ?, files = ?, backup_label = ?,
		tablespace_map = ?, pid = ?, host = ? WHERE id = ?`
	args = append(args[1:], b.ID)
	if from != "" {
		q += ` AND state = ?`
		args = append(args, from)
	}
	res, err := c.db.ExecContext(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("update backup %s: %w", b.ID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Backup looks up a backup by id.
func (c *Catalog) Backup(ctx context.Context, id string) (Backup, error) {
	b, err := scanBackup(c.db.QueryRowContext(ctx, `SELECT `+backupColumns+` FROM backups WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Backup{}, fmt.Errorf("backup %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Backup{}, fmt.Errorf("look up backup %s: %w", id, err)
	}
	return b, nil
}

// Backups lists a server's backups, oldest first.
func (c *Catalog) Backups(ctx context.Context, serverID int64) ([]Backup, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+backupColumns+` FROM backups WHERE server_id = ?
		ORDER BY started_at, id`, serverID)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	defer rows.Close()
	var out []Backup
	for rows.Next() {
		b, err := scanBackup(rows)
		if err != nil {
			return nil, fmt.Errorf("list backups: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// FinishWaitingBackup marks a backup that waits for its WAL done. It changes
// nothing and returns false when the backup is no longer waiting (another
// process finished it first, or it was removed).
func (c *Catalog) FinishWaitingBackup(ctx context.Context, id string) (bool, error) {
	res, err := c.db.ExecContext(ctx, `UPDATE backups SET state = ?, reason = '' WHERE id = ? AND state = ?`,
		StateDone, id, StateWaitingWAL)
	if err != nil {
		return false, fmt.Errorf("finish backup %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// DeleteBackup removes a backup's row. Callers delete the row first and the
// files after, so the catalog never points at missing files.
func (c *Catalog) DeleteBackup(ctx context.Context, id string) error {
	if _, err := c.db.ExecContext(ctx, `DELETE FROM backups WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete backup %s: %w", id, err)
	}
	return nil
}
