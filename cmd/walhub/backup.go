package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/walhub/walhub/basebackup"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/retention"
	"github.com/walhub/walhub/status"
)

func (a *app) backupCommand() *cobra.Command {
	var server, checkpoint, compressOn string
	var maxRate int
	var walTimeout time.Duration
	expireWait := defaultExpireWait
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Take a base backup over the replication protocol",
		Long: `Takes a base backup of each selected server with BASE_BACKUP over a replication
connection (no SSH): every archive (base and each tablespace) streams straight into the
repository, compressed with zstd (or not, per server.compression), with the server's
backup_manifest beside it. The server verifies page checksums while sending.

Where the archives are compressed is server.backup.compress_on, or --compress-on:
  auto    (default) on the server; on the hub when a max rate is set or when the
          server's build has no zstd (it says so before the backup starts)
  server  PostgreSQL compresses each archive before sending it, on the walsender (and
          backup.workers threads besides it, default none): a third to a twentieth of the
          bytes on the network and the hub's cores free, for a core of the database
          server while the backup runs. A max rate then limits the compressed bytes the
          server sends, not the data it reads. The hub stores what it receives and
          decodes it as it streams in, to check it as below.
  hub     the server sends the archives uncompressed; the hub compresses them on all its
          cores (or backup.workers)

The backup includes no WAL: the hub streams it, so a backup is refused at once when no
receiver (walhub serve) is running for the server. Every file is checked against the
manifest while it streams in (size, checksum, nothing missing or extra); each frame the
hub compresses is decoded again and compared with what went in before it is written; and
every stored object is read back and must match the SHA-256 of what was written. The
backup becomes "done" once the WAL from its start to its stop position is in the catalog
(walhub switches WAL on the server only if the server has not completed the last segment
itself, as a standby); when that takes longer than backup.wal_timeout (default 5m) the
backup is kept as "waiting_wal" and becomes done by itself when the WAL arrives.

One backup, expire or snapshot per server at a time. A backup that finds an expire running
(the daemon's hourly round, or the one after another backup) waits for it, up to
--expire-wait (default 5m); a backup or snapshot already running refuses it at once, naming
the holder.
A failed backup keeps its row and reason (walhub list-backups) and leaves no files.
After a successful backup, expire runs unless retention.auto_expire = false.`,
		Example: `  walhub backup --server main
  walhub backup                               # every configured server, one after the other
  walhub backup --server main --checkpoint spread --max-rate 102400
  walhub backup --server main --compress-on hub      # keep the database server's CPU for queries
  walhub backup --server main --output=json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if checkpoint != "" && checkpoint != "fast" && checkpoint != "spread" {
				return fmt.Errorf("--checkpoint: %q is not one of fast, spread", checkpoint)
			}
			if compressOn != "" {
				// Whether the server's compression suits it is checked per server below.
				if err := config.CheckCompressOn(compressOn, "zstd"); err != nil {
					return fmt.Errorf("--compress-on: %w", err)
				}
			}
			if maxRate != 0 && (maxRate < 32 || maxRate > 1048576) {
				return fmt.Errorf("--max-rate: %d kB/s is out of range 32..1048576", maxRate)
			}
			if expireWait < 0 {
				return fmt.Errorf("--expire-wait: %v is negative", expireWait)
			}
			servers, repo, err := a.openServers(cmd.Context(), server)
			if err != nil {
				return err
			}
			defer repo.Close()
			var views []backupView
			var failed []error
			for _, s := range servers {
				if compressOn != "" {
					if err := config.CheckCompressOn(compressOn, s.Compression); err != nil {
						failed = append(failed, fmt.Errorf("backup of %s refused: --compress-on %w", s.Name, err))
						continue
					}
				}
				// Without a receiver the backup's WAL never reaches the hub:
				// say so now, not after wal_timeout.
				if rc := status.ReadReceiver(repo.Work, s); !rc.Running {
					failed = append(failed, fmt.Errorf("backup of %s refused: no WAL receiver is running for it (%s), "+
						"so the backup's WAL would never reach the hub: start walhub serve", s.Name, rc.NotRunning))
					continue
				}
				o := backupOptions(s, repo, a.log)
				if checkpoint != "" {
					o.FastCheckpoint = checkpoint == "fast"
				}
				if maxRate != 0 {
					o.MaxRate = maxRate
				}
				if compressOn != "" {
					o.Compression.Where = compressOn
				}
				if walTimeout != 0 {
					o.WALTimeout = walTimeout
				}
				o.ExpireWait = expireWait
				bar := a.newProgressReporter(s.Name)
				o.OnProgress = bar.report
				b, err := basebackup.Run(cmd.Context(), o)
				bar.finish()
				if err != nil {
					failed = append(failed, err)
					if b.ID == "" {
						continue // refused (locked, or stopped while waiting for an expire): nothing was recorded
					}
				}
				views = append(views, viewOf(s.Name, b, nil))
				if err == nil && *s.Retention.AutoExpire {
					if _, err := retention.Expire(cmd.Context(), retention.Options{Server: s, Repo: repo, Log: a.log}); err != nil {
						a.log.Warn("expire after backup failed", "server", s.Name, "err", err)
					}
				}
			}
			if err := a.render(cmd.OutOrStdout(), views, func(w io.Writer) error { return printBackups(w, views) }); err != nil {
				return err
			}
			return errors.Join(failed...)
		},
	}
	cmd.Flags().StringVarP(&server, "server", "s", "all", "server name, or all")
	cmd.Flags().StringVar(&checkpoint, "checkpoint", "", "fast or spread (default: server.backup.checkpoint)")
	cmd.Flags().StringVar(&compressOn, "compress-on", "", "auto, hub or server: where the backup is compressed (default: server.backup.compress_on, auto)")
	cmd.Flags().IntVar(&maxRate, "max-rate", 0, "limit the server's sending rate, kB/s (default: server.backup.max_rate); with compress_on auto, the hub then compresses")
	cmd.Flags().DurationVar(&walTimeout, "wal-timeout", 0, "how long to wait for the backup's WAL (default: server.backup.wal_timeout)")
	cmd.Flags().DurationVar(&expireWait, "expire-wait", expireWait, "how long to wait for a running expire to finish (0: refuse at once)")
	a.addOutputFlag(cmd)
	return cmd
}

// defaultExpireWait is how long a backup waits for a running expire.
const defaultExpireWait = 5 * time.Minute

// backupOptions turns a server's configuration into backup options.
func backupOptions(s *config.Server, repo *repository.Repository, log *slog.Logger) basebackup.Options {
	return basebackup.Options{
		Server: s.Name, Conninfo: s.Conninfo, Repo: repo,
		Compression: basebackup.Compression{Method: s.Compression, Level: s.CompressionLevel, Workers: s.Backup.Workers,
			Where: s.Backup.CompressOn},
		FastCheckpoint: s.Backup.Checkpoint == "fast", MaxRate: s.Backup.MaxRate,
		WALTimeout: s.Backup.WALTimeout.Duration, Log: log,
	}
}

// progressReporter shows the progress of a backup or a restore: a bar (bytes,
// rate, ETA) when stderr is a terminal, a log line every 10 seconds otherwise.
type progressReporter struct {
	server  string
	log     *slog.Logger
	tty     bool
	bar     *progressbar.ProgressBar
	phase   string
	lastLog time.Time
}

func (a *app) newProgressReporter(server string) *progressReporter {
	return &progressReporter{server: server, log: a.log, tty: !a.quiet && term.IsTerminal(int(os.Stderr.Fd())), lastLog: time.Now()}
}

func (p *progressReporter) report(pr basebackup.Progress) {
	if pr.Phase != p.phase {
		p.finish()
		p.phase = pr.Phase
		if !p.tty {
			p.log.Info("phase", "server", p.server, "phase", pr.Phase)
		}
	}
	if pr.Total <= 0 {
		return // a phase without a measure of progress (verifying, waiting for WAL)
	}
	if !p.tty {
		if time.Since(p.lastLog) >= 10*time.Second {
			p.lastLog = time.Now()
			pct := 0.0
			if pr.Total > 0 {
				pct = 100 * float64(pr.Done) / float64(pr.Total)
			}
			p.log.Info("progress", "server", p.server, "phase", pr.Phase, "done", humanBytes(pr.Done),
				"of", humanBytes(pr.Total), "percent", fmt.Sprintf("%.0f", pct))
		}
		return
	}
	if p.bar == nil {
		p.bar = progressbar.NewOptions64(pr.Total,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription(p.server+": "+pr.Phase),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
		)
	}
	if pr.Total > p.bar.GetMax64() {
		p.bar.ChangeMax64(pr.Total)
	}
	p.bar.Set64(pr.Done)
}

func (p *progressReporter) finish() {
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
}

// backupView is how a backup is shown, in text and JSON.
type backupView struct {
	Server      string               `json:"server"`
	ID          string               `json:"id"`
	Kind        string               `json:"kind"`
	State       string               `json:"state"`
	Reason      string               `json:"reason,omitempty"`
	Label       string               `json:"label,omitempty"`
	StartLSN    string               `json:"start_lsn,omitempty"`
	StopLSN     string               `json:"stop_lsn,omitempty"`
	StartTLI    uint32               `json:"start_timeline,omitempty"`
	StopTLI     uint32               `json:"stop_timeline,omitempty"`
	StartedAt   string               `json:"started_at"`
	FinishedAt  string               `json:"finished_at,omitempty"`
	Seconds     float64              `json:"duration_seconds,omitempty"`
	Size        int64                `json:"size"`
	StoredSize  int64                `json:"stored_size"`
	Compression string               `json:"compression,omitempty"`
	Path        string               `json:"path,omitempty"`
	Files       []catalog.BackupFile `json:"files,omitempty"`
	PID         int                  `json:"pid,omitempty"`
	Host        string               `json:"host,omitempty"`
	// Progress is the percentage streamed of a running backup (-1 unknown).
	Progress *float64 `json:"progress,omitempty"`
}

func viewOf(server string, b catalog.Backup, progress *float64) backupView {
	v := backupView{
		Server: server, ID: b.ID, Kind: b.Kind, State: b.State, Reason: b.Reason, Label: b.Label,
		StartTLI: uint32(b.StartTLI), StopTLI: uint32(b.StopTLI), StartedAt: b.StartedAt.Format(time.RFC3339),
		Size: b.OriginalSize, StoredSize: b.StoredSize, Compression: b.Compression, Path: b.StoredPath,
		Files: b.Files, PID: b.PID, Host: b.Host, Progress: progress,
	}
	if b.StartLSN != 0 {
		v.StartLSN = b.StartLSN.String()
	}
	if b.StopLSN != 0 {
		v.StopLSN = b.StopLSN.String()
	}
	if !b.FinishedAt.IsZero() {
		v.FinishedAt = b.FinishedAt.Format(time.RFC3339)
		v.Seconds = b.FinishedAt.Sub(b.StartedAt).Round(time.Millisecond).Seconds()
	}
	return v
}

func printBackups(w io.Writer, views []backupView) error {
	if len(views) == 0 {
		fmt.Fprintln(w, "no backups")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tID\tKIND\tSTATE\tSTARTED\tDURATION\tSIZE\tSTORED\tSTART LSN\tSTOP LSN\tTLI")
	for _, v := range views {
		state := v.State
		if state == catalog.StateWaitingWAL {
			state = "waiting for WAL"
		}
		if v.Progress != nil && *v.Progress >= 0 {
			state = fmt.Sprintf("running %.0f%%", *v.Progress)
		}
		dur := "-"
		if v.Seconds > 0 {
			dur = (time.Duration(v.Seconds * float64(time.Second))).Round(time.Second).String()
		}
		started, _ := time.Parse(time.RFC3339, v.StartedAt)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", v.Server, v.ID, v.Kind, state,
			started.Local().Format("2006-01-02 15:04"), dur, humanBytes(v.Size), humanBytes(v.StoredSize),
			dash(v.StartLSN), dash(v.StopLSN), v.StopTLI)
	}
	tw.Flush()
	for _, v := range views {
		if v.Reason != "" {
			fmt.Fprintf(w, "%s %s: %s\n", v.Server, v.ID, v.Reason)
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanBytes formats a size with a binary unit ("1.5 GiB").
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
