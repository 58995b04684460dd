package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// run executes the CLI in-process with args and returns its output and error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	a := &app{}
	root := a.rootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestEveryCommandHasHelpWithExample(t *testing.T) {
	a := &app{}
	for _, cmd := range a.rootCommand().Commands() {
		if cmd.Name() == "help" || cmd.Name() == "completion" {
			continue
		}
		subs := cmd.Commands()
		if len(subs) == 0 {
			subs = append(subs, cmd)
		}
		for _, c := range subs {
			if c.Example == "" {
				t.Errorf("%s has no example in its help", c.CommandPath())
			}
			if c.Short == "" {
				t.Errorf("%s has no short description", c.CommandPath())
			}
		}
	}
}

func TestBadConfigNamesKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "walhub.toml")
	os.WriteFile(path, []byte("repository = \"/tmp/x\"\nlisten = \"x\"\n"), 0o600)
	a := &app{configPath: path}
	_, err := a.config()
	if err == nil || !strings.Contains(err.Error(), "unknown key listen") {
		t.Fatalf("err = %v", err)
	}
	_, err = (&app{configPath: filepath.Join(t.TempDir(), "none.toml")}).config()
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestUnknownLogLevelIsAnError(t *testing.T) {
	_, err := run(t, "--log-level", "loud", "status")
	if err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("err = %v", err)
	}
}

func TestLogFormatLevelAndQuiet(t *testing.T) {
	tests := []struct {
		args    []string
		logged  string // what a.log.Info and a.log.Warn leave, "" for nothing
		wantErr string
	}{
		{args: []string{"--log-format", "json"}, logged: `{"time":`},
		{args: []string{"--log-format", "text"}, logged: "level=INFO msg=info-line"},
		{args: []string{"-q"}, logged: "level=WARN msg=warn-line"},
		{args: []string{"--log-level", "error"}},
		{args: []string{"--log-format", "xml"}, wantErr: `--log-format: "xml" is not one of text, json`},
		{args: []string{"-q", "--log-level", "debug"}, wantErr: "-q and --log-level"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			a := &app{}
			root := a.rootCommand()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			// status fails on the missing configuration after the logger is set up.
			root.SetArgs(append(tt.args, "--config", filepath.Join(t.TempDir(), "none.toml"), "status"))
			err := root.ExecuteContext(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			out.Reset()
			a.log.Info("info-line")
			a.log.Warn("warn-line")
			got := out.String()
			switch {
			case tt.logged == "" && got != "":
				t.Errorf("logged %q, want nothing", got)
			case !strings.Contains(got, tt.logged):
				t.Errorf("logged %q, want %q", got, tt.logged)
			}
			if slices.Contains(tt.args, "-q") && strings.Contains(got, "info-line") {
				t.Errorf("-q logged an informational line: %q", got)
			}
		})
	}
}

func TestVersionFlag(t *testing.T) {
	out, err := run(t, "--version")
	if err != nil || !strings.HasPrefix(out, "walhub ") || !strings.Contains(out, " commit ") || !strings.Contains(out, runtime.Version()) {
		t.Fatalf("--version = %q, %v", out, err)
	}
}
