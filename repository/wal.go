package repository

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	czstd "github.com/DataDog/zstd"
	"github.com/klauspost/compress/zstd"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// Meta keys of a stored segment: what its catalog row needs beyond what the
// key says (timeline, segment number, compression) and the object's size.
const (
	metaChecksum = "checksum"  // of the uncompressed bytes, "crc32c:1a2b3c4d"
	metaSize     = "size"      // the uncompressed size, the segment size
	metaSystemID = "system-id" // the server's system identifier
)

// SegmentStorer stores the complete WAL segments of one server, as the
// receiver does and the test feeder must: compressed as configured, the
// object durable before its catalog row.
//
// Storing a file has two steps, which a caller may run apart: PutFile (read,
// checksum, compress, make the object durable) is safe for concurrent use,
// each call with an encoder and buffer of its own; CatalogFile (the WAL
// index, then the catalog row) is not, and takes the segments in order.
// StoreFile does both, for one segment at a time.
type SegmentStorer struct {
	r           *Repository
	srv         catalog.Server
	compression string
	// level is libzstd's (config.ZstdLevel of the configured one).
	level int
	index SegmentIndex

	// mu guards coders, the idle buffers of PutFile: as many are made as
	// calls ever ran at once, and reused.
	mu     sync.Mutex
	coders []*segmentCoder
	// indexBuf is CatalogFile's read buffer (CatalogFile runs one at a time).
	indexBuf []byte
}

// segmentCoder is what one PutFile call works with: a read buffer and, with
// compression, a libzstd context, the buffer of the frame it makes, and the
// writer that gathers frames into writes of objectChunk bytes (one system
// call each, or one piece of an upload).
type segmentCoder struct {
	buf   []byte
	zctx  czstd.Ctx
	frame []byte
	out   *bufio.Writer
}

// objectChunk is the size of the reads of a segment file and of the writes
// of a compressed segment's object.
const objectChunk = 256 << 10

// walFrame is how many bytes of a segment each zstd frame holds: a stored
// segment is a sequence of independent frames, which every zstd reader reads
// as one stream.
const walFrame = 1 << 20

// SegmentIndex reads the bytes of each segment stored, in order, on their
// way to the store (the WAL index: restore points, commit times), and gives
// what the catalog records with the segment's row, in the same transaction.
type SegmentIndex interface {
	// Begin returns the writer the bytes of the segment go through.
	Begin(ctx context.Context, tli walname.TimeLine, segno walname.SegNo, name string) io.Writer
	// Contents is what was read from the segment since Begin.
	Contents(tli walname.TimeLine, segno walname.SegNo) *catalog.SegmentContents
}

// SetIndex makes every segment stored from now on pass through x.
func (s *SegmentStorer) SetIndex(x SegmentIndex) { s.index = x }

// SegmentStorer returns a storer for srv (its row with system id and segment
// size bound), compressing with compression ("zstd" or "none") at level.
func (r *Repository) SegmentStorer(srv catalog.Server, compression string, level int) (*SegmentStorer, error) {
	if srv.SegmentSize == 0 {
		return nil, fmt.Errorf("server %s has no segment size yet", srv.Name)
	}
	s := &SegmentStorer{r: r, srv: srv, compression: compression, level: config.ZstdLevel(level)}
	switch compression {
	case "zstd":
		// Checked now, so that a bad level fails here rather than at the first segment.
		if err := config.CheckCompressionLevel(level); err != nil {
			return nil, fmt.Errorf("compression level: %w", err)
		}
	case "none":
	default:
		return nil, fmt.Errorf("unknown compression %q", compression)
	}
	return s, nil
}

func (s *SegmentStorer) newCoder() *segmentCoder {
	if s.compression != "zstd" {
		return &segmentCoder{buf: make([]byte, objectChunk)}
	}
	return &segmentCoder{buf: make([]byte, walFrame), zctx: czstd.NewCtx(),
		frame: make([]byte, czstd.CompressBound(walFrame)), out: bufio.NewWriterSize(nil, objectChunk)}
}

// The segments are compressed by libzstd (github.com/DataDog/zstd, built
// from its C source), not by klauspost/compress, which decodes them
// everywhere (the frames are the same format): on real WAL (pgbench's,
// zstd level 1, 2.9:1) libzstd's streaming encoder took 2.2-2.3 ms of CPU
// per MB against klauspost's 3.1-3.3 with its cheapest settings, for the
// same output within 0.5%. On a hub whose cores the archiver fills (a
// catch-up, WAL in bursts) that is what the receiver can take in.
//
// Each walFrame of a segment is compressed whole, into a frame of its own,
// by a context kept with the coder: on that real segment this took 1.9-2.0
// ms of CPU per MB against 2.3-2.4 for one streamed frame, at the same ratio
// or better at every level (1 MiB frames; 256 kB ones lose 1% at levels 3
// and 11), and decoding costs the same. libzstd's streaming encoder copies
// its input into a window of its own; a frame compressed whole does not.
// A frame also keeps no state after a failed write: nothing to free.

// encode compresses in into c.out, one frame per walFrame bytes, and flushes it.
func (c *segmentCoder) encode(in io.Reader, level int) error {
	for {
		n, err := io.ReadFull(in, c.buf)
		if n > 0 {
			frame, zerr := c.zctx.CompressLevel(c.frame, c.buf[:n], level)
			if zerr != nil {
				return fmt.Errorf("compress: %w", zerr)
			}
			if _, werr := c.out.Write(frame); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return c.out.Flush()
		case err != nil:
			return err
		}
	}
}

// coder takes an idle coder, or makes one.
func (s *SegmentStorer) coder() *segmentCoder {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.coders); n > 0 {
		c := s.coders[n-1]
		s.coders = s.coders[:n-1]
		return c
	}
	return s.newCoder()
}

func (s *SegmentStorer) release(c *segmentCoder) {
	s.mu.Lock()
	s.coders = append(s.coders, c)
	s.mu.Unlock()
}

// StoreFile stores the complete segment name held by the local file src
// (fsynced by the caller; it is only read) and catalogs it: PutFile, then
// CatalogFile. It is idempotent: a segment already cataloged (a crash came
// between the catalog and the removal of the caller's file) is returned as
// it is, with stored false.
func (s *SegmentStorer) StoreFile(ctx context.Context, name, src string) (seg catalog.Segment, stored bool, err error) {
	row, cataloged, err := s.PutFile(ctx, name, src, "")
	if err != nil || cataloged {
		return row, false, err
	}
	if row, err = s.CatalogFile(ctx, row, src); err != nil {
		return catalog.Segment{}, false, err
	}
	return row, true, nil
}

// PutFile makes the object of the complete segment name, held by the local
// file src (fsynced by the caller; it is only read), durable in the store,
// and returns the catalog row that CatalogFile is to commit. A segment
// already cataloged is returned as it is, with cataloged true, and nothing
// is written. It is safe for concurrent use.
//
// sum is the checksum (checksum.Format) of the segment's bytes when the
// caller computed it as it wrote src (the receiver, from the bytes the
// server sent), or "" for PutFile to compute it, with a read of src of its
// own. A known sum spares that read: when src is copied into the object
// (compressed, or to a bucket) it is checksummed on the way, and an object
// whose bytes differ from sum is not committed; when it is linked, the
// object is src and sum is what its bytes were sent as.
//
// Without compression, on a store that can link a local file (local disk),
// src becomes the object without being copied, as pg_receivewal renames it.
func (s *SegmentStorer) PutFile(ctx context.Context, name, src, sum string) (row catalog.Segment, cataloged bool, err error) {
	tli, segno, err := walname.ParseSegment(name, s.srv.SegmentSize)
	if err != nil {
		return catalog.Segment{}, false, fmt.Errorf("store segment %s: %w", name, err)
	}
	var want uint32
	if sum != "" {
		if want, err = checksum.Parse(sum); err != nil {
			return catalog.Segment{}, false, fmt.Errorf("store segment %s: %w", name, err)
		}
	}
	if row, err := s.r.Catalog.Segment(ctx, s.srv.ID, name); err == nil {
		return row, true, nil
	} else if !errors.Is(err, catalog.ErrNotFound) {
		return catalog.Segment{}, false, err
	}
	in, err := s.openSegmentFile(name, src)
	if err != nil {
		return catalog.Segment{}, false, err
	}
	defer in.Close()
	c := s.coder()
	defer s.release(c)
	// Hiding the os.File's WriteTo makes io.CopyBuffer use c.buf (reads of
	// 256 kB, or of a frame's 1 MiB) rather than its own 32 kB buffer, which
	// costs twice the CPU.
	var body io.Reader = struct{ io.Reader }{in}
	if sum == "" {
		// The checksum goes into the object's meta, which a bucket takes when
		// the upload starts: compute it first (the second read comes from the
		// page cache).
		h := checksum.New()
		if _, err := io.CopyBuffer(h, body, c.buf); err != nil {
			return catalog.Segment{}, false, fmt.Errorf("store segment %s: read %s: %w", name, src, err)
		}
		if _, err := in.Seek(0, io.SeekStart); err != nil {
			return catalog.Segment{}, false, fmt.Errorf("store segment %s: %w", name, err)
		}
		sum = checksum.Format(h.Sum32())
	} else {
		body = &checkedReader{r: in, want: want, name: src}
	}
	row = s.row(tli, segno, name, sum)
	linked := false
	if l, ok := s.r.Store.(storage.Linker); ok && s.compression == "none" {
		row.StoredSize, err = l.Link(ctx, src, row.StoredPath, s.meta(row))
		// A working area on another file system than the store: copy.
		linked = !errors.Is(err, syscall.EXDEV)
	}
	if !linked {
		row.StoredSize, err = s.put(ctx, c, row, body)
	}
	if err != nil {
		return catalog.Segment{}, false, fmt.Errorf("store segment %s: %w", name, err)
	}
	return row, false, nil
}

// checkedReader reads r, checksumming what it reads, and at the end of r
// fails instead of returning io.EOF when the checksum is not want: the
// object being written from it is then aborted, not committed.
type checkedReader struct {
	r    io.Reader
	sum  uint32
	want uint32
	name string
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.sum = checksum.Update(c.sum, p[:n])
	if err == io.EOF && c.sum != c.want {
		return n, fmt.Errorf("%s holds bytes whose checksum is %s, not %s as received", c.name,
			checksum.Format(c.sum), checksum.Format(c.want))
	}
	return n, err
}

// CatalogFile commits row, the row PutFile returned for the segment held by
// src, after reading src through the WAL index (when one is set) for the
// contents committed with it. Calls must come one at a time and in segment
// order, each after its segment's PutFile returned: the index reads records
// across segment boundaries, and a restart resumes after the last segment
// cataloged, which must therefore have every segment before it cataloged.
func (s *SegmentStorer) CatalogFile(ctx context.Context, row catalog.Segment, src string) (catalog.Segment, error) {
	if s.index != nil {
		in, err := s.openSegmentFile(row.Name, src)
		if err != nil {
			return catalog.Segment{}, err
		}
		defer in.Close()
		// Read in large pieces: io.Copy's 32 kB reads cost the index pass
		// twice the CPU (0.2 ms per MB instead of 0.1). The os.File is
		// hidden so that its WriteTo does not bring that buffer back.
		if s.indexBuf == nil {
			s.indexBuf = make([]byte, objectChunk)
		}
		if _, err := io.CopyBuffer(s.index.Begin(ctx, row.TimeLine, row.SegNo, row.Name), struct{ io.Reader }{in}, s.indexBuf); err != nil {
			return catalog.Segment{}, fmt.Errorf("index segment %s: read %s: %w", row.Name, src, err)
		}
		row.Contents = s.index.Contents(row.TimeLine, row.SegNo)
	}
	// Durable object first (PutFile returned), catalog row second.
	if err := s.r.Catalog.AddSegment(ctx, row); err != nil {
		return catalog.Segment{}, err
	}
	return row, nil
}

// openSegmentFile opens src, which must hold a whole segment.
func (s *SegmentStorer) openSegmentFile(name, src string) (*os.File, error) {
	in, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("store segment %s: %w", name, err)
	}
	fi, err := in.Stat()
	if err != nil {
		in.Close()
		return nil, fmt.Errorf("store segment %s: %w", name, err)
	}
	if uint64(fi.Size()) != s.srv.SegmentSize {
		in.Close()
		return nil, fmt.Errorf("store segment %s: %s holds %d bytes, a segment %d",
			name, src, fi.Size(), s.srv.SegmentSize)
	}
	return in, nil
}

// Store stores the complete segment name from memory (the test feeder).
func (s *SegmentStorer) Store(ctx context.Context, name string, data []byte) (catalog.Segment, error) {
	tli, segno, err := walname.ParseSegment(name, s.srv.SegmentSize)
	if err != nil {
		return catalog.Segment{}, fmt.Errorf("store segment %s: %w", name, err)
	}
	if uint64(len(data)) != s.srv.SegmentSize {
		return catalog.Segment{}, fmt.Errorf("segment %s has %d bytes, want %d", name, len(data), s.srv.SegmentSize)
	}
	row := s.row(tli, segno, name, checksum.Of(data))
	if s.index != nil {
		if _, err := s.index.Begin(ctx, tli, segno, name).Write(data); err != nil {
			return catalog.Segment{}, fmt.Errorf("index segment %s: %w", name, err)
		}
		row.Contents = s.index.Contents(tli, segno)
	}
	c := s.coder()
	defer s.release(c)
	if row.StoredSize, err = s.put(ctx, c, row, bytes.NewReader(data)); err != nil {
		return catalog.Segment{}, fmt.Errorf("store segment %s: %w", name, err)
	}
	if err := s.r.Catalog.AddSegment(ctx, row); err != nil {
		return catalog.Segment{}, err
	}
	return row, nil
}

func (s *SegmentStorer) row(tli walname.TimeLine, segno walname.SegNo, name, sum string) catalog.Segment {
	return catalog.Segment{ServerID: s.srv.ID, TimeLine: tli, SegNo: segno, Name: name,
		Size: int64(s.srv.SegmentSize), Compression: s.compression, Checksum: sum,
		StoredPath: storage.SegmentPath(s.srv.Name, name, s.compression), ReceivedAt: time.Now(), KeyID: s.r.KeyID()}
}

func (s *SegmentStorer) meta(row catalog.Segment) storage.Meta {
	return storage.Meta{metaChecksum: row.Checksum, metaSize: strconv.FormatInt(row.Size, 10), metaSystemID: s.srv.SystemID}
}

// put writes the segment's bytes from in, compressed with c, and commits the object.
func (s *SegmentStorer) put(ctx context.Context, c *segmentCoder, row catalog.Segment, in io.Reader) (int64, error) {
	w, err := s.r.Store.Create(ctx, row.StoredPath, s.meta(row))
	if err != nil {
		return 0, err
	}
	defer w.Abort()
	if c.zctx != nil {
		c.out.Reset(w)
		err := c.encode(in, s.level)
		c.out.Reset(nil)
		if err != nil {
			return 0, err
		}
	} else if _, err := io.CopyBuffer(w, in, c.buf); err != nil {
		return 0, err
	}
	return w.Commit(ctx)
}

// StoreHistory stores the history file of timeline tli of srv and catalogs
// it (the object first).
func (r *Repository) StoreHistory(ctx context.Context, srv catalog.Server, tli walname.TimeLine, content []byte) error {
	key := storage.HistoryPath(srv.Name, tli)
	if err := r.put(ctx, key, nil, content); err != nil {
		return fmt.Errorf("store history of timeline %d: %w", tli, err)
	}
	return r.Catalog.AddTimeLine(ctx, catalog.TimeLine{ServerID: srv.ID, TimeLine: tli, History: content,
		StoredPath: key, AddedAt: time.Now(), KeyID: r.KeyID()})
}

// put stores a small object from memory.
func (r *Repository) put(ctx context.Context, key string, meta storage.Meta, data []byte) error {
	w, err := r.Store.Create(ctx, key, meta)
	if err != nil {
		return err
	}
	defer w.Abort()
	if _, err := w.Write(data); err != nil {
		return err
	}
	_, err = w.Commit(ctx)
	return err
}

// OpenSegment opens the stored object of a cataloged segment.
func (r *Repository) OpenSegment(ctx context.Context, seg catalog.Segment) (storage.ObjectReader, error) {
	return r.Store.Open(ctx, seg.StoredPath)
}

// OpenHistory opens the stored history file of timeline tl.
func (r *Repository) OpenHistory(ctx context.Context, srv catalog.Server, tl catalog.TimeLine) (storage.ObjectReader, error) {
	key := tl.StoredPath
	if key == "" {
		key = storage.HistoryPath(srv.Name, tl.TimeLine)
	}
	return r.Store.Open(ctx, key)
}

// RemoveSegments removes segments: their rows first, then their objects.
// It returns the bytes the objects took.
func (r *Repository) RemoveSegments(ctx context.Context, segs []catalog.Segment) (int64, error) {
	if err := r.Catalog.DeleteSegments(ctx, segs); err != nil {
		return 0, err
	}
	var n int64
	for _, s := range segs {
		if err := r.Store.Remove(ctx, s.StoredPath); err != nil {
			return n, err
		}
		n += s.StoredSize
	}
	return n, nil
}

// ReadSegment writes the uncompressed bytes of a stored segment to w, and
// fails when they are not the size and checksum its catalog row gives
// (objects carry no second hash of their own: the encoder writes no frame
// checksum, the CRC-32C of every segment being in its row). w may have
// taken bytes by then: a caller acts on what it read only once ReadSegment
// returned nil.
func (r *Repository) ReadSegment(ctx context.Context, seg catalog.Segment, w io.Writer) error {
	cw := &checkedWriter{w: w}
	if err := r.readSegment(ctx, seg.StoredPath, seg.Compression, cw); err != nil {
		return err
	}
	if err := matchesRow(seg, cw.n, cw.sum); err != nil {
		return fmt.Errorf("segment %s: stored bytes: %w", seg.Name, err)
	}
	return nil
}

// matchesRow says whether n bytes with CRC-32C sum are the segment its
// catalog row describes.
func matchesRow(seg catalog.Segment, n int64, sum uint32) error {
	if n != seg.Size {
		return fmt.Errorf("%d bytes, the catalog says %d", n, seg.Size)
	}
	if got := checksum.Format(sum); got != seg.Checksum {
		return fmt.Errorf("checksum %s, the catalog says %s", got, seg.Checksum)
	}
	return nil
}

// checkedWriter passes bytes on to w, counting them and updating their CRC-32C.
type checkedWriter struct {
	w   io.Writer
	n   int64
	sum uint32
}

func (c *checkedWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.sum = checksum.Update(c.sum, p[:n])
	return n, err
}

func (r *Repository) readSegment(ctx context.Context, key, compression string, w io.Writer) error {
	f, err := r.Store.Open(ctx, key)
	if err != nil {
		return err
	}
	defer f.Close()
	var in io.Reader = f
	switch compression {
	case "none":
	case "zstd":
		dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer dec.Close()
		in = dec
	default:
		return fmt.Errorf("read %s: unknown compression %q", key, compression)
	}
	if _, err := io.Copy(w, in); err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	return nil
}
