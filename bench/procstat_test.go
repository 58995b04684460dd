package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// procTimes is what /proc/PID/stat and /proc/PID/schedstat say of a process
// (its main thread for schedstat): CPU used by it and by the children it
// waited for, and how long it was runnable but waited for a core.
type procTimes struct {
	cpu      time.Duration // utime + stime
	children time.Duration // cutime + cstime: children reaped (restore_command's sh and its command)
	onCPU    time.Duration // schedstat: time on a core (ns precision)
	runWait  time.Duration // schedstat: time runnable, waiting for a core
	age      time.Duration // since the process started
	// Minor page faults of the process and of the children it waited for.
	// On a machine whose page faults are dear (freshPageCost), each fresh
	// 4 KiB page a program touches is CPU time: they say where that went.
	faults, childFaults int64
}

// readProcTimes reads pid's times; ok is false when the process is gone.
func readProcTimes(pid int) (procTimes, bool) {
	var t procTimes
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return t, false
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	count := func(i int) int64 { // i: the field's number in proc(5)
		v, _ := strconv.ParseInt(f[i-3], 10, 64)
		return v
	}
	tick := func(i int) time.Duration { return time.Duration(count(i)) * clockTick }
	t.faults, t.childFaults = count(10), count(11)
	t.cpu = tick(14) + tick(15)
	t.children = tick(16) + tick(17)
	var info syscall.Sysinfo_t
	if syscall.Sysinfo(&info) == nil {
		t.age = time.Duration(info.Uptime)*time.Second - tick(22)
	}
	if s, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid)); err == nil {
		if v := strings.Fields(string(s)); len(v) >= 2 {
			on, _ := strconv.ParseInt(v[0], 10, 64)
			wait, _ := strconv.ParseInt(v[1], 10, 64)
			t.onCPU, t.runWait = time.Duration(on), time.Duration(wait)
		}
	}
	return t, true
}

// selfCPU is this process's CPU time (the hubs and the delay proxy run here).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy is the CPU time all cores spent busy (not idle or iowait) since boot.
func machineBusy() time.Duration {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * clockTick
}

// ms formats d per segment in milliseconds.
func ms(d time.Duration, n int) string {
	return fmt.Sprintf("%5.1f", float64(d)/float64(time.Millisecond)/float64(n))
}

// printRestoreTimes reads, from a standby's log at log_min_messages =
// debug3 (BENCH_RESTORE_TIMES), when the startup process ran each
// restore_command and when it had the file, and prints how long recovery
// waited for the calls and how long it replayed between them.
func printRestoreTimes(logFile string) {
	data, err := os.ReadFile(logFile)
	if err != nil {
		return
	}
	stamp := func(line string) (time.Time, bool) {
		if len(line) < 23 {
			return time.Time{}, false
		}
		t, err := time.Parse("2006-01-02 15:04:05.000", line[:23])
		return t, err == nil
	}
	var calls, gaps, failed []time.Duration
	var failedNames []string
	var execAt, restoredAt, first, logStart time.Time
	for _, line := range strings.Split(string(data), "\n") {
		t, ok := stamp(line)
		if !ok {
			continue
		}
		if logStart.IsZero() {
			logStart = t
		}
		switch {
		case strings.Contains(line, "executing restore command"):
			if !restoredAt.IsZero() { // not after a call that failed
				gaps = append(gaps, t.Sub(restoredAt))
				restoredAt = time.Time{}
			}
			if first.IsZero() {
				first = t
			}
			execAt = t
		case strings.Contains(line, "restored log file") && !execAt.IsZero():
			calls = append(calls, t.Sub(execAt))
			restoredAt, execAt = t, time.Time{}
		case strings.Contains(line, "could not restore file") && !execAt.IsZero():
			// A file the archive does not have (a timeline history
			// recovery looks for): recovery waits for this call too.
			failed = append(failed, t.Sub(execAt))
			if _, rest, ok := strings.Cut(line, "could not restore file \""); ok {
				name, _, _ := strings.Cut(rest, "\"")
				failedNames = append(failedNames, fmt.Sprintf("%s %.1f ms", name, float64(t.Sub(execAt))/float64(time.Millisecond)))
			}
			execAt = time.Time{}
		}
	}
	if len(calls) == 0 {
		return
	}
	sum := func(d []time.Duration) (s time.Duration) {
		for _, v := range d {
			s += v
		}
		return s
	}
	sorted := slices.Clone(calls)
	slices.Sort(sorted)
	head := ""
	n := 4
	if os.Getenv("BENCH_RESTORE_TIMES") == "all" {
		n = len(calls)
	}
	for _, c := range calls[:min(n, len(calls))] {
		head += fmt.Sprintf(" %.1f", float64(c)/float64(time.Millisecond))
	}
	fmt.Printf("         restore_command as recovery waited for it: %d calls, %v in all (median %v, max %v; the first:%s ms); replay between calls %v\n",
		len(calls), sum(calls).Round(time.Millisecond), sorted[len(sorted)/2].Round(100*time.Microsecond),
		sorted[len(sorted)-1].Round(time.Millisecond), head, sum(gaps).Round(time.Millisecond))
	fmt.Printf("         before the first call %v (from the log's first line); %d calls for files the archive lacks, %v in all (%s)\n",
		first.Sub(logStart).Round(time.Millisecond), len(failed), sum(failed).Round(time.Millisecond), strings.Join(failedNames, ", "))
}

// startPerf records a system-wide profile (perf record -a -g) of one run into
// $BENCH_PERF/NAME.data when BENCH_PERF names a directory; the returned
// function stops it.
func startPerf(b *testing.B, name string) func() {
	dir := os.Getenv("BENCH_PERF")
	if dir == "" {
		return func() {}
	}
	out := filepath.Join(dir, strings.NewReplacer(" ", "_", "/", "_", ",", "", "(", "", ")", "").Replace(name)+".data")
	cmd := exec.Command("perf", "record", "-a", "-g", "-F", "499", "-o", out)
	if err := cmd.Start(); err != nil {
		b.Fatalf("perf: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // perf's own start
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
}

// freshPageCost times the first touch of 64 MiB of new anonymous memory, one
// write per 4 KiB page, and returns the time per page: what a page fault
// costs on this machine at this moment. It is the figure that moves most from
// one machine (or one day) to another here: 13 us on the virtual machine of
// one session, 1.3 us on the next, against about 0.25 us on bare metal; and a
// process start, a spool hit, a cp, is mostly page faults on such a machine.
// Each benchmark prints it beside its figures, so that runs on different
// machines can be told apart.
func freshPageCost() (time.Duration, error) {
	const size, page = 64 << 20, 4096
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return 0, fmt.Errorf("map %d bytes: %w", size, err)
	}
	defer syscall.Munmap(mem)
	start := time.Now()
	for i := 0; i < size; i += page {
		mem[i] = 1
	}
	return time.Since(start) / (size / page), nil
}

// machineLine says what freshPageCost measures now, as a line to print.
func machineLine() string {
	d, err := freshPageCost()
	if err != nil {
		return "machine: page fault cost not measured: " + err.Error()
	}
	return fmt.Sprintf("machine: a page fault costs %.2f us now (64 MiB of new memory touched page by page)", float64(d.Nanoseconds())/1000)
}
