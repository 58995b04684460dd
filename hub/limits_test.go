package hub

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/walname"
)

// running starts the fixture's hub on a real listener (as walhub serve does),
// with short limits for the test, and returns its address.
func (f *fixture) running(t testing.TB, lim limits, hubConf string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg, err := config.Parse(fmt.Sprintf("repository = %q\n[hub]\nlisten = %q\nread_tokens = [%q]\nadmin_tokens = [%q]\n%s",
		f.dir, addr, readToken, adminToken, hubConf))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Config: cfg, Repo: f.repo, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv.limits = lim
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("the hub does not listen")
		}
	}
}

// rawRequest writes req on a new connection and returns the response read
// back, and how long until it came (or the connection closed).
func rawRequest(t *testing.T, addr string, write func(c net.Conn)) (*http.Response, time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	go write(conn)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, time.Since(start)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, time.Since(start)
}

// jsonError decodes an error response, failing unless it is the hub's JSON.
func jsonError(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	if resp == nil {
		t.Fatalf("no response, want %d %s", status, code)
	}
	var body api.ErrorBody
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &body); err != nil || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, body not the hub's JSON (%s): %q", resp.StatusCode, resp.Header.Get("Content-Type"), data)
	}
	if resp.StatusCode != status || body.Code != code || body.Error == "" {
		t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, body, status, code)
	}
}

var testLimits = limits{headerTimeout: time.Second, bodyTimeout: time.Second, idleTimeout: 2 * time.Second, writeStall: 2 * time.Second}

func TestSlowOrMissingBodyIsRefusedWithinSeconds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "zstd", nil)
	addr := f.running(t, testLimits, "")
	for _, token := range []string{"", "Authorization: Bearer " + adminToken + "\r\n"} {
		// A body announced, then one byte every half second: never complete.
		resp, took := rawRequest(t, addr, func(c net.Conn) {
			fmt.Fprintf(c, "POST /v1/servers/main/snapshot/start HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", token)
			for i := 0; i < 40; i++ {
				if _, err := c.Write([]byte("{")); err != nil {
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
		jsonError(t, resp, http.StatusRequestTimeout, api.CodeTimeout)
		if took > 5*time.Second {
			t.Errorf("slow body (token %v) answered after %s", token != "", took)
		}
	}
	// Headers that never end: the connection is closed.
	resp, took := rawRequest(t, addr, func(c net.Conn) { fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n") })
	if resp != nil || took > 5*time.Second {
		t.Errorf("unfinished headers: response %v after %s, want the connection closed within seconds", resp, took)
	}
	// A read route takes no body: refused at once, the body never read.
	resp, took = rawRequest(t, addr, func(c net.Conn) {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n", api.WALPath("main", "00000002.history"), readToken)
	})
	jsonError(t, resp, http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	if took > 3*time.Second {
		t.Errorf("a body on a read route answered after %s", took)
	}
}

func TestLargeBodyRefusedBeforeItIsRead(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "zstd", nil)
	addr := f.running(t, testLimits, "")
	// 64 MiB announced: refused on the headers alone.
	resp, took := rawRequest(t, addr, func(c net.Conn) {
		fmt.Fprintf(c, "POST /v1/servers/main/snapshot/start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", adminToken, 64<<20)
	})
	jsonError(t, resp, http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	if took > 3*time.Second {
		t.Errorf("answered after %s", took)
	}
	// 64 MiB chunked: refused once the limit is crossed, long before the end.
	sent := make(chan int64, 1)
	resp, _ = rawRequest(t, addr, func(c net.Conn) {
		fmt.Fprintf(c, "POST /v1/servers/main/snapshot/start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n", adminToken)
		chunk := fmt.Appendf(nil, "%x\r\n%s\r\n", 64<<10, bytes.Repeat([]byte(" "), 64<<10))
		var n int64
		for n < 64<<20 {
			if _, err := c.Write(chunk); err != nil {
				break
			}
			n += 64 << 10
		}
		sent <- n
	})
	jsonError(t, resp, http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	if n := <-sent; n >= 64<<20 {
		t.Errorf("the hub read the whole 64 MiB body (%d bytes sent)", n)
	}
}

func TestOversizedHeadersAndMalformedRequestsGetJSON(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	addr := f.running(t, testLimits, "")
	for _, size := range []int{100 << 10, 2 << 20} {
		resp, _ := rawRequest(t, addr, func(c net.Conn) {
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", size))
		})
		jsonError(t, resp, http.StatusRequestHeaderFieldsTooLarge, api.CodeTooLarge)
	}
	resp, _ := rawRequest(t, addr, func(c net.Conn) { fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n") })
	jsonError(t, resp, http.StatusBadRequest, api.CodeBadRequest)
	// A normal response goes through untouched.
	resp, _ = rawRequest(t, addr, func(c net.Conn) { fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") })
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v", resp)
	}
}

func TestConnectionsPerClientAreCapped(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "zstd", nil)
	addr := f.running(t, limits{headerTimeout: 30 * time.Second, bodyTimeout: time.Second, idleTimeout: 30 * time.Second, writeStall: 2 * time.Second},
		"max_client_connections = 4")
	// Four connections, each proven accepted by a request answered on it. A
	// connection may be refused at first: the hub may still count the one
	// running() dialed to see it listen (it is released once the hub reads
	// its end, which a loaded machine can delay).
	var held []net.Conn
	for deadline := time.Now().Add(10 * time.Second); len(held) < 4; {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if servedOn(c) {
			defer c.Close()
			held = append(held, c)
			continue
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("only %d connections from one client are served, want 4", len(held))
		}
		time.Sleep(50 * time.Millisecond)
	}
	over, _ := rawRequest(t, addr, func(c net.Conn) { fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") })
	if over != nil {
		t.Fatalf("a fifth connection from the same client was served: %d", over.StatusCode)
	}
	held[0].Close()
	time.Sleep(100 * time.Millisecond)
	resp, _ := rawRequest(t, addr, func(c net.Conn) { fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") })
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("after one connection closed, a new one is not served: %v", resp)
	}
}

// servedOn sends a request on c, kept alive, and tells whether the hub
// answered it.
func servedOn(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func TestOnlyBearerSchemeIsAccepted(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	path := api.WALPath("main", "00000002.history")
	for _, tt := range []struct {
		auth   []string
		status int
	}{
		{[]string{"Bearer " + readToken}, 200},
		{[]string{readToken}, 401},
		{[]string{"Basic " + readToken}, 401},
		{[]string{"Bearer  " + readToken}, 401},
		{[]string{"bearer" + readToken}, 401},
		{[]string{"Bearer " + readToken, "Bearer " + readToken}, 401},
	} {
		resp := f.get(t, http.MethodGet, path, "", http.Header{"Authorization": tt.auth})
		if resp.StatusCode != tt.status {
			t.Errorf("Authorization %q: %d, want %d", tt.auth, resp.StatusCode, tt.status)
		}
	}
}

// TestSlowSteadyDownloadIsNotCutButAStalledOneIs reads a segment slower than
// every timeout of the hub: it arrives whole. A client that stops reading is
// dropped after writeStall.
func TestSlowSteadyDownloadIsNotCutButAStalledOneIs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "none", nil)
	// A 16 MiB .partial, served uncompressed, larger than the socket buffers.
	big := bytes.Repeat([]byte("walhub-partial-"), (16<<20)/15)
	name := walname.SegmentName(1, 13, segSize)
	partial := f.repo.Work.PartialFile("main", name)
	os.MkdirAll(filepath.Dir(partial), 0o750)
	if err := os.WriteFile(partial, big, 0o600); err != nil {
		t.Fatal(err)
	}
	lim := limits{headerTimeout: 500 * time.Millisecond, bodyTimeout: 500 * time.Millisecond, idleTimeout: 5 * time.Second, writeStall: 3 * time.Second}
	addr := f.running(t, lim, "")
	get := func() *http.Response {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+api.WALPath("main", name+".partial"), nil)
		req.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// Steady: 1 MiB every 300 ms, 16 MiB over ~5 s: longer than the header,
	// body and stall timeouts. The idle timeout starts when the hub has handed
	// the last byte to the kernel; the client still has the socket buffers
	// (a few MiB) to read then, so it is longer here, as it is (60 s) by default.
	resp := get()
	var got bytes.Buffer
	var readErr error
	for {
		n, err := io.CopyN(&got, resp.Body, 1<<20)
		if err != nil || n < 1<<20 {
			readErr = err
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	resp.Body.Close()
	if !bytes.Equal(got.Bytes(), big) {
		t.Fatalf("slow download: got %d bytes of %d (%v)", got.Len(), len(big), readErr)
	}
	// Stalled: reads one buffer, then nothing; the hub gives up.
	resp = get()
	defer resp.Body.Close()
	io.CopyN(io.Discard, resp.Body, 64<<10)
	time.Sleep(5 * time.Second)
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && n+64<<10 == int64(len(big)) {
		t.Fatalf("a stalled reader still got the whole body")
	}
}

// peakHeap runs work and returns by how much the live heap grew at its peak
// over what it was before.
func peakHeap(work func()) uint64 {
	runtime.GC()
	sample := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	rtmetrics.Read(sample)
	base := sample[0].Value.Uint64()
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			rtmetrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	work()
	close(stop)
	wg.Wait()
	if peak < base {
		return 0
	}
	return peak - base
}

// concurrentGets runs n GETs of path at once, checking each body's length.
func (f *fixture) concurrentGets(t *testing.T, n int, path string, want int) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, f.http.URL+path, nil)
			req.Header.Set("Authorization", "Bearer "+readToken)
			resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			// Read slowly enough that the requests overlap.
			var got int64
			for {
				k, err := io.CopyN(io.Discard, resp.Body, 256<<10)
				got += k
				if err != nil {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if resp.StatusCode != 200 || got != int64(want) {
				t.Errorf("GET %s: %d, %d bytes, want %d", path, resp.StatusCode, got, want)
			}
		}()
	}
	wg.Wait()
}

func TestPartialIsStreamedNotHeldInMemory(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	name := walname.SegmentName(1, 13, segSize)
	partial := f.repo.Work.PartialFile("main", name)
	os.MkdirAll(filepath.Dir(partial), 0o750)
	if err := os.WriteFile(partial, bytes.Repeat([]byte{7}, 14<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	grew := peakHeap(func() { f.concurrentGets(t, 16, api.WALPath("main", name+".partial"), 14<<20) })
	t.Logf("16 concurrent 14 MiB .partial downloads: heap grew %.1f MiB at its peak", float64(grew)/(1<<20))
	if grew > 32<<20 {
		t.Errorf("heap grew %.0f MiB serving 16 × 14 MiB .partial: the file is held in memory", float64(grew)/(1<<20))
	}
}

func TestIdentityDecodersAreBounded(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	name := walname.SegmentName(1, 3, segSize)
	grew := peakHeap(func() { f.concurrentGets(t, 48, api.WALPath("main", name), segSize) })
	t.Logf("48 concurrent identity-encoded downloads: heap grew %.1f MiB at its peak", float64(grew)/(1<<20))
	if len(f.srv.decoders.idle) > idleDecoders {
		t.Errorf("%d idle decoders kept", len(f.srv.decoders.idle))
	}
	if grew > 24<<20 {
		t.Errorf("heap grew %.0f MiB: the decoders are not bounded", float64(grew)/(1<<20))
	}
}
