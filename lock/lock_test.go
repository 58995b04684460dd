package lock

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecondAcquireIsRefusedNamingHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "main", "lock")
	l, err := Acquire(path, "backup", "20261121T100000")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Update(43, ""); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(path, "expire", "")
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second acquire: err = %v, want HeldError", err)
	}
	if held.Holder.Command != "backup" || held.Holder.PID != os.Getpid() || !strings.Contains(err.Error(), "43%") {
		t.Fatalf("holder = %+v (%v)", held.Holder, err)
	}
	h, isHeld, err := Read(path)
	if err != nil || !isHeld || h.Progress != 43 {
		t.Fatalf("Read = %+v, %v, %v", h, isHeld, err)
	}
	l.Release()
	if _, isHeld, _ := Read(path); isHeld {
		t.Fatal("released lock still reads as held")
	}
	l2, err := Acquire(path, "expire", "")
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	l2.Release()
}

// TestLockOfDeadProcessIsNotHeld holds the lock in a child process, kills it
// with SIGKILL, and checks that the lock is free although its info file stays.
func TestLockOfDeadProcessIsNotHeld(t *testing.T) {
	if os.Getenv("WALHUB_LOCK_CHILD") != "" {
		if _, err := Acquire(os.Getenv("WALHUB_LOCK_CHILD"), "backup", ""); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString("locked\n")
		select {}
	}
	path := filepath.Join(t.TempDir(), "lock")
	cmd := exec.Command(os.Args[0], "-test.run=TestLockOfDeadProcessIsNotHeld")
	cmd.Env = append(os.Environ(), "WALHUB_LOCK_CHILD="+path)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil || string(buf) != "locked\n" {
		t.Fatalf("child did not lock: %q %v", buf, err)
	}
	if _, isHeld, _ := Read(path); !isHeld {
		t.Fatal("lock of a live child reads as free")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := os.Stat(path + ".json"); err != nil {
		t.Fatalf("the killed child's info file should remain: %v", err)
	}
	if _, isHeld, _ := Read(path); isHeld {
		t.Fatal("lock of a killed process reads as held")
	}
	l, err := Acquire(path, "backup", "")
	if err != nil {
		t.Fatalf("acquire after the holder died: %v", err)
	}
	l.Release()
}
