package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
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
	if s.Slot != "walhub_main" || s.Compression != "zstd" || !*s.CreateSlot || !s.Synchronous || s.Backup.CompressOn != "auto" {
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
		{"unknown conninfo keyword", base + "[[server]]\nname = \"a\"\nconninfo = \"hots=db1 password=s3cret\"\n",
			`server "a": conninfo: conninfo "hots=db1 password=*****": unknown conninfo keyword "hots"`},
		{"conninfo does not parse", base + "[[server]]\nname = \"a\"\nconninfo = \"host='db1\"\n", `server "a": conninfo: `},
		{"dup", base + srv + srv, "declared twice"},
		{"bad duration", base + srv + "[server.retention]\nwindow = \"7 days\"\n", "invalid duration"},
		{"env missing", base + "[hub]\nread_tokens = [\"env:WALHUB_SURELY_UNSET\"]\n", "WALHUB_SURELY_UNSET is not set"},
		{"file missing", base + "[hub]\nread_tokens = [\"file:/nonexistent/token\"]\n", "hub.read_tokens[0]: open /nonexistent/token"},
		{"tls half", base + "[hub]\ntls_cert = \"/c\"\n", "give both or neither"},
		{"max rate", base + srv + "[server.backup]\nmax_rate = 1\n", "backup.max_rate"},
		{"compress on", base + srv + "[server.backup]\ncompress_on = \"client\"\n", `backup.compress_on: "client" is not one of auto, hub, server`},
		{"compress on server, stored plain", base + srv + "compression = \"none\"\n[server.backup]\ncompress_on = \"server\"\n",
			`backup.compress_on: "server" needs compression = "zstd", not "none"`},
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
	cfg, err := Parse("repository = \"/r\"\n[[server]]\nname = \"a\"\nconninfo = \"host=x\"\n[[server]]\nname = \"b\"\nconninfo = \"host=y\"\n")
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
	t.Setenv("WALHUB_METRICS_TOKEN", "m")
	// Uncomment every optional key too: they must all be valid.
	full := strings.NewReplacer("\n# ", "\n").Replace(example)
	for _, text := range []string{example, full} {
		if _, err := Parse(text); err != nil {
			t.Errorf("README example: %v\n%s", err, text)
		}
	}
}

const s3Config = `
repository = "s3://walhub-archive/site-a/hub1"
work_dir = "/var/lib/walhub-a"

[s3]
endpoint = "https://s3.example:9000"
force_path_style = true
access_key_id = "env:WALHUB_TEST_S3_KEY"
secret_access_key = "file:%s"
`

func TestParseS3(t *testing.T) {
	secretFile := t.TempDir() + "/secret"
	os.WriteFile(secretFile, []byte("the-secret-from-a-file\n"), 0o600)
	t.Setenv("WALHUB_TEST_S3_KEY", "AKIDTEST")
	cfg, err := Parse(fmt.Sprintf(s3Config, secretFile))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.S3
	if !cfg.IsS3() || s.Bucket != "walhub-archive" || s.Prefix != "site-a/hub1" || cfg.WorkDir != "/var/lib/walhub-a" {
		t.Errorf("bucket %q prefix %q work_dir %q", s.Bucket, s.Prefix, cfg.WorkDir)
	}
	if s.AccessKeyID != "AKIDTEST" || s.SecretAccessKey != "the-secret-from-a-file" {
		t.Errorf("credentials not read from the environment and the file")
	}
	if s.Region != "us-east-1" || s.PartSizeMB != 16 || s.UploadConcurrency != 4 || !s.ForcePathStyle ||
		s.MaxAttempts != 6 || s.StallTimeout.Duration != 30*time.Second || s.ResponseTimeout.Duration != 2*time.Minute {
		t.Errorf("defaults: %+v", s)
	}
	cfg, err = Parse(fmt.Sprintf(s3Config, secretFile) + "max_attempts = 12\nstall_timeout = \"5m\"\nresponse_timeout = \"10m\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.S3; s.MaxAttempts != 12 || s.StallTimeout.Duration != 5*time.Minute || s.ResponseTimeout.Duration != 10*time.Minute {
		t.Errorf("retries and timeouts: %+v", s)
	}

	// Credentials from the AWS environment variables when not configured;
	// work_dir defaults for a bucket, and is the repository for a directory.
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	cfg, err = Parse("repository = \"s3://b-1.x\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.S3.AccessKeyID != "AKIDENV" || cfg.S3.SecretAccessKey != "env-secret" || cfg.S3.Prefix != "" || cfg.WorkDir != DefaultWorkDir {
		t.Errorf("from the environment: %+v, work_dir %s", cfg.S3, cfg.WorkDir)
	}
	cfg, err = Parse("repository = \"/r\"\n")
	if err != nil || cfg.IsS3() || cfg.WorkDir != "/r" {
		t.Errorf("local: work_dir %q, %v", cfg.WorkDir, err)
	}
}

func TestParseS3ErrorsNameTheKey(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	repo := "repository = \"s3://bucket/p\"\n"
	tests := []struct{ name, text, want string }{
		{"bad bucket", "repository = \"s3://Bad_Bucket/p\"\n", "repository: bucket \"Bad_Bucket\""},
		{"no bucket", "repository = \"s3:///p\"\n", "not of the form s3://bucket/prefix"},
		{"dot-dot prefix", "repository = \"s3://bucket/a/../b\"\n", "repository: prefix"},
		{"empty segment", "repository = \"s3://bucket/a//b\"\n", "repository: prefix"},
		{"s3 section with a directory", "repository = \"/r\"\n[s3]\nregion = \"x\"\n", "s3: the section is for a repository in a bucket"},
		{"relative work_dir with a directory", "repository = \"/r\"\nwork_dir = \"w\"\n", "work_dir: \"w\" must be an absolute path"},
		{"relative work_dir", repo + "work_dir = \"w\"\n", "work_dir: \"w\" must be an absolute path"},
		{"bad endpoint", repo + "[s3]\nendpoint = \"s3.example\"\n", "s3.endpoint: \"s3.example\""},
		{"unknown s3 key", repo + "[s3]\nbucket = \"x\"\n", "unknown key s3.bucket"},
		{"part size", repo + "[s3]\npart_size_mb = 4\n", "s3.part_size_mb: 4"},
		{"concurrency", repo + "[s3]\nupload_concurrency = 65\n", "s3.upload_concurrency: 65"},
		{"attempts", repo + "[s3]\nmax_attempts = 101\n", "s3.max_attempts: 101 is out of range 1..100"},
		{"negative attempts", repo + "[s3]\nmax_attempts = -1\n", "s3.max_attempts: -1"},
		{"stall timeout too short", repo + "[s3]\nstall_timeout = \"500ms\"\n", "s3.stall_timeout: 500ms is out of range 1s..1h"},
		{"response timeout too long", repo + "[s3]\nresponse_timeout = \"2h\"\n", "s3.response_timeout: 2h0m0s is out of range 1s..1h"},
		{"bad response timeout", repo + "[s3]\nresponse_timeout = \"soon\"\n", "invalid duration \"soon\""},
		{"missing secret file", repo + "[s3]\nsecret_access_key = \"file:/nonexistent/s\"\n", "s3.secret_access_key: open /nonexistent/s"},
		{"unset env", repo + "[s3]\naccess_key_id = \"env:WALHUB_SURELY_UNSET\"\n", "s3.access_key_id: environment variable WALHUB_SURELY_UNSET is not set"},
		{"ca file", repo + "[s3]\nca_file = \"/nonexistent/ca.pem\"\n", "s3.ca_file"},
		{"read-only with servers", repo + "read_only = true\n[[server]]\nname = \"a\"\nconninfo = \"host=x\"\n", "read_only: a read-only hub streams from no server"},
		{"refresh without read-only", repo + "refresh_interval = \"1m\"\n", "refresh_interval: only for a read_only hub"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.text)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	t.Run("no credentials", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		_, err := Parse(repo)
		if err == nil || !strings.Contains(err.Error(), "s3.secret_access_key: required (or set the environment variable AWS_SECRET_ACCESS_KEY)") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestS3SecretNeverPrinted prints and logs the configuration every usual
// way: the secret never shows.
func TestS3SecretNeverPrinted(t *testing.T) {
	const secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
	t.Setenv("WALHUB_TEST_S3_SECRET", secret)
	cfg, err := Parse("repository = \"s3://bucket/p\"\n[s3]\naccess_key_id = \"AKID\"\nsecret_access_key = \"env:WALHUB_TEST_S3_SECRET\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.S3.SecretAccessKey) != secret {
		t.Fatal("secret not resolved")
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %s %q %x %d\n", cfg, cfg, cfg, cfg.S3.SecretAccessKey, cfg.S3.SecretAccessKey, cfg.S3.SecretAccessKey, cfg.S3.SecretAccessKey)
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "cfg", cfg, "s3", cfg.S3)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "cfg", cfg, "s3", cfg.S3)
	j, _ := json.Marshal(cfg)
	out.Write(j)
	if strings.Contains(out.String(), secret) || strings.Contains(out.String(), "AKID") {
		t.Fatalf("a credential is printed:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "[redacted]") {
		t.Fatalf("credentials not shown as redacted:\n%s", out.String())
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
