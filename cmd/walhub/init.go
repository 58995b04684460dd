package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage"
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
	root := cfg.Repository
	err = repositoryExists(root)
	if err == nil {
		fmt.Fprintf(out, "repository %s exists; nothing to do\n", root)
		return nil
	}
	if !errors.Is(err, errNoRepository) {
		return fmt.Errorf("repository %s: %w", root, err)
	}
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("repository %s: %w", root, err)
	}
	entries = slices.DeleteFunc(entries, func(e os.DirEntry) bool { return e.Name() == "lost+found" })
	if len(entries) > 0 {
		return fmt.Errorf("repository %s: the directory is not empty (%s, ...) but holds no %s: "+
			"not a repository walhub can take over; give an empty or new directory", root, entries[0].Name(), storage.CatalogFile)
	}
	if err := storage.MkdirAllDurable(root); err != nil {
		return fmt.Errorf("create repository %s: %w", root, err)
	}
	cat, err := catalog.Open(ctx, filepath.Join(root, storage.CatalogFile))
	if err != nil {
		return fmt.Errorf("create repository %s: %w", root, err)
	}
	if err := cat.Close(); err != nil {
		return fmt.Errorf("create repository %s: %w", root, err)
	}
	if err := storage.SyncDir(root); err != nil {
		return fmt.Errorf("create repository %s: %w", root, err)
	}
	a.log.Info("repository created", "repository", root)
	fmt.Fprintf(out, "repository %s created\n", root)
	return nil
}
