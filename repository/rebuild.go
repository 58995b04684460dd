package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/pgfile"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/crypt"
	"github.com/walhub/walhub/walname"
)

// RebuildReport says what Rebuild found in the store.
type RebuildReport struct {
	Servers   []string `json:"servers"`
	Segments  int      `json:"segments"`
	TimeLines int      `json:"timelines"`
	Backups   int      `json:"backups"`
	// Gaps counts the gaps the store records: WAL lost before the hub got it.
	Gaps int `json:"gaps"`
	// Checksummed counts the segments stored without a checksum in their
	// meta (written before walhub kept one there), whose checksum was
	// computed by reading them.
	Checksummed int `json:"checksummed,omitempty"`
	// Skipped are objects that are no part of the catalog: the files of
	// backups that never finished (no backup.info), unreadable objects
	// (backup.info, gap records).
	Skipped []string `json:"skipped,omitempty"`
}

// Rebuild re-creates the catalog from the store alone: servers (their
// system identifier and segment size from the segments' meta or the
// backups' info), segments, timeline histories and backups. The catalog must
// be empty (a new catalog.db): Rebuild refuses to merge into one that holds
// rows. The gaps the receiver recorded (RecordGap) come back with their
// reasons; hubs before they were stored leave only missing segments.
func (r *Repository) Rebuild(ctx context.Context) (RebuildReport, error) {
	var rep RebuildReport
	if srvs, err := r.Catalog.Servers(ctx); err != nil {
		return rep, err
	} else if len(srvs) > 0 {
		return rep, fmt.Errorf("the catalog already holds %d servers: rebuild into a new, empty catalog", len(srvs))
	}
	servers, err := r.scan(ctx)
	if err != nil {
		return rep, err
	}
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		s := servers[name]
		var infos []backupInfo
		for _, o := range s.infos {
			info, err := r.readInfo(ctx, o.Key)
			if errors.Is(err, crypt.ErrWrongKey) {
				return rep, err // the keys are wrong, not this object
			}
			if err != nil {
				rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: %v", o.Key, err))
				continue
			}
			infos = append(infos, info)
		}
		ident, err := r.identity(ctx, s.segments, infos)
		if err != nil {
			return rep, fmt.Errorf("server %s: %w", name, err)
		}
		srv, err := r.Catalog.EnsureServer(ctx, name)
		if err != nil {
			return rep, err
		}
		if ident.segSize != 0 {
			if err := r.Catalog.BindIdentity(ctx, srv.ID, ident.systemID, ident.segSize); err != nil {
				return rep, fmt.Errorf("server %s: %w", name, err)
			}
			srv.SystemID, srv.SegmentSize = ident.systemID, ident.segSize
		}
		rep.Servers = append(rep.Servers, name)
		n, computed, err := r.rebuildSegments(ctx, srv, s.segments)
		rep.Segments += n
		rep.Checksummed += computed
		if err != nil {
			return rep, fmt.Errorf("server %s: %w", name, err)
		}
		for _, o := range s.histories {
			if err := r.addHistory(ctx, srv, o); err != nil {
				return rep, fmt.Errorf("server %s: %w", name, err)
			}
			rep.TimeLines++
		}
		for _, info := range infos {
			if err := r.Catalog.AddBackup(ctx, info.row(srv.ID, storage.BackupDir(name, info.ID))); err != nil {
				return rep, fmt.Errorf("backup %s: %w", info.ID, err)
			}
			rep.Backups++
		}
		n, skipped, err := r.addGaps(ctx, srv, s.gaps)
		rep.Gaps += n
		rep.Skipped = append(rep.Skipped, skipped...)
		if err != nil {
			return rep, fmt.Errorf("server %s: %w", name, err)
		}
		var unfinished []string
		for id, finished := range s.backupIDs {
			if !finished {
				unfinished = append(unfinished, storage.BackupDir(name, id)+" (no "+InfoName+": never finished)")
			}
		}
		sort.Strings(unfinished)
		rep.Skipped = append(rep.Skipped, unfinished...)
	}
	return rep, nil
}

// scannedServer is what scan found in the store for one server.
type scannedServer struct {
	segments  []storage.ObjectInfo
	histories []storage.ObjectInfo
	infos     []storage.ObjectInfo
	gaps      []storage.ObjectInfo
	// backupIDs: true for a backup with its backup.info (finished), false
	// for files without one.
	backupIDs map[string]bool
}

// scan lists the store and sorts its objects by server and kind.
func (r *Repository) scan(ctx context.Context) (map[string]*scannedServer, error) {
	servers := map[string]*scannedServer{}
	err := r.Store.List(ctx, "", func(o storage.ObjectInfo) error {
		k, ok := storage.ParseKey(o.Key)
		if !ok {
			return nil
		}
		s := servers[k.Server]
		if s == nil {
			s = &scannedServer{backupIDs: map[string]bool{}}
			servers[k.Server] = s
		}
		switch {
		case k.Kind == storage.KeySegment:
			s.segments = append(s.segments, o)
		case k.Kind == storage.KeyHistory:
			s.histories = append(s.histories, o)
		case k.Kind == storage.KeyBackupFile && k.Name == InfoName:
			s.infos = append(s.infos, o)
			s.backupIDs[k.BackupID] = true
		case k.Kind == storage.KeyBackupFile:
			if !s.backupIDs[k.BackupID] {
				s.backupIDs[k.BackupID] = false
			}
		case k.Kind == storage.KeyGap:
			s.gaps = append(s.gaps, o)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the repository: %w", err)
	}
	return servers, nil
}

// addHistory catalogs the stored history file o of srv.
func (r *Repository) addHistory(ctx context.Context, srv catalog.Server, o storage.ObjectInfo) error {
	k, _ := storage.ParseKey(o.Key)
	hn, _ := walname.Parse(k.Name)
	content, err := r.readAll(ctx, o.Key, 1<<24)
	if err != nil {
		return err
	}
	_, keyID, err := r.statKey(ctx, o.Key)
	if err != nil {
		return err
	}
	return r.Catalog.AddTimeLine(ctx, catalog.TimeLine{ServerID: srv.ID, TimeLine: hn.TimeLine,
		History: content, StoredPath: o.Key, AddedAt: o.ModTime, KeyID: keyID})
}

type identity struct {
	systemID string
	segSize  uint64
}

// identity finds a server's system identifier and segment size in its
// segments' meta, else in its backups' info, else by reading a segment.
func (r *Repository) identity(ctx context.Context, segs []storage.ObjectInfo, infos []backupInfo) (identity, error) {
	for _, o := range segs {
		info, err := r.Store.Stat(ctx, o.Key)
		if err != nil {
			return identity{}, err
		}
		size, _ := strconv.ParseUint(info.Meta[metaSize], 10, 64)
		if size != 0 && info.Meta[metaSystemID] != "" {
			return identity{systemID: info.Meta[metaSystemID], segSize: size}, nil
		}
		break
	}
	for _, i := range infos {
		if i.SegmentSize != 0 && i.SystemID != "" {
			return identity{systemID: i.SystemID, segSize: i.SegmentSize}, nil
		}
	}
	if len(segs) == 0 {
		return identity{}, nil
	}
	// Segments stored before walhub kept meta: the size is what one
	// decompresses to; the system identifier is in its first page header.
	k, _ := storage.ParseKey(segs[0].Key)
	data, err := r.segmentBytes(ctx, segs[0].Key, k.Compression)
	if err != nil {
		return identity{}, err
	}
	h, err := pgfile.ParseSegmentHeader(data)
	if err != nil {
		return identity{}, fmt.Errorf("segment %s: %w", k.Name, err)
	}
	return identity{systemID: strconv.FormatUint(h.SystemID, 10), segSize: uint64(len(data))}, nil
}

// rebuildSegments catalogs a server's segment objects, in batches.
func (r *Repository) rebuildSegments(ctx context.Context, srv catalog.Server, objs []storage.ObjectInfo) (n, computed int, err error) {
	if len(objs) > 0 && srv.SegmentSize == 0 {
		return 0, 0, errors.New("segments without a known segment size")
	}
	var batch []catalog.Segment
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := r.Catalog.AddSegments(ctx, batch)
		n += len(batch)
		batch = batch[:0]
		return err
	}
	for _, o := range objs {
		k, _ := storage.ParseKey(o.Key)
		tli, segno, err := walname.ParseSegment(k.Name, srv.SegmentSize)
		if err != nil {
			return n, computed, fmt.Errorf("%s: %w", o.Key, err)
		}
		info, keyID, err := r.statKey(ctx, o.Key)
		if err != nil {
			return n, computed, err
		}
		sum := info.Meta[metaChecksum]
		size, _ := strconv.ParseInt(info.Meta[metaSize], 10, 64)
		if sum == "" || size == 0 {
			data, err := r.segmentBytes(ctx, o.Key, k.Compression)
			if err != nil {
				return n, computed, err
			}
			sum, size = checksum.Of(data), int64(len(data))
			computed++
		}
		batch = append(batch, catalog.Segment{ServerID: srv.ID, TimeLine: tli, SegNo: segno, Name: k.Name,
			Size: size, StoredSize: info.Size, Compression: k.Compression, Checksum: sum, StoredPath: o.Key,
			ReceivedAt: info.ModTime, KeyID: keyID})
		if len(batch) == 1000 {
			if err := flush(); err != nil {
				return n, computed, err
			}
		}
	}
	return n, computed, flush()
}

// segmentBytes reads a stored segment, uncompressed.
func (r *Repository) segmentBytes(ctx context.Context, key, compression string) ([]byte, error) {
	var buf bytes.Buffer
	if err := r.readSegment(ctx, key, compression, &limitedWriter{w: &buf, n: walname.MaxSegmentSize}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// limitedWriter fails once more than n bytes are written.
type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, errors.New("more than a segment's bytes")
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}

func (r *Repository) readAll(ctx context.Context, key string, limit int64) ([]byte, error) {
	f, err := r.Store.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return data, nil
}

func (r *Repository) readInfo(ctx context.Context, key string) (backupInfo, error) {
	data, err := r.readAll(ctx, key, 1<<24)
	if err != nil {
		return backupInfo{}, err
	}
	var info backupInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return backupInfo{}, fmt.Errorf("parse %s: %w", key, err)
	}
	if info.ID == "" || info.State == "" {
		return backupInfo{}, fmt.Errorf("%s: no backup id or state", key)
	}
	return info, nil
}
