// Package version says which build a walhub program is: the version and
// commit it was built from and the Go release that built it, for --version.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release, set when building one:
//
//	go build -ldflags "-X github.com/walhub/walhub/version.Version=v1.2.0" ./cmd/...
//
// When empty, the module version Go recorded from the commit is used.
var Version string

// Commit is the revision, set by `make build` with -X like Version, for
// builds without Go's own VCS stamping (-buildvcs=false, or no .git).
var Commit string

// Info describes a build.
type Info struct {
	// Version is the release, or Go's pseudo-version of the commit, or "devel".
	Version string
	// Commit is the VCS revision the binary was built from ("" when unknown).
	Commit string
	// Modified is set when the work tree had uncommitted changes.
	Modified bool
	// Time is the commit's time, RFC 3339 ("" when unknown).
	Time string
	// Go is the Go release that built the binary.
	Go string
}

// Get returns the running binary's build information.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = s.Value
				}
			case "vcs.time":
				info.Time = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	return info
}

// String is the line --version prints for program, e.g.
// "walhub v1.2.0 commit 0123456789ab (2026-12-01T10:00:00Z) go1.26.0 linux/amd64".
func (i Info) String(program string) string {
	commit := i.Commit
	if commit == "" {
		commit = "unknown"
	} else if len(commit) > 12 {
		commit = commit[:12]
	}
	if i.Modified {
		commit += "+modified"
	}
	s := fmt.Sprintf("%s %s commit %s", program, i.Version, commit)
	if i.Time != "" {
		s += " (" + i.Time + ")"
	}
	return s + " " + i.Go + " " + runtime.GOOS + "/" + runtime.GOARCH
}
