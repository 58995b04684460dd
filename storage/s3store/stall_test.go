package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/storage/s3store"
)

// blackHole serves the fake S3, except that the first `times` requests of
// operation name go to hole instead, which holds the connection (never
// resetting it) until the test ends: a silently dropped connection.
// The server's receive buffer is kept small, so that what the kernel takes in
// unread is well below the test's body whatever the host's TCP autotuning.
func blackHole(t *testing.T, name string, times int32, tune func(*s3store.Config), hole func(w http.ResponseWriter, r *http.Request, done <-chan struct{})) (*fakeS3, *s3store.Store) {
	f := &fakeS3{objects: map[string][]byte{}, meta: map[string]http.Header{}, uploads: map[string]map[int][]byte{}, calls: map[string]int{}}
	done := make(chan struct{})
	var n atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if op(r) == name && n.Add(1) <= times {
			hole(w, r, done)
			return
		}
		f.ServeHTTP(w, r)
	}))
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
		})
		return errors.Join(err, serr)
	}}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) }) // runs first: lets the holes return
	st := fakeStore(t, srv, func(c *s3store.Config) {
		c.PartSize = 16 << 20
		c.MaxAttempts = 2
		c.StallTimeout = time.Second
		c.ResponseHeaderTimeout = time.Second
		if tune != nil {
			tune(c)
		}
	})
	return f, st
}

// commitWithin writes data to key and commits it under a deadline, so that
// a hang fails the test instead of hanging it.
func commitWithin(t *testing.T, st *s3store.Store, key string, data []byte, d time.Duration) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	w, err := st.Create(ctx, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return time.Since(start), err
	}
	_, err = w.Commit(ctx)
	return time.Since(start), err
}

// TestStalledUploadIsRetried: the server stops reading a PUT's body without
// closing the connection. The watchdog abandons the request after
// StallTimeout without progress and the retry succeeds; when every attempt
// stalls, the error names the key and the stall.
func TestStalledUploadIsRetried(t *testing.T) {
	// Larger than what the socket buffers take in unread (the client's send
	// buffer is at most net.ipv4.tcp_wmem's 4 MiB by default).
	data := randomBytes(16<<20-1, 7)
	stopReading := func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		io.CopyN(io.Discard, r.Body, 1<<20) // some progress, then none
		<-done
	}
	for _, tc := range []struct {
		name  string
		times int32
		ok    bool
	}{
		{"retried", 1, true},
		{"gives up", 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Only the watchdog can end this wait.
			f, st := blackHole(t, "PutObject", tc.times, func(c *s3store.Config) { c.ResponseHeaderTimeout = time.Minute }, stopReading)
			took, err := commitWithin(t, st, "seg", data, 15*time.Second)
			if tc.ok {
				if err != nil {
					t.Fatalf("after %v: %v", took, err)
				}
				f.mu.Lock()
				got := f.objects["seg"]
				f.mu.Unlock()
				if !bytes.Equal(got, data) {
					t.Fatalf("stored %d bytes, want %d", len(got), len(data))
				}
			} else if err == nil || !strings.Contains(err.Error(), "seg") || !strings.Contains(err.Error(), "no progress for 1s") {
				t.Fatalf("after %v: err %v, want one naming the key and the stall", took, err)
			} else if !tc.ok {
				t.Logf("after %v: %v", took, err)
			}
			if took > 8*time.Second {
				t.Fatalf("took %v", took)
			}
		})
	}
}

// TestUnansweredUploadIsRetried: the server takes the whole body and never
// answers; ResponseHeaderTimeout abandons the request and the retry succeeds.
func TestUnansweredUploadIsRetried(t *testing.T) {
	data := randomBytes(100<<10, 8)
	neverAnswer := func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		io.Copy(io.Discard, r.Body)
		<-done
	}
	f, st := blackHole(t, "PutObject", 1, nil, neverAnswer)
	took, err := commitWithin(t, st, "seg", data, 15*time.Second)
	if err != nil {
		t.Fatalf("after %v: %v", took, err)
	}
	if took > 5*time.Second {
		t.Fatalf("took %v", took)
	}
	if n := f.count("PutObject"); n != 1 {
		t.Fatalf("fake served %d PUTs, want 1 (after the unanswered one)", n)
	}
}

// TestStalledDownloadIsResumed: a GET's body stops arriving part way, the
// connection held open; the read is abandoned after StallTimeout and resumed.
func TestStalledDownloadIsResumed(t *testing.T) {
	data := randomBytes(3<<20, 9)
	var f *fakeS3
	stall := func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		f.mu.Lock()
		obj := f.objects[strings.TrimPrefix(r.URL.Path, "/b/")]
		f.mu.Unlock()
		w.Header().Set("ETag", `"e"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(obj)))
		w.Write(obj[:1<<20])
		w.(http.Flusher).Flush()
		<-done
	}
	f, st := blackHole(t, "GetObject", 1, nil, stall)
	put(t, st, "k", data, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	r, err := st.Open(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after %v: read %d of %d bytes: %v", time.Since(start), len(got), len(data), err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %v", took)
	}
}
