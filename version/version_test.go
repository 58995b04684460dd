package version

import "testing"

func TestStringNamesVersionCommitAndGo(t *testing.T) {
	tests := []struct {
		info Info
		want string
	}{
		{Info{Version: "v1.2.0", Commit: "0123456789abcdef0123", Time: "2026-12-01T10:00:00Z", Go: "go1.26.0"},
			"walhub v1.2.0 commit 0123456789ab (2026-12-01T10:00:00Z) go1.26.0 "},
		{Info{Version: "devel", Commit: "0123456789abcdef", Modified: true, Go: "go1.26.0"},
			"walhub devel commit 0123456789ab+modified go1.26.0 "},
		{Info{Version: "devel", Go: "go1.26.0"}, "walhub devel commit unknown go1.26.0 "},
	}
	for _, tt := range tests {
		if got := tt.info.String("walhub"); len(got) < len(tt.want) || got[:len(tt.want)] != tt.want {
			t.Errorf("String = %q, want prefix %q", got, tt.want)
		}
	}
}

func TestVersionSetAtBuildTimeWins(t *testing.T) {
	old := Version
	defer func() { Version = old }()
	Version = "v9.9.9"
	if got := Get().Version; got != "v9.9.9" {
		t.Errorf("Get().Version = %q with Version set", got)
	}
}
