// Command walhub is the WAL-streaming appliance for PostgreSQL: it receives WAL
// through replication slots, takes base backups over the replication protocol,
// serves WAL to standbys over HTTP, restores, expires and reports.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/version"
	"golang.org/x/sys/unix"
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
		a.repairCommand(),
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

// repository opens the configured repository (store, working area,
// catalog); the caller closes it. It must exist: only walhub init (or serve
// --init) creates one, so that a mistyped path or an unmounted volume is an
// error, not a fresh empty repository on the root disk.
func (a *app) repository(ctx context.Context) (*repository.Repository, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	if err := workAreaWritable(storage.OpenWorkArea(cfg.WorkDir)); err != nil {
		return nil, fmt.Errorf("repository %s: %w", cfg.Repository, err)
	}
	repo, err := repository.Open(ctx, cfg)
	if errors.Is(err, repository.ErrNoRepository) {
		return nil, a.noRepositoryHint(err)
	}
	return repo, err
}

// catalog opens the catalog and the working area of the configured
// repository, and not its object store: for commands that read only what the
// catalog and the working area hold (status, check), which must answer while
// the store cannot be reached. The caller closes the catalog.
func (a *app) catalog(ctx context.Context) (*catalog.Catalog, *storage.WorkArea, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, nil, err
	}
	if err := workAreaWritable(storage.OpenWorkArea(cfg.WorkDir)); err != nil {
		return nil, nil, fmt.Errorf("repository %s: %w", cfg.Repository, err)
	}
	cat, work, err := repository.OpenCatalog(ctx, cfg)
	if errors.Is(err, repository.ErrNoRepository) {
		err = a.noRepositoryHint(err)
	}
	return cat, work, err
}

// noRepositoryHint says what to check, or run, when there is no repository
// where the configuration says.
func (a *app) noRepositoryHint(err error) error {
	return fmt.Errorf("%w; is its volume mounted, is the path in %s right? "+
		"To create a new repository there: walhub init --config %s", err, a.configPath, a.configPath)
}

// workAreaWritable tells whether this process may use the catalog in the
// working area: read and write catalog.db, and create its journal beside
// it. A working area or catalog that does not exist passes (Open says so).
func workAreaWritable(work *storage.WorkArea) error {
	for _, p := range []string{work.Dir(), work.CatalogPath()} {
		err := unix.Access(p, unix.R_OK|unix.W_OK)
		if err == nil || errors.Is(err, unix.ENOENT) {
			continue
		}
		who := "this user"
		if u, uerr := user.Current(); uerr == nil {
			who = "user " + u.Username
		}
		owner := ""
		if fi, serr := os.Stat(p); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				if u, uerr := user.LookupId(strconv.Itoa(int(st.Uid))); uerr == nil {
					owner = " (owned by " + u.Username + ")"
				}
			}
		}
		return fmt.Errorf("%s cannot read and write %s%s: %w; run walhub as the repository's owner", who, p, owner, fs.ErrPermission)
	}
	return nil
}

// openServers loads the configuration, selects the servers a command names
// ("all" or "" for every one), and opens the repository; the caller closes it.
// It is for the commands that work on the servers (backup, expire): a
// read-only hub's configuration is refused.
func (a *app) openServers(ctx context.Context, name string) ([]*config.Server, *repository.Repository, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, nil, err
	}
	if cfg.ReadOnly {
		return nil, nil, fmt.Errorf("%s is the configuration of a read-only hub (read_only = true): "+
			"it backs up and expires nothing; run this on the hub that writes the repository", a.configPath)
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

// readServers is openServers for the commands that only read what the
// repository holds (list-backups, show-backup, verify, restore-points). A
// read-only hub has no [[server]] section: its servers are those its catalog
// follows from the repository, known by name only.
func (a *app) readServers(ctx context.Context, name string) ([]*config.Server, *repository.Repository, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, nil, err
	}
	if !cfg.ReadOnly {
		return a.openServers(ctx, name)
	}
	repo, err := a.repository(ctx)
	if err != nil {
		return nil, nil, err
	}
	servers, err := followedServers(ctx, repo.Catalog, name)
	if err != nil {
		repo.Close()
		return nil, nil, err
	}
	return servers, repo, nil
}

// followedServers selects, by name or all ("all" or ""), the servers a
// read-only hub's catalog holds.
func followedServers(ctx context.Context, cat *catalog.Catalog, name string) ([]*config.Server, error) {
	srvs, err := cat.Servers(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range srvs {
		names = append(names, s.Name)
	}
	var out []*config.Server
	for _, n := range names {
		if name == "" || name == "all" || n == name {
			out = append(out, &config.Server{Name: n})
		}
	}
	switch {
	case len(out) > 0:
		return out, nil
	case len(names) == 0:
		return nil, errors.New("the read-only hub's catalog holds no server yet: it fills at the daemon's first refresh " +
			"(walhub serve), or walhub repair --rebuild-catalog")
	default:
		return nil, fmt.Errorf("no server %q in the repository this read-only hub follows (it holds: %s)", name, strings.Join(names, ", "))
	}
}
