package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/walhub/walhub/storage"
)

// Settings are the recovery settings written into a restored data directory.
type Settings struct {
	// RestoreCommand fetches WAL (walfetch with the hub and server).
	RestoreCommand string
	// Standby writes standby.signal (a standby that follows); otherwise recovery.signal.
	Standby bool
	// PrimaryConninfo lets a standby stream once the archive is exhausted;
	// empty makes an archive-only standby.
	PrimaryConninfo string
	// PrimarySlot is primary_slot_name for the standby's streaming.
	PrimarySlot string
	Target      Target
}

// quote quotes a value for postgresql.conf.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Signal is the signal file of the mode asked for.
func (s Settings) Signal() string {
	if s.Standby {
		return "standby.signal"
	}
	return "recovery.signal"
}

// Lines returns the postgresql.auto.conf lines for the settings. A standby
// always gets primary_conninfo and primary_slot_name, empty when not asked
// for: postgresql.auto.conf is read last, so an empty value there also
// overrides one in a configuration file outside the data directory.
func (s Settings) Lines() []string {
	lines := []string{"restore_command = " + quote(s.RestoreCommand)}
	if s.Standby || s.PrimaryConninfo != "" {
		lines = append(lines, "primary_conninfo = "+quote(s.PrimaryConninfo))
	}
	if s.Standby || s.PrimarySlot != "" {
		lines = append(lines, "primary_slot_name = "+quote(s.PrimarySlot))
	}
	t := s.Target
	switch t.Kind() {
	case "time":
		lines = append(lines, "recovery_target_time = "+quote(t.Time.UTC().Format("2006-01-02 15:04:05.999999-07:00")))
	case "lsn":
		lines = append(lines, "recovery_target_lsn = "+quote(t.LSN.String()))
	case "xid":
		lines = append(lines, "recovery_target_xid = "+quote(t.XID))
	case "name":
		lines = append(lines, "recovery_target_name = "+quote(t.Name))
	case "immediate":
		lines = append(lines, "recovery_target = 'immediate'")
	}
	if t.Kind() != "" {
		action := t.Action
		if action == "" {
			action = "pause"
		}
		lines = append(lines, "recovery_target_action = "+quote(action))
		if t.Exclusive {
			lines = append(lines, "recovery_target_inclusive = off")
		}
	}
	if t.TimeLine != "" {
		lines = append(lines, "recovery_target_timeline = "+quote(t.TimeLine))
	}
	return lines
}

// Cleared is what Write took away from the restored directory: recovery
// settings and signal files that came with the backup.
type Cleared struct {
	// Settings are the lines commented out, as "file:line: text".
	Settings []string `json:"settings,omitempty"`
	// SignalFiles are the signal files removed.
	SignalFiles []string `json:"signal_files,omitempty"`
	// Unchecked are configuration files included from outside the data
	// directory: walhub cannot see what they set.
	Unchecked []string `json:"unchecked_includes,omitempty"`
}

// Write makes the recovery settings of dataDir exactly s. The settings a
// backup brings along (a backup of a standby has its primary_conninfo,
// primary_slot_name, restore_command and standby.signal; any recovery_target*)
// are commented out with a note in postgresql.conf, postgresql.auto.conf and
// the files they include from inside dataDir; both signal files are removed;
// s.Lines() are appended to postgresql.auto.conf and the signal file of the
// mode asked for is created. Everything is fsynced.
func (s Settings) Write(dataDir string) (Cleared, error) {
	var cl Cleared
	if s.Standby && s.Target.Kind() != "" {
		return cl, fmt.Errorf("a standby follows to the end of WAL: --standby and a recovery target do not go together")
	}
	stamp := time.Now().UTC().Format(time.RFC3339)
	seen := map[string]bool{}
	for _, name := range []string{"postgresql.conf", "postgresql.auto.conf"} {
		if err := clearConfFile(dataDir, filepath.Join(dataDir, name), stamp, seen, &cl); err != nil {
			return cl, err
		}
	}
	auto := filepath.Join(dataDir, "postgresql.auto.conf")
	text := fmt.Sprintf("\n# Recovery settings written by walhub restore at %s\n%s\n", stamp, strings.Join(s.Lines(), "\n"))
	if err := appendSynced(auto, text); err != nil {
		return cl, fmt.Errorf("write recovery settings: %w", err)
	}
	for _, name := range []string{"standby.signal", "recovery.signal"} {
		err := os.Remove(filepath.Join(dataDir, name))
		if err == nil {
			cl.SignalFiles = append(cl.SignalFiles, name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return cl, fmt.Errorf("remove %s: %w", name, err)
		}
	}
	if err := appendSynced(filepath.Join(dataDir, s.Signal()), ""); err != nil {
		return cl, fmt.Errorf("write %s: %w", s.Signal(), err)
	}
	return cl, storage.SyncDir(dataDir)
}

// recoverySetting matches a line that sets a recovery setting a restore must
// not inherit; group 1 is the name.
var recoverySetting = regexp.MustCompile(`(?i)^\s*(primary_conninfo|primary_slot_name|restore_command|recovery_target[a-z_]*)\s*(=|\s)`)

// includeLine matches include, include_if_exists and include_dir directives;
// group 1 is the directive, group 2 the quoted or bare path.
var includeLine = regexp.MustCompile(`(?i)^\s*(include_dir|include_if_exists|include)\s*=?\s*('(?:[^']|'')*'|\S+)`)

// clearConfFile comments out the recovery settings of one configuration file
// (rewritten durably only when something changes) and follows its includes.
func clearConfFile(dataDir, file, stamp string, seen map[string]bool, cl *Cleared) error {
	if seen[file] {
		return nil
	}
	seen[file] = true
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	rel, _ := filepath.Rel(dataDir, file)
	lines := strings.Split(string(data), "\n")
	changed := false
	var includes []string
	for i, l := range lines {
		if m := includeLine.FindStringSubmatch(l); m != nil {
			p := strings.ReplaceAll(strings.Trim(m[2], "'"), "''", "'")
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(file), p)
			}
			p = filepath.Clean(p)
			if r, err := filepath.Rel(dataDir, p); err != nil || r == ".." || strings.HasPrefix(r, "../") {
				cl.Unchecked = append(cl.Unchecked, fmt.Sprintf("%s:%d: %s", rel, i+1, strings.TrimSpace(l)))
				continue
			}
			if strings.EqualFold(m[1], "include_dir") {
				entries, _ := os.ReadDir(p)
				for _, e := range entries {
					if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") && !strings.HasPrefix(e.Name(), ".") {
						includes = append(includes, filepath.Join(p, e.Name()))
					}
				}
			} else {
				includes = append(includes, p)
			}
			continue
		}
		if recoverySetting.MatchString(l) {
			cl.Settings = append(cl.Settings, fmt.Sprintf("%s:%d: %s", rel, i+1, strings.TrimSpace(l)))
			lines[i] = "#" + l + "  # commented out by walhub restore at " + stamp + ": it came with the backup"
			changed = true
		}
	}
	if changed {
		if err := rewriteSynced(file, []byte(strings.Join(lines, "\n"))); err != nil {
			return err
		}
	}
	for _, inc := range includes {
		if err := clearConfFile(dataDir, inc, stamp, seen, cl); err != nil {
			return err
		}
	}
	return nil
}

// rewriteSynced replaces file durably and atomically (storage.WriteFile),
// keeping its mode and owner.
func rewriteSynced(file string, data []byte) error {
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	uid, gid := otherOwner(fi)
	if err := storage.WriteFile(file, data, fi.Mode().Perm(), uid, gid); err != nil {
		return fmt.Errorf("rewrite %s: %w", file, err)
	}
	return nil
}

// appendSynced appends text to file durably, rewriting it (rewriteSynced):
// a crash leaves the file as it was or with all of text, never half a line.
// A file it creates is made as createSynced does.
func appendSynced(file, text string) error {
	old, err := os.ReadFile(file)
	if err == nil {
		return rewriteSynced(file, append(old, text...))
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return createSynced(file, []byte(text))
}

// createSynced writes a new file of the data directory durably and
// atomically, mode 0600, given to the owner of its directory (the data
// directory, which a restore run as root gave to --owner), as rewriteSynced
// keeps a file's owner.
func createSynced(file string, data []byte) error {
	uid, gid := -1, -1
	// Only root can give files away.
	if os.Geteuid() == 0 {
		di, err := os.Stat(filepath.Dir(file))
		if err != nil {
			return err
		}
		uid, gid = otherOwner(di)
	}
	return storage.WriteFile(file, data, 0o600, uid, gid)
}

// otherOwner is fi's owner when it is not walhub's own user and group, else
// -1, -1 (see storage.WriteFile): what a file written for fi must be given.
func otherOwner(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && (int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid()) {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}
