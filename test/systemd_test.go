package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var units = []string{"walhub.service", "walhub-backup.service", "walhub-backup.timer"}

// TestSystemdUnitsVerify runs `systemd-analyze verify` on the shipped units.
// verify insists that ExecStart's binary exists, so the units are checked in a
// copy whose only change is the binary's path.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install it with `apt-get install -y systemd`")
	}
	dir := t.TempDir()
	bin := filepath.Join(binDir, "walhub")
	var paths []string
	for _, u := range units {
		data, err := os.ReadFile(filepath.Join("..", "systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(data), "/usr/local/bin/walhub", bin)
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, paths...)...)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The daemon's exposure as systemd rates it: "OK" (below 4.0) or better.
	out, err := exec.Command(analyze, "security", "--offline=true", paths[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level >= 4.0 {
		t.Errorf("walhub.service exposure %.1f, want below 4.0 (OK)", level)
	}
}

// TestSystemdUnitsHardening checks the settings the issue asks for, so a later
// edit cannot drop one silently.
func TestSystemdUnitsHardening(t *testing.T) {
	want := map[string][]string{
		"walhub.service": {"User=walhub", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict", "ReadWritePaths=/var/lib/walhub",
			"NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=\n"},
		"walhub-backup.service": {"Type=oneshot", "User=walhub", "ProtectSystem=strict", "NoNewPrivileges=yes"},
		"walhub-backup.timer":   {"OnCalendar=daily", "Persistent=true", "RandomizedDelaySec="},
	}
	for unit, settings := range want {
		data, err := os.ReadFile(filepath.Join("..", "systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range settings {
			if !strings.Contains(string(data), s) {
				t.Errorf("%s lacks %q", unit, strings.TrimSpace(s))
			}
		}
	}
}
