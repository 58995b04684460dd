package hub

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/walname"
)

// withConfig puts a configuration with extra [hub] lines and one server "main" in force.
func (f *fixture) withConfig(t *testing.T, hubLines string) {
	t.Helper()
	cfg, err := config.Parse(`repository = "` + f.dir + `"
[hub]
read_tokens = ["` + readToken + `"]
admin_tokens = ["` + adminToken + `"]
` + hubLines + `
[[server]]
name = "main"
conninfo = "host=127.0.0.1 port=1"
`)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetConfig(cfg)
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStatusPageIsServedWithItsAssetsAndAStrictPolicy(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	for path, want := range map[string]string{"/": "text/html", "/ui/app.js": "text/javascript", "/ui/app.css": "text/css"} {
		resp := f.get(t, http.MethodGet, path, "", nil)
		b := body(t, resp)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), want) || len(b) < 100 {
			t.Errorf("GET %s: %d %s, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	// The page holds no data and loads nothing from elsewhere.
	page := body(t, f.get(t, http.MethodGet, "/", "", nil))
	for _, bad := range []string{"http://", "https://", "<style", "onclick"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
}

func TestServerListNeedsAReadToken(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	f.withConfig(t, "")
	if resp := f.get(t, http.MethodGet, api.ServersPath, "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a token: %d", resp.StatusCode)
	}
	resp := f.get(t, http.MethodGet, api.ServersPath, readToken, nil)
	var list api.Servers
	if err := json.Unmarshal([]byte(body(t, resp)), &list); err != nil || resp.StatusCode != 200 ||
		len(list.Servers) != 1 || list.Servers[0] != "main" {
		t.Errorf("with a read token: %d %+v %v", resp.StatusCode, list, err)
	}
}

func TestMetricsTokensProtectMetricsWhenSet(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	if resp := f.get(t, http.MethodGet, "/metrics", "", nil); resp.StatusCode != 200 {
		t.Errorf("no metrics_tokens: /metrics without a token answered %d, want 200", resp.StatusCode)
	}
	f.withConfig(t, `metrics_tokens = ["scrape-secret"]`)
	for _, c := range []struct {
		token string
		want  int
	}{{"", 401}, {"wrong", 401}, {"scrape-secret", 200}, {readToken, 200}, {adminToken, 200}} {
		resp := f.get(t, http.MethodGet, "/metrics", c.token, nil)
		b := body(t, resp)
		if resp.StatusCode != c.want {
			t.Errorf("token %q: %d, want %d", c.token, resp.StatusCode, c.want)
		}
		if c.want == 200 && !strings.Contains(b, "walhub_build_info{") {
			t.Errorf("token %q: no walhub_build_info in\n%.500s", c.token, b)
		}
		if c.want == 401 && strings.Contains(b, "walhub_") {
			t.Errorf("token %q: metrics shown without a good token", c.token)
		}
	}
	// A metrics token reads nothing else.
	if resp := f.get(t, http.MethodGet, api.WALPath("main", walname.SegmentName(1, 3, segSize)), "scrape-secret", nil); resp.StatusCode != 401 {
		t.Errorf("WAL with the metrics token: %d, want 401", resp.StatusCode)
	}
}

func TestWALRequestsAreCountedByOutcome(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	for _, r := range []struct{ path, token string }{
		{api.WALPath("main", walname.SegmentName(1, 3, segSize)), readToken},     // served
		{api.WALPath("main", walname.SegmentName(1, 7, segSize)), readToken},     // the hole: not_found
		{api.WALPath("main", walname.SegmentName(1, 40, segSize)), readToken},    // not yet: not_found
		{api.WALPath("nosuch", walname.SegmentName(1, 3, segSize)), readToken},   // unknown_server
		{api.WALPath("main", "00000002.history"), readToken},                     // history served
		{api.WALPath("main", walname.SegmentName(1, 3, segSize)), "wrong"},       // unauthorized
		{api.PeekPath("main", walname.SegmentName(1, 3, segSize), 4), readToken}, // peek served
		{api.WALPath("main", "bogus"), readToken},                                // bad_request
	} {
		body(t, f.get(t, http.MethodGet, r.path, r.token, nil))
	}
	want := []string{
		`walhub_hub_wal_requests_total{kind="segment",result="served"} 1`,
		`walhub_hub_wal_requests_total{kind="segment",result="not_found"} 2`,
		`walhub_hub_wal_requests_total{kind="segment",result="unknown_server"} 1`,
		`walhub_hub_wal_requests_total{kind="segment",result="unauthorized"} 1`,
		`walhub_hub_wal_requests_total{kind="segment",result="bad_request"} 1`,
		`walhub_hub_wal_requests_total{kind="history",result="served"} 1`,
		`walhub_hub_wal_requests_total{kind="peek",result="served"} 1`,
	}
	var text string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		text = body(t, f.get(t, http.MethodGet, "/metrics", "", nil))
		missing := 0
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("metrics lack %s", w)
		}
	}
}
