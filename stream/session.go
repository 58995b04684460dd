package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/replication"
	"github.com/walhub/walhub/walname"
)

// archiveQueue is how many complete segments may wait for compression while
// receiving goes on.
const archiveQueue = 4

// session is one replication connection, from connect to failure or stop.
type session struct {
	r       *Receiver
	conn    *pgconn.PgConn
	srv     catalog.Server
	segSize uint64
	arch    *archiver
	w       *walWriter
	// reported is the flush position last sent to the server.
	reported walname.LSN
	// resume is set when streaming resumes inside the newest .partial.
	resume *partialResume
	// slotFloor is the slot's restart_lsn as the session found it: a
	// flush position below it is not reported (see report).
	slotFloor walname.LSN
	// began is the end of the WAL the hub held when the session began;
	// stored is set once the session has made WAL beyond it durable.
	began  walname.LSN
	stored bool
}

// session connects, works out where to resume and streams until an error or
// ctx ends. stored tells whether it made new WAL durable: only such a session
// counts as healthy and restarts the backoff. One that streams but cannot
// store (a full disk) fails the same way at every try, and must not be
// retried every second, each time fetching the same WAL again.
func (r *Receiver) session(ctx context.Context) (stored bool, err error) {
	srvCfg := r.o.Server
	r.update(true, func(s *State) { s.State = "connecting" })
	srv, err := r.o.Repo.Catalog.EnsureServer(ctx, srvCfg.Name)
	if err != nil {
		return false, err
	}
	conn, err := r.connect(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		conn.Close(closeCtx)
		cancel()
	}()
	s := &session{r: r, conn: conn, srv: srv}
	defer func() { stored = s.stored }()
	store, start, tli, err := s.prepare(ctx)
	if err != nil {
		return false, err
	}
	s.arch = startArchiver(context.WithoutCancel(ctx), store, archiveQueue, walname.SegmentOf(start, s.segSize))
	defer func() {
		if ferr := s.arch.finish(); ferr != nil && err == nil {
			err = ferr
		}
	}()
	for {
		if s.resume != nil {
			r.log.Info("starting replication", "slot", srvCfg.Slot, "start", start, "timeline", tli,
				"resuming_in", s.resume.Partial.Name+".partial", "offset", walname.SegmentOffset(start, s.segSize),
				"held_to", s.resume.End)
		} else {
			r.log.Info("starting replication", "slot", srvCfg.Slot, "start", start, "timeline", tli)
		}
		s.w, err = newWALWriter(r.files, s.segSize, tli, start, s.resume, s.arch.add)
		s.resume = nil
		if err != nil {
			return false, err
		}
		startCtx, cancel := context.WithTimeout(ctx, commandTimeout)
		err = startStreaming(startCtx, conn, srvCfg.Slot, start, tli)
		cancel()
		var end *timelineEnd
		switch {
		case errors.As(err, &end):
			// start was the very end of timeline tli.
		case isWALRemoved(err):
			return false, &walRemovedError{TimeLine: tli, At: start, err: err}
		case err != nil:
			return false, err
		default:
			r.update(true, func(st *State) {
				st.State, st.LastError, st.ConnectedSince, st.TimeLine = "streaming", "", time.Now().UTC(), tli
			})
			if r.m != nil {
				r.m.conn.Set(1)
			}
			end, err = s.copyLoop(ctx)
			if err != nil {
				s.w.close(false)
				if isWALRemoved(err) {
					return false, &walRemovedError{TimeLine: tli, At: s.w.pos, err: err}
				}
				return false, err
			}
			if err := s.w.endTimeline(); err != nil {
				return false, err
			}
		}
		r.log.Info("timeline switch", "timeline", tli, "ends_at", end.SwitchLSN, "next_timeline", end.NextTimeLine)
		histCtx, cancel := context.WithTimeout(ctx, commandTimeout)
		_, err = s.storeHistories(histCtx, end.NextTimeLine)
		cancel()
		if err != nil {
			return false, err
		}
		tli, start = end.NextTimeLine, walname.AlignDown(end.SwitchLSN, s.segSize)
	}
}

// prepare checks the server's identity, the slot and the repository, and
// works out where and on which timeline streaming starts.
func (s *session) prepare(ctx context.Context) (*segmentStore, walname.LSN, walname.TimeLine, error) {
	cfg, conn := s.r.o.Server, s.conn
	setupCtx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	id, err := replication.IdentifySystem(setupCtx, conn)
	if err != nil {
		return nil, 0, 0, err
	}
	if s.segSize, err = replication.SegmentSize(setupCtx, conn); err != nil {
		return nil, 0, 0, err
	}
	if err := s.r.o.Repo.Catalog.BindIdentity(setupCtx, s.srv.ID, id.SystemID, s.segSize); err != nil {
		if errors.Is(err, catalog.ErrIdentityMismatch) {
			return nil, 0, 0, &failedError{fmt.Errorf("refusing to stream from %s: %w", cfg.Name, err)}
		}
		return nil, 0, 0, err
	}
	s.r.update(true, func(st *State) {
		st.SystemID, st.SegmentSize, st.TimeLine = id.SystemID, s.segSize, id.TimeLine
	})
	slot, err := s.ensureSlot(setupCtx, false)
	if err != nil {
		return nil, 0, 0, err
	}
	s.srv.SystemID, s.srv.SegmentSize = id.SystemID, s.segSize
	store, err := newSegmentStore(s.r.o.Repo, s.srv, cfg.Compression, cfg.CompressionLevel, s.r.segmentStored)
	if err != nil {
		return nil, 0, 0, err
	}
	// An encrypted repository keeps no plaintext copy of a stored segment
	// in the working area: its .partial is removed, never kept as a spare.
	if s.r.o.Repo.KeyID() == "" {
		store.retire = s.r.files.retire
	}
	start, held, resume, err := s.resumePoint(setupCtx, store)
	if err != nil {
		return nil, 0, 0, err
	}
	if start == 0 {
		start = slot.RestartLSN
		if start == 0 {
			start = id.XLogPos
		}
		start = walname.AlignDown(start, s.segSize)
		held = start
	}
	history, err := s.storeHistories(setupCtx, id.TimeLine)
	if err != nil {
		return nil, 0, 0, err
	}
	tli := walname.TimeLineOf(history, id.TimeLine, start)
	if s.r.walRemoved != nil {
		if start, err = s.skipRemovedWAL(setupCtx, tli, start, held); err != nil {
			return nil, 0, 0, err
		}
		s.r.walRemoved = nil
	}
	s.began = max(held, start)
	// Resume inside the newest .partial when the server's history puts all
	// it holds on its timeline; otherwise its segment is received again from
	// its start (on the timeline the history says).
	if resume != nil && resume.Partial.TimeLine == tli && start == walname.SegmentStart(resume.Partial.SegNo, s.segSize) &&
		walname.TimeLineOf(history, id.TimeLine, resume.End) == tli {
		s.resume, start = resume, resume.Page
	}
	return store, start, tli, nil
}

// receiveBuffer is the read buffer of the replication connection. While the
// receiver catches up, the walsender's messages (up to 128 kB of WAL each)
// wait in the socket: read in pieces of up to 4 MiB, they take a system call
// every few messages instead of two or three per message (pgproto3 alone
// reads 8 kB, then the rest of each large message). On bench/receive.sh with
// zstd that took CPU per MB from 2.98 to 2.67 ms (1 MiB: 2.81; medians of
// 5 interleaved trials), for 4 MiB of memory per server.
const receiveBuffer = 4 << 20

// connOptions are the options of the receiver's replication connections.
func (r *Receiver) connOptions() replication.Options {
	return replication.Options{ApplicationName: r.o.Server.ApplicationName, ReadBufferSize: receiveBuffer}
}

// connect opens a physical replication connection, named with the
// server's application_name (what synchronous_standby_names lists).
func (r *Receiver) connect(ctx context.Context) (*pgconn.PgConn, error) {
	connectCtx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	conn, err := replication.Connect(connectCtx, r.o.Server.Conninfo, r.connOptions())
	switch {
	case replication.IsBadConninfo(err):
		return nil, &failedError{fmt.Errorf("conninfo of %s: %w", r.o.Server.Name, err)}
	case err != nil:
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// ensureSlot checks the slot and creates it when missing (if allowed). A slot
// that was invalidated (or that the caller knows is lost) is dropped and
// created again, loudly: the WAL it no longer held may be gone, which the
// first START_REPLICATION will tell.
func (s *session) ensureSlot(ctx context.Context, lost bool) (replication.Slot, error) {
	cfg := s.r.o.Server
	slot, err := replication.ReadSlot(ctx, s.conn, cfg.Slot)
	if err != nil {
		return replication.Slot{}, err
	}
	slot.Lost = slot.Lost || (lost && slot.Exists)
	switch {
	case slot.Lost:
		s.r.log.Error("replication slot was invalidated (max_slot_wal_keep_size?): the server may have removed WAL the hub "+
			"had not received; recreating the slot", "slot", cfg.Slot)
		if err := replication.DropSlot(ctx, s.conn, cfg.Slot); err != nil {
			return replication.Slot{}, err
		}
	case slot.Exists:
		s.slotFloor = slot.RestartLSN
		return slot, nil
	case !*cfg.CreateSlot:
		return replication.Slot{}, &failedError{fmt.Errorf("replication slot %s does not exist on the server and create_slot is false: "+
			"create it with SELECT pg_create_physical_replication_slot('%s', true)", cfg.Slot, cfg.Slot)}
	}
	if err := replication.CreateSlot(ctx, s.conn, cfg.Slot); err != nil {
		return replication.Slot{}, err
	}
	s.r.log.Info("created replication slot", "slot", cfg.Slot)
	slot, err = replication.ReadSlot(ctx, s.conn, cfg.Slot)
	s.slotFloor = slot.RestartLSN
	return slot, err
}

// resumePoint removes temporary files and stores the complete segments a
// crash left as .partial files, then returns where streaming resumes: the
// segment after the newest stored one, or the start of the newest .partial's
// segment, with resume saying how much of that .partial is kept (see
// recoverPartial; prepare decides whether to resume inside it). held is the
// end of the WAL the hub holds there. Both are 0 when the repository holds
// nothing for the server.
func (s *session) resumePoint(ctx context.Context, store *segmentStore) (start, held walname.LSN, resume *partialResume, err error) {
	// The segments stored so far are contiguous up to the last one (a gap is
	// recorded, never left): only what follows it can need attention.
	var from walname.SegNo
	last, err := s.r.o.Repo.Catalog.LastSegment(ctx, s.srv.ID)
	switch {
	case err == nil:
		from = last.SegNo
	case !errors.Is(err, catalog.ErrNotFound):
		return 0, 0, nil, err
	}
	s.r.files.dropSpares()
	partials, err := s.r.o.Repo.Work.Partials(s.srv.Name, s.segSize, from)
	if err != nil {
		return 0, 0, nil, err
	}
	// Every .partial but the newest either holds a whole fsynced segment (the
	// next one was created only after it was complete) or is the end of a
	// timeline that was left (kept as it is, like PostgreSQL's archiver does).
	for i := 0; i+1 < len(partials); i++ {
		if uint64(partials[i].Size) == s.segSize {
			p := partials[i]
			if err := store.store(ctx, completedSegment{TimeLine: p.TimeLine, SegNo: p.SegNo, Name: p.Name, Partial: p.Path}); err != nil {
				return 0, 0, nil, err
			}
		}
	}
	last, err = s.r.o.Repo.Catalog.LastSegment(ctx, s.srv.ID)
	switch {
	case err == nil:
		start = walname.SegmentStart(last.SegNo+1, s.segSize)
		held = start
	case !errors.Is(err, catalog.ErrNotFound):
		return 0, 0, nil, err
	}
	if n := len(partials); n > 0 {
		newest := partials[n-1]
		if at := walname.SegmentStart(newest.SegNo, s.segSize); at >= start {
			res, err := recoverPartial(ctx, s.r.o.Repo.Catalog, s.srv.ID, s.segSize, newest)
			if err != nil {
				return 0, 0, nil, err
			}
			if end := walname.SegmentStart(newest.SegNo+1, s.segSize); res.End == end {
				// Proven whole to its last byte (its last record ends at
				// its end; a crash came before the next .partial was
				// made), and fsynced: complete. Streaming starts after it
				// (inside it there is nothing left to resume).
				seg := completedSegment{TimeLine: newest.TimeLine, SegNo: newest.SegNo, Name: newest.Name, Partial: newest.Path}
				if err := store.store(ctx, seg); err != nil {
					return 0, 0, nil, err
				}
				start, held = end, end
			} else {
				start, held, resume = at, res.End, &res
			}
		}
	}
	s.r.files.setReady()
	return start, held, resume, nil
}

// storeHistories makes sure the history files of timelines 2 to tli are
// stored and cataloged, and returns the parsed history of tli.
func (s *session) storeHistories(ctx context.Context, tli walname.TimeLine) ([]walname.HistoryEntry, error) {
	var content []byte
	for t := walname.TimeLine(2); t <= tli; t++ {
		row, err := s.r.o.Repo.Catalog.TimeLine(ctx, s.srv.ID, t)
		if err == nil {
			content = row.History
			continue
		}
		if !errors.Is(err, catalog.ErrNotFound) {
			return nil, err
		}
		if content, err = timelineHistory(ctx, s.conn, t); err != nil {
			return nil, err
		}
		if _, err := walname.ParseHistory(content); err != nil {
			return nil, fmt.Errorf("history of timeline %d from the server: %w", t, err)
		}
		if err := s.r.o.Repo.StoreHistory(ctx, s.srv, t, content); err != nil {
			return nil, err
		}
		s.r.log.Info("stored timeline history", "timeline", t)
	}
	return walname.ParseHistory(content)
}

// skipRemovedWAL is called when the server said WAL from start is gone. It
// records the gap from held (the end of what the hub has) to the oldest WAL
// the slot holds, and returns that as the new start.
func (s *session) skipRemovedWAL(ctx context.Context, tli walname.TimeLine, start, held walname.LSN) (walname.LSN, error) {
	cfg := s.r.o.Server
	slot, err := replication.ReadSlot(ctx, s.conn, cfg.Slot)
	if err != nil {
		return 0, err
	}
	next := walname.AlignDown(slot.RestartLSN, s.segSize)
	if slot.Exists && !slot.Lost && next <= start {
		// The slot claims WAL the server has removed: it is lost, though no
		// checkpoint has marked it so yet (pg_replication_slots says "lost").
		slot.Lost = true
	}
	if slot.Lost || !slot.Exists {
		if slot, err = s.ensureSlot(ctx, true); err != nil {
			return 0, err
		}
		next = walname.AlignDown(slot.RestartLSN, s.segSize)
	}
	if next <= start {
		return 0, &failedError{fmt.Errorf("the server no longer has the WAL at %s, and the new slot %s holds WAL from %s only (%v)",
			start, cfg.Slot, slot.RestartLSN, s.r.walRemoved)}
	}
	if held < start || held > next {
		held = start
	}
	gap := catalog.Gap{TimeLine: tli, StartLSN: held, EndLSN: next,
		Reason: s.r.walRemoved.Error(), DetectedAt: time.Now()}
	if err := s.r.o.Repo.RecordGap(ctx, s.srv, gap); err != nil {
		return 0, err
	}
	s.r.log.Error("GAP IN THE WAL ARCHIVE: WAL the server removed before the hub received it is lost; "+
		"recovery cannot cross this gap, take a new base backup", "timeline", tli, "from", held, "to", next)
	return next, nil
}

// copyLoop receives WAL until the timeline ends (it returns where the next
// one starts), the server goes away, or ctx is cancelled.
func (s *session) copyLoop(ctx context.Context) (*timelineEnd, error) {
	cfg := s.r.o.Server
	s.reported = 0
	nextStatus := time.Now()
	for {
		if err := s.arch.failure(); err != nil {
			return nil, err
		}
		if !time.Now().Before(nextStatus) {
			if err := s.flushAndReport(); err != nil {
				return nil, err
			}
			s.r.publish()
			nextStatus = time.Now().Add(cfg.StatusInterval.Duration)
		}
		readCtx, cancel := context.WithDeadline(ctx, nextStatus)
		msg, err := s.conn.ReceiveMessage(readCtx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, s.stop()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return nil, fmt.Errorf("receive from server: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.handleCopyData(m.Data); err != nil {
				return nil, err
			}
		case *pgproto3.CopyDone:
			// The timeline we stream has ended (or the server is going away).
			if err := s.flushAndReport(); err != nil {
				return nil, err
			}
			endCtx, cancel := context.WithTimeout(ctx, commandTimeout)
			defer cancel()
			return finishCopy(endCtx, s.conn)
		case *pgproto3.ErrorResponse:
			return nil, fmt.Errorf("server: %w", pgconn.ErrorResponseToPgError(m))
		}
	}
}

func (s *session) handleCopyData(data []byte) error {
	if len(data) == 0 {
		return errors.New("empty CopyData message from the server")
	}
	switch data[0] {
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return err
		}
		if walname.LSN(xld.WALStart) != s.w.pos {
			return fmt.Errorf("server sent WAL from %s, expected %s", walname.LSN(xld.WALStart), s.w.pos)
		}
		if err := s.w.write(xld.WALData); err != nil {
			return err
		}
		s.noteServer(walname.LSN(xld.ServerWALEnd))
		if s.r.m != nil {
			s.r.m.bytes.Add(float64(len(xld.WALData)))
			s.r.m.receivedLSN.Set(float64(s.w.pos))
		}
		if s.r.o.Server.Synchronous && s.w.pos >= walname.LSN(xld.ServerWALEnd) {
			// A synchronous standby: once it has all the server has flushed,
			// that is made durable and reported at once, for the commits that
			// wait for it. (While it catches up, more follows at once and the
			// segment boundaries report.)
			return s.flushAndReport()
		}
		if s.flushed() > s.reported {
			// A segment was completed (or stored): let the slot advance now.
			return s.report()
		}
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return err
		}
		s.noteServer(walname.LSN(pkm.ServerWALEnd))
		if pkm.ReplyRequested {
			return s.flushAndReport()
		}
	}
	return nil
}

// noteServer records the server's WAL end and the time of its last message.
func (s *session) noteServer(serverLSN walname.LSN) {
	s.r.update(false, func(st *State) {
		st.ServerLSN = max(st.ServerLSN, serverLSN)
		st.ReceivedLSN = s.w.pos
		st.LastMessageAt = time.Now().UTC()
		st.Partial = s.w.partialName()
	})
	if s.r.m != nil {
		s.r.m.serverLSN.Set(float64(serverLSN))
	}
}

// flushAndReport fsyncs what was received and reports it.
func (s *session) flushAndReport() error {
	if s.w.pos > s.w.synced {
		if err := s.w.sync(); err != nil {
			return err
		}
	}
	return s.report()
}

// flushed is the flush position to report: what is fsynced, and, when the
// repository is not on local disk (a bucket), no further than the end of the
// segment that follows the last one stored. The working area holds the
// .partial as durably as pg_receivewal would; but the complete segments that
// wait for their upload hold WAL only the working area has, so while the
// store fails (a bucket out of reach) the slot stops and the primary keeps
// that WAL. With the repository on local disk the working area is the
// repository's file system: what is fsynced is in it.
func (s *session) flushed() walname.LSN {
	if s.r.o.Repo.Store.Features().LocalPaths {
		return s.w.synced
	}
	return min(s.w.synced, walname.SegmentStart(s.arch.storedUpTo()+1, s.segSize))
}

// report sends a status update: written up to pos, flushed up to flushed().
//
// A flush position below the slot's restart_lsn as the session found it is
// sent as 0 (InvalidXLogRecPtr), which the walsender does not apply to the
// slot: a session resumes at a page or segment boundary below what the last
// one reported, and reporting that would move restart_lsn backwards.
// Nothing below the floor needs the report: the previous session reported
// it, after it was fsynced.
func (s *session) report() error {
	flushed := s.flushed()
	sent := flushed
	if sent < s.slotFloor {
		sent = 0
	}
	if err := sendStatus(s.conn, s.w.pos, sent); err != nil {
		return err
	}
	s.reported = flushed
	if flushed > s.began {
		s.stored = true
	}
	s.r.update(false, func(st *State) {
		st.ReceivedLSN, st.FlushedLSN, st.Partial = s.w.pos, flushed, s.w.partialName()
	})
	if s.r.m != nil {
		s.r.m.flushedLSN.Set(float64(flushed))
	}
	return nil
}

// stop ends streaming on cancellation: what was received is fsynced and a
// last status update tells the server so.
func (s *session) stop() error {
	err := s.w.sync()
	if err == nil {
		err = s.report()
	}
	s.w.close(false)
	if err != nil {
		s.r.log.Error("stopping: could not flush and report", "error", err)
	}
	return context.Canceled
}

// segmentStored updates state and metrics after a segment was stored.
func (r *Receiver) segmentStored(seg completedSegment, row catalog.Segment) {
	r.update(true, func(st *State) { st.LastSegment, st.LastSegmentAt = seg.Name, row.ReceivedAt.UTC() })
	if r.m != nil {
		r.m.segments.Inc()
		r.m.lastSegmentAt.Set(float64(row.ReceivedAt.Unix()))
	}
	r.log.Debug("stored segment", "segment", seg.Name, "stored_bytes", row.StoredSize)
}
