package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/basebackup"
	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/replication"
	"github.com/walhub/walhub/restore"
	"github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

func (a *app) restoreCommand() *cobra.Command {
	var (
		server, backupID, targetDir, snapshotDir, hubURL, token, walfetch, walfetchTokenFile, ownerSpec string
		targetTime, targetLSN                                                                           string
		tablespaces                                                                                     []string
		delta                                                                                           bool
		s                                                                                               restore.Settings
	)
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Restore a backup into an empty directory, with recovery settings",
		Long: `Writes a backup into an empty (or missing) data directory, checks every restored file
against the backup's manifest, relocates tablespaces, and writes the recovery settings:
restore_command = 'walfetch ... %f %p' pointing at the hub, recovery.signal (or
standby.signal with --standby) and the recovery target. Then start PostgreSQL on it.
The restore_command is the line walfetch --print-restore-command prints: the shell
takes a segment the prefetcher already downloaded and verified with one mv, walfetch
serves the rest.

The recovery settings are exactly those walhub prints: the ones that came with the
backup (a standby's primary_conninfo, primary_slot_name, restore_command,
standby.signal; any recovery_target*) are commented out, with a note, in
postgresql.conf, postgresql.auto.conf and the files they include from the data
directory. --standby without --primary-conninfo is an archive-only standby: it follows
the hub alone, across promotions to new timelines.

On the hub host it reads the repository named by the configuration; on any other host
give --hub-url (and a read token with --token or WALHUB_TOKEN): the backup streams over
HTTP. Nothing is written when an input is wrong (non-empty target, unknown backup, a
target that no backup reaches); a restore that fails half-way removes what it wrote.

With a target and no --backup, the newest backup that ends before the target is used.
Run it as the user PostgreSQL runs as (the files get that owner), or as root with
--owner postgres (the files are then given to that user); as root without --owner it
refuses, since PostgreSQL will not start on files it does not own.

--delta restores into an existing data directory instead of an empty one (a former
primary after a failover, a broken standby): files whose size and checksum match the
backup's manifest are kept, the others written, files the backup does not have removed
(all of pg_wal among them), everything fsynced; it says how much it wrote against a full
restore. It refuses while a PostgreSQL server runs on the directory.

--snapshot-dir finishes an external snapshot instead (walhub snapshot start/stop): the
directory holds the copied files; walhub writes the backup_label and tablespace_map
recorded at snapshot stop, removes postmaster.pid and the copied pg_wal, and writes the
recovery settings.`,
		Example: `  walhub restore --server main --target-dir /var/lib/postgresql/15/main
  walhub restore --server main --target-dir /srv/pitr --target-time '2026-11-21 09:59:00+00' --target-action promote
  walhub restore --server main --target-dir /srv/standby --standby --primary-conninfo 'host=db1 user=replicator'
  walhub restore --server main --target-dir /srv/copy --tablespace 16385=/srv/copy_ts
  walhub restore --server main --target-dir /var/lib/postgresql/15/main --delta --standby
  walhub restore --hub-url https://walhub.example:7480 --server main --target-dir /srv/copy
  walhub restore --server main --snapshot-dir /mnt/snap/pgdata`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if server == "" {
				return errors.New("--server is required")
			}
			if (targetDir == "") == (snapshotDir == "") {
				return errors.New("give --target-dir (restore a backup) or --snapshot-dir (finish a snapshot), one of them")
			}
			owner, err := restoreOwner(ownerSpec)
			if err != nil {
				return err
			}
			if targetTime != "" {
				if s.Target.Time, err = restore.ParseTime(targetTime); err != nil {
					return err
				}
			}
			if targetLSN != "" {
				if s.Target.LSN, err = walname.ParseLSN(targetLSN); err != nil {
					return fmt.Errorf("--target-lsn: %w", err)
				}
			}
			if err := s.Target.Validate(); err != nil {
				return err
			}
			tsDirs, err := parseTablespaces(tablespaces)
			if err != nil {
				return err
			}
			var src restore.Source
			url := hubURL
			if hubURL != "" {
				if token == "" {
					token = os.Getenv("WALHUB_TOKEN")
				}
				c, err := client.New(client.Options{URL: hubURL, Server: server, Token: token, UserAgent: "walhub-restore"})
				if err != nil {
					return err
				}
				defer c.Close()
				src = restore.Remote{Client: c}
			} else {
				cfg, err := a.config()
				if err != nil {
					return fmt.Errorf("%w (or restore from a hub with --hub-url)", err)
				}
				if _, err := cfg.Server(server); err != nil && !cfg.ReadOnly {
					return err // a read-only hub has no [[server]]: its catalog says which it holds
				}
				// The repository belongs to the hub's user; a restore runs as
				// PostgreSQL's. Over HTTP the hub reads it for them.
				viaHub := func(err error) error {
					if errors.Is(err, fs.ErrPermission) {
						return fmt.Errorf("%w\nto restore on this host as another user than the hub's, restore through the hub: "+
							"walhub restore --hub-url %s --server %s ... (read token in WALHUB_TOKEN)", err, cfg.Hub.URL, server)
					}
					return err
				}
				repo, err := a.repository(ctx)
				if err != nil {
					return viaHub(err)
				}
				defer repo.Close()
				src = restore.Local{Repo: repo, Server: server}
				url = cfg.Hub.URL
				if len(cfg.Hub.ReadTokens)+len(cfg.Hub.AdminTokens) > 0 && walfetchTokenFile == "" {
					a.log.Warn("the hub wants a read token: unless walfetch finds one in WALFETCH_TOKEN or its config file, " +
						"recovery will stop; give --walfetch-token-file FILE (readable by the PostgreSQL user)")
				}
			}
			s.RestoreCommand = restoreCommandLine(walfetch, url, server, walfetchTokenFile)
			if snapshotDir != "" {
				dir, err := filepath.Abs(snapshotDir)
				if err != nil {
					return err
				}
				b, cleared, err := restore.FinishSnapshot(ctx, src, backupID, dir, s)
				if err != nil {
					return err
				}
				if err := owner.give(dir); err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "snapshot %s finished in %s: backup_label written, recovery from %s (stop LSN %s)\n",
					b.ID, dir, b.StartLSN, b.StopLSN)
				printSettings(w, s.Signal(), s.Lines(), cleared)
				return nil
			}
			dir, err := filepath.Abs(targetDir)
			if err != nil {
				return err
			}
			bar := a.newProgressReporter(server)
			res, err := restore.Run(ctx, restore.Options{Source: src, BackupID: backupID, TargetDir: dir, Tablespaces: tsDirs,
				Settings: s, Delta: delta, Owner: owner.unpackOwner(), Progress: func(done, total int64) {
					bar.report(basebackup.Progress{Phase: "restoring", Done: done, Total: total})
				}})
			bar.finish()
			if err != nil {
				return err
			}
			// A full restore gave every file away as it wrote it; a delta
			// restore kept files, so its directory is walked.
			if delta {
				if err := owner.give(append([]string{res.TargetDir}, slices.Collect(maps.Values(res.Tablespaces))...)...); err != nil {
					return err
				}
			}
			return a.render(cmd.OutOrStdout(), res, func(w io.Writer) error {
				mbps := 0.0
				if res.Seconds > 0 {
					mbps = float64(res.Bytes) / (1 << 20) / res.Seconds
				}
				fmt.Fprintf(w, "restored backup %s into %s: %s in %.1fs (%.0f MB/s), verified against its manifest\n",
					res.BackupID, res.TargetDir, humanBytes(res.Bytes), res.Seconds, mbps)
				if d := res.Delta; d != nil {
					pct := 0.0
					if d.FullBytes > 0 {
						pct = 100 * float64(d.WrittenBytes) / float64(d.FullBytes)
					}
					fmt.Fprintf(w, "  delta: wrote %d files, %s (%.1f%% of the %s a full restore writes); kept %d files (%s); removed %d\n",
						d.WrittenFiles, humanBytes(d.WrittenBytes), pct, humanBytes(d.FullBytes), d.KeptFiles, humanBytes(d.KeptBytes), len(d.Removed))
				}
				for oid, d := range res.Tablespaces {
					fmt.Fprintf(w, "  tablespace %d in %s\n", oid, d)
				}
				printSettings(w, res.Signal, res.RecoveryConfig, res.Cleared)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&server, "server", "s", "", "server name (required)")
	f.StringVar(&targetDir, "target-dir", "", "data directory to create: empty or missing")
	f.StringVar(&snapshotDir, "snapshot-dir", "", "finish the copy of an external snapshot in this directory")
	f.StringVar(&backupID, "backup", "latest", "backup id, or latest (the newest that reaches the target)")
	f.StringArrayVar(&tablespaces, "tablespace", nil, "move a tablespace: OID=DIR (repeatable)")
	f.BoolVar(&delta, "delta", false, "restore into an existing data directory: keep the files that match, rewrite the rest, remove extras")
	f.StringVar(&hubURL, "hub-url", "", "restore from this hub over HTTP instead of the local repository")
	f.StringVar(&token, "token", "", "read token for --hub-url (default: env WALHUB_TOKEN)")
	f.StringVar(&walfetch, "walfetch", "", "walfetch path for restore_command (default: beside walhub, else from PATH)")
	f.StringVar(&ownerSpec, "owner", "", "USER[:GROUP] to own the restored files; required when run as root")
	f.StringVar(&walfetchTokenFile, "walfetch-token-file", "", "token file walfetch reads (when the hub wants a read token)")
	f.BoolVar(&s.Standby, "standby", false, "write standby.signal: a standby that keeps following (archive only, unless --primary-conninfo)")
	f.StringVar(&s.PrimaryConninfo, "primary-conninfo", "", "with --standby: stream from this primary once the archive is exhausted")
	f.StringVar(&s.PrimarySlot, "primary-slot", "", "with --standby: primary_slot_name")
	f.StringVar(&targetTime, "target-time", "", "recover up to this time ('2026-11-21 10:30:00+00')")
	f.StringVar(&targetLSN, "target-lsn", "", "recover up to this LSN (16/B374D848)")
	f.StringVar(&s.Target.XID, "target-xid", "", "recover up to this transaction id")
	f.StringVar(&s.Target.Name, "target-name", "", "recover up to this restore point (pg_create_restore_point)")
	f.BoolVar(&s.Target.Immediate, "target-immediate", false, "stop as soon as the backup is consistent")
	f.BoolVar(&s.Target.Exclusive, "target-exclusive", false, "stop just before the target instead of just after")
	f.StringVar(&s.Target.Action, "target-action", "", "at the target: pause (default), promote or shutdown")
	f.StringVar(&s.Target.TimeLine, "target-timeline", "", "recovery_target_timeline: latest (default), current or a number")
	a.addOutputFlag(cmd)
	return cmd
}

// printSettings says which recovery settings apply to the restored
// directory and what came with the backup and was taken out.
func printSettings(w io.Writer, signal string, lines []string, cleared restore.Cleared) {
	fmt.Fprintf(w, "  %s written; the recovery settings that apply (postgresql.auto.conf):\n", signal)
	for _, l := range lines {
		fmt.Fprintf(w, "    %s\n", replication.Redact(l))
	}
	if len(cleared.Settings)+len(cleared.SignalFiles) > 0 {
		fmt.Fprintln(w, "  came with the backup and taken out:")
		for _, l := range cleared.Settings {
			fmt.Fprintf(w, "    commented out %s\n", l)
		}
		for _, f := range cleared.SignalFiles {
			fmt.Fprintf(w, "    removed %s\n", f)
		}
	}
	for _, l := range cleared.Unchecked {
		fmt.Fprintf(w, "  warning: %s includes a file outside the data directory: check it sets no recovery setting\n", l)
	}
}

// parseTablespaces reads repeated --tablespace OID=DIR flags.
func parseTablespaces(flags []string) (map[uint32]string, error) {
	out := map[uint32]string{}
	for _, f := range flags {
		oid, dir, ok := strings.Cut(f, "=")
		n, err := strconv.ParseUint(oid, 10, 32)
		if !ok || err != nil || n == 0 || dir == "" {
			return nil, fmt.Errorf("--tablespace %q: want OID=DIR, e.g. 16385=/srv/ts1", f)
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		out[uint32(n)] = abs
	}
	return out, nil
}

// restoreCommandLine builds restore_command for the restored server: the
// line walfetch --print-restore-command prints, the shell taking a segment
// the prefetcher holds in the default spool itself (with walfetch-take when
// it is installed beside walfetch), walfetch serving the rest.
func restoreCommandLine(bin, url, server, tokenFile string) string {
	if bin == "" {
		bin = "walfetch"
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "walfetch"); fileExists(p) {
				bin = p
			}
		}
	}
	line := fmt.Sprintf("%s --url %s --server %s", walfetch.ShellQuote(bin), walfetch.ShellQuote(url), walfetch.ShellQuote(server))
	if tokenFile != "" {
		line += " --token-file " + walfetch.ShellQuote(tokenFile)
	}
	shell, err := walfetch.ShellRestoreCommand(walfetch.Settings{URL: url, Server: server, Spool: walfetch.DefaultSettings().Spool},
		line, walfetch.TakeBinary(bin))
	if err != nil { // the default spool is in pg_wal
		return line + " %f %p"
	}
	return shell
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}
