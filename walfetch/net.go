package walfetch

import (
	"fmt"
	"os"
	"path/filepath"
)

// NetProgram is walfetch's other program, installed beside it: everything
// that talks to the hub (downloads, verification, the prefetcher) lives
// there, in package hubfetch. walfetch itself links none of it (no net/http,
// TLS or zstd), so that the call PostgreSQL makes for every segment, served
// from the spool by a rename most of the time, starts as fast as a Go
// program can; it executes NetProgram when it must go to the hub.
const NetProgram = "walfetch-net"

// ServeArg, first argument of NetProgram, serves one WAL file (ServeArg
// NAME DST), with the settings walfetch resolved in SettingsEnv.
const ServeArg = "--serve"

// SettingsEnv carries the settings to NetProgram (through the environment,
// so the token does not show in ps).
const SettingsEnv = "WALFETCH_SETTINGS"

// NetBinary is the path of NetProgram beside the running program.
func NetBinary() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find %s: %w", NetProgram, err)
	}
	p := filepath.Join(filepath.Dir(exe), NetProgram)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s must be installed beside %s (make build puts both in bin/): %w", NetProgram, exe, err)
	}
	return p, nil
}
