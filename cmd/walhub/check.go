package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/walhub/walhub/status"
)

// checkOptions are the flags of walhub check.
type checkOptions struct {
	nagios         bool
	th             status.Thresholds
	lagWarnMiB     int64
	lagCritMiB     int64
	connectTimeout time.Duration
}

func (a *app) checkCommand() *cobra.Command {
	o := &checkOptions{th: status.DefaultThresholds}
	cmd := &cobra.Command{
		Use:   "check [--server NAME|all]",
		Short: "Run health checks (OK/WARNING/CRITICAL), optionally as a Nagios plugin",
		Long: `Run named checks on one server or all, each OK, WARNING, CRITICAL or UNKNOWN with a hint
saying what to do: connection, replication connection, privileges (each right walhub's
role lacks, with the exact GRANT that gives it), wal_level, max_wal_senders,
replication slot, receiver (process alive and its state fresh, never just a lock),
wal continuity from the oldest backup, last wal age, last backup age, minimum redundancy,
failed backups, repository disk space, system id.

On a read-only hub (read_only = true) the servers are those its catalog follows;
the checks that need PostgreSQL, a receiver or the writing hub's settings are left
to the hub that writes the repository (one OK line, "read-only hub", names them) and
"catalog refresh" is added: WARNING when the last successful refresh is older than
--refresh-age-warning (default 3 × refresh_interval), CRITICAL beyond
--refresh-age-critical (default 10 × refresh_interval) or when none has succeeded.

Exit status: 0 all OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (as Nagios plugins).
--nagios prints one line: "WALHUB CRITICAL - ... | perfdata".`,
		Example: `  walhub check
  walhub check --server main --nagios
  walhub check --output=json --backup-age-critical 50h`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := serverArg(cmd, args)
			if err != nil {
				return err
			}
			return a.runCheck(cmd, name, o)
		},
	}
	a.addOutputFlag(cmd)
	addServerFlag(cmd)
	f := cmd.Flags()
	f.BoolVar(&o.nagios, "nagios", false, "print one Nagios plugin line with perfdata")
	f.DurationVar(&o.th.WALAgeWarning, "wal-age-warning", o.th.WALAgeWarning, "warn when the newest stored segment is older than this while the server has newer ones")
	f.DurationVar(&o.th.WALAgeCritical, "wal-age-critical", o.th.WALAgeCritical, "critical beyond this")
	f.DurationVar(&o.th.BackupAgeWarning, "backup-age-warning", o.th.BackupAgeWarning, "warn when the last done backup is older than this")
	f.DurationVar(&o.th.BackupAgeCritical, "backup-age-critical", o.th.BackupAgeCritical, "critical beyond this")
	f.Int64Var(&o.lagWarnMiB, "lag-warning-mib", o.th.LagWarning>>20, "warn when the receiver trails the server by this many MiB")
	f.Int64Var(&o.lagCritMiB, "lag-critical-mib", o.th.LagCritical>>20, "critical beyond this")
	f.Float64Var(&o.th.DiskFreeWarning, "disk-free-warning", o.th.DiskFreeWarning, "warn when the repository's file system has at most this percent free")
	f.Float64Var(&o.th.DiskFreeCritical, "disk-free-critical", o.th.DiskFreeCritical, "critical at or below this")
	f.IntVar(&o.th.FreeSendersWarning, "free-senders-warning", o.th.FreeSendersWarning, "warn when at most this many wal senders are free")
	f.IntVar(&o.th.FreeSendersCritical, "free-senders-critical", o.th.FreeSendersCritical, "critical at or below this")
	f.DurationVar(&o.th.RefreshAgeWarning, "refresh-age-warning", 0, "read-only hub: warn when the last successful catalog refresh is older than this (0: 3 × refresh_interval)")
	f.DurationVar(&o.th.RefreshAgeCritical, "refresh-age-critical", 0, "read-only hub: critical beyond this (0: 10 × refresh_interval)")
	f.DurationVar(&o.connectTimeout, "connect-timeout", 5*time.Second, "timeout of each connection to PostgreSQL")
	return cmd
}

// checkReport is the JSON form of walhub check.
type checkReport struct {
	Level   status.Level    `json:"level"`
	Results []status.Result `json:"results"`
}

func (a *app) runCheck(cmd *cobra.Command, name string, o *checkOptions) error {
	out := cmd.OutOrStdout()
	o.th.LagWarning, o.th.LagCritical = o.lagWarnMiB<<20, o.lagCritMiB<<20
	results, err := a.checks(cmd, name, o)
	if err != nil {
		// A check that cannot run is UNKNOWN, and a Nagios plugin must still print its line.
		if o.nagios {
			fmt.Fprintf(out, "WALHUB UNKNOWN - %v\n", err)
		}
		return &exitError{code: int(status.Unknown), err: err}
	}
	levels := make([]status.Level, len(results))
	for i, r := range results {
		levels[i] = r.Level
	}
	level := status.Worst(levels...)
	switch {
	case o.nagios:
		err = status.WriteNagios(out, results, name == "" || name == "all")
	default:
		err = a.render(out, checkReport{Level: level, Results: results}, func(w io.Writer) error {
			if err := status.WriteChecks(w, results); err != nil {
				return err
			}
			_, err := fmt.Fprintf(w, "Overall: %s\n", level)
			return err
		})
	}
	if err != nil {
		return err
	}
	if level == status.OK {
		return nil
	}
	n := 0
	for _, l := range levels {
		if l != status.OK {
			n++
		}
	}
	return &exitError{code: int(level), err: fmt.Errorf("check: %s (%d of %d checks not OK)", level, n, len(results))}
}

func (a *app) checks(cmd *cobra.Command, name string, o *checkOptions) ([]status.Result, error) {
	if a.output != "text" && a.output != "json" && a.output != "" {
		return nil, fmt.Errorf("--output: %q is not one of text, json", a.output)
	}
	ctx := cmd.Context()
	src, servers, closeCat, err := a.statusSource(ctx, name)
	if err != nil {
		return nil, err
	}
	defer closeCat()
	src.ConnectTimeout = o.connectTimeout
	var all []status.Result
	for _, s := range servers {
		_, results, err := src.Check(ctx, s.Name, o.th)
		if err != nil {
			return nil, fmt.Errorf("check %s: %w", s.Name, err)
		}
		all = append(all, results...)
	}
	if len(all) == 0 {
		return nil, errors.New("no check ran")
	}
	return all, nil
}
