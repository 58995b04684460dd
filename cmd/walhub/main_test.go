package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
			var out bytes.Buffer
			a := &app{logOut: &out}
			root := a.rootCommand()
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

// mustInit creates the repository of the configuration at path.
func mustInit(t *testing.T, path string) {
	t.Helper()
	if out, err := run(t, "--config", path, "init"); err != nil {
		t.Fatalf("walhub init: %v\n%s", err, out)
	}
}

func TestOnlyInitCreatesTheRepository(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "mnt", "walhub")
	path := filepath.Join(dir, "walhub.toml")
	os.WriteFile(path, []byte(fmt.Sprintf("repository = %q\n[[server]]\nname = \"main\"\nconninfo = \"host=127.0.0.1 port=1\"\n", repo)), 0o600)
	for _, args := range [][]string{{"list-backups"}, {"status"}, {"expire", "--dry-run"}, {"verify"}} {
		_, err := run(t, append([]string{"--config", path}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "repository "+repo+": no walhub repository there") ||
			!strings.Contains(err.Error(), "walhub init --config "+path) {
			t.Errorf("%s on a missing repository: err = %v, want the path and the fix", args[0], err)
		}
		if _, err := os.Stat(repo); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s created the repository directory", args[0])
		}
	}
	// A directory with files but no catalog (a volume whose catalog was lost) is not taken over.
	os.MkdirAll(filepath.Join(repo, "main", "wal"), 0o750)
	if _, err := run(t, "--config", path, "init"); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("init over a non-empty directory: err = %v", err)
	}
	os.RemoveAll(repo)
	out, err := run(t, "--config", path, "init")
	if err != nil || !strings.Contains(out, "repository "+repo+" created") {
		t.Fatalf("init: %q, %v", out, err)
	}
	if out, err := run(t, "--config", path, "init"); err != nil || !strings.Contains(out, "exists; nothing to do") {
		t.Fatalf("second init: %q, %v", out, err)
	}
	if out, err := run(t, "--config", path, "list-backups"); err != nil || !strings.Contains(out, "no backups") {
		t.Fatalf("list-backups after init: %q, %v", out, err)
	}
}
