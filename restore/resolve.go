package restore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/walname"
	"github.com/walhub/walhub/walrecord"
)

// Resolver decides, from the catalog's WAL index (restore points and the
// commit and abort records of every stored segment), which backup recovery
// to a target must start from, and refuses targets the archive cannot reach.
// It reads at most a few stored segments, where the index says only that
// the record recovery stops at is somewhere in a segment.
//
// Recovery from a backup stops at the target only if the record it stops at
// comes after the backup's end (else PostgreSQL fails with "requested
// recovery stop point is before consistent recovery point") and is in WAL
// held without a gap (else "recovery ended before configured recovery
// target was reached"). The record is: for a name, the first restore point
// of that name replayed from the backup's start; for a time, the first
// commit or abort after the time; for an xid, its commit or abort; for an
// LSN, the first record at or after it.
type Resolver struct {
	Repo   *repository.Repository
	Server catalog.Server

	path []catalog.PathPart
}

// Choose picks the backup to restore for target t: the one named by id (""
// or "latest" for automatic), which must reach t, else the newest restorable
// backup that reaches it.
func (r *Resolver) Choose(ctx context.Context, id string, t Target) (catalog.Backup, error) {
	b, err := r.choose(ctx, id, t)
	return b, unreachable(err)
}

func (r *Resolver) choose(ctx context.Context, id string, t Target) (catalog.Backup, error) {
	backups, err := r.Repo.Catalog.Backups(ctx, r.Server.ID)
	if err != nil {
		return catalog.Backup{}, internalError{err}
	}
	if id == "" || id == "latest" {
		// Chosen automatically: only among the kinds walhub restores (not a
		// snapshot, whose files are in the user's copy).
		backups = slices.DeleteFunc(backups, func(b catalog.Backup) bool { return !catalog.KindOf(b).Restorable })
	}
	segSize := r.Server.SegmentSize
	if t.Kind() == "" || t.Kind() == "immediate" || segSize == 0 {
		return ChooseBackup(backups, id, t)
	}
	if r.path, err = r.Repo.Catalog.TimeLinePath(ctx, r.Server.ID, segSize); err != nil {
		return catalog.Backup{}, internalError{err}
	}
	var candidates []catalog.Backup
	for _, b := range backups {
		if id != "" && id != "latest" && b.ID != id {
			continue
		}
		if id != "" && id != "latest" && !catalog.Restorable(b) {
			return ChooseBackup(backups, id, t) // says why it cannot be used
		}
		if catalog.Restorable(b) {
			candidates = append(candidates, b)
		}
	}
	if len(candidates) == 0 {
		return ChooseBackup(backups, id, t)
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].StopLSN > candidates[j].StopLSN })
	var why []string
	for _, b := range candidates {
		reason, err := r.reaches(ctx, b, t)
		if err != nil {
			return catalog.Backup{}, internalError{err}
		}
		if reason == "" {
			return b, nil
		}
		why = append(why, reason)
	}
	msg := fmt.Sprintf("no backup can reach the %s target: %s", t.Kind(), strings.Join(uniq(why), "; "))
	if id != "" && id != "latest" {
		msg = fmt.Sprintf("backup %s cannot reach the %s target: %s", id, t.Kind(), why[0])
	}
	return catalog.Backup{}, errors.New(msg + r.reachable(ctx))
}

// reachable says what the archive can recover to, for error messages.
func (r *Resolver) reachable(ctx context.Context) string {
	w, err := r.Repo.Catalog.RecoverableWindow(ctx, r.Server.ID)
	if err != nil {
		return ""
	}
	return fmt.Sprintf(". The archive can recover server %s from %s (%s, the end of backup %s) to %s (%s); see walhub restore-points",
		r.Server.Name, formatTime(w.Earliest.Time), w.Earliest.LSN, w.EarliestBackup, formatTime(w.Latest.Time), w.Latest.LSN)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "(no commit indexed)"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000000Z07:00")
}

func uniq(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// reaches returns "" when recovery from b stops at t, else why not.
func (r *Resolver) reaches(ctx context.Context, b catalog.Backup, t Target) (string, error) {
	segSize := r.Server.SegmentSize
	_, end, err := r.Repo.Catalog.ContiguousEnd(ctx, r.Server.ID, r.path, walname.SegmentOf(b.StartLSN, segSize))
	if err != nil {
		return "", err
	}
	held := walname.SegmentStart(end, segSize) // WAL is held without a gap from b's start to here
	if held < b.StopLSN {
		return fmt.Sprintf("the WAL of backup %s is not all held (missing from %s)", b.ID, held), nil
	}
	var stop walname.LSN // the record recovery stops at
	switch t.Kind() {
	case "lsn":
		if t.LSN >= held {
			return fmt.Sprintf("LSN %s is after the end of the WAL held (%s)", t.LSN, held), nil
		}
		stop = t.LSN
	case "name":
		rps, err := r.Repo.Catalog.RestorePoints(ctx, r.Server.ID, t.Name)
		if err != nil {
			return "", err
		}
		if len(rps) == 0 {
			return fmt.Sprintf("the archive holds no restore point named %q", t.Name), nil
		}
		var found *catalog.RestorePoint
		for i := range rps {
			if rps[i].LSN >= b.StartLSN && r.onPath(rps[i].TimeLine, rps[i].SegNo) {
				found = &rps[i]
				break
			}
		}
		if found == nil {
			return fmt.Sprintf("restore point %q is before backup %s", t.Name, b.ID), nil
		}
		if found.EndLSN > held {
			return fmt.Sprintf("the WAL from backup %s to restore point %q is not all held (missing from %s)", b.ID, t.Name, held), nil
		}
		stop = found.LSN
	case "time":
		lsn, ok, err := r.firstXactAfter(ctx, b.StartLSN, held, t.Time, t.Exclusive)
		if err != nil {
			return "", err
		}
		if !ok {
			return fmt.Sprintf("the WAL held after backup %s has no commit or abort after %s: recovery would end before reaching it (recover to the end of the WAL without a target instead)",
				b.ID, formatTime(t.Time)), nil
		}
		stop = lsn
	case "xid":
		x, err := strconv.ParseUint(t.XID, 10, 32)
		if err != nil {
			return "", fmt.Errorf("--target-xid %q: %w", t.XID, err)
		}
		lsn, ok, err := r.xactOf(ctx, b.StartLSN, held, uint32(x))
		if err != nil {
			return "", err
		}
		if !ok {
			return fmt.Sprintf("the WAL held after backup %s has no commit or abort of transaction %d", b.ID, x), nil
		}
		stop = lsn
	}
	if stop < b.StopLSN {
		return fmt.Sprintf("the %s target (at %s) is before the end of backup %s (%s)", t.Kind(), stop, b.ID, b.StopLSN), nil
	}
	return "", nil
}

// onPath reports whether segment segno of timeline tli is on the path recovery reads.
func (r *Resolver) onPath(tli walname.TimeLine, segno walname.SegNo) bool {
	for _, p := range r.path {
		if segno >= p.From && segno < p.To {
			return p.TimeLine == tli
		}
	}
	return false
}

// firstXactAfter finds the first commit or abort after from (and before
// held) whose time is after t (at or after t when exclusive): where recovery
// to time t stops.
func (r *Resolver) firstXactAfter(ctx context.Context, from, held walname.LSN, t time.Time, exclusive bool) (walname.LSN, bool, error) {
	after := t
	if exclusive {
		after = t.Add(-time.Nanosecond)
	}
	beyond := func(e walrecord.Event) bool { return e.Kind.IsXact() && e.LSN >= from && e.Time.After(after) }
	segSize := r.Server.SegmentSize
	for _, p := range r.path {
		lo, hi := max(p.From, walname.SegmentOf(from, segSize)), min(p.To, walname.SegmentOf(held, segSize))
		for lo < hi {
			s, err := r.Repo.Catalog.FirstSegmentAfter(ctx, r.Server.ID, p.TimeLine, lo, hi, after)
			if errors.Is(err, catalog.ErrNotFound) {
				break
			}
			if err != nil {
				return 0, false, err
			}
			if s.First.LSN >= from && s.First.Time.After(after) {
				return s.First.LSN, true, nil
			}
			// Somewhere in this segment: read it.
			events, err := r.scan(ctx, p.TimeLine, s.SegNo)
			if err != nil {
				return 0, false, err
			}
			for _, e := range events {
				if beyond(e) {
					return e.LSN, true, nil
				}
			}
			lo = s.SegNo + 1
		}
	}
	return 0, false, nil
}

// xactOf finds the commit or abort of transaction xid after from (and before held).
func (r *Resolver) xactOf(ctx context.Context, from, held walname.LSN, xid uint32) (walname.LSN, bool, error) {
	segSize := r.Server.SegmentSize
	for _, p := range r.path {
		lo, hi := max(p.From, walname.SegmentOf(from, segSize)), min(p.To, walname.SegmentOf(held, segSize))
		if lo >= hi {
			continue
		}
		segs, err := r.Repo.Catalog.SegmentsWithXID(ctx, r.Server.ID, p.TimeLine, lo, hi, xid)
		if err != nil {
			return 0, false, err
		}
		for _, s := range segs {
			events, err := r.scan(ctx, p.TimeLine, s.SegNo)
			if err != nil {
				return 0, false, err
			}
			for _, e := range events {
				if e.Kind.IsXact() && e.XID == xid && e.LSN >= from {
					return e.LSN, true, nil
				}
			}
		}
	}
	return 0, false, nil
}

// scan reads the records whose end is in segment segno of timeline tli
// (the ones the index attributes to it), reading the segment before it too
// when it is held, for a record that begins there.
func (r *Resolver) scan(ctx context.Context, tli walname.TimeLine, segno walname.SegNo) ([]walrecord.Event, error) {
	segSize := r.Server.SegmentSize
	start := walname.SegmentStart(segno, segSize)
	dec := walrecord.NewDecoder(segSize, start)
	if segno > 0 {
		prevTLI := tli
		for _, p := range r.path {
			if segno-1 >= p.From && segno-1 < p.To {
				prevTLI = p.TimeLine
			}
		}
		prev, err := r.Repo.Catalog.Segment(ctx, r.Server.ID, walname.SegmentName(prevTLI, segno-1, segSize))
		if err == nil {
			dec = walrecord.NewDecoder(segSize, start-walname.LSN(segSize))
			if err := r.Repo.ReadSegment(ctx, prev, dec); err != nil {
				return nil, err
			}
			dec.Events()
		} else if !errors.Is(err, catalog.ErrNotFound) {
			return nil, err
		}
	}
	seg, err := r.Repo.Catalog.Segment(ctx, r.Server.ID, walname.SegmentName(tli, segno, segSize))
	if err != nil {
		return nil, err
	}
	if err := r.Repo.ReadSegment(ctx, seg, dec); err != nil {
		return nil, err
	}
	return dec.Events(), nil
}

// UnreachableError is a recovery target that no backup plus the WAL held
// can reach (or a backup that cannot be used for it): the restore is refused
// before anything is written.
type UnreachableError struct{ Msg string }

func (e *UnreachableError) Error() string { return e.Msg }

// internalError is a failure to decide (the catalog or a segment could not
// be read), not a refusal.
type internalError struct{ error }

func (e internalError) Unwrap() error { return e.error }

// unreachable turns the refusals among Choose's errors into UnreachableError.
func unreachable(err error) error {
	var u *UnreachableError
	var ie internalError
	switch {
	case err == nil || errors.As(err, &u):
		return err
	case errors.As(err, &ie):
		return ie.error
	}
	return &UnreachableError{Msg: err.Error()}
}

// Query encodes the target for the hub's choose-backup route.
func (t Target) Query() url.Values {
	q := url.Values{}
	if !t.Time.IsZero() {
		q.Set("target-time", t.Time.Format(time.RFC3339Nano))
	}
	if t.LSN != 0 {
		q.Set("target-lsn", t.LSN.String())
	}
	if t.XID != "" {
		q.Set("target-xid", t.XID)
	}
	if t.Name != "" {
		q.Set("target-name", t.Name)
	}
	if t.Immediate {
		q.Set("target-immediate", "true")
	}
	if t.Exclusive {
		q.Set("target-exclusive", "true")
	}
	if t.TimeLine != "" {
		q.Set("target-timeline", t.TimeLine)
	}
	return q
}

// TargetFromQuery decodes what Query encoded.
func TargetFromQuery(q url.Values) (Target, error) {
	t := Target{XID: q.Get("target-xid"), Name: q.Get("target-name"), TimeLine: q.Get("target-timeline"),
		Immediate: q.Get("target-immediate") == "true", Exclusive: q.Get("target-exclusive") == "true"}
	if s := q.Get("target-time"); s != "" {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return Target{}, fmt.Errorf("target-time: %w", err)
		}
		t.Time = v
	}
	if s := q.Get("target-lsn"); s != "" {
		v, err := walname.ParseLSN(s)
		if err != nil {
			return Target{}, fmt.Errorf("target-lsn: %w", err)
		}
		t.LSN = v
	}
	return t, t.Validate()
}
