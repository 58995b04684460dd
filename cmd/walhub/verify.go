package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/walhub/walhub/basebackup"
	"github.com/walhub/walhub/catalog"
)

// verifyResult is what `walhub verify` reports for one backup.
type verifyResult struct {
	Server  string  `json:"server"`
	ID      string  `json:"id"`
	OK      bool    `json:"ok"`
	Files   int     `json:"files_checked"`
	Bytes   int64   `json:"bytes_checked"`
	Seconds float64 `json:"duration_seconds"`
	// Problems lists every mismatch; Error is set when verification could not run to the end.
	Problems []string `json:"problems,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// walVerifyResult is what `walhub verify --wal` reports for one server.
type walVerifyResult struct {
	Server       string   `json:"server"`
	OK           bool     `json:"ok"`
	Segments     int      `json:"segments_checked"`
	HistoryFiles int      `json:"history_files_checked"`
	Bytes        int64    `json:"bytes_read"`
	Seconds      float64  `json:"duration_seconds"`
	Problems     []string `json:"problems,omitempty"`
}

func (a *app) verifyCommand() *cobra.Command {
	var server, backup string
	var wal bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check stored backups against their manifests",
		Long: `Reads the stored archives of a backup, decompresses them, and checks every file
against the backup_manifest the server sent (size and checksum), and that no file of the
manifest is missing. Exits 1 when any backup fails the check, listing every problem.
--backup takes an id, "latest" (the newest done backup of each server whose files walhub
holds, so not a snapshot; the default), "all" (every one of those) or "none".
--wal also reads every cataloged WAL segment and history file and checks its size and
CRC-32C against the catalog. In an encrypted repository every object read has each of its
chunks authenticated, so a flipped bit or a truncation anywhere is found; --wal with
--backup all checks every object the catalog knows.`,
		Example: `  walhub verify --server main
  walhub verify --server main --backup 20261121T104500Z
  walhub verify --backup all --wal
  walhub verify --backup all --output=json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			servers, repo, err := a.readServers(cmd.Context(), server)
			if err != nil {
				return err
			}
			defer repo.Close()
			if backup == "none" && !wal {
				return errors.New("--backup none without --wal: nothing to verify")
			}
			type pick struct {
				server string
				b      catalog.Backup
			}
			var picks []pick
			for _, s := range servers {
				backups, err := serverBackups(cmd.Context(), s, repo)
				if err != nil {
					return err
				}
				var latest *catalog.Backup
				for i, b := range backups {
					switch {
					case backup == "all" && catalog.Verifiable(b):
						picks = append(picks, pick{s.Name, b})
					case backup == "latest" && catalog.Verifiable(b):
						latest = &backups[i]
					case backup == b.ID:
						if b.State != catalog.StateDone {
							return fmt.Errorf("backup %s of %s is %s: it has no files to verify", b.ID, s.Name, b.State)
						}
						if !catalog.Verifiable(b) {
							return fmt.Errorf("backup %s of %s is a %s: walhub holds no files of it to verify", b.ID, s.Name, b.Kind)
						}
						picks = append(picks, pick{s.Name, b})
					}
				}
				if latest != nil {
					picks = append(picks, pick{s.Name, *latest})
				}
			}
			if len(picks) == 0 && backup != "none" {
				if backup == "latest" || backup == "all" {
					return fmt.Errorf("no done backup with stored files to verify for %s", server)
				}
				return fmt.Errorf("no backup %s for %s", backup, server)
			}
			results := []verifyResult{}
			failed := 0
			for _, p := range picks {
				started := time.Now()
				checked, err := basebackup.Verify(cmd.Context(), basebackup.RepoOpener(repo, p.b), p.b)
				r := verifyResult{Server: p.server, ID: p.b.ID, OK: err == nil, Files: checked.Files, Bytes: checked.Bytes,
					Seconds: time.Since(started).Round(time.Millisecond).Seconds()}
				var ve *basebackup.VerifyError
				if errors.As(err, &ve) {
					r.Problems = ve.Problems
				} else if err != nil {
					r.Error = err.Error()
				}
				if err != nil {
					failed++
					a.log.Error("backup failed verification", "server", p.server, "backup", p.b.ID, "err", err)
				}
				results = append(results, r)
			}
			if !wal {
				if err := a.render(cmd.OutOrStdout(), results, func(w io.Writer) error { return printVerify(w, results) }); err != nil {
					return err
				}
				if failed > 0 {
					return fmt.Errorf("%d of %d backups failed verification", failed, len(results))
				}
				return nil
			}
			walResults := []walVerifyResult{}
			walFailed := 0
			for _, s := range servers {
				srv, err := repo.Catalog.ServerByName(cmd.Context(), s.Name)
				if errors.Is(err, catalog.ErrNotFound) {
					continue // nothing stored for it yet
				} else if err != nil {
					return err
				}
				started := time.Now()
				c, err := repo.VerifyWAL(cmd.Context(), srv)
				if err != nil {
					return fmt.Errorf("verify WAL of %s: %w", s.Name, err)
				}
				r := walVerifyResult{Server: s.Name, OK: len(c.Problems) == 0, Segments: c.Segments, HistoryFiles: c.HistoryFiles,
					Bytes: c.Bytes, Seconds: time.Since(started).Round(time.Millisecond).Seconds(), Problems: c.Problems}
				if !r.OK {
					walFailed++
					a.log.Error("WAL failed verification", "server", s.Name, "problems", len(c.Problems))
				}
				walResults = append(walResults, r)
			}
			doc := struct {
				Backups []verifyResult    `json:"backups"`
				WAL     []walVerifyResult `json:"wal"`
			}{results, walResults}
			if err := a.render(cmd.OutOrStdout(), doc, func(w io.Writer) error {
				if err := printVerify(w, results); err != nil {
					return err
				}
				return printVerifyWAL(w, walResults)
			}); err != nil {
				return err
			}
			if failed > 0 || walFailed > 0 {
				return fmt.Errorf("%d of %d backups and the WAL of %d of %d servers failed verification",
					failed, len(results), walFailed, len(walResults))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&server, "server", "s", "all", "server name, or all")
	cmd.Flags().StringVarP(&backup, "backup", "b", "latest", "backup id, latest, all or none")
	cmd.Flags().BoolVar(&wal, "wal", false, "also check every cataloged WAL segment and history file")
	a.addOutputFlag(cmd)
	return cmd
}

func printVerify(w io.Writer, results []verifyResult) error {
	for _, r := range results {
		if r.OK {
			fmt.Fprintf(w, "%s %s: OK, %d files, %s checked in %.1fs\n", r.Server, r.ID, r.Files, humanBytes(r.Bytes), r.Seconds)
			continue
		}
		fmt.Fprintf(w, "%s %s: FAILED", r.Server, r.ID)
		if r.Error != "" {
			fmt.Fprintf(w, ": %s", r.Error)
		}
		fmt.Fprintln(w)
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	return nil
}

func printVerifyWAL(w io.Writer, results []walVerifyResult) error {
	for _, r := range results {
		state := "OK"
		if !r.OK {
			state = "FAILED"
		}
		fmt.Fprintf(w, "%s WAL: %s, %d segments and %d history files, %s read in %.1fs\n", r.Server, state,
			r.Segments, r.HistoryFiles, humanBytes(r.Bytes), r.Seconds)
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	return nil
}
