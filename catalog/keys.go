package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
)

// KeyUse is what the repository holds under one encryption key, by its ID
// ("" for objects stored without encryption).
type KeyUse struct {
	KeyID string
	// Segments and SegmentBytes (stored) count WAL segments; HistoryFiles
	// timeline history files; Backups the backups with a file under the key,
	// BackupFiles those files.
	Segments, SegmentBytes int64
	HistoryFiles           int64
	Backups, BackupFiles   int64
}

// KeyUsage counts the cataloged objects under each key, so an operator can
// tell when a previous key no longer protects anything (after expire) and may
// be retired. Sorted by key ID.
func (c *Catalog) KeyUsage(ctx context.Context) ([]KeyUse, error) {
	use := map[string]*KeyUse{}
	get := func(id string) *KeyUse {
		if use[id] == nil {
			use[id] = &KeyUse{KeyID: id}
		}
		return use[id]
	}
	rows, err := c.db.QueryContext(ctx, `SELECT key_id, COUNT(*), COALESCE(SUM(stored_size), 0) FROM segments GROUP BY key_id`)
	if err != nil {
		return nil, fmt.Errorf("key usage: %w", err)
	}
	for rows.Next() {
		var id string
		var n, bytes int64
		if err := rows.Scan(&id, &n, &bytes); err != nil {
			rows.Close()
			return nil, fmt.Errorf("key usage: %w", err)
		}
		get(id).Segments, get(id).SegmentBytes = n, bytes
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("key usage: %w", err)
	}
	rows, err = c.db.QueryContext(ctx, `SELECT key_id, COUNT(*) FROM timelines WHERE stored_path != '' GROUP BY key_id`)
	if err != nil {
		return nil, fmt.Errorf("key usage: %w", err)
	}
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("key usage: %w", err)
		}
		get(id).HistoryFiles = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("key usage: %w", err)
	}
	rows, err = c.db.QueryContext(ctx, `SELECT files FROM backups`)
	if err != nil {
		return nil, fmt.Errorf("key usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var text string
		if err := rows.Scan(&text); err != nil {
			return nil, fmt.Errorf("key usage: %w", err)
		}
		var files []BackupFile
		if err := json.Unmarshal([]byte(text), &files); err != nil {
			return nil, fmt.Errorf("key usage: backup files: %w", err)
		}
		seen := map[string]bool{}
		for _, f := range files {
			get(f.KeyID).BackupFiles++
			if !seen[f.KeyID] {
				seen[f.KeyID] = true
				get(f.KeyID).Backups++
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("key usage: %w", err)
	}
	out := make([]KeyUse, 0, len(use))
	for _, u := range use {
		out = append(out, *u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out, nil
}
