package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/crypt"
)

func (a *app) keygenCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "keygen --output FILE",
		Short: "Make a key for encrypting the repository at rest",
		Long: `Writes a new age X25519 key (the same format as age-keygen) to FILE, readable by its
owner only, and prints its key ID. Never overwrites a file. The key is written whole and
fsynced, with its directory (created, mode 0750, if missing), before the ID is printed.
The key goes into the [encryption] section as key = "file:FILE" (or into an environment
variable, key = "env:NAME"). To rotate: make a new key, make it the key, and move the old one to
previous_keys; new objects use the new key, old ones stay readable.

Keep a copy of every key away from the repository: without it, nothing encrypted
under it can be restored.`,
		Example: `  walhub keygen --output /etc/walhub/repo-2026.key`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "" {
				return fmt.Errorf("--output: required (the key is never printed)")
			}
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return fmt.Errorf("generate key: %w", err)
			}
			pub := id.Recipient().String()
			// Written whole under a temporary name, then linked to
			// --output, which fails when a file is there: no existing
			// file is replaced, and no torn key is left under its name.
			f, err := storage.CreateTemp(output)
			if err != nil {
				return fmt.Errorf("--output: %w", err)
			}
			if _, err := fmt.Fprintf(f, "# created: %s\n# key ID: %s\n# public key: %s\n%s\n",
				time.Now().UTC().Format(time.RFC3339), crypt.KeyID(pub), pub, id); err != nil {
				f.Abort()
				return fmt.Errorf("write %s: %w", output, err)
			}
			if err := f.CommitNew(); errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("--output: %s already exists: keygen never replaces a file (the key in it may be the only copy); choose another name", output)
			} else if err != nil {
				return fmt.Errorf("--output: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s written to %s\n\n[encryption]\nkey = \"file:%s\"\n", crypt.KeyID(pub), output, output)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write the key to (must not exist)")
	return cmd
}
