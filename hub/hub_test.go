package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/labstack/echo/v4"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/test/walfeed"
	"github.com/walhub/walhub/walname"
)

const (
	segSize    = 1 << 20
	readToken  = "read-secret"
	adminToken = "admin-secret"
)

type fixture struct {
	srv     *Server
	http    *httptest.Server
	dir     string
	repo    *repository.Repository
	cat     *catalog.Catalog
	feeder  *walfeed.Feeder
	segs    map[string][]byte
	history []byte
}

// segment makes recognisable, partly compressible segment content.
func segment(seed uint64) []byte {
	b := make([]byte, segSize)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := 0; i < len(b); i += 8192 {
		for j := i; j < i+512; j++ {
			b[j] = byte(r.Uint32())
		}
	}
	return b
}

func newFixture(t *testing.T, compression string, status func(context.Context, string) (any, error)) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	cfg, err := config.Parse(`repository = "` + dir + `"
[hub]
read_tokens = ["` + readToken + `"]
admin_tokens = ["` + adminToken + `"]
max_peek = 8
`)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := repository.OpenLocal(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	cat := repo.Catalog
	feeder, err := walfeed.New(ctx, repo, "main", "7300000000000000001", segSize, compression)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, repo: repo, cat: cat, feeder: feeder, segs: map[string][]byte{}}
	for i := walname.SegNo(1); i <= 12; i++ {
		if i == 7 {
			continue // a hole: peek must stop before it
		}
		name := walname.SegmentName(1, i, segSize)
		f.segs[name] = segment(uint64(i))
		if err := feeder.StoreSegment(ctx, name, f.segs[name]); err != nil {
			t.Fatal(err)
		}
	}
	f.history = []byte("1\t0/5000000\tno recovery target specified\n")
	if err := feeder.StoreHistory(ctx, 2, f.history); err != nil {
		t.Fatal(err)
	}
	if f.srv, err = New(Options{Config: cfg, Repo: repo, Log: slog.New(slog.DiscardHandler), Status: status}); err != nil {
		t.Fatal(err)
	}
	f.http = httptest.NewServer(f.srv.Handler())
	t.Cleanup(f.http.Close)
	return f
}

func (f *fixture) client(t *testing.T, server, token string) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{URL: f.http.URL, Server: server, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (f *fixture) get(t *testing.T, method, path, token string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, f.http.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// A bare transport: no automatic gzip, no path cleaning by a client.
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestSegmentSentCompressedOnlyWhenAccepted(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	name := walname.SegmentName(1, 3, segSize)
	want := f.segs[name]

	resp := f.get(t, http.MethodGet, api.WALPath("main", name), readToken, http.Header{"Accept-Encoding": {"gzip, zstd"}})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "zstd" {
		t.Fatalf("status %d, encoding %q; want 200 zstd", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) >= len(want) {
		t.Errorf("compressed body is %d bytes, not smaller than %d", len(raw), len(want))
	}
	got, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := got.DecodeAll(raw, nil)
	if err != nil || !bytes.Equal(plain, want) {
		t.Fatalf("decoded body differs from the segment (err %v)", err)
	}
	if resp.Header.Get(api.HeaderChecksum) != checksum.Of(want) || resp.Header.Get(api.HeaderSize) != "1048576" {
		t.Errorf("headers checksum %q size %q", resp.Header.Get(api.HeaderChecksum), resp.Header.Get(api.HeaderSize))
	}

	resp = f.get(t, http.MethodGet, api.WALPath("main", name), readToken, http.Header{"Accept-Encoding": {"gzip"}})
	body, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(body, want) {
		t.Fatalf("without zstd: encoding %q, body equal %v", resp.Header.Get("Content-Encoding"), bytes.Equal(body, want))
	}
	if resp.Header.Get(api.HeaderChecksum) != checksum.Of(want) {
		t.Errorf("uncompressed answer lacks the checksum header")
	}

	resp = f.get(t, http.MethodHead, api.WALPath("main", name), readToken, nil)
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get(api.HeaderChecksum) != checksum.Of(want) {
		t.Errorf("HEAD: status %d, %d body bytes, checksum %q", resp.StatusCode, len(body), resp.Header.Get(api.HeaderChecksum))
	}
}

func TestClientFetchesAndVerifiesEveryKindOfFile(t *testing.T) {
	for _, compression := range []string{"zstd", "none"} {
		t.Run(compression, func(t *testing.T) {
			f := newFixture(t, compression, nil)
			c := f.client(t, "main", readToken)
			ctx := context.Background()
			name := walname.SegmentName(1, 5, segSize)
			var buf bytes.Buffer
			info, err := c.FetchWAL(ctx, name, &buf)
			if err != nil || !bytes.Equal(buf.Bytes(), f.segs[name]) {
				t.Fatalf("FetchWAL(%s): %v, equal %v", name, err, bytes.Equal(buf.Bytes(), f.segs[name]))
			}
			if info.SystemID != "7300000000000000001" || info.SegmentSize != segSize {
				t.Errorf("identity %+v", info)
			}
			buf.Reset()
			if _, err := c.FetchWAL(ctx, "00000002.history", &buf); err != nil || !bytes.Equal(buf.Bytes(), f.history) {
				t.Fatalf("history: %v %q", err, buf.Bytes())
			}
			for _, missing := range []string{walname.SegmentName(1, 7, segSize), "00000003.history",
				"000000010000000000000002.00000028.backup"} {
				if _, err := c.FetchWAL(ctx, missing, io.Discard); !errors.Is(err, client.ErrNotFound) {
					t.Errorf("FetchWAL(%s) = %v, want ErrNotFound", missing, err)
				}
			}
		})
	}
}

func TestPartialOnlyWhenAskedFor(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	c := f.client(t, "main", readToken)
	ctx := context.Background()
	name := walname.SegmentName(1, 13, segSize)
	content := bytes.Repeat([]byte("p"), 4096)
	path := f.repo.Work.PartialFile("main", name)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.FetchWAL(ctx, name, io.Discard); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("plain name served the partial: %v", err)
	}
	var buf bytes.Buffer
	if _, err := c.FetchWAL(ctx, name+".partial", &buf); err != nil || !bytes.Equal(buf.Bytes(), content) {
		t.Errorf(".partial name: %v", err)
	}
	resp := f.get(t, http.MethodGet, api.WALPath("main", name)+"?partial=1", readToken, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(body, content) || resp.Header.Get(api.HeaderChecksum) != checksum.Of(content) {
		t.Errorf("?partial=1: status %d", resp.StatusCode)
	}
}

// With a receiver (Options.Partial), only the bytes it says hold WAL
// received are sent: a .partial made from an older segment's file holds that
// segment's WAL past them. What is missing there is not found.
func TestPartialSentOnlyUpToWhatWasReceived(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	c := f.client(t, "main", readToken)
	ctx := context.Background()
	name := walname.SegmentName(1, 13, segSize)
	received, stale := bytes.Repeat([]byte("p"), 5000), bytes.Repeat([]byte("s"), 3192)
	path := f.repo.Work.PartialFile("main", name)
	if err := os.WriteFile(path, append(slices.Clone(received), stale...), 0o600); err != nil {
		t.Fatal(err)
	}
	f.srv.o.Partial = func(_ context.Context, server, seg string) (PartialFile, int64, error) {
		if server != "main" || seg != name {
			return nil, 0, fmt.Errorf("%s of %s: %w", seg, server, os.ErrNotExist)
		}
		file, err := os.Open(path)
		return file, int64(len(received)), err
	}
	var buf bytes.Buffer
	info, err := c.FetchWAL(ctx, name+".partial", &buf)
	if err != nil || !bytes.Equal(buf.Bytes(), received) || info.Size != int64(len(received)) {
		t.Errorf(".partial: %v, %d bytes (size %d), want the %d received", err, buf.Len(), info.Size, len(received))
	}
	if _, err := c.FetchWAL(ctx, walname.SegmentName(1, 14, segSize)+".partial", io.Discard); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("a .partial the receiver does not have: %v, want ErrNotFound", err)
	}
}

func TestPeekListsConsecutiveSegmentsCapped(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	c := f.client(t, "main", readToken)
	ctx := context.Background()
	tests := []struct {
		from  walname.SegNo
		n     int
		first walname.SegNo
		count int
	}{
		{1, 3, 1, 3},
		{1, 100, 1, 6}, // stops at the hole at 7
		{8, 1 << 30, 8, 5},
		{7, 5, 0, 0},  // missing first: nothing
		{13, 5, 0, 0}, // beyond the end
		{9, 1, 9, 1},
	}
	for _, tt := range tests {
		p, err := c.Peek(ctx, walname.SegmentName(1, tt.from, segSize), tt.n)
		if err != nil {
			t.Fatalf("peek %d n=%d: %v", tt.from, tt.n, err)
		}
		if len(p.Segments) != tt.count {
			t.Errorf("peek %d n=%d: %d segments, want %d", tt.from, tt.n, len(p.Segments), tt.count)
			continue
		}
		for i, s := range p.Segments {
			name := walname.SegmentName(1, tt.first+walname.SegNo(i), segSize)
			if s.Name != name || s.Checksum != checksum.Of(f.segs[name]) || s.Size != segSize {
				t.Errorf("peek %d: segment %d is %+v, want %s", tt.from, i, s, name)
			}
		}
		if p.SystemID != "7300000000000000001" || p.SegmentSize != segSize || p.Limit != min(tt.n, 8) {
			t.Errorf("peek identity %+v", p)
		}
	}
	// Timelines are not mixed: nothing of timeline 2 exists.
	if p, err := c.Peek(ctx, walname.SegmentName(2, 1, segSize), 4); err != nil || len(p.Segments) != 0 {
		t.Errorf("peek on timeline 2: %v %+v", err, p)
	}
}

func TestBadInputRefusedWithJSONError(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	seg := walname.SegmentName(1, 3, segSize)
	tests := []struct {
		name   string
		path   string
		token  string
		status int
		code   string
	}{
		{"dot-dot", "/v1/servers/main/wal/..%2F..%2Fcatalog.db", readToken, 400, api.CodeBadRequest},
		{"dot-dot in server", "/v1/servers/..%2Fmain/wal/" + seg, readToken, 404, api.CodeUnknownServer},
		{"absolute", "/v1/servers/main/wal/%2Fetc%2Fpasswd", readToken, 400, api.CodeBadRequest},
		{"overlong", "/v1/servers/main/wal/" + strings.Repeat("0", 300), readToken, 400, api.CodeBadRequest},
		{"non-hex", "/v1/servers/main/wal/00000001000000000000000G", readToken, 400, api.CodeBadRequest},
		{"lower-case hex", "/v1/servers/main/wal/00000001000000000000000a", readToken, 400, api.CodeBadRequest},
		{"segment out of range for the size", "/v1/servers/main/wal/000000010000000000001000", readToken, 400, api.CodeBadRequest},
		{"timeline zero", "/v1/servers/main/wal/000000000000000000000003", readToken, 400, api.CodeBadRequest},
		{"catalog file by name", "/v1/servers/main/wal/catalog.db", readToken, 400, api.CodeBadRequest},
		{"wrong server", "/v1/servers/other/wal/" + seg, readToken, 404, api.CodeUnknownServer},
		{"missing segment", "/v1/servers/main/wal/" + walname.SegmentName(1, 7, segSize), readToken, 404, api.CodeNotFound},
		{"missing token", "/v1/servers/main/wal/" + seg, "", 401, api.CodeUnauthorized},
		{"wrong token", "/v1/servers/main/wal/" + seg, "guess", 401, api.CodeUnauthorized},
		{"missing token on peek", "/v1/servers/main/wal/" + seg + "/peek?n=2", "", 401, api.CodeUnauthorized},
		{"peek n zero", "/v1/servers/main/wal/" + seg + "/peek?n=0", readToken, 400, api.CodeBadRequest},
		{"peek n not a number", "/v1/servers/main/wal/" + seg + "/peek?n=1e9", readToken, 400, api.CodeBadRequest},
		{"peek n beyond int", "/v1/servers/main/wal/" + seg + "/peek?n=99999999999999999999999", readToken, 400, api.CodeBadRequest},
		{"peek of a history file", "/v1/servers/main/wal/00000002.history/peek?n=2", readToken, 400, api.CodeBadRequest},
		{"bad backup id", "/v1/servers/main/backups/..%2F..%2Fcatalog.db", readToken, 400, api.CodeBadRequest},
		{"missing backup", "/v1/servers/main/backups/20260101T000000", readToken, 404, api.CodeNotFound},
		{"no route", "/v2/servers/main/wal/" + seg, readToken, 404, api.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.get(t, http.MethodGet, tt.path, tt.token, nil)
			var body api.ErrorBody
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("status %d, body not JSON: %v", resp.StatusCode, err)
			}
			if resp.StatusCode != tt.status || body.Code != tt.code || body.Error == "" {
				t.Errorf("got %d %+v, want %d %s", resp.StatusCode, body, tt.status, tt.code)
			}
		})
	}
}

func TestAdminRoutesNeedAdminToken(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	f.srv.admin(http.MethodPost, "/servers/:server/poke", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	for _, tt := range []struct {
		token  string
		status int
	}{{"", 401}, {readToken, 401}, {adminToken, 204}} {
		resp := f.get(t, http.MethodPost, "/v1/servers/main/poke", tt.token, nil)
		if resp.StatusCode != tt.status {
			t.Errorf("token %q: status %d, want %d", tt.token, resp.StatusCode, tt.status)
		}
	}
	// An admin token reads too.
	if resp := f.get(t, http.MethodGet, api.WALPath("main", "00000002.history"), adminToken, nil); resp.StatusCode != 200 {
		t.Errorf("admin token reading: %d", resp.StatusCode)
	}
}

func TestCorruptStoredSegmentIsNeverAcceptedByTheClient(t *testing.T) {
	for _, compression := range []string{"zstd", "none"} {
		t.Run(compression, func(t *testing.T) {
			f := newFixture(t, compression, nil)
			c := f.client(t, "main", readToken)
			name := walname.SegmentName(1, 4, segSize)
			path := filepath.Join(f.dir, storage.SegmentPath("main", name, compression))
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			data[len(data)/2] ^= 0xff
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := c.FetchWAL(context.Background(), name, io.Discard); !errors.Is(err, client.ErrCorrupt) {
				t.Fatalf("FetchWAL of a corrupted segment = %v, want ErrCorrupt", err)
			}
			// Truncated on disk: short body.
			if err := os.WriteFile(path, data[:len(data)/3], 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := c.FetchWAL(context.Background(), name, io.Discard); err == nil {
				t.Fatal("FetchWAL of a truncated segment succeeded")
			}
		})
	}
}

func TestClientErrorKinds(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	ctx := context.Background()
	seg := walname.SegmentName(1, 3, segSize)
	if _, err := f.client(t, "other", readToken).FetchWAL(ctx, seg, io.Discard); !errors.Is(err, client.ErrUnknownServer) {
		t.Errorf("unknown server: %v", err)
	}
	if _, err := f.client(t, "main", "wrong").FetchWAL(ctx, seg, io.Discard); !errors.Is(err, client.ErrRefused) {
		t.Errorf("wrong token: %v", err)
	}
	dead, err := client.New(client.Options{URL: "http://127.0.0.1:1", Server: "main"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.FetchWAL(ctx, seg, io.Discard); !errors.Is(err, client.ErrUnreachable) {
		t.Errorf("nobody listening: %v", err)
	}
}

func TestBackupListingAndFiles(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	ctx := context.Background()
	content := []byte("stored tar bytes")
	rel := storage.BackupDir("main", "20260101T000000") + "/base.tar.zst"
	w, err := f.repo.Store.Create(ctx, rel, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(content)
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b := catalog.Backup{ID: "20260101T000000", ServerID: f.feeder.Server.ID, Kind: "base", State: catalog.StateDone,
		StartLSN: 0x1000028, StartTLI: 1, StoredPath: storage.BackupDir("main", "20260101T000000"),
		Files: []catalog.BackupFile{{Name: "base.tar.zst", Size: 100, StoredSize: int64(len(content)), Compression: "zstd",
			CompressedOn: "server", SHA256Stored: "0b8f3c7f4d4ef4a4ac0ad1ac5ea1e5c9d1b2a8c8d6f8b1e3a2e6c9ff5ab09b7d"}}}
	if err := f.cat.AddBackup(ctx, b); err != nil {
		t.Fatal(err)
	}
	c := f.client(t, "main", readToken)
	list, err := c.Backups(ctx)
	if err != nil || len(list) != 1 || list[0].ID != b.ID || list[0].StartLSN != b.StartLSN || len(list[0].Files) != 1 {
		t.Fatalf("Backups = %+v, %v", list, err)
	}
	one, err := c.Backup(ctx, b.ID)
	if err != nil || one.State != catalog.StateDone || one.Files[0].CompressedOn != "server" {
		t.Fatalf("Backup = %+v, %v", one, err)
	}
	// The recorded SHA-256 above is deliberately wrong: the download must say so.
	var buf bytes.Buffer
	if _, err := c.DownloadBackupFile(ctx, b.ID, "base.tar.zst", &buf); !errors.Is(err, client.ErrCorrupt) {
		t.Errorf("download with a wrong recorded SHA-256: %v", err)
	}
	if !bytes.Equal(buf.Bytes(), content) {
		t.Errorf("downloaded %q", buf.Bytes())
	}
	for _, file := range []string{"backup_manifest", "..%2F..%2Fcatalog.db", "base.tar"} {
		if _, err := c.DownloadBackupFile(ctx, b.ID, file, io.Discard); !errors.Is(err, client.ErrNotFound) && !errors.Is(err, client.ErrRefused) {
			t.Errorf("file %q not in the backup's list: %v", file, err)
		}
	}
}

func TestStatusRoute(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	resp := f.get(t, http.MethodGet, api.StatusPath("main"), readToken, nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status without a Status function: %d, want 503", resp.StatusCode)
	}
	f = newFixture(t, "zstd", func(_ context.Context, server string) (any, error) {
		return map[string]string{"server": server, "state": "streaming"}, nil
	})
	raw, err := f.client(t, "main", readToken).Status(context.Background())
	if err != nil || !strings.Contains(string(raw), `"streaming"`) {
		t.Errorf("status: %s %v", raw, err)
	}
	if _, err := f.client(t, "nosuch", readToken).Status(context.Background()); !errors.Is(err, client.ErrUnknownServer) {
		t.Errorf("status of an unknown server: %v", err)
	}
}

func TestMetricsCountRequestsByRouteAndCode(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	for _, name := range []string{walname.SegmentName(1, 3, segSize), "bogus"} {
		// Read each answer to its end: a request is counted once answered.
		resp := f.get(t, http.MethodGet, api.WALPath("main", name), readToken, nil)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	wants := []string{
		`walhub_hub_requests_total{code="200",route="/v1/servers/:server/wal/:name"} 1`,
		`walhub_hub_requests_total{code="400",route="/v1/servers/:server/wal/:name"} 1`,
		`walhub_hub_response_bytes_total{route="/v1/servers/:server/wal/:name"}`,
	}
	// The count is taken just after the last byte is sent: allow it a moment.
	var missing []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp := f.get(t, http.MethodGet, "/metrics", "", nil)
		body, _ := io.ReadAll(resp.Body)
		missing = missing[:0]
		for _, want := range wants {
			if !strings.Contains(string(body), want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, m := range missing {
		t.Errorf("metrics lack %s", m)
	}
	if resp := f.get(t, http.MethodGet, "/healthz", "", nil); resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}

// A segment larger than a MiB is stored as several zstd frames: it reaches a
// client whole both ways, compressed (walfetch's decoder reads the frames as
// one stream) and identity-encoded (the hub's decoder does).
func TestSegmentOfSeveralFramesServedWhole(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	ctx := context.Background()
	const big = 4 << 20
	feeder, err := walfeed.New(ctx, f.repo, "big", "7300000000000000002", big, "zstd")
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for i := range uint64(4) {
		want = append(want, segment(100+i)...)
	}
	name := walname.SegmentName(1, 2, big)
	if err := feeder.StoreSegment(ctx, name, want); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := f.client(t, "big", readToken).FetchWAL(ctx, name, &buf); err != nil || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("FetchWAL: %v, %d bytes, equal %v", err, buf.Len(), bytes.Equal(buf.Bytes(), want))
	}
	resp := f.get(t, http.MethodGet, api.WALPath("big", name), readToken, http.Header{"Accept-Encoding": {"identity"}})
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(body, want) {
		t.Fatalf("identity: status %d, encoding %q, %d bytes, %v", resp.StatusCode, resp.Header.Get("Content-Encoding"), len(body), err)
	}
}
