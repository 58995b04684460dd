package main

import "github.com/spf13/cobra"

// Commands whose mechanisms are not built yet. Each keeps its final name and
// help, and fails with a clear message until it is built.

func (a *app) restoreCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "restore",
		Short:   "Restore a backup into an empty directory, with recovery settings",
		Example: "  walhub restore --server main --target-dir /var/lib/postgresql/15/main",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return errNotBuilt("walhub restore") },
	}
}

func (a *app) snapshotCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Bracket an external file-system snapshot with pg_backup_start/stop",
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "start",
		Short:   "Ask the daemon to run pg_backup_start and hold the session",
		Example: "  walhub snapshot start --server main --fast",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return errNotBuilt("walhub snapshot start") },
	}, &cobra.Command{
		Use:     "stop",
		Short:   "Ask the daemon to run pg_backup_stop and write backup_label",
		Example: "  walhub snapshot stop --server main --write-to /snap/pgdata",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return errNotBuilt("walhub snapshot stop") },
	})
	return cmd
}
