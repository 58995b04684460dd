package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/walhub/walhub/hub"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/retention"
	"github.com/walhub/walhub/snapshot"
	"github.com/walhub/walhub/status"
	"github.com/walhub/walhub/stream"
	"golang.org/x/sync/errgroup"
)

func (a *app) serveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: receive WAL from every configured server and serve the hub",
		Long: `serve runs one WAL receiver per [[server]] of the configuration, each streaming
through its physical replication slot into the repository, and the HTTP hub ([hub]
listen) that serves WAL, backups, status and /metrics, until SIGTERM or SIGINT.
On stop every receiver fsyncs what it received and reports it to its server.
Every hour it applies the retention policies (retention.auto_expire).

A receiver that fails (server down, network, full disk) says why in the log and in
<repository>/<server>/receiver.json, and reconnects by itself (1 s doubling to 30 s).`,
		Example: "  walhub serve --config /etc/walhub/walhub.toml\n  walhub serve --log-level debug",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.serve(cmd.Context())
		},
	}
}

// service is one long-running part of the daemon; it returns when ctx ends.
type service func(ctx context.Context) error

func (a *app) serve(ctx context.Context) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	if len(cfg.Servers) == 0 {
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

	var services []service
	for _, srv := range cfg.Servers {
		r := stream.NewReceiver(stream.Options{Server: &srv, Repo: repo, Log: a.log, Metrics: metrics})
		services = append(services, r.Run)
	}
	snapshots := &snapshot.Manager{Config: cfg, Repo: repo, Log: a.log, WaitWAL: snapshot.HubWAL(cat, a.log)}
	if err := snapshots.FailInterrupted(ctx); err != nil {
		return err
	}
	defer snapshots.Close()
	h, err := hub.New(hub.Options{Config: cfg, Repo: repo, Registry: registry, Log: a.log,
		Status: status.Provider(cfg, cat, repo.Work), Snapshots: snapshots})
	if err != nil {
		return err
	}
	services = append(services, h.Run, func(ctx context.Context) error { return a.expireLoop(ctx, repo) })
	a.log.Info("walhub serving", "repository", repo.String(), "work_dir", repo.Work.Dir(), "servers", len(cfg.Servers))
	err = runServices(ctx, services)
	a.log.Info("walhub stopped")
	return err
}

// expireInterval is how often the daemon applies the retention policies.
const expireInterval = time.Hour

// expireLoop applies each server's retention policy every expireInterval
// (servers with retention.auto_expire = false are left alone). A failure is
// logged and retried at the next round; it never stops the daemon.
func (a *app) expireLoop(ctx context.Context, repo *repository.Repository) error {
	tick := time.NewTicker(expireInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		for i := range a.cfg.Servers {
			srv := &a.cfg.Servers[i]
			if !*srv.Retention.AutoExpire {
				continue
			}
			_, err := retention.Expire(ctx, retention.Options{Server: srv, Repo: repo, Log: a.log})
			var held *lock.HeldError
			switch {
			case errors.As(err, &held):
				a.log.Info("expire skipped: the server is busy", "server", srv.Name, "holder", held.Holder.String())
			case err != nil && ctx.Err() == nil:
				a.log.Error("expire failed", "server", srv.Name, "err", err)
			}
		}
	}
}

// runServices runs every service until ctx ends or one of them fails; then
// it cancels the others and waits for them all.
func runServices(ctx context.Context, services []service) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range services {
		g.Go(func() error { return s(gctx) })
	}
	return g.Wait()
}
