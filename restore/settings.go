package restore

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Settings are the recovery settings written into a restored data directory.
type Settings struct {
	// RestoreCommand fetches WAL (walfetch with the hub and server).
	RestoreCommand string
	// Standby writes standby.signal (a standby that follows); otherwise recovery.signal.
	Standby bool
	// PrimaryConninfo lets a standby stream once the archive is exhausted.
	PrimaryConninfo string
	// PrimarySlot is primary_slot_name for the standby's streaming.
	PrimarySlot string
	Target      Target
}

// quote quotes a value for postgresql.conf.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Lines returns the postgresql.auto.conf lines for the settings.
func (s Settings) Lines() []string {
	lines := []string{"restore_command = " + quote(s.RestoreCommand)}
	if s.PrimaryConninfo != "" {
		lines = append(lines, "primary_conninfo = "+quote(s.PrimaryConninfo))
	}
	if s.PrimarySlot != "" {
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

// Write appends the settings to postgresql.auto.conf (PostgreSQL reads it last,
// so they win over the copied postgresql.conf) and creates the signal file.
func (s Settings) Write(dataDir string) error {
	if s.Standby && s.Target.Kind() != "" {
		return fmt.Errorf("a standby follows to the end of WAL: --standby and a recovery target do not go together")
	}
	auto := filepath.Join(dataDir, "postgresql.auto.conf")
	f, err := os.OpenFile(auto, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write recovery settings: %w", err)
	}
	text := fmt.Sprintf("\n# Recovery settings written by walhub restore at %s\n%s\n",
		time.Now().UTC().Format(time.RFC3339), strings.Join(s.Lines(), "\n"))
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("write recovery settings: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write recovery settings: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write recovery settings: %w", err)
	}
	signal := "recovery.signal"
	if s.Standby {
		signal = "standby.signal"
	}
	if err := os.WriteFile(filepath.Join(dataDir, signal), nil, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", signal, err)
	}
	return nil
}
