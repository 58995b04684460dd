package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Server is a PostgreSQL server known to the catalog.
type Server struct {
	ID   int64
	Name string
	// SystemID is the database system identifier from IDENTIFY_SYSTEM, as decimal
	// text; empty until the first connection.
	SystemID string
	// SegmentSize is wal_segment_size in bytes; 0 until the first connection.
	SegmentSize uint64
	CreatedAt   time.Time
}

// EnsureServer returns the server called name, adding it when missing.
func (c *Catalog) EnsureServer(ctx context.Context, name string) (Server, error) {
	_, err := c.db.ExecContext(ctx,
		`INSERT INTO servers (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`,
		name, time.Now().UnixNano())
	if err != nil {
		return Server{}, fmt.Errorf("add server %s: %w", name, err)
	}
	return c.ServerByName(ctx, name)
}

// ServerByName looks a server up by name.
func (c *Catalog) ServerByName(ctx context.Context, name string) (Server, error) {
	var s Server
	var created int64
	err := c.db.QueryRowContext(ctx,
		`SELECT id, name, system_id, segment_size, created_at FROM servers WHERE name = ?`, name).
		Scan(&s.ID, &s.Name, &s.SystemID, &s.SegmentSize, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Server{}, fmt.Errorf("server %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Server{}, fmt.Errorf("look up server %s: %w", name, err)
	}
	s.CreatedAt = fromUnixNano(created)
	return s, nil
}

// Servers lists every server, by name.
func (c *Catalog) Servers(ctx context.Context) ([]Server, error) {
	rows, err := c.db.QueryContext(ctx,
		`SELECT id, name, system_id, segment_size, created_at FROM servers ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	defer rows.Close()
	var out []Server
	for rows.Next() {
		var s Server
		var created int64
		if err := rows.Scan(&s.ID, &s.Name, &s.SystemID, &s.SegmentSize, &created); err != nil {
			return nil, fmt.Errorf("list servers: %w", err)
		}
		s.CreatedAt = fromUnixNano(created)
		out = append(out, s)
	}
	return out, rows.Err()
}

// ErrIdentityMismatch is returned when a server presents a system id or segment
// size other than the one recorded: it is a different cluster, and its WAL must
// not be mixed into this server's archive.
var ErrIdentityMismatch = errors.New("server identity differs from the one recorded")

// BindIdentity records the system id and segment size of a server the first
// time it is seen, and afterwards checks that they have not changed.
func (c *Catalog) BindIdentity(ctx context.Context, serverID int64, systemID string, segmentSize uint64) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("bind identity: %w", err)
	}
	defer tx.Rollback()
	var have string
	var haveSize uint64
	if err := tx.QueryRowContext(ctx, `SELECT system_id, segment_size FROM servers WHERE id = ?`, serverID).
		Scan(&have, &haveSize); err != nil {
		return fmt.Errorf("bind identity: %w", err)
	}
	if have != "" {
		if have != systemID || haveSize != segmentSize {
			return fmt.Errorf("%w: recorded system id %s with %d-byte segments, server says %s with %d-byte segments",
				ErrIdentityMismatch, have, haveSize, systemID, segmentSize)
		}
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE servers SET system_id = ?, segment_size = ? WHERE id = ?`,
		systemID, segmentSize, serverID); err != nil {
		return fmt.Errorf("bind identity: %w", err)
	}
	return tx.Commit()
}
