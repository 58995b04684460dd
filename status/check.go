package status

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/privileges"
	"github.com/walhub/walhub/replication"
	"github.com/walhub/walhub/walname"
)

// Level is the outcome of a check, with Nagios's meaning and exit codes.
type Level int

// Levels, worst last (Unknown ranks between Warning and Critical when combined
// only by the exit code; Worst treats Critical as worst).
const (
	OK       Level = 0
	Warning  Level = 1
	Critical Level = 2
	Unknown  Level = 3
)

func (l Level) String() string {
	switch l {
	case OK:
		return "OK"
	case Warning:
		return "WARNING"
	case Critical:
		return "CRITICAL"
	}
	return "UNKNOWN"
}

// MarshalText writes the level as OK, WARNING, CRITICAL or UNKNOWN.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// rank orders levels by severity: OK < WARNING < UNKNOWN < CRITICAL.
func (l Level) rank() int {
	return map[Level]int{OK: 0, Warning: 1, Unknown: 2, Critical: 3}[l]
}

// Worst returns the most severe of levels (OK when there are none).
func Worst(levels ...Level) Level {
	w := OK
	for _, l := range levels {
		if l.rank() > w.rank() {
			w = l
		}
	}
	return w
}

// Result is the outcome of one named check.
type Result struct {
	Server  string `json:"server"`
	Name    string `json:"name"`
	Level   Level  `json:"level"`
	Message string `json:"message"`
	// Hint says what to do about a level other than OK.
	Hint string `json:"hint,omitempty"`
	Perf []Perf `json:"perfdata,omitempty"`
}

// Perf is one Nagios performance value.
type Perf struct {
	Label string  `json:"label"`
	Value float64 `json:"value"`
	// Unit is "s", "B", "%" or "" (a count).
	Unit string `json:"unit,omitempty"`
	Warn string `json:"warn,omitempty"`
	Crit string `json:"crit,omitempty"`
}

// Thresholds are the limits the checks judge by.
type Thresholds struct {
	// WALAge: how old the newest stored segment may be while the server has completed newer ones.
	WALAgeWarning, WALAgeCritical time.Duration
	// BackupAge: how old the newest done backup may be.
	BackupAgeWarning, BackupAgeCritical time.Duration
	// LagBytes: how far the receiver's flushed position may trail the server's.
	LagWarning, LagCritical int64
	// DiskFree: the least free space, in percent of the repository's file system.
	DiskFreeWarning, DiskFreeCritical float64
	// FreeSenders: the fewest unused wal senders (a backup needs one more).
	FreeSendersWarning, FreeSendersCritical int
	// RefreshAge: how old a read-only hub's last successful catalog refresh
	// may be; zero means 3 × refresh_interval (warning) and 10 ×
	// refresh_interval (critical).
	RefreshAgeWarning, RefreshAgeCritical time.Duration
}

// refreshLimits returns the refresh age limits for a hub refreshing every
// interval (a critical limit below the warning one is raised to it).
func (th Thresholds) refreshLimits(interval time.Duration) (warn, crit time.Duration) {
	warn, crit = th.RefreshAgeWarning, th.RefreshAgeCritical
	if warn == 0 {
		warn = 3 * interval
	}
	if crit == 0 {
		crit = 10 * interval
	}
	return warn, max(warn, crit)
}

// DefaultThresholds suit a daily backup timer and a streaming receiver.
var DefaultThresholds = Thresholds{
	WALAgeWarning: 5 * time.Minute, WALAgeCritical: 15 * time.Minute,
	BackupAgeWarning: 36 * time.Hour, BackupAgeCritical: 72 * time.Hour,
	LagWarning: 256 << 20, LagCritical: 1 << 30,
	DiskFreeWarning: 20, DiskFreeCritical: 10,
	FreeSendersWarning: 1, FreeSendersCritical: 0,
}

// Probe is the outcome of opening a replication connection (IdentifySystem)
// and, when asked for, of testing the role's privileges.
type Probe struct {
	Identity replication.Identity
	Err      error
	// Privileges is nil when they were not tested: the check is left out.
	Privileges *PrivilegeProbe
}

// PrivilegeProbe is what the role of the conninfo holds (ProbePrivileges).
type PrivilegeProbe struct {
	Role    string
	Missing []privileges.Privilege
	Err     error
}

// ProbePrivileges connects as the server's conninfo does and tests every
// right walhub needs (package privileges).
func ProbePrivileges(ctx context.Context, conninfo string, timeout time.Duration) *PrivilegeProbe {
	ctx, cancel := context.WithTimeout(ctx, 3*timeout)
	defer cancel()
	conn, err := connect(ctx, conninfo, timeout)
	if err != nil {
		return &PrivilegeProbe{Err: err}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	role, missing, err := privileges.Missing(ctx, conn)
	return &PrivilegeProbe{Role: role, Missing: missing, Err: err}
}

// Check builds the server's document, probes a replication connection and
// judges both.
func (s Source) Check(ctx context.Context, server string, th Thresholds) (*Document, []Result, error) {
	doc, err := s.Build(ctx, server)
	if err != nil {
		return nil, nil, err
	}
	if doc.ReadOnly {
		// Nothing to probe: the read-only hub does not connect to the server.
		return doc, Evaluate(doc, &config.Server{Name: server}, Probe{}, th), nil
	}
	srv, _ := s.Config.Server(server)
	timeout := s.ConnectTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	id, err := IdentifySystem(ctx, srv.Conninfo, timeout)
	probe := Probe{Identity: id, Err: err, Privileges: ProbePrivileges(ctx, srv.Conninfo, timeout)}
	return doc, Evaluate(doc, srv, probe, th), nil
}

// Evaluate runs every check on a document. A read-only hub's document
// (doc.ReadOnly) gets the checks that need neither PostgreSQL nor a receiver,
// the catalog refresh check, and one OK line naming those it leaves to the
// hub that writes the repository.
func Evaluate(doc *Document, srv *config.Server, probe Probe, th Thresholds) []Result {
	type check func(*Document, *config.Server, Probe, Thresholds) Result
	var checks []check
	if doc.ReadOnly {
		checks = []check{checkReadOnly, checkRefresh, checkContinuity, checkWALAge, checkBackupAge, checkRecoverable,
			checkFailedBackups, checkDiskSpace}
	} else {
		checks = []check{checkConnection, checkReplicationConnection}
		if probe.Privileges != nil {
			checks = append(checks, checkPrivileges)
		}
		checks = append(checks, checkWALLevel, checkWALSenders, checkSlot, checkReceiver, checkContinuity, checkWALAge,
			checkBackupAge, checkRedundancy, checkRecoverable, checkFailedBackups, checkDiskSpace, checkSystemID)
	}
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		r := c(doc, srv, probe, th)
		r.Server = doc.Server
		if doc.ReadOnly && r.Level != OK && r.Name != refreshCheck && r.Name != diskSpaceCheck {
			// What fixes it is done where the server is backed up and streamed from.
			r.Hint = "on the hub that writes the repository: " + r.Hint
		}
		out = append(out, r)
	}
	return out
}

// readOnlySkipped are the checks a read-only hub leaves to the hub that
// writes the repository: they need PostgreSQL, a receiver, or the writing
// hub's configuration (min_redundancy).
var readOnlySkipped = []string{"connection", "replication connection", "privileges", "wal_level", "max_wal_senders",
	"replication slot", "receiver", "minimum redundancy", "system id"}

func checkReadOnly(_ *Document, _ *config.Server, _ Probe, _ Thresholds) Result {
	return ok("read-only hub", "this hub follows a repository another hub writes and has no connection to the server: "+
		strings.Join(readOnlySkipped, ", ")+" are checked on the hub that writes it")
}

const (
	refreshCheck   = "catalog refresh"
	diskSpaceCheck = "repository disk space"
)

// checkRefresh judges how current a read-only hub's catalog is: by the age
// of its last successful refresh from the repository, against
// refresh_interval; the last error, if the last refresh failed, is in the message.
func checkRefresh(doc *Document, _ *config.Server, _ Probe, th Thresholds) Result {
	const name = refreshCheck
	rf := doc.Refresh
	if rf == nil {
		return bad(name, Unknown, "no refresh state in the document", "")
	}
	interval := time.Duration(rf.IntervalSeconds * float64(time.Second))
	warn, crit := th.refreshLimits(interval)
	if rf.Error != "" {
		return bad(name, Unknown, rf.Error, "the working area's refresh.json is rewritten at the next refresh: is walhub serve running on this hub?")
	}
	failed := ""
	if rf.LastError != "" {
		failed = fmt.Sprintf("the last %d refresh(es) failed, latest %s ago: %s", rf.Failures,
			age(time.Duration(rf.LastErrorAgeSeconds*float64(time.Second))), oneLine(rf.LastError))
	}
	fixErr := "this hub cannot read the repository: fix what the error says (network, endpoint, credentials, bucket); walhub serve retries every refresh_interval"
	if rf.LastSuccessAgeSeconds == nil {
		msg := "the catalog was never refreshed from the repository"
		hint := "start walhub serve on this hub (systemctl start walhub): it refreshes at start and every refresh_interval (" + interval.String() + ")"
		if failed != "" {
			msg, hint = msg+": "+failed, fixErr
		}
		// The first refresh of a large repository takes a while: not yet a failure.
		if running := doc.GeneratedAt.Sub(rf.RunningSince); failed == "" && !rf.RunningSince.IsZero() && running < crit {
			return bad(name, Warning, fmt.Sprintf("the first refresh from the repository is running (for %s, critical at %s)", age(running), age(crit)),
				"wait for it: the hub serves nothing of the repository until it ends (journalctl -u walhub)")
		}
		return bad(name, Critical, msg, hint)
	}
	a := time.Duration(*rf.LastSuccessAgeSeconds * float64(time.Second))
	msg := fmt.Sprintf("last successful refresh %s ago (refresh_interval %s)", age(a), interval)
	if failed != "" {
		msg += "; " + failed
	}
	hint := "is walhub serve running on this hub? (systemctl status walhub; journalctl -u walhub)"
	if failed != "" {
		hint = fixErr
	}
	r := ok(name, msg)
	switch {
	case a >= crit:
		r = bad(name, Critical, msg+fmt.Sprintf(" (limit %s)", age(crit)), hint)
	case a >= warn:
		r = bad(name, Warning, msg+fmt.Sprintf(" (warning at %s)", age(warn)), hint)
	}
	r.Perf = []Perf{{Label: "refresh_age", Value: a.Seconds(), Unit: "s",
		Warn: fmt.Sprint(warn.Seconds()), Crit: fmt.Sprint(crit.Seconds())}}
	return r
}

func ok(name, msg string) Result { return Result{Name: name, Level: OK, Message: msg} }

func bad(name string, l Level, msg, hint string) Result {
	return Result{Name: name, Level: l, Message: msg, Hint: hint}
}

// unreachable is the result of a check that needs the server when it cannot be asked.
func unreachable(name string, doc *Document) Result {
	msg := "cannot tell: PostgreSQL did not answer (see the connection check)"
	if doc.Postgres.Reachable {
		msg = "cannot tell: a status query failed (see the connection check)"
	}
	return bad(name, Unknown, msg, "fix the connection check first")
}

func checkConnection(doc *Document, srv *config.Server, _ Probe, _ Thresholds) Result {
	const name = "connection"
	pg := doc.Postgres
	switch {
	case !pg.Reachable:
		return bad(name, Critical, pg.Error, fmt.Sprintf("check that PostgreSQL runs and that conninfo of server %q "+
			"(host, port, user, dbname) and pg_hba.conf let walhub in; try: psql %q", srv.Name, replication.Redact(srv.Conninfo)))
	case pg.Error != "":
		return bad(name, Critical, "connected, but a query failed: "+pg.Error,
			"walhub's user needs the pg_monitor role: GRANT pg_monitor TO <user>")
	}
	role := "primary"
	if pg.InRecovery {
		role = "standby"
	}
	return ok(name, fmt.Sprintf("PostgreSQL %s, %s, timeline %d, at %s", pg.Version, role, pg.TimeLine, pg.CurrentLSN))
}

func checkReplicationConnection(doc *Document, srv *config.Server, p Probe, _ Thresholds) Result {
	const name = "replication connection"
	if p.Err != nil {
		msg := p.Err.Error()
		hint := "allow a physical replication connection: a pg_hba.conf line with database 'replication' for walhub's user, " +
			"and the REPLICATION attribute (ALTER ROLE <user> REPLICATION)"
		switch {
		case !doc.Postgres.Reachable:
			hint = "the server does not answer at all: fix the connection check first"
		case strings.Contains(msg, "max_wal_senders"), strings.Contains(msg, "too many"):
			hint = "all wal senders are busy: raise max_wal_senders (restart needed) or stop an unused client"
		case strings.Contains(msg, "must be superuser or replication role"), strings.Contains(msg, "permission denied"):
			hint = "ALTER ROLE <user> REPLICATION for the user in conninfo of server " + srv.Name
		}
		return bad(name, Critical, oneLine(msg), hint)
	}
	return ok(name, fmt.Sprintf("IDENTIFY_SYSTEM: system %s, timeline %d, at %s", p.Identity.SystemID, p.Identity.TimeLine, p.Identity.XLogPos))
}

// checkPrivileges names every right the role lacks and the statement that
// grants it, ready to paste into psql as a superuser.
func checkPrivileges(doc *Document, srv *config.Server, p Probe, _ Thresholds) Result {
	const name = "privileges"
	pp := p.Privileges
	switch {
	case pp.Err != nil && !doc.Postgres.Reachable:
		return unreachable(name, doc)
	case pp.Err != nil:
		return bad(name, Unknown, "cannot read the role's privileges: "+oneLine(pp.Err.Error()), "fix the connection check first")
	case len(pp.Missing) == 0:
		return ok(name, fmt.Sprintf("role %s holds every privilege walhub needs", pp.Role))
	}
	var lacks, grants []string
	for _, m := range pp.Missing {
		lacks = append(lacks, fmt.Sprintf("%s (%s)", m.Name, m.For))
		grants = append(grants, m.Grant(pp.Role))
	}
	level := Warning
	if slices.ContainsFunc(pp.Missing, func(m privileges.Privilege) bool { return m.Name == privileges.Replication.Name }) {
		level = Critical
	}
	return bad(name, level, fmt.Sprintf("role %s lacks %s", pp.Role, strings.Join(lacks, "; ")),
		"as a superuser on the server: "+strings.Join(grants, " "))
}

func checkWALLevel(doc *Document, _ *config.Server, _ Probe, _ Thresholds) Result {
	const name = "wal_level"
	if !doc.Postgres.Reachable || doc.Postgres.WALLevel == "" {
		return unreachable(name, doc)
	}
	if doc.Postgres.WALLevel == "minimal" {
		return bad(name, Critical, "wal_level is minimal: the WAL cannot rebuild a backup",
			"set wal_level = replica in postgresql.conf and restart PostgreSQL")
	}
	return ok(name, doc.Postgres.WALLevel)
}

func checkWALSenders(doc *Document, srv *config.Server, _ Probe, th Thresholds) Result {
	const name = "max_wal_senders"
	pg := doc.Postgres
	if !pg.Reachable || pg.WALLevel == "" {
		return unreachable(name, doc)
	}
	free := pg.MaxWALSenders - pg.WALSenders
	r := ok(name, fmt.Sprintf("%d of %d wal senders free", free, pg.MaxWALSenders))
	hint := fmt.Sprintf("raise max_wal_senders above %d (restart needed): the receiver reconnecting and each backup need one", pg.MaxWALSenders)
	switch {
	case free <= th.FreeSendersCritical:
		r = bad(name, Critical, fmt.Sprintf("no wal sender free (%d of %d used)", pg.WALSenders, pg.MaxWALSenders), hint)
	case free <= th.FreeSendersWarning:
		r = bad(name, Warning, fmt.Sprintf("only %d of %d wal senders free", free, pg.MaxWALSenders), hint)
	}
	// Nagios ranges: "N:" alerts below N, and these levels are reached at or below the threshold.
	r.Perf = []Perf{{Label: "free_wal_senders", Value: float64(free),
		Warn: fmt.Sprint(th.FreeSendersWarning+1) + ":", Crit: fmt.Sprint(th.FreeSendersCritical+1) + ":"}}
	return r
}

func checkSlot(doc *Document, srv *config.Server, _ Probe, _ Thresholds) Result {
	name := "replication slot"
	sl := doc.Slot
	if !sl.Known {
		return unreachable(name, doc)
	}
	perf := []Perf{{Label: "slot_retained", Value: float64(sl.RetainedBytes), Unit: "B"}}
	var r Result
	switch {
	case !sl.Exists:
		create := "walhub serve creates it at start (create_slot = true)"
		if srv.CreateSlot != nil && !*srv.CreateSlot {
			create = fmt.Sprintf("create it: SELECT pg_create_physical_replication_slot('%s', true)", sl.Name)
		}
		r = bad(name, Critical, fmt.Sprintf("slot %s does not exist on the server: nothing stops it from removing WAL the hub has not received", sl.Name),
			create+"; if WAL was removed meanwhile, `walhub status` shows the gap: take a new backup with walhub backup --server "+srv.Name)
	case sl.WALStatus == "lost":
		r = bad(name, Critical, fmt.Sprintf("slot %s is invalidated (wal_status lost): the server removed WAL the hub needed", sl.Name),
			fmt.Sprintf("drop and recreate the slot (SELECT pg_drop_replication_slot('%s')), restart walhub serve, then take a new backup: the archive has a gap; consider raising max_slot_wal_keep_size", sl.Name))
	case !sl.Active && doc.Receiver.Running:
		// The receiver runs but is not connected: what it reports is the cause.
		why := doc.Receiver.LastError
		if why == "" {
			why = "no error reported yet"
		}
		r = bad(name, Critical, fmt.Sprintf("slot %s is not in use: the receiver runs (%s) but is not streaming: %s; the slot holds %s of WAL on the server",
			sl.Name, doc.Receiver.State, oneLine(why), bytesText(sl.RetainedBytes)),
			"fix what the receiver reports (see the receiver check and walhub serve's log); it reconnects by itself, and the server keeps WAL for the slot until then")
	case !sl.Active:
		r = bad(name, Critical, fmt.Sprintf("slot %s is not in use: no receiver streams from it, and it holds %s of WAL on the server", sl.Name, bytesText(sl.RetainedBytes)),
			"start walhub serve (systemctl start walhub) and look at its log; the server keeps WAL for the slot until then and its disk may fill")
	case sl.WALStatus == "unreserved":
		r = bad(name, Warning, fmt.Sprintf("slot %s is active but wal_status is unreserved: its WAL may be removed at the next checkpoint", sl.Name),
			"the receiver is far behind max_slot_wal_keep_size: look at the receiver's lag and the network")
	default:
		msg := fmt.Sprintf("slot %s active (pid %d), restart_lsn %s, %s retained, wal_status %s", sl.Name, sl.ActivePID, sl.RestartLSN, bytesText(sl.RetainedBytes), sl.WALStatus)
		if sl.SafeWALSize != nil {
			msg += fmt.Sprintf(", %s more before invalidation", bytesText(*sl.SafeWALSize))
		}
		r = ok(name, msg)
	}
	r.Perf = perf
	return r
}

func checkReceiver(doc *Document, srv *config.Server, _ Probe, th Thresholds) Result {
	const name = "receiver"
	rc := doc.Receiver
	perf := []Perf{{Label: "receiver_lag", Value: float64(rc.LagBytes), Unit: "B",
		Warn: fmt.Sprint(th.LagWarning), Crit: fmt.Sprint(th.LagCritical)}}
	var r Result
	switch {
	case !rc.Running:
		msg := "not running: " + rc.NotRunning
		if rc.LastError != "" {
			msg += "; last error: " + rc.LastError
		}
		r = bad(name, Critical, msg, "start walhub serve (systemctl start walhub; journalctl -u walhub for why it stopped)")
	case rc.State != "streaming":
		msg := fmt.Sprintf("running (pid %d) but %s", rc.PID, rc.State)
		if rc.LastError != "" {
			msg += ": " + rc.LastError
		}
		// A reconnect after a blip is a warning while the last word from the
		// server is recent; a receiver cut off for longer, or failed, is critical.
		level, hint := Warning, "the receiver retries by itself; if this lasts, fix the cause shown (journalctl -u walhub)"
		if rc.LastMessageAt.IsZero() || doc.GeneratedAt.Sub(rc.LastMessageAt) >= th.WALAgeCritical {
			level = Critical
		}
		if rc.State == "failed" {
			level, hint = Critical, "the receiver gave up on a condition that needs a person: fix the cause shown, then restart walhub serve"
		}
		r = bad(name, level, msg, hint)
	case rc.LagBytes >= th.LagCritical:
		r = bad(name, Critical, fmt.Sprintf("streaming but %s behind the server", bytesText(rc.LagBytes)),
			"the hub cannot keep up: look at its disk and network, and at compression_level")
	case rc.LagBytes >= th.LagWarning:
		r = bad(name, Warning, fmt.Sprintf("streaming but %s behind the server", bytesText(rc.LagBytes)),
			"the hub is falling behind: look at its disk and network")
	default:
		r = ok(name, fmt.Sprintf("streaming (pid %d on %s), flushed %s, %s behind, state written %s ago",
			rc.PID, rc.Host, rc.FlushedLSN, bytesText(rc.LagBytes), age(time.Duration(rc.UpdatedAgeSeconds*float64(time.Second)))))
	}
	r.Perf = perf
	return r
}

func checkContinuity(doc *Document, srv *config.Server, _ Probe, _ Thresholds) Result {
	const name = "wal continuity"
	var blocking, other []Gap
	for _, g := range doc.WAL.Gaps {
		if g.AfterOldestBackup {
			blocking = append(blocking, g)
		} else {
			other = append(other, g)
		}
	}
	r := ok(name, fmt.Sprintf("no gap in %d segments held", doc.WAL.Segments))
	switch {
	case len(blocking) > 0:
		g := blocking[0]
		r = bad(name, Critical, fmt.Sprintf("%d gap(s) after the oldest backup's start, first: %s (%s .. %s, %d segments)",
			len(blocking), gapText(g), g.StartLSN, g.EndLSN, g.Segments),
			"recovery cannot cross a gap: take a new backup now (walhub backup --server "+srv.Name+"); backups older than the gap only recover up to it")
	case doc.Backups.Count == 0 && len(other) > 0:
		r = bad(name, Warning, fmt.Sprintf("%d gap(s) in the WAL held, first: %s", len(other), gapText(other[0])),
			"take a backup (walhub backup --server "+srv.Name+"): WAL before a gap is of no use without a backup")
	case len(other) > 0:
		r = ok(name, fmt.Sprintf("no gap after the oldest backup (%d older gap(s), harmless)", len(other)))
	}
	return r
}

func gapText(g Gap) string {
	what := g.FirstSegment
	if g.LastSegment != g.FirstSegment {
		what += ".." + g.LastSegment
	}
	if g.Reason != "" {
		what += " (" + g.Source + ": " + g.Reason + ")"
	} else {
		what += " (" + g.Source + ")"
	}
	return what
}

func checkWALAge(doc *Document, srv *config.Server, _ Probe, th Thresholds) Result {
	const name = "last wal age"
	w := doc.WAL
	perf := func(r Result, a float64) Result {
		r.Perf = []Perf{{Label: "wal_age", Value: a, Unit: "s",
			Warn: fmt.Sprint(th.WALAgeWarning.Seconds()), Crit: fmt.Sprint(th.WALAgeCritical.Seconds())}}
		return r
	}
	if w.LastSegment == "" {
		return bad(name, Critical, "no WAL segment is stored yet",
			"start walhub serve and let it stream; the first segment is stored when the server completes one (SELECT pg_switch_wal() forces it)")
	}
	a := time.Duration(w.LastSegmentAgeSeconds * float64(time.Second))
	// An idle server completes no segment: an old last segment is only stale
	// when the server has completed newer ones the hub does not hold.
	serverLSN := doc.Receiver.ServerLSN
	if doc.Postgres.Reachable && doc.Postgres.CurrentLSN != 0 {
		serverLSN = doc.Postgres.CurrentLSN
	}
	var behind int64
	known := false
	if serverLSN != 0 && w.SegmentSize != 0 {
		if _, lastSeg, err := walname.ParseSegment(w.LastSegment, w.SegmentSize); err == nil {
			behind, known = int64(walname.SegmentOf(serverLSN, w.SegmentSize))-int64(lastSeg)-1, true
		}
	}
	if known && behind <= 0 {
		return perf(ok(name, fmt.Sprintf("up to date: last segment %s stored %s ago, the server has completed no newer one", w.LastSegment, age(a))), 0)
	}
	var level Level
	switch {
	case a >= th.WALAgeCritical:
		level = Critical
	case a >= th.WALAgeWarning:
		level = Warning
	}
	msg := fmt.Sprintf("last segment %s stored %s ago; the server has completed %d newer segment(s)", w.LastSegment, age(a), behind)
	if !known {
		// Without the server's position an old segment may just mean an idle server.
		msg = fmt.Sprintf("last segment %s stored %s ago (the server's position is unknown)", w.LastSegment, age(a))
		level = min(level, Warning)
	}
	if level == OK {
		return perf(ok(name, msg), a.Seconds())
	}
	return perf(bad(name, level, msg, "the receiver is not storing WAL: check the receiver and slot checks and journalctl -u walhub; "+
		"if the server removes the WAL meanwhile, the archive gets a gap"), a.Seconds())
}

func checkBackupAge(doc *Document, srv *config.Server, _ Probe, th Thresholds) Result {
	const name = "last backup age"
	last := doc.Backups.Last
	if last == nil {
		return bad(name, Critical, "no backup", "take one: walhub backup --server "+srv.Name+" (and enable walhub-backup.timer)")
	}
	a := time.Duration(last.AgeSeconds * float64(time.Second))
	r := ok(name, fmt.Sprintf("last backup %s finished %s ago", last.ID, age(a)))
	hint := "take a backup: walhub backup --server " + srv.Name + "; check walhub-backup.timer (systemctl list-timers) and its journal"
	switch {
	case a >= th.BackupAgeCritical:
		r = bad(name, Critical, fmt.Sprintf("last backup %s finished %s ago (limit %s)", last.ID, age(a), age(th.BackupAgeCritical)), hint)
	case a >= th.BackupAgeWarning:
		r = bad(name, Warning, fmt.Sprintf("last backup %s finished %s ago (warning at %s)", last.ID, age(a), age(th.BackupAgeWarning)), hint)
	}
	r.Perf = []Perf{{Label: "backup_age", Value: a.Seconds(), Unit: "s",
		Warn: fmt.Sprint(th.BackupAgeWarning.Seconds()), Crit: fmt.Sprint(th.BackupAgeCritical.Seconds())}}
	return r
}

func checkRedundancy(doc *Document, srv *config.Server, _ Probe, _ Thresholds) Result {
	const name = "minimum redundancy"
	want := srv.Retention.MinRedundancy
	r := ok(name, fmt.Sprintf("%d backup(s), at least %d required", doc.Backups.Count, want))
	if doc.Backups.Count < want {
		r = bad(name, Critical, fmt.Sprintf("%d backup(s), at least %d required (retention.min_redundancy)", doc.Backups.Count, want),
			"take a backup: walhub backup --server "+srv.Name)
	}
	r.Perf = []Perf{{Label: "backups", Value: float64(doc.Backups.Count), Crit: fmt.Sprint(want) + ":"}}
	return r
}

// checkRecoverable says what the archive can recover to: from the end of
// the oldest backup whose WAL is all held to the end of the WAL held
// without a gap. Backups none of which has all its WAL are critical.
func checkRecoverable(doc *Document, _ *config.Server, _ Probe, _ Thresholds) Result {
	const name = "recoverable window"
	r := doc.Recoverable
	if r == nil {
		if doc.Backups.Count == 0 {
			return ok(name, "no backup yet (see minimum redundancy)")
		}
		return bad(name, Critical, "no backup can be restored: none has all its WAL in the hub",
			"see the WAL gaps in walhub status; take a new backup with walhub backup")
	}
	res := ok(name, fmt.Sprintf("from %s (%s, end of backup %s) to %s (%s)", pointTime(r.EarliestTime), r.EarliestLSN,
		r.EarliestBackup, pointTime(r.LatestTime), r.LatestLSN))
	if !r.EarliestTime.IsZero() && !r.LatestTime.IsZero() {
		res.Perf = []Perf{{Label: "recoverable_window", Value: r.LatestTime.Sub(r.EarliestTime).Seconds(), Unit: "s"}}
	}
	return res
}

func checkFailedBackups(doc *Document, srv *config.Server, _ Probe, _ Thresholds) Result {
	const name = "failed backups"
	b := doc.Backups
	if b.FailedSinceLast > 0 && b.LastFailed != nil {
		return bad(name, Warning, fmt.Sprintf("the last %d backup attempt(s) failed, latest %s: %s", b.FailedSinceLast, b.LastFailed.ID, b.LastFailed.Reason),
			"fix the cause, then walhub backup --server "+srv.Name+"; walhub list-backups --server "+srv.Name+" lists them")
	}
	return ok(name, fmt.Sprintf("%d failed backup(s), none since the last good one", b.Failed))
}

func checkDiskSpace(doc *Document, _ *config.Server, _ Probe, th Thresholds) Result {
	const name = diskSpaceCheck
	rp := doc.Repository
	if rp.Error != "" {
		return bad(name, Unknown, rp.Error, "check that the repository directory exists and is readable")
	}
	msg := fmt.Sprintf("%s free of %s (%.1f%%) in %s", bytesText(int64(rp.FreeBytes)), bytesText(int64(rp.TotalBytes)), rp.FreePercent, rp.Path)
	r := ok(name, msg)
	hint := "free space: walhub expire --server <name>, a stricter retention, or a larger file system; a full repository stops the receiver and the server's disk fills behind its slot"
	if doc.ReadOnly {
		hint = "free space in this hub's working area (catalog.db grows with the WAL index) or grow its file system: a full one stops the catalog refresh"
	}
	switch {
	case rp.FreePercent <= th.DiskFreeCritical:
		r = bad(name, Critical, msg, hint)
	case rp.FreePercent <= th.DiskFreeWarning:
		r = bad(name, Warning, msg, hint)
	}
	r.Perf = []Perf{{Label: "disk_free", Value: rp.FreePercent, Unit: "%",
		Warn: fmt.Sprint(th.DiskFreeWarning) + ":", Crit: fmt.Sprint(th.DiskFreeCritical) + ":"}}
	return r
}

func checkSystemID(doc *Document, srv *config.Server, p Probe, _ Thresholds) Result {
	const name = "system id"
	recorded := doc.WAL.SystemID
	seen := map[string]string{}
	if doc.Postgres.SystemID != "" {
		seen["the server"] = doc.Postgres.SystemID
	}
	if p.Err == nil && p.Identity.SystemID != "" {
		seen["IDENTIFY_SYSTEM"] = p.Identity.SystemID
	}
	if doc.Receiver.SystemID != "" {
		seen["the receiver"] = doc.Receiver.SystemID
	}
	if recorded == "" {
		if len(seen) == 0 {
			return ok(name, "nothing recorded yet, server not reachable")
		}
		return ok(name, "nothing recorded yet (recorded at the receiver's first connection)")
	}
	for who, id := range seen {
		if id != recorded {
			return bad(name, Critical, fmt.Sprintf("the catalog records system %s for %s, %s says %s: conninfo points at another cluster",
				recorded, srv.Name, who, id),
				"correct conninfo of server "+srv.Name+"; if the cluster was really rebuilt (initdb or restore), give it a new [[server]] name so its WAL is not mixed with the old one's")
		}
	}
	if len(seen) == 0 {
		return bad(name, Unknown, "system "+recorded+" recorded, server not reachable to compare", "fix the connection check first")
	}
	return ok(name, "system "+recorded+" matches")
}

// bytesText formats a byte count with binary units: "0 B", "15.2 MiB".
func bytesText(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for (v >= unit || v <= -unit) && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}
