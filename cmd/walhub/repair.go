package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/repository"
)

func (a *app) repairCommand() *cobra.Command {
	var rebuild bool
	cmd := &cobra.Command{
		Use:   "repair --rebuild-catalog",
		Short: "Re-create catalog.db from the repository alone",
		Long: `The repository is the source of truth: every stored segment carries its checksum, size
and the server's system identifier, and every finished backup a backup.info beside its files.
With --rebuild-catalog, walhub re-creates the catalog (servers, segments, timeline histories,
backups) from what the repository holds, local or in a bucket: after losing the hub machine,
or a damaged catalog.db.

The catalog must be new: move catalog.db (and catalog.db-wal, catalog.db-shm) out of the
working area first; a catalog that holds anything is refused. walhub serve must not run (the
receivers' locks are taken, so it is refused while it does). The gaps the receiver recorded
(WAL the server removed before the hub got it) come back with their reasons, from their records
in the repository (a gap an older walhub recorded is in its catalog only: its WAL shows as
missing segments). Not rebuilt: failed and unfinished backups (their files, if any, are
listed as skipped and removed by the next expire).`,
		Example: "  walhub repair --rebuild-catalog\n  walhub repair --rebuild-catalog --output=json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !rebuild {
				return errors.New("say what to repair: --rebuild-catalog")
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			repo, err := repository.OpenForRebuild(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer repo.Close()
			for _, s := range cfg.Servers {
				rl, err := repo.Work.ReceiverLock(s.Name)
				if err != nil {
					return fmt.Errorf("rebuild refused: %w (stop walhub serve first)", err)
				}
				defer rl.Release()
				bl, err := repo.Work.Lock(s.Name, "repair", "rebuilding the catalog")
				if err != nil {
					return fmt.Errorf("rebuild refused: server %s: %w", s.Name, err)
				}
				defer bl.Release()
			}
			rep, err := repo.Rebuild(cmd.Context())
			if err != nil {
				return fmt.Errorf("rebuild the catalog of %s: %w", repo, err)
			}
			return a.render(cmd.OutOrStdout(), rep, func(w io.Writer) error { return printRebuild(w, rep) })
		},
	}
	cmd.Flags().BoolVar(&rebuild, "rebuild-catalog", false, "re-create catalog.db from the repository")
	a.addOutputFlag(cmd)
	return cmd
}

func printRebuild(w io.Writer, rep repository.RebuildReport) error {
	fmt.Fprintf(w, "catalog rebuilt: %d servers (%s), %d segments, %d timeline histories, %d backups, %d gaps\n",
		len(rep.Servers), strings.Join(rep.Servers, ", "), rep.Segments, rep.TimeLines, rep.Backups, rep.Gaps)
	if rep.Checksummed > 0 {
		fmt.Fprintf(w, "%d segments had no checksum in their metadata: computed from their content\n", rep.Checksummed)
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(w, "skipped: %s\n", s)
	}
	return nil
}
