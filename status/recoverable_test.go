package status

import (
	"strings"
	"testing"
	"time"
)

// TestRecoverableWindowCheck: the window is reported with its length as
// perfdata; done backups none of which has all its WAL are critical.
func TestRecoverableWindowCheck(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	win := &RecoverableWindow{EarliestTime: t0, EarliestLSN: 0x3000100, EarliestBackup: "b1",
		LatestTime: t0.Add(time.Hour), LatestLSN: 0x9000000, LatestTimeLine: 1, LatestBackup: "b2"}
	tests := []struct {
		name  string
		doc   Document
		level Level
		msg   string
	}{
		{"window", Document{Recoverable: win, Backups: Backups{Count: 2}}, OK, "from 2026-12-02 10:00:00Z (0/3000100, end of backup b1) to 2026-12-02 11:00:00Z (0/9000000)"},
		{"no backup", Document{}, OK, "no backup yet"},
		{"no backup with its WAL", Document{Backups: Backups{Count: 1}}, Critical, "none has all its WAL"},
	}
	for _, tt := range tests {
		r := checkRecoverable(&tt.doc, nil, Probe{}, DefaultThresholds)
		if r.Level != tt.level || !strings.Contains(r.Message, tt.msg) {
			t.Errorf("%s: %s %q", tt.name, r.Level, r.Message)
		}
	}
	r := checkRecoverable(&Document{Recoverable: win, Backups: Backups{Count: 2}}, nil, Probe{}, DefaultThresholds)
	if len(r.Perf) != 1 || r.Perf[0].Label != "recoverable_window" || r.Perf[0].Value != 3600 {
		t.Errorf("perfdata %+v", r.Perf)
	}
	var b strings.Builder
	if err := WriteText(&b, &Document{Recoverable: win, Backups: Backups{Count: 2}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Recoverable       : 2026-12-02 10:00:00Z (0/3000100, end of backup b1) .. 2026-12-02 11:00:00Z (0/9000000 on timeline 1)") {
		t.Errorf("text:\n%s", b.String())
	}
}
