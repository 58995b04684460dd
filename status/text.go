package status

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/walhub/walhub/walname"
)

// WriteText prints the document for people.
func WriteText(w io.Writer, doc *Document) error {
	p := &printer{w: w}
	now := doc.GeneratedAt
	p.f("Server %s (at %s)\n", doc.Server, now.Local().Format("2006-01-02 15:04:05 MST"))

	if doc.ReadOnly {
		writeFollowed(p, doc)
	} else {
		writeServer(p, doc, now)
	}

	wal := doc.WAL
	if wal.Segments == 0 {
		p.f("  WAL               : none stored\n")
	} else {
		p.f("  WAL               : %d segments, %s (%s stored), last %s (%s ago)\n", wal.Segments, bytesText(wal.Bytes),
			bytesText(wal.StoredBytes), wal.LastSegment, age(now.Sub(wal.LastSegmentAt)))
		for _, t := range wal.Timelines {
			p.f("                      timeline %d: %s .. %s, %d segments", t.TimeLine, t.FirstSegment, t.LastSegment, t.Segments)
			if t.MissingSegments > 0 {
				p.f(", %d MISSING", t.MissingSegments)
			}
			p.f("\n")
		}
	}
	if len(wal.Gaps) == 0 {
		p.f("  Gaps              : none\n")
	}
	for i, g := range wal.Gaps {
		label := ""
		if i == 0 {
			label = "Gaps"
		}
		where := "before the oldest backup"
		if g.AfterOldestBackup {
			where = "AFTER the oldest backup's start"
		}
		what, reason := "missing", ""
		if g.Source == "recorded" {
			what = "lost"
		}
		if g.Reason != "" {
			reason = ": " + g.Reason
		}
		p.f("  %-18s: %s..%s, %d segments %s%s (%s .. %s), %s\n", label, g.FirstSegment, g.LastSegment, g.Segments,
			what, reason, g.StartLSN, g.EndLSN, where)
	}

	b := doc.Backups
	if b.Last == nil {
		p.f("  Backups           : none done")
	} else {
		p.f("  Backups           : %d done, %s (%s stored); last %s finished %s ago", b.Count, bytesText(b.Size),
			bytesText(b.StoredSize), b.Last.ID, age(time.Duration(b.Last.AgeSeconds*float64(time.Second))))
	}
	if b.Uncounted > 0 {
		p.f(", %d snapshot(s) not counted", b.Uncounted)
	}
	if b.WaitingWAL > 0 {
		p.f(", %d waiting for WAL", b.WaitingWAL)
	}
	if b.Failed > 0 {
		p.f(", %d failed", b.Failed)
		if b.FailedSinceLast > 0 {
			p.f(" (%d since the last good one: %s)", b.FailedSinceLast, b.LastFailed.Reason)
		}
	}
	p.f("\n")
	if b.Oldest != nil {
		p.f("                      oldest %s, from %s on timeline %d\n", b.Oldest.ID, b.Oldest.StartLSN, b.Oldest.StartTLI)
	}
	if r := doc.Recoverable; r != nil {
		p.f("  Recoverable       : %s (%s, end of backup %s) .. %s (%s on timeline %d)\n", pointTime(r.EarliestTime),
			r.EarliestLSN, r.EarliestBackup, pointTime(r.LatestTime), r.LatestLSN, r.LatestTimeLine)
	} else if b.Count > 0 {
		p.f("  Recoverable       : nothing: no backup has all its WAL in the hub\n")
	}
	switch l, held := doc.Lock.Running(); {
	case doc.ReadOnly: // backups and expires run on the writing hub
	case held:
		p.f("  Running           : %s\n", lockText(l))
	default:
		p.f("  Running           : no backup, expire or snapshot\n")
	}
	if doc.Repository.Error != "" {
		p.f("  Repository        : %s\n", doc.Repository.Error)
	} else {
		r := doc.Repository
		p.f("  Repository        : %s, %s free of %s (%.1f%%)\n", r.Path, bytesText(int64(r.FreeBytes)), bytesText(int64(r.TotalBytes)), r.FreePercent)
	}

	if doc.Postgres.Reachable {
		p.f("\n  Replication clients: %d\n", len(doc.Clients))
	}
	for i, c := range doc.Clients {
		kind := "WAL streamer"
		if c.Kind == "standby" {
			kind = "standby"
		}
		sync := strings.ToUpper(c.SyncState[:min(1, len(c.SyncState))]) + c.SyncState[min(1, len(c.SyncState)):]
		self := ""
		if c.Walhub {
			self = " (this hub)"
		}
		if c.SyncPriority > 0 {
			p.f("\n  %d. #%d %s %s%s\n", i+1, c.SyncPriority, sync, kind, self)
		} else {
			p.f("\n  %d. %s %s%s\n", i+1, sync, kind, self)
		}
		p.f("     Application name: %s\n", c.ApplicationName)
		p.f("     Sync stage      : %s\n", c.SyncStage)
		addr := c.ClientAddr
		if addr == "" {
			addr = "unix socket"
		} else {
			addr = fmt.Sprintf("%s port %d", addr, c.ClientPort)
		}
		p.f("     Address         : %s, user %s, wal sender pid %d, since %s\n", addr, c.User, c.PID, c.BackendStart.Local().Format("2006-01-02 15:04:05"))
		p.f("     State           : %s (%s, priority %d)", c.State, c.SyncState, c.SyncPriority)
		if c.SlotName != "" {
			p.f(", slot %s", c.SlotName)
		}
		p.f("\n")
		lsnLine(p, "Sent LSN  ", c.SentLSN, c.SentLagBytes, nil)
		lsnLine(p, "Write LSN ", c.WriteLSN, c.WriteLagBytes, c.WriteLagSeconds)
		lsnLine(p, "Flush LSN ", c.FlushLSN, c.FlushLagBytes, c.FlushLagSeconds)
		lsnLine(p, "Replay LSN", c.ReplayLSN, c.ReplayLagBytes, c.ReplayLagSeconds)
	}
	return p.err
}

// writeServer prints the server, the hub's receiver and its slot.
func writeServer(p *printer, doc *Document, now time.Time) {
	pg := doc.Postgres
	switch {
	case !pg.Reachable:
		p.f("  PostgreSQL        : UNREACHABLE: %s\n", pg.Error)
	default:
		role := "primary"
		if pg.InRecovery {
			role = "standby"
		}
		p.f("  PostgreSQL        : %s %s, timeline %d, current LSN %s, system id %s\n", role, pg.Version, pg.TimeLine, pg.CurrentLSN, pg.SystemID)
		p.f("                      wal_level %s, wal senders %d of %d used, %d-byte segments\n", pg.WALLevel, pg.WALSenders, pg.MaxWALSenders, pg.WALSegmentSize)
		if pg.Error != "" {
			p.f("                      query failed: %s\n", pg.Error)
		}
	}

	rc := doc.Receiver
	if rc.Running {
		p.f("  Receiver          : %s (pid %d on %s", rc.State, rc.PID, rc.Host)
		if !rc.ConnectedSince.IsZero() {
			p.f(", connected since %s", rc.ConnectedSince.Local().Format("2006-01-02 15:04:05"))
		}
		p.f(")\n")
	} else {
		p.f("  Receiver          : NOT RUNNING: %s\n", rc.NotRunning)
	}
	if rc.State != "absent" {
		if rc.LastError != "" {
			p.f("                      last error: %s\n", rc.LastError)
		}
		lag := bytesText(rc.LagBytes)
		if rc.LagSeconds != nil {
			lag += fmt.Sprintf(", %.1f s", *rc.LagSeconds)
		}
		p.f("                      received %s, flushed %s, server at %s, lag %s\n", rc.ReceivedLSN, rc.FlushedLSN, rc.ServerLSN, lag)
		if rc.LastSegment != "" {
			p.f("                      last segment %s (%s ago)", rc.LastSegment, age(now.Sub(rc.LastSegmentAt)))
			if rc.Partial != "" {
				p.f(", receiving %s", rc.Partial)
			}
			p.f("\n")
		} else if rc.Partial != "" {
			p.f("                      receiving %s\n", rc.Partial)
		}
	}

	sl := doc.Slot
	switch {
	case !sl.Known:
		p.f("  Slot %-13s: unknown (server not reachable)\n", sl.Name)
	case !sl.Exists:
		p.f("  Slot %-13s: MISSING on the server\n", sl.Name)
	default:
		active := "INACTIVE"
		if sl.Active {
			active = fmt.Sprintf("active (pid %d)", sl.ActivePID)
		}
		safe := "unlimited"
		if sl.SafeWALSize != nil {
			safe = bytesText(*sl.SafeWALSize)
		}
		p.f("  Slot %-13s: %s, restart_lsn %s, wal_status %s, retains %s, safe_wal_size %s\n",
			sl.Name, active, sl.RestartLSN, sl.WALStatus, bytesText(sl.RetainedBytes), safe)
	}
}

// writeFollowed prints what stands, on a read-only hub, for the server,
// receiver and slot lines: the hub's place and its catalog refresh.
func writeFollowed(p *printer, doc *Document) {
	p.f("  Hub               : read-only: follows the repository another hub writes; no connection to the server\n")
	rf := doc.Refresh
	if rf == nil {
		return
	}
	every := age(time.Duration(rf.IntervalSeconds * float64(time.Second)))
	switch {
	case rf.Error != "":
		p.f("  Catalog refresh   : UNKNOWN: %s\n", rf.Error)
	case rf.LastSuccessAgeSeconds == nil && !rf.RunningSince.IsZero():
		p.f("  Catalog refresh   : NEVER succeeded (every %s); the first one is running for %s\n", every, age(doc.GeneratedAt.Sub(rf.RunningSince)))
	case rf.LastSuccessAgeSeconds == nil:
		p.f("  Catalog refresh   : NEVER succeeded (every %s)\n", every)
	default:
		p.f("  Catalog refresh   : last success %s ago (every %s)", age(time.Duration(*rf.LastSuccessAgeSeconds*float64(time.Second))), every)
		if rf.PID != 0 {
			p.f(", by pid %d on %s", rf.PID, rf.Host)
		}
		p.f("\n")
	}
	if rf.LastError != "" {
		p.f("                      FAILING: %d refresh(es) failed, latest %s ago: %s\n", rf.Failures,
			age(time.Duration(rf.LastErrorAgeSeconds*float64(time.Second))), oneLine(rf.LastError))
	}
}

// pointTime formats a point of the recoverable window.
func pointTime(t time.Time) string {
	if t.IsZero() {
		return "no commit indexed"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z07:00")
}

func lsnLine(p *printer, label string, lsn *walname.LSN, lag *int64, secs *float64) {
	if lsn == nil {
		p.f("     %s      : -\n", label)
		return
	}
	p.f("     %s      : %s (diff %s", label, *lsn, bytesText(*lag))
	if secs != nil {
		p.f(", lag %.3f s", *secs)
	}
	p.f(")\n")
}

// lockText is "backup running - 43% (pid 123 on db1, since 2026-11-21 10:02:03, detail)".
func lockText(l LockState) string {
	s := l.Command + " running"
	if l.Progress != nil {
		s += fmt.Sprintf(" - %.0f%%", *l.Progress)
	}
	s += fmt.Sprintf(" (pid %d on %s, since %s", l.PID, l.Host, l.Since.Local().Format("2006-01-02 15:04:05"))
	if l.Detail != "" {
		s += ", " + l.Detail
	}
	return s + ")"
}

// WriteChecks prints check results for people, hints under what is not OK.
func WriteChecks(w io.Writer, results []Result) error {
	p := &printer{w: w}
	server := ""
	for _, r := range results {
		if r.Server != server {
			server = r.Server
			p.f("Server %s:\n", server)
		}
		p.f("  %-24s %-8s %s\n", r.Name+":", r.Level, r.Message)
		if r.Level != OK && r.Hint != "" {
			p.f("  %-24s %-8s hint: %s\n", "", "", r.Hint)
		}
	}
	return p.err
}

// WriteNagios prints Nagios plugin output: a first line with the overall
// level, the names of the checks that are not OK and the perfdata
// ("WALHUB CRITICAL - main: receiver, replication slot CRITICAL | 'wal_age'=12s;300;900 ..."),
// then one line per check that is not OK with its message and hint.
func WriteNagios(w io.Writer, results []Result, multiServer bool) error {
	var levels []Level
	var perf []string
	byLevel := map[Level][]string{}
	var details []string
	for _, r := range results {
		levels = append(levels, r.Level)
		if r.Level != OK {
			byLevel[r.Level] = append(byLevel[r.Level], r.Server+" "+r.Name)
			line := fmt.Sprintf("%s %s %s: %s", r.Server, r.Name, r.Level, oneLine(r.Message))
			if r.Hint != "" {
				line += " (hint: " + oneLine(r.Hint) + ")"
			}
			details = append(details, strings.ReplaceAll(line, "|", "/"))
		}
		for _, pd := range r.Perf {
			label := pd.Label
			if multiServer {
				label = r.Server + "_" + label
			}
			perf = append(perf, fmt.Sprintf("'%s'=%s%s;%s;%s", label, trimFloat(pd.Value), pd.Unit, pd.Warn, pd.Crit))
		}
	}
	var parts []string
	for _, l := range []Level{Critical, Unknown, Warning} {
		if names := byLevel[l]; len(names) > 0 {
			parts = append(parts, strings.Join(names, ", ")+" "+l.String())
		}
	}
	summary := fmt.Sprintf("%d checks OK", len(results))
	if len(parts) > 0 {
		summary = strings.Join(parts, "; ")
	}
	p := &printer{w: w}
	p.f("WALHUB %s - %s | %s\n", Worst(levels...), summary, strings.Join(perf, " "))
	for _, d := range details {
		p.f("%s\n", d)
	}
	return p.err
}

// oneLine folds a multi-line message (pgx lists each address it tried) into one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}
