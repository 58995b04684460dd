// Command walhub is the WAL-streaming appliance for PostgreSQL: it receives WAL
// through replication slots, takes base backups over the replication protocol,
// serves WAL to standbys over HTTP, restores, expires and reports.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
)

// app holds what every subcommand shares: the global flags and, once loaded,
// the configuration.
type app struct {
	configPath string
	logLevel   string
	output     string
	cfg        *config.Config
	log        *slog.Logger
}

// exitError carries a specific exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{}
	root := a.rootCommand()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "walhub: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(1)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "walhub",
		Short: "WAL streaming, base backups and a WAL hub for PostgreSQL",
		Long: `walhub receives WAL from PostgreSQL servers through physical replication slots,
durably and without gaps; takes base backups over the replication protocol (no SSH);
serves WAL to standbys over HTTP (restore_command = 'walfetch %f %p'); restores,
expires old backups and reports replication health.

Everything is configured in one TOML file (default ` + config.DefaultPath + `).`,
		Example: `  walhub serve                       # run the daemon (under systemd: walhub.service)
  walhub backup --server main        # take a base backup now
  walhub status                      # what is streaming, what is stored
  walhub check --nagios              # for the alerting`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.setupLogging()
		},
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&a.configPath, "config", "c", envOr("WALHUB_CONFIG", config.DefaultPath), "configuration file (env WALHUB_CONFIG)")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(
		a.serveCommand(),
		a.backupCommand(),
		a.listBackupsCommand(),
		a.verifyCommand(),
		a.restoreCommand(),
		a.statusCommand(),
		a.checkCommand(),
		a.expireCommand(),
		a.snapshotCommand(),
	)
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (a *app) setupLogging() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(a.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", a.logLevel)
	}
	a.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(a.log)
	return nil
}

// config loads the configuration file once.
func (a *app) config() (*config.Config, error) {
	if a.cfg != nil {
		return a.cfg, nil
	}
	cfg, err := config.Load(a.configPath)
	if err != nil {
		return nil, err
	}
	a.cfg = cfg
	return cfg, nil
}

// repository opens the configured repository (store, working area,
// catalog); the caller closes it.
func (a *app) repository(ctx context.Context) (*repository.Repository, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	return repository.Open(ctx, cfg)
}

// openServers loads the configuration, selects the servers a command names
// ("all" or "" for every one), and opens the repository; the caller closes it.
func (a *app) openServers(ctx context.Context, name string) ([]*config.Server, *repository.Repository, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, nil, err
	}
	servers, err := cfg.Select(name)
	if err != nil {
		return nil, nil, err
	}
	repo, err := a.repository(ctx)
	if err != nil {
		return nil, nil, err
	}
	return servers, repo, nil
}
