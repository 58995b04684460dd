package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/walhub/walhub/basebackup"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/retention"
	"github.com/walhub/walhub/snapshot"
	"github.com/walhub/walhub/status"
	"github.com/walhub/walhub/stream"
)

func (a *app) serveCommand() *cobra.Command {
	var create bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: receive WAL from every configured server and serve the hub",
		Long: `serve runs one WAL receiver per [[server]] of the configuration, each streaming
through its physical replication slot into the repository, and the HTTP hub ([hub]
listen) that serves WAL, backups, status and /metrics, until SIGTERM or SIGINT.
On stop every receiver fsyncs what it received and reports it to its server.
Every hour it applies the retention policies (retention.auto_expire); a backup
waiting for its WAL becomes done as soon as the WAL is stored.

SIGHUP (systemctl reload walhub) reads the configuration file again: tokens,
max_peek, retention and backup settings apply at once; added servers start
streaming, removed ones stop, a server whose connection settings changed
reconnects, and the others keep streaming. What changed is logged. A file that
fails to load is refused with its error and the running configuration kept.
hub.listen, hub.tls_cert and hub.tls_key need a restart; "env:NAME" values
come from the daemon's environment, which a reload does not change.

A receiver that fails (server down, network, full disk) says why in the log and in
<work_dir>/<server>/receiver.json, and reconnects by itself (1 s doubling to 30 s).`,
		Example: "  walhub serve --config /etc/walhub/walhub.toml\n  walhub serve --log-level debug",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if create {
				if err := a.initRepository(cmd.Context(), io.Discard); err != nil {
					return err
				}
			}
			return a.serve(cmd.Context())
		},
	}
	cmd.Flags().BoolVar(&create, "init", false, "create the repository first when it does not exist (as walhub init)")
	return cmd
}

// service is one long-running part of the daemon; it returns when ctx ends.
type service func(ctx context.Context) error

func (a *app) serve(ctx context.Context) error {
	// SIGHUP reloads the configuration. Asked for first, so that a reload sent
	// during start-up is not the signal's default action (exit).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := a.config()
	if err != nil {
		return err
	}
	if len(cfg.Servers) == 0 && !cfg.ReadOnly {
		return fmt.Errorf("nothing to serve: no [[server]] section in %s", a.configPath)
	}
	repo, err := a.repository(ctx)
	if err != nil {
		return err
	}
	defer repo.Close()
	cat := repo.Catalog
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := stream.NewMetrics(registry)

	d := &daemon{log: a.log, configPath: a.configPath, cat: cat, repo: repo, receivers: map[string]*runningReceiver{},
		newReceiver: func(srv *config.Server) *stream.Receiver {
			return stream.NewReceiver(stream.Options{Server: srv, Repo: repo, Log: a.log, Metrics: metrics})
		}}
	d.cfg.Store(cfg)
	// Status, backups, replication and check results, built at each scrape
	// from the configuration in force.
	registry.MustRegister(&status.Collector{Source: status.Source{Catalog: cat, Work: repo.Work}, Config: d.cfg.Load, Log: a.log})
	d.snapshots = &snapshot.Manager{Config: cfg, Repo: repo, Log: a.log, WaitWAL: snapshot.HubWAL(cat, a.log)}
	if err := d.snapshots.FailInterrupted(ctx); err != nil {
		return err
	}
	defer d.snapshots.Close()
	d.hub, err = hub.New(hub.Options{Config: cfg, Repo: repo, Registry: registry, Log: a.log,
		Status: func(ctx context.Context, server string) (any, error) {
			return status.Provider(d.cfg.Load(), cat, repo.Work)(ctx, server)
		},
		Snapshots: d.snapshots, Ready: d.storing, Partial: d.openPartial})
	if err != nil {
		return err
	}
	a.log.Info("walhub serving", "repository", repo.String(), "work_dir", repo.Work.Dir(), "servers", len(cfg.Servers), "config", a.configPath)
	services := []service{d.hub.Run, periodic(every(expireInterval), false, nil, d.expireRound),
		periodic(every(waitingWALInterval), false, nil, d.waitingWALRound)}
	if cfg.ReadOnly {
		// Another hub writes the repository: this one serves it and follows,
		// every refresh_interval of the configuration in force (a reload
		// wakes the loop to apply a new one).
		d.refreshReload = make(chan struct{}, 1)
		services = []service{d.hub.Run, periodic(d.refreshInterval, true, d.refreshReload, d.refreshRound)}
	}
	err = d.run(ctx, hup, services)
	a.log.Info("walhub stopped")
	return err
}

// daemon is `walhub serve` at work: one receiver per configured server, the
// hub and the retention loop, and the configuration that a reload replaces.
type daemon struct {
	log        *slog.Logger
	configPath string
	cfg        atomic.Pointer[config.Config]
	cat        *catalog.Catalog
	repo       *repository.Repository
	hub        *hub.Server
	snapshots  *snapshot.Manager
	// newReceiver makes the receiver of one server section.
	newReceiver func(srv *config.Server) *stream.Receiver
	// receivers are the running receivers by server name; run's goroutine
	// changes the map, under mu, which /healthz takes to read it.
	mu        sync.Mutex
	receivers map[string]*runningReceiver
	// refreshReload wakes a read-only hub's refresh loop when a reload
	// changed refresh_interval (nil on a writing hub).
	refreshReload chan struct{}
}

// runningReceiver is one receiver goroutine.
type runningReceiver struct {
	receiver *stream.Receiver
	stop     context.CancelFunc
	done     chan struct{}
}

// storing is the daemon's readiness (/healthz): nil when every configured
// server's receiver is streaming, else which are not and why.
func (d *daemon) storing() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var not []string
	for _, name := range slices.Sorted(maps.Keys(d.receivers)) {
		r := d.receivers[name]
		select {
		case <-r.done:
			not = append(not, name+": the receiver is not running")
			continue
		default:
		}
		st := r.receiver.State()
		if st.State == "streaming" {
			continue
		}
		why := name + ": receiver " + st.State
		if st.LastError != "" {
			why += ": " + st.LastError
		}
		not = append(not, why)
	}
	if len(not) > 0 {
		return errors.New(strings.Join(not, "; "))
	}
	return nil
}

// partialWait bounds how long the hub waits for a receiver that has not yet
// checked its .partial files (it does so as it starts).
const partialWait = 30 * time.Second

// openPartial opens a .partial for the hub through the receiver that writes
// it, which bounds what may be read (stream.Receiver.OpenPartial). A server
// without a running receiver has none to serve.
func (d *daemon) openPartial(ctx context.Context, server, name string) (hub.PartialFile, int64, error) {
	d.mu.Lock()
	r, ok := d.receivers[server]
	d.mu.Unlock()
	if !ok {
		return nil, 0, fmt.Errorf("no receiver runs for server %s: %w", server, fs.ErrNotExist)
	}
	ctx, cancel := context.WithTimeout(ctx, partialWait)
	defer cancel()
	f, err := r.receiver.OpenPartial(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	return f, f.Size, nil
}

// run starts every receiver and the other services, and reloads the
// configuration on each SIGHUP, until ctx ends or a service (or a receiver
// started with the daemon) fails; then it stops them all and waits.
func (d *daemon) run(ctx context.Context, hup <-chan os.Signal, services []service) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	failed := make(chan error, len(services)+len(d.cfg.Load().Servers))
	var wg sync.WaitGroup
	for _, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s(ctx); err != nil {
				failed <- err
			}
		}()
	}
	cfg := d.cfg.Load()
	for i := range cfg.Servers {
		d.startReceiver(ctx, &cfg.Servers[i], failed)
	}
	var err error
	for err == nil && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case err = <-failed:
		case <-hup:
			d.reload(ctx)
		}
	}
	cancel()
	for _, r := range d.receivers {
		<-r.done
	}
	wg.Wait()
	return err
}

// startReceiver runs the receiver of srv. A receiver that cannot run (its
// lock is held) sends its error to failed, which stops the daemon; with a nil
// failed (a server added by a reload) the error is logged and the rest runs on.
func (d *daemon) startReceiver(ctx context.Context, srv *config.Server, failed chan<- error) {
	rctx, stop := context.WithCancel(ctx)
	r := &runningReceiver{receiver: d.newReceiver(srv), stop: stop, done: make(chan struct{})}
	d.mu.Lock()
	d.receivers[srv.Name] = r
	d.mu.Unlock()
	go func() {
		defer close(r.done)
		err := r.receiver.Run(rctx)
		switch {
		case err == nil:
		case failed != nil:
			failed <- err
		default:
			d.log.Error("receiver could not start", "server", srv.Name, "err", err)
		}
	}()
}

// stopReceiver stops the receiver of a server and waits until it has
// flushed, reported its last position and released its lock.
func (d *daemon) stopReceiver(name string) {
	r, ok := d.receivers[name]
	if !ok {
		return
	}
	r.stop()
	<-r.done
	d.mu.Lock()
	delete(d.receivers, name)
	d.mu.Unlock()
}

// hubRestartKeys are the [hub] settings read once, when the hub starts listening.
var hubRestartKeys = []string{"listen", "tls_cert", "tls_key"}

// reload reads the configuration file again and puts it in force: tokens
// and max_peek for the next requests, retention and backup settings for their
// next use, receivers started for added servers, stopped for removed ones and
// reconnected for servers whose connection settings changed; the others keep
// streaming. A file that fails to load, or changes the repository, is refused
// and the running configuration kept.
func (d *daemon) reload(ctx context.Context) {
	old := d.cfg.Load()
	cfg, err := config.Load(d.configPath)
	switch {
	case err != nil:
	case len(cfg.Servers) == 0 && !cfg.ReadOnly:
		err = fmt.Errorf("nothing to serve: no [[server]] section in %s", d.configPath)
	case cfg.ReadOnly != old.ReadOnly:
		err = fmt.Errorf("read_only: %v differs from the running %v; a hub changes between writing and following a repository only at a restart", cfg.ReadOnly, old.ReadOnly)
	case cfg.Repository != old.Repository:
		err = fmt.Errorf("repository: %s differs from the running %s; moving the repository needs a restart", cfg.Repository, old.Repository)
	}
	if err != nil {
		d.log.Error("configuration reload refused; the running configuration is kept", "config", d.configPath, "err", err)
		return
	}
	changes := config.Diff(old, cfg)
	if changes.Empty() {
		d.log.Info("configuration reloaded: nothing changed", "config", d.configPath)
		return
	}
	d.cfg.Store(cfg)
	d.hub.SetConfig(cfg)
	d.snapshots.SetConfig(cfg)
	if changes.RefreshInterval && d.refreshReload != nil {
		select {
		case d.refreshReload <- struct{}{}:
		default: // a wake-up is already pending
		}
		d.log.Info("refresh_interval applied: the next catalog refresh comes one new interval after the last one",
			"was", old.RefreshInterval.Duration, "now", cfg.RefreshInterval.Duration)
	}
	var reconnect, changed []string
	for _, name := range slices.Sorted(maps.Keys(changes.Changed)) {
		keys := changes.Changed[name]
		changed = append(changed, name+": "+strings.Join(keys, ", "))
		if config.ReceiverKeys(keys) {
			reconnect = append(reconnect, name)
		}
	}
	for _, name := range changes.Removed {
		d.stopReceiver(name)
		d.log.Info("receiver stopped: the server was removed from the configuration", "server", name)
	}
	for _, name := range reconnect {
		d.stopReceiver(name)
	}
	for _, name := range append(reconnect, changes.Added...) {
		srv, err := cfg.Server(name)
		if err != nil {
			panic(fmt.Sprintf("server %s from the diff is not in the configuration: %v", name, err))
		}
		d.startReceiver(ctx, srv, nil)
	}
	d.log.Info("configuration reloaded", "config", d.configPath, "servers_added", changes.Added,
		"servers_removed", changes.Removed, "servers_changed", changed, "receivers_reconnected", reconnect, "hub_changed", changes.Hub)
	if restart := slices.DeleteFunc(slices.Clone(changes.Hub), func(k string) bool { return !slices.Contains(hubRestartKeys, k) }); len(restart) > 0 {
		d.log.Warn("hub settings not applied until walhub serve restarts", "keys", restart)
	}
}

// expireInterval is how often the daemon applies the retention policies.
const expireInterval = time.Hour

// periodic is a service that runs round every interval() (first at once when
// immediate) until ctx ends. A round logs its own failures: none stops the
// daemon. A value on wake (nil: never) makes it read interval() again: the
// next round then comes one new interval after the last round began, or at
// once when that time has passed.
func periodic(interval func() time.Duration, immediate bool, wake <-chan struct{}, round func(ctx context.Context)) service {
	return func(ctx context.Context) error {
		last := time.Now()
		if immediate {
			round(ctx)
		}
		timer := time.NewTimer(interval())
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-wake:
				timer.Reset(max(time.Until(last.Add(interval())), 0))
				continue
			case <-timer.C:
			}
			last = time.Now()
			round(ctx)
			timer.Reset(max(time.Until(last.Add(interval())), 0))
		}
	}
}

// every is a constant interval for periodic.
func every(d time.Duration) func() time.Duration { return func() time.Duration { return d } }

// refreshInterval is the refresh_interval of the configuration in force.
func (d *daemon) refreshInterval() time.Duration { return d.cfg.Load().RefreshInterval.Duration }

// expireRound applies each server's retention policy (servers with
// retention.auto_expire = false are left alone), as the configuration in
// force says. A failure is logged and retried at the next round.
func (d *daemon) expireRound(ctx context.Context) {
	cfg := d.cfg.Load()
	for i := range cfg.Servers {
		srv := &cfg.Servers[i]
		if !*srv.Retention.AutoExpire {
			continue
		}
		_, err := retention.Expire(ctx, retention.Options{Server: srv, Repo: d.repo, Log: d.log})
		var held *lock.HeldError
		switch {
		case errors.As(err, &held):
			d.log.Info("expire skipped: the server is busy", "server", srv.Name, "holder", held.Holder.String())
		case err != nil && ctx.Err() == nil:
			d.log.Error("expire failed", "server", srv.Name, "err", err)
		}
	}
}

// waitingWALInterval is how often the daemon looks for backups whose late WAL
// has arrived.
const waitingWALInterval = 5 * time.Second

// waitingWALRound marks done the backups waiting for their WAL once the
// receivers have stored it.
func (d *daemon) waitingWALRound(ctx context.Context) {
	cfg := d.cfg.Load()
	for i := range cfg.Servers {
		name := cfg.Servers[i].Name
		done, err := basebackup.CompleteWaiting(ctx, d.repo, name)
		switch {
		case errors.Is(err, catalog.ErrNotFound):
		case err != nil && ctx.Err() == nil:
			d.log.Error("finishing backups waiting for WAL", "server", name, "err", err)
		}
		for _, id := range done {
			d.log.Info("backup done: its WAL has reached the hub", "server", name, "backup", id)
		}
	}
}

// recordRefresh updates the refresh state in the working area, where
// status, check and /metrics read it (repository.RefreshState): that a
// refresh started, or its outcome. A state that cannot be written is
// logged: the refresh itself is not undone.
func (d *daemon) recordRefresh(update func(repository.RefreshState) repository.RefreshState, interval time.Duration, host string) {
	prev, rerr := repository.ReadRefreshState(d.repo.Work)
	if rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		d.log.Warn("previous catalog refresh state unreadable, starting a new one", "err", rerr)
	}
	st := update(prev)
	st.PID, st.Host, st.IntervalSeconds = os.Getpid(), host, interval.Seconds()
	if werr := repository.WriteRefreshState(d.repo.Work, st); werr != nil {
		d.log.Error("cannot record the catalog refresh for status", "err", werr)
	}
}

// refreshRound brings the catalog of a read-only hub up to date with the
// repository another hub writes, and records the outcome (recordRefresh).
func (d *daemon) refreshRound(ctx context.Context) {
	host, _ := os.Hostname()
	interval := d.refreshInterval()
	d.recordRefresh(func(st repository.RefreshState) repository.RefreshState {
		st.RunningSince = time.Now().UTC()
		return st
	}, interval, host)
	rep, err := d.repo.Refresh(ctx)
	if ctx.Err() == nil {
		d.recordRefresh(func(st repository.RefreshState) repository.RefreshState {
			return repository.RecordRefresh(st, time.Now(), rep, err)
		}, interval, host)
	}
	switch {
	case err != nil && ctx.Err() == nil:
		d.log.Error("catalog refresh from the repository failed, will retry", "repository", d.repo.String(), "err", err, "retry_in", interval)
	case rep.Changed():
		d.log.Info("catalog refreshed from the repository", "segments_added", rep.SegmentsAdded, "segments_removed", rep.SegmentsRemoved,
			"timelines_added", rep.TimeLinesAdded, "backups_added", rep.BackupsAdded, "backups_removed", rep.BackupsRemoved,
			"gaps_added", rep.GapsAdded, "segments_indexed", rep.SegmentsIndexed)
	}
}
