// Package lock is the per-server lock that keeps one backup, expire or snapshot
// running at a time. The lock is an open-file-description lock on a file, so it
// dies with its process: a lock left by a killed process is never mistaken for
// a live one. Beside it, a small JSON file says who holds it and how far it got,
// for the refusal message and for status.
package lock

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Holder describes the process holding a lock.
type Holder struct {
	Command string    `json:"command"`
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Since   time.Time `json:"since"`
	// Progress is the percentage done, or -1 when unknown.
	Progress float64 `json:"progress"`
	// Detail is a short free text: the backup id, the phase.
	Detail    string    `json:"detail,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// String formats the holder as a person reads it: "backup (pid 123 on db1, since 10:02:03, 43%)".
func (h Holder) String() string {
	s := fmt.Sprintf("%s (pid %d on %s, since %s", h.Command, h.PID, h.Host, h.Since.Local().Format("2006-01-02 15:04:05"))
	if h.Progress >= 0 {
		s += fmt.Sprintf(", %.0f%%", h.Progress)
	}
	if h.Detail != "" {
		s += ", " + h.Detail
	}
	return s + ")"
}

// HeldError is returned by Acquire when another process holds the lock.
type HeldError struct {
	Holder Holder
}

func (e *HeldError) Error() string { return "locked by " + e.Holder.String() }

// Lock is a held lock.
type Lock struct {
	f      *os.File
	path   string
	holder Holder
}

func infoPath(path string) string { return path + ".json" }

// Acquire takes the lock at path for command, or returns a *HeldError naming
// the holder. It never waits.
func Acquire(path, command, detail string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &fl); err != nil {
		f.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			h, _, rerr := Read(path)
			if rerr != nil {
				h = Holder{Command: "unknown", Progress: -1}
			}
			return nil, &HeldError{Holder: h}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	host, _ := os.Hostname()
	now := time.Now()
	l := &Lock{f: f, path: path, holder: Holder{Command: command, PID: os.Getpid(), Host: host, Since: now,
		Progress: -1, Detail: detail, UpdatedAt: now}}
	if err := l.writeInfo(); err != nil {
		l.Release()
		return nil, err
	}
	return l, nil
}

// Update records progress (percent, -1 unknown) and detail for readers.
func (l *Lock) Update(progress float64, detail string) error {
	l.holder.Progress = progress
	if detail != "" {
		l.holder.Detail = detail
	}
	l.holder.UpdatedAt = time.Now()
	return l.writeInfo()
}

// Holder returns what the lock says of its holder.
func (l *Lock) Holder() Holder { return l.holder }

func (l *Lock) writeInfo() error {
	data, err := json.Marshal(l.holder)
	if err != nil {
		return err
	}
	tmp := infoPath(l.path) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		return fmt.Errorf("write lock info: %w", err)
	}
	if err := os.Rename(tmp, infoPath(l.path)); err != nil {
		return fmt.Errorf("write lock info: %w", err)
	}
	return nil
}

// Release removes the holder information and drops the lock.
func (l *Lock) Release() {
	if l.f == nil {
		return
	}
	os.Remove(infoPath(l.path))
	l.f.Close() // closing the last descriptor drops the OFD lock
	l.f = nil
}

// Read tells whether the lock at path is held and by whom. A holder file left
// by a dead process is reported as not held.
func Read(path string) (Holder, bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Holder{}, false, nil
	}
	if err != nil {
		return Holder{}, false, fmt.Errorf("read lock %s: %w", path, err)
	}
	defer f.Close()
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &fl); err != nil {
		return Holder{}, false, fmt.Errorf("read lock %s: %w", path, err)
	}
	if fl.Type == unix.F_UNLCK {
		return Holder{}, false, nil
	}
	data, err := os.ReadFile(infoPath(path))
	if err != nil {
		// Held, but the holder has not written its information yet.
		return Holder{Command: "unknown", Progress: -1}, true, nil
	}
	var h Holder
	if err := json.Unmarshal(data, &h); err != nil {
		return Holder{Command: "unknown", Progress: -1}, true, nil
	}
	return h, true, nil
}
