package main

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/cobra"

	"github.com/walhub/walhub/basebackup"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
)

func (a *app) listBackupsCommand() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "list-backups",
		Short: "List the backups in the repository",
		Long: `Lists every backup of the selected servers, oldest first: state (running with its
progress, done, failed with the reason), positions, sizes as sent and as stored.
A backup recorded as running whose process is gone (killed, host crashed) is marked failed
("interrupted") and its files are removed.`,
		Example: `  walhub list-backups
  walhub list-backups --server main --output=json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			servers, repo, err := a.readServers(cmd.Context(), server)
			if err != nil {
				return err
			}
			defer repo.Close()
			views := []backupView{}
			for _, s := range servers {
				vs, err := listBackups(cmd.Context(), s, repo)
				if err != nil {
					return err
				}
				views = append(views, vs...)
			}
			return a.render(cmd.OutOrStdout(), views, func(w io.Writer) error { return printBackups(w, views) })
		},
	}
	cmd.Flags().StringVarP(&server, "server", "s", "all", "server name, or all")
	a.addOutputFlag(cmd)
	return cmd
}

// serverBackups returns a server's backups after marking the interrupted ones
// failed and those whose late WAL has arrived done; a server that never had anything stored has none.
func serverBackups(ctx context.Context, s *config.Server, repo *repository.Repository) ([]catalog.Backup, error) {
	cat := repo.Catalog
	srv, err := cat.ServerByName(ctx, s.Name)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if _, err := basebackup.ReapInterrupted(ctx, repo, s.Name); err != nil {
		return nil, err
	}
	if _, err := basebackup.CompleteWaiting(ctx, repo, s.Name); err != nil {
		return nil, err
	}
	return cat.Backups(ctx, srv.ID)
}

func listBackups(ctx context.Context, s *config.Server, repo *repository.Repository) ([]backupView, error) {
	backups, err := serverBackups(ctx, s, repo)
	if err != nil {
		return nil, err
	}
	holder, held, err := repo.Work.ReadLock(s.Name)
	if err != nil {
		return nil, err
	}
	var views []backupView
	for _, b := range backups {
		var progress *float64
		if b.State == catalog.StateRunning && held && holder.PID == b.PID {
			p := holder.Progress
			progress = &p
		}
		views = append(views, viewOf(s.Name, b, progress))
	}
	return views, nil
}
