package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/s3store"
)

// fakeS3 is an in-process S3 server for unit tests: one bucket, just enough
// of the API for the store, and failures injected per operation.
type fakeS3 struct {
	mu      sync.Mutex
	objects map[string][]byte
	meta    map[string]http.Header
	uploads map[string]map[int][]byte
	calls   map[string]int // operation → requests seen
	// fail decides, before an operation is served, whether it fails: a
	// status to answer, or -1 to reset the connection.
	fail func(op string, call int, r *http.Request) int
	// cutGet, when > 0, makes a GET send that many bytes and then reset.
	cutGet int
}

func newFake(t *testing.T) (*fakeS3, *httptest.Server) {
	f := &fakeS3{objects: map[string][]byte{}, meta: map[string]http.Header{}, uploads: map[string]map[int][]byte{}, calls: map[string]int{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func fakeStore(t *testing.T, srv *httptest.Server, tune func(*s3store.Config)) *s3store.Store {
	cfg := s3store.Config{
		Bucket: "b", Endpoint: srv.URL, PathStyle: true,
		AccessKeyID: "ak", SecretAccessKey: "sk",
		PartSize: 5 << 20, Concurrency: 2,
		MaxAttempts: 4, MaxBackoff: 20 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	st, err := s3store.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func op(r *http.Request) string {
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPost && q.Has("uploads"):
		return "CreateMultipartUpload"
	case r.Method == http.MethodPost && q.Has("uploadId"):
		return "CompleteMultipartUpload"
	case r.Method == http.MethodPut && q.Has("uploadId"):
		return "UploadPart"
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		return "AbortMultipartUpload"
	case r.Method == http.MethodGet && q.Has("list-type"):
		return "ListObjectsV2"
	}
	return map[string]string{"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}[r.Method]
}

func (f *fakeS3) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // RST, not FIN
	}
	conn.Close()
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := op(r)
	key := strings.TrimPrefix(r.URL.Path, "/b/")
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.calls[name]++
	call := f.calls[name]
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		switch status := fail(name, call, r); {
		case status < 0:
			reset(w)
			return
		case status > 0:
			w.WriteHeader(status)
			fmt.Fprintf(w, "<Error><Code>Injected%d</Code><Message>injected</Message></Error>", status)
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	q := r.URL.Query()
	switch name {
	case "PutObject":
		f.objects[key] = body
		f.meta[key] = r.Header.Clone()
		w.Header().Set("ETag", `"e"`)
	case "CreateMultipartUpload":
		id := fmt.Sprintf("u%d", call)
		f.uploads[id] = map[int][]byte{}
		f.meta[key] = r.Header.Clone()
		fmt.Fprintf(w, "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>%s</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>", key, id)
	case "UploadPart":
		n, _ := strconv.Atoi(q.Get("partNumber"))
		up, ok := f.uploads[q.Get("uploadId")]
		if !ok { // aborted while this request was on its way
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, "<Error><Code>NoSuchUpload</Code></Error>")
			return
		}
		up[n] = body
		w.Header().Set("ETag", fmt.Sprintf(`"p%d"`, n))
	case "CompleteMultipartUpload":
		parts := f.uploads[q.Get("uploadId")]
		var nums []int
		for n := range parts {
			nums = append(nums, n)
		}
		slices.Sort(nums)
		var all []byte
		for _, n := range nums {
			all = append(all, parts[n]...)
		}
		f.objects[key] = all
		delete(f.uploads, q.Get("uploadId"))
		fmt.Fprintf(w, "<CompleteMultipartUploadResult><Key>%s</Key><ETag>\"c\"</ETag></CompleteMultipartUploadResult>", key)
	case "AbortMultipartUpload":
		delete(f.uploads, q.Get("uploadId"))
		w.WriteHeader(http.StatusNoContent)
	case "HeadObject", "GetObject":
		data, ok := f.objects[key]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			if name == "GetObject" {
				fmt.Fprint(w, "<Error><Code>NoSuchKey</Code></Error>")
			}
			return
		}
		for k, v := range f.meta[key] {
			if strings.HasPrefix(strings.ToLower(k), "x-amz-meta-") {
				w.Header()[k] = v
			}
		}
		w.Header().Set("ETag", `"e"`)
		if name == "HeadObject" {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			return
		}
		from, to := 0, len(data)-1
		if rng := r.Header.Get("Range"); rng != "" {
			if _, err := fmt.Sscanf(rng, "bytes=%d-%d", &from, &to); err != nil {
				to = len(data) - 1
			}
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to, len(data)))
		}
		part := data[from : to+1]
		w.Header().Set("Content-Length", strconv.Itoa(len(part)))
		if r.Header.Get("Range") != "" {
			w.WriteHeader(http.StatusPartialContent)
		}
		if f.cutGet > 0 && len(part) > f.cutGet {
			w.Write(part[:f.cutGet])
			w.(http.Flusher).Flush()
			reset(w)
			return
		}
		w.Write(part)
	case "DeleteObject":
		delete(f.objects, key)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusNotImplemented)
	}
}

// TestRetriesTransientErrors injects 5xx answers and connection resets
// into each kind of request: every one is retried and the operation succeeds.
func TestRetriesTransientErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		op     string
		status int // -1: connection reset
	}{
		{"503 on put", "PutObject", 503},
		{"500 on put", "PutObject", 500},
		{"reset on put", "PutObject", -1},
		{"502 on head", "HeadObject", 502},
		{"504 on get", "GetObject", 504},
		{"reset on get", "GetObject", -1},
		{"503 on create multipart", "CreateMultipartUpload", 503},
		{"503 on upload part", "UploadPart", 503},
		{"reset on upload part", "UploadPart", -1},
		{"500 on complete", "CompleteMultipartUpload", 500},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, srv := newFake(t)
			st := fakeStore(t, srv, nil)
			f.fail = func(op string, call int, r *http.Request) int {
				if op == c.op && call <= 2 {
					return c.status
				}
				return 0
			}
			size := 1000
			if strings.Contains(c.op, "ultipart") || c.op == "UploadPart" {
				size = 11 << 20
			}
			data := randomBytes(size, 5)
			put(t, st, "k", data, nil)
			if info, err := st.Stat(context.Background(), "k"); err != nil || info.Size != int64(size) {
				t.Fatalf("stat: %+v, %v", info, err)
			}
			r, err := st.Open(context.Background(), "k")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back: %d bytes, %v", len(got), err)
			}
			if n := f.count(c.op); n < 3 {
				t.Fatalf("%s requested %d times, want the 2 failures retried", c.op, n)
			}
		})
	}
}

// TestGivesUpAfterCappedRetries: a bucket that always answers 503 fails the
// operation after MaxAttempts requests, backing off no more than MaxBackoff
// between them.
func TestGivesUpAfterCappedRetries(t *testing.T) {
	f, srv := newFake(t)
	st := fakeStore(t, srv, func(c *s3store.Config) { c.MaxAttempts = 5; c.MaxBackoff = 30 * time.Millisecond })
	f.fail = func(string, int, *http.Request) int { return 503 }
	start := time.Now()
	_, err := st.Stat(context.Background(), "k")
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("stat of an always-503 bucket: %v", err)
	}
	if n := f.count("HeadObject"); n != 5 {
		t.Fatalf("%d requests, want MaxAttempts = 5", n)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %s: backoff not capped", d)
	}
}

// TestContextEndsRetries: the caller's deadline ends the retrying.
func TestContextEndsRetries(t *testing.T) {
	f, srv := newFake(t)
	st := fakeStore(t, srv, func(c *s3store.Config) { c.MaxAttempts = 1000; c.MaxBackoff = time.Second })
	f.fail = func(string, int, *http.Request) int { return 503 }
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	w, err := st.Create(ctx, "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	if _, err := w.Commit(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("commit: %v, want the deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("returned after %s", d)
	}
}

// TestPartFailureAbortsUpload: a part refused for good (403) fails the
// write, the upload is aborted, never completed, and no object appears.
func TestPartFailureAbortsUpload(t *testing.T) {
	f, srv := newFake(t)
	st := fakeStore(t, srv, nil)
	f.fail = func(op string, call int, r *http.Request) int {
		if op == "UploadPart" && r.URL.Query().Get("partNumber") == "2" {
			return 403
		}
		return 0
	}
	w, err := st.Create(context.Background(), "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(1<<20, 1)
	var werr error
	for i := 0; i < 30 && werr == nil; i++ {
		_, werr = w.Write(data)
	}
	_, cerr := w.Commit(context.Background())
	if cerr == nil {
		t.Fatal("commit succeeded with a refused part")
	}
	if !strings.Contains(cerr.Error(), "upload part 2") {
		t.Errorf("error does not say which part: %v", cerr)
	}
	if f.count("AbortMultipartUpload") != 1 || f.count("CompleteMultipartUpload") != 0 {
		t.Fatalf("abort %d, complete %d; want 1, 0", f.count("AbortMultipartUpload"), f.count("CompleteMultipartUpload"))
	}
	if len(f.objects) != 0 || len(f.uploads) != 0 {
		t.Fatalf("left objects %d, uploads %d", len(f.objects), len(f.uploads))
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("abort after a failed commit: %v", err)
	}
}

// TestReadResumesBrokenStream: a GET whose connection resets mid-body is
// resumed from where it broke.
func TestReadResumesBrokenStream(t *testing.T) {
	f, srv := newFake(t)
	st := fakeStore(t, srv, nil)
	data := randomBytes(3<<20, 2)
	put(t, st, "k", data, nil)
	f.cutGet = 1 << 20
	r, err := st.Open(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d of %d bytes: %v", len(got), len(data), err)
	}
	if n := f.count("GetObject"); n < 3 {
		t.Fatalf("%d GETs, want the stream resumed after each cut", n)
	}
}

// TestUnreachableBucketIsSaid: when nothing listens at the endpoint, the
// error says the bucket cannot be reached, after the retries.
func TestUnreachableBucketIsSaid(t *testing.T) {
	_, srv := newFake(t)
	st := fakeStore(t, srv, func(c *s3store.Config) { c.MaxAttempts = 3 })
	srv.Close()
	_, err := st.Stat(context.Background(), "k")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the bucket") || errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("stat on a closed endpoint: %v", err)
	}
	t.Log(err)
}
