package hub

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub/api"
)

func TestWithoutHostPaths(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"failed to connect to `user=walhub database=postgres`: /var/run/postgresql/.s.PGSQL.5432 (/var/run/postgresql): dial error: dial unix /var/run/postgresql/.s.PGSQL.5432: connect: no such file or directory",
			"failed to connect to `user=walhub database=postgres`: <path> (<path>): dial error: dial unix <path>: connect: no such file or directory"},
		{"host=/tmp/sock port=5432", "host=<path> port=5432"},
		{"write /srv/walhub/main/wal/000000010000000000000003.partial: no space left on device",
			"write <path>: no space left on device"},
		{"/var/lib/walhub", "<path>"},
		{"flushed 0/3000148 of 1A/FF000000", "flushed 0/3000148 of 1A/FF000000"},
		{"hub unreachable at https://hub.example:7480/v1/servers/main", "hub unreachable at https://hub.example:7480/v1/servers/main"},
		{"retention window 7d, kept 2/3", "retention window 7d, kept 2/3"},
	} {
		if got := withoutHostPaths(tt.in); got != tt.want {
			t.Errorf("withoutHostPaths(%q)\n = %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

type failingSnapshots struct{ err error }

func (f failingSnapshots) Start(context.Context, string, string, bool) (api.SnapshotStarted, error) {
	return api.SnapshotStarted{}, f.err
}
func (f failingSnapshots) Stop(context.Context, string) (api.SnapshotStopped, error) {
	return api.SnapshotStopped{}, f.err
}

func TestHTTPAnswersCarryNoHostPaths(t *testing.T) {
	sockErr := "dial unix /tmp/walhub-pg-1234/sock/.s.PGSQL.5432: connect: no such file or directory"
	f := newFixture(t, "zstd", func(_ context.Context, server string) (any, error) {
		return map[string]any{"server": server, "repository": map[string]string{"path": "/srv/walhub"},
			"postgres": map[string]string{"error": "cannot connect: " + sockErr}, "flushed_lsn": "0/3000148"}, nil
	})
	f.srv.o.Snapshots = failingSnapshots{errors.New("pg_backup_start: " + sockErr)}
	cfg, err := config.Parse("repository = \"/srv/walhub\"\n[hub]\nadmin_tokens = [\"" + adminToken + "\"]\nread_tokens = [\"" + readToken + "\"]\n[[server]]\nname = \"main\"\nconninfo = \"host=/tmp/sock\"\n")
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetConfig(cfg)
	resp := f.get(t, http.MethodPost, "/v1/servers/main/snapshot/start", adminToken, nil)
	var eb api.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(eb.Error, "/tmp/") || !strings.Contains(eb.Error, "dial unix <path>") {
		t.Errorf("snapshot start: %d %+v", resp.StatusCode, eb)
	}
	raw, err := f.client(t, "main", readToken).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "/tmp/") || strings.Contains(string(raw), "/srv/") || !strings.Contains(string(raw), `"0/3000148"`) {
		t.Errorf("status document: %s", raw)
	}
	resp = f.get(t, http.MethodGet, "/v1/servers/main/status", readToken, nil)
	body, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(body), "/tmp/") {
		t.Errorf("status route: %s", body)
	}
}
