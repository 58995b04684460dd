// Package basebackup takes base backups over PostgreSQL's replication
// protocol (BASE_BACKUP, no SSH) and streams each archive straight into the
// repository, compressed, with the server's backup_manifest beside it. A
// backup is checked against its manifest as it streams in (streamCheck), each
// zstd frame of its compressed archives is decoded and compared with its input
// as it is written (frameWriter) and its stored objects are read back by
// digest (checkStored): no second pass decodes the stored backup. The package also verifies stored backups against their
// manifests on demand (Verify) and unpacks them into a data directory.
//
// A backup is usable only once the WAL from its start to its stop position is
// in the catalog: the hub streams WAL itself, so the backup includes none and
// waits for the receiver instead.
package basebackup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/replication"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// Phases of a backup, as Progress reports them.
const (
	PhaseStreaming = "streaming"
	PhaseVerifying = "verifying"
	PhaseWAL       = "waiting for WAL"
)

// Progress is reported while a backup runs.
type Progress struct {
	Phase string
	// Done and Total are bytes; Total is the server's estimate and 0 when unknown.
	Done, Total int64
}

// Options describe one backup.
type Options struct {
	// Server is the configured name; Conninfo how to reach it.
	Server   string
	Conninfo string
	// Repo is the repository (store, working area, catalog).
	Repo *repository.Repository
	// Compression of the stored archives.
	Compression Compression
	// FastCheckpoint asks for an immediate checkpoint instead of a spread one.
	FastCheckpoint bool
	// MaxRate limits the server's sending rate in kB/s (0: unlimited).
	MaxRate int
	// ManifestChecksums is the manifest's checksum algorithm; default CRC32C.
	ManifestChecksums string
	// WALTimeout bounds the wait for the backup's WAL to reach the catalog.
	WALTimeout time.Duration
	// ExpireWait bounds the wait for an expire holding the server's lock
	// (the daemon's hourly round, or the one after another backup) to
	// finish; 0 refuses at once. A backup or snapshot holding it is never
	// waited for: the backup is refused at once, naming the holder.
	ExpireWait time.Duration
	// OnProgress, when set, is called as the backup advances (at most a few
	// times a second).
	OnProgress func(Progress)
	// Log receives the backup's log lines; default slog.Default().
	Log *slog.Logger
}

// LockedError is returned when another process holds the server's lock.
type LockedError struct {
	Server string
	Holder lock.Holder
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("a backup of %s cannot start: the server is locked by %s", e.Server, e.Holder)
}

// expirePoll is how often a backup waiting for an expire tries the lock again.
const expirePoll = 200 * time.Millisecond

// lockServer takes the server's lock for a backup. While an expire holds it,
// it tries again until opts.ExpireWait has passed; any other holder, or an
// expire still there at the end, is a *LockedError.
func lockServer(ctx context.Context, opts Options, log *slog.Logger) (*lock.Lock, error) {
	deadline := time.Now().Add(opts.ExpireWait)
	waiting := false
	for {
		lk, err := opts.Repo.Work.Lock(opts.Server, "backup", "")
		var held *lock.HeldError
		if !errors.As(err, &held) {
			if err == nil && waiting {
				log.Info("the expire has finished; the backup starts")
			}
			return lk, err
		}
		if held.Holder.Command != "expire" || !time.Now().Before(deadline) {
			return nil, &LockedError{Server: opts.Server, Holder: held.Holder}
		}
		if !waiting {
			log.Info("waiting for an expire to finish before the backup starts", "holder", held.Holder.String(),
				"at_most", opts.ExpireWait.String())
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("a backup of %s waited for %s: %w", opts.Server, held.Holder, ctx.Err())
		case <-time.After(expirePoll):
		}
	}
}

// Run takes one base backup. It returns the backup's final catalog row, done
// or failed; a failed backup's files are removed and its row keeps the
// reason, which the returned error also carries. A backup copied and verified
// whose WAL has not reached the catalog within WALTimeout is kept as
// waiting_wal (no error): CompleteWaiting makes it done once the WAL is there. It returns a *LockedError
// (and records nothing) when the server is busy.
func Run(ctx context.Context, opts Options) (catalog.Backup, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.ManifestChecksums == "" {
		opts.ManifestChecksums = "CRC32C"
	}
	log := opts.Log.With("server", opts.Server)
	auto := opts.Compression.Where == "auto"
	opts.Compression = opts.Compression.resolve(opts.MaxRate)
	if !auto && opts.Compression.on() == "server" && opts.MaxRate > 0 {
		log.Warn("with compression on the server, max_rate limits the compressed bytes it sends, not the data it reads",
			"max_rate_kB_s", opts.MaxRate)
	}
	srv, err := opts.Repo.Catalog.EnsureServer(ctx, opts.Server)
	if err != nil {
		return catalog.Backup{}, err
	}
	lk, err := lockServer(ctx, opts, log)
	if err != nil {
		return catalog.Backup{}, err
	}
	defer lk.Release()
	if _, err := ReapInterrupted(ctx, opts.Repo, opts.Server); err != nil {
		return catalog.Backup{}, err
	}
	b, err := opts.Repo.NewBackup(ctx, opts.Server, "", catalog.Backup{ServerID: srv.ID, Kind: catalog.KindBase,
		Compression: opts.Compression.Method})
	if err != nil {
		return catalog.Backup{}, err
	}
	id := b.ID
	if err := lk.Update(-1, "backup "+id); err != nil {
		return catalog.Backup{}, err
	}
	log = log.With("backup", id)
	log.Info("backup started", "checkpoint", checkpointName(opts.FastCheckpoint), "compression", opts.Compression.Method,
		"compressed_on", opts.Compression.on())

	r := &run{opts: opts, log: log, lock: lk, backup: b, server: srv, hubIfRefused: auto}
	err = r.take(ctx)
	var late *WALLateError
	if errors.As(err, &late) && ctx.Err() == nil {
		// The copy is complete and verified; only the WAL is late (a lagging
		// receiver). Keep it: it becomes done when the WAL arrives.
		r.backup.State, r.backup.Reason = catalog.StateWaitingWAL, "waiting for WAL: "+late.Error()
		r.backup.FinishedAt = time.Now().UTC()
		if err := opts.Repo.StoreBackupInfo(ctx, opts.Server, r.backup); err != nil {
			return r.fail(err)
		}
		if err := opts.Repo.Catalog.UpdateBackup(ctx, r.backup); err != nil {
			return r.fail(err)
		}
		log.Warn("backup copied and verified, waiting for its WAL: it becomes done when the WAL reaches the hub",
			"missing", late.Missing, "start_lsn", r.backup.StartLSN, "stop_lsn", r.backup.StopLSN)
		return r.backup, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
		return r.fail(err)
	}
	r.backup.FinishedAt = time.Now().UTC()
	if b, err = opts.Repo.FinishBackup(ctx, opts.Server, r.backup); err != nil {
		return r.fail(err)
	}
	log.Info("backup done", "start_lsn", b.StartLSN, "stop_lsn", b.StopLSN, "timeline", b.StopTLI,
		"size", b.OriginalSize, "stored", b.StoredSize, "duration", b.FinishedAt.Sub(b.StartedAt).Round(time.Millisecond),
		"stream", r.streamTime.Round(time.Millisecond), "verify", r.verifyTime.Round(time.Millisecond),
		"wal_wait", r.walTime.Round(time.Millisecond))
	return b, nil
}

func checkpointName(fast bool) string {
	if fast {
		return "fast"
	}
	return "spread"
}

// run is the state of one backup in progress.
type run struct {
	opts   Options
	log    *slog.Logger
	lock   *lock.Lock
	backup catalog.Backup
	server catalog.Server
	// hubIfRefused: where to compress was left to the backup, so the hub
	// compresses when the server's build cannot.
	hubIfRefused bool

	streamTime, verifyTime, walTime time.Duration
}

// fail records the backup as failed with err as the reason and removes its
// files. It runs even when ctx was cancelled (an interrupted backup).
func (r *run) fail(cause error) (catalog.Backup, error) {
	b, err := r.opts.Repo.FailBackup(r.backup, cause.Error())
	if err != nil {
		r.log.Error("record failed backup", "err", err)
	}
	r.backup = b
	r.log.Error("backup failed", "reason", b.Reason)
	return b, fmt.Errorf("backup %s of %s failed: %w", b.ID, r.opts.Server, cause)
}

// stream runs BASE_BACKUP on conn and stores and checks what it sends. When
// the choice of where to compress was left to the backup and the server's
// build cannot compress with zstd, which it says before sending anything,
// the hub compresses instead, on the same connection.
func (r *run) stream(ctx context.Context, conn *pgconn.PgConn) error {
	for {
		check, err := newStreamCheck(r.opts.ManifestChecksums)
		if err != nil {
			return fmt.Errorf("manifest checksums: %w", err)
		}
		sink := &sink{ctx: ctx, run: r, check: check, lastReport: time.Now()}
		cmd := command{
			Label: r.backup.Label, FastCheckpoint: r.opts.FastCheckpoint, MaxRate: r.opts.MaxRate,
			ManifestChecksums: r.opts.ManifestChecksums,
		}
		cmd.Compression, cmd.CompressionDetail = r.opts.Compression.serverOptions()
		err = streamBackup(ctx, conn, cmd, sink)
		if err == nil {
			return sink.finish()
		}
		sink.abort(err)
		if r.hubIfRefused && r.opts.Compression.on() == "server" && !sink.begun && serverCannotCompress(err) {
			r.log.Warn("the server cannot compress the backup (its build has no zstd): the hub compresses it; "+
				"backup.compress_on = \"hub\" skips asking", "err", err)
			r.opts.Compression.Where = "hub"
			continue
		}
		if errors.Is(err, ErrChecksumFailure) {
			return fmt.Errorf("the server found invalid page checksums (data corruption) while sending the backup: %w", err)
		}
		return err
	}
}

// serverCannotCompress says whether err is the server's refusal of a
// compression method its build lacks (feature_not_supported, raised when
// BASE_BACKUP sets up its compression, before the backup starts).
func serverCannotCompress(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "0A000" // feature_not_supported
}

// take streams, stores, verifies and waits for the WAL.
func (r *run) take(ctx context.Context) error {
	conn, err := connect(ctx, r.opts.Conninfo)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	id, err := replication.IdentifySystem(ctx, conn)
	if err != nil {
		return err
	}
	segSize, err := replication.SegmentSize(ctx, conn)
	if err != nil {
		return err
	}
	if err := r.opts.Repo.Catalog.BindIdentity(ctx, r.server.ID, id.SystemID, segSize); err != nil {
		return err
	}
	r.server.SystemID, r.server.SegmentSize = id.SystemID, segSize

	started := time.Now()
	if err := r.stream(ctx, conn); err != nil {
		return err
	}
	r.streamTime = time.Since(started)
	r.log.Info("backup streamed", "start_lsn", r.backup.StartLSN, "stop_lsn", r.backup.StopLSN,
		"size", r.backup.OriginalSize, "stored", r.backup.StoredSize, "duration", r.streamTime.Round(time.Millisecond))

	// The files were checked against the manifest as they streamed in. What
	// is left, the read-back of the stored objects and the wait for the WAL,
	// overlap: the receiver stores the last segment while the objects are read.
	walCtx, cancelWAL := context.WithCancel(ctx)
	defer cancelWAL()
	walDone := make(chan error, 1)
	started = time.Now()
	switchWAL := SwitchWALOn(r.opts.Conninfo)
	if r.stopSegmentComplete(ctx, conn) {
		switchWAL = nil
	}
	var walTime time.Duration
	go func() {
		err := WaitWAL(walCtx, WALWait{
			Catalog: r.opts.Repo.Catalog, ServerID: r.server.ID, SegmentSize: r.server.SegmentSize,
			StartLSN: r.backup.StartLSN, StartTLI: r.backup.StartTLI, StopLSN: r.backup.StopLSN, StopTLI: r.backup.StopTLI,
			Timeout: r.opts.WALTimeout, SwitchWAL: switchWAL, Log: r.log,
		})
		walTime = time.Since(started) // read after the receive below
		walDone <- err
	}()
	r.report(Progress{Phase: PhaseVerifying})
	err = checkStored(ctx, RepoOpener(r.opts.Repo, r.backup), r.backup)
	r.verifyTime = time.Since(started)
	if err != nil {
		cancelWAL()
		<-walDone
		return fmt.Errorf("the repository does not give back what the backup stored: %w", err)
	}
	r.log.Info("stored objects read back", "files", len(r.backup.Files), "stored", r.backup.StoredSize,
		"duration", r.verifyTime.Round(time.Millisecond))
	r.report(Progress{Phase: PhaseWAL})
	err = <-walDone
	r.walTime = walTime
	return err
}

// stopSegmentComplete says whether the server has already completed the WAL
// segment that holds the backup's stop position, so that no WAL switch is
// needed for the receiver to store it. A primary ends every backup with a
// switch of its own (do_pg_backup_stop), which it flushes before BASE_BACKUP
// returns: a pg_switch_wal() after that would only cut another, partly empty
// segment when the server is busy. A standby cannot switch, and completes the
// segment when its primary does. The server's flushed position comes from
// IDENTIFY_SYSTEM on the backup's own connection; when that fails, the answer
// is no (and the caller switches, as a fallback).
func (r *run) stopSegmentComplete(ctx context.Context, conn *pgconn.PgConn) bool {
	id, err := replication.IdentifySystem(ctx, conn)
	if err != nil {
		r.log.Debug("could not read the server's WAL position after the backup", "err", err)
		return false
	}
	stopSeg := walname.SegmentOf(r.backup.StopLSN-1, r.server.SegmentSize)
	complete := id.TimeLine == r.backup.StopTLI && id.XLogPos >= walname.SegmentStart(stopSeg+1, r.server.SegmentSize)
	r.log.Debug("server WAL position after the backup", "flushed", id.XLogPos, "timeline", id.TimeLine,
		"stop_segment_complete", complete)
	return complete
}

// report passes progress on to the caller and to the lock, for status.
func (r *run) report(p Progress) {
	if r.opts.OnProgress != nil {
		r.opts.OnProgress(p)
	}
	pct := -1.0
	if p.Phase == PhaseStreaming && p.Total > 0 {
		pct = min(100*float64(p.Done)/float64(p.Total), 99)
	}
	if err := r.lock.Update(pct, "backup "+r.backup.ID+", "+p.Phase); err != nil {
		r.log.Warn("update lock", "err", err)
	}
}

// sink receives the BASE_BACKUP stream and writes each archive into the
// repository as it arrives.
type sink struct {
	ctx     context.Context
	run     *run
	total   int64
	cur     *archiveWriter
	curFile catalog.BackupFile
	// head keeps the start of base.tar, where backup_label and tablespace_map are.
	head     bytes.Buffer
	inBase   bool
	manifest bytes.Buffer
	// check follows every archive's tar stream, to check it against the
	// manifest once that has arrived.
	check      *streamCheck
	checked    Checked
	lastReport time.Time
	// begun is set once the server has sent the backup's start position.
	begun bool
}

// headLimit bounds how much of base.tar is kept to read backup_label and tablespace_map.
const headLimit = 1 << 20

func (s *sink) Start(lsn walname.LSN, tli walname.TimeLine, tablespaces []Tablespace) error {
	b := &s.run.backup
	b.StartLSN, b.StartTLI = lsn, tli
	s.begun = true
	for _, ts := range tablespaces {
		s.total += ts.Size
	}
	s.run.log.Info("backup start position", "start_lsn", lsn, "timeline", tli, "tablespaces", len(tablespaces)-1,
		"estimated_size", s.total)
	// Record the start position at once, so an interrupted backup shows it.
	return s.run.opts.Repo.Catalog.UpdateBackup(s.ctx, *b)
}

func (s *sink) NewArchive(name, location string) error {
	if err := s.closeArchive(); err != nil {
		return err
	}
	c := s.run.opts.Compression
	onServer := c.on() == "server"
	if onServer {
		// The server names the archives it compressed "base.tar.zst".
		plain, ok := strings.CutSuffix(name, storage.Extension(c.Method))
		if !ok {
			return fmt.Errorf("archive %s: asked for archives compressed by the server with %s, got another name", name, c.Method)
		}
		name = plain
	}
	oid, err := tablespaceOfArchive(name)
	if err != nil {
		return err
	}
	if (oid == 0) != (location == "") {
		return fmt.Errorf("archive %s comes with tablespace location %q", name, location)
	}
	s.curFile = catalog.BackupFile{Name: storedName(name, c.Method), Tablespace: oid, Location: location, Compression: c.Method,
		CompressedOn: c.on(), KeyID: s.run.opts.Repo.KeyID()}
	if onServer {
		s.cur, err = newServerArchiveWriter(s.ctx, s.run.opts.Repo, s.run.backup, s.curFile.Name, s.plain)
	} else {
		s.cur, err = newArchiveWriter(s.ctx, s.run.opts.Repo, s.run.backup, s.curFile.Name, c)
	}
	if err != nil {
		return fmt.Errorf("store %s: %w", s.curFile.Name, err)
	}
	if err := s.check.startArchive(name, oid); err != nil {
		return err
	}
	s.inBase = oid == 0
	s.run.log.Debug("archive started", "archive", name, "location", location)
	return nil
}

func (s *sink) Data(p []byte) error {
	if s.cur == nil {
		return errors.New("BASE_BACKUP sent data before any archive")
	}
	if _, err := s.cur.Write(p); err != nil {
		return fmt.Errorf("store %s: %w", s.curFile.Name, err)
	}
	if s.cur.inflate != nil {
		return nil // its decoder hands the tar stream to plain
	}
	return s.plain(p)
}

// plain takes the current archive's tar stream, in order.
func (s *sink) plain(p []byte) error {
	if s.inBase && s.head.Len() < headLimit {
		s.head.Write(p[:min(len(p), headLimit-s.head.Len())])
	}
	return s.check.write(p)
}

func (s *sink) closeArchive() error {
	if s.cur == nil {
		return nil
	}
	a := s.cur
	s.cur = nil
	if err := a.Close(s.ctx); err != nil {
		return fmt.Errorf("store %s: %w", s.curFile.Name, err)
	}
	f := s.curFile
	f.Size, f.StoredSize, f.SHA256Stored = a.original, a.stored, a.SHA256()
	b := &s.run.backup
	b.Files = append(b.Files, f)
	b.OriginalSize += f.Size
	b.StoredSize += f.StoredSize
	return nil
}

func (s *sink) Manifest() error { return s.closeArchive() }

func (s *sink) ManifestData(p []byte) error {
	s.manifest.Write(p)
	return nil
}

func (s *sink) Progress(done int64) {
	if time.Since(s.lastReport) < 500*time.Millisecond {
		return
	}
	s.lastReport = time.Now()
	s.run.report(Progress{Phase: PhaseStreaming, Done: done, Total: max(s.total, done)})
}

func (s *sink) End(lsn walname.LSN, tli walname.TimeLine) error {
	s.run.backup.StopLSN, s.run.backup.StopTLI = lsn, tli
	return nil
}

// abort removes what an unfinished archive wrote.
func (s *sink) abort(cause error) {
	if s.cur != nil {
		s.cur.Abort()
		s.cur = nil
	}
}

// finish closes the last archive, stores the manifest and reads backup_label
// and tablespace_map from the head of base.tar.
func (s *sink) finish() error {
	if err := s.closeArchive(); err != nil {
		return err
	}
	b := &s.run.backup
	s.run.report(Progress{Phase: PhaseStreaming, Done: b.OriginalSize, Total: b.OriginalSize})
	if s.manifest.Len() == 0 {
		return errors.New("the server sent no backup manifest")
	}
	m, err := ParseManifest(s.manifest.Bytes())
	if err != nil {
		return err
	}
	started := time.Now()
	if s.checked, err = s.check.check(m); err != nil {
		return fmt.Errorf("verification against the manifest: %w", err)
	}
	if err := checkWALRanges(m, *b); err != nil {
		return fmt.Errorf("verification against the manifest: %w", err)
	}
	s.run.log.Info("backup verified against its manifest while streaming", "files", s.checked.Files, "bytes", s.checked.Bytes,
		"duration", time.Since(started).Round(time.Millisecond))
	n, err := s.storeManifest()
	if err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	sum := sha256.Sum256(s.manifest.Bytes())
	b.Files = append(b.Files, catalog.BackupFile{Name: ManifestName, Size: n, StoredSize: n, Compression: "none",
		KeyID: s.run.opts.Repo.KeyID(), SHA256Stored: hex.EncodeToString(sum[:])})
	b.StoredSize += n
	label, tsmap, err := readLabel(s.head.Bytes())
	if err != nil {
		return err
	}
	b.BackupLabel, b.TablespaceMap = label, tsmap
	return nil
}

func (s *sink) storeManifest() (int64, error) {
	w, err := s.run.opts.Repo.CreateBackupFile(s.ctx, s.run.backup, ManifestName)
	if err != nil {
		return 0, err
	}
	defer w.Abort()
	if _, err := w.Write(s.manifest.Bytes()); err != nil {
		return 0, err
	}
	return w.Commit(s.ctx)
}

// readLabel reads backup_label and tablespace_map from the first entries of
// base.tar.
func readLabel(head []byte) (label, tablespaceMap string, err error) {
	tr := tar.NewReader(bytes.NewReader(head))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		name := strings.TrimPrefix(h.Name, "./")
		if name != "backup_label" && name != "tablespace_map" {
			break
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			break
		}
		if name == "backup_label" {
			label = string(data)
		} else {
			tablespaceMap = string(data)
		}
	}
	if label == "" {
		return "", "", errors.New("base.tar does not begin with backup_label")
	}
	return label, tablespaceMap, nil
}
