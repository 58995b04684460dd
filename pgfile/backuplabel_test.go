package pgfile

import "testing"

func TestBackupLabelStartSegment(t *testing.T) {
	tests := []struct {
		name, label, want string
		ok                bool
	}{
		{"PostgreSQL 15", "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\nCHECKPOINT LOCATION: 0/9000060\n" +
			"BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-12-03 04:01:05 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n",
			"000000010000000000000009", true},
		{"another timeline", "START WAL LOCATION: 1/A2000028 (file 0000000300000001000000A2)\n", "0000000300000001000000A2", true},
		{"no start line", "CHECKPOINT LOCATION: 0/9000060\n", "", false},
		{"no file", "START WAL LOCATION: 0/9000028\n", "", false},
		{"not a segment name", "START WAL LOCATION: 0/9000028 (file 00000002.history)\n", "", false},
		{"unterminated", "START WAL LOCATION: 0/9000028 (file 000000010000000000000009", "", false},
		{"empty", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := BackupLabelStartSegment([]byte(tt.label))
			if got != tt.want || ok != tt.ok {
				t.Errorf("BackupLabelStartSegment = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
