// Command walhub is the WAL-streaming appliance for PostgreSQL: it receives WAL
// through replication slots, takes base backups over the replication protocol,
// serves WAL to standbys over HTTP, restores, expires and reports.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/version"
)

// app holds what every subcommand shares: the global flags and, once loaded,
// the configuration.
type app struct {
	configPath string
	logLevel   string
	logFormat  string
	quiet      bool
	// logOut is where the log goes; nil is stderr.
	logOut io.Writer
	output string
	cfg    *config.Config
	log    *slog.Logger
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
			return a.setupLogging(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&a.configPath, "config", "c", envOr("WALHUB_CONFIG", config.DefaultPath), "configuration file (env WALHUB_CONFIG)")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error (env WALHUB_LOG_LEVEL)")
	pf.StringVar(&a.logFormat, "log-format", envOr("WALHUB_LOG_FORMAT", "text"), "log format: text or json, one object per line (env WALHUB_LOG_FORMAT)")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "for scripts: no progress bars or informational log lines, only warnings and errors on stderr; results still go to stdout")
	root.Version = version.Get().String("walhub")
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(
		a.initCommand(),
		a.serveCommand(),
		a.backupCommand(),
		a.listBackupsCommand(),
		a.restorePointsCommand(),
		a.showBackupCommand(),
		a.verifyCommand(),
		a.restoreCommand(),
		a.statusCommand(),
		a.checkCommand(),
		a.expireCommand(),
		a.snapshotCommand(),
		a.keygenCommand(),
		a.keysCommand(),
	)
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// setupLogging makes the logger the flags ask for: --log-level (or -q, which
// is --log-level warn and no progress bars) and --log-format.
func (a *app) setupLogging(cmd *cobra.Command) error {
	flags := cmd.Flags()
	if !flags.Changed("log-level") {
		if v := os.Getenv("WALHUB_LOG_LEVEL"); v != "" {
			a.logLevel = v
		}
	}
	if a.quiet {
		if flags.Changed("log-level") {
			return errors.New("-q and --log-level: give one of them")
		}
		a.logLevel = "warn"
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(a.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", a.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	var w io.Writer = os.Stderr
	if a.logOut != nil {
		w = a.logOut
	}
	switch a.logFormat {
	case "text":
		a.log = slog.New(slog.NewTextHandler(w, opts))
	case "json":
		a.log = slog.New(slog.NewJSONHandler(w, opts))
	default:
		return fmt.Errorf("--log-format: %q is not one of text, json", a.logFormat)
	}
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

// errNoRepository says the configured repository has not been created.
var errNoRepository = errors.New("no walhub repository there")

// repository returns the repository's store. It must exist: only walhub init
// (or serve --init) creates one, so that a mistyped path or an unmounted
// volume is an error, not a fresh empty repository on the root disk.
func (a *app) repository() (storage.Local, error) {
	cfg, err := a.config()
	if err != nil {
		return storage.Local{}, err
	}
	if err := repositoryExists(cfg.Repository); err != nil {
		return storage.Local{}, fmt.Errorf("repository %s: %w; is its volume mounted, is the path in %s right? "+
			"To create a new repository there: walhub init --config %s", cfg.Repository, err, a.configPath, a.configPath)
	}
	return storage.Local{Root: cfg.Repository}, nil
}

// repositoryExists tells whether root holds a repository (its catalog).
func repositoryExists(root string) error {
	fi, err := os.Stat(filepath.Join(root, storage.CatalogFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, derr := os.Stat(root); errors.Is(derr, os.ErrNotExist) {
			return fmt.Errorf("%w: the directory does not exist", errNoRepository)
		}
		return fmt.Errorf("%w: the directory has no %s", errNoRepository, storage.CatalogFile)
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s is not a file", errNoRepository, storage.CatalogFile)
	}
	return nil
}

// catalog opens the repository's catalog; the caller closes it.
func (a *app) catalog(ctx context.Context) (*catalog.Catalog, error) {
	repo, err := a.repository()
	if err != nil {
		return nil, err
	}
	return catalog.Open(ctx, filepath.Join(repo.Root, storage.CatalogFile))
}

// openServers loads the configuration, selects the servers a command names
// ("all" or "" for every one), and opens the repository and its catalog; the
// caller closes the catalog.
func (a *app) openServers(ctx context.Context, name string) ([]*config.Server, storage.Local, *catalog.Catalog, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, storage.Local{}, nil, err
	}
	servers, err := cfg.Select(name)
	if err != nil {
		return nil, storage.Local{}, nil, err
	}
	repo, err := a.repository()
	if err != nil {
		return nil, storage.Local{}, nil, err
	}
	cat, err := a.catalog(ctx)
	if err != nil {
		return nil, storage.Local{}, nil, err
	}
	return servers, repo, cat, nil
}
