package basebackup

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

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

// UnpackFrom writes backup b, whose files open reads, into target: base.tar
// into target, each tablespace archive into its directory, the symbolic links
// pg_tblspc/<oid> to them, and the manifest as target/backup_manifest (where
// pg_verifybackup looks). When a tablespace is moved, tablespace_map is
// rewritten with the new directory (so it no longer matches the manifest:
// verify with VerifyDir(ctx, target, "tablespace_map")). Every file and
// directory is fsynced. progress, when set, gets the bytes written so far.
func UnpackFrom(ctx context.Context, open Opener, b catalog.Backup, target string, tablespaceDirs map[uint32]string, progress func(done int64)) error {
	arcs, dirs, moved, err := tablespaceTargets(b, tablespaceDirs)
	if err != nil {
		return err
	}
	if err := prepareEmptyDir(target); err != nil {
		return err
	}
	for _, d := range dirs {
		if err := prepareEmptyDir(d); err != nil {
			return err
		}
	}
	x := &extractor{progress: progress}
	for _, f := range arcs {
		dir := target
		if f.Tablespace != 0 {
			dir = dirs[f.Tablespace]
		}
		rc, err := open(ctx, f.Name)
		if err != nil {
			return fmt.Errorf("open %s: %w", f.Name, err)
		}
		err = x.extractCompressed(ctx, rc, f.Compression, dir)
		rc.Close()
		if err != nil {
			return fmt.Errorf("unpack %s into %s: %w", f.Name, dir, err)
		}
	}
	if len(dirs) > 0 {
		if err := linkTablespaces(target, dirs); err != nil {
			return err
		}
	}
	if moved {
		if err := rewriteTablespaceMap(target, dirs); err != nil {
			return err
		}
	}
	if err := copyManifest(ctx, open, target); err != nil {
		return err
	}
	return x.syncDirs()
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
// refusing any entry that would land outside it. It returns the bytes of file
// data written. Use it for archives that come from elsewhere (over HTTP).
func ExtractTar(ctx context.Context, r io.Reader, dir string, progress func(done int64)) (int64, error) {
	x := &extractor{progress: progress}
	if err := x.extract(ctx, r, dir); err != nil {
		return x.done, err
	}
	return x.done, x.syncDirs()
}

// extractor unpacks archives, remembering the files and directories it must
// fsync. Like PostgreSQL's own sync of a data directory, it starts each file's
// writeback as soon as the file is written (sync_file_range, which does not
// wait) and fsyncs them all at the end, when most of the data is already on
// disk: one fsync after each file would serialise a thousand disk waits.
type extractor struct {
	progress func(int64)
	done     int64
	dirs     []string
	files    []string
	buf      []byte
	// delta, when set, makes a delta restore into an existing directory.
	delta *delta
}

func (x *extractor) extractCompressed(ctx context.Context, r io.Reader, compression, dir string) error {
	dr, err := Decompress(r, compression)
	if err != nil {
		return err
	}
	defer dr.Close()
	return x.extract(ctx, dr, dir)
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

func (x *extractor) extract(ctx context.Context, r io.Reader, dir string) error {
	if x.buf == nil {
		x.buf = make([]byte, 256<<10)
	}
	x.dirs = append(x.dirs, dir)
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
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
			if err := os.Mkdir(full, mode|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			if err := os.Chmod(full, mode|0o700); err != nil {
				return err
			}
			x.dirs = append(x.dirs, full)
		case tar.TypeReg:
			if err := x.writeFile(full, mode, tr); err != nil {
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

func (x *extractor) writeFile(full string, mode os.FileMode, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode|0o600)
	if err != nil {
		return err
	}
	for {
		n, rerr := r.Read(x.buf)
		if n > 0 {
			if _, err := f.Write(x.buf[:n]); err != nil {
				f.Close()
				return err
			}
			x.done += int64(n)
			if x.progress != nil {
				x.progress(x.done)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			f.Close()
			return rerr
		}
	}
	// Start writeback now; the fsync in syncDirs waits for it. Not every file
	// system supports it: then the fsync does all the work.
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	if err := f.Close(); err != nil {
		return err
	}
	x.files = append(x.files, full)
	return os.Chmod(full, mode|0o600)
}

// syncDirs fsyncs every file written, then every directory written to,
// deepest first.
func (x *extractor) syncDirs() error {
	for _, p := range x.files {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("fsync %s: %w", p, err)
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("fsync %s: %w", p, err)
		}
	}
	x.files = nil
	sort.Slice(x.dirs, func(i, j int) bool { return len(x.dirs[i]) > len(x.dirs[j]) })
	for _, d := range x.dirs {
		if err := storage.SyncDir(d); err != nil {
			return err
		}
	}
	x.dirs = nil
	return nil
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

// linkTablespaces makes pg_tblspc/<oid> point at each tablespace directory.
func linkTablespaces(target string, dirs map[uint32]string) error {
	tblspc := filepath.Join(target, "pg_tblspc")
	if err := os.MkdirAll(tblspc, 0o700); err != nil {
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
	}
	return storage.SyncDir(tblspc)
}

// rewriteTablespaceMap writes tablespace_map with the new directories, escaped
// as PostgreSQL writes them.
func rewriteTablespaceMap(target string, dirs map[uint32]string) error {
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
	return writeDurable(filepath.Join(target, "tablespace_map"), []byte(sb.String()))
}

func copyManifest(ctx context.Context, open Opener, target string) error {
	rc, err := open(ctx, ManifestName)
	if err != nil {
		return fmt.Errorf("open manifest: %w", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	return writeDurable(filepath.Join(target, ManifestName), data)
}

func writeDurable(path string, data []byte) error {
	f, err := storage.CreateTemp(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
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
