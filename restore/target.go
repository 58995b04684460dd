// Package restore turns a stored backup into a data directory ready to start:
// it picks the backup for a recovery target, unpacks and verifies it, remaps
// tablespaces, and writes the recovery settings.
package restore

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/walname"
)

// Target is a point-in-time recovery target. At most one of Time, LSN, XID,
// Name and Immediate is set; none means recover to the end of the WAL.
type Target struct {
	Time      time.Time
	LSN       walname.LSN
	XID       string
	Name      string
	Immediate bool
	// Action is what PostgreSQL does at the target: pause, promote or shutdown.
	Action string
	// TimeLine is recovery_target_timeline: "latest", "current" or a number.
	TimeLine string
	// Exclusive stops just before the target instead of just after.
	Exclusive bool
}

// Kind names the target that is set, or "" for end of WAL.
func (t Target) Kind() string {
	switch {
	case !t.Time.IsZero():
		return "time"
	case t.LSN != 0:
		return "lsn"
	case t.XID != "":
		return "xid"
	case t.Name != "":
		return "name"
	case t.Immediate:
		return "immediate"
	}
	return ""
}

// Validate checks that the target makes sense on its own.
func (t Target) Validate() error {
	n := 0
	for _, set := range []bool{!t.Time.IsZero(), t.LSN != 0, t.XID != "", t.Name != "", t.Immediate} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("give at most one of --target-time, --target-lsn, --target-xid, --target-name, --target-immediate")
	}
	switch t.Action {
	case "", "pause", "promote", "shutdown":
	default:
		return fmt.Errorf("--target-action: %q is not one of pause, promote, shutdown", t.Action)
	}
	if t.Action != "" && n == 0 {
		return errors.New("--target-action needs a recovery target")
	}
	if t.Exclusive && (t.Kind() == "" || t.Immediate || t.Name != "") {
		return errors.New("--target-exclusive goes with --target-time, --target-lsn or --target-xid")
	}
	if t.XID != "" {
		for _, c := range t.XID {
			if c < '0' || c > '9' {
				return fmt.Errorf("--target-xid: %q is not a transaction id", t.XID)
			}
		}
	}
	switch tl := t.TimeLine; {
	case tl == "" || tl == "latest" || tl == "current":
	default:
		for _, c := range tl {
			if c < '0' || c > '9' {
				return fmt.Errorf("--target-timeline: %q is not latest, current or a timeline number", tl)
			}
		}
	}
	return nil
}

// ParseTime reads --target-time: RFC 3339, or PostgreSQL's "2006-01-02 15:04:05[.frac][-07[:00]]".
func ParseTime(s string) (time.Time, error) {
	layouts := []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07",
		"2006-01-02 15:04:05.999999999 Z07:00", "2006-01-02 15:04:05.999999999 MST", "2006-01-02 15:04:05.999999999"}
	for _, l := range layouts {
		if t, err := time.Parse(l, strings.TrimSpace(s)); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--target-time: %q is not a time like 2026-11-21 10:30:00+00 or 2026-11-21T10:30:00Z", s)
}

// ChooseBackup picks the backup to restore: the one named by id ("" or
// "latest" for automatic), else the newest done backup whose end is before the
// target. Failed and running backups are never chosen automatically; a named
// one must be done.
func ChooseBackup(backups []catalog.Backup, id string, t Target) (catalog.Backup, error) {
	if id != "" && id != "latest" {
		for _, b := range backups {
			if b.ID == id {
				if b.State != catalog.StateDone {
					return catalog.Backup{}, fmt.Errorf("backup %s is %s, not usable (%s)", id, b.State, b.Reason)
				}
				if !reaches(b, t) {
					return catalog.Backup{}, fmt.Errorf("backup %s ends after the %s target: recovery cannot stop before a backup's end", id, t.Kind())
				}
				return b, nil
			}
		}
		return catalog.Backup{}, fmt.Errorf("no backup %s: see walhub list-backups", id)
	}
	var best *catalog.Backup
	done := 0
	for i := range backups {
		b := &backups[i]
		if b.State != catalog.StateDone {
			continue
		}
		done++
		if reaches(*b, t) && (best == nil || b.StopLSN > best.StopLSN) {
			best = b
		}
	}
	switch {
	case done == 0:
		return catalog.Backup{}, errors.New("no successful backup to restore: take one with walhub backup")
	case best == nil:
		return catalog.Backup{}, fmt.Errorf("the %s target is before the end of every backup: no backup can reach it", t.Kind())
	}
	return *best, nil
}

// reaches reports whether a recovery from b can stop at t: the backup must be
// consistent (its end replayed) before the target.
func reaches(b catalog.Backup, t Target) bool {
	switch t.Kind() {
	case "time":
		return !b.FinishedAt.IsZero() && b.FinishedAt.Before(t.Time)
	case "lsn":
		return b.StopLSN <= t.LSN
	}
	return true // end of WAL, immediate, xid and name: any backup; PostgreSQL checks the rest
}
