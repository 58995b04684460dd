package stream

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/walhub/walhub/storage"
	"golang.org/x/sys/unix"
)

// maxSpares is how many files of stored segments a receiver keeps to reuse
// as its next .partial files, as PostgreSQL recycles its WAL segments: a
// reused file overwrites pages and blocks it already has, where a new one
// needs new page-cache pages and new blocks, and each removal frees them
// again (about a tenth of the receiver's CPU per MB on bench/receive.sh).
// Each spare is one segment of disk on top of what the working area holds
// anyway.
const maxSpares = 2

// partialFiles keeps a receiver's .partial files and its spare files, and
// what its readers (the hub) need to know of them.
//
// A .partial made from a spare holds, past what the writer has written, the
// WAL of the older segment the file held before. Nothing may read those
// bytes as WAL:
//   - the writer tells here how much of the .partial it writes it has
//     written (written), and OpenPartial bounds readers by it;
//   - when the writer stops writing a reused file before its end (the end of
//     a timeline, a session that ends), it cuts the file there first
//     (walWriter.close), so that every other .partial holds only its own WAL;
//   - after a crash the newest .partial may be a reused file at its full
//     size: recoverPartial keeps of it only the WAL its page headers and
//     record CRCs prove (an older segment's pages carry another address),
//     and until that ran at start (ready) no reader gets a .partial;
//   - a file that is open for reading (in this process) is removed once
//     stored, never reused, so that a reader never finds another segment's
//     WAL under the name it opened; nor is one that has another link (a
//     local store without compression links the .partial as the object);
//   - spares have temporary names (storage.SparePath), which a restart
//     removes and listings skip.
type partialFiles struct {
	work   *storage.WorkArea
	server string

	// ready is closed once the .partial files on disk hold only their own
	// WAL (what a crash left was proven and cut, see recoverPartial).
	ready     chan struct{}
	readyOnce sync.Once

	mu sync.Mutex
	// current is the path of the .partial being written, "" when none;
	// written is how many of its bytes the writer has written.
	current string
	written atomic.Int64
	// spares are the paths of the spare files, at most maxSpares; next
	// numbers the next one.
	spares []string
	next   int
}

func newPartialFiles(work *storage.WorkArea, server string) *partialFiles {
	return &partialFiles{work: work, server: server, ready: make(chan struct{})}
}

// setReady says that the .partial files on disk hold only their own WAL.
func (p *partialFiles) setReady() { p.readyOnce.Do(func() { close(p.ready) }) }

// openReaders counts the .partial files this process has open for reading,
// by path (see partialFiles: such a file is never reused). It is the
// process's, not a receiver's: a reload can replace a server's receiver while
// a reader still holds a file the old one opened.
var openReaders = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

// create makes the .partial of segment name, to be written from its start:
// from a spare file when there is one, else a new (or truncated) file.
// recycled says the file holds another segment's WAL past what is written.
func (p *partialFiles) create(name string) (f *os.File, recycled bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.spares) > 0 {
		spare := p.spares[len(p.spares)-1]
		p.spares = p.spares[:len(p.spares)-1]
		if f, err = p.work.RecyclePartial(p.server, name, spare); err == nil {
			p.current = f.Name()
			p.written.Store(0)
			return f, true, nil
		}
		// This spare cannot be used (it is gone?): make a new file instead.
		os.Remove(spare)
	}
	if f, err = p.work.CreatePartial(p.server, name); err != nil {
		return nil, false, err
	}
	p.current = f.Name()
	p.written.Store(0)
	return f, false, nil
}

// resume opens the existing .partial of segment name to append to it: it
// holds size bytes, all WAL of its own (recoverPartial cut it there).
func (p *partialFiles) resume(name string, size int64) (*os.File, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := p.work.AppendPartial(p.server, name)
	if err != nil {
		return nil, err
	}
	p.current = f.Name()
	p.written.Store(size)
	return f, nil
}

// closed says that the writer no longer writes the current .partial, which
// now holds its own WAL only, to its end.
func (p *partialFiles) closed() {
	p.mu.Lock()
	p.current = ""
	p.mu.Unlock()
}

// dropSpares removes the spare files (a session starts: Partials removes
// what a crash left of them).
func (p *partialFiles) dropSpares() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.spares {
		os.Remove(s)
	}
	p.spares = nil
}

// retire disposes of the .partial at path, whose segment is stored: kept
// as a spare when there is room and nothing else has the file, else
// removed.
func (p *partialFiles) retire(path string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	openReaders.Lock()
	defer openReaders.Unlock()
	if len(p.spares) < maxSpares && openReaders.n[path] == 0 && path != p.current && soleLink(path) {
		spare := p.work.SpareFile(p.server, p.next)
		p.next++
		if err := os.Rename(path, spare); err == nil {
			p.spares = append(p.spares, spare)
			return nil
		}
	}
	return storage.RemovePartial(path)
}

// soleLink tells whether the file at path has no other name.
func soleLink(path string) bool {
	var st unix.Stat_t
	return unix.Lstat(path, &st) == nil && st.Nlink == 1 && st.Mode&unix.S_IFMT == unix.S_IFREG
}

// PartialFile is a .partial opened for reading (Receiver.OpenPartial).
type PartialFile struct {
	f    *os.File
	path string
	once sync.Once
	// Size is how many of its bytes hold WAL the receiver wrote: read no
	// further.
	Size int64
}

// ReadAt reads the file; bytes past Size are not its WAL.
func (f *PartialFile) ReadAt(b []byte, off int64) (int, error) { return f.f.ReadAt(b, off) }

// Close closes the file; the receiver may then reuse it.
func (f *PartialFile) Close() error {
	err := f.f.Close()
	f.once.Do(func() {
		openReaders.Lock()
		if openReaders.n[f.path]--; openReaders.n[f.path] <= 0 {
			delete(openReaders.n, f.path)
		}
		openReaders.Unlock()
	})
	return err
}

// OpenPartial opens the .partial of segment name for reading and says how
// much of it holds WAL received: a .partial being written only up to what is
// written (a reused file holds an older segment's WAL past it). It waits
// until the receiver has checked what a crash left (see partialFiles) or ctx
// ends. A missing file wraps os.ErrNotExist. Close the file when done.
func (r *Receiver) OpenPartial(ctx context.Context, name string) (*PartialFile, error) {
	p := r.files
	select {
	case <-p.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("%s.partial: the receiver has not checked its .partial files yet: %w", name, ctx.Err())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	openReaders.Lock()
	defer openReaders.Unlock()
	path := p.work.PartialFile(p.server, name)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s.partial: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s.partial: %w", name, err)
	}
	size := fi.Size()
	if path == p.current {
		size = min(size, p.written.Load())
	}
	openReaders.n[path]++
	return &PartialFile{f: f, path: path, Size: size}, nil
}
