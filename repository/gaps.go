package repository

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/crypt"
	"github.com/walhub/walhub/walname"
)

// gapRecord is the object that records a gap in the store
// (storage.GapPath): what the catalog's row says, so that a catalog rebuilt
// from the store, or a read-only hub's, knows the gap and why as the
// writing hub does.
type gapRecord struct {
	Server     string           `json:"server"`
	TimeLine   walname.TimeLine `json:"timeline"`
	StartLSN   walname.LSN      `json:"start_lsn"`
	EndLSN     walname.LSN      `json:"end_lsn"`
	Reason     string           `json:"reason"`
	DetectedAt time.Time        `json:"detected_at"`
}

// RecordGap records WAL of srv that is lost to the archive (the server
// removed it before the hub received it): its record in the store first,
// then its catalog row.
func (r *Repository) RecordGap(ctx context.Context, srv catalog.Server, g catalog.Gap) error {
	data, err := json.Marshal(gapRecord{Server: srv.Name, TimeLine: g.TimeLine, StartLSN: g.StartLSN, EndLSN: g.EndLSN,
		Reason: g.Reason, DetectedAt: g.DetectedAt.UTC()})
	if err != nil {
		return err
	}
	key := storage.GapPath(srv.Name, g.TimeLine, g.StartLSN, g.EndLSN)
	if err := r.put(ctx, key, nil, data); err != nil {
		return fmt.Errorf("record gap %s-%s: %w", g.StartLSN, g.EndLSN, err)
	}
	g.ServerID = srv.ID
	return r.Catalog.AddGap(ctx, g)
}

// addGaps catalogs the gap records objs of srv that the catalog lacks (the
// same timeline, start and end). It returns how many it added, and the
// records it could not read, each with why (they are left out: one damaged
// record must not stop a rebuild or a read-only hub's refreshes); it fails
// on the catalog's errors, and on the wrong keys for an encrypted
// repository.
func (r *Repository) addGaps(ctx context.Context, srv catalog.Server, objs []storage.ObjectInfo) (int, []string, error) {
	if len(objs) == 0 {
		return 0, nil, nil
	}
	known, err := r.Catalog.Gaps(ctx, srv.ID)
	if err != nil {
		return 0, nil, err
	}
	have := map[string]bool{}
	for _, g := range known {
		have[storage.GapPath(srv.Name, g.TimeLine, g.StartLSN, g.EndLSN)] = true
	}
	n := 0
	var skipped []string
	for _, o := range objs {
		if have[o.Key] {
			continue
		}
		rec, err := r.readGap(ctx, srv, o.Key)
		if errors.Is(err, crypt.ErrWrongKey) {
			return n, skipped, err
		}
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", o.Key, err))
			continue
		}
		if err := r.Catalog.AddGap(ctx, catalog.Gap{ServerID: srv.ID, TimeLine: rec.TimeLine, StartLSN: rec.StartLSN,
			EndLSN: rec.EndLSN, Reason: rec.Reason, DetectedAt: rec.DetectedAt}); err != nil {
			return n, skipped, err
		}
		have[o.Key] = true
		n++
	}
	return n, skipped, nil
}

// readGap reads the gap record at key, which must describe the gap its key names.
func (r *Repository) readGap(ctx context.Context, srv catalog.Server, key string) (gapRecord, error) {
	data, err := r.readAll(ctx, key, 1<<20)
	if err != nil {
		return gapRecord{}, err
	}
	var rec gapRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return gapRecord{}, fmt.Errorf("parse: %w", err)
	}
	if rec.EndLSN <= rec.StartLSN || storage.GapPath(srv.Name, rec.TimeLine, rec.StartLSN, rec.EndLSN) != key {
		return gapRecord{}, fmt.Errorf("the record says timeline %d, %s-%s", rec.TimeLine, rec.StartLSN, rec.EndLSN)
	}
	return rec, nil
}
