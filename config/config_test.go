package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

const good = `
repository = "/var/lib/walhub"

[hub]
listen = "0.0.0.0:7480"
read_tokens = ["env:WALHUB_TEST_READ"]
admin_tokens = ["s3cret"]

[[server]]
name = "main"
conninfo = "host=db1 user=walhub"
synchronous = true
[server.retention]
redundancy = 2
window = "7d"
`

func TestParseGood(t *testing.T) {
	t.Setenv("WALHUB_TEST_READ", "reader")
	cfg, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	s, err := cfg.Server("main")
	if err != nil {
		t.Fatal(err)
	}
	if s.Slot != "walhub_main" || s.Compression != "zstd" || !*s.CreateSlot || !s.Synchronous {
		t.Errorf("defaults not applied: %+v", s)
	}
	if s.Retention.Window.Duration != 7*24*time.Hour || s.Retention.MinRedundancy != 1 {
		t.Errorf("retention = %+v", s.Retention)
	}
	if cfg.Hub.ReadTokens[0] != "reader" || cfg.Hub.URL != "http://0.0.0.0:7480" {
		t.Errorf("hub = %+v", cfg.Hub)
	}
}

func TestParseErrorsNameTheKey(t *testing.T) {
	base := "repository = \"/r\"\n"
	srv := "[[server]]\nname = \"a\"\nconninfo = \"host=x\"\n"
	tests := []struct {
		name, text, want string
	}{
		{"unknown top key", base + "repo = 1\n", "unknown key repo"},
		{"encryption without key", base + "[encryption]\n", "encryption.key: required"},
		{"encryption key inline", base + "[encryption]\nkey = \"AGE-SECRET-KEY-1QQQ\"\n", "encryption.key: want file:/path or env:NAME"},
		{"encryption relative file", base + "[encryption]\nkey = \"file:k.txt\"\n", "encryption.key: file: needs an absolute path"},
		{"encryption bad previous", base + "[encryption]\nkey = \"env:K\"\nprevious_keys = [\"env:\"]\n", "encryption.previous_keys[0]: want"},
		{"encryption unknown key", base + "[encryption]\nkey = \"env:K\"\ncipher = \"x\"\n", "unknown key encryption.cipher"},
		{"unknown server key", base + srv + "slots = \"x\"\n", "unknown key server.slots"},
		{"missing repository", srv, "repository: required"},
		{"relative repository", "repository = \"r\"\n", "must be an absolute path"},
		{"bad compression", base + srv + "compression = \"lz5\"\n", `server "a": compression: "lz5"`},
		{"bad level", base + srv + "compression_level = 9\n", "compression_level: 9"},
		{"bad name", base + "[[server]]\nname = \"A B\"\nconninfo = \"x\"\n", "name: \"A B\""},
		{"no conninfo", base + "[[server]]\nname = \"a\"\n", "conninfo: required"},
		{"dup", base + srv + srv, "declared twice"},
		{"bad duration", base + srv + "[server.retention]\nwindow = \"7 days\"\n", "invalid duration"},
		{"env missing", base + "[hub]\nread_tokens = [\"env:WALHUB_SURELY_UNSET\"]\n", "WALHUB_SURELY_UNSET is not set"},
		{"file missing", base + "[hub]\nread_tokens = [\"file:/nonexistent/token\"]\n", "hub.read_tokens[0]: open /nonexistent/token"},
		{"tls half", base + "[hub]\ntls_cert = \"/c\"\n", "give both or neither"},
		{"max rate", base + srv + "[server.backup]\nmax_rate = 1\n", "backup.max_rate"},
		{"syntax", base + "x = \n", "line 2"},
		{"wrong type", base + srv + "synchronous = \"yes\"\n", "synchronous"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.text)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestTokenFromFile(t *testing.T) {
	path := t.TempDir() + "/read.token"
	if err := os.WriteFile(path, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("repository = \"/r\"\n[hub]\nread_tokens = [\"file:" + path + "\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hub.ReadTokens[0] != "from-file" {
		t.Errorf("token = %q", cfg.Hub.ReadTokens[0])
	}
}

func TestSelect(t *testing.T) {
	cfg, err := Parse("repository = \"/r\"\n[[server]]\nname = \"a\"\nconninfo = \"x\"\n[[server]]\nname = \"b\"\nconninfo = \"y\"\n")
	if err != nil {
		t.Fatal(err)
	}
	all, err := cfg.Select("all")
	if err != nil || len(all) != 2 {
		t.Fatalf("Select(all) = %v, %v", all, err)
	}
	if _, err := cfg.Select("c"); err == nil || !strings.Contains(err.Error(), "configured: a, b") {
		t.Fatalf("Select(c) err = %v", err)
	}
}

// TestREADMEExampleParses keeps the README's configuration example valid.
func TestREADMEExampleParses(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "```toml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no ```toml block in README.md")
	}
	t.Setenv("WALHUB_READ_TOKEN", "r")
	t.Setenv("WALHUB_ADMIN_TOKEN", "a")
	// Uncomment every optional key too: they must all be valid.
	full := strings.NewReplacer("\n# ", "\n").Replace(example)
	for _, text := range []string{example, full} {
		if _, err := Parse(text); err != nil {
			t.Errorf("README example: %v\n%s", err, text)
		}
	}
}

func TestParseEncryption(t *testing.T) {
	cfg, err := Parse("repository = \"/r\"\n[encryption]\nkey = \"file:/etc/walhub/new.key\"\nprevious_keys = [\"env:OLD_KEY\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	if e := cfg.Encryption; e == nil || e.Key != "file:/etc/walhub/new.key" || len(e.PreviousKeys) != 1 {
		t.Fatalf("encryption = %+v", e)
	}
	if cfg, _ := Parse("repository = \"/r\"\n"); cfg.Encryption != nil {
		t.Fatal("encryption set without the section")
	}
	_, err = Parse("repository = \"/r\"\n[encryption]\nkey = \"AGE-SECRET-KEY-1SECRETSECRET\"\n")
	if err == nil || strings.Contains(err.Error(), "SECRETSECRET") {
		t.Fatalf("a key given inline: %v", err)
	}
}
