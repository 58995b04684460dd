package walfetch

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/walhub/walhub/pgfile"
)

// The spool holds segments the prefetcher downloaded ahead of recovery:
//
//	<spool>/<key>/<SEGMENT>        complete, verified: renamed into %p on request
//	<spool>/<key>/<SEGMENT>.part   being downloaded (only the prefetcher writes these)
//	<spool>/<key>/prefetcher.lock  held by the one running prefetcher (LockName)
//	<spool>/<key>/prefetcher.sock  where walfetch tells it which segment was served
//	<spool>/prefetcher.log         the prefetchers' log
//	<spool>/<boot id>.<postmaster start>.<postmaster pid>.<hub tag>
//	                               a link to <key> for the restore_command's shell (hitlink.go)
//
// The key is a hash (hashHex) of the hub URL, the server name, the data
// directory's system identifier (from global/pg_control) and the kernel's boot id: a spool
// left by an unrelated restore, or by the same one before a crash of the
// machine (whose unsynced files may be torn), has another key, is never read,
// and is removed by the next prefetcher. That is why spool files need no fsync.

// PartSuffix ends the name of a segment being downloaded into the spool.
const PartSuffix = ".part"

// Spool is one spool, identified.
type Spool struct {
	Dir      string // <spool>/<key>
	Root     string // <spool>
	SystemID uint64 // from global/pg_control
}

// OpenSpool finds the spool for these settings in the data directory (the
// working directory). It returns nil when there is no spool: prefetch off, or
// no pg_control to identify the cluster by.
func OpenSpool(s Settings) *Spool {
	if s.Prefetch == 0 || s.Spool == "" {
		return nil
	}
	sysid, err := pgfile.ControlSystemID("global/pg_control")
	if err != nil {
		return nil
	}
	boot, _ := ReadSmallFile(bootIDPath)
	key := hashHex(s.URL, s.Server, strconv.FormatUint(sysid, 10), string(boot))
	return &Spool{Dir: filepath.Join(s.Spool, key), Root: s.Spool, SystemID: sysid}
}

// Path is where the spool keeps name.
func (sp *Spool) Path(name string) string { return filepath.Join(sp.Dir, name) }

// SockPath is the prefetcher's socket.
func (sp *Spool) SockPath() string { return filepath.Join(sp.Dir, "prefetcher.sock") }

// Take moves a prefetched segment into dst. It reports false when the spool
// does not hold it. The rename is atomic: dst is either absent or complete.
// It is rename(2) itself, not os.Rename, which first stats dst to refuse a
// directory there: PostgreSQL has removed dst before calling walfetch, and
// rename(2) refuses to replace a directory with a file anyway (EISDIR).
func (sp *Spool) Take(name, dst string) (bool, error) {
	err := syscall.Rename(sp.Path(name), dst)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.ENOENT):
		return false, nil
	case errors.Is(err, syscall.EXDEV):
		return false, fmt.Errorf("spool %s is not on the file system of %s: set --spool to a directory there (default pg_wal/walfetch-spool)", sp.Root, filepath.Dir(dst))
	}
	return false, &os.LinkError{Op: "rename", Old: sp.Path(name), New: dst, Err: err}
}

// ReadSmallFile reads a small file (pg_control's first bytes, the boot id, a
// config or token file) with plain system calls: the first os.File a Go
// program opens sets up its I/O poller (epoll, an eventfd), start-up work
// that the spool hit, which reads nothing else, need not pay. At most 1 MiB.
func ReadSmallFile(path string) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	buf := make([]byte, 0, 4096)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		if buf = buf[:len(buf)+n]; len(buf) > 1<<20 {
			return nil, &os.PathError{Op: "read", Path: path, Err: errors.New("larger than 1 MiB")}
		}
	}
}

// WaitInProgress waits while the prefetcher is downloading name, and reports
// whether the finished segment appeared. It gives up when the download has
// not grown for stall (its .part's modification time), or after limit, or at
// once when no prefetcher runs (a .part that a dead one left, which the next
// removes); the caller then fetches the segment itself.
//
// It sleeps until the spool's directory changes (inotify: the prefetcher
// renames a finished segment into place, or removes an abandoned .part), so
// that recovery gets the segment the moment it is there, and a wait costs the
// standby's CPU nothing while the prefetcher, often on the same core, works.
// Without inotify (its per-user limit reached) it polls every millisecond.
func (sp *Spool) WaitInProgress(name string, stall, limit time.Duration) bool {
	part, final := sp.Path(name+PartSuffix), sp.Path(name)
	if _, err := os.Stat(part); err != nil {
		return false
	}
	// Watched before the next look, so that a rename in between wakes it.
	w := newDirWatch(sp.Dir)
	defer w.close()
	start := time.Now()
	for {
		if _, err := os.Stat(final); err == nil {
			return true
		}
		fi, err := os.Stat(part)
		if err != nil || !sp.lockHeld() {
			// Finished between the looks, or abandoned.
			_, err := os.Stat(final)
			return err == nil
		}
		// Its last write, not the start of this wait: walfetch-net, after
		// walfetch gave up on a stalled download, does not wait for it again.
		now := time.Now()
		if now.Sub(fi.ModTime()) > stall {
			return false
		}
		left := limit - now.Sub(start)
		if left <= 0 {
			return false
		}
		// A stall is looked for ten times per stall, whatever the events.
		w.wait(min(left, max(stall/10, time.Millisecond)))
		waitWakeups.Add(1)
	}
}

// waitWakeups counts WaitInProgress's looks at the spool (for its tests).
var waitWakeups atomic.Int64

// dirWatch is an inotify instance watching one directory for files renamed
// into or out of it, or removed. Without one (f nil) it polls.
type dirWatch struct{ f *os.File }

const watchEvents = syscall.IN_MOVED_TO | syscall.IN_MOVED_FROM | syscall.IN_DELETE

// newDirWatch is watchDir; tests replace it to wait without inotify.
var newDirWatch = watchDir

// watchDir watches dir. When inotify is not to be had, the watch it returns
// polls instead.
func watchDir(dir string) dirWatch {
	f, err := inotifyFile(dir, watchEvents)
	if err != nil {
		return dirWatch{}
	}
	return dirWatch{f: f}
}

// inotifyFile is an inotify instance watching dir for events, non-blocking,
// so read through Go's poller: a read parks the goroutine, not a thread in a
// system call.
func inotifyFile(dir string, events uint32) (*os.File, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	if _, err := syscall.InotifyAddWatch(fd, dir, events); err != nil {
		syscall.Close(fd)
		return nil, &os.PathError{Op: "inotify_add_watch", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), "inotify"), nil
}

// WatchTaken sends to taken the name of every file renamed out of the
// spool's directory: a segment taken into %p, by walfetch or by the
// restore_command's shell (ShellRestoreCommand), which tells the prefetcher
// nothing else. The prefetcher's own renames (a .part into place) are not
// sent: each would wake the prefetcher for nothing. It stops when stop is
// called.
func (sp *Spool) WatchTaken(taken chan<- string) (stop func(), err error) {
	f, err := inotifyFile(sp.Dir, syscall.IN_MOVED_FROM)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			// struct inotify_event: wd, mask, cookie, len (4 bytes each, in
			// the machine's order), then len bytes of name padded with NULs.
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				mask := binary.NativeEndian.Uint32(buf[off+4:])
				nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
				start := off + syscall.SizeofInotifyEvent
				off = start + nameLen
				if mask&syscall.IN_MOVED_FROM == 0 || off > n {
					continue
				}
				if name := string(bytes.TrimRight(buf[start:off], "\x00")); name != "" && !strings.HasSuffix(name, PartSuffix) {
					select {
					case taken <- name:
					case <-done:
						return
					}
				}
			}
		}
	}()
	return func() { close(done); f.Close() }, nil
}

// wait returns when the directory changed, or after d at most (1 ms when
// polling).
func (w dirWatch) wait(d time.Duration) {
	if w.f != nil && w.f.SetReadDeadline(time.Now().Add(d)) == nil {
		// Which file changed is not needed: the caller looks again. Events
		// left unread (more than fit) end the next wait at once.
		var buf [4096]byte
		_, err := w.f.Read(buf[:])
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
	}
	// No watch, or it failed: never a loop that does not sleep.
	time.Sleep(min(d, time.Millisecond))
}

func (w dirWatch) close() {
	if w.f != nil {
		w.f.Close()
	}
}

// Poke tells the running prefetcher that name was served (taken: from the
// spool; else it is about to be downloaded); when none runs, it starts one.
// It never fails the caller: prefetching is an optimisation.
func (sp *Spool) Poke(s Settings, name string, taken bool, stderr io.Writer) {
	msg := name
	if taken {
		msg += TakenMark
	}
	if !sp.Tell(msg) {
		sp.StartPrefetcher(s, name, stderr)
	}
}

// TakenMark ends what walfetch tells the prefetcher after taking a segment
// from the spool. A prefetcher that watches its spool (WatchTaken) saw it go
// already.
const TakenMark = "+taken"

// Tell tells the running prefetcher msg (a segment's name, with TakenMark
// when walfetch took it from the spool), and reports whether one runs.
func (sp *Spool) Tell(msg string) bool {
	// One datagram, without the net package's machinery: this is on the path
	// of every restore_command call.
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err == nil {
		err = syscall.Sendto(fd, []byte(msg), syscall.MSG_DONTWAIT, &syscall.SockaddrUnix{Name: ShortPath(sp.SockPath())})
		syscall.Close(fd)
	}
	return err == nil || errors.Is(err, syscall.EAGAIN) // delivered, or the prefetcher is alive and busy
}

// StartPrefetcher starts a prefetcher, name being the segment just served.
// A failure is reported on stderr, not to the caller: prefetching is an
// optimisation. The prefetcher inherits the signals this process ignores.
func (sp *Spool) StartPrefetcher(s Settings, name string, stderr io.Writer) {
	if err := sp.startPrefetcher(s, name, ""); err != nil {
		fmt.Fprintf(stderr, "walfetch: prefetching disabled for this call: %v\n", err)
	}
}

// StartPrefetcherAt starts a prefetcher, when none runs, before recovery has
// asked for any segment: next is the one it will ask for first. Like
// StartPrefetcher, it reports a failure on stderr only.
func (sp *Spool) StartPrefetcherAt(s Settings, next string, stderr io.Writer) {
	// A name that is no segment tells a running prefetcher nothing: it only
	// shows that one runs (it knows better where recovery is).
	if sp.Tell(probeName) {
		return
	}
	if err := sp.startPrefetcher(s, "", next); err != nil {
		fmt.Fprintf(stderr, "walfetch: prefetching disabled for this call: %v\n", err)
	}
}

// probeName is what StartPrefetcherAt tells a running prefetcher: a name
// that is not a segment's, which it ignores.
const probeName = "00000001.history"

// ShortPath returns p relative to the working directory when that is shorter:
// a unix socket path must fit in 108 bytes.
func ShortPath(p string) string {
	if !filepath.IsAbs(p) {
		return p
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, p); err == nil && len(rel) < len(p) {
			return rel
		}
	}
	return p
}

// PrefetcherArg, as the only argument, makes NetProgram run the prefetcher
// (hubfetch.RunPrefetcher): the spool starts it so, detached.
const PrefetcherArg = "--run-prefetcher"

// PrefetcherEnv carries the settings to the prefetcher process (through the
// environment, so the token does not show in ps).
const PrefetcherEnv = "WALFETCH_PREFETCHER_SETTINGS"

// startPrefetcher starts a detached prefetcher (its own session, so
// PostgreSQL neither waits for it nor signals it with the restore_command),
// unless one holds the spool's lock: Tell found no socket because that one is
// still starting (started by the call before, which asked for a history file,
// a few milliseconds ago) and has not bound it yet. A second would find the
// lock held and exit, a process start for nothing on recovery's path.
func (sp *Spool) startPrefetcher(s Settings, served, next string) error {
	if sp.lockHeld() {
		return nil
	}
	if len(ShortPath(sp.SockPath())) > 100 {
		return fmt.Errorf("spool path %s is too long for a unix socket; choose a shorter --spool", sp.Dir)
	}
	if err := os.MkdirAll(sp.Dir, 0o700); err != nil {
		return fmt.Errorf("create spool: %w", err)
	}
	exe, err := NetBinary()
	if err != nil {
		return err
	}
	cfg, err := json.Marshal(PrefetcherConfig{Settings: s, Dir: sp.Dir, Root: sp.Root, SystemID: strconv.FormatUint(sp.SystemID, 10), Served: served, Next: next})
	if err != nil {
		return err
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	// os.StartProcess, not os/exec: exe is a path, and os/exec's package
	// initialisation would be paid by every call, hit or not.
	proc, err := os.StartProcess(exe, []string{exe, PrefetcherArg}, &os.ProcAttr{
		Env:   append(os.Environ(), PrefetcherEnv+"="+string(cfg)),
		Files: []*os.File{devnull, devnull, devnull},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return fmt.Errorf("start prefetcher: %w", err)
	}
	return proc.Release()
}

// LockName is the file in the spool whose lock (flock, exclusive) the one
// running prefetcher holds.
const LockName = "prefetcher.lock"

// lockHeld tells whether a prefetcher holds the spool's lock. It tries a
// shared lock, and drops it at once. A prefetcher that tries to take the lock
// meanwhile finds it held and exits; this call then starts one, so one still
// runs.
func (sp *Spool) lockHeld() bool {
	fd, err := syscall.Open(sp.Path(LockName), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer syscall.Close(fd)
	return errors.Is(syscall.Flock(fd, syscall.LOCK_SH|syscall.LOCK_NB), syscall.EWOULDBLOCK)
}

// PrefetcherConfig is what a prefetcher is started with.
type PrefetcherConfig struct {
	Settings Settings `json:"settings"`
	Dir      string   `json:"dir"`
	Root     string   `json:"root"`
	SystemID string   `json:"system_id"`
	// Served is the segment walfetch just served; when it is empty, Next is
	// the segment recovery will ask for first (StartPrefetcherAt).
	Served string `json:"served"`
	Next   string `json:"next,omitempty"`
}

// IsSpoolKey tells whether name has the form of a spool key (16 lowercase
// hex digits). Not a regexp: its compilation would run at the start of every
// restore_command call, hit or not.
func IsSpoolKey(name string) bool {
	if len(name) != 16 {
		return false
	}
	for _, c := range name {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
