package walfetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/pgfile"
	"github.com/walhub/walhub/walname"
)

// Mode is how PostgreSQL is recovering, read from the signal files in the
// data directory (standby.signal wins when both exist, as in PostgreSQL).
type Mode int

const (
	// ModeStandby: standby.signal, or called by hand.
	ModeStandby Mode = iota
	// ModePITR: recovery.signal only: an early "not available" ends recovery.
	ModePITR
)

// RecoveryMode reads the mode from the signal files in the working
// directory, which is the data directory when PostgreSQL runs walfetch.
func RecoveryMode() Mode {
	if _, err := os.Stat("standby.signal"); err == nil {
		return ModeStandby
	}
	if _, err := os.Stat("recovery.signal"); err == nil {
		return ModePITR
	}
	return ModeStandby
}

// Result is how a request ended, and the exit status that tells PostgreSQL.
// PostgreSQL reads 0 as "restored", 1..125 as "not available" (normal: it
// tries elsewhere, or ends recovery), and above 125, or death by a signal,
// as a reason to stop with FATAL.
type Result int

const (
	// Served: the file is at its destination, complete and verified.
	Served Result = 0
	// NotAvailable: the hub lacks it, or (on a standby) could not deliver it.
	NotAvailable Result = 1
	// StopRecovery is used only during point-in-time recovery, on purpose:
	// it makes PostgreSQL stop rather than end recovery early at the wrong point.
	StopRecovery Result = 255
)

// Fail is the result for "could not serve, and not because the hub lacks
// the file": a plain miss on a standby, a stop during point-in-time recovery.
func Fail(m Mode) Result {
	if m == ModePITR {
		return StopRecovery
	}
	return NotAvailable
}

// Serve puts the WAL file name at dst: from the spool when the prefetcher
// has it, else downloaded and verified; then it tells the prefetcher. It
// reports why it failed on stderr. temps registers its temporary files, for
// a signal handler to remove.
func Serve(ctx context.Context, s Settings, m Mode, name, dst string, temps *TempFiles, stderr io.Writer) Result {
	n, err := walname.Parse(name)
	if err != nil {
		fmt.Fprintf(stderr, "walfetch: %v\n", err)
		return Fail(m)
	}
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
			fmt.Fprintf(stderr, "walfetch: %v\n", err)
		}
		if hit {
			sp.poke(s, name, stderr)
			return Served
		}
	}

	c, err := client.New(client.Options{URL: s.URL, Server: s.Server, Token: s.Token, CAFile: s.CAFile,
		Timeout: s.Timeout, MaxConns: 1, UserAgent: "walfetch"})
	if err != nil {
		fmt.Fprintf(stderr, "walfetch: %v\n", err)
		return Fail(m)
	}
	defer c.Close()
	var systemID uint64
	if sp != nil {
		systemID = sp.systemID
	} else if id, err := pgfile.ControlSystemID("global/pg_control"); err == nil {
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
				fmt.Fprintf(stderr, "walfetch: %v\n", err)
				return Fail(m)
			}
			if sp != nil {
				sp.poke(s, name, stderr)
			}
			return Served
		}
		switch {
		case errors.Is(err, client.ErrNotFound) && m == ModePITR && s.Partial && n.Kind == walname.KindSegment:
			return servePartial(ctx, c, s, m, name, dst, systemID, temps, stderr)
		case errors.Is(err, client.ErrNotFound):
			return NotAvailable
		case m == ModeStandby:
			fmt.Fprintf(stderr, "walfetch: %s not restored: %v\n", name, err)
			return NotAvailable
		case errors.Is(err, client.ErrUnknownServer), errors.Is(err, client.ErrRefused):
			fmt.Fprintf(stderr, "walfetch: stopping point-in-time recovery: %s: %v\n"+
				"walfetch: (exit status %d on purpose: \"not available\" would end recovery early; fix the settings and start PostgreSQL again)\n",
				name, err, StopRecovery)
			return StopRecovery
		case errors.Is(err, client.ErrCorrupt):
			corrupt++
			if corrupt >= 3 {
				fmt.Fprintf(stderr, "walfetch: stopping point-in-time recovery: %s fails verification %d times in a row: %v\n"+
					"walfetch: (exit status %d on purpose: the segment is not handed to PostgreSQL, and \"not available\" would end recovery early)\n",
					name, corrupt, err, StopRecovery)
				return StopRecovery
			}
		}
		if time.Since(start) >= s.PITRRetry {
			fmt.Fprintf(stderr, "walfetch: stopping point-in-time recovery: the hub at %s has not delivered %s for %s (%v)\n"+
				"walfetch: (exit status %d on purpose: \"not available\" would make PostgreSQL end recovery and promote at the wrong point;\n"+
				"walfetch:  start PostgreSQL again once the hub is back, recovery resumes where it stopped)\n",
				s.URL, name, time.Since(start).Round(time.Second), err, StopRecovery)
			return StopRecovery
		}
		wait := min(time.Duration(attempt)*time.Second, 10*time.Second)
		fmt.Fprintf(stderr, "walfetch: %s: %v; point-in-time recovery must not end early, retrying in %s (gives up after %s)\n",
			name, err, wait, s.PITRRetry)
		select {
		case <-ctx.Done():
			return StopRecovery
		case <-time.After(wait):
		}
	}
}

// servePartial ends a point-in-time recovery to the end of WAL with all the
// hub received: the hub lacks segment name as a complete segment, but holds
// what it received of it as name.partial (the primary is gone, or its last
// segment is not complete yet). Only the newest segment of its timeline
// qualifies: when the hub holds the next segment, name is a gap, and a gap is
// never papered over. The .partial, checked like a segment, is padded with
// zeros to the segment size (PostgreSQL wants whole segments), which recovery
// reads as the end of WAL.
func servePartial(ctx context.Context, c *client.Client, s Settings, m Mode, name, dst string, systemID uint64,
	temps *TempFiles, stderr io.Writer) Result {
	tmp, info, err := fetchPartialInto(ctx, c, name, filepath.Dir(dst), systemID, temps)
	switch {
	case errors.Is(err, client.ErrNotFound):
		return NotAvailable
	case err != nil:
		fmt.Fprintf(stderr, "walfetch: stopping point-in-time recovery: %s.partial: %v\n", name, err)
		return Fail(m)
	}
	tli, segno, err := walname.ParseSegment(name, info.SegmentSize)
	if err == nil {
		var p api.Peek
		if p, err = c.Peek(ctx, walname.SegmentName(tli, segno+1, info.SegmentSize), 1); err == nil && len(p.Segments) > 0 {
			os.Remove(tmp)
			temps.remove(tmp)
			fmt.Fprintf(stderr, "walfetch: %s is missing from the hub but %s is there: a gap, not the end of WAL; its .partial is not used\n",
				name, p.Segments[0].Name)
			return NotAvailable
		}
	}
	if err != nil {
		os.Remove(tmp)
		temps.remove(tmp)
		fmt.Fprintf(stderr, "walfetch: stopping point-in-time recovery: %s.partial: %v\n", name, err)
		return Fail(m)
	}
	if err := install(tmp, dst, temps); err != nil {
		fmt.Fprintf(stderr, "walfetch: %v\n", err)
		return Fail(m)
	}
	fmt.Fprintf(stderr, "walfetch: %s restored from the hub's %s.partial (%d bytes received, padded to %d): the end of the WAL the hub holds\n",
		name, name, info.Size, info.SegmentSize)
	return Served
}
