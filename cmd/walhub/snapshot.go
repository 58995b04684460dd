package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/hub/client"
)

func (a *app) snapshotCommand() *cobra.Command {
	var server, label, writeTo, token string
	var fast bool
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Bracket an external file-system snapshot with pg_backup_start/stop",
		Long: `For file-system snapshots (LVM, ZFS, SAN) and general backup software: a pre-script runs
"walhub snapshot start", the tool copies the data directory, a post-script runs
"walhub snapshot stop". The walhub daemon holds the PostgreSQL session that
pg_backup_start needs between the two, so the scripts need not.

stop records backup_label and tablespace_map in the catalog (a backup of kind
snapshot), waits until the hub holds the WAL up to the stop position, and writes the
two files into --write-to DIR (or prints backup_label). They must go with the copy;
"walhub restore --snapshot-dir" puts them in place when the copy is restored.

A snapshot not stopped within server.snapshot_timeout (default 4h) is ended and
marked failed; so is one running when the daemon restarts. One snapshot per server,
never during a backup or expire. Talks to the daemon's admin API ([hub] url) with an
admin token (--token, env WALHUB_ADMIN_TOKEN, or the first of hub.admin_tokens).`,
	}
	newClient := func() (*client.Client, error) {
		cfg, err := a.config()
		if err != nil {
			return nil, err
		}
		if server == "" {
			return nil, errors.New("--server is required")
		}
		if _, err := cfg.Server(server); err != nil {
			return nil, err
		}
		if token == "" {
			token = os.Getenv("WALHUB_ADMIN_TOKEN")
		}
		if token == "" && len(cfg.Hub.AdminTokens) > 0 {
			token = cfg.Hub.AdminTokens[0]
		}
		srv, _ := cfg.Server(server)
		// stop waits for the WAL to reach the hub: allow for it.
		return client.New(client.Options{URL: cfg.Hub.URL, Server: server, Token: token, UserAgent: "walhub-snapshot",
			Timeout: srv.Backup.WALTimeout.Duration + time.Minute})
	}
	start := &cobra.Command{
		Use:   "start",
		Short: "Ask the daemon to run pg_backup_start and hold the session",
		Example: `  walhub snapshot start --server main --fast
  walhub snapshot start --server main --label nightly-zfs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient()
			if err != nil {
				return err
			}
			defer c.Close()
			started, err := c.SnapshotStart(cmd.Context(), label, fast)
			if err != nil {
				return fmt.Errorf("snapshot start: %w", err)
			}
			return a.render(cmd.OutOrStdout(), started, func(w io.Writer) error {
				fmt.Fprintf(w, "snapshot %s of %s started at %s (timeline %d); copy now, then run walhub snapshot stop before %s\n",
					started.BackupID, started.Server, started.StartLSN, started.TimeLine, started.Deadline.Local().Format(time.DateTime))
				return nil
			})
		},
	}
	start.Flags().StringVar(&label, "label", "", "backup label (default \"walhub snapshot\")")
	start.Flags().BoolVar(&fast, "fast", false, "immediate checkpoint instead of a spread one")
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Ask the daemon to run pg_backup_stop and write backup_label",
		Example: `  walhub snapshot stop --server main --write-to /snap/pgdata
  walhub snapshot stop --server main > backup_label`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient()
			if err != nil {
				return err
			}
			defer c.Close()
			stopped, err := c.SnapshotStop(cmd.Context())
			if err != nil {
				return fmt.Errorf("snapshot stop: %w", err)
			}
			if writeTo != "" {
				for name, content := range map[string]string{"backup_label": stopped.BackupLabel, "tablespace_map": stopped.TablespaceMap} {
					if content == "" {
						continue
					}
					if err := os.WriteFile(filepath.Join(writeTo, name), []byte(content), 0o600); err != nil {
						return fmt.Errorf("write %s: %w", name, err)
					}
				}
			}
			return a.render(cmd.OutOrStdout(), stopped, func(w io.Writer) error {
				if writeTo == "" {
					_, err := io.WriteString(w, stopped.BackupLabel)
					return err
				}
				fmt.Fprintf(w, "snapshot %s of %s stopped at %s; backup_label written to %s\n",
					stopped.BackupID, stopped.Server, stopped.StopLSN, writeTo)
				return nil
			})
		},
	}
	stop.Flags().StringVar(&writeTo, "write-to", "", "write backup_label and tablespace_map into this directory")
	for _, c := range []*cobra.Command{start, stop} {
		c.Flags().StringVarP(&server, "server", "s", "", "server name (required)")
		c.Flags().StringVar(&token, "token", "", "admin token (default: env WALHUB_ADMIN_TOKEN, else the first of hub.admin_tokens)")
		a.addOutputFlag(c)
	}
	cmd.AddCommand(start, stop)
	return cmd
}
