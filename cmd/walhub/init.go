package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/repository"
)

func (a *app) initCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create the repository the configuration names",
		Long: `init creates the repository (the directory and its catalog) at the configuration's
repository path. Every other command refuses to run on a repository that does not
exist, so that a mistyped path or an unmounted volume is an error instead of a new
empty repository. init on an existing repository changes nothing; on a directory
that holds other files but no catalog it refuses.`,
		Example: "  walhub init --config /etc/walhub/walhub.toml\n  sudo -u walhub walhub init",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.initRepository(cmd.Context(), cmd.OutOrStdout())
		},
	}
}

// initRepository creates the configured repository, or says it exists.
func (a *app) initRepository(ctx context.Context, out io.Writer) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	created, err := repository.Init(ctx, cfg)
	if err != nil {
		return fmt.Errorf("create repository %s: %w", cfg.Repository, err)
	}
	if !created {
		fmt.Fprintf(out, "repository %s exists; nothing to do\n", cfg.Repository)
		return nil
	}
	a.log.Info("repository created", "repository", cfg.Repository, "work_dir", cfg.WorkDir)
	fmt.Fprintf(out, "repository %s created\n", cfg.Repository)
	return nil
}
