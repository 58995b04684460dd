package repository_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/repository"
)

// TestS3RetrySettingsReachTheStore: [s3] max_attempts and response_timeout
// from the configuration are what the bucket's requests obey. The endpoint
// answers 503 to everything, so `walhub init`'s look at the bucket fails
// after max_attempts requests; another endpoint never answers, so each
// request is abandoned after response_timeout.
func TestS3RetrySettingsReachTheStore(t *testing.T) {
	tests := []struct {
		name     string
		settings string
		answer   time.Duration // how long the endpoint takes to answer 503
		requests int64         // want exactly this many requests
		within   time.Duration // and the failure within this long
	}{
		{"two attempts", "max_attempts = 2\n", 0, 2, 10 * time.Second},
		{"one attempt", "max_attempts = 1\n", 0, 1, 5 * time.Second},
		{"response timeout", "max_attempts = 1\nresponse_timeout = \"1s\"\n", time.Minute, 1, 20 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var requests atomic.Int64
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				select {
				case <-time.After(tt.answer):
				case <-release:
				}
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			defer srv.Close()
			defer close(release)
			cfg, err := config.Parse(fmt.Sprintf(`repository = "s3://bucket/p"
work_dir = %q
[s3]
endpoint = %q
force_path_style = true
access_key_id = "k"
secret_access_key = "s"
%s`, t.TempDir(), srv.URL, tt.settings))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*tt.within)
			defer cancel()
			start := time.Now()
			_, err = repository.Init(ctx, cfg)
			if err == nil || !strings.Contains(err.Error(), "bucket") {
				t.Fatalf("init against a failing endpoint: %v", err)
			}
			if d := time.Since(start); d > tt.within {
				t.Errorf("failed after %s, want within %s", d, tt.within)
			}
			if n := requests.Load(); n != tt.requests {
				t.Errorf("%d requests, want %d (%v)", n, tt.requests, err)
			}
		})
	}
}
