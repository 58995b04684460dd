package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// segmentStore turns complete .partial files into stored, cataloged segments:
// compressed (or linked, without compression) to their final name, durable,
// then cataloged, and only then is the .partial removed.
type segmentStore struct {
	repo        storage.Local
	cat         *catalog.Catalog
	serverID    int64
	server      string
	segSize     uint64
	compression string
	enc         *zstd.Encoder
	buf         []byte
	// stored is called after each segment is cataloged.
	stored func(completedSegment, catalog.Segment)
	// index reads restore points and commit times from each segment.
	index *contentIndex
}

func newSegmentStore(repo storage.Local, cat *catalog.Catalog, serverID int64, server string, segSize uint64,
	compression string, level int, stored func(completedSegment, catalog.Segment)) (*segmentStore, error) {
	s := &segmentStore{repo: repo, cat: cat, serverID: serverID, server: server, segSize: segSize,
		compression: compression, buf: make([]byte, 256<<10), stored: stored,
		index: &contentIndex{cat: cat, serverID: serverID, segSize: segSize, log: slog.Default().With("server", server)}}
	if compression == "zstd" {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevel(level)),
			zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd encoder: %w", err)
		}
		s.enc = enc
	}
	return s, nil
}

// store stores one complete segment. It is idempotent: a segment already
// cataloged (a crash came between the catalog and the removal of the
// .partial) only has its .partial removed.
func (s *segmentStore) store(ctx context.Context, seg completedSegment) error {
	if _, err := s.cat.Segment(ctx, s.serverID, seg.Name); err == nil {
		return removeFile(seg.Partial)
	} else if !errors.Is(err, catalog.ErrNotFound) {
		return err
	}
	in, err := os.Open(seg.Partial)
	if err != nil {
		return fmt.Errorf("store segment %s: %w", seg.Name, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("store segment %s: %w", seg.Name, err)
	}
	if uint64(fi.Size()) != s.segSize {
		return fmt.Errorf("store segment %s: %s holds %d bytes, a segment %d", seg.Name, seg.Partial, fi.Size(), s.segSize)
	}
	rel := storage.SegmentPath(s.server, seg.Name, s.compression)
	sum := checksum.New()
	// The bytes pass through the checksum and the WAL index on their way.
	read := io.MultiWriter(sum, s.index.segment(ctx, seg))
	var stored int64
	if s.compression == "none" {
		stored, err = s.storeUncompressed(in, seg, rel, read)
	} else {
		stored, err = s.repo.Put(ctx, rel, func(w io.Writer) error {
			s.enc.Reset(w)
			if _, err := io.CopyBuffer(s.enc, io.TeeReader(in, read), s.buf); err != nil {
				return err
			}
			return s.enc.Close()
		})
	}
	if err != nil {
		return fmt.Errorf("store segment %s: %w", seg.Name, err)
	}
	row := catalog.Segment{ServerID: s.serverID, TimeLine: seg.TimeLine, SegNo: seg.SegNo, Name: seg.Name,
		Size: int64(s.segSize), StoredSize: stored, Compression: s.compression,
		Checksum: checksum.Format(sum.Sum32()), StoredPath: rel, ReceivedAt: time.Now(),
		Contents: s.index.contents(seg)}
	if err := s.cat.AddSegment(ctx, row); err != nil {
		return err
	}
	if err := removeFile(seg.Partial); err != nil {
		return err
	}
	s.stored(seg, row)
	return nil
}

// storeUncompressed checksums the fsynced .partial and links it under its
// final name, as pg_receivewal renames it: the bytes are written only once.
// The .partial stays until the segment is cataloged.
func (s *segmentStore) storeUncompressed(in *os.File, seg completedSegment, rel string, sum io.Writer) (int64, error) {
	n, err := io.CopyBuffer(sum, in, s.buf)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", seg.Partial, err)
	}
	final, err := s.repo.Path(rel)
	if err != nil {
		return 0, err
	}
	// A crash may have left the link without its catalog row.
	if err := removeFile(final); err != nil {
		return 0, err
	}
	if err := os.Link(seg.Partial, final); err != nil {
		return 0, fmt.Errorf("link %s: %w", seg.Partial, err)
	}
	return n, storage.SyncDir(filepath.Dir(final))
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// localPartial is a .partial file found in the repository.
type localPartial struct {
	completedSegment
	Size int64
}

// scanRecentWAL removes the temporary files a crash left in the server's WAL
// directory and lists its .partial files, oldest first (by segment, then
// timeline). It only looks into the directories that can hold segments from
// from on, so that it stays quick however large the archive grows.
func scanRecentWAL(repo storage.Local, server string, segSize uint64, from walname.SegNo) ([]localPartial, error) {
	walDir, err := repo.Path(storage.WALDir(server))
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(walDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("scan WAL directory: %w", err)
	}
	perLog := walname.SegNo(0x100000000 / segSize)
	var out []localPartial
	for _, e := range entries {
		path := filepath.Join(walDir, e.Name())
		if !e.IsDir() {
			if storage.IsTemp(e.Name()) {
				if err := removeFile(path); err != nil {
					return nil, err
				}
			}
			continue
		}
		// Directories are named TLI and LOG, 8 hex digits each; LOG holds
		// segments LOG*perLog to (LOG+1)*perLog-1.
		dirLog, err := strconv.ParseUint(e.Name()[min(8, len(e.Name())):], 16, 32)
		if err != nil || len(e.Name()) != 16 || walname.SegNo(dirLog+1)*perLog <= from {
			continue
		}
		if err := storage.CleanTemp(path); err != nil {
			return nil, fmt.Errorf("remove temporary files: %w", err)
		}
		files, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("scan WAL directory: %w", err)
		}
		for _, f := range files {
			n, err := walname.Parse(f.Name())
			if err != nil || n.Kind != walname.KindPartial {
				continue
			}
			segNo, err := n.SegNo(segSize)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", filepath.Join(path, f.Name()), err)
			}
			fi, err := f.Info()
			if err != nil {
				return nil, err
			}
			out = append(out, localPartial{completedSegment{TimeLine: n.TimeLine, SegNo: segNo,
				Name: strings.TrimSuffix(f.Name(), ".partial"), Partial: filepath.Join(path, f.Name())}, fi.Size()})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].SegNo != out[j].SegNo {
			return out[i].SegNo < out[j].SegNo
		}
		return out[i].TimeLine < out[j].TimeLine
	})
	return out, nil
}

// archiver runs a segmentStore in the background so that receiving goes on
// while the last segment is compressed. Its queue is bounded: when storing
// falls behind, receiving waits, so neither memory nor the number of pending
// .partial files grows with the WAL volume.
type archiver struct {
	store *segmentStore
	jobs  chan completedSegment
	done  chan struct{}
	err   error // set before done is closed
}

func startArchiver(ctx context.Context, store *segmentStore, queue int) *archiver {
	a := &archiver{store: store, jobs: make(chan completedSegment, queue), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for seg := range a.jobs {
			if err := store.store(ctx, seg); err != nil {
				// The .partial files of this and the queued segments stay, and are
				// stored at the next start.
				a.err = err
				return
			}
		}
	}()
	return a
}

// add queues a complete segment, waiting while the queue is full.
func (a *archiver) add(seg completedSegment) error {
	select {
	case a.jobs <- seg:
		return nil
	case <-a.done:
		return a.failure()
	}
}

// failure returns the error that stopped the archiver, if it stopped.
func (a *archiver) failure() error {
	select {
	case <-a.done:
		if a.err != nil {
			return a.err
		}
		return errors.New("segment archiver stopped")
	default:
		return nil
	}
}

// finish stores what is queued and stops.
func (a *archiver) finish() error {
	close(a.jobs)
	<-a.done
	return a.err
}
