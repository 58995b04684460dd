package client

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/hub/api"
)

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestFetchWALVerifiesWhatArrives: a WAL file is accepted only with exactly
// the announced size and checksum, compressed or not.
func TestFetchWALVerifiesWhatArrives(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef walhub "), 50000)
	enc, _ := zstd.NewWriter(nil)
	zst := func(b []byte) []byte { return enc.EncodeAll(b, nil) }
	tests := []struct {
		name     string
		encoding string
		body     []byte
		size     int
		sum      string
		failW    bool
		wantErr  error
	}{
		{"zstd", "zstd", zst(data), len(data), checksum.Of(data), false, nil},
		{"identity", "", data, len(data), checksum.Of(data), false, nil},
		{"zstd, longer than announced", "zstd", zst(append(data, 'x')), len(data), checksum.Of(data), false, ErrCorrupt},
		{"identity, longer than announced", "", append(append([]byte{}, data...), 'x'), len(data), checksum.Of(data), false, ErrCorrupt},
		{"zstd, shorter than announced", "zstd", zst(data[:len(data)-1]), len(data), checksum.Of(data), false, ErrCorrupt},
		{"identity, shorter than announced", "", data[:len(data)-1], len(data), checksum.Of(data), false, ErrCorrupt},
		{"zstd, wrong checksum", "zstd", zst(data), len(data), checksum.Of(data[1:]), false, ErrCorrupt},
		{"not zstd at all", "zstd", data, len(data), checksum.Of(data), false, ErrCorrupt},
		{"the destination fails", "zstd", zst(data), len(data), checksum.Of(data), true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := w.Header()
				h.Set(api.HeaderChecksum, tt.sum)
				h.Set(api.HeaderSize, strconv.Itoa(tt.size))
				if tt.encoding != "" {
					h.Set("Content-Encoding", tt.encoding)
				}
				w.Write(tt.body)
			}))
			defer srv.Close()
			c, err := New(Options{URL: srv.URL, Server: "main"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var got bytes.Buffer
			var w interface{ Write([]byte) (int, error) } = &got
			if tt.failW {
				w = failingWriter{}
			}
			info, err := c.FetchWAL(context.Background(), "000000010000000000000001", w)
			switch {
			case tt.failW:
				if err == nil || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnreachable) {
					t.Errorf("a failing destination gave %v; want a write error that is neither corrupt nor unreachable", err)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("got %v, want %v", err, tt.wantErr)
				}
			default:
				if err != nil || !bytes.Equal(got.Bytes(), data) || info.Size != int64(len(data)) {
					t.Errorf("got %d bytes, %+v, %v", got.Len(), info, err)
				}
			}
		})
	}
}
