package bench

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/walfetch"
)

// BenchmarkSpoolWait measures what a restore_command call costs while it
// waits for the prefetcher to finish the segment recovery asks for (the
// spool holds its .part): walfetch's wait (walfetch.Spool.WaitInProgress),
// against a wait that looks every millisecond, as walfetch's did before it
// slept on inotify, and against no waiter at all. The "prefetcher" is dd
// writing a segment into NAME.part and mv renaming it into place. Rounds are
// interleaved; each call's elapsed time (until the waiter saw the segment,
// or dd and mv exited when nobody waits) and the waiter's CPU time are
// reported by their medians. Run it on one core, as the standby's processes
// share one in the pinned replay:
//
//	GOMAXPROCS=1 taskset -c 0 go test -run XXX -bench SpoolWait -benchtime 1x ./bench
//
// BENCH_SEGMENT_MB (default 16), BENCH_CALLS (default 50).
func BenchmarkSpoolWait(b *testing.B) {
	segMB := envInt("BENCH_SEGMENT_MB", 16)
	calls := envInt("BENCH_CALLS", 50)
	dir := b.TempDir()
	sp := &walfetch.Spool{Dir: dir, Root: dir}
	const name = "000000010000000000000001"
	part, final := sp.Path(name+".part"), sp.Path(name)
	script := fmt.Sprintf("dd if=/dev/zero of=%s bs=64k count=%d status=none && mv %s %s", part, segMB*16, part, final)
	// The prefetcher holds its lock while it runs: walfetch waits only then.
	lock, err := os.OpenFile(sp.Path(walfetch.LockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b.Fatal(err)
	}

	// pollEveryMillisecond is the wait walfetch made before it used inotify.
	pollEveryMillisecond := func() bool {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
			if _, err := os.Stat(final); err == nil {
				return true
			}
		}
		return false
	}
	waits := []struct {
		name string
		wait func() bool // nil: nobody waits
	}{
		{"no waiter (dd and mv alone)", nil},
		{"walfetch's wait (inotify)", func() bool { return sp.WaitInProgress(name, 5*time.Second, 30*time.Second) }},
		{"a look every millisecond", pollEveryMillisecond},
	}
	elapsed := make([][]time.Duration, len(waits))
	cpu := make([][]time.Duration, len(waits))
	for i := 0; i < calls; i++ {
		for j, w := range waits {
			os.Remove(final)
			if err := os.WriteFile(part, nil, 0o600); err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command("sh", "-c", script)
			var r0, r1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
			start := time.Now()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			if w.wait != nil && !w.wait() {
				b.Fatalf("%s: the segment never appeared", w.name)
			}
			took := time.Since(start)
			syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
			if err := cmd.Wait(); err != nil {
				b.Fatalf("%s: %v", script, err)
			}
			if w.wait == nil {
				took = time.Since(start)
			}
			elapsed[j] = append(elapsed[j], took)
			cpu[j] = append(cpu[j], time.Duration(r1.Utime.Nano()+r1.Stime.Nano()-r0.Utime.Nano()-r0.Stime.Nano()))
		}
	}
	median := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)/2]
	}
	fmt.Printf("a %d MiB segment written and renamed into the spool, %d calls each, medians:\n", segMB, calls)
	for j, w := range waits {
		fmt.Printf("%-30s elapsed %7.2f ms; the waiter's CPU %6.3f ms\n", w.name,
			float64(median(elapsed[j]))/1e6, float64(median(cpu[j]))/1e6)
	}
	b.ReportMetric(float64(median(cpu[1]))/1e6, "wait-cpu-ms")
	b.ReportMetric(float64(median(cpu[2]))/1e6, "poll-cpu-ms")
}
