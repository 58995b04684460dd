package basebackup

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// createAhead is the most files a precreator keeps created and not yet taken
// by a writer.
const createAhead = 1024

// precreator creates, on its own goroutine, the files an unpack is about to
// write, in the order of the manifest (which is the order of the archives),
// ahead of their data: creating a file is the slowest step of writing a small
// one (ext4 searches its inode bitmaps for a free inode, and skips those freed
// in the last minute), and done here it overlaps with the decompression and
// writing of the large files before them. Each file is created empty (mode
// 0600, given to the owner) and closed; the writer that gets its data from
// the archive takes it (take) and opens it instead of creating it, and gives
// it its mode at the end as before. A file the writers reach before the
// precreator does is created by its writer, and skipped here.
//
// An unpack that fails leaves the files created ahead behind, empty, like
// the files it was writing: restore removes everything it wrote after a
// failure, and global/pg_control (held back until everything is durable) is
// never created ahead, so no failed unpack looks complete.
type precreator struct {
	mu   sync.Mutex
	cond *sync.Cond
	// files are the plans in manifest order; state is keyed by path.
	files []*planned
	state map[string]*planned
	// ready counts files created and not yet taken; at most ahead.
	ready   int
	ahead   int
	stopped bool
	done    chan struct{}
	owner   *Owner
	// create is the writers' creation lock (see fileWriters.creating).
	create *sync.Mutex
	// dirs are the directories the precreator made, for the final fsync.
	dirs []string
	made map[string]bool
	ctx  context.Context
}

// planned is one file to create ahead.
type planned struct {
	path  string
	state plannedState
}

type plannedState int

const (
	// waiting: nobody created it yet.
	waiting plannedState = iota
	// creating: the precreator is creating it.
	creating
	// created: it exists, empty, for its writer to take.
	created
	// writerCreates: its writer creates it itself (it came first, or the
	// precreator failed on it).
	writerCreates
)

// newPrecreator plans the regular files of m that unpack into roots (base
// first), except global/pg_control; start creates them, until ctx ends or
// stop is called.
func newPrecreator(ctx context.Context, m *Manifest, roots []archiveRoot, owner *Owner, create *sync.Mutex) *precreator {
	p := &precreator{ctx: ctx, ahead: createAhead, state: map[string]*planned{}, done: make(chan struct{}), owner: owner, create: create, made: map[string]bool{}}
	p.cond = sync.NewCond(&p.mu)
	for _, r := range roots {
		p.made[r.dir] = true
		for _, f := range m.Files {
			rel, ok := strings.CutPrefix(f.Path, r.prefix)
			if !ok || (r.prefix == "" && inTablespace(f.Path, roots)) || f.Path == controlFile {
				continue
			}
			if e, err := entryPath(rel); err != nil || e != rel {
				continue // not a plain relative path: left to the archive's checks
			}
			full := filepath.Join(r.dir, filepath.FromSlash(rel))
			if p.state[full] != nil {
				continue
			}
			pl := &planned{path: full}
			p.files = append(p.files, pl)
			p.state[full] = pl
		}
	}
	return p
}

// archiveRoot is where one archive unpacks: its directory, and the prefix of
// its files' manifest paths ("" for base, "pg_tblspc/OID/").
type archiveRoot struct{ dir, prefix string }

// inTablespace reports whether the manifest path p belongs to a tablespace
// archive of roots.
func inTablespace(p string, roots []archiveRoot) bool {
	for _, r := range roots {
		if r.prefix != "" && strings.HasPrefix(p, r.prefix) {
			return true
		}
	}
	return false
}

// start starts creating the files on another goroutine.
func (p *precreator) start() *precreator {
	go p.run()
	return p
}

func (p *precreator) run() {
	defer close(p.done)
	for _, pl := range p.files {
		p.mu.Lock()
		for p.ready >= p.ahead && !p.stopped {
			p.cond.Wait()
		}
		if p.stopped || p.ctx.Err() != nil {
			p.mu.Unlock()
			return
		}
		if pl.state != waiting {
			p.mu.Unlock()
			continue
		}
		pl.state = creating
		p.mu.Unlock()
		err := p.createFile(pl.path)
		p.mu.Lock()
		if err != nil {
			pl.state = writerCreates
		} else {
			pl.state = created
			p.ready++
		}
		p.cond.Broadcast()
		p.mu.Unlock()
		if err != nil {
			return // the writers create the rest, and report what fails
		}
	}
}

// createFile creates the empty file at path, and any missing parent.
func (p *precreator) createFile(path string) error {
	if err := p.mkdirParents(filepath.Dir(path)); err != nil {
		return err
	}
	p.create.Lock()
	fd, err := openFD(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
	p.create.Unlock()
	if err != nil {
		return &os.PathError{Op: "create", Path: path, Err: err}
	}
	if o := p.owner; o != nil {
		if err := unix.Fchown(fd, o.UID, o.GID); err != nil {
			unix.Close(fd)
			unix.Unlink(path)
			return &os.PathError{Op: "chown", Path: path, Err: err}
		}
	}
	if err := unix.Close(fd); err != nil {
		unix.Unlink(path)
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

// mkdirParents makes dir and its missing parents (mode 0700, given to the
// owner); the archive's own entry for a directory gives it its mode later.
func (p *precreator) mkdirParents(dir string) error {
	if p.made[dir] {
		return nil
	}
	if err := p.mkdirParents(filepath.Dir(dir)); err != nil {
		return err
	}
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		p.made[dir] = true // the unpack made it, and fsyncs it
		return nil
	}
	if err != nil {
		return err
	}
	if err := p.owner.give(dir); err != nil {
		return err
	}
	p.made[dir] = true
	p.mu.Lock()
	p.dirs = append(p.dirs, dir)
	p.mu.Unlock()
	return nil
}

// take reports whether the file at path was created ahead; it is then the
// caller's to open and write. When it was not, the caller creates it, and
// the precreator will not. A file being created is waited for.
func (p *precreator) take(path string) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.state[path]
	if pl == nil {
		return false
	}
	for pl.state == creating {
		p.cond.Wait()
	}
	if pl.state != created {
		pl.state = writerCreates
		return false
	}
	pl.state = writerCreates // a second entry of the same path creates, and fails
	p.ready--
	p.cond.Broadcast()
	return true
}

// stop ends the creating ahead and waits for it, and returns the
// directories the precreator made (to be fsynced with the others).
func (p *precreator) stop() []string {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	p.stopped = true
	p.cond.Broadcast()
	p.mu.Unlock()
	<-p.done
	return p.dirs
}
