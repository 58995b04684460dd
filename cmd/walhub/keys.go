package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage/crypt"
)

// keyView is one line of `walhub keys`: a key and what the catalog holds under it.
type keyView struct {
	ID string `json:"id"`
	// Role is "current" (encrypts new objects), "previous" (decrypts only),
	// "missing" (objects are under it but it is not configured: they cannot be
	// read) or "none" (objects stored without encryption).
	Role         string `json:"role"`
	Segments     int64  `json:"segments"`
	SegmentBytes int64  `json:"segment_bytes"`
	HistoryFiles int64  `json:"history_files"`
	Backups      int64  `json:"backups"`
	BackupFiles  int64  `json:"backup_files"`
}

func (a *app) keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Show the encryption keys and what each one protects",
		Long: `Lists the keys of the [encryption] section by ID (never the keys themselves): the
current one, which encrypts new objects, and the previous ones, which only decrypt; and
for each, how many segments, history files and backups the catalog holds under it. A
previous key that protects nothing any more (expire removed its objects) may be retired.
Exits 1 when the catalog holds objects under a key that is not configured: those cannot
be read until it is.`,
		Example: `  walhub keys
  walhub keys --output=json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			var kr *crypt.Keyring
			if cfg.Encryption != nil {
				if kr, err = crypt.LoadKeyring(cfg.Encryption.Key, cfg.Encryption.PreviousKeys); err != nil {
					return fmt.Errorf("encryption: %w", err)
				}
			}
			repo, err := a.repository(cmd.Context())
			if err != nil {
				return err
			}
			defer repo.Close()
			use, err := repo.Catalog.KeyUsage(cmd.Context())
			if err != nil {
				return err
			}
			views := keyViews(kr, use)
			if err := a.render(cmd.OutOrStdout(), views, func(w io.Writer) error { return printKeys(w, kr, views) }); err != nil {
				return err
			}
			for _, v := range views {
				if v.Role == "missing" {
					return fmt.Errorf("the catalog holds objects under key %s, which is not configured", v.ID)
				}
			}
			return nil
		},
	}
	a.addOutputFlag(cmd)
	return cmd
}

// keyViews joins the configured keys (kr is nil without [encryption]) with
// the catalog's usage: configured keys first, in their order.
func keyViews(kr *crypt.Keyring, use []catalog.KeyUse) []keyView {
	views := []keyView{}
	var ids []string
	if kr != nil {
		ids = kr.IDs()
	}
	for i, id := range ids {
		role := "previous"
		if i == 0 {
			role = "current"
		}
		views = append(views, keyView{ID: id, Role: role})
	}
	for _, u := range use {
		i := slices.Index(ids, u.KeyID)
		if i < 0 {
			role := "missing"
			if u.KeyID == "" {
				role = "none"
			}
			views = append(views, keyView{ID: u.KeyID, Role: role})
			i = len(views) - 1
		}
		v := &views[i]
		v.Segments, v.SegmentBytes, v.HistoryFiles = u.Segments, u.SegmentBytes, u.HistoryFiles
		v.Backups, v.BackupFiles = u.Backups, u.BackupFiles
	}
	return views
}

func printKeys(w io.Writer, kr *crypt.Keyring, views []keyView) error {
	if kr == nil {
		fmt.Fprintln(w, "the repository is not encrypted (no [encryption] section)")
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tROLE\tSEGMENTS\tSTORED\tHISTORY FILES\tBACKUPS")
	for _, v := range views {
		id := v.ID
		if id == "" {
			id = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\n", id, v.Role, v.Segments, humanBytes(v.SegmentBytes), v.HistoryFiles, v.Backups)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, v := range views {
		switch {
		case v.Role == "previous" && v.Segments == 0 && v.HistoryFiles == 0 && v.BackupFiles == 0:
			fmt.Fprintf(w, "key %s protects nothing the catalog knows of: it may be removed from previous_keys\n", v.ID)
		case v.Role == "missing":
			fmt.Fprintf(w, "key %s is not configured: the objects under it cannot be read until it is\n", v.ID)
		case v.Role == "none" && kr != nil:
			fmt.Fprintln(w, "objects stored without encryption are in the catalog: this repository was not always encrypted")
		}
	}
	return nil
}
