// Package catalog is walhub's SQLite index of servers, timelines, WAL segments,
// gaps and backups. All SQL in walhub lives here.
//
// The catalog only ever points at complete, durable files: callers store and
// fsync a file first and add its row afterwards. Several processes (the daemon,
// a backup, status) may open the same catalog at once; SQLite's WAL journal and
// a busy timeout let them.
package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"time"

	_ "github.com/mattn/go-sqlite3" // the SQLite driver
)

// ErrNotFound is returned (wrapped) when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// Catalog is an open catalog database.
type Catalog struct {
	db *sql.DB
}

// Open opens (creating when missing) the catalog at path and brings its schema
// up to date.
func Open(ctx context.Context, path string) (*Catalog, error) {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", "30000")
	q.Set("_foreign_keys", "on")
	// FULL: a committed row survives a power loss; one fsync per segment costs nothing.
	q.Set("_synchronous", "FULL")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	c := &Catalog{db: db}
	if err := c.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	return c, nil
}

// Close closes the database.
func (c *Catalog) Close() error { return c.db.Close() }

// migrations are applied in order; PRAGMA user_version records how many ran.
// Never edit one that has shipped: add another.
var migrations = []string{
	`CREATE TABLE servers (
		id           INTEGER PRIMARY KEY,
		name         TEXT NOT NULL UNIQUE,
		system_id    TEXT NOT NULL DEFAULT '',
		segment_size INTEGER NOT NULL DEFAULT 0,
		created_at   INTEGER NOT NULL
	);
	CREATE TABLE timelines (
		server_id   INTEGER NOT NULL REFERENCES servers(id),
		tli         INTEGER NOT NULL,
		history     BLOB,
		stored_path TEXT NOT NULL DEFAULT '',
		added_at    INTEGER NOT NULL,
		PRIMARY KEY (server_id, tli)
	);
	CREATE TABLE segments (
		server_id   INTEGER NOT NULL REFERENCES servers(id),
		tli         INTEGER NOT NULL,
		segno       INTEGER NOT NULL,
		name        TEXT NOT NULL,
		size        INTEGER NOT NULL,
		stored_size INTEGER NOT NULL,
		compression TEXT NOT NULL,
		checksum    TEXT NOT NULL,
		stored_path TEXT NOT NULL,
		received_at INTEGER NOT NULL,
		PRIMARY KEY (server_id, tli, segno)
	) WITHOUT ROWID;
	CREATE UNIQUE INDEX segments_name ON segments (server_id, name);
	CREATE TABLE gaps (
		id          INTEGER PRIMARY KEY,
		server_id   INTEGER NOT NULL REFERENCES servers(id),
		tli         INTEGER NOT NULL,
		start_lsn   INTEGER NOT NULL,
		end_lsn     INTEGER NOT NULL,
		reason      TEXT NOT NULL,
		detected_at INTEGER NOT NULL
	);
	CREATE TABLE backups (
		id             TEXT PRIMARY KEY,
		server_id      INTEGER NOT NULL REFERENCES servers(id),
		kind           TEXT NOT NULL,
		state          TEXT NOT NULL,
		reason         TEXT NOT NULL DEFAULT '',
		label          TEXT NOT NULL DEFAULT '',
		start_lsn      INTEGER NOT NULL DEFAULT 0,
		start_tli      INTEGER NOT NULL DEFAULT 0,
		stop_lsn       INTEGER NOT NULL DEFAULT 0,
		stop_tli       INTEGER NOT NULL DEFAULT 0,
		started_at     INTEGER NOT NULL,
		finished_at    INTEGER NOT NULL DEFAULT 0,
		original_size  INTEGER NOT NULL DEFAULT 0,
		stored_size    INTEGER NOT NULL DEFAULT 0,
		compression    TEXT NOT NULL DEFAULT '',
		stored_path    TEXT NOT NULL DEFAULT '',
		files          TEXT NOT NULL DEFAULT '[]',
		backup_label   TEXT NOT NULL DEFAULT '',
		tablespace_map TEXT NOT NULL DEFAULT '',
		pid            INTEGER NOT NULL DEFAULT 0,
		host           TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX backups_server ON backups (server_id, started_at);`,
	// segment_totals keeps, per server and timeline, the count and sizes of the
	// stored segments, maintained by triggers, so that status reads them in
	// constant time instead of scanning millions of rows.
	`CREATE TABLE segment_totals (
		server_id    INTEGER NOT NULL,
		tli          INTEGER NOT NULL,
		segments     INTEGER NOT NULL,
		bytes        INTEGER NOT NULL,
		stored_bytes INTEGER NOT NULL,
		PRIMARY KEY (server_id, tli)
	) WITHOUT ROWID;
	INSERT INTO segment_totals (server_id, tli, segments, bytes, stored_bytes)
		SELECT server_id, tli, COUNT(*), SUM(size), SUM(stored_size) FROM segments GROUP BY server_id, tli;
	CREATE TRIGGER segment_totals_insert AFTER INSERT ON segments BEGIN
		INSERT INTO segment_totals (server_id, tli, segments, bytes, stored_bytes)
			VALUES (NEW.server_id, NEW.tli, 1, NEW.size, NEW.stored_size)
			ON CONFLICT (server_id, tli) DO UPDATE SET segments = segments + 1,
				bytes = bytes + excluded.bytes, stored_bytes = stored_bytes + excluded.stored_bytes;
	END;
	CREATE TRIGGER segment_totals_delete AFTER DELETE ON segments BEGIN
		UPDATE segment_totals SET segments = segments - 1, bytes = bytes - OLD.size,
			stored_bytes = stored_bytes - OLD.stored_size
			WHERE server_id = OLD.server_id AND tli = OLD.tli;
	END;
	CREATE TRIGGER segment_totals_update AFTER UPDATE OF server_id, tli, size, stored_size ON segments BEGIN
		UPDATE segment_totals SET segments = segments - 1, bytes = bytes - OLD.size,
			stored_bytes = stored_bytes - OLD.stored_size
			WHERE server_id = OLD.server_id AND tli = OLD.tli;
		INSERT INTO segment_totals (server_id, tli, segments, bytes, stored_bytes)
			VALUES (NEW.server_id, NEW.tli, 1, NEW.size, NEW.stored_size)
			ON CONFLICT (server_id, tli) DO UPDATE SET segments = segments + 1,
				bytes = bytes + excluded.bytes, stored_bytes = stored_bytes + excluded.stored_bytes;
	END;
	-- A narrow index beside the wide primary key: counting a range of segment
	-- numbers, as MissingSegments does, reads a few bytes per segment instead of
	-- whole rows.
	CREATE INDEX segments_seq ON segments (server_id, tli, segno);`,
	// key_id: the ID of the encryption key an object was stored under ('' when
	// the repository is not encrypted); backup files carry theirs in files.
	`ALTER TABLE segments ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
	ALTER TABLE timelines ADD COLUMN key_id TEXT NOT NULL DEFAULT '';`,
	// What recovery targets need from the WAL records of each stored segment
	// (walrecord): the commits and aborts it ends and the restore points in
	// it, both attributed to the segment that holds the record's end. A
	// segment_contents row also says that the segment was read. Both go when
	// the segment's row goes.
	`CREATE TABLE segment_contents (
		server_id  INTEGER NOT NULL,
		tli        INTEGER NOT NULL,
		segno      INTEGER NOT NULL,
		xacts      INTEGER NOT NULL,
		first_lsn  INTEGER NOT NULL,
		first_time INTEGER NOT NULL,
		last_lsn   INTEGER NOT NULL,
		last_time  INTEGER NOT NULL,
		min_time   INTEGER NOT NULL,
		max_time   INTEGER NOT NULL,
		min_xid    INTEGER NOT NULL,
		max_xid    INTEGER NOT NULL,
		PRIMARY KEY (server_id, tli, segno)
	) WITHOUT ROWID;
	CREATE TABLE restore_points (
		server_id INTEGER NOT NULL,
		tli       INTEGER NOT NULL,
		segno     INTEGER NOT NULL,
		lsn       INTEGER NOT NULL,
		end_lsn   INTEGER NOT NULL,
		name      TEXT NOT NULL,
		time      INTEGER NOT NULL,
		PRIMARY KEY (server_id, tli, lsn)
	) WITHOUT ROWID;
	CREATE INDEX restore_points_name ON restore_points (server_id, name);
	CREATE TRIGGER segment_contents_delete AFTER DELETE ON segments BEGIN
		DELETE FROM segment_contents WHERE server_id = OLD.server_id AND tli = OLD.tli AND segno = OLD.segno;
		DELETE FROM restore_points WHERE server_id = OLD.server_id AND tli = OLD.tli AND segno = OLD.segno;
	END;`,
	// carry: the WAL decoder's state at the end of the segment (a record that
	// continues into the next one), so a restarted receiver goes on reading.
	`ALTER TABLE segment_contents ADD COLUMN carry BLOB;`,
}

func (c *Catalog) migrate(ctx context.Context) error {
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// BEGIN IMMEDIATE (the _txlock above) serialises concurrent first opens.
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("catalog schema version %d is newer than this walhub knows (%d): upgrade walhub", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(migrations))); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	return tx.Commit()
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
