package walfetch

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadSmallFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte{'w'}, size), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		path    string
		size    int
		wantErr error
	}{
		{"empty", write("empty", 0), 0, nil},
		{"smaller than a read", write("small", 37), 37, nil},
		{"several reads", write("several", 3*4096+5), 3*4096 + 5, nil},
		{"exactly 1 MiB", write("mib", 1<<20), 1 << 20, nil},
		{"missing", filepath.Join(dir, "missing"), 0, fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ReadSmallFile(tc.path)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && len(b) != tc.size) {
				t.Errorf("got %d bytes, %v; want %d bytes, %v", len(b), err, tc.size, tc.wantErr)
			}
		})
	}
	if _, err := ReadSmallFile(write("big", 1<<20+1)); err == nil {
		t.Error("a file larger than 1 MiB was read")
	}
	if b, err := ReadSmallFile("/proc/sys/kernel/random/boot_id"); err != nil || len(b) < 32 {
		t.Errorf("boot id: %q, %v", b, err)
	}
}

// TestSpoolKeyDependsOnHubServerAndCluster: the spool of another hub, server
// or cluster is another directory; the key has the form the prefetcher
// recognises when it removes spools left by others.
func TestSpoolKeyDependsOnHubServerAndCluster(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "global"), 0o700)
	control := func(id byte) {
		if err := os.WriteFile(filepath.Join(dir, "global", "pg_control"), []byte{id, 0, 0, 0, 0, 0, 0, 1}, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	control(1)
	t.Chdir(dir)
	s := Settings{URL: "http://hub:7480", Server: "main", Spool: "spool", Prefetch: 4}
	base := OpenSpool(s)
	if base == nil || !IsSpoolKey(filepath.Base(base.Dir)) || filepath.Dir(base.Dir) != "spool" {
		t.Fatalf("spool %+v", base)
	}
	if again := OpenSpool(s); again.Dir != base.Dir {
		t.Errorf("the same settings gave %s and %s", base.Dir, again.Dir)
	}
	other := s
	other.URL = "http://other:7480"
	if sp := OpenSpool(other); sp.Dir == base.Dir {
		t.Error("another hub, the same spool")
	}
	other = s
	other.Server = "second"
	if sp := OpenSpool(other); sp.Dir == base.Dir {
		t.Error("another server, the same spool")
	}
	control(2)
	if sp := OpenSpool(s); sp.Dir == base.Dir {
		t.Error("another cluster, the same spool")
	}
	if sp := OpenSpool(Settings{URL: s.URL, Server: s.Server, Spool: "spool"}); sp != nil {
		t.Error("prefetch off, and a spool")
	}
}

// TestNoSecondPrefetcherWhileOneStarts: a call that finds no prefetcher
// socket starts a prefetcher, unless one holds the spool's lock (it is
// starting, and has not bound its socket yet): before, the call started a
// second one, which found the lock held and exited. In this test's process
// no walfetch-net lies beside the executable, so a start that is tried fails
// and says so on stderr.
func TestNoSecondPrefetcherWhileOneStarts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		lockFile  bool
		held      bool
		wantStart bool
	}{
		{"no prefetcher ever ran", false, false, true},
		{"one ran and exited", true, false, true},
		{"one holds the lock, no socket yet", true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			sp := &Spool{Dir: filepath.Join("spool", "0123456789abcdef"), Root: "spool", SystemID: 1}
			if err := os.MkdirAll(sp.Dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.lockFile {
				f, err := os.OpenFile(sp.Path(LockName), os.O_CREATE|os.O_RDWR, 0o600)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if tc.held {
					if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
						t.Fatal(err)
					}
				}
			}
			var stderr bytes.Buffer
			sp.Poke(Settings{URL: "http://hub:7480", Server: "main", Spool: "spool", Prefetch: 4}, "000000010000000000000003", false, &stderr)
			started := strings.Contains(stderr.String(), "prefetching disabled for this call: "+NetProgram+" must be installed")
			if started != tc.wantStart {
				t.Errorf("prefetcher start tried: %v, want %v (stderr %q)", started, tc.wantStart, stderr.String())
			}
		})
	}
}

func TestWaitInProgress(t *testing.T) {
	t.Run("inotify", func(t *testing.T) { testWaitInProgress(t, true) })
	t.Run("polling", func(t *testing.T) {
		// As when the user's inotify instances are used up.
		newDirWatch = func(string) dirWatch { return dirWatch{} }
		defer func() { newDirWatch = watchDir }()
		testWaitInProgress(t, false)
	})
}

func testWaitInProgress(t *testing.T, inotify bool) {
	const seg = "000000010000000000000003"
	for _, tc := range []struct {
		name string
		// rename, remove: what is done to the .part after 300 ms; grow: it
		// is appended to every 50 ms; none: nothing. absent: there is no
		// .part; dead: no prefetcher holds the lock; old: the .part was last
		// written two stall periods ago.
		then       string
		stall      time.Duration
		limit      time.Duration
		want       bool
		minElapsed time.Duration // it must not give up sooner
		maxElapsed time.Duration
	}{
		{"finished: renamed into place", "rename", 5 * time.Second, 30 * time.Second, true, 300 * time.Millisecond, 5 * time.Second},
		{"abandoned: the .part removed", "remove", 5 * time.Second, 30 * time.Second, false, 300 * time.Millisecond, 5 * time.Second},
		// Counted from the .part's last write, just before the wait.
		{"stalled: the .part stops growing", "none", 500 * time.Millisecond, 30 * time.Second, false, 400 * time.Millisecond, 5 * time.Second},
		{"still growing at the limit", "grow", 5 * time.Second, 600 * time.Millisecond, false, 600 * time.Millisecond, 5 * time.Second},
		{"no download in progress", "absent", 5 * time.Second, 30 * time.Second, false, 0, time.Second},
		{"the prefetcher is gone: a .part it left", "dead", 5 * time.Second, 30 * time.Second, false, 0, time.Second},
		{"stalled before the wait began", "old", 5 * time.Second, 30 * time.Second, false, 0, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sp := &Spool{Dir: dir, Root: dir}
			part := sp.Path(seg + ".part")
			if tc.then != "dead" {
				// The prefetcher holds its lock while it runs.
				lock, err := os.OpenFile(sp.Path(LockName), os.O_CREATE|os.O_RDWR, 0o600)
				if err != nil {
					t.Fatal(err)
				}
				defer lock.Close()
				if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
					t.Fatal(err)
				}
			}
			if tc.then != "absent" {
				if err := os.WriteFile(part, []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.then == "old" {
				// Last written longer than stall ago.
				old := time.Now().Add(-2 * tc.stall)
				if err := os.Chtimes(part, old, old); err != nil {
					t.Fatal(err)
				}
			}
			// Taken before the goroutine starts its 300 ms, so that a rename
			// cannot come sooner after it.
			before, start := waitWakeups.Load(), time.Now()
			done := make(chan struct{})
			go func() {
				defer close(done)
				switch tc.then {
				case "rename":
					time.Sleep(300 * time.Millisecond)
					if err := os.Rename(part, sp.Path(seg)); err != nil {
						t.Error(err)
					}
				case "remove":
					time.Sleep(300 * time.Millisecond)
					if err := os.Remove(part); err != nil {
						t.Error(err)
					}
				case "grow":
					for i := 0; i < 20; i++ {
						time.Sleep(50 * time.Millisecond)
						f, err := os.OpenFile(part, os.O_APPEND|os.O_WRONLY, 0)
						if err != nil {
							t.Error(err)
							return
						}
						f.Write([]byte("x"))
						f.Close()
					}
				}
			}()
			got := sp.WaitInProgress(seg, tc.stall, tc.limit)
			elapsed, wakeups := time.Since(start), waitWakeups.Load()-before
			<-done
			if got != tc.want {
				t.Errorf("WaitInProgress = %v, want %v", got, tc.want)
			}
			if elapsed < tc.minElapsed || elapsed > tc.maxElapsed {
				t.Errorf("returned after %v, want between %v and %v", elapsed, tc.minElapsed, tc.maxElapsed)
			}
			// It sleeps until the directory changes, looking at the .part
			// ten times per stall period: not every millisecond.
			if most := int64(elapsed/(tc.stall/10)) + 3; inotify && wakeups > most {
				t.Errorf("looked at the spool %d times in %v, want at most %d (it polls)", wakeups, elapsed, most)
			}
		})
	}
}
