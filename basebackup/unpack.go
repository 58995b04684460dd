package basebackup

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
)

// Unpack writes stored backup b from repo into the empty (or missing)
// directory target, and each tablespace into tablespaceDirs[oid] (default:
// its original location). See UnpackFrom.
func Unpack(ctx context.Context, repo *repository.Repository, b catalog.Backup, target string, tablespaceDirs map[uint32]string, progress func(done int64)) error {
	return UnpackFrom(ctx, RepoOpener(repo, b), b, target, tablespaceDirs, progress)
}

// Owner is the user and group an unpack gives what it writes: each file,
// directory and link is given to them as it is made, before it is fsynced,
// so that no second pass over the data directory is needed. A nil *Owner
// leaves everything to the user running the unpack.
type Owner struct{ UID, GID int }

// give hands the file, directory or link at path (not what a link points at)
// to o; nothing when o is nil.
func (o *Owner) give(path string) error {
	if o == nil {
		return nil
	}
	if err := os.Lchown(path, o.UID, o.GID); err != nil {
		return fmt.Errorf("give %s to %d:%d: %w", path, o.UID, o.GID, err)
	}
	return nil
}

// ids is o's user and group, -1 for each when o is nil (see storage.WriteFile).
func (o *Owner) ids() (uid, gid int) {
	if o == nil {
		return -1, -1
	}
	return o.UID, o.GID
}

// UnpackFrom writes backup b, whose files open reads, into target: base.tar
// into target, each tablespace archive into its directory, the symbolic links
// pg_tblspc/<oid> to them, and the manifest as target/backup_manifest (where
// pg_verifybackup looks). Every file is checked against the manifest (size and
// checksum) as it is written; any difference, like any error, stops the unpack
// and is returned (a *VerifyError names the file). When a tablespace is moved,
// tablespace_map is rewritten with the new directory after it was checked (so
// the copy no longer matches the manifest: verify it later with
// VerifyDir(ctx, target, "tablespace_map")).
//
// Every file and directory is fsynced before it returns, and global/pg_control
// is written under another name and put in place only after everything else is
// durable: a directory whose unpack failed or was killed half-way has no
// pg_control, and PostgreSQL refuses to start on it. progress, when set, gets
// the bytes unpacked so far.
func UnpackFrom(ctx context.Context, open Opener, b catalog.Backup, target string, tablespaceDirs map[uint32]string, progress func(done int64)) error {
	return UnpackFromAs(ctx, open, b, target, tablespaceDirs, nil, progress)
}

// UnpackFromAs is UnpackFrom giving everything it writes, target and the
// tablespace directories included, to owner (see Owner).
func UnpackFromAs(ctx context.Context, open Opener, b catalog.Backup, target string, tablespaceDirs map[uint32]string, owner *Owner, progress func(done int64)) error {
	arcs, dirs, moved, err := tablespaceTargets(b, tablespaceDirs)
	if err != nil {
		return err
	}
	manifest, m, err := loadManifest(ctx, open)
	if err != nil {
		return err
	}
	for _, d := range append([]string{target}, slices.Collect(maps.Values(dirs))...) {
		if err := prepareEmptyDir(d); err != nil {
			return err
		}
		if err := owner.give(d); err != nil {
			return err
		}
	}
	x := newExtractor(progress)
	x.owner = owner
	x.check = newFileCheck(m, nil)
	x.ahead = m
	if err := x.extractArchives(ctx, open, arcs, target, dirs); err != nil {
		return err
	}
	if err := x.check.result(); err != nil {
		return err
	}
	if len(dirs) > 0 {
		if err := linkTablespaces(target, dirs, owner); err != nil {
			return err
		}
	}
	if moved {
		if err := rewriteTablespaceMap(target, dirs, owner); err != nil {
			return err
		}
	}
	uid, gid := owner.ids()
	if err := storage.WriteFile(filepath.Join(target, ManifestName), manifest, 0o600, uid, gid); err != nil {
		return err
	}
	return x.finish(ctx)
}

// extractArchives unpacks arcs (base first) into target and the tablespace
// directories, one archive after the other through one pool of writers, and
// waits for the last file to be written (not yet fsynced: see finish).
func (x *extractor) extractArchives(ctx context.Context, open Opener, arcs []catalog.BackupFile, target string, dirs map[uint32]string) error {
	x.w = newFileWriters(ctx, x.writers, x.owner)
	if x.ahead != nil {
		roots := make([]archiveRoot, len(arcs))
		for i, f := range arcs {
			roots[i] = archiveRoot{dir: target}
			if f.Tablespace != 0 {
				roots[i] = archiveRoot{dir: dirs[f.Tablespace], prefix: fmt.Sprintf("pg_tblspc/%d/", f.Tablespace)}
			}
		}
		x.w.pre = newPrecreator(x.w.ctx, x.ahead, roots, x.owner, &x.w.creating).start()
	}
	for _, f := range arcs {
		dir, prefix := target, ""
		if f.Tablespace != 0 {
			dir, prefix = dirs[f.Tablespace], fmt.Sprintf("pg_tblspc/%d/", f.Tablespace)
		}
		x.prefix = prefix
		if err := x.extractStored(open, f, dir); err != nil {
			x.w.fail(err)
			break
		}
	}
	err := x.w.wait()
	// The precreator made directories the reader then found made: they
	// are fsynced with the others.
	listed := make(map[string]bool, len(x.dirs))
	for _, d := range x.dirs {
		listed[d] = true
	}
	for _, d := range x.w.pre.stop() {
		if !listed[d] {
			x.dirs = append(x.dirs, d)
		}
	}
	return err
}

// extractStored unpacks the stored archive f into dir.
func (x *extractor) extractStored(open Opener, f catalog.BackupFile, dir string) error {
	dr, err := openArchive(x.w.ctx, open, f)
	if err != nil {
		return err
	}
	defer dr.Close()
	if s, ok := dr.(archiveStream); ok {
		x.frames = s.frames()
		defer func() { x.frames = nil }()
	}
	if err := x.extract(dr, dir); err != nil {
		return fmt.Errorf("unpack %s into %s: %w", f.Name, dir, err)
	}
	return nil
}

// loadManifest reads a backup's stored manifest, as stored and parsed.
func loadManifest(ctx context.Context, open Opener) ([]byte, *Manifest, error) {
	rc, err := open(ctx, ManifestName)
	if err != nil {
		return nil, nil, fmt.Errorf("open manifest: %w", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("read manifest: %w", err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, nil, err
	}
	return data, m, nil
}

// tablespaceTargets returns the archives of b (base first) and the directory
// each tablespace goes to (tablespaceDirs[oid], else its original location),
// and whether any moves.
func tablespaceTargets(b catalog.Backup, tablespaceDirs map[uint32]string) ([]catalog.BackupFile, map[uint32]string, bool, error) {
	arcs := archives(b)
	if len(arcs) == 0 || arcs[0].Tablespace != 0 {
		return nil, nil, false, fmt.Errorf("backup %s has no base archive", b.ID)
	}
	dirs := map[uint32]string{}
	moved := false
	for _, f := range arcs[1:] {
		dir := f.Location
		if d, ok := tablespaceDirs[f.Tablespace]; ok && d != "" {
			dir = d
			moved = moved || filepath.Clean(d) != filepath.Clean(f.Location)
		}
		if !filepath.IsAbs(dir) {
			return nil, nil, false, fmt.Errorf("tablespace %d: directory %q is not absolute", f.Tablespace, dir)
		}
		dirs[f.Tablespace] = filepath.Clean(dir)
	}
	for oid := range tablespaceDirs {
		if _, ok := dirs[oid]; !ok {
			return nil, nil, false, fmt.Errorf("backup %s has no tablespace %d", b.ID, oid)
		}
	}
	return arcs, dirs, moved, nil
}

// ExtractTar writes the uncompressed tar stream r into dir (which must exist),
// refusing any entry that would land outside it, and fsyncs what it wrote. It
// returns the bytes of file data written. Use it for archives that come from
// elsewhere (over HTTP).
func ExtractTar(ctx context.Context, r io.Reader, dir string, progress func(done int64)) (int64, error) {
	x := newExtractor(progress)
	x.w = newFileWriters(ctx, x.writers, nil)
	err := x.extract(r, dir)
	if err != nil {
		x.w.fail(err)
	}
	if err := x.w.wait(); err != nil {
		return x.done, err
	}
	return x.done, x.finish(ctx)
}

// controlFile is the manifest path of pg_control, which an unpack puts in
// place last (see UnpackFrom).
const controlFile = "global/pg_control"

// heldBackSuffix is added to the name of pg_control while the rest of an
// unpack is not yet durable.
const heldBackSuffix = ".walhub-restoring"

// extractor unpacks archives. One goroutine (the caller's) reads and
// decompresses the tar stream, makes the directories, and hands each regular
// file to a pool of writers (fileWriters), which write, check and start the
// writeback of many files at once, and fsync them on other goroutines while
// the unpack goes on (one fsync after each file on the writer would
// serialise a thousand disk waits). The extractor remembers every directory,
// and finish fsyncs them, and any file not fsynced yet, at the end in one
// parallel pass.
type extractor struct {
	progress func(int64)
	// done is the bytes of file data read from the archives so far.
	done int64
	// dirs and files are what finish fsyncs (files: those the writers do
	// not, such as the files a delta restore keeps).
	dirs  []string
	files []string
	// made are the directories known to exist (the archive's, and the
	// parents made for files whose directory it does not list).
	made map[string]bool
	// heldBack is pg_control's temporary path, once written; finish renames
	// it into place.
	heldBack string
	// check, when set, checks every file against a manifest: the writers
	// check sizes and checksums, the extractor which files there are.
	check *fileCheck
	// prefix is the manifest path of the archive being unpacked ("" for
	// base, "pg_tblspc/OID/" for a tablespace).
	prefix  string
	writers int
	// owner, when set, is given every file and directory made.
	owner *Owner
	w     *fileWriters
	buf   []byte
	// ahead, when set, is the manifest whose files are created ahead of
	// their data (see precreator): only into empty directories.
	ahead *Manifest
	// delta, when set, makes a delta restore into an existing directory.
	delta *delta
	// frames, when set, is the frameReader under the tar stream being
	// read: the writers get each file's bytes straight from its buffers
	// (see sendLent).
	frames *frameReader
}

func newExtractor(progress func(int64)) *extractor {
	return &extractor{progress: progress, made: map[string]bool{}, buf: make([]byte, 256<<10)}
}

// entryPath validates a tar entry name and returns it relative to the target,
// or "" for the root itself.
func entryPath(name string) (string, error) {
	n := strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
	if n == "" || n == "." {
		return "", nil
	}
	if !fs.ValidPath(n) || strings.Contains(n, "\\") {
		return "", fmt.Errorf("unsafe entry name %q: it would leave the target directory", name)
	}
	return n, nil
}

// extract reads the tar stream r into dir, handing regular files to x.w.
func (x *extractor) extract(r io.Reader, dir string) error {
	x.dirs = append(x.dirs, dir)
	x.made[dir] = true
	tr := tar.NewReader(r)
	for {
		if err := x.w.failed(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		rel, err := entryPath(h.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue
		}
		full := filepath.Join(dir, filepath.FromSlash(rel))
		mode := os.FileMode(h.Mode) & os.ModePerm
		if x.delta != nil && (h.Typeflag == tar.TypeDir || h.Typeflag == tar.TypeReg) {
			done, err := x.delta.entry(x, h.Typeflag == tar.TypeDir, rel, full, tr)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := x.mkdirParents(filepath.Dir(full)); err != nil {
				return err
			}
			if err := os.Mkdir(full, mode|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			if err := os.Chmod(full, mode|0o700); err != nil {
				return err
			}
			if err := x.owner.give(full); err != nil {
				return err
			}
			if !x.made[full] {
				x.made[full] = true
				x.dirs = append(x.dirs, full)
			}
		case tar.TypeReg:
			if err := x.sendFile(x.prefix+rel, full, mode, h.Size, tr, x.frames != nil && !sparse(h)); err != nil {
				return err
			}
		case tar.TypeSymlink:
			// pg_tblspc links are made afterwards from the tablespace list;
			// no other link belongs in a data directory.
			if path.Dir(rel) == "pg_tblspc" {
				continue
			}
			return fmt.Errorf("refusing symbolic link %s -> %s", rel, h.Linkname)
		default:
			return fmt.Errorf("refusing entry %s of tar type %q", rel, h.Typeflag)
		}
	}
}

// sparse says whether h is a sparse file of the PAX format, whose data the
// tar reader does not pass through as it is in the stream (GNU sparse files
// have a type of their own, which extract refuses).
func sparse(h *tar.Header) bool {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// sendFile hands the regular file at full (manifest path mpath), whose size
// bytes r holds, to the writers, chunk by chunk; with lend, r is a tar
// reader on x.frames, at the start of the file's data (see sendLent).
func (x *extractor) sendFile(mpath, full string, mode os.FileMode, size int64, r io.Reader, lend bool) error {
	if err := x.mkdirParents(filepath.Dir(full)); err != nil {
		return err
	}
	j := &fileJob{path: full, mpath: mpath, mode: mode, size: size, chunks: make(chan chunk, 4)}
	if x.check != nil {
		want, ok := x.check.expect(mpath)
		if !ok {
			return mismatch(fmt.Sprintf("%s is in the backup but not in the manifest", mpath))
		}
		j.want = want
	}
	if mpath == controlFile {
		j.path = full + heldBackSuffix
		if err := os.Remove(j.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err // left by a delta restore that failed
		}
		x.heldBack = j.path
	}
	if err := send(x.w, x.w.jobs, j); err != nil {
		return err
	}
	defer close(j.chunks) // on an error, before all of size: the writer drops the file
	if lend {
		return x.sendLent(j, r)
	}
	return x.sendChunks(j, r)
}

// sendLent hands the file's data to the writer as parts of the decoded
// frames themselves (frameReader.lend), with no copy: the bytes of a
// restore were copied once more than they are written before, from the
// frames into the writers' buffers (3-7% of its CPU time in profiles). r, the
// tar reader, reads each part again into lentSink, which moves it and the
// frameReader past the part without copying, and checks as before that the
// archive holds the whole file. When the frames have nothing to lend (the
// stream goes on through the streaming decoder), the rest is copied.
func (x *extractor) sendLent(j *fileJob, r io.Reader) error {
	for left := j.size; left > 0; {
		b, frame := x.frames.lend(int(min(left, chunkSize)))
		if b == nil {
			return x.sendChunks(j, r)
		}
		n, rerr := r.Read(lentSink[:len(b)])
		if n > 0 {
			if err := send(x.w, j.chunks, chunk{b: b[:n], frame: frame}); err != nil {
				frame.release()
				return err
			}
			x.sent(n)
			left -= int64(n)
		} else {
			frame.release()
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			return nil
		default:
			return fmt.Errorf("read %s: %w", j.mpath, rerr)
		}
	}
	return nil
}

// sent counts n more bytes handed to the writers.
func (x *extractor) sent(n int) {
	x.done += int64(n)
	if x.progress != nil {
		x.progress(x.done)
	}
}

func (x *extractor) sendChunks(j *fileJob, r io.Reader) error {
	for {
		b, err := x.w.buffer()
		if err != nil {
			return err
		}
		n, rerr := fill(r, b)
		if n > 0 {
			if err := send(x.w, j.chunks, chunk{b: b[:n]}); err != nil {
				return err
			}
			x.sent(n)
		} else {
			x.w.free <- b
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			return nil
		default:
			return fmt.Errorf("read %s: %w", j.mpath, rerr)
		}
	}
}

// fill reads r into b until b is full or r ends: unlike io.ReadFull, it
// returns io.EOF for an end after some bytes, and passes on any other error
// (tar's io.ErrUnexpectedEOF for a cut archive among them).
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// mkdirParents makes dir and its missing parents, remembering them for the
// final fsync (an archive need not list every directory).
func (x *extractor) mkdirParents(dir string) error {
	if x.made[dir] {
		return nil
	}
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		x.made[dir] = true
		return nil
	}
	if err := x.mkdirParents(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := x.owner.give(dir); err != nil {
		return err
	}
	x.made[dir] = true
	x.dirs = append(x.dirs, dir)
	return nil
}

// finish fsyncs the files the writers did not write (x.files) and every
// directory (the writers' early syncers fsynced every file they wrote), then
// puts pg_control in place and fsyncs its directory: only now is the
// unpacked copy startable.
func (x *extractor) finish(ctx context.Context) error {
	if err := syncAll(ctx, x.files, x.dirs); err != nil {
		return err
	}
	x.files, x.dirs = nil, nil
	if x.heldBack == "" {
		return nil
	}
	final := strings.TrimSuffix(x.heldBack, heldBackSuffix)
	if err := os.Rename(x.heldBack, final); err != nil {
		return fmt.Errorf("put %s in place: %w", final, err)
	}
	x.heldBack = ""
	return storage.SyncDir(filepath.Dir(final))
}

// prepareEmptyDir creates dir (mode 0700) or checks that it is empty.
func prepareEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := storage.MkdirAllDurable(dir); err != nil {
			return err
		}
		return os.Chmod(dir, 0o700)
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("directory %s is not empty", dir)
	}
	return os.Chmod(dir, 0o700)
}

// linkTablespaces makes pg_tblspc/<oid> point at each tablespace directory,
// giving pg_tblspc and the links to owner (a link's owner, which PostgreSQL
// never looks at, is durable with the next journal commit: a link cannot be
// fsynced).
func linkTablespaces(target string, dirs map[uint32]string, owner *Owner) error {
	tblspc := filepath.Join(target, "pg_tblspc")
	if err := os.MkdirAll(tblspc, 0o700); err != nil {
		return err
	}
	if err := owner.give(tblspc); err != nil {
		return err
	}
	for oid, dir := range dirs {
		link := filepath.Join(tblspc, strconv.FormatUint(uint64(oid), 10))
		if to, err := os.Readlink(link); err == nil && to == dir {
			continue // a delta restore into a directory that has it already
		}
		if err := removePath(link); err != nil {
			return err
		}
		if err := os.Symlink(dir, link); err != nil {
			return fmt.Errorf("link tablespace %d: %w", oid, err)
		}
		if err := owner.give(link); err != nil {
			return err
		}
	}
	return storage.SyncDir(tblspc)
}

// rewriteTablespaceMap writes tablespace_map with the new directories, escaped
// as PostgreSQL writes them, owned by owner.
func rewriteTablespaceMap(target string, dirs map[uint32]string, owner *Owner) error {
	oids := make([]uint32, 0, len(dirs))
	for oid := range dirs {
		oids = append(oids, oid)
	}
	sort.Slice(oids, func(i, j int) bool { return oids[i] < oids[j] })
	var sb strings.Builder
	for _, oid := range oids {
		sb.WriteString(strconv.FormatUint(uint64(oid), 10))
		sb.WriteByte(' ')
		for _, c := range dirs[oid] {
			if c == '\n' || c == '\r' || c == '\\' {
				sb.WriteByte('\\')
			}
			sb.WriteRune(c)
		}
		sb.WriteByte('\n')
	}
	uid, gid := owner.ids()
	return storage.WriteFile(filepath.Join(target, "tablespace_map"), []byte(sb.String()), 0o600, uid, gid)
}

// VerifyDir checks the data directory dir against dir/backup_manifest, as
// pg_verifybackup does without WAL: every file of the manifest is there with
// its size and checksum, and no other file is. Like pg_verifybackup it
// ignores what a restore changes (pg_wal, postgresql.auto.conf,
// recovery.signal, standby.signal) and the paths in ignore.
func VerifyDir(ctx context.Context, dir string, ignore ...string) error {
	data, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return err
	}
	ignore = append([]string{ManifestName, "pg_wal", "postgresql.auto.conf", "recovery.signal", "standby.signal"}, ignore...)
	check := newFileCheck(m, ignore)
	skip := map[string]bool{}
	for _, p := range ignore {
		skip[p] = true
	}
	buf := make([]byte, 256<<10)
	var walk func(rel string) error
	walk = func(rel string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		full := filepath.Join(dir, filepath.FromSlash(rel))
		entries, err := os.ReadDir(full)
		if err != nil {
			return err
		}
		for _, e := range entries {
			child := path.Join(rel, e.Name())
			if skip[child] {
				continue
			}
			// Stat follows the pg_tblspc links into the tablespaces.
			fi, err := os.Stat(filepath.Join(full, e.Name()))
			if err != nil {
				return err
			}
			if fi.IsDir() {
				if err := walk(child); err != nil {
					return err
				}
				continue
			}
			f, err := os.Open(filepath.Join(full, e.Name()))
			if err != nil {
				return err
			}
			err = check.file(child, f, buf)
			f.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return fmt.Errorf("verify %s: %w", dir, err)
	}
	return check.result()
}
