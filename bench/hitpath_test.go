package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/pgfile"
	"github.com/walhub/walhub/test/pgtest"
	walfetchsettings "github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

// BenchmarkRestoreCommandCost isolates what walfetch controls: the cost of
// one restore_command call when the segment is already prefetched (a spool
// hit), against `cp` of the same segment from a local directory, both run
// through sh as PostgreSQL runs them, interleaved so that a busy machine
// slows both alike. A third command, an empty Go program (built here, static
// like walfetch), is the floor of any Go restore_command: what the Go runtime
// costs to start and exit. A fourth, `mv` of a file from a directory beside
// pg_wal, is the floor of any restore_command that runs a program for a
// segment it has at hand: a rename in the shell, no Go at all. A fifth is
// the restore_command walfetch --print-restore-command prints, its shell
// taking the segment from the spool through the prefetcher's link (walfetch
// does not run: the benchmark stops if it would). Each is reported by its median elapsed time and
// its median CPU time (user + system of sh and the command: on a loaded
// machine the elapsed time is mostly waiting for a core, and grows with the
// CPU time asked for). Run it with
//
//	go test -run XXX -bench RestoreCommandCost -benchtime 1x ./bench
//
// BENCH_SEGMENT_MB (default 16), BENCH_CALLS (default 300);
// BENCH_WALFETCH_BASELINE names another walfetch binary (after environment
// assignments, if any: "GOMAXPROCS=1 DIR/walfetch") to time in the same
// rounds (e.g. one built from main before a change).
func BenchmarkRestoreCommandCost(b *testing.B) {
	const systemID = 7300000000000000042
	segSize := envInt("BENCH_SEGMENT_MB", 16) << 20
	calls := envInt("BENCH_CALLS", 300)
	dir := b.TempDir()
	walfetch, err := pgtest.BuildCommand(dir, "walfetch")
	if err != nil {
		b.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	for _, d := range []string{"pg_wal", "global", "archive"} {
		os.MkdirAll(filepath.Join(data, d), 0o700)
	}
	var control [8192]byte
	pgfile.PutControlSystemID(control[:], systemID)
	os.WriteFile(filepath.Join(data, "global", "pg_control"), control[:], 0o600)
	os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600)
	// What the prefetcher names the shell's link by: a postmaster's pid and
	// start time (none runs; no process is signalled by that pid).
	os.WriteFile(filepath.Join(data, "postmaster.pid"), []byte("4242\n"+data+"\n1764800000\n5432\n"), 0o600)

	segment := func(segno walname.SegNo) []byte {
		seg := make([]byte, segSize)
		pgfile.NewSegmentHeader(1, segno, uint64(segSize), systemID).Put(seg)
		return seg
	}
	// A minimal hub: segment 1 for the first call (which starts the
	// prefetcher), and peeks that find nothing more, so the spool holds
	// only what this benchmark puts there.
	first := segment(1)
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/peek") {
			json.NewEncoder(w).Encode(api.Peek{Server: "main", SystemID: strconv.FormatUint(systemID, 10), SegmentSize: uint64(segSize), Limit: 1})
			return
		}
		h := w.Header()
		h.Set(api.HeaderChecksum, checksum.Of(first))
		h.Set(api.HeaderSize, strconv.Itoa(segSize))
		h.Set(api.HeaderSystemID, strconv.FormatUint(systemID, 10))
		h.Set(api.HeaderSegmentSize, strconv.Itoa(segSize))
		w.Write(first)
	}))
	defer hub.Close()
	wf := func(name string) string {
		return fmt.Sprintf("%s --url %s --server main --idle-exit 20s %s pg_wal/RECOVERYXLOG", walfetch, hub.URL, name)
	}
	// cost is one call's elapsed and CPU time.
	type cost struct{ wall, cpu time.Duration }
	run := func(command string) cost {
		// PostgreSQL removes the previous RECOVERYXLOG before each call.
		os.Remove(filepath.Join(data, "pg_wal", "RECOVERYXLOG"))
		cmd := exec.Command("sh", "-c", command)
		cmd.Dir = data
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", command, err, out)
		}
		// The rusage of sh includes the command it waited for (not the
		// prefetcher, which is detached).
		return cost{time.Since(start), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	}
	goFloor := filepath.Join(dir, "gofloor")
	os.MkdirAll(goFloor+".src", 0o700)
	os.WriteFile(filepath.Join(goFloor+".src", "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o600)
	os.WriteFile(filepath.Join(goFloor+".src", "go.mod"), []byte("module gofloor\n"), 0o600)
	build := exec.Command("go", "build", "-o", goFloor, ".")
	build.Dir, build.Env = goFloor+".src", append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the empty Go program: %v\n%s", err, out)
	}
	// spoolOf makes bin's first call, which starts its prefetcher, and
	// returns the spool it keys for these settings: a new one when its key
	// differs from those of the spools known (a baseline binary may hash
	// the key otherwise), else the known one it shares.
	spoolOf := func(bin string, known ...string) string {
		run(strings.Replace(wf(walname.SegmentName(1, 1, uint64(segSize))), walfetch, bin, 1))
		wait := 10 * time.Second
		if len(known) > 0 {
			wait = 3 * time.Second
		}
		for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			locks, _ := filepath.Glob(filepath.Join(data, "pg_wal", "walfetch-spool", "*", "prefetcher.lock"))
			for _, l := range locks {
				if !slices.Contains(known, filepath.Dir(l)) {
					return filepath.Dir(l)
				}
			}
		}
		if len(known) == 0 {
			b.Fatal("the prefetcher did not start")
		}
		return known[0]
	}
	spool := spoolOf(walfetch)
	source := filepath.Join(data, "archive", "segment")
	if err := os.WriteFile(source, segment(2), 0o600); err != nil {
		b.Fatal(err)
	}
	// BENCH_WALFETCH_BASELINE: another walfetch binary, run in the same rounds.
	baseline := os.Getenv("BENCH_WALFETCH_BASELINE")
	baselineSpool := spool
	if baseline != "" {
		baselineSpool = spoolOf(baseline, spool)
	}
	hit := func(bin, spool string, segno walname.SegNo) cost {
		// The prefetcher's work, done before the call as it would be: a
		// verified segment in the spool (a hard link stands in for the download).
		name := walname.SegmentName(1, segno, uint64(segSize))
		if err := os.Link(source, filepath.Join(spool, name)); err != nil {
			b.Fatal(err)
		}
		d := run(strings.Replace(wf(name), walfetch, bin, 1))
		if _, err := os.Stat(filepath.Join(spool, name)); err == nil {
			b.Fatalf("%s was not taken from the spool", name)
		}
		return d
	}
	// mv's own spool: a directory beside pg_wal's, on the same file system.
	mvDir := filepath.Join(data, "pg_wal", "mv-spool")
	if err := os.Mkdir(mvDir, 0o700); err != nil {
		b.Fatal(err)
	}
	mv := func() cost {
		if err := os.Link(source, filepath.Join(mvDir, "segment")); err != nil {
			b.Fatal(err)
		}
		return run("mv -f pg_wal/mv-spool/segment pg_wal/RECOVERYXLOG")
	}
	// The shell's spool hit, by mv (take "") or by walfetch-take: "false"
	// stands for walfetch, which must not run.
	shellHit := func(take string, segno walname.SegNo) cost {
		line, err := walfetchsettings.ShellRestoreCommand(
			walfetchsettings.Settings{URL: hub.URL, Server: "main", Spool: walfetchsettings.DefaultSettings().Spool}, "false", take)
		if err != nil {
			b.Fatal(err)
		}
		name := walname.SegmentName(1, segno, uint64(segSize))
		if err := os.Link(source, filepath.Join(spool, name)); err != nil {
			b.Fatal(err)
		}
		return run(strings.NewReplacer("%f", name, "%p", "pg_wal/RECOVERYXLOG").Replace(line))
	}
	take := walfetchsettings.TakeBinary(walfetch)
	if take == "" {
		b.Fatalf("no walfetch-take beside %s", walfetch)
	}
	var cpCosts, hitCosts, floorCosts, mvCosts, shellCosts, takeCosts, baseCosts []cost
	b.ResetTimer()
	for i := 0; i < calls; i++ {
		cpCosts = append(cpCosts, run("cp archive/segment pg_wal/RECOVERYXLOG"))
		hitCosts = append(hitCosts, hit(walfetch, spool, walname.SegNo(4*i+2)))
		floorCosts = append(floorCosts, run(goFloor+" %f %p"))
		mvCosts = append(mvCosts, mv())
		shellCosts = append(shellCosts, shellHit("", walname.SegNo(4*i+3)))
		takeCosts = append(takeCosts, shellHit(take, walname.SegNo(4*i+4)))
		if baseline != "" {
			baseCosts = append(baseCosts, hit(baseline, baselineSpool, walname.SegNo(4*i+5)))
		}
	}
	b.StopTimer()
	median := func(c []cost) cost {
		wall, cpu := make([]time.Duration, len(c)), make([]time.Duration, len(c))
		for i := range c {
			wall[i], cpu[i] = c[i].wall, c[i].cpu
		}
		slices.Sort(wall)
		slices.Sort(cpu)
		return cost{wall[len(c)/2], cpu[len(c)/2]}
	}
	mc := median(cpCosts)
	fmt.Println(machineLine())
	fmt.Printf("restore_command cost, %d calls each, %d MiB segments, median through sh (elapsed, CPU):\n", calls, segSize>>20)
	line := func(label string, m cost) {
		fmt.Printf("  %-28s %9v %9v   %.2fx, %.2fx of cp\n", label+":", m.wall.Round(time.Microsecond), m.cpu.Round(time.Microsecond),
			float64(m.wall)/float64(mc.wall), float64(m.cpu)/float64(mc.cpu))
	}
	line("cp from a local directory", mc)
	line("walfetch, spool hit", median(hitCosts))
	line("empty Go program (floor)", median(floorCosts))
	line("mv from a spool (shell)", median(mvCosts))
	line("walfetch, shell spool hit", median(shellCosts))
	line("walfetch-take spool hit", median(takeCosts))
	if baseline != "" {
		line("baseline walfetch, hit", median(baseCosts))
	}
	mh, mf := median(hitCosts), median(floorCosts)
	fmt.Printf("  a hit above the empty Go program: %v elapsed, %v CPU\n",
		(mh.wall - mf.wall).Round(time.Microsecond), (mh.cpu - mf.cpu).Round(time.Microsecond))
}
