package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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
