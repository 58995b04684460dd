package hub

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/walhub/walhub/hub/api"
)

// limits are what a client may ask of the hub. The hub serves standbys and
// restores on a network where not every client is friendly: no client holds a
// connection, a goroutine or memory for longer, or in larger amounts, than
// these allow.
type limits struct {
	// headerTimeout bounds the wait for a request's headers.
	headerTimeout time.Duration
	// bodyTimeout bounds the wait for a request's body, once the headers are in.
	bodyTimeout time.Duration
	// idleTimeout closes a kept-alive connection with no request.
	idleTimeout time.Duration
	// writeStall drops a client that does not take sendChunk bytes (or a
	// whole small response) in this time. A slow but steady download of a
	// large segment is never cut: the deadline moves with every chunk.
	writeStall time.Duration
}

var defaultLimits = limits{headerTimeout: 10 * time.Second, bodyTimeout: 10 * time.Second,
	idleTimeout: 60 * time.Second, writeStall: 60 * time.Second}

const (
	// sendChunk is what a client must take within writeStall, and what
	// sendBody reads and writes at a time.
	sendChunk = 256 << 10
	// maxHeaderBytes bounds a request's headers.
	maxHeaderBytes = 64 << 10
	// maxAdminBody bounds the body of an admin request (a small JSON
	// document); read routes take no body.
	maxAdminBody = 64 << 10
)

// limitRequest bounds each request before routing: a write deadline for the
// response (moved by sendBody for large ones), and the body: none on reads,
// at most maxAdminBody on POST, read whole within bodyTimeout so a client
// that sends it slowly, or never, is refused within seconds.
func (s *Server) limitRequest(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r, w := c.Request(), c.Response()
		rc := http.NewResponseController(w)
		rc.SetWriteDeadline(time.Now().Add(s.limits.writeStall))
		limit := int64(0)
		if r.Method == http.MethodPost {
			limit = maxAdminBody
		}
		if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
			return next(c)
		}
		if r.ContentLength > limit {
			// Not read at all: the connection is closed after the answer.
			w.Header().Set(echo.HeaderConnection, "close")
			rc.SetReadDeadline(time.Now())
			return errorf(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body of %d bytes: %s %s takes at most %d",
				r.ContentLength, r.Method, r.URL.Path, limit)
		}
		rc.SetReadDeadline(time.Now().Add(s.limits.bodyTimeout))
		body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			w.Header().Set(echo.HeaderConnection, "close")
			return errorf(http.StatusRequestTimeout, api.CodeTimeout, "request body not received within %s", s.limits.bodyTimeout)
		case err != nil:
			w.Header().Set(echo.HeaderConnection, "close")
			return errorf(http.StatusBadRequest, api.CodeBadRequest, "read request body: %v", err)
		case int64(len(body)) > limit:
			w.Header().Set(echo.HeaderConnection, "close")
			rc.SetReadDeadline(time.Now())
			return errorf(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body: %s %s takes at most %d bytes",
				r.Method, r.URL.Path, limit)
		}
		// The body is in: no read deadline while the handler works (a
		// snapshot start may wait minutes for a spread checkpoint).
		rc.SetReadDeadline(time.Time{})
		r.Body = io.NopCloser(bytes.NewReader(body))
		return next(c)
	}
}

// clientListener caps the connections open at once from one client address:
// a further one is closed as soon as it is accepted.
type clientListener struct {
	net.Listener
	max int
	log *slog.Logger

	mu    sync.Mutex
	conns map[string]int
}

func newClientListener(l net.Listener, max int, log *slog.Logger) *clientListener {
	return &clientListener{Listener: l, max: max, log: log, conns: map[string]int{}}
}

// Accept returns the next connection within its client's cap.
func (l *clientListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
		if err != nil {
			host = conn.RemoteAddr().String()
		}
		l.mu.Lock()
		n := l.conns[host]
		if n >= l.max {
			l.mu.Unlock()
			conn.Close()
			l.log.Debug("hub: connection refused: the client has too many open", "client", host, "max", l.max)
			continue
		}
		l.conns[host] = n + 1
		l.mu.Unlock()
		return &countedConn{Conn: conn, release: func() { l.release(host) }}, nil
	}
}

func (l *clientListener) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[host]--; l.conns[host] <= 0 {
		delete(l.conns, host)
	}
}

// countedConn gives its place back to its client's count once, on Close.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// jsonErrorListener makes the errors net/http answers itself, before any
// handler runs (headers over the limit: 431; a malformed request: 400), JSON
// like every other error of the hub. It sits above TLS, on plain bytes.
type jsonErrorListener struct{ net.Listener }

func (l jsonErrorListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*tls.Conn); ok {
		return &jsonErrorTLSConn{jsonErrorConn{tc}, tc}, nil
	}
	return &jsonErrorConn{conn}, nil
}

// plainError is how net/http writes the errors it answers itself: a status
// line, then exactly these two headers in this order (responses of handlers
// have their headers sorted, Connection before Content-Type, and a Date).
var plainError = regexp.MustCompile(`\AHTTP/1\.1 ([0-9]{3}) ([^\r\n]*)\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n`)

type jsonErrorConn struct{ net.Conn }

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	m := plainError.FindSubmatch(p)
	if m == nil {
		return c.Conn.Write(p)
	}
	status, _ := strconv.Atoi(string(m[1]))
	body := api.ErrorBody{Code: api.CodeBadRequest, Error: "malformed request: " + string(m[2])}
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		body = api.ErrorBody{Code: api.CodeTooLarge, Error: fmt.Sprintf("request headers over %d bytes", maxHeaderBytes)}
	case http.StatusNotImplemented:
		body.Error = "unsupported transfer encoding"
	}
	data, _ := json.Marshal(body)
	out := fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		status, http.StatusText(status), len(data)+1, data)
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// jsonErrorTLSConn keeps the TLS state visible to net/http (Request.TLS).
type jsonErrorTLSConn struct {
	jsonErrorConn
	tls *tls.Conn
}

func (c *jsonErrorTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }
