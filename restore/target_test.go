package restore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
)

var t0 = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)

func backups() []catalog.Backup {
	return []catalog.Backup{
		{ID: "a", State: catalog.StateDone, StopLSN: 0x3000000, FinishedAt: t0.Add(1 * time.Hour)},
		{ID: "b", State: catalog.StateDone, StopLSN: 0x6000000, FinishedAt: t0.Add(2 * time.Hour)},
		{ID: "c", State: catalog.StateFailed, StopLSN: 0, FinishedAt: t0.Add(3 * time.Hour), Reason: "checksum"},
		{ID: "d", State: catalog.StateRunning},
	}
}

func TestChooseBackup(t *testing.T) {
	tests := []struct {
		name   string
		id     string
		target Target
		want   string
		err    string
	}{
		{"latest", "", Target{}, "b", ""},
		{"named", "a", Target{}, "a", ""},
		{"time between", "", Target{Time: t0.Add(90 * time.Minute)}, "a", ""},
		{"time after all", "", Target{Time: t0.Add(5 * time.Hour)}, "b", ""},
		{"time before all", "", Target{Time: t0}, "", "before the end of every backup"},
		{"lsn", "", Target{LSN: 0x5000000}, "a", ""},
		{"lsn before all", "", Target{LSN: 0x1000000}, "", "before the end of every backup"},
		{"named too late", "b", Target{LSN: 0x5000000}, "", "ends after the lsn target"},
		{"unknown", "zz", Target{}, "", "no backup zz"},
		{"failed named", "c", Target{}, "", "is failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ChooseBackup(backups(), tt.id, tt.target)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || b.ID != tt.want {
				t.Fatalf("got %s, %v; want %s", b.ID, err, tt.want)
			}
		})
	}
	if _, err := ChooseBackup(nil, "", Target{}); err == nil || !strings.Contains(err.Error(), "no successful backup") {
		t.Fatalf("no backups: %v", err)
	}
}

func TestTargetValidate(t *testing.T) {
	bad := []Target{
		{Name: "x", Immediate: true},
		{Action: "explode", Name: "x"},
		{Action: "promote"},
		{XID: "12a"},
		{TimeLine: "two"},
		{Exclusive: true, Name: "x"},
	}
	for _, b := range bad {
		if err := b.Validate(); err == nil {
			t.Errorf("%+v accepted", b)
		}
	}
	good := []Target{{}, {Name: "x", Action: "promote"}, {XID: "1234", Exclusive: true}, {TimeLine: "3"}, {TimeLine: "latest"}}
	for _, g := range good {
		if err := g.Validate(); err != nil {
			t.Errorf("%+v: %v", g, err)
		}
	}
}

func TestParseTime(t *testing.T) {
	for _, s := range []string{"2026-11-21T10:30:00Z", "2026-11-21 10:30:00+00", "2026-11-21 10:30:00.123456+00:00", "2026-11-21 10:30:00 UTC"} {
		if _, err := ParseTime(s); err != nil {
			t.Errorf("ParseTime(%q): %v", s, err)
		}
	}
	if _, err := ParseTime("yesterday"); err == nil {
		t.Error("ParseTime(yesterday) accepted")
	}
}

func TestSettingsWrite(t *testing.T) {
	dir := t.TempDir()
	s := Settings{RestoreCommand: "walfetch --server 'main' %f %p", Target: Target{Name: "before_drop", Action: "promote"}}
	if _, err := s.Write(dir); err != nil {
		t.Fatal(err)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, "postgresql.auto.conf"))
	for _, want := range []string{"restore_command = 'walfetch --server ''main'' %f %p'", "recovery_target_name = 'before_drop'",
		"recovery_target_action = 'promote'"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("postgresql.auto.conf lacks %q:\n%s", want, conf)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "recovery.signal")); err != nil {
		t.Error("no recovery.signal")
	}
	if _, err := (Settings{Standby: true, Target: Target{Immediate: true}}).Write(t.TempDir()); err == nil {
		t.Error("standby with a target accepted")
	}
}
