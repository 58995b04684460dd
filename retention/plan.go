// Package retention decides which backups and WAL a server's retention policy
// still needs, and removes the rest from the catalog and the repository without
// ever leaving a catalog row that points at a deleted file.
package retention

import (
	"fmt"
	"sort"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/walname"
)

// Verdict is what the plan says of one backup, and why.
type Verdict struct {
	Backup catalog.Backup `json:"-"`
	ID     string         `json:"id"`
	Keep   bool           `json:"keep"`
	Why    string         `json:"why"`
}

// Plan is the outcome of a retention policy on one server's backups.
type Plan struct {
	Verdicts []Verdict `json:"backups"`
	// WALBefore is the first segment number that must be kept: every segment
	// below it (on any timeline) is obsolete. Zero keeps all WAL.
	WALBefore walname.SegNo `json:"wal_before_segno"`
	// WALBeforeLSN is the start LSN of the oldest retained backup.
	WALBeforeLSN walname.LSN `json:"wal_before_lsn"`
	// Policy says the policy in words.
	Policy string `json:"policy"`
}

// Removed lists the backups the plan removes.
func (p Plan) Removed() []catalog.Backup {
	var out []catalog.Backup
	for _, v := range p.Verdicts {
		if !v.Keep {
			out = append(out, v.Backup)
		}
	}
	return out
}

// Describe says a policy in words.
func Describe(r config.Retention) string {
	s := ""
	if r.Redundancy > 0 {
		s = fmt.Sprintf("redundancy %d", r.Redundancy)
	}
	if r.Window.Duration > 0 {
		if s != "" {
			s += " and "
		}
		s += "recovery window " + formatWindow(r.Window.Duration)
	}
	if s == "" {
		return "none (every backup is kept)"
	}
	return fmt.Sprintf("%s, minimum redundancy %d", s, r.MinRedundancy)
}

func formatWindow(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// Decide applies the policy to backups (any order) at time now. segSize is the
// server's WAL segment size, for the WAL cut-off.
//
// A done backup is kept when any rule keeps it: among the newest Redundancy;
// finished inside the recovery window, or the newest one finished before the
// window starts (it is what recovers to the window's first instant); among the
// newest MinRedundancy. Running backups are always kept. A failed backup is
// removed once a newer backup succeeded; the latest failure is kept until then
// so that check can report it. With no policy at all, everything is kept.
func Decide(r config.Retention, backups []catalog.Backup, now time.Time, segSize uint64) Plan {
	plan := Plan{Policy: Describe(r)}
	sorted := append([]catalog.Backup(nil), backups...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].StartedAt.After(sorted[j].StartedAt) }) // newest first
	noPolicy := r.Redundancy == 0 && r.Window.Duration == 0
	windowStart := now.Add(-r.Window.Duration)
	done, newestDone := 0, time.Time{}
	beforeWindowKept := false
	var oldestKept *catalog.Backup
	var uncounted []int
	for i := range sorted {
		b := sorted[i]
		v := Verdict{Backup: b, ID: b.ID}
		switch b.State {
		case catalog.StateRunning:
			v.Keep, v.Why = true, "running"
		case catalog.StateWaitingWAL:
			v.Keep, v.Why = true, "waiting for its WAL"
		case catalog.StateFailed:
			if newestDone.IsZero() {
				v.Keep, v.Why = true, "failed, kept until a newer backup succeeds"
			} else {
				v.Why = "failed, and a newer backup succeeded"
			}
		case catalog.StateDone:
			if !catalog.Counted(b) {
				// Decided below, once the oldest kept counted backup is known.
				uncounted = append(uncounted, len(plan.Verdicts))
				break
			}
			done++
			if newestDone.IsZero() {
				newestDone = b.StartedAt
			}
			switch {
			case noPolicy:
				v.Keep, v.Why = true, "no retention policy"
			case r.Redundancy > 0 && done <= r.Redundancy:
				v.Keep, v.Why = true, fmt.Sprintf("one of the newest %d (redundancy)", r.Redundancy)
			case r.Window.Duration > 0 && !b.FinishedAt.Before(windowStart):
				v.Keep, v.Why = true, "inside the recovery window"
			case r.Window.Duration > 0 && !beforeWindowKept:
				beforeWindowKept = true
				v.Keep, v.Why = true, "newest before the recovery window: recovers to its start"
			case done <= r.MinRedundancy:
				v.Keep, v.Why = true, fmt.Sprintf("minimum redundancy %d", r.MinRedundancy)
			default:
				v.Why = "obsolete under " + plan.Policy
			}
			if v.Keep && r.Window.Duration > 0 && b.FinishedAt.Before(windowStart) {
				beforeWindowKept = true
			}
			if v.Keep {
				oldestKept = &sorted[i]
			}
		default:
			v.Keep, v.Why = true, "unknown state "+b.State
		}
		plan.Verdicts = append(plan.Verdicts, v)
	}
	// A done backup that does not count (a snapshot: its copy is not in
	// walhub) is kept while the WAL it needs is: while it is not older than
	// the oldest kept counted backup.
	for _, i := range uncounted {
		v := &plan.Verdicts[i]
		switch {
		case noPolicy:
			v.Keep, v.Why = true, "no retention policy"
		case oldestKept == nil:
			v.Keep, v.Why = true, fmt.Sprintf("a %s, not counted; no %s backup is kept, so all WAL is", v.Backup.Kind, catalog.KindBase)
		case v.Backup.StartedAt.Before(oldestKept.StartedAt):
			v.Why = fmt.Sprintf("a %s older than the oldest kept backup %s: the WAL it needs goes", v.Backup.Kind, oldestKept.ID)
		default:
			v.Keep, v.Why = true, fmt.Sprintf("a %s (not counted toward redundancy), not older than the oldest kept backup", v.Backup.Kind)
		}
	}
	// WAL older than the oldest kept done backup's start is needed by nobody.
	// Without a done backup, keep all WAL. A running or failed backup does not
	// hold WAL back: a running one starts after the oldest kept.
	if oldestKept != nil && !noPolicy && segSize > 0 {
		plan.WALBeforeLSN = oldestKept.StartLSN
		plan.WALBefore = walname.SegmentOf(oldestKept.StartLSN, segSize)
	}
	// Report oldest first, as people read lists of backups.
	for i, j := 0, len(plan.Verdicts)-1; i < j; i, j = i+1, j-1 {
		plan.Verdicts[i], plan.Verdicts[j] = plan.Verdicts[j], plan.Verdicts[i]
	}
	return plan
}
