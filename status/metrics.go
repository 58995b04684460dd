package status

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/replication"
)

// Collector exposes every configured server's status document and check
// results as Prometheus metrics (on a read-only hub: every server its
// catalog follows, and the catalog refresh). It builds the documents when it is scraped,
// so what Prometheus sees is what `walhub status` and `walhub check` would say
// at that moment; the catalog part costs the same with ten segments or a
// million (it reads the catalog's totals, see catalog.SegmentRanges).
//
// Every metric carries the label server; replication clients add
// application_name. No label takes its values from anything unbounded: check
// names, backup states, lock commands and slot states are fixed sets.
type Collector struct {
	Source Source
	// Config, when set, gives the configuration in force at each scrape (the
	// daemon's, which a reload replaces); else Source.Config is used.
	Config     func() *config.Config
	Thresholds Thresholds
	Log        *slog.Logger
	// ProbeEvery is how long a replication-connection probe (IDENTIFY_SYSTEM,
	// for the "replication connection" check) is reused; default one minute.
	// A receiver that is streaming is proof enough and needs no probe.
	ProbeEvery time.Duration

	mu     sync.Mutex
	probes map[string]cachedProbe
}

type cachedProbe struct {
	probe    Probe
	conninfo string
	at       time.Time
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append([]string{"server"}, labels...), nil)
}

var (
	descStatusUp  = desc("walhub_status_up", "1 when the server's status could be built from the catalog, else 0 (and its other walhub_* status metrics are absent).")
	descCollect   = desc("walhub_status_collect_duration_seconds", "Time taken to build the server's status for this scrape (catalog, PostgreSQL, checks).")
	descPGUp      = desc("walhub_postgres_up", "1 when PostgreSQL answered the status queries, else 0.")
	descPGLSN     = desc("walhub_postgres_current_lsn_bytes", "The server's current WAL position (pg_current_wal_lsn, or the last received on a standby), as a byte position.")
	descRecvRun   = desc("walhub_receiver_running", "1 when the hub's receiver for the server is alive and its state fresh (what walhub status calls running), else 0.")
	descRecvState = desc("walhub_receiver_state", "1 for the receiver's current state (starting, connecting, streaming, waiting, stopped, failed, absent).", "state")
	descRecvLag   = desc("walhub_receiver_lag_bytes", "WAL the server has and the hub does not hold durably: server position minus the durable position.")
	descRecvLagS  = desc("walhub_receiver_lag_seconds", "The server's flush_lag of the hub's replication connection; absent when not reported.")
	descSlotExist = desc("walhub_slot_exists", "1 when the hub's replication slot exists on the server (absent when the server cannot be asked).")
	descSlotAct   = desc("walhub_slot_active", "1 when a connection streams from the hub's slot.")
	descSlotRet   = desc("walhub_slot_retained_bytes", "WAL the hub's slot holds back on the server: current position minus restart_lsn.")
	descSlotSafe  = desc("walhub_slot_safe_wal_size_bytes", "WAL that can still be written before the slot is in danger of invalidation (pg_replication_slots.safe_wal_size); absent with max_slot_wal_keep_size = -1.")
	descSlotStat  = desc("walhub_slot_wal_status", "1 for the slot's wal_status (reserved, extended, unreserved, lost).", "wal_status")
	descRepLag    = desc("walhub_replication_lag_bytes", "A replication client's lag behind the server's current position, by position (sent, write, flush, replay).", "application_name", "position")
	descRepLagS   = desc("walhub_replication_lag_seconds", "A replication client's write_lag, flush_lag or replay_lag as pg_stat_replication reports it.", "application_name", "position")
	descRepStage  = desc("walhub_replication_sync_stage", "A replication client's place on Barman's sync stage ladder: 5 hot standby, 4 2-safe, 3 remote write, 2 WAL sent, 1 1-safe.", "application_name")
	descRepMax    = desc("walhub_replication_sync_stage_max", "The top of the ladder for the client: 5 for a standby, 3 for a WAL streamer.", "application_name")
	descRepInfo   = desc("walhub_replication_client_info", "1 per replication client, with its kind (standby, wal_streamer), state and sync_state.", "application_name", "kind", "state", "sync_state")
	descWALSegs   = desc("walhub_wal_segments", "WAL segments held in the repository.")
	descWALBytes  = desc("walhub_wal_bytes", "WAL held in the repository, uncompressed.")
	descWALStored = desc("walhub_wal_stored_bytes", "WAL held in the repository, as stored (compressed).")
	descWALTLIs   = desc("walhub_wal_timelines", "Timelines with WAL held in the repository.")
	descWALLast   = desc("walhub_wal_last_segment_timestamp_seconds", "When the newest segment in the catalog was stored (Unix time).")
	descWALGaps   = desc("walhub_wal_gaps", "Ranges of WAL missing from the repository (recorded or found), whether harmless or not.")
	descWALBlock  = desc("walhub_wal_blocking_gaps", "Gaps after the oldest backup's start: recovery from the backups cannot cross them.")
	descBackups   = desc("walhub_backups", "Backups in the catalog, by state (done, failed, running, waiting_wal).", "state")
	descBkSize    = desc("walhub_backups_size_bytes", "Size of all done backups, as the server sent them.")
	descBkStored  = desc("walhub_backups_stored_bytes", "Size of all done backups as stored (compressed).")
	descLastEnd   = desc("walhub_backup_last_success_timestamp_seconds", "When the newest done backup finished (Unix time).")
	descLastAge   = desc("walhub_backup_last_success_age_seconds", "How long ago the newest done backup finished.")
	descLastDur   = desc("walhub_backup_last_success_duration_seconds", "How long the newest done backup took.")
	descLastSize  = desc("walhub_backup_last_success_size_bytes", "Size of the newest done backup, as the server sent it.")
	descLastStore = desc("walhub_backup_last_success_stored_bytes", "Size of the newest done backup as stored (compressed).")
	descFailSince = desc("walhub_backup_failures_since_last_success", "Failed backup attempts started after the newest done backup.")
	descLastFail  = desc("walhub_backup_last_failure_timestamp_seconds", "When the newest failed backup started (Unix time).")
	descOpRun     = desc("walhub_operation_running", "1 while the server's lock is held by the operation (backup, expire, snapshot, other).", "operation")
	descOpProg    = desc("walhub_operation_progress_ratio", "How far the running operation has got, 0 to 1; absent when unknown.", "operation")
	descOpSince   = desc("walhub_operation_start_timestamp_seconds", "When the running operation took the lock (Unix time).", "operation")
	descCheck     = desc("walhub_check_status", "The result of each walhub check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.", "check")
	descRecov     = desc("walhub_recoverable", "1 when some backup can be restored with the WAL held (all of its WAL is in the repository), else 0.")
	descRecovEarl = desc("walhub_recoverable_earliest_timestamp_seconds", "The earliest point a restore can reach: when the oldest backup with all its WAL held finished (Unix time).")
	descRecovLate = desc("walhub_recoverable_latest_timestamp_seconds", "The latest point a restore can reach: the newest commit or abort in the WAL held without a gap after a backup (Unix time); absent when none is indexed.")
	descRecovLSN  = desc("walhub_recoverable_latest_lsn_bytes", "The end of the WAL held without a gap after a backup: how far a restore can replay, as a byte position.")
	descRepoSize  = prometheus.NewDesc("walhub_repository_size_bytes", "Size of the file system that holds the repository.", nil, nil)
	descRepoFree  = prometheus.NewDesc("walhub_repository_free_bytes", "Space available to walhub on the repository's file system.", nil, nil)
	descRefInt    = prometheus.NewDesc("walhub_refresh_interval_seconds", "A read-only hub's refresh_interval: how often its catalog follows the repository another hub writes. Absent on a writing hub.", nil, nil)
	descRefOK     = prometheus.NewDesc("walhub_refresh_last_success_timestamp_seconds", "When a read-only hub's last successful catalog refresh ended (Unix time); absent when none has.", nil, nil)
	descRefTry    = prometheus.NewDesc("walhub_refresh_last_attempt_timestamp_seconds", "When a read-only hub's last catalog refresh ended, successful or not (Unix time).", nil, nil)
	descRefFail   = prometheus.NewDesc("walhub_refresh_failures", "Failed catalog refreshes of a read-only hub since its last successful one.", nil, nil)
)

var allDescs = []*prometheus.Desc{descStatusUp, descCollect, descPGUp, descPGLSN, descRecvRun, descRecvState,
	descRecvLag, descRecvLagS, descSlotExist, descSlotAct, descSlotRet, descSlotSafe, descSlotStat,
	descRepLag, descRepLagS, descRepStage, descRepMax, descRepInfo, descWALSegs, descWALBytes, descWALStored, descWALTLIs,
	descWALLast, descWALGaps, descWALBlock, descBackups, descBkSize, descBkStored, descLastEnd, descLastAge, descLastDur,
	descLastSize, descLastStore, descFailSince, descLastFail, descOpRun, descOpProg, descOpSince, descCheck,
	descRecov, descRecovEarl, descRecovLate, descRecovLSN,
	descRepoSize, descRepoFree, descRefInt, descRefOK, descRefTry, descRefFail}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// collectTimeout bounds one scrape's work per server (Prometheus's default
// scrape timeout is 10 s).
const collectTimeout = 8 * time.Second

// Collect builds the status of every configured server (or, on a read-only
// hub, followed one), in parallel, and sends its metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	src := c.Source
	if c.Config != nil {
		src.Config = c.Config()
	}
	var servers []string
	for _, srv := range src.Config.Servers {
		servers = append(servers, srv.Name)
	}
	if src.Config.ReadOnly {
		// A read-only hub's servers are those its catalog follows.
		followed, err := src.Catalog.Servers(ctx)
		if err != nil {
			c.log().Warn("metrics: cannot list the servers the catalog follows", "err", err)
		}
		for _, srv := range followed {
			servers = append(servers, srv.Name)
		}
	}
	docs := make([]*Document, len(servers))
	var wg sync.WaitGroup
	for i := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			docs[i] = c.collectServer(ctx, src, servers[i], ch)
		}()
	}
	wg.Wait()
	if src.Config.ReadOnly {
		refreshMetrics(readRefresh(src.Work, src.Config.RefreshInterval.Duration, time.Now()), ch)
	}
	// The repository is one file system for every server: sent once.
	for _, doc := range docs {
		if doc != nil && doc.Repository.Error == "" {
			ch <- gauge(descRepoSize, float64(doc.Repository.TotalBytes))
			ch <- gauge(descRepoFree, float64(doc.Repository.FreeBytes))
			break
		}
	}
}

// refreshMetrics sends a read-only hub's catalog refresh metrics (hub-wide:
// one refresh covers every server).
func refreshMetrics(rf *Refresh, ch chan<- prometheus.Metric) {
	ch <- gauge(descRefInt, rf.IntervalSeconds)
	ch <- gauge(descRefFail, float64(rf.Failures))
	if !rf.LastSuccessAt.IsZero() {
		ch <- gauge(descRefOK, unixSeconds(rf.LastSuccessAt))
	}
	if !rf.LastAttemptAt.IsZero() {
		ch <- gauge(descRefTry, unixSeconds(rf.LastAttemptAt))
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// collectServer builds one server's document and checks and sends their
// metrics; it returns the document (nil when it could not be built).
func (c *Collector) collectServer(ctx context.Context, src Source, name string, ch chan<- prometheus.Metric) *Document {
	start := time.Now()
	doc, err := src.Build(ctx, name)
	if err != nil {
		c.log().Warn("metrics: cannot build status", "server", name, "err", err)
		ch <- gauge(descStatusUp, 0, name)
		return nil
	}
	var results []Result
	if doc.ReadOnly {
		results = Evaluate(doc, &config.Server{Name: name}, Probe{}, c.thresholds())
	} else {
		srv, err := src.Config.Server(name)
		if err != nil {
			ch <- gauge(descStatusUp, 0, name)
			return nil
		}
		results = Evaluate(doc, srv, c.probe(ctx, src, srv, doc), c.thresholds())
	}
	ch <- gauge(descStatusUp, 1, name)
	for _, m := range DocumentMetrics(doc, results) {
		ch <- m
	}
	ch <- gauge(descCollect, time.Since(start).Seconds(), name)
	return doc
}

func (c *Collector) log() *slog.Logger {
	if c.Log == nil {
		return slog.Default()
	}
	return c.Log
}

func (c *Collector) thresholds() Thresholds {
	if c.Thresholds == (Thresholds{}) {
		return DefaultThresholds
	}
	return c.Thresholds
}

// probe returns the outcome of a replication connection for the
// "replication connection" check. A receiver that streams is such a
// connection, so it is taken as the probe; otherwise IDENTIFY_SYSTEM is run,
// at most once per ProbeEvery, so that scrapes do not take a wal sender each.
func (c *Collector) probe(ctx context.Context, src Source, srv *config.Server, doc *Document) Probe {
	rc := doc.Receiver
	if rc.Running && rc.State == "streaming" && rc.SystemID != "" {
		return Probe{Identity: replication.Identity{SystemID: rc.SystemID, TimeLine: rc.TimeLine, XLogPos: rc.ServerLSN}}
	}
	every := c.ProbeEvery
	if every == 0 {
		every = time.Minute
	}
	c.mu.Lock()
	cached, ok := c.probes[doc.Server]
	c.mu.Unlock()
	if ok && cached.conninfo == srv.Conninfo && time.Since(cached.at) < every {
		return cached.probe
	}
	timeout := src.ConnectTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	id, err := IdentifySystem(ctx, srv.Conninfo, timeout)
	p := Probe{Identity: id, Err: err}
	c.mu.Lock()
	if c.probes == nil {
		c.probes = map[string]cachedProbe{}
	}
	c.probes[doc.Server] = cachedProbe{probe: p, conninfo: srv.Conninfo, at: time.Now()}
	c.mu.Unlock()
	return p
}

// receiverStates are the values walhub_receiver_state takes.
var receiverStates = []string{"starting", "connecting", "streaming", "waiting", "stopped", "failed", "absent"}

// slotWALStatuses are the values of pg_replication_slots.wal_status.
var slotWALStatuses = []string{"reserved", "extended", "unreserved", "lost"}

// DocumentMetrics turns one server's status document and check results into
// metrics (all but walhub_status_up, the collect duration and the
// repository's file system, which the Collector adds).
func DocumentMetrics(doc *Document, results []Result) []prometheus.Metric {
	s := doc.Server
	var out []prometheus.Metric
	add := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, gauge(d, v, append([]string{s}, labels...)...))
	}

	if doc.ReadOnly {
		// A read-only hub knows nothing of the server itself, its receiver or
		// its slot: those series are the writing hub's.
		return append(out, catalogMetrics(doc, results)...)
	}
	pg := doc.Postgres
	add(descPGUp, boolValue(pg.Reachable && pg.Error == ""))
	if pg.Reachable && pg.CurrentLSN != 0 {
		add(descPGLSN, float64(pg.CurrentLSN))
	}

	rc := doc.Receiver
	add(descRecvRun, boolValue(rc.Running))
	for _, st := range receiverStates {
		add(descRecvState, boolValue(rc.State == st), st)
	}
	if rc.State != "absent" {
		add(descRecvLag, float64(rc.LagBytes))
		if rc.LagSeconds != nil {
			add(descRecvLagS, *rc.LagSeconds)
		}
	}

	if sl := doc.Slot; sl.Known {
		add(descSlotExist, boolValue(sl.Exists))
		if sl.Exists {
			add(descSlotAct, boolValue(sl.Active))
			add(descSlotRet, float64(sl.RetainedBytes))
			if sl.SafeWALSize != nil {
				add(descSlotSafe, float64(*sl.SafeWALSize))
			}
			for _, st := range slotWALStatuses {
				add(descSlotStat, boolValue(sl.WALStatus == st), st)
			}
		}
	}

	// Two clients may share an application_name (two pg_receivewal, say):
	// the first, by sync priority, stands for both, since a series can only
	// appear once.
	seen := map[string]bool{}
	for _, cl := range doc.Clients {
		app := cl.ApplicationName
		if seen[app] {
			continue
		}
		seen[app] = true
		add(descRepInfo, 1, app, cl.Kind, cl.State, cl.SyncState)
		add(descRepStage, float64(cl.SyncStageLevel), app)
		add(descRepMax, float64(cl.SyncStageMax), app)
		for _, p := range []struct {
			position string
			bytes    *int64
			seconds  *float64
		}{{"sent", cl.SentLagBytes, nil}, {"write", cl.WriteLagBytes, cl.WriteLagSeconds},
			{"flush", cl.FlushLagBytes, cl.FlushLagSeconds}, {"replay", cl.ReplayLagBytes, cl.ReplayLagSeconds}} {
			if p.bytes != nil {
				add(descRepLag, float64(*p.bytes), app, p.position)
			}
			if p.seconds != nil {
				add(descRepLagS, *p.seconds, app, p.position)
			}
		}
	}

	return append(out, catalogMetrics(doc, results)...)
}

// catalogMetrics are the metrics of what the catalog and the working area
// say (WAL, backups, recoverable window, locks) and the check results.
func catalogMetrics(doc *Document, results []Result) []prometheus.Metric {
	s := doc.Server
	var out []prometheus.Metric
	add := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, gauge(d, v, append([]string{s}, labels...)...))
	}
	w := doc.WAL
	add(descWALSegs, float64(w.Segments))
	add(descWALBytes, float64(w.Bytes))
	add(descWALStored, float64(w.StoredBytes))
	add(descWALTLIs, float64(len(w.Timelines)))
	if !w.LastSegmentAt.IsZero() {
		add(descWALLast, unixSeconds(w.LastSegmentAt))
	}
	blocking := 0
	for _, g := range w.Gaps {
		if g.AfterOldestBackup {
			blocking++
		}
	}
	add(descWALGaps, float64(len(w.Gaps)))
	add(descWALBlock, float64(blocking))

	b := doc.Backups
	add(descBackups, float64(b.Count), "done")
	add(descBackups, float64(b.Failed), "failed")
	add(descBackups, float64(b.Running), "running")
	add(descBackups, float64(b.WaitingWAL), "waiting_wal")
	add(descBkSize, float64(b.Size))
	add(descBkStored, float64(b.StoredSize))
	if l := b.Last; l != nil {
		add(descLastEnd, unixSeconds(l.FinishedAt))
		add(descLastAge, l.AgeSeconds)
		add(descLastDur, l.FinishedAt.Sub(l.StartedAt).Seconds())
		add(descLastSize, float64(l.Size))
		add(descLastStore, float64(l.StoredSize))
	}
	add(descFailSince, float64(b.FailedSinceLast))
	if b.LastFailed != nil {
		add(descLastFail, unixSeconds(b.LastFailed.StartedAt))
	}

	if w.InCatalog {
		add(descRecov, boolValue(doc.Recoverable != nil))
	}
	if r := doc.Recoverable; r != nil {
		add(descRecovEarl, unixSeconds(r.EarliestTime))
		if !r.LatestTime.IsZero() {
			add(descRecovLate, unixSeconds(r.LatestTime))
		}
		add(descRecovLSN, float64(r.LatestLSN))
	}

	ops := []struct {
		name  string
		state LockState
	}{{"backup", doc.Lock.Backup}, {"expire", doc.Lock.Expire}, {"snapshot", doc.Lock.Snapshot}, {"other", LockState{}}}
	if doc.Lock.Other != nil {
		ops[3].state = *doc.Lock.Other
	}
	for _, op := range ops {
		add(descOpRun, boolValue(op.state.Held), op.name)
		if !op.state.Held {
			continue
		}
		if op.state.Progress != nil {
			add(descOpProg, *op.state.Progress/100, op.name)
		}
		if !op.state.Since.IsZero() {
			add(descOpSince, unixSeconds(op.state.Since), op.name)
		}
	}

	for _, r := range results {
		add(descCheck, float64(r.Level), r.Name)
	}
	return out
}
