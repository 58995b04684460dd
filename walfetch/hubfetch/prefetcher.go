package hubfetch

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/pgfile"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

// The prefetcher keeps the segments after the one recovery last asked for
// downloaded in the spool, continuously: every time walfetch serves a segment
// it says so through the socket, and every time a segment is renamed out of
// the spool (by walfetch, or by the restore_command's shell, which says
// nothing: walfetch.ShellRestoreCommand) inotify says so; the window moves,
// and the free download slots are refilled from what the hub's peek says
// exists. It never fetches
// a .history or .partial file, and, but for its first downloads, nothing the
// hub has not listed: when it starts, it downloads the segments recovery
// will ask for next while its first peek is under way (see
// firstDownloads), verified as walfetch verifies a segment it downloads
// itself.
type prefetcher struct {
	s        walfetch.Settings
	sp       *walfetch.Spool
	systemID string
	c        *client.Client
	log      *slog.Logger
	order    *workOrder // nil: downloads unordered

	served   chan string     // what walfetch told, from the socket: names it served
	taken    chan string     // names renamed out of the spool (Spool.WatchTaken)
	watching bool            // taken is fed: walfetch's datagrams after a hit say nothing new
	finished chan struct{}   // a download ended
	peeked   chan peekAnswer // the answer of the peek under way

	// Owned by the loop goroutine.
	servedCount, hits int // segments recovery received, and how many the spool had ready
	segSize           uint64
	current           string // the segment recovery last received
	tli               walname.TimeLine
	segno             walname.SegNo
	// next, while current is empty, is the segment recovery will ask for
	// first (a prefetcher started by StartPrefetcherAt).
	next     string
	lastPoke time.Time
	lastPeek time.Time
	// known holds what peeks said the hub has after the current segment, on
	// its timeline, up to horizon; peekShort says the last peek found fewer
	// than asked for (the hub's end: ask again only after a pause).
	known     map[walname.SegNo]api.PeekSegment
	horizon   walname.SegNo
	peekShort bool
	// peeking says a peek is under way: its answer comes through peeked.
	peeking bool
	// startedAt is when the first downloads were queued (firstDownloads;
	// zero: not yet); guessed is how many, from firstGuess, the segment
	// recovery was to ask for next.
	startedAt  time.Time
	guessed    int
	firstGuess walname.Name
	// moreGuessesAfter is the constant of that name (tests shorten it).
	moreGuessesAfter time.Duration
	// sizeHint is the segment size pg_control gives (0: none), which says
	// how many first downloads to queue; the peek's is the one that counts.
	sizeHint uint64
	// inflightMu guards inflight and failed, shared with the download workers.
	inflightMu sync.Mutex
	inflight   map[string]bool
	failed     map[string]time.Time // name → not before
	// fetched are the segments downloaded into the spool: one that is gone
	// since was taken by walfetch (the poke may still be on its way) and is
	// not downloaded again.
	fetched map[string]bool
}

// peekAnswer is what the hub answered a peek for count segments, asked on
// timeline tli (0: before the segment size was known).
type peekAnswer struct {
	count int
	tli   walname.TimeLine
	peek  api.Peek
	err   error
}

// newPrefetcher returns a prefetcher for spool sp with settings s, asking the
// hub of the data directory's database system systemID through c; its loop
// is not started.
func newPrefetcher(s walfetch.Settings, sp *walfetch.Spool, systemID string, c *client.Client, log *slog.Logger) *prefetcher {
	return &prefetcher{s: s, sp: sp, systemID: systemID, c: c, log: log,
		served: make(chan string, 64), taken: make(chan string, 256), finished: make(chan struct{}, 64), peeked: make(chan peekAnswer, 1), moreGuessesAfter: moreGuessesAfter,
		failed: map[string]time.Time{}, inflight: map[string]bool{}, fetched: map[string]bool{}, known: map[walname.SegNo]api.PeekSegment{}}
}

type download struct {
	seg     api.PeekSegment
	segSize uint64
	// ahead is set for a download queued before the segment size was known
	// (segSize 0, no checksum from a peek): how many segments after the one
	// recovery asked for it is.
	ahead int
}

// cpuUsed is the processor time this process has used, user and system.
func cpuUsed() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// errPartTaken: a .part file exists that this prefetcher did not create.
var errPartTaken = errors.New("being written by another process")

// errBeyondWindow: one of the first downloads lies beyond the window, for
// the segment size its page header says.
var errBeyondWindow = errors.New("beyond the prefetch window")

// RunPrefetcher is the prefetcher process, started by the spool with
// PrefetcherArg and its settings in the environment. It returns the exit status.
func RunPrefetcher() int {
	var cfg walfetch.PrefetcherConfig
	if err := json.Unmarshal([]byte(os.Getenv(walfetch.PrefetcherEnv)), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "walfetch: --run-prefetcher is internal: started by walfetch itself (%v)\n", err)
		return 1
	}
	os.Unsetenv(walfetch.PrefetcherEnv)
	sysid, err := strconv.ParseUint(cfg.SystemID, 10, 64)
	if err != nil {
		return 1
	}
	sp := &walfetch.Spool{Dir: cfg.Dir, Root: cfg.Root, SystemID: sysid}
	if err := os.MkdirAll(sp.Dir, 0o700); err != nil {
		return 1
	}
	oneProcessor()
	yieldToRecovery()
	lockFile, err := os.OpenFile(sp.Path(walfetch.LockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return 1
	}
	// The lock lasts as long as this open file, which must stay referenced
	// until the process ends: an *os.File nothing refers to any more is
	// closed by its finalizer at the next garbage collection, which dropped
	// the lock a few downloads into the run, and a second prefetcher then
	// took the spool over beside the first (removing its downloads under
	// way, one renaming the other's unfinished file into place).
	defer lockFile.Close()
	if err := syscall.Flock(int(lockFile.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return 0 // another prefetcher serves this spool
	}
	logPath := filepath.Join(sp.Root, "prefetcher.log")
	if fi, err := os.Stat(logPath); err == nil && fi.Size() > 1<<20 {
		os.Remove(logPath)
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 1
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, nil)).With("pid", os.Getpid())

	c, err := client.New(client.Options{URL: cfg.Settings.URL, Server: cfg.Settings.Server, Token: cfg.Settings.Token,
		CAFile: cfg.Settings.CAFile, Timeout: cfg.Settings.Timeout, MaxConns: maxDownloads(cfg.Settings) + 1, UserAgent: "walfetch-prefetcher",
		ReadBuffer: prefetchReadBuffer})
	if err != nil {
		log.Error("cannot make a hub client", "err", err)
		return 1
	}
	p := newPrefetcher(cfg.Settings, sp, cfg.SystemID, c, log)
	p.order = newWorkOrder()
	// The working directory is the data directory, as for walfetch.
	p.sizeHint, _ = pgfile.ControlSegmentSize("global/pg_control")
	p.removeOtherSpools()
	p.removeParts()
	sock := walfetch.ShortPath(sp.SockPath())
	os.Remove(sock)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		log.Error("cannot listen for walfetch", "socket", sock, "err", err)
		return 1
	}
	log.Info("prefetcher started", "spool", sp.Dir, "hub", cfg.Settings.URL, "server", cfg.Settings.Server,
		"prefetch", cfg.Settings.Prefetch, "parallel", cfg.Settings.Parallel)
	go p.listen(conn)
	// The link that lets the restore_command's shell take segments from the
	// spool is made only when the prefetcher can see them go: it would
	// otherwise not know where recovery is.
	link := ""
	if stopWatch, err := sp.WatchTaken(p.taken); err != nil {
		log.Warn("following recovery by walfetch's datagrams only: the restore_command's shell cannot take segments from the spool", "err", err)
	} else {
		defer stopWatch()
		p.watching = true
		if link, err = sp.PublishHitLink(".", cfg.Settings); err != nil {
			log.Info("no link for the restore_command's shell: walfetch serves every segment", "err", err)
		}
		sp.RemoveStaleHitLinks(link)
	}
	p.begin(cfg.Served, cfg.Next)
	p.loop()
	conn.Close()
	os.Remove(sock)
	log.Info("prefetcher exits: idle", "after", cfg.Settings.IdleExit, "served", p.servedCount, "from_spool", p.hits, "cpu", cpuUsed())
	// Whatever is left will not be asked for soon (recovery ended or
	// stopped): leave no segments behind. The lock file stays (deleting it
	// could let two prefetchers hold locks on two files); a prefetcher
	// started meanwhile finds it held and leaves, and the next call starts one.
	if link != "" {
		sp.WithdrawHitLink(link)
	}
	p.removeSegments()
	return 0
}

// begin gives the loop its first event: served, the segment walfetch just
// served, or, when that is empty, next, the one recovery will ask for first.
func (p *prefetcher) begin(served, next string) {
	if served != "" {
		p.served <- served
		return
	}
	p.next, p.lastPoke = next, time.Now()
	p.finished <- struct{}{} // plan at once
}

// oneProcessor makes the Go runtime run the prefetcher's goroutines on one
// processor (GOMAXPROCS 1) unless GOMAXPROCS is set in the environment. The
// prefetcher mostly waits, and its work (a download, a decode, a write per
// segment recovery takes) needs a fraction of one core: a second processor
// bought it no speed, only scheduler work, threads woken to look for
// goroutines to steal, each a context switch, costly on a virtual machine.
// Measured with BenchmarkPrefetcherFollowsRecovery (cmd/walfetch), 120
// segments of 1 MiB on 2 cores: 2.4 ms of CPU per segment instead of 3.3,
// half the context switches, a tenth of the page faults. One core decodes,
// checks and writes 16 MiB segments several times faster than PostgreSQL
// replays them, and a download that waits on the network holds no processor.
func oneProcessor() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// prefetchReadBuffer is the read buffer of each of the prefetcher's
// connections to the hub, of which it keeps up to maxAutoDownloads+1, not the
// client's 256 KiB: the zstd decoder reads whole blocks (up to 128 KiB) and
// the plain copy reads 256 KiB at a time, reads that bypass a smaller buffer,
// so it saves no system call, and the first window of downloads, all under
// way at once, costs memory the process touches for the first time (16 x
// 256 KiB with 1 MiB segments, when 16 ran at once: about 20 ms of the
// prefetcher's start on the 2-core VM of BenchmarkPrefetcherFollowsRecovery,
// with no change per segment).
const prefetchReadBuffer = 32 << 10

// prefetcherNice is the nice value the prefetcher runs at.
const prefetcherNice = 10

// yieldToRecovery lowers the prefetcher's scheduling priority below the
// startup process's: on a machine with few cores, replay is what must not
// wait, and the prefetcher only needs to stay ahead of it, which it does on
// the spare cycles. Linux keeps a nice value per thread, and a new thread
// inherits its creator's: every thread of the process is niced (twice over,
// for one created meanwhile), and the runtime's later threads inherit it.
// Failing is harmless: the prefetcher then runs at the standby's priority.
func yieldToRecovery() {
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return
		}
		for _, t := range tasks {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				syscall.Setpriority(syscall.PRIO_PROCESS, tid, prefetcherNice)
			}
		}
	}
}

func (p *prefetcher) listen(conn *net.UnixConn) {
	buf := make([]byte, 128)
	for {
		n, _, err := conn.ReadFromUnix(buf)
		if err != nil {
			return
		}
		p.served <- string(buf[:n])
	}
}

// removeOtherSpools removes spools of other keys (an earlier, unrelated
// restore, or before a reboot) that no prefetcher holds.
func (p *prefetcher) removeOtherSpools() {
	entries, err := os.ReadDir(p.sp.Root)
	if err != nil {
		return
	}
	for _, e := range entries {
		dir := filepath.Join(p.sp.Root, e.Name())
		if !e.IsDir() || !walfetch.IsSpoolKey(e.Name()) || dir == filepath.Clean(p.sp.Dir) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, walfetch.LockName), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			p.log.Info("removing a spool left by another restore", "dir", dir)
			os.RemoveAll(dir)
		}
		f.Close()
	}
}

// removeParts removes downloads a dead prefetcher left unfinished.
func (p *prefetcher) removeParts() {
	entries, _ := os.ReadDir(p.sp.Dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), walfetch.PartSuffix) {
			os.Remove(p.sp.Path(e.Name()))
		}
	}
}

// removeSegments empties the spool of segments, finished or not.
func (p *prefetcher) removeSegments() {
	entries, _ := os.ReadDir(p.sp.Dir)
	for _, e := range entries {
		if _, err := walname.Parse(strings.TrimSuffix(e.Name(), walfetch.PartSuffix)); err == nil {
			os.Remove(p.sp.Path(e.Name()))
		}
	}
}

// window is how many segments ahead of recovery the spool holds.
func (p *prefetcher) window() int { return window(p.s, p.segSize) }

// window is how many segments of segSize (0: not known yet) ahead of recovery
// the spool holds with settings s: --prefetch for segments of 16 MiB or more;
// for smaller segments as many more as hold the same bytes (16 x 16 MiB = 256
// x 1 MiB); as many as --spool-max-mb allows.
//
// Recovery replays small segments at a higher rate, and a window of a fixed
// count reached less far ahead in time: 16 segments of 1 MiB are an eighth of
// a second of a replay at 130 a second, about what one download takes from a
// hub 100 ms away, so that recovery waited whenever a response came late
// (BENCH_DELAY=100ms BenchmarkReplay: 0.83x of loopback).
func window(s walfetch.Settings, segSize uint64) int {
	w := s.Prefetch
	if segSize > 0 {
		if segSize < settingsSegmentSize {
			w *= int(settingsSegmentSize / segSize)
		}
		w = min(w, int(s.SpoolMax<<20/int64(segSize)))
	}
	return max(w, 1)
}

// settingsSegmentSize is the segment size --prefetch and --parallel count in:
// the default 16 MiB.
const settingsSegmentSize = 16 << 20

// downloadSlots is how many downloads run at once: --parallel for segments
// of 16 MiB or more; for smaller segments as many more as keep the same
// bytes in flight (4 x 16 MiB = 64 x 1 MiB), never more than the window
// nor maxAutoDownloads.
// Each download waits a round trip before its bytes flow: with a hub far
// away, a count fixed for 16 MiB segments would leave recovery of small
// segments waiting on round trips, not on bandwidth.
func downloadSlots(parallel, window int, segSize uint64) int {
	if segSize == 0 || segSize >= settingsSegmentSize {
		return parallel
	}
	return max(parallel, min(parallel*int(settingsSegmentSize/segSize), window, maxAutoDownloads))
}

// maxAutoDownloads bounds what downloadSlots adds to --parallel, so that two
// standbys behind one address, each prefetcher with a connection more for its
// peeks (and a walfetch-net of its own), stay within a hub's default
// max_client_connections (64 from one address). From a hub a round trip RTT
// away, n downloads at once bring at most n/RTT segments a second: 16 from
// 100 ms away were the bound once replay of 1 MiB segments passed 140 a
// second (BENCH_DELAY=100ms BenchmarkReplay, 501 x 1 MiB, two A/B runs of 3
// rounds: 137.7 and 138.1 segments a second with 16, 146.7 with 32, 144.4
// with 24; 164-167 on loopback). When replay ran at 100 a second, 32 bought
// nothing over 16.
const maxAutoDownloads = 24

// maxDownloads is the most downloads s lets run at once, whatever the
// segment size: the download workers and the hub connections to have.
func maxDownloads(s walfetch.Settings) int {
	return downloadSlots(s.Parallel, window(s, walname.MinSegmentSize), walname.MinSegmentSize)
}

func (p *prefetcher) loop() {
	jobs := make(chan download, 1024)
	var wg sync.WaitGroup
	for range maxDownloads(p.s) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range jobs {
				p.fetch(d)
				p.finished <- struct{}{}
			}
		}()
	}
	defer func() { close(jobs); wg.Wait() }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		listSpool := false
		select {
		case msg := <-p.served:
			p.onTold(msg)
		case name := <-p.taken:
			p.onTaken(name)
		case <-p.finished:
		case a := <-p.peeked:
			p.peekDone(a)
		case <-tick.C:
			// What setCurrent does not remove (a download that ended after
			// recovery passed it, a window that shrank, files of another
			// prefetcher) waits for this: listing the spool at every
			// event was a tenth of the prefetcher's CPU with 1 MiB segments.
			listSpool = true
		}
		// Catch up with everything that happened meanwhile before deciding:
		// recovery may have moved several segments while a peek was under way.
	drain:
		for {
			select {
			case msg := <-p.served:
				p.onTold(msg)
			case name := <-p.taken:
				p.onTaken(name)
			case <-p.finished:
			case a := <-p.peeked:
				p.peekDone(a)
			default:
				break drain
			}
		}
		if listSpool {
			p.trim()
		}
		if time.Since(p.lastPoke) > p.s.IdleExit && p.inflightCount() == 0 {
			return
		}
		p.plan(jobs)
	}
}

func (p *prefetcher) inflightCount() int {
	p.inflightMu.Lock()
	defer p.inflightMu.Unlock()
	return len(p.inflight)
}

// onServed moves the window to the segment recovery just received.
func (p *prefetcher) onServed(name string) {
	n, err := walname.Parse(name)
	if err != nil || n.Kind != walname.KindSegment {
		return
	}
	p.lastPoke = time.Now()
	p.current = name
	p.servedCount++
	p.inflightMu.Lock()
	if p.fetched[name] {
		p.hits++
	}
	p.inflightMu.Unlock()
	if p.servedCount%100 == 0 {
		p.log.Info("progress", "served", p.servedCount, "from_spool", p.hits, "at", name, "cpu", cpuUsed())
	}
	if p.segSize != 0 {
		p.setCurrent()
	}
}

// onTold follows what walfetch told: the segment it is about to download
// (recovery is there), or, marked walfetch.TakenMark, one it took from the
// spool, which a watching prefetcher saw go already and takes only as a sign
// of life: the datagram may reach it after the renames of later segments
// that the shell took meanwhile, and would move the window back.
func (p *prefetcher) onTold(msg string) {
	if name, taken := strings.CutSuffix(msg, walfetch.TakenMark); taken {
		if p.watching {
			p.lastPoke = time.Now()
			return
		}
		msg = name
	}
	p.onServed(msg)
}

// onTaken follows a file renamed out of the spool (Spool.WatchTaken): a
// segment taken into %p by the restore_command's shell or by walfetch. One
// at or before the segment recovery is known to be at tells nothing: a
// datagram of walfetch's about a later one overtook it. (Segment names of one
// timeline sort as the segments do.)
func (p *prefetcher) onTaken(name string) {
	if p.current != "" && len(name) == len(p.current) && name[:8] == p.current[:8] && name <= p.current {
		return
	}
	p.onServed(name)
}

// setCurrent derives the window's position from the current name; a new
// timeline forgets what was known about the old one.
func (p *prefetcher) setCurrent() {
	tli, segno, err := walname.ParseSegment(p.current, p.segSize)
	if err != nil {
		return
	}
	if tli != p.tli {
		p.known, p.horizon, p.peekShort = map[walname.SegNo]api.PeekSegment{}, 0, false
	}
	p.tli, p.segno = tli, segno
	for k := range p.known {
		if k <= segno {
			delete(p.known, k)
		}
	}
	// The segments downloaded that recovery has passed (it took the one it
	// asked for; any other it will not ask for again) leave the spool now.
	p.inflightMu.Lock()
	for name := range p.fetched {
		if t, n, err := walname.ParseSegment(name, p.segSize); err != nil || t != tli || n <= segno {
			delete(p.fetched, name)
			os.Remove(p.sp.Path(name))
		}
	}
	p.inflightMu.Unlock()
}

// trim removes spool entries recovery no longer needs: at or before the
// current segment, beyond the window, or of another timeline. It lists the
// spool, so the loop calls it on its tick only.
func (p *prefetcher) trim() {
	if p.segSize == 0 || p.current == "" {
		return
	}
	entries, err := os.ReadDir(p.sp.Dir)
	if err != nil {
		return
	}
	last := p.segno + walname.SegNo(p.window())
	p.inflightMu.Lock()
	defer p.inflightMu.Unlock()
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), walfetch.PartSuffix)
		tli, segno, err := walname.ParseSegment(name, p.segSize)
		if err != nil || p.inflight[name] {
			continue
		}
		if tli != p.tli || segno <= p.segno || segno > last {
			os.Remove(p.sp.Path(e.Name()))
			delete(p.fetched, name)
		}
	}
}

// plan peeks when what is known about the hub does not reach far enough
// ahead, and queues the downloads the spool lacks, nearest first, as many as
// there are free download slots.
func (p *prefetcher) plan(jobs chan<- download) {
	if p.current == "" && p.next == "" {
		return
	}
	if p.startedAt.IsZero() {
		p.startedAt = time.Now()
		p.firstDownloads(jobs, min(p.guessCount(), p.s.Parallel))
		time.AfterFunc(p.moreGuessesAfter, p.wake)
	}
	if p.segSize == 0 && time.Since(p.startedAt) >= p.moreGuessesAfter {
		p.firstDownloads(jobs, p.guessCount())
	}
	if p.needPeek() {
		p.peek()
	}
	if p.segSize == 0 {
		return
	}
	last := min(p.horizon, p.segno+walname.SegNo(p.window()))
	slots := downloadSlots(p.s.Parallel, p.window(), p.segSize)
	p.inflightMu.Lock()
	defer p.inflightMu.Unlock()
	for segno := p.segno + 1; segno <= last && len(p.inflight) < slots; segno++ {
		seg, ok := p.known[segno]
		if !ok || p.inflight[seg.Name] || p.fetched[seg.Name] || time.Now().Before(p.failed[seg.Name]) {
			continue
		}
		if _, err := os.Stat(p.sp.Path(seg.Name)); err == nil {
			continue
		}
		p.inflight[seg.Name] = true
		jobs <- download{seg: seg, segSize: p.segSize}
	}
}

// firstDownloads queues, when the prefetcher starts, the downloads of the
// segments after the one recovery asked for (from next, the one it will ask
// for first, when started by StartPrefetcherAt), before the first peek,
// which is what tells the segment size and what the hub holds: with a
// distant hub, they arrive a round trip after the prefetcher's start, as
// soon as the segment walfetch downloads itself meanwhile, instead of two
// (the peek's, then theirs), which recovery's next requests would wait for.
// It queues those up to count segments ahead not queued before.
// Their names are the next ones in the current segment's log: what they are
// with any segment size short of the log's end, where a name that does not
// exist with the hub's segment size is refused. Each is verified as Serve
// verifies a segment it downloads (fetch), and one that turns out to lie
// beyond the window for its segment size stops after its page header (the
// spool never holds more than --spool-max-mb). A failure is not remembered:
// the peek decides what to download next. On a standby at the hub's end (a
// live primary), this costs as many requests the hub answers "not found",
// once per prefetcher.
func (p *prefetcher) firstDownloads(jobs chan<- download, count int) {
	// The log's end: what follows depends on the size.
	perLog := walname.SegmentsPerLog(cmp.Or(p.sizeHint, walname.MinSegmentSize))
	if p.guessed == 0 {
		base, skip := p.current, 1 // the segment after the one recovery received
		if base == "" {
			base, skip = p.next, 0 // the one recovery will ask for first
		}
		n, err := walname.Parse(base)
		if err != nil || n.Kind != walname.KindSegment || uint64(n.Seg)+uint64(skip) >= perLog {
			return
		}
		n.Seg += uint32(skip)
		p.firstGuess = n
	}
	n := p.firstGuess
	p.inflightMu.Lock()
	defer p.inflightMu.Unlock()
	from := p.guessed + 1
	p.guessed = max(p.guessed, count)
	for ahead := from; ahead <= count; ahead++ {
		next := n
		if uint64(n.Seg)+uint64(ahead-1) >= perLog {
			break
		}
		next.Seg += uint32(ahead - 1)
		name := next.String()
		if p.inflight[name] || p.fetched[name] {
			continue
		}
		if _, err := os.Stat(p.sp.Path(name)); err == nil {
			continue
		}
		p.inflight[name] = true
		jobs <- download{seg: api.PeekSegment{Name: name}, ahead: ahead}
	}
}

// guessCount is how many first downloads to queue in all: as many as the
// download slots for the segment size pg_control gives (sizeHint; without
// one, --parallel), never more than the window for it. With 1 MiB segments
// that is 24, not 4: with a distant hub, recovery replayed the first 4 in
// some 30 ms and then waited most of a round trip for the next
// (BENCH_DELAY=100ms BenchmarkReplay: a wait of 80-94 ms at the fifth call).
// Beyond --parallel they are queued only moreGuessesAfter the start, when
// the peek has not answered by then.
func (p *prefetcher) guessCount() int {
	w := window(p.s, p.sizeHint)
	return min(downloadSlots(p.s.Parallel, w, p.sizeHint), w)
}

// moreGuessesAfter is how long after its start the prefetcher waits for its
// first peek before it queues the first downloads beyond --parallel
// (guessCount). A hub nearby answers a peek within a few milliseconds, and
// the downloads then come from the peek, nearest first; 24 guesses queued at
// once shared the hub with the one recovery asks for first, which then came
// 15-40 ms later instead of 6-13 (BenchmarkReplay, 1 MiB segments, on
// loopback and with 100 ms per hub response). For a distant hub, a round
// trip later, 10 ms is little.
const moreGuessesAfter = 10 * time.Millisecond

// wake makes the loop plan again, from any goroutine.
func (p *prefetcher) wake() {
	select {
	case p.finished <- struct{}{}:
	default: // events wait already: the loop plans after them
	}
}

// needPeek decides whether to ask the hub now: one peek at a time, none while
// what is known reaches a whole window beyond the download window, and at
// most one a second while recovery waits at the hub's end (what a standby
// following a live primary costs).
//
// Peeks reach further ahead (peekLead) than they are asked for, so that the
// segment a served one frees a slot for is known already, and its download
// starts at once, even after recovery moved on during a peek's round trip.
// At the end of the download window, the peek's round trip and then the
// downloads' went by while recovery waited: 100 ms per hub response cost
// replay of 1 MiB segments 13% (BENCH_PIN=1 BENCH_DELAY=100ms
// BenchmarkReplay), in waits of 20-40 ms every few segments. Half a window
// beyond it was not enough either once replay ran at 130 segments a second:
// it moves 13 during a peek of 100 ms, and the peek's answer came when fewer
// than a window were known.
func (p *prefetcher) needPeek() bool {
	if p.peeking {
		return false
	}
	if p.segSize == 0 {
		return time.Since(p.lastPeek) >= time.Second || p.lastPeek.IsZero()
	}
	w := walname.SegNo(p.window())
	switch {
	case p.peekShort:
		return p.horizon < p.segno+w && time.Since(p.lastPeek) >= time.Second
	case p.horizon >= p.segno+2*w:
		return false
	}
	return true
}

// peekLead is how many windows ahead of recovery peeks reach (needPeek): a
// peek asks for two windows or more, about one in two windows recovery
// moves. With 16 MiB segments and the default window (16) that is the hub's
// default max_peek (64); with smaller segments, the hub's max_peek caps each
// answer, and the next peek follows it.
const peekLead = 4

// peek asks the hub what exists from the first segment not known yet to
// peekLead windows ahead. The answer comes to the loop (peekDone): the loop
// goes on queueing downloads of what is known meanwhile. With the loop
// waiting for the answer, as it did, a distant hub held every new download
// back for the peek's round trip, once per half window: 100 ms per hub
// response halved replay of 1 MiB segments on a machine that replays 110 of
// them a second (BENCH_DELAY=100ms BenchmarkReplay: 0.48x of loopback).
func (p *prefetcher) peek() {
	lead := peekLead * p.window()
	from, count := p.current, lead+1
	if from == "" {
		from, count = p.next, lead
	}
	if p.segSize != 0 && p.current != "" {
		start := max(p.horizon, p.segno) + 1
		from = walname.SegmentName(p.tli, start, p.segSize)
		count = int(p.segno+walname.SegNo(lead)-start) + 1
	}
	p.lastPeek, p.peeking = time.Now(), true
	c, timeout, answers, tli := p.c, p.s.Timeout, p.peeked, walname.TimeLine(0)
	if p.segSize != 0 {
		tli = p.tli
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		peek, err := c.Peek(ctx, from, count)
		if err != nil {
			err = fmt.Errorf("peek from %s: %w", from, err)
		}
		answers <- peekAnswer{count: count, tli: tli, peek: peek, err: err}
	}()
}

// peekDone takes in what the hub answered the peek under way: the segment
// size, if not known yet, and the segments it holds beyond the current one
// (recovery may have moved on since the peek was asked for). An answer about
// a timeline recovery has left since is dropped whole: its segments are not
// the new timeline's, and its end of the hub (peekShort) would hold the
// first peek on the new one back a second.
func (p *prefetcher) peekDone(a peekAnswer) {
	p.peeking = false
	if a.tli != 0 && a.tli != p.tli {
		return
	}
	peek, count := a.peek, a.count
	if a.err != nil {
		p.peekShort = true
		p.log.Warn("peek failed; retrying", "err", a.err)
		return
	}
	if peek.SystemID != p.systemID {
		p.log.Error("the hub's server is another database system than this data directory: not prefetching",
			"hub_system_id", peek.SystemID, "data_directory_system_id", p.systemID)
		p.lastPoke = time.Time{} // exit
		return
	}
	if p.segSize == 0 {
		if walname.ValidSegmentSize(peek.SegmentSize) != nil {
			p.log.Error("the hub reports an invalid segment size", "size", peek.SegmentSize)
			return
		}
		p.segSize = peek.SegmentSize
		if p.current == "" {
			// Recovery is, so to speak, at the segment before next (none
			// before the very first: then wait for what walfetch serves).
			if tli, segno, err := walname.ParseSegment(p.next, p.segSize); err == nil && segno > 0 {
				p.current = walname.SegmentName(tli, segno-1, p.segSize)
			}
			p.next = ""
		}
		p.setCurrent()
	}
	p.peekShort = len(peek.Segments) < min(count, max(peek.Limit, 1))
	for _, seg := range peek.Segments {
		tli, segno, err := walname.ParseSegment(seg.Name, p.segSize)
		if err != nil || tli != p.tli || segno <= p.segno {
			continue
		}
		p.known[segno] = seg
		p.horizon = max(p.horizon, segno)
	}
}

// fetch downloads one segment into the spool: NAME.part, verified against
// the checksum peek listed and the page header, then renamed to NAME. One of
// the first downloads (firstDownloads: no peek yet) is verified as Serve
// verifies a segment, against the size and system identifier the hub sends
// with it.
func (p *prefetcher) fetch(d download) {
	name := d.seg.Name
	defer func() {
		p.inflightMu.Lock()
		delete(p.inflight, name)
		p.inflightMu.Unlock()
	}()
	start := time.Now()
	part := p.sp.Path(name + walfetch.PartSuffix)
	err := func() error {
		// O_EXCL: this process is the only writer of the file it verifies.
		f, err := os.OpenFile(part, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", errPartTaken, part)
		}
		if err != nil {
			return err
		}
		hw := &headerWriter{w: f}
		if d.segSize == 0 {
			hw.whole = func(hdr []byte) error {
				h, err := pgfile.ParseSegmentHeader(hdr)
				if err == nil {
					err = walname.ValidSegmentSize(uint64(h.SegmentSize))
				}
				if err != nil {
					return fmt.Errorf("%w: %s: page header: %v", client.ErrCorrupt, name, err)
				}
				if w := window(p.s, uint64(h.SegmentSize)); d.ahead > w {
					return fmt.Errorf("%s: %w: %d segments ahead, the window is %d of %d bytes", name, errBeyondWindow, d.ahead, w, h.SegmentSize)
				}
				return nil
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 4*p.s.Timeout)
		var info client.WALInfo
		if n, perr := walname.Parse(name); perr == nil && p.order != nil {
			pos := walPosition(n)
			p.order.begin(pos)
			info, err = p.c.FetchWALThrough(ctx, name, hw, p.order.reader(pos))
			p.order.end(pos)
		} else {
			info, err = p.c.FetchWAL(ctx, name, hw)
		}
		cancel()
		// A descriptor kept past Close, for the writeback started once the
		// file has its name (below); -1: none.
		wb := -1
		if err == nil {
			if d, derr := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0); derr == nil {
				wb = d
				defer unix.Close(wb)
			}
		}
		written, serr := f.Stat()
		if cerr := f.Close(); err == nil {
			err = cmp.Or(serr, cerr)
		}
		if err != nil {
			return err
		}
		switch {
		case d.segSize == 0:
			if err := checkSegment(p.c, info, hw, name, p.sp.SystemID); err != nil {
				return err
			}
		case info.Checksum != d.seg.Checksum || uint64(info.Size) != d.segSize:
			return fmt.Errorf("%w: %s: got %d bytes with checksum %s, peek listed %s", client.ErrCorrupt, name, info.Size, info.Checksum, d.seg.Checksum)
		default:
			if err := pgfile.CheckSegmentHeader(hw.hdr[:hw.n], name, d.segSize, p.sp.SystemID); err != nil {
				return fmt.Errorf("%w: %v", client.ErrCorrupt, err)
			}
		}
		// The name is renamed, not the file written: should anything have
		// removed it and another writer made a file of that name meanwhile,
		// that file, unfinished and unchecked, is left where it is.
		if now, err := os.Stat(part); err != nil || !os.SameFile(written, now) {
			return fmt.Errorf("%w: %s was removed or replaced during the download", errPartTaken, part)
		}
		if err := os.Rename(part, p.sp.Path(name)); err != nil {
			return err
		}
		// Nothing in the spool needs to be durable, but PostgreSQL fsyncs
		// each file it restores (durable_rename, keeping it in pg_wal) on
		// recovery's path: written back now, on this spare time, the file
		// leaves that fsync nothing to wait for. Started after the rename:
		// the hint may wait for the disk's queue, and recovery may be
		// waiting for this very segment.
		if wb >= 0 {
			storage.StartWriteback(wb, 0, 0)
		}
		p.inflightMu.Lock()
		p.fetched[name] = true
		p.inflightMu.Unlock()
		return nil
	}()
	if err != nil {
		if !errors.Is(err, errPartTaken) {
			os.Remove(part)
		}
		level := slog.LevelWarn
		if d.segSize == 0 {
			// A guess (firstDownloads): a name the hub lacks or refuses (one
			// that does not exist with its segment size) is no news, and a
			// hub of another database system is the peek's to report.
			level = slog.LevelDebug
		} else {
			p.inflightMu.Lock()
			p.failed[name] = time.Now().Add(2 * time.Second)
			p.inflightMu.Unlock()
		}
		if errors.Is(err, client.ErrCorrupt) {
			level = slog.LevelError
		}
		p.log.Log(context.Background(), level, "prefetch failed", "segment", name, "err", err)
		return
	}
	p.log.Debug("prefetched", "segment", name, "duration", time.Since(start))
}
