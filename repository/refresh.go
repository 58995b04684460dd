package repository

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage"
)

// RefreshReport says what Refresh changed in the catalog.
type RefreshReport struct {
	SegmentsAdded   int `json:"segments_added"`
	SegmentsRemoved int `json:"segments_removed"`
	TimeLinesAdded  int `json:"timelines_added"`
	BackupsAdded    int `json:"backups_added"`
	BackupsRemoved  int `json:"backups_removed"`
	GapsAdded       int `json:"gaps_added"`
	// SegmentsIndexed counts the segments read into the WAL index (restore
	// points, commit times), so that restores to a name or a time work
	// through this hub too.
	SegmentsIndexed int `json:"segments_indexed"`
}

// Changed tells whether the refresh changed anything.
func (rep RefreshReport) Changed() bool { return rep != RefreshReport{} }

// Refresh brings the catalog of a hub that serves a repository another hub
// writes (read-only) up to date with the store: the segments, timeline
// histories, finished backups and gap records that appeared are cataloged as Rebuild
// would, and the rows of those removed (by the other hub's expire) are
// deleted. On an empty catalog it is Rebuild. The segments cataloged are
// then read into the WAL index (IndexStoredWAL), as the writing hub's
// receiver indexes what it stores.
func (r *Repository) Refresh(ctx context.Context) (RefreshReport, error) {
	var rep RefreshReport
	servers, err := r.scan(ctx)
	if err != nil {
		return rep, err
	}
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		if err := r.refreshServer(ctx, name, servers[name], &rep); err != nil {
			return rep, fmt.Errorf("refresh server %s: %w", name, err)
		}
		n, err := r.IndexStoredWAL(ctx, name, nil)
		rep.SegmentsIndexed += n
		if err != nil {
			return rep, fmt.Errorf("refresh server %s: %w", name, err)
		}
	}
	return rep, nil
}

func (r *Repository) refreshServer(ctx context.Context, name string, s *scannedServer, rep *RefreshReport) error {
	srv, err := r.Catalog.EnsureServer(ctx, name)
	if err != nil {
		return err
	}
	backups, err := r.Catalog.Backups(ctx, srv.ID)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, b := range backups {
		known[b.ID] = true
	}
	var infos []backupInfo
	for _, o := range s.infos {
		k, _ := storage.ParseKey(o.Key)
		if known[k.BackupID] {
			continue
		}
		info, err := r.readInfo(ctx, o.Key)
		if err != nil {
			return err
		}
		infos = append(infos, info)
	}
	if srv.SegmentSize == 0 {
		ident, err := r.identity(ctx, s.segments, infos)
		if err != nil {
			return err
		}
		if ident.segSize != 0 {
			if err := r.Catalog.BindIdentity(ctx, srv.ID, ident.systemID, ident.segSize); err != nil {
				return err
			}
			srv.SystemID, srv.SegmentSize = ident.systemID, ident.segSize
		}
	}

	// Segments: the catalog's rows against the store's objects, by key.
	have := map[string]catalog.Segment{}
	ranges, err := r.Catalog.SegmentRanges(ctx, srv.ID)
	if err != nil {
		return err
	}
	for _, rg := range ranges {
		segs, err := r.Catalog.Segments(ctx, srv.ID, rg.TimeLine, rg.First, rg.Last+1)
		if err != nil {
			return err
		}
		for _, seg := range segs {
			have[seg.StoredPath] = seg
		}
	}
	stored := map[string]bool{}
	var added []storage.ObjectInfo
	for _, o := range s.segments {
		stored[o.Key] = true
		if _, ok := have[o.Key]; !ok {
			added = append(added, o)
		}
	}
	n, _, err := r.rebuildSegments(ctx, srv, added)
	rep.SegmentsAdded += n
	if err != nil {
		return err
	}
	var gone []catalog.Segment
	for key, seg := range have {
		if !stored[key] {
			gone = append(gone, seg)
		}
	}
	if len(gone) > 0 {
		if err := r.Catalog.DeleteSegments(ctx, gone); err != nil {
			return err
		}
		rep.SegmentsRemoved += len(gone)
	}

	tls, err := r.Catalog.TimeLines(ctx, srv.ID)
	if err != nil {
		return err
	}
	haveTL := map[string]bool{}
	for _, tl := range tls {
		haveTL[tl.StoredPath] = true
	}
	for _, o := range s.histories {
		if haveTL[o.Key] {
			continue
		}
		if err := r.addHistory(ctx, srv, o); err != nil {
			return err
		}
		rep.TimeLinesAdded++
	}

	for _, info := range infos {
		if err := r.Catalog.AddBackup(ctx, info.row(srv.ID, storage.BackupDir(name, info.ID))); err != nil {
			return fmt.Errorf("backup %s: %w", info.ID, err)
		}
		rep.BackupsAdded++
	}
	for _, b := range backups {
		if !s.backupIDs[b.ID] {
			if err := r.Catalog.DeleteBackup(ctx, b.ID); err != nil {
				return err
			}
			rep.BackupsRemoved++
		}
	}
	// A record it cannot read is left out, here as in Rebuild (which lists
	// it): the next refresh tries it again.
	n, _, err = r.addGaps(ctx, srv, s.gaps)
	rep.GapsAdded += n
	return err
}
