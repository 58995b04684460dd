package basebackup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/walhub/walhub/storage"
)

// How the file writers of an unpack are sized. The memory an unpack holds is
// at most chunkBuffers chunks, whatever the size of the files: a large file is
// streamed through, never held whole.
const (
	// chunkSize is the most of one file handed to a writer at once.
	chunkSize = 512 << 10
	// writebackEvery is how much of a file is written before its writeback
	// is started (see flusher): the disk then works while the rest of the
	// file is decompressed, instead of after the last file (the kernel
	// starts writeback by itself only beyond dirty_background_ratio of the
	// memory, gigabytes on a server).
	writebackEvery = 4 << 20
	// writebackQueue is how many writeback requests wait for the flusher;
	// a writer that finds the queue full drops its request (the final
	// fsync pass writes what no request started) rather than wait.
	writebackQueue = 64
	// earlySyncers fsync finished files while the unpack goes on (see
	// syncQueue). Up to earlySyncQueue files wait with their descriptor
	// open (far below a process's limit on open files); the files after
	// those wait by path, and are opened again for their fsync.
	earlySyncers   = 8
	earlySyncQueue = 256
	// syncWorkers fsync files and directories at once in the final pass:
	// each mostly waits for the disk, and the file system batches
	// concurrent fsyncs into fewer journal commits.
	syncWorkers = 16
)

// defaultWriters is how many files are written at once: enough that a file
// system call that waits (creating a file, a full writeback queue) does not
// stop the others, and few enough that memory stays small on a big machine.
func defaultWriters() int { return min(8, max(4, runtime.GOMAXPROCS(0))) }

// fileJob is one regular file of an archive, handed from the goroutine that
// reads the tar stream to a writer: its data arrives in chunks, and chunks is
// closed after the last one (or when the unpack fails).
type fileJob struct {
	// path is where the file is written.
	path string
	// mpath is its path in the manifest, for messages.
	mpath string
	mode  os.FileMode
	// size is its size in the archive: the writer gets fewer bytes only when
	// the reader failed, and says so itself.
	size int64
	// want is what the manifest says of it; nil when it is not checked.
	want   *ManifestFile
	chunks chan chunk
}

// chunk is a part of a file's data: in a buffer of the writers' free list,
// or lent from a decoded frame (frame set), which the writer releases once
// it has written and checked it.
type chunk struct {
	b     []byte
	frame *decodeJob
}

// done gives c's buffer back.
func (w *fileWriters) done(c chunk) {
	if c.frame != nil {
		c.frame.release()
		return
	}
	w.free <- c.b[:cap(c.b)]
}

// fileWriters writes the files of an unpack on several goroutines while one
// goroutine reads the tar stream (see extractor). Each writer checks the size
// and checksum of the file it writes against the manifest as the bytes pass,
// has the flusher start the file's writeback as it goes, and hands the
// finished file to the early syncers, which fsync it while the unpack goes
// on. The first error of any writer or syncer cancels the others and the
// reader: err says it.
type fileWriters struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	jobs   chan *fileJob
	// free holds the chunk buffers not in use; the reader waits for one
	// before it reads more of a file, which bounds memory.
	free chan []byte
	// creating is held while a file is created. The files of an archive are
	// created in few directories, and the kernel serialises creations in
	// one directory on its lock, where the writers that wait spin and take
	// the CPU the reader needs (8% of a restore's CPU in a profile on 2
	// cores, of a thousand files). Waiting here instead costs nothing.
	creating sync.Mutex
	// pre, when set, creates files ahead of their data (see precreator).
	pre *precreator
	// writeback feeds the flusher; closed by wait.
	writeback chan writebackRange
	flushed   chan struct{}
	// early feeds the early syncers; closed by wait.
	early   *syncQueue
	syncers sync.WaitGroup
	// fsync fsyncs an open file (fsyncFD; tests watch it).
	fsync func(fd int) error
	wg    sync.WaitGroup
	// owner, when set, is given each file as it is created.
	owner *Owner
}

// syncRequest asks an early syncer to fsync the file at path, open as fd (a
// duplicate the syncer closes), or by path when fd is -1.
type syncRequest struct {
	fd   int
	path string
}

// syncQueue holds the finished files waiting for the early syncers, oldest
// first. Up to max of them keep a descriptor open; the others are queued by
// path. Before, a file that found the queue full was left to the final pass
// after the last file: in a restore of many small files (a data directory
// has hundreds) half of them were, and their fsyncs made the tail of the
// restore while the syncers had sat idle during the large files before.
type syncQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	fds    []syncRequest
	paths  []string
	max    int
	closed bool
}

func newSyncQueue(max int) *syncQueue {
	q := &syncQueue{max: max}
	q.cond.L = &q.mu
	return q
}

// push queues the file at path, open as fd (-1: not open), which push takes
// over: it is kept open while fewer than max are, closed otherwise. It
// reports whether the file was queued by path.
func (q *syncQueue) push(fd int, path string) (byPath bool) {
	q.mu.Lock()
	if fd >= 0 && len(q.fds) < q.max {
		q.fds = append(q.fds, syncRequest{fd: fd, path: path})
	} else {
		if fd >= 0 {
			unix.Close(fd)
		}
		q.paths = append(q.paths, path)
		byPath = true
	}
	q.mu.Unlock()
	q.cond.Signal()
	return byPath
}

// pop returns the next file to fsync (the open ones first, so that their
// descriptors are soon closed), waiting for one; false once the queue is
// closed and empty.
func (q *syncQueue) pop() (syncRequest, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.fds) == 0 && len(q.paths) == 0 && !q.closed {
		q.cond.Wait()
	}
	switch {
	case len(q.fds) > 0:
		r := q.fds[0]
		q.fds = q.fds[1:]
		return r, true
	case len(q.paths) > 0:
		p := q.paths[0]
		q.paths = q.paths[1:]
		return syncRequest{fd: -1, path: p}, true
	}
	return syncRequest{}, false
}

// close ends the queue: pop returns what is left, then false.
func (q *syncQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// writebackRange asks the flusher to start the writeback of n bytes (0: to
// the end) at off of the file open as fd, a duplicate of the writer's
// descriptor that the flusher closes.
type writebackRange struct {
	fd     int
	off, n int64
}

func newFileWriters(ctx context.Context, writers int, owner *Owner) *fileWriters {
	if writers <= 0 {
		writers = defaultWriters()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	w := &fileWriters{ctx: ctx, cancel: cancel, jobs: make(chan *fileJob, 2*writers), free: make(chan []byte, 4*writers),
		writeback: make(chan writebackRange, writebackQueue), flushed: make(chan struct{}),
		early: newSyncQueue(earlySyncQueue), fsync: fsyncFD, owner: owner}
	for _, b := range buffers(4*writers, chunkSize) {
		w.free <- b
	}
	go w.flusher()
	w.syncers.Add(earlySyncers)
	for range earlySyncers {
		go w.earlySyncer()
	}
	w.wg.Add(writers)
	for range writers {
		go w.run()
	}
	return w
}

// flusher starts the writeback of the ranges the writers ask for, one after
// the other (storage.StartWriteback). The hint may wait for the disk's queue:
// on a writer, that stopped the writing of the next file (starting a large
// file's writeback every few MiB on the writer made restores slower on a busy
// machine). Here only the flusher waits.
func (w *fileWriters) flusher() {
	defer close(w.flushed)
	for r := range w.writeback {
		if w.ctx.Err() == nil {
			storage.StartWriteback(r.fd, r.off, r.n)
		}
		unix.Close(r.fd)
	}
}

// earlySyncer fsyncs finished files. Doing it during the unpack rather than
// all at the end overlaps the waits for the disk with the decompression and
// writing of the files after; each file is fsynced only once it is written
// whole, checked and given its mode.
func (w *fileWriters) earlySyncer() {
	defer w.syncers.Done()
	for {
		r, ok := w.early.pop()
		if !ok {
			return
		}
		if w.ctx.Err() != nil {
			if r.fd >= 0 {
				unix.Close(r.fd)
			}
			continue
		}
		if r.fd < 0 {
			fd, err := openFD(r.path, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err != nil {
				w.fail(fmt.Errorf("fsync %s: %w", r.path, err))
				continue
			}
			r.fd = fd
		}
		if err := w.fsync(r.fd); err != nil {
			w.fail(fmt.Errorf("fsync %s: %w", r.path, err))
		}
		unix.Close(r.fd)
	}
}

// finished hands the written file at path, open as fd, to the early
// syncers. When it waits for them by path (earlySyncQueue files wait
// already), it starts the file's writeback, so that the disk has it by the
// time they reach it.
func (w *fileWriters) finished(fd int, path string, started int64) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		dup = -1 // the syncer opens it again
	}
	if w.early.push(dup, path) {
		w.startWriteback(fd, started, 0)
	}
}

// startWriteback hands the range to the flusher, unless its queue is full.
func (w *fileWriters) startWriteback(fd int, off, n int64) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return // the fsync pass writes it
	}
	select {
	case w.writeback <- writebackRange{fd: dup, off: off, n: n}:
	default:
		unix.Close(dup)
	}
}

// fail cancels everything else; the first error given is the one reported.
func (w *fileWriters) fail(err error) { w.cancel(err) }

// failed returns the error that stopped the unpack, if any.
func (w *fileWriters) failed() error { return context.Cause(w.ctx) }

// wait ends the writers (no more files will come) and returns the first
// error that stopped the unpack, if any. Without one, every file written is
// fsynced.
func (w *fileWriters) wait() error {
	close(w.jobs)
	w.wg.Wait()
	close(w.writeback)
	w.early.close()
	// The files still queued for the early syncers are what the unpack
	// waits for now: fsync them syncWorkers at once, as the final pass does.
	for range syncWorkers - earlySyncers {
		w.syncers.Add(1)
		go w.earlySyncer()
	}
	<-w.flushed
	w.syncers.Wait()
	err := w.failed()
	w.cancel(nil)
	return err
}

// buffer returns a free chunk buffer, waiting for a writer to give one back.
func (w *fileWriters) buffer() ([]byte, error) {
	select {
	case b := <-w.free:
		return b, nil
	case <-w.ctx.Done():
		return nil, context.Cause(w.ctx)
	}
}

// send hands a chunk (or a new file) to the writers.
func send[T any](w *fileWriters, ch chan T, v T) error {
	select {
	case ch <- v:
		return nil
	case <-w.ctx.Done():
		return context.Cause(w.ctx)
	}
}

func (w *fileWriters) run() {
	defer w.wg.Done()
	for j := range w.jobs {
		if w.ctx.Err() != nil {
			w.drain(j)
			continue
		}
		if err := w.write(j); err != nil {
			w.fail(err)
			w.drain(j)
		}
	}
}

// drain gives back the buffers of a file that will not be written.
func (w *fileWriters) drain(j *fileJob) {
	for c := range j.chunks {
		w.done(c)
	}
}

// write writes one file from its chunks, checking it against the manifest.
// It works on the raw descriptor: an *os.File of a regular file costs four
// system calls more per file (the poller tries to register it), for nothing.
func (w *fileWriters) write(j *fileJob) error {
	fd, err := w.create(j)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var h manifestHash = noHash{}
	if j.want != nil {
		if h, err = newManifestHash(j.want.Algorithm); err != nil {
			return err
		}
	}
	var size, started int64
	for c := range j.chunks {
		err := writeFull(fd, c.b)
		h.Write(c.b)
		size += int64(len(c.b))
		w.done(c)
		if err != nil {
			return fmt.Errorf("write %s: %w", j.path, err)
		}
		if size-started >= writebackEvery {
			w.startWriteback(fd, started, size-started)
			started = size
		}
	}
	if err := w.failed(); err != nil {
		return err
	}
	if size < j.size {
		return nil // the reader stopped in the middle of this file: it reports why
	}
	if j.want != nil {
		if size != j.want.Size {
			return mismatch(fmt.Sprintf("%s has size %d, the manifest says %d", j.mpath, size, j.want.Size))
		}
		if got := h.Hex(); got != j.want.Checksum {
			return mismatch(fmt.Sprintf("%s has %s checksum %s, the manifest says %s", j.mpath, j.want.Algorithm, got, j.want.Checksum))
		}
	}
	// The mode as recorded, whatever the umask took away at creation.
	if err := unix.Fchmod(fd, uint32(j.mode|0o600)); err != nil {
		return &os.PathError{Op: "chmod", Path: j.path, Err: err}
	}
	w.finished(fd, j.path, started)
	return nil
}

// create creates the file of j, given to the owner, and returns it open for
// writing; a file the precreator created ahead is opened instead.
func (w *fileWriters) create(j *fileJob) (int, error) {
	if w.pre.take(j.path) {
		fd, err := openFD(j.path, unix.O_WRONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: j.path, Err: err}
		}
		return fd, nil
	}
	w.creating.Lock()
	fd, err := openFD(j.path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, uint32(j.mode|0o600))
	w.creating.Unlock()
	if err != nil {
		return -1, &os.PathError{Op: "create", Path: j.path, Err: err}
	}
	if o := w.owner; o != nil {
		if err := unix.Fchown(fd, o.UID, o.GID); err != nil {
			unix.Close(fd)
			return -1, &os.PathError{Op: "chown", Path: j.path, Err: err}
		}
	}
	return fd, nil
}

// writeFull writes all of b to fd.
func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// mismatch is the error of one file that does not match the manifest.
func mismatch(problem string) error {
	return &VerifyError{Problems: []string{problem}, msg: problem}
}

// syncAll fsyncs every file, then every directory, syncWorkers at a time.
//
// Why per-file fsync and not syncfs(2) on the target's file system: syncfs
// reports writeback errors only since Linux 5.8 (before, it returns 0 after a
// failed write), it waits for every dirty page of the whole file system (on a
// shared host, another cluster's data too, which can take far longer than the
// restore itself), and tablespaces may sit on other file systems. The files
// an unpack wrote were fsynced by its early syncers already; what is left
// here is mostly the directories, and running their fsyncs at once lets the
// file system commit its journal for many of them together.
func syncAll(ctx context.Context, files, dirs []string) error {
	if err := parallel(ctx, files, syncFile); err != nil {
		return err
	}
	return parallel(ctx, dirs, storage.SyncDir)
}

// openFD opens path as a raw descriptor (close-on-exec), retrying when a
// signal interrupts it, as os.OpenFile does.
func openFD(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, mode)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// syncFile fsyncs the file at p, through a raw descriptor (see write).
func syncFile(p string) error {
	fd, err := openFD(p, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	err = fsyncFD(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	return nil
}

func fsyncFD(fd int) error {
	for {
		if err := unix.Fsync(fd); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// parallel runs fn on every path, syncWorkers at a time, and returns the
// first error (the others stop taking new paths).
func parallel(ctx context.Context, paths []string, fn func(string) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan string)
	var wg sync.WaitGroup
	for range min(syncWorkers, len(paths)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				if err := fn(p); err != nil {
					cancel(err)
				}
			}
		}()
	}
feed:
	for _, p := range paths {
		select {
		case next <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx) // nil unless a path failed or ctx ended
}
