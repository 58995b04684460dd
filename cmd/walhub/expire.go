package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/retention"
)

func (a *app) expireCommand() *cobra.Command {
	var server string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "expire",
		Short: "Remove backups and WAL that the retention policy no longer needs",
		Long: `Applies each server's [server.retention] policy: keeps the newest "redundancy" backups
and/or every backup needed to recover to any point of the recovery "window", never fewer than
"min_redundancy" successful ones. Removes the other backups and the WAL older than the oldest
kept backup's start. Never removes .history files, a running backup, or WAL a kept backup needs.

Takes the same per-server lock as backup: it is refused while a backup or snapshot runs.
Crash-safe: catalog rows go first, files after; files no row points at (left by a killed
expire or backup) are swept on the next run. Also runs after each successful backup and
hourly in the daemon unless retention.auto_expire = false.`,
		Example: `  walhub expire --dry-run              # what would go, and why
  walhub expire --server main
  walhub expire --output=json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			servers, repo, err := a.openServers(cmd.Context(), server)
			if err != nil {
				return err
			}
			defer repo.Close()
			var reports []retention.Report
			var failed error
			for _, s := range servers {
				rep, err := retention.Expire(cmd.Context(), retention.Options{Server: s, Repo: repo, DryRun: dryRun, Log: a.log})
				if err != nil {
					failed = fmt.Errorf("server %s: %w", s.Name, err)
					a.log.Error("expire failed", "server", s.Name, "err", err)
					continue
				}
				reports = append(reports, rep)
			}
			if err := a.render(cmd.OutOrStdout(), reports, func(w io.Writer) error { return printExpire(w, reports) }); err != nil {
				return err
			}
			return failed
		},
	}
	cmd.Flags().StringVarP(&server, "server", "s", "all", "server name, or all")
	cmd.Flags().BoolVarP(&dryRun, "dry-run", "n", false, "say what would be removed, remove nothing")
	a.addOutputFlag(cmd)
	return cmd
}

func printExpire(w io.Writer, reports []retention.Report) error {
	for _, r := range reports {
		verb := "removed"
		if r.DryRun {
			verb = "would remove"
		}
		fmt.Fprintf(w, "server %s: policy %s\n", r.Server, r.Policy)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, v := range r.Verdicts {
			action := "keep"
			if !v.Keep {
				action = verb
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", v.ID, v.Backup.State, action, v.Why)
		}
		tw.Flush()
		if r.WALBeforeName != "" {
			fmt.Fprintf(w, "  WAL: kept from %s (start of the oldest kept backup); %s %d segments, %d bytes\n",
				r.WALBeforeName, verb, r.RemovedSegments, r.RemovedBytes)
		} else {
			fmt.Fprintf(w, "  WAL: all kept (no backup allows removing any)\n")
		}
		for _, o := range r.Orphans {
			fmt.Fprintf(w, "  orphan removed: %s\n", o)
		}
	}
	return nil
}
