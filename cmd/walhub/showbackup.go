package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/walhub/walhub/basebackup"
	"github.com/walhub/walhub/catalog"
)

// backupDetail is everything `walhub show-backup` says about one backup.
type backupDetail struct {
	backupView
	// CompressionRatio is the size as sent over the size as stored.
	CompressionRatio float64 `json:"compression_ratio,omitempty"`
	// CompressedOn is where the archives were compressed: "server" or "hub";
	// "" when they were not, or by a walhub that did not record it.
	CompressedOn string           `json:"compressed_on,omitempty"`
	Tablespaces  []tablespaceView `json:"tablespaces"`
	// WAL is the WAL from the backup's start to its stop and whether the hub
	// holds it; WALError says why it could not be told.
	WAL      *basebackup.NeededWAL `json:"wal,omitempty"`
	WALError string                `json:"wal_error,omitempty"`
}

// tablespaceView is one archive of a backup: the base directory (OID 0) or a
// tablespace.
type tablespaceView struct {
	OID        uint32 `json:"oid"`
	Location   string `json:"location,omitempty"`
	Archive    string `json:"archive"`
	Size       int64  `json:"size"`
	StoredSize int64  `json:"stored_size"`
}

func (a *app) showBackupCommand() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "show-backup ID",
		Short: "Show one backup: positions, times, sizes, tablespaces and the WAL it needs",
		Long: `Shows one backup: its start and stop LSN and timelines, when it started and finished
and how long it took, its size as sent and as stored with the compression ratio, its
tablespaces (original locations and sizes), and the WAL from its start to its stop
position that a restore needs to become consistent, with whether the hub holds all of it.
ID is as walhub list-backups shows it.`,
		Example: `  walhub show-backup 20261121T104500Z
  walhub show-backup 20261121T104500Z --server main --output=json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			servers, repo, err := a.readServers(ctx, server)
			if err != nil {
				return err
			}
			defer repo.Close()
			cat := repo.Catalog
			for _, s := range servers {
				backups, err := serverBackups(ctx, s, repo)
				if err != nil {
					return err
				}
				for _, b := range backups {
					if b.ID != args[0] {
						continue
					}
					srv, err := cat.ServerByName(ctx, s.Name)
					if err != nil {
						return err
					}
					d := detailOf(s.Name, b)
					if wal, err := basebackup.BackupWAL(ctx, cat, srv, b); err != nil {
						d.WALError = err.Error()
					} else {
						d.WAL = &wal
					}
					return a.render(cmd.OutOrStdout(), d, func(w io.Writer) error { return printDetail(w, d) })
				}
			}
			return fmt.Errorf("no backup %s for %s: see walhub list-backups", args[0], server)
		},
	}
	cmd.Flags().StringVarP(&server, "server", "s", "all", "server name, or all")
	a.addOutputFlag(cmd)
	return cmd
}

func detailOf(server string, b catalog.Backup) backupDetail {
	d := backupDetail{backupView: viewOf(server, b, nil), Tablespaces: []tablespaceView{}}
	if b.StoredSize > 0 && b.OriginalSize > 0 {
		d.CompressionRatio = float64(b.OriginalSize) / float64(b.StoredSize)
	}
	for _, f := range b.Files {
		if f.Name == basebackup.ManifestName {
			continue
		}
		if f.CompressedOn != "" {
			d.CompressedOn = f.CompressedOn
		}
		d.Tablespaces = append(d.Tablespaces, tablespaceView{OID: f.Tablespace, Location: f.Location, Archive: f.Name,
			Size: f.Size, StoredSize: f.StoredSize})
	}
	return d
}

func printDetail(w io.Writer, d backupDetail) error {
	p := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-18s: %s\n", label, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(w, "Backup %s of server %s\n", d.ID, d.Server)
	state := d.State
	if state == catalog.StateWaitingWAL {
		state = "waiting for WAL"
	}
	p("Kind and state", "%s, %s", d.Kind, state)
	if d.Reason != "" {
		p("Reason", "%s", d.Reason)
	}
	if d.Label != "" {
		p("Label", "%s", d.Label)
	}
	p("Start", "LSN %s, timeline %d", dash(d.StartLSN), d.StartTLI)
	p("Stop", "LSN %s, timeline %d", dash(d.StopLSN), d.StopTLI)
	p("Started", "%s", timeText(d.StartedAt))
	if d.FinishedAt != "" {
		p("Finished", "%s (took %s)", timeText(d.FinishedAt), (time.Duration(d.Seconds * float64(time.Second))).Round(time.Millisecond))
	}
	if d.Kind == catalog.KindSnapshot {
		p("Files", "outside walhub (an external snapshot; walhub restore --snapshot-dir finishes a copy)")
	} else {
		ratio := "-"
		if d.CompressionRatio > 0 {
			ratio = fmt.Sprintf("%.2f", d.CompressionRatio)
		}
		compression := dash(d.Compression)
		if d.CompressedOn != "" {
			compression += ", compressed by the " + d.CompressedOn
		}
		p("Size", "%s as sent, %s stored (%s), ratio %s", humanBytes(d.Size), humanBytes(d.StoredSize), compression, ratio)
		for i, t := range d.Tablespaces {
			label := ""
			if i == 0 {
				label = "Tablespaces"
			}
			where := "base directory"
			if t.OID != 0 {
				where = fmt.Sprintf("%d at %s", t.OID, t.Location)
			}
			p(label, "%s: %s, %s stored (%s)", where, humanBytes(t.Size), humanBytes(t.StoredSize), t.Archive)
		}
	}
	switch {
	case d.WAL == nil:
		p("WAL needed", "unknown: %s", d.WALError)
	case d.WAL.Complete:
		p("WAL needed", "%s to %s (%d segments): all in the hub", d.WAL.FirstSegment, d.WAL.LastSegment, d.WAL.Segments)
	default:
		p("WAL needed", "%s to %s (%d segments): MISSING %v", d.WAL.FirstSegment, d.WAL.LastSegment, d.WAL.Segments, d.WAL.Missing)
	}
	return nil
}

// timeText shows an RFC 3339 time in the local zone, as list-backups does.
func timeText(s string) string {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return s
	}
	return t.Local().Format("2006-01-02 15:04:05 MST")
}
