package s3store

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// stallClient is a progress watchdog around the HTTP client. A connection
// silently dropped (a black hole: no RST, the peer stops reading or
// answering) would otherwise hold a request until TCP gives up, about 15
// minutes. The watchdog is on progress, never on total time, since a part or
// a GET of any size may take as long as the link needs:
//   - sending: if the transport takes no bytes of the request body for
//     timeout (its writes to the socket block), the request's context is
//     cancelled, which closes the connection; the SDK's retryer retries the
//     send error like any broken connection;
//   - receiving: if one Read of a response body brings nothing for timeout,
//     likewise; reader.go resumes the stream as after a reset.
//
// Waiting for the response headers is the transport's ResponseHeaderTimeout.
// The SDK's WithReadTimeout is not used: it is a deadline on every read of
// the connection, including the one that waits, silent, while a large body
// is being sent.
type stallClient struct {
	next    aws.HTTPClient
	timeout time.Duration
}

// stallError says which transfer stopped. It is a timeout, so the retryer
// treats it as transient.
type stallError struct {
	what    string
	timeout time.Duration
}

func (e *stallError) Error() string {
	return fmt.Sprintf("no progress for %s %s", e.timeout, e.what)
}
func (e *stallError) Timeout() bool   { return true }
func (e *stallError) Temporary() bool { return true }

// watchdog cancels a request when its timer runs out.
type watchdog struct {
	timer   *time.Timer
	cancel  context.CancelFunc
	timeout time.Duration

	mu    sync.Mutex
	fired string // what stalled, once the timer ran out
	what  string // what the timer is watching now
}

func newWatchdog(timeout time.Duration, cancel context.CancelFunc) *watchdog {
	d := &watchdog{cancel: cancel, timeout: timeout}
	d.timer = time.AfterFunc(timeout, d.fire)
	d.timer.Stop()
	return d
}

func (d *watchdog) fire() {
	d.mu.Lock()
	d.fired = d.what
	d.mu.Unlock()
	d.cancel()
}

func (d *watchdog) arm(what string) {
	d.mu.Lock()
	d.what = what
	d.mu.Unlock()
	d.timer.Reset(d.timeout)
}

// err replaces err by a stallError if the watchdog fired.
func (d *watchdog) err(err error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil && d.fired != "" {
		return &stallError{what: d.fired, timeout: d.timeout}
	}
	return err
}

// Do implements aws.HTTPClient.
func (c *stallClient) Do(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	d := newWatchdog(c.timeout, cancel)
	req = req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &stallBody{ReadCloser: req.Body, d: d}
		if getBody := req.GetBody; getBody != nil {
			// A body the transport rewinds is watched too.
			req.GetBody = func() (io.ReadCloser, error) {
				b, err := getBody()
				if err != nil {
					return nil, err
				}
				return &stallBody{ReadCloser: b, d: d}, nil
			}
		}
		// Until the transport reads the body: connecting, TLS and
		// "Expect: 100-continue" are bounded by shorter timeouts.
		d.arm("sending the request body")
	}
	resp, err := c.next.Do(req)
	d.timer.Stop() // the response headers are ResponseHeaderTimeout's
	if err != nil {
		cancel()
		return resp, d.err(err)
	}
	resp.Body = &stallResponse{ReadCloser: resp.Body, d: d}
	return resp, nil
}

// stallBody rearms the watchdog on every read the transport makes of the
// request body; it stops at the body's end.
type stallBody struct {
	io.ReadCloser
	d *watchdog
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.d.timer.Stop()
	} else {
		b.d.arm("sending the request body")
	}
	return n, err
}

// stallResponse runs the watchdog while a Read of the response body waits:
// a slow consumer is not a stalled connection.
type stallResponse struct {
	io.ReadCloser
	d *watchdog
}

func (b *stallResponse) Read(p []byte) (int, error) {
	b.d.arm("receiving the response body")
	n, err := b.ReadCloser.Read(p)
	b.d.timer.Stop()
	if err != nil && err != io.EOF {
		err = b.d.err(err)
	}
	return n, err
}

func (b *stallResponse) Close() error {
	b.d.timer.Stop()
	err := b.ReadCloser.Close()
	b.d.cancel()
	return err
}
