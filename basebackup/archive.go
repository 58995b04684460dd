package basebackup

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
)

// ManifestName is the name of the stored manifest in a backup's directory.
const ManifestName = "backup_manifest"

// Compression settings of stored archives.
type Compression struct {
	// Method is "zstd" or "none".
	Method string
	// Level is 1 (fastest) to 4 (best), as in the configuration.
	Level int
	// Workers is how many cores compress; 0 means all. When the server
	// compresses, how many threads it uses besides the walsender; 0 means none.
	Workers int
	// Where the archives are compressed (zstd only): "hub" (or ""), the
	// hub's cores on what the server sends uncompressed; "server",
	// PostgreSQL before sending, each archive stored as it comes; or "auto",
	// the backup's choice: the server, which sends a fraction of the bytes
	// and leaves the hub's cores idle, except when a maximum rate is set
	// (PostgreSQL throttles what it sends: with its own compression, the
	// compressed bytes, so the data it reads would not be limited) or when
	// the server's build cannot compress with zstd (it says so before
	// sending anything): then the hub.
	Where string
}

// resolve turns Where "auto" into a choice, given the backup's maximum rate
// (kB/s, 0 for none): the server compresses unless a rate is set.
func (c Compression) resolve(maxRate int) Compression {
	if c.Where == "auto" {
		c.Where = "hub"
		if c.Method == "zstd" && maxRate == 0 {
			c.Where = "server"
		}
	}
	return c
}

// on says where the archives are compressed: "server", "hub", or "" (not at all).
func (c Compression) on() string {
	switch {
	case c.Method != "zstd":
		return ""
	case c.Where == "server":
		return "server"
	}
	return "hub"
}

// serverOptions are BASE_BACKUP's COMPRESSION and COMPRESSION_DETAIL for c,
// empty when the server is not to compress (levels: config.ZstdLevel).
func (c Compression) serverOptions() (method, detail string) {
	if c.on() != "server" {
		return "", ""
	}
	detail = fmt.Sprintf("level=%d", config.ZstdLevel(c.Level))
	if c.Workers > 0 {
		detail += fmt.Sprintf(",workers=%d", c.Workers)
	}
	return "zstd", detail
}

// archiveWriter streams one archive into the repository: the bytes given to
// Write are compressed (or not) straight into the object being written, and
// Close commits it (durable and visible). Abort leaves nothing behind. With
// zstd, a frameWriter compresses on several cores and checks every frame it
// writes: an archive is committed only if it decompresses to exactly what
// streamed in.
type archiveWriter struct {
	obj      storage.ObjectWriter
	w        io.Writer // the compressor or buffer in front of obj
	close    func() error
	frames   *frameWriter // nil without compression, or with the server's
	inflate  *inflater    // decodes the server's compressed stream, if it is
	sha      hash.Hash
	stored   int64
	original int64
}

// newArchiveWriter starts writing the file name of backup b.
func newArchiveWriter(ctx context.Context, repo *repository.Repository, b catalog.Backup, name string, c Compression) (*archiveWriter, error) {
	obj, err := repo.CreateBackupFile(ctx, b, name)
	if err != nil {
		return nil, err
	}
	a := &archiveWriter{obj: obj, sha: sha256.New()}
	out := io.MultiWriter(obj, a.sha)
	if c.Method != "zstd" {
		buf := bufio.NewWriterSize(out, 1<<20)
		a.w, a.close = buf, buf.Flush
		return a, nil
	}
	workers := c.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if a.frames, err = newFrameWriter(out, zstd.EncoderLevel(c.Level), workers); err != nil {
		obj.Abort()
		return nil, err
	}
	a.w, a.close = a.frames, a.frames.Close
	return a, nil
}

// newServerArchiveWriter starts writing the file name of backup b from the
// server's zstd stream: the bytes given to Write are stored as they come,
// and decoded on a goroutine of its own (every frame's checksum checked)
// into plain, which gets the archive's tar stream, in order, in pieces it
// must not keep. Close commits the archive only if the whole stream decoded.
func newServerArchiveWriter(ctx context.Context, repo *repository.Repository, b catalog.Backup, name string,
	plain func([]byte) error) (*archiveWriter, error) {
	obj, err := repo.CreateBackupFile(ctx, b, name)
	if err != nil {
		return nil, err
	}
	a := &archiveWriter{obj: obj, sha: sha256.New()}
	buf := bufio.NewWriterSize(io.MultiWriter(obj, a.sha), 1<<20)
	a.inflate, a.w = newInflater(plain), buf
	a.close = func() error {
		if err := a.inflate.Close(); err != nil {
			return fmt.Errorf("the server's compressed archive does not decode: %w", err)
		}
		a.original = a.inflate.n
		return buf.Flush()
	}
	return a, nil
}

// Write passes p on; p may be reused once Write returns.
func (a *archiveWriter) Write(p []byte) (int, error) {
	n, err := a.w.Write(p)
	if a.inflate != nil {
		if err == nil {
			err = a.inflate.Write(p)
		}
		return n, err
	}
	a.original += int64(n)
	return n, err
}

// Close finishes the archive and commits it: when it returns nil, the
// archive is durable.
func (a *archiveWriter) Close(ctx context.Context) error {
	if err := a.close(); err != nil {
		a.Abort()
		if a.frames != nil {
			return fmt.Errorf("the compressed archive does not give back the %d bytes that streamed in: %w", a.original, err)
		}
		return err
	}
	n, err := a.obj.Commit(ctx)
	if err != nil {
		return err
	}
	a.stored = n
	return nil
}

// Abort stops the archive; nothing of it is left.
func (a *archiveWriter) Abort() {
	if a.frames != nil {
		a.frames.Abort()
	}
	if a.inflate != nil {
		a.inflate.Abort()
	}
	a.obj.Abort()
}

// SHA256 is the hex SHA-256 of the stored bytes, once closed.
func (a *archiveWriter) SHA256() string { return hex.EncodeToString(a.sha.Sum(nil)) }

// inflater decodes a zstd stream given to it in pieces, on a goroutine of
// its own, into out.
type inflater struct {
	pw   *io.PipeWriter
	done chan error
	n    int64 // decoded bytes, once done
	err  error // once done
	over bool
}

// errInflateAborted ends an inflater's decoding when its archive is aborted.
var errInflateAborted = errors.New("archive aborted")

// It decodes as a restore does (Decompress: PostgreSQL's frames, which do
// not give their size, through one decoder).
func newInflater(out func([]byte) error) *inflater {
	pr, pw := io.Pipe()
	f := &inflater{pw: pw, done: make(chan error, 1)}
	go func() {
		d, err := Decompress(pr, "zstd")
		if err == nil {
			f.n, err = io.CopyBuffer(plainWriter(out), d, make([]byte, 256<<10))
			d.Close()
		}
		// A Write still waiting on the pipe, or any later, gets err.
		pr.CloseWithError(err)
		f.done <- err
	}()
	return f
}

// Write gives the decoder p; it returns once the decoder has read all of p,
// so p may be reused then. An error is the decoder's (or out's).
func (f *inflater) Write(p []byte) error {
	_, err := f.pw.Write(p)
	return err
}

// Close ends the stream and waits for the decoder: nil when it decoded
// whole (every frame complete and its checksum right) and out took it all.
func (f *inflater) Close() error {
	if !f.over {
		f.pw.Close()
		f.err, f.over = <-f.done, true
	}
	return f.err
}

// Abort stops the decoder and waits for it.
func (f *inflater) Abort() {
	if !f.over {
		f.pw.CloseWithError(errInflateAborted)
		f.err, f.over = <-f.done, true
	}
}

// plainWriter is an io.Writer that hands each piece to a function.
type plainWriter func([]byte) error

func (w plainWriter) Write(p []byte) (int, error) {
	if err := w(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// storedName is the file name under which an archive the server called name
// is stored ("base.tar" → "base.tar.zst").
func storedName(name, compression string) string { return name + storage.Extension(compression) }

// tablespaceOfArchive returns the OID in an archive name like "16384.tar", 0
// for "base.tar".
func tablespaceOfArchive(name string) (uint32, error) {
	base, ok := strings.CutSuffix(name, ".tar")
	if !ok {
		return 0, fmt.Errorf("unexpected archive name %q", name)
	}
	if base == "base" {
		return 0, nil
	}
	oid, err := strconv.ParseUint(base, 10, 32)
	if err != nil || oid == 0 {
		return 0, fmt.Errorf("unexpected archive name %q", name)
	}
	return uint32(oid), nil
}

// Opener opens one stored file of a backup by its name in the backup's
// directory ("base.tar.zst", "backup_manifest"). Unpack and Verify read
// through it, so a backup can come from the local repository or over HTTP.
type Opener func(ctx context.Context, name string) (io.ReadCloser, error)

// RepoOpener opens the files of backup b in the repository.
func RepoOpener(repo *repository.Repository, b catalog.Backup) Opener {
	return func(ctx context.Context, name string) (io.ReadCloser, error) {
		return repo.OpenBackupFile(ctx, b, name)
	}
}

// Decompress returns a reader of the uncompressed bytes of a stored file.
//
// A zstd stream of independent frames of known size, as walhub writes them
// (see frameWriter), is decoded frame by frame on several cores
// (frameReader), each frame checked against its checksum and size. Any other
// zstd stream (an archive of an older walhub is one frame of unknown size) is
// decoded on the caller's goroutine (concurrency 1): the decoder's
// asynchronous mode hands every block between goroutines, which cost twice
// the CPU for the same bytes (bench: 0.5 s against 0.25 s for the 24 MB
// archive of a 470 MiB database). The decoder reads each block's 3-byte
// header and then its body from r, so r is read through a buffer.
func Decompress(r io.Reader, compression string) (io.ReadCloser, error) {
	switch compression {
	case "none", "":
		return io.NopCloser(r), nil
	case "zstd":
		br := bufio.NewReaderSize(r, 256<<10)
		if head, err := br.Peek(zstd.HeaderMaxSize); (err == nil || errors.Is(err, io.EOF)) && parallelFrames(head) {
			return newFrameReader(br, min(maxDecoders, runtime.GOMAXPROCS(0)), nil)
		}
		// The window bounds the decoder's memory: 128 MiB is the most any
		// zstd level uses without long-distance matching (which walhub's
		// encoder and PostgreSQL 15's do not use).
		d, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(128<<20))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return nil, fmt.Errorf("unknown compression %q", compression)
}

// openArchive opens the stored archive f through open and returns its
// uncompressed tar stream; closing it closes both.
func openArchive(ctx context.Context, open Opener, f catalog.BackupFile) (io.ReadCloser, error) {
	rc, err := open(ctx, f.Name)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", f.Name, err)
	}
	dr, err := Decompress(rc, f.Compression)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	return archiveStream{dr, closers{dr, rc}}, nil
}

// archiveStream is the uncompressed stream of a stored archive.
type archiveStream struct {
	io.Reader
	io.Closer
}

// frames returns the frameReader that s reads from, if it does.
func (s archiveStream) frames() *frameReader {
	fr, _ := s.Reader.(*frameReader)
	return fr
}

// closers closes each in turn and returns the first error.
type closers []io.Closer

func (cs closers) Close() error {
	var first error
	for _, c := range cs {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// archives returns a backup's archive files, base first.
func archives(b catalog.Backup) []catalog.BackupFile {
	var out []catalog.BackupFile
	for _, f := range b.Files {
		if f.Name == ManifestName {
			continue
		}
		if f.Tablespace == 0 {
			out = append([]catalog.BackupFile{f}, out...)
		} else {
			out = append(out, f)
		}
	}
	return out
}

// readManifest reads and parses a backup's stored manifest.
func readManifest(ctx context.Context, open Opener) (*Manifest, error) {
	_, m, err := loadManifest(ctx, open)
	return m, err
}

// walkArchive reads the stored archive f through open and calls fn for each
// tar entry, with the entry's data as r.
func walkArchive(ctx context.Context, open Opener, f catalog.BackupFile, fn func(h *tar.Header, r io.Reader) error) error {
	dr, err := openArchive(ctx, open, f)
	if err != nil {
		return err
	}
	defer dr.Close()
	tr := tar.NewReader(dr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: read tar: %w", f.Name, err)
		}
		if err := fn(h, tr); err != nil {
			return fmt.Errorf("%s: %s: %w", f.Name, h.Name, err)
		}
	}
}

// checkStored reads back every stored file of backup b through open and
// checks that the repository holds exactly what the backup wrote: the stored
// bytes (in an encrypted repository, decrypted and each chunk authenticated;
// in a bucket, downloaded) have the size and SHA-256 recorded while they were
// written. Together with the checks made while the backup streamed in (each
// file against the manifest; each compressed archive decoded back to what
// streamed in), the stored backup is known to give back the files of the
// manifest, without decompressing it again.
func checkStored(ctx context.Context, open Opener, b catalog.Backup) error {
	for _, f := range b.Files {
		if err := checkStoredFile(ctx, open, f); err != nil {
			return fmt.Errorf("stored %s: %w", f.Name, err)
		}
	}
	return nil
}

func checkStoredFile(ctx context.Context, open Opener, f catalog.BackupFile) error {
	if f.SHA256Stored == "" {
		return errors.New("no SHA-256 was recorded when it was written")
	}
	rc, err := open(ctx, f.Name)
	if err != nil {
		return err
	}
	defer rc.Close()
	sha := sha256.New()
	n, err := copyCtx(ctx, sha, rc)
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if n != f.StoredSize {
		return fmt.Errorf("%d bytes stored, %d were written", n, f.StoredSize)
	}
	if got := hex.EncodeToString(sha.Sum(nil)); got != f.SHA256Stored {
		return fmt.Errorf("SHA-256 of the stored bytes is %s, %s was written", got, f.SHA256Stored)
	}
	return nil
}

// copyCtx copies src to dst until EOF, stopping when ctx is done.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := src.Read(buf)
		if m > 0 {
			if _, werr := dst.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// Checked says what a verification read.
type Checked struct {
	// Files is how many files of the manifest were checked, Bytes their size.
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// Verify reads every stored archive of backup b through open, decompresses
// it, and checks each file against the stored manifest (size and checksum),
// and that every file of the manifest is there, and that the manifest's WAL
// ranges are the backup's start and stop positions. A mismatch is a
// *VerifyError listing every problem.
func Verify(ctx context.Context, open Opener, b catalog.Backup) (Checked, error) {
	m, err := readManifest(ctx, open)
	if err != nil {
		return Checked{}, err
	}
	check := newFileCheck(m, nil)
	buf := make([]byte, 256<<10)
	for _, f := range archives(b) {
		prefix := ""
		if f.Tablespace != 0 {
			prefix = fmt.Sprintf("pg_tblspc/%d/", f.Tablespace)
		}
		err := walkArchive(ctx, open, f, func(h *tar.Header, r io.Reader) error {
			if h.Typeflag != tar.TypeReg {
				return nil
			}
			return check.file(prefix+strings.TrimPrefix(h.Name, "./"), r, buf)
		})
		if err != nil {
			return check.checked, err
		}
	}
	if err := check.result(); err != nil {
		return check.checked, err
	}
	if b.StopLSN != 0 {
		return check.checked, checkWALRanges(m, b)
	}
	return check.checked, nil
}
