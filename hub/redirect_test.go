package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/walhub/walhub/hub/client"
)

// TestClientFollowsNoRedirect: walfetch's client (and restore --hub-url's)
// never follows a redirect, to another origin, from https to http, or on the
// same hub: the token goes nowhere else and the error says why.
func TestClientFollowsNoRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Write([]byte("not WAL"))
	}))
	defer other.Close()
	redirectTo := func(target string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target+r.URL.Path, http.StatusFound)
		})
	}
	plain := httptest.NewServer(redirectTo(other.URL))
	defer plain.Close()
	tlsHub := httptest.NewTLSServer(redirectTo(other.URL)) // https to http
	defer tlsHub.Close()
	same := httptest.NewServer(nil)
	same.Config.Handler = redirectTo(same.URL + "/elsewhere")
	defer same.Close()
	for _, hub := range []*httptest.Server{plain, tlsHub, same} {
		c, err := client.New(client.Options{URL: hub.URL, Server: "main", Token: readToken})
		if err != nil {
			t.Fatal(err)
		}
		if hub == tlsHub {
			c = tlsClient(t, hub)
		}
		var buf bytes.Buffer
		_, err = c.FetchWAL(context.Background(), "000000010000000000000001", &buf)
		if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), "redirects to") {
			t.Errorf("%s: err = %v, want a refusal that names the redirect", hub.URL, err)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("%d requests reached the redirect's target", n)
	}
}

// tlsClient is a client that trusts the test server's certificate.
func tlsClient(t *testing.T, srv *httptest.Server) *client.Client {
	t.Helper()
	dir := t.TempDir()
	path := dir + "/ca.pem"
	writePEM(t, path, srv.Certificate().Raw)
	c, err := client.New(client.Options{URL: srv.URL, Server: "main", Token: readToken, CAFile: path})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writePEM(t *testing.T, path string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestClientBehindAPathPrefix: a hub URL with a path (a reverse proxy that
// serves the hub under /walhub) works; a 404 that is not the hub's JSON (the
// proxy's own, a wrong prefix) is a refusal, never "not in the hub".
func TestClientBehindAPathPrefix(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	mux := http.NewServeMux()
	mux.Handle("/walhub/", http.StripPrefix("/walhub", f.srv.Handler()))
	proxy := httptest.NewServer(mux)
	defer proxy.Close()
	name := "000000010000000000000003"
	for _, url := range []string{proxy.URL + "/walhub", proxy.URL + "/walhub/"} {
		c, err := client.New(client.Options{URL: url, Server: "main", Token: readToken})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := c.FetchWAL(context.Background(), name, &buf); err != nil || buf.Len() != segSize {
			t.Errorf("%s: %v, %d bytes", url, err, buf.Len())
		}
		if _, err := c.FetchWAL(context.Background(), "000000010000000000000007", &buf); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("%s: a segment the hub lacks: %v", url, err)
		}
	}
	wrong, _ := client.New(client.Options{URL: proxy.URL + "/other", Server: "main", Token: readToken})
	var buf bytes.Buffer
	_, err := wrong.FetchWAL(context.Background(), name, &buf)
	if !errors.Is(err, client.ErrRefused) || errors.Is(err, client.ErrNotFound) {
		t.Errorf("a 404 of the proxy: %v, want a refusal", err)
	}
}

func TestHealthzIsReadinessLivezIsLiveness(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	var ready error = errors.New("main: receiver waiting: write /srv/walhub/main/wal/x.partial: no space left on device")
	f.srv.o.Ready = func() error { return ready }
	resp := f.get(t, http.MethodGet, "/healthz", "", nil)
	var body struct{ Code, Error string }
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body.Error, "main: receiver waiting") || strings.Contains(body.Error, "/srv/") {
		t.Errorf("healthz while not storing: %d %+v", resp.StatusCode, body)
	}
	if resp := f.get(t, http.MethodGet, "/livez", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("livez while not storing: %d", resp.StatusCode)
	}
	ready = nil
	if resp := f.get(t, http.MethodGet, "/healthz", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("healthz while storing: %d", resp.StatusCode)
	}
}
