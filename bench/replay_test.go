// Package bench measures restore_command throughput: how fast a standby
// replays the same backlog of WAL with walfetch (prefetch on and off) and with
// a plain `cp` from a local directory, on loopback and behind a proxy that
// adds a delay to every hub response. Run it with
//
//	go test -run XXX -bench Replay -benchtime 1x -timeout 60m ./bench
//
// BENCH_SEGMENT_MB (default 1) sets the segment size, BENCH_SEGMENTS (default
// 250) the backlog, BENCH_DELAY (default 20ms) the added delay, BENCH_ROUNDS
// (default 2) the rounds (each round runs every command once, interleaved; the
// median and the best of the rounds are reported), BENCH_ONLY the runs to do,
// separated by commas (a run's whole name, commas and all, or a part of the names). BENCH_WALFETCH_BASELINE names another
// walfetch binary (e.g. built from main, with walfetch-net beside it; after
// environment assignments, if any: "GOMAXPROCS=1 DIR/walfetch") to run beside this one, on
// loopback and with the delay, so that a change is measured against the same
// noise. BENCH_S3=1
// also feeds the backlog into a repository in an S3 bucket (versitygw on
// loopback, test/s3test) and replays from a second hub serving that bucket:
// the row "walfetch, S3-backed hub" against "walfetch" (the same hub code
// over a local repository).
//
// BENCH_PGBACKREST=1 adds the stock tool the issue names for replay across a
// WAN: pgBackRest's archive-get in async mode (process-max and queue set to
// walfetch's parallel downloads and prefetch), from a stanza in a bucket of
// its own (versitygw) that archive-push filled with the same WAL, on loopback
// and behind the same delay. pgBackRest speaks S3 over HTTPS only, so both of
// its runs go through a TLS proxy (the loopback one adds no delay); walfetch
// talks plain HTTP to its hub. Needs pgbackrest on PATH (Debian: apt-get
// install pgbackrest).
//
// Each run also says where the CPU went, per segment: the startup process
// (on a core, waiting for one, asleep: mostly waiting for restore_command),
// the restore_command calls, the prefetcher, the hubs (this process) and the
// machine's busy cores; and the minor page faults of the calls and of the
// prefetcher per segment (on this project's CI machine, a virtual machine, a
// fault costs about 13 us: a fresh process that touches 10 MB pays 30 ms).
// BENCH_RESTORE_TIMES=1 runs the standbys at
// log_min_messages = debug3 and reads from their logs how long recovery
// waited for each restore_command call (the first calls apart: a prefetcher
// starting) and how long it replayed between them; BENCH_RESTORE_TIMES=all
// lists every call's wait, in order. BENCH_PERF=DIR records a
// system-wide profile of each run (perf record -a -g) into DIR.
//
// BENCH_PIN=1 models the hub on another machine than the standby: after the
// setup, this process (the hubs, which run hub.Server as `walhub serve` does,
// and the delay proxy) and its children (versitygw) are pinned to CPU 1 with
// taskset, with GOMAXPROCS 1, and each standby is started on CPU 0, so that
// postgres, its restore_command (cp, or walfetch and the prefetcher it
// starts) share CPU 0 and never take the hub's core. Without it, all share
// every core, as on one machine. Needs at least 2 CPUs and taskset.
package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/test/s3test"
	"github.com/walhub/walhub/test/walfeed"
	walfetchsettings "github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func BenchmarkReplay(b *testing.B) {
	segMB := envInt("BENCH_SEGMENT_MB", 1)
	segments := envInt("BENCH_SEGMENTS", 250)
	delay := 20 * time.Millisecond
	if d, err := time.ParseDuration(os.Getenv("BENCH_DELAY")); err == nil {
		delay = d
	}
	segSize := uint64(segMB) << 20
	ctx := context.Background()

	binDir := pgtest.TempDir(b, "bin")
	walfetch, err := pgtest.BuildCommand(binDir, "walfetch")
	if err != nil {
		b.Fatal(err)
	}

	// A primary archiving into a directory (the cp source), fed into a hub repository.
	archive := pgtest.TempDir(b, "archive")
	primary := pgtest.NewPrimary(b, "primary", pgtest.Options{SegmentSizeMB: segMB, Conf: []string{
		"archive_mode = on", "archive_command = '" + walfeed.ArchiveCommand(archive) + "'"}})
	repoDir := b.TempDir()
	repo, err := repository.OpenLocal(ctx, repoDir)
	if err != nil {
		b.Fatal(err)
	}
	defer repo.Close()
	feeder, err := walfeed.New(ctx, repo, "main",
		primary.Query("SELECT system_identifier FROM pg_control_system()"), segSize, "zstd")
	if err != nil {
		b.Fatal(err)
	}
	base := primary.NewStandby("base", pgtest.StandbyOptions{NoStream: true, NoStart: true})

	// The backlog: rows of random hex (compresses about 2:1, like real data).
	from := primary.CurrentLSN()
	primary.Query("CREATE TABLE filler (id bigint, payload text)")
	for walname.SegmentOf(primary.CurrentLSN(), segSize)-walname.SegmentOf(from, segSize) < walname.SegNo(segments) {
		primary.Query(fmt.Sprintf(`INSERT INTO filler SELECT g, md5(random()::text) || md5(random()::text) ||
			md5(random()::text) || md5(random()::text) FROM generate_series(1, %d) g`, 2500*segMB))
	}
	end := primary.CurrentLSN()
	primary.SwitchWAL()
	last := walname.SegmentName(primary.TimeLine(), walname.SegmentOf(end, segSize), segSize)
	pgtest.WaitFor(b, 10*time.Minute, "the archive to hold "+last, func() bool {
		_, err := os.Stat(filepath.Join(archive, last))
		return err == nil
	})
	if _, err := feeder.IngestDir(ctx, archive); err != nil {
		b.Fatal(err)
	}
	n := int(walname.SegmentOf(end, segSize) - walname.SegmentOf(from, segSize) + 1)
	wantRows := primary.Query("SELECT count(*) FROM filler")

	// The hub on loopback, and a proxy adding the delay to every response.
	hubCtx, stopHub := context.WithCancel(ctx)
	defer stopHub()
	serve := func(repoConf string, repo *repository.Repository) string {
		cfg, err := config.Parse(fmt.Sprintf("%s\n[hub]\nlisten = \"127.0.0.1:%d\"\n", repoConf, pgtest.FreePort(b)))
		if err != nil {
			b.Fatal(err)
		}
		srv, err := hub.New(hub.Options{Config: cfg, Repo: repo, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		go srv.Run(hubCtx)
		return "http://" + cfg.Hub.Listen
	}
	hubURL := serve(fmt.Sprintf("repository = %q", repoDir), repo)
	// BENCH_S3: the same backlog in a bucket, served by a hub of its own.
	var s3HubURL string
	if os.Getenv("BENCH_S3") != "" {
		bucket := s3test.Start(b)
		credDir := pgtest.TempDir(b, "s3cred")
		s3Conf := bucket.TOML("bench", filepath.Join(credDir, "work"), credDir)
		cfg, err := config.Parse(s3Conf)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := repository.Init(ctx, cfg); err != nil {
			b.Fatal(err)
		}
		s3Repo, err := repository.Open(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer s3Repo.Close()
		s3Feeder, err := walfeed.New(ctx, s3Repo, "main",
			primary.Query("SELECT system_identifier FROM pg_control_system()"), segSize, "zstd")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s3Feeder.IngestDir(ctx, archive); err != nil {
			b.Fatal(err)
		}
		s3HubURL = serve(s3Conf, s3Repo)
	}
	delayedURL := delayProxy(b, hubURL, delay, false)

	wf := func(u, extra string) string {
		return fmt.Sprintf("%s --url %s --server main --idle-exit 10s %s %%f %%p", walfetch, u, extra)
	}
	// walfetch behind the shell's own spool hit: the line walfetch
	// --print-restore-command prints, with walfetch-take (take, beside
	// walfetch) or mv (take "").
	shellHit := func(u, take string) string {
		line, err := walfetchsettings.ShellRestoreCommand(
			walfetchsettings.Settings{URL: u, Server: "main", Spool: walfetchsettings.DefaultSettings().Spool},
			fmt.Sprintf("%s --url %s --server main --idle-exit 10s", walfetch, u), take)
		if err != nil {
			b.Fatal(err)
		}
		return line
	}
	// The floor: no restore_command at all, the whole backlog already in pg_wal.
	const inPGWAL = "WAL already in pg_wal (floor)"
	const cpRun, wfRun, shellRun, noPrefetchRun = "cp from a local directory", "walfetch", "walfetch, shell spool hit", "walfetch --prefetch 0"
	const takeRun = "walfetch, walfetch-take spool hit"
	take := walfetchsettings.TakeBinary(walfetch)
	if take == "" {
		b.Fatalf("no walfetch-take beside %s", walfetch)
	}
	wfDelayed := fmt.Sprintf("walfetch, %s delay", delay)
	shellDelayed := fmt.Sprintf("walfetch, shell spool hit, %s delay", delay)
	takeDelayed := fmt.Sprintf("walfetch, walfetch-take spool hit, %s delay", delay)
	noPrefetchDelayed := fmt.Sprintf("walfetch --prefetch 0, %s delay", delay)
	runs := []struct{ name, command string }{
		{inPGWAL, ""},
		{cpRun, fmt.Sprintf("cp %s/%%f %%p", archive)},
		{wfRun, wf(hubURL, "")},
		{shellRun, shellHit(hubURL, "")},
		{takeRun, shellHit(hubURL, take)},
		{noPrefetchRun, wf(hubURL, "--prefetch 0")},
		{wfDelayed, wf(delayedURL, "")},
		{shellDelayed, shellHit(delayedURL, "")},
		{takeDelayed, shellHit(delayedURL, take)},
		{noPrefetchDelayed, wf(delayedURL, "--prefetch 0")},
	}
	const s3Run = "walfetch, S3-backed hub"
	if s3HubURL != "" {
		runs = append(runs, struct{ name, command string }{s3Run, wf(s3HubURL, "")})
	}
	// BENCH_PGBACKREST: the stock tool over the same delay.
	pgbrLoopback := "pgBackRest async, S3 on loopback"
	pgbrDelayed := fmt.Sprintf("pgBackRest async, S3, %s delay", delay)
	if os.Getenv("BENCH_PGBACKREST") != "" {
		d := walfetchsettings.DefaultSettings() // what the walfetch runs use
		pgbr := newPgBackRest(b, primary, archive, segMB, d.Prefetch, d.Parallel)
		runs = append(runs, struct{ name, command string }{pgbrLoopback, pgbr.restoreCommand(pgbr.loopback)},
			struct{ name, command string }{pgbrDelayed, pgbr.restoreCommand(delayProxy(b, pgbr.bucket, delay, true))})
	}
	const baselineRun = "walfetch baseline binary"
	baselineDelayed := fmt.Sprintf("walfetch baseline binary, %s delay", delay)
	if bin := os.Getenv("BENCH_WALFETCH_BASELINE"); strings.TrimSpace(bin) != "" {
		// walfetch runs walfetch-net from its own directory for anything
		// but a spool hit: without it every call fails, and recovery waits
		// for the benchmark's timeout.
		// It may follow environment assignments for the shell, as a
		// restore_command may: "GOMAXPROCS=1 /path/walfetch".
		words := strings.Fields(bin)
		if _, err := os.Stat(filepath.Join(filepath.Dir(words[len(words)-1]), "walfetch-net")); err != nil {
			b.Fatalf("BENCH_WALFETCH_BASELINE=%s: walfetch-net must be beside it (go build -o DIR/ ./cmd/walfetch ./cmd/walfetch-net): %v", bin, err)
		}
		runs = append(runs, struct{ name, command string }{baselineRun,
			fmt.Sprintf("%s --url %s --server main --idle-exit 10s %%f %%p", bin, hubURL)})
		runs = append(runs, struct{ name, command string }{baselineDelayed,
			fmt.Sprintf("%s --url %s --server main --idle-exit 10s %%f %%p", bin, delayedURL)})
	}
	// An item of BENCH_ONLY that is a run's whole name selects that run only,
	// else every run whose name contains it.
	names := make([]string, len(runs))
	for i, r := range runs {
		names[i] = r.name
	}
	items := onlyItems(os.Getenv("BENCH_ONLY"), func(o string) bool { return slices.Contains(names, o) })
	picks := func(o onlyItem, name string) bool {
		return o.name == name || !o.whole && strings.Contains(name, o.name)
	}
	// An item that selects no run is a typo: say so before the first round
	// (the names depend on the settings, known only once the hubs run), not
	// after rounds that measured something else.
	for _, o := range items {
		if !slices.ContainsFunc(names, func(n string) bool { return picks(o, n) }) {
			b.Fatalf("BENCH_ONLY: %q selects no run; the runs (with these settings) are:\n  %s", o.name, strings.Join(names, "\n  "))
		}
	}
	selected := func(name string) bool {
		return len(items) == 0 || slices.ContainsFunc(items, func(o onlyItem) bool { return picks(o, name) })
	}
	// BENCH_PIN: the hub side on CPU 1, the standby on CPU 0.
	pinned := os.Getenv("BENCH_PIN") != ""
	standbyCPUs, where := "", ""
	if pinned {
		if runtime.NumCPU() < 2 {
			b.Fatal("BENCH_PIN needs at least 2 CPUs")
		}
		pgtest.Pin(b, "1")
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		standbyCPUs = "0"
		where = " (BENCH_PIN: hubs on CPU 1, standby on CPU 0)"
		fmt.Println("BENCH_PIN: the hubs, the delay proxy and versitygw (this process and its children, GOMAXPROCS 1) " +
			"on CPU 1; each standby (postgres, and its restore_command: cp, or walfetch and its prefetcher) on CPU 0")
	}
	restoreTimes := os.Getenv("BENCH_RESTORE_TIMES") != ""
	rates := map[string][]float64{}
	rounds := envInt("BENCH_ROUNDS", 2)
	fmt.Println(machineLine())
	b.ResetTimer()
	for round := 1; round <= rounds; round++ {
		for i, r := range runs {
			if !selected(r.name) {
				continue
			}
			dir := pgtest.TempDir(b, fmt.Sprintf("replay%d", i))
			if out, err := exec.Command("cp", "-a", base.DataDir, dir).CombinedOutput(); err != nil {
				b.Fatalf("copy base backup: %v\n%s", err, out)
			}
			standby := pgtest.AdoptDataDir(b, fmt.Sprintf("replay%d", i), filepath.Join(dir, "data"))
			if r.command == "" {
				if out, err := exec.Command("sh", "-c", fmt.Sprintf("cp %s/0* %s/pg_wal/", archive, standby.DataDir)).CombinedOutput(); err != nil {
					b.Fatalf("fill pg_wal: %v\n%s", err, out)
				}
				pgtest.Chown(b, filepath.Join(standby.DataDir, "pg_wal"))
			} else {
				standby.AppendConf("restore_command = '" + strings.ReplaceAll(r.command, dataDirVar, standby.DataDir) + "'")
			}
			// What the copies above wrote is written back before the clock
			// starts, not during the replay: the floor's pg_wal (hundreds of
			// MB copied just now) was still being written back while
			// recovery read it, and cp, which reads an archive written long
			// before, replayed faster than the floor.
			if out, err := exec.Command("sync").CombinedOutput(); err != nil {
				b.Fatalf("sync: %v\n%s", err, out)
			}
			if restoreTimes {
				standby.AppendConf("log_min_messages = debug3")
			}
			standby.CPUs = standbyCPUs
			stopPerf := startPerf(b, fmt.Sprintf("round%d-%s", round, r.name))
			hubCPU0, busy0 := selfCPU(), machineBusy()
			start := time.Now()
			standby.Start()
			if pinned {
				if got := standby.AllowedCPUs(); got != standbyCPUs {
					b.Fatalf("%s: the standby runs on CPUs %s, want %s", r.name, got, standbyCPUs)
				}
			}
			// Asked every 10 ms: at every 100 ms, a replay of 121 segments
			// that took 0.4-0.9 s on a quick machine read as 0.83 or 0.93 s.
			standby.WaitReplayEvery(end, 10*time.Millisecond, 30*time.Minute)
			elapsed := time.Since(start)
			stopPerf()
			cpuLine := cpuPerSegment(standby, n, elapsed, selfCPU()-hubCPU0, machineBusy()-busy0)
			if got := standby.Query("SELECT count(*) FROM filler"); got != wantRows {
				b.Fatalf("%s: replayed %s rows, want %s", r.name, got, wantRows)
			}
			standby.Stop("immediate")
			if log, err := os.ReadFile(filepath.Join(standby.DataDir, "pg_wal", "walfetch-spool", "prefetcher.log")); err == nil {
				stopPrefetcher(string(log))
				lines := strings.Split(strings.TrimSpace(string(log)), "\n")
				problems := 0
				for _, l := range lines {
					if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
						problems++
						if problems <= 3 {
							fmt.Printf("         prefetcher: %s\n", l)
						}
					}
				}
				fmt.Printf("         prefetcher: %s (%d warnings)\n", lines[len(lines)-1], problems)
			}
			os.RemoveAll(dir)
			rate := float64(n) / elapsed.Seconds()
			rates[r.name] = append(rates[r.name], rate)
			fmt.Printf("round %d: %-40s %4d segments of %d MiB in %6.2fs: %7.1f segments/s\n", round, r.name, n, segMB, elapsed.Seconds(), rate)
			fmt.Print(cpuLine)
			if restoreTimes {
				printRestoreTimes(standby.LogFile)
			}
		}
	}
	b.StopTimer()
	fmt.Println(machineLine())
	median := map[string]float64{}
	fmt.Printf("median and best of %d rounds%s:\n", rounds, where)
	for _, r := range runs {
		if v := rates[r.name]; len(v) > 0 {
			slices.Sort(v)
			median[r.name] = v[len(v)/2]
			if len(v)%2 == 0 {
				median[r.name] = (v[len(v)/2-1] + v[len(v)/2]) / 2
			}
			fmt.Printf("median: %-40s %7.1f segments/s (best %.1f)\n", r.name, median[r.name], v[len(v)-1])
		}
	}
	ratio := func(label, a, b string) {
		if median[a] > 0 && median[b] > 0 {
			fmt.Printf("%-48s %.2fx\n", label+":", median[a]/median[b])
		}
	}
	ratio("walfetch / cp (loopback)", wfRun, cpRun)
	ratio("walfetch, shell spool hit / cp (loopback)", shellRun, cpRun)
	ratio("walfetch, walfetch-take spool hit / cp (loopback)", takeRun, cpRun)
	ratio("walfetch --prefetch 0 / cp (loopback)", noPrefetchRun, cpRun)
	ratio("walfetch / WAL already in pg_wal", wfRun, inPGWAL)
	ratio("walfetch, shell spool hit / WAL already in pg_wal", shellRun, inPGWAL)
	ratio("walfetch, walfetch-take spool hit / WAL already in pg_wal", takeRun, inPGWAL)
	ratio("cp / WAL already in pg_wal", cpRun, inPGWAL)
	ratio(fmt.Sprintf("walfetch / walfetch --prefetch 0 (%s delay)", delay), wfDelayed, noPrefetchDelayed)
	ratio(fmt.Sprintf("walfetch %s delay / walfetch loopback", delay), wfDelayed, wfRun)
	ratio(fmt.Sprintf("shell spool hit %s delay / loopback", delay), shellDelayed, shellRun)
	ratio(fmt.Sprintf("walfetch-take spool hit %s delay / loopback", delay), takeDelayed, takeRun)
	ratio("walfetch S3-backed hub / walfetch local hub", s3Run, wfRun)
	ratio(fmt.Sprintf("pgBackRest %s delay / pgBackRest loopback", delay), pgbrDelayed, pgbrLoopback)
	ratio(fmt.Sprintf("walfetch / pgBackRest (%s delay)", delay), wfDelayed, pgbrDelayed)
	ratio("walfetch / pgBackRest (loopback)", wfRun, pgbrLoopback)
	ratio("walfetch / walfetch baseline binary", wfRun, baselineRun)
	ratio("walfetch baseline binary / cp", baselineRun, cpRun)
	ratio(fmt.Sprintf("walfetch baseline %s delay / baseline loopback", delay), baselineDelayed, baselineRun)
}

// cpuPerSegment says where the CPU went during a replay, per segment:
// the startup process (on a core, waiting for one, asleep: mostly waiting
// for its restore_command), the restore_command calls it ran (sh and cp or
// walfetch), the prefetcher, this process (the hubs), and the whole machine
// (busy cores: the rest is the standby's other processes and other load).
func cpuPerSegment(standby *pgtest.Cluster, n int, elapsed, hubCPU, busy time.Duration) string {
	pid, _ := strconv.Atoi(standby.Query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'startup'"))
	st, ok := readProcTimes(pid)
	if !ok {
		return ""
	}
	line := fmt.Sprintf("         ms/segment: startup on-cpu %s, waiting for a core %s, asleep %s; restore_command cpu %s (%d page faults)",
		ms(st.onCPU, n), ms(st.runWait, n), ms(st.age-st.onCPU-st.runWait, n), ms(st.children, n), st.childFaults/int64(n))
	log, _ := os.ReadFile(filepath.Join(standby.DataDir, "pg_wal", "walfetch-spool", "prefetcher.log"))
	if _, after, ok := strings.Cut(string(log), `msg="prefetcher started" pid=`); ok {
		f, _, _ := strings.Cut(after, " ")
		ppid, _ := strconv.Atoi(f)
		if pt, ok := readProcTimes(ppid); ok {
			line += fmt.Sprintf("; prefetcher cpu %s (waiting for a core %s; %d page faults)", ms(pt.cpu, n), ms(pt.runWait, n), pt.faults/int64(n))
		}
	}
	return fmt.Sprintf("%s; hubs %s; machine busy %s of %s\n", line, ms(hubCPU, n), ms(busy, n), ms(time.Duration(runtime.NumCPU())*elapsed, n))
}

// onlyItem is one item of BENCH_ONLY: a run's whole name, or a part of names.
type onlyItem struct {
	name  string
	whole bool
}

// onlyItems splits BENCH_ONLY at its commas, except where they lie inside a
// run's whole name (isRun), as in "walfetch, 100ms delay": the longest run of
// comma-separated pieces that makes a whole name is one item.
func onlyItems(only string, isRun func(string) bool) []onlyItem {
	var items []onlyItem
	pieces := strings.Split(only, ",")
	for i := 0; i < len(pieces); {
		// The longest whole name starting at piece i, else piece i alone.
		j := i + 1
		for k := len(pieces); k > i+1; k-- {
			if isRun(strings.Join(pieces[i:k], ",")) {
				j = k
				break
			}
		}
		if o := strings.Join(pieces[i:j], ","); o != "" {
			items = append(items, onlyItem{name: o, whole: isRun(o)})
		}
		i = j
	}
	return items
}

// stopPrefetcher ends the prefetcher whose log is log (its pid is on every
// line). Left alone it idles on for --idle-exit, holding its connections to
// the hub while the next run's prefetcher opens its own, and the hub takes 64
// at most from one address: each run starts alone.
func stopPrefetcher(log string) {
	_, rest, ok := strings.Cut(log, " pid=")
	if !ok {
		return
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return
	}
	// Only if that pid is still a walfetch program: it may have exited and
	// its pid gone to another process.
	if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmd), "walfetch") {
		syscall.Kill(pid, syscall.SIGTERM)
	}
}
