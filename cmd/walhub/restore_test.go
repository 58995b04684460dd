package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walhub/walhub/walfetch"
)

// TestRestoreCommandLine: walhub restore writes the shell's spool hit by
// walfetch-take when it is installed beside walfetch, else by mv, and
// walfetch for the rest.
func TestRestoreCommandLine(t *testing.T) {
	for _, tt := range []struct {
		how      string
		take     bool
		wantHit  string
		wantRest string
	}{
		{"walfetch-take beside walfetch", true, "&& exec DIR/walfetch-take pg_wal/walfetch-spool/", " || exec DIR/walfetch --url http://hub:7480 --server main %f %p"},
		{"walfetch alone", false, "&& mv -f pg_wal/walfetch-spool/", " 2>/dev/null || DIR/walfetch --url http://hub:7480 --server main %f %p"},
	} {
		t.Run(tt.how, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "walfetch")
			names := []string{"walfetch"}
			if tt.take {
				names = append(names, walfetch.TakeProgram)
			}
			for _, n := range names {
				if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			line := restoreCommandLine(bin, "http://hub:7480", "main", "")
			hit, rest := strings.ReplaceAll(tt.wantHit, "DIR", dir), strings.ReplaceAll(tt.wantRest, "DIR", dir)
			if !strings.HasPrefix(line, "read -r b </proc/sys/kernel/random/boot_id && ") || !strings.Contains(line, hit) || !strings.HasSuffix(line, rest) {
				t.Errorf("restore_command %q; want it to contain %q and end in %q", line, hit, rest)
			}
		})
	}
}
