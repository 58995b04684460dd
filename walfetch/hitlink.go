package walfetch

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A spool hit without walfetch: the restore_command's own shell can take a
// segment the prefetcher downloaded and verified, with its builtin read and
// one rename (by TakeProgram, for less than a cp costs, or by mv, for what
// a cp costs: nothing is copied), instead of starting walfetch (a Go
// program: on a virtual machine where its start is dear, a walfetch hit
// cost 1.4x a cp call, 93% of it the Go runtime's start). walfetch runs
// only when the shell did not find the segment. See ShellRestoreCommand.
//
// The shell cannot name the spool by its key (a hash of the hub, the server,
// the system identifier and the boot id): the prefetcher gives it a name the
// shell can read, a symbolic link beside the spool's directory,
//
//	<spool>/<boot id>.<postmaster start>.<postmaster pid>.<hub tag> -> <key>
//
// the kernel's boot id and the first and third lines of the data directory's
// postmaster.pid (the postmaster's pid and the time it started, in seconds),
// which the shell reads, and a hash of the hub URL and the server name
// (HubTag), written into the restore_command line itself. The prefetcher,
// which identified the cluster by its pg_control when it started, makes it
// for the postmaster that runs it, and removes it when it exits. A link made
// for another postmaster (one that ran before a crash of the machine, whose
// spool files may be torn, or before the data directory was replaced by
// another cluster's) has another name, which the shell never reads; so has
// the link of a prefetcher of another hub, when the restore_command was
// changed to a new one: walfetch runs, and starts the new hub's prefetcher,
// instead of the shell taking the old one's segments (which would keep it
// alive). The next prefetcher removes a link whose spool is gone.

// bootIDPath is the kernel's boot id, new at every boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// HubTag is the part of the spool's link names that says which hub and
// server the spool is of: the FNV-1a hash of s's hub URL and server name, in
// 16 hex digits.
func HubTag(s Settings) string { return hashHex(s.URL, s.Server) }

// hashHex is the FNV-1a hash of parts, each followed by a newline but the
// last, in 16 hex digits: it tells spools apart, it guards against no
// adversary, and it links no crypto package into the spool hit.
func hashHex(parts ...string) string {
	h := fnv.New64a()
	h.Write([]byte(strings.Join(parts, "\n")))
	return fmt.Sprintf("%016x", h.Sum64())
}

// HitLinkName is the name of the link to the spool of settings s for the
// postmaster that runs the data directory dataDir now (from its
// postmaster.pid).
func HitLinkName(dataDir string, s Settings) (string, error) {
	boot, err := ReadSmallFile(bootIDPath)
	if err != nil {
		return "", err
	}
	pidFile := filepath.Join(dataDir, "postmaster.pid")
	b, err := ReadSmallFile(pidFile)
	if err != nil {
		return "", err
	}
	lines := strings.SplitN(string(b), "\n", 4)
	if len(lines) < 4 {
		return "", fmt.Errorf("%s: fewer than 3 lines", pidFile)
	}
	pid, start := lines[0], lines[2]
	if _, err := strconv.ParseUint(pid, 10, 32); err != nil {
		return "", fmt.Errorf("%s: line 1 is not a pid: %q", pidFile, pid)
	}
	if _, err := strconv.ParseUint(start, 10, 64); err != nil {
		return "", fmt.Errorf("%s: line 3 is not a start time: %q", pidFile, start)
	}
	name := string(bytes.TrimSpace(boot)) + "." + start + "." + pid + "." + HubTag(s)
	if !IsHitLink(name) {
		return "", fmt.Errorf("%s: not a boot id: %q", bootIDPath, bytes.TrimSpace(boot))
	}
	return name, nil
}

// IsHitLink tells whether name has the form of a spool's link: a boot id (a
// UUID), two numbers and a hub tag, separated by dots.
func IsHitLink(name string) bool {
	parts := strings.Split(name, ".")
	if len(parts) != 4 || len(parts[0]) != 36 || !IsSpoolKey(parts[3]) {
		return false
	}
	for i, c := range parts[0] {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
		} else if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	for _, n := range parts[1:3] {
		if _, err := strconv.ParseUint(n, 10, 64); err != nil {
			return false
		}
	}
	return true
}

// TakeProgram is the restore_command's spool hit in C (cmd/walfetch-take),
// installed beside walfetch by make build: it renames the segment into %p,
// or executes walfetch in its place. With it, the shell neither forks nor
// starts mv (coreutils, with libselinux, libacl and libpcre2 to load), and a
// hit costs less than a cp. See ShellRestoreCommand.
const TakeProgram = "walfetch-take"

// TakeBinary is the path of TakeProgram beside the walfetch at walfetchPath,
// or "" when it is not installed there.
func TakeBinary(walfetchPath string) string {
	if !filepath.IsAbs(walfetchPath) {
		return ""
	}
	p := filepath.Join(filepath.Dir(walfetchPath), TakeProgram)
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return ""
	}
	return p
}

// ShellRestoreCommand is the restore_command that takes a prefetched segment
// from the spool of settings s without starting walfetch, and runs command
// (a walfetch command line without %f %p, quoted for the shell) for
// anything else: a segment not prefetched (yet), a history file, no link.
// The shell reads the link's name with its builtin read; take, when not "",
// is TakeProgram (TakeBinary), which the shell executes in its own place,
// and which executes walfetch in its own on a miss; without it, the shell
// runs mv, then walfetch when mv fails. The segment taken is the one the
// prefetcher verified, renamed into %p (atomic: %p is complete or absent);
// the prefetcher follows recovery by the renames out of its spool
// (inotify), as it follows walfetch by its datagrams.
//
// The spool must lie in pg_wal (the default, pg_wal/walfetch-spool): a
// rename works only within a file system (mv would copy, not atomically).
func ShellRestoreCommand(s Settings, command, take string) (string, error) {
	clean := filepath.Clean(s.Spool)
	if filepath.IsAbs(clean) || !strings.HasPrefix(clean, "pg_wal/") {
		return "", fmt.Errorf("the spool %s is not in pg_wal: the restore_command takes a segment from the spool with a rename, which works only within pg_wal's file system (keep the default, pg_wal/walfetch-spool)", s.Spool)
	}
	if command == "" {
		return "", errors.New("no walfetch command")
	}
	link := "read -r b <" + bootIDPath + " && { read -r p; read -r d; read -r t; } <postmaster.pid && "
	segment := ShellQuote(clean) + `/"$b.$t.$p".` + HubTag(s) + `/%f`
	if take != "" {
		return link + "exec " + ShellQuote(take) + " " + segment + " %p " + command + " %f %p || exec " + command + " %f %p", nil
	}
	return link + "mv -f " + segment + " %p 2>/dev/null || " + command + " %f %p", nil
}

// ShellQuote quotes s for /bin/sh when it holds anything but characters
// that need no quoting.
func ShellQuote(s string) string {
	safe := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./:=@,+", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// PublishHitLink makes the link to the spool sp of settings s for the
// postmaster running dataDir (HitLinkName), replacing one of that name
// atomically, and returns its path. It makes none when the spool is not on
// pg_wal's file system (mv would copy) or there is no postmaster.pid to name
// it by.
func (sp *Spool) PublishHitLink(dataDir string, s Settings) (string, error) {
	name, err := HitLinkName(dataDir, s)
	if err != nil {
		return "", err
	}
	var spoolSt, walSt syscall.Stat_t
	if err := syscall.Stat(sp.Dir, &spoolSt); err != nil {
		return "", &os.PathError{Op: "stat", Path: sp.Dir, Err: err}
	}
	walDir := filepath.Join(dataDir, "pg_wal")
	if err := syscall.Stat(walDir, &walSt); err != nil {
		return "", &os.PathError{Op: "stat", Path: walDir, Err: err}
	}
	if spoolSt.Dev != walSt.Dev {
		return "", fmt.Errorf("the spool %s is not on the file system of %s", sp.Dir, walDir)
	}
	link := filepath.Join(sp.Root, name)
	tmp := filepath.Join(sp.Root, tmpLinkName(name))
	os.Remove(tmp)
	if err := os.Symlink(filepath.Base(sp.Dir), tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return link, nil
}

// tmpLinkName is where PublishHitLink makes the link name before renaming it
// into place.
func tmpLinkName(name string) string { return "." + name + ".tmp" }

// WithdrawHitLink removes link when it still leads to the spool sp (a
// prefetcher started since for another spool may have replaced it).
func (sp *Spool) WithdrawHitLink(link string) {
	if target, err := os.Readlink(link); err == nil && target == filepath.Base(sp.Dir) {
		os.Remove(link)
	}
}

// RemoveStaleHitLinks removes the links in the spool's root whose spool is
// gone, and those to this spool but keep (links made for a postmaster that
// ran before); so too such links that a prefetcher which died while making
// them left under their temporary names.
func (sp *Spool) RemoveStaleHitLinks(keep string) {
	entries, err := os.ReadDir(sp.Root)
	if err != nil {
		return
	}
	for _, e := range entries {
		link := filepath.Join(sp.Root, e.Name())
		name := e.Name()
		if n, ok := strings.CutPrefix(name, "."); ok && tmpLinkName(strings.TrimSuffix(n, ".tmp")) == name {
			name = strings.TrimSuffix(n, ".tmp")
		}
		if e.Type()&os.ModeSymlink == 0 || !IsHitLink(name) || link == keep {
			continue
		}
		target, err := os.Readlink(link)
		if err != nil {
			continue
		}
		if _, err := os.Stat(link); errors.Is(err, os.ErrNotExist) || target == filepath.Base(sp.Dir) {
			os.Remove(link)
		}
	}
}
