// PostgreSQL starts walfetch once per WAL file: what the Go runtime does at
// every start is on replay's critical path. It need not size itself to a
// container's CPU quota (one request, or the prefetcher's few downloads), nor
// name its memory mappings.

//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
//go:debug decoratemappings=0

// Command walfetch is PostgreSQL's restore_command for standbys and restores
// fed by a walhub hub: restore_command = 'walfetch %f %p'. See walfetch --help
// (the usage text below) for the whole contract.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/walhub/walhub/version"
	"github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

const usage = `walfetch fetches WAL from a walhub hub for PostgreSQL: a restore_command.

Usage:
  restore_command = 'walfetch [flags] %f %p'
  walfetch --print-restore-command [flags]

  %f is the file PostgreSQL wants, %p where to put it (relative to the data
  directory, which is walfetch's working directory).

  --print-restore-command prints the restore_command line to put in
  postgresql.conf: this walfetch (its absolute path) with the flags given,
  behind a spool hit that the restore_command's shell makes itself: it reads
  the boot id and postmaster.pid with its builtin read, and renames the
  segment the prefetcher verified into %p with walfetch-take (a small C
  program, installed beside walfetch by make build), which costs less than a
  cp of it; or, when walfetch-take is not there, with mv, which costs what a
  cp does. No walfetch starts for such a segment. walfetch runs for
  everything else. Only the flags given are in the line: settings from the
  environment are not (PostgreSQL's may differ); the config file is read
  by walfetch as ever.

Settings (flag, environment variable, key in the config file):
OPTIONS
  --config FILE         WALFETCH_CONFIG   (default ` + DefaultConfigPath + ` if it exists)
  --version             print the version, commit and Go release, and exit

  Flags override the environment, which overrides the config file, e.g.
    url = "https://walhub.example:7480"
    server = "main"
    token_file = "/etc/walhub/walfetch.token"
    prefetch = 16          # 0 turns prefetching off
    parallel = 4
    pitr_retry = "10m"

What it does:
  - A segment the prefetcher already downloaded and verified is moved from the
    spool into %p with a rename: no network on that path. One the prefetcher
    is still downloading is waited for, asleep until the spool changes (after
    5 s without growth, or --timeout, or at once when the prefetcher that
    began it is gone, walfetch fetches it itself). Otherwise walfetch
    executes walfetch-net (which must be installed beside it: it holds all
    that talks to the hub), and the file is
    downloaded from the hub into a temporary file beside %p, its size, checksum
    and page header verified, and renamed into %p. %p is never half-written,
    and a segment that fails verification is never handed over: %p stays absent.
  - After serving a segment from the spool, or before downloading one itself,
    walfetch tells the prefetcher (starting it, detached, when none runs; one
    per spool, guarded by a lock) which segment recovery is at; the prefetcher
    also sees every segment renamed out of its spool (inotify). The
    prefetcher keeps the next --prefetch segments that the hub holds
    downloaded, with --parallel connections (both more for segments smaller
    than 16 MiB: the same bytes ahead and in flight), while recovery proceeds, in the
    spool (default pg_wal/walfetch-spool, which base backups leave out; it must
    be on pg_wal's file system). It removes what recovery has passed and what
    belongs to another timeline, never fetches .history files, never holds more
    than --spool-max-mb, and exits after --idle-exit without requests. A spool
    left by another restore, another hub, another cluster or before a reboot is
    never used, and is removed. Recovery from a base backup asks for a
    timeline history file first: when the data directory holds the backup's
    backup_label, that call also starts the prefetcher, at the segment the
    backup starts in.

  - During point-in-time recovery (recovery.signal, no standby.signal), when the
    hub does not have a segment complete, walfetch asks for its .partial: the WAL
    the hub received of the newest segment of that timeline (never for a segment
    followed by others: that is a gap). It is checked like a segment and padded
    with zeros to the segment size, so recovery replays every byte the hub holds
    and then ends: with a synchronous hub, a primary lost for good is recovered
    to its last committed transaction. --partial off turns this off.

Exit status (the contract with PostgreSQL):
  0    the file is at %p, complete and verified.
  1    not available: the hub does not have it (yet), which is normal; or, on a
       standby (standby.signal present), the hub cannot be reached or refused
       the request: PostgreSQL retries, or streams from the primary, and the
       reason is in PostgreSQL's log.
  255  point-in-time recovery only (recovery.signal, no standby.signal): the hub
       stayed unreachable for --pitr-retry, refused the request (bad token,
       unknown server, a data directory of another cluster), or kept serving a
       segment that fails verification. Answering "not available" there would
       make PostgreSQL end recovery and promote at the wrong point, so walfetch
       deliberately exits above 125, which makes PostgreSQL stop with FATAL.
       Fix the cause and start PostgreSQL again: recovery resumes where it stopped.
  On SIGTERM, SIGINT, SIGHUP or SIGQUIT walfetch removes its temporary file and
  exits 1 on a standby (255 during point-in-time recovery); it never dies by a
  signal of its own, and never exits above 125 on a standby. A spool hit (a
  rename) ignores them and completes; when the process that ran walfetch is
  gone by the time walfetch would wait or go to the hub, it exits the same way.

Examples:
  restore_command = 'walfetch --url http://hub:7480 --server main %f %p'
  WALFETCH_TOKEN_FILE=/etc/walhub/walfetch.token walfetch --url http://hub:7480 --server main 000000010000000000000003 /tmp/seg
`

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println(version.Get().String("walfetch"))
		os.Exit(0)
	}
	os.Exit(run(os.Args[1:]))
}

func printUsage() {
	fmt.Fprint(os.Stdout, usageText())
}

// usageText is --help: the contract, with every setting and its default.
func usageText() string {
	opts := ""
	defs := defaultTexts(defaults())
	for _, o := range options {
		help := o.help
		if d, ok := defs[o.name]; ok {
			help += " (default " + d + ")"
		}
		opts += fmt.Sprintf("  --%-19s %-22s %s\n", o.name+" X", o.env, help)
	}
	return strings.Replace(usage, "OPTIONS\n", opts, 1)
}

// run returns walfetch's exit status: that of walfetch.Result, the contract
// with PostgreSQL (0 restored, 1..125 not available, above 125 FATAL). A
// segment the spool holds is served here; anything that needs the hub is
// served by walfetch-net, executed in this process (same pid, same exit
// status for PostgreSQL), so that this program links no HTTP, TLS or zstd
// and a spool hit costs little more than starting a Go program.
func run(args []string) int {
	if i := slices.Index(args, printArg); i >= 0 {
		return printRestoreCommand(slices.Delete(slices.Clone(args), i, i+1), os.Stdout, os.Stderr)
	}
	m := walfetch.RecoveryMode()
	s, pos, err := loadSettings(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		printUsage()
		return 0
	}
	if err == nil && len(pos) != 2 {
		err = errors.New("want two arguments, %f and %p (see walfetch --help)")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "walfetch: %v\n", err)
		return int(walfetch.Fail(m))
	}
	name, dst := pos[0], pos[1]
	n, err := walname.Parse(name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "walfetch: %v\n", err)
		return int(walfetch.Fail(m))
	}

	sg := ignoreStopSignals(name, m)
	if n.Kind == walname.KindSegment {
		if sp := walfetch.OpenSpool(s); sp != nil {
			hit, err := sp.Take(name, dst)
			if err == nil && !hit {
				if !sg.handle() {
					return int(walfetch.Fail(m))
				}
				if sp.WaitInProgress(name, 5*time.Second, s.Timeout) {
					hit, err = sp.Take(name, dst)
				}
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "walfetch: %v\n", err)
			}
			if hit {
				if !sp.Tell(name + walfetch.TakenMark) {
					sg.handle() // the prefetcher must not inherit ignored signals
					sp.StartPrefetcher(s, name, os.Stderr)
				}
				return int(walfetch.Served)
			}
		}
	}
	if !sg.handle() {
		return int(walfetch.Fail(m))
	}
	netBin, err := walfetch.NetBinary()
	if err != nil {
		fmt.Fprintf(os.Stderr, "walfetch: %s not restored: %v\n", name, err)
		return int(walfetch.Fail(m))
	}
	settings, err := json.Marshal(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "walfetch: %s not restored: %v\n", name, err)
		return int(walfetch.Fail(m))
	}
	err = syscall.Exec(netBin, []string{netBin, walfetch.ServeArg, name, dst},
		append(os.Environ(), walfetch.SettingsEnv+"="+string(settings)))
	fmt.Fprintf(os.Stderr, "walfetch: %s not restored: execute %s: %v\n", name, netBin, err)
	return int(walfetch.Fail(m))
}

// printArg asks for the restore_command line instead of a file.
const printArg = "--print-restore-command"

// printRestoreCommand prints the restore_command line for postgresql.conf:
// walfetch with args, behind the shell's own spool hit
// (walfetch.ShellRestoreCommand, by walfetch-take when it is installed
// beside walfetch) unless prefetching is off.
func printRestoreCommand(args []string, stdout, stderr io.Writer) int {
	s, pos, err := loadSettings(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		printUsage()
		return 0
	}
	if err == nil && len(pos) > 0 {
		err = fmt.Errorf("%s takes flags only, not %q: the line ends in %%f %%p", printArg, pos[0])
	}
	exe, exeErr := os.Executable()
	if err == nil {
		err = exeErr
	}
	if err != nil {
		fmt.Fprintf(stderr, "walfetch: %v\n", err)
		return 2
	}
	command := walfetch.ShellQuote(exe)
	for _, a := range args {
		command += " " + walfetch.ShellQuote(a)
	}
	line := command + " %f %p"
	if s.Prefetch > 0 {
		take := walfetch.TakeBinary(exe)
		if line, err = walfetch.ShellRestoreCommand(s, command, take); err != nil {
			fmt.Fprintf(stderr, "walfetch: %v\n", err)
			return 2
		}
		if take == "" {
			fmt.Fprintf(stderr, "walfetch: no %s beside %s: the line takes a spool hit with mv, which costs what a cp does (make build puts %s in bin/)\n",
				walfetch.TakeProgram, exe, walfetch.TakeProgram)
		}
	}
	fmt.Fprintf(stdout, "restore_command = '%s'\n", strings.ReplaceAll(line, "'", "''"))
	return 0
}

// stopSignals are those PostgreSQL (its shutdowns signal the startup
// process's whole process group), systemd (the whole unit) or a user may send
// a running walfetch. Dying by one reads as FATAL to PostgreSQL (above 125),
// so walfetch never does.
var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT}

// stopSignalHandling is how a walfetch call survives stopSignals: ignored
// while it may still be a spool hit (a rename of a verified file and a
// datagram: nothing to undo, done sooner than handled), handled (exit with
// Fail) from the moment it may wait, start a process or go to the hub.
// Handling costs os/signal's watcher goroutine and locked thread, most of
// what a hit would cost above an empty Go program, so a hit never pays it.
type stopSignalHandling struct {
	name    string
	mode    walfetch.Mode
	ppid    int // the process that ran walfetch, when it started
	handled bool
}

func ignoreStopSignals(name string, m walfetch.Mode) *stopSignalHandling {
	signal.Ignore(stopSignals...)
	return &stopSignalHandling{name: name, mode: m, ppid: os.Getppid()}
}

// handle makes stopSignals end walfetch with Fail from now on. It reports
// false when walfetch must stop at once: its parent is gone. A stop signal
// sent while walfetch ignored them is lost; sent by PostgreSQL or systemd,
// it went to the shell or the startup process that ran walfetch too, which
// died of it. walfetch must then not go on to wait, fetch, and rename a file
// into %p for a server that is gone, or has been started again meanwhile and
// is waiting for another file at that same path.
func (h *stopSignalHandling) handle() bool {
	if h.handled {
		return true
	}
	h.handled = true
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals...)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "walfetch: %s: %v received, %s not restored\n", h.name, sig, h.name)
		os.Exit(int(walfetch.Fail(h.mode)))
	}()
	if os.Getppid() != h.ppid {
		fmt.Fprintf(os.Stderr, "walfetch: %s not restored: the process that ran walfetch (pid %d) is gone\n", h.name, h.ppid)
		return false
	}
	return true
}
