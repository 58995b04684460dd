package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/status"
)

func (a *app) statusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [--server NAME|all]",
		Short: "Show receivers, slots, standbys, backups and running work",
		Long: `Show, for one server or all of them: the hub's receiver (really running or not, positions,
lag, last segment), the replication slot on the server (active, restart_lsn, wal_status,
WAL retained), every replication client like Barman's replication-status (sync state, sync
stage, sent/write/flush/replay positions and lags), the WAL held per timeline and any gap,
the backups, and a backup or expire in progress with its progress.

A server that cannot be reached is reported as such; the rest still shows.

On a read-only hub (read_only = true) the servers are those its catalog follows from
the repository another hub writes: status shows what the hub knows without a connection
to them (WAL held per timeline, gaps, backups, free space) and its catalog refresh
(last success, last error, against refresh_interval).
--output=json prints the document the hub serves at GET /v1/servers/{server}/status
(schema in docs/status.md): one object for one server, an array for all.`,
		Example: "  walhub status\n  walhub status --server main --output=json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := serverArg(cmd, args)
			if err != nil {
				return err
			}
			return a.runStatus(cmd, name)
		},
	}
	a.addOutputFlag(cmd)
	addServerFlag(cmd)
	return cmd
}

// statusSource opens the catalog and returns what status and check read; the
// caller closes the catalog. The object store is not opened: status must
// answer, and say what fails, while the store cannot be reached (a writing
// hub's receiver failing its uploads, a read-only hub's refresh failing). A
// read-only hub's servers are those its catalog follows (followedServers).
func (a *app) statusSource(ctx context.Context, name string) (status.Source, []*config.Server, func(), error) {
	cfg, err := a.config()
	if err != nil {
		return status.Source{}, nil, nil, err
	}
	var servers []*config.Server
	if !cfg.ReadOnly {
		if servers, err = cfg.Select(name); err != nil {
			return status.Source{}, nil, nil, err
		}
	}
	cat, work, err := a.catalog(ctx)
	if err != nil {
		return status.Source{}, nil, nil, err
	}
	if cfg.ReadOnly {
		if servers, err = followedServers(ctx, cat, name); err != nil {
			cat.Close()
			return status.Source{}, nil, nil, err
		}
	}
	return status.Source{Config: cfg, Catalog: cat, Work: work}, servers, func() { cat.Close() }, nil
}

func (a *app) runStatus(cmd *cobra.Command, name string) error {
	ctx := cmd.Context()
	src, servers, closeCat, err := a.statusSource(ctx, name)
	if err != nil {
		return err
	}
	defer closeCat()
	docs := make([]*status.Document, 0, len(servers))
	for _, s := range servers {
		doc, err := src.Build(ctx, s.Name)
		if err != nil {
			return fmt.Errorf("status of %s: %w", s.Name, err)
		}
		docs = append(docs, doc)
	}
	var v any = docs
	if name != "" && name != "all" {
		v = docs[0]
	}
	return a.render(cmd.OutOrStdout(), v, func(w io.Writer) error {
		for i, d := range docs {
			if i > 0 {
				fmt.Fprintln(w)
			}
			if err := status.WriteText(w, d); err != nil {
				return err
			}
		}
		return nil
	})
}
