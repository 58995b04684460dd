package hubfetch

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
	"github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

// Serve puts the WAL file name at dst: from the spool when the prefetcher
// has it, else downloaded and verified. It tells the prefetcher (starting one
// when none runs) which segment recovery asked for: after a hit, and on a
// miss before its own download. It reports why it failed on stderr. temps
// registers its temporary files, for a signal handler to remove.
func Serve(ctx context.Context, s walfetch.Settings, m walfetch.Mode, name, dst string, temps *TempFiles, stderr io.Writer) walfetch.Result {
	n, err := walname.Parse(name)
	if err != nil {
		fmt.Fprintf(stderr, "walfetch: %v\n", err)
		return walfetch.Fail(m)
	}
	var sp *walfetch.Spool
	switch n.Kind {
	case walname.KindSegment:
		sp = walfetch.OpenSpool(s)
	case walname.KindHistory:
		startAtBackupLabel(s, stderr)
	}
	if sp != nil {
		hit, err := sp.Take(name, dst)
		if err == nil && !hit && sp.WaitInProgress(name, 5*time.Second, s.Timeout) {
			hit, err = sp.Take(name, dst)
		}
		if err != nil {
			fmt.Fprintf(stderr, "walfetch: %v\n", err)
		}
		if hit {
			sp.Poke(s, name, true, stderr)
			return walfetch.Served
		}
		// A miss: the prefetcher learns (or, when none runs, is started
		// with) where recovery is now, before this download rather than
		// after it, so that its start, its peek and its downloads of the
		// next segments overlap this one: with a distant hub, a round trip
		// or two less before recovery's next request finds the spool ready.
		sp.Poke(s, name, false, stderr)
	}

	c, err := client.New(client.Options{URL: s.URL, Server: s.Server, Token: s.Token, CAFile: s.CAFile,
		Timeout: s.Timeout, MaxConns: 1, UserAgent: "walfetch"})
	if err != nil {
		fmt.Fprintf(stderr, "walfetch: %v\n", err)
		return walfetch.Fail(m)
	}
	defer c.Close()
	var systemID uint64
	if sp != nil {
		systemID = sp.SystemID
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
				return walfetch.Fail(m)
			}
			return walfetch.Served
		}
		switch {
		case errors.Is(err, client.ErrNotFound) && m == walfetch.ModePITR && s.Partial && n.Kind == walname.KindSegment:
			return servePartial(ctx, c, s, m, name, dst, systemID, temps, stderr)
		case errors.Is(err, client.ErrNotFound):
			return walfetch.NotAvailable
		case m == walfetch.ModeStandby:
			fmt.Fprintf(stderr, "walfetch: %s not restored: %v\n", name, err)
			return walfetch.NotAvailable
		case errors.Is(err, client.ErrUnknownServer), errors.Is(err, client.ErrRefused):
			fmt.Fprintf(stderr, "walfetch: stopping point-in-time recovery: %s: %v\n"+
				"walfetch: (exit status %d on purpose: \"not available\" would end recovery early; fix the settings and start PostgreSQL again)\n",
				name, err, walfetch.StopRecovery)
			return walfetch.StopRecovery
		case errors.Is(err, client.ErrCorrupt):
			corrupt++
			if corrupt >= 3 {
				fmt.Fprintf(stderr, "walfetch: stopping point-in-time recovery: %s fails verification %d times in a row: %v\n"+
					"walfetch: (exit status %d on purpose: the segment is not handed to PostgreSQL, and \"not available\" would end recovery early)\n",
					name, corrupt, err, walfetch.StopRecovery)
				return walfetch.StopRecovery
			}
		}
		if time.Since(start) >= s.PITRRetry {
			fmt.Fprintf(stderr, "walfetch: stopping point-in-time recovery: the hub at %s has not delivered %s for %s (%v)\n"+
				"walfetch: (exit status %d on purpose: \"not available\" would make PostgreSQL end recovery and promote at the wrong point;\n"+
				"walfetch:  start PostgreSQL again once the hub is back, recovery resumes where it stopped)\n",
				s.URL, name, time.Since(start).Round(time.Second), err, walfetch.StopRecovery)
			return walfetch.StopRecovery
		}
		wait := min(time.Duration(attempt)*time.Second, 10*time.Second)
		fmt.Fprintf(stderr, "walfetch: %s: %v; point-in-time recovery must not end early, retrying in %s (gives up after %s)\n",
			name, err, wait, s.PITRRetry)
		select {
		case <-ctx.Done():
			return walfetch.StopRecovery
		case <-time.After(wait):
		}
	}
}

// startAtBackupLabel starts the prefetcher, when none runs, at the segment
// the base backup in the data directory (the working directory) starts in,
// which its backup_label names: recovery from a backup asks for a timeline
// history file (is there a newer timeline?) before it asks for any segment,
// and with a distant hub the prefetcher's first downloads then arrive while
// that request is still under way, instead of a round trip after recovery's
// first segment. PostgreSQL renames backup_label once it has read it, so
// only the start of a recovery from a backup does this.
func startAtBackupLabel(s walfetch.Settings, stderr io.Writer) {
	sp := walfetch.OpenSpool(s)
	if sp == nil {
		return
	}
	label, err := walfetch.ReadSmallFile("backup_label")
	if err != nil {
		return
	}
	if next, ok := pgfile.BackupLabelStartSegment(label); ok {
		sp.StartPrefetcherAt(s, next, stderr)
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
func servePartial(ctx context.Context, c *client.Client, s walfetch.Settings, m walfetch.Mode, name, dst string, systemID uint64,
	temps *TempFiles, stderr io.Writer) walfetch.Result {
	tmp, info, err := fetchPartialInto(ctx, c, name, filepath.Dir(dst), systemID, temps)
	switch {
	case errors.Is(err, client.ErrNotFound):
		return walfetch.NotAvailable
	case err != nil:
		fmt.Fprintf(stderr, "walfetch: stopping point-in-time recovery: %s.partial: %v\n", name, err)
		return walfetch.Fail(m)
	}
	tli, segno, err := walname.ParseSegment(name, info.SegmentSize)
	if err == nil {
		var p api.Peek
		if p, err = c.Peek(ctx, walname.SegmentName(tli, segno+1, info.SegmentSize), 1); err == nil && len(p.Segments) > 0 {
			os.Remove(tmp)
			temps.remove(tmp)
			fmt.Fprintf(stderr, "walfetch: %s is missing from the hub but %s is there: a gap, not the end of WAL; its .partial is not used\n",
				name, p.Segments[0].Name)
			return walfetch.NotAvailable
		}
	}
	if err != nil {
		os.Remove(tmp)
		temps.remove(tmp)
		fmt.Fprintf(stderr, "walfetch: stopping point-in-time recovery: %s.partial: %v\n", name, err)
		return walfetch.Fail(m)
	}
	if err := install(tmp, dst, temps); err != nil {
		fmt.Fprintf(stderr, "walfetch: %v\n", err)
		return walfetch.Fail(m)
	}
	fmt.Fprintf(stderr, "walfetch: %s restored from the hub's %s.partial (%d bytes received, padded to %d): the end of the WAL the hub holds\n",
		name, name, info.Size, info.SegmentSize)
	return walfetch.Served
}
