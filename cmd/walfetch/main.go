// Command walfetch is PostgreSQL's restore_command for standbys and restores
// fed by a walhub hub: restore_command = 'walfetch %f %p'. See walfetch --help
// (the usage text below) for the whole contract.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/version"
	"github.com/walhub/walhub/walname"
)

// Exit statuses. PostgreSQL reads 0 as "restored", 1..125 as "not available"
// (normal: it tries elsewhere, or ends recovery), and above 125, or death by
// a signal, as a reason to stop with FATAL.
const (
	exitServed       = 0
	exitNotAvailable = 1
	// exitStopRecovery is used only during point-in-time recovery, on purpose:
	// it makes PostgreSQL stop rather than end recovery early at the wrong point.
	exitStopRecovery = 255
)

const usage = `walfetch fetches WAL from a walhub hub for PostgreSQL: a restore_command.

Usage:
  restore_command = 'walfetch [flags] %f %p'

  %f is the file PostgreSQL wants, %p where to put it (relative to the data
  directory, which is walfetch's working directory).

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
    spool into %p with a rename: no network on that path. Otherwise the file is
    downloaded from the hub into a temporary file beside %p, its size, checksum
    and page header verified, and renamed into %p. %p is never half-written,
    and a segment that fails verification is never handed over: %p stays absent.
  - After serving a segment, walfetch tells the prefetcher (starting it, detached,
    when none runs; one per spool, guarded by a lock) which segment recovery is
    at. The prefetcher keeps the next --prefetch segments that the hub holds
    downloaded, with --parallel connections, while recovery proceeds, in the
    spool (default pg_wal/walfetch-spool, which base backups leave out; it must
    be on pg_wal's file system). It removes what recovery has passed and what
    belongs to another timeline, never fetches .history files, never holds more
    than --spool-max-mb, and exits after --idle-exit without requests. A spool
    left by another restore, another hub, another cluster or before a reboot is
    never used, and is removed.

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
  signal of its own, and never exits above 125 on a standby.

Examples:
  restore_command = 'walfetch --url http://hub:7480 --server main %f %p'
  WALFETCH_TOKEN_FILE=/etc/walhub/walfetch.token walfetch --url http://hub:7480 --server main 000000010000000000000003 /tmp/seg
`

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--run-prefetcher" {
		os.Exit(runPrefetcher())
	}
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println(version.Get().String("walfetch"))
		os.Exit(exitServed)
	}
	os.Exit(run(os.Args[1:]))
}

func printUsage() {
	opts := ""
	for _, o := range options {
		opts += fmt.Sprintf("  --%-19s %-22s %s\n", o.name+" X", o.env, o.help)
	}
	fmt.Fprint(os.Stdout, strings.Replace(usage, "OPTIONS\n", opts, 1))
}

// mode is how PostgreSQL is recovering, read from the signal files in the
// data directory (standby.signal wins when both exist, as in PostgreSQL).
type mode int

const (
	modeStandby mode = iota // standby.signal, or called by hand
	modePITR                // recovery.signal only: an early "not available" ends recovery
)

// failStatus is the exit status for "could not serve, and not because the hub
// lacks the file": a plain miss on a standby, a stop during point-in-time recovery.
func failStatus(m mode) int {
	if m == modePITR {
		return exitStopRecovery
	}
	return exitNotAvailable
}

func recoveryMode() mode {
	if _, err := os.Stat("standby.signal"); err == nil {
		return modeStandby
	}
	if _, err := os.Stat("recovery.signal"); err == nil {
		return modePITR
	}
	return modeStandby
}

func run(args []string) int {
	m := recoveryMode()
	s, pos, err := loadSettings(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		printUsage()
		return exitServed
	}
	if err == nil && len(pos) != 2 {
		err = errors.New("want two arguments, %f and %p (see walfetch --help)")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "walfetch: %v\n", err)
		return failStatus(m)
	}
	name, dst := pos[0], pos[1]
	if _, err := walname.Parse(name); err != nil {
		fmt.Fprintf(os.Stderr, "walfetch: %v\n", err)
		return failStatus(m)
	}

	temps := newTempFiles()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	go func() {
		sig := <-sigs
		cancel()
		temps.removeAll()
		fmt.Fprintf(os.Stderr, "walfetch: %s: %v received, %s not restored\n", name, sig, name)
		os.Exit(failStatus(m))
	}()
	return serve(ctx, s, m, name, dst, temps)
}

// serve puts name at dst and returns the exit status.
func serve(ctx context.Context, s settings, m mode, name, dst string, temps *tempFiles) int {
	n, _ := walname.Parse(name)
	var sp *spoolDir
	if n.Kind == walname.KindSegment {
		sp = openSpool(s)
	}
	if sp != nil {
		hit, err := sp.take(name, dst)
		if err == nil && !hit && sp.waitInProgress(name, 5*time.Second, s.Timeout) {
			hit, err = sp.take(name, dst)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "walfetch: %v\n", err)
		}
		if hit {
			sp.poke(s, name, os.Stderr)
			return exitServed
		}
	}

	c, err := client.New(client.Options{URL: s.URL, Server: s.Server, Token: s.Token, CAFile: s.CAFile,
		Timeout: s.Timeout, MaxConns: 1, UserAgent: "walfetch"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "walfetch: %v\n", err)
		return failStatus(m)
	}
	defer c.Close()
	var systemID uint64
	if sp != nil {
		systemID = sp.systemID
	} else if id, err := controlSystemID("global/pg_control"); err == nil {
		systemID = id
	}

	removeStaleTemps(filepath.Dir(dst))
	start := time.Now()
	corrupt := 0
	for attempt := 1; ; attempt++ {
		// The client bounds the wait for headers; this bounds a body that stalls.
		reqCtx, reqCancel := context.WithTimeout(ctx, 4*s.Timeout)
		tmp, err := fetchInto(reqCtx, c, name, filepath.Dir(dst), systemID, temps)
		reqCancel()
		if err == nil {
			if err := install(tmp, dst, temps); err != nil {
				fmt.Fprintf(os.Stderr, "walfetch: %v\n", err)
				return failStatus(m)
			}
			if sp != nil {
				sp.poke(s, name, os.Stderr)
			}
			return exitServed
		}
		switch {
		case errors.Is(err, client.ErrNotFound):
			return exitNotAvailable
		case m == modeStandby:
			fmt.Fprintf(os.Stderr, "walfetch: %s not restored: %v\n", name, err)
			return exitNotAvailable
		case errors.Is(err, client.ErrUnknownServer), errors.Is(err, client.ErrRefused):
			fmt.Fprintf(os.Stderr, "walfetch: stopping point-in-time recovery: %s: %v\n"+
				"walfetch: (exit status %d on purpose: \"not available\" would end recovery early; fix the settings and start PostgreSQL again)\n",
				name, err, exitStopRecovery)
			return exitStopRecovery
		case errors.Is(err, client.ErrCorrupt):
			corrupt++
			if corrupt >= 3 {
				fmt.Fprintf(os.Stderr, "walfetch: stopping point-in-time recovery: %s fails verification %d times in a row: %v\n"+
					"walfetch: (exit status %d on purpose: the segment is not handed to PostgreSQL, and \"not available\" would end recovery early)\n",
					name, corrupt, err, exitStopRecovery)
				return exitStopRecovery
			}
		}
		if time.Since(start) >= s.PITRRetry {
			fmt.Fprintf(os.Stderr, "walfetch: stopping point-in-time recovery: the hub at %s has not delivered %s for %s (%v)\n"+
				"walfetch: (exit status %d on purpose: \"not available\" would make PostgreSQL end recovery and promote at the wrong point;\n"+
				"walfetch:  start PostgreSQL again once the hub is back, recovery resumes where it stopped)\n",
				s.URL, name, time.Since(start).Round(time.Second), err, exitStopRecovery)
			return exitStopRecovery
		}
		wait := min(time.Duration(attempt)*time.Second, 10*time.Second)
		fmt.Fprintf(os.Stderr, "walfetch: %s: %v; point-in-time recovery must not end early, retrying in %s (gives up after %s)\n",
			name, err, wait, s.PITRRetry)
		select {
		case <-ctx.Done():
			return exitStopRecovery
		case <-time.After(wait):
		}
	}
}
