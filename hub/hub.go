// Package hub is walhub's HTTP server: it serves the WAL segments, timeline
// history files and backups of the repository to standbys (walfetch) and to
// restores on other hosts, a per-server status, Prometheus metrics and a health
// check. All of walhub's HTTP lives here; the wire format is in hub/api and the
// Go client in hub/client.
//
// Every name that arrives in a URL is checked against the WAL name grammar
// (or the backup id grammar) before anything touches the file system; files
// are then found through the catalog, never by joining a path from the URL.
package hub

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/repository"
)

// Options are what the hub serves from.
type Options struct {
	// Config supplies the hub section: listen address, TLS, tokens, max_peek.
	Config *config.Config
	// Repo is the repository served: store, working area (the .partial), catalog.
	Repo *repository.Repository
	// Registry is served at /metrics; the hub registers its HTTP metrics in it.
	// Nil makes a private registry.
	Registry *prometheus.Registry
	Log      *slog.Logger
	// Status answers GET /v1/servers/{server}/status. Nil makes that route
	// answer 503 (status not available).
	Status func(ctx context.Context, server string) (any, error)
	// Snapshots answers the admin routes .../snapshot/start and /stop. Nil
	// makes them answer 503.
	Snapshots Snapshots
	// Ready says whether the daemon does its work (every receiver storing):
	// GET /healthz answers 200, or 503 with its error. Nil is always ready.
	Ready func() error
	// Partial opens the .partial of segment name of server for reading and
	// says how many of its bytes hold WAL received; only those are sent (a
	// .partial the receiver made from an older segment's file holds that
	// segment's WAL past them). A missing one wraps os.ErrNotExist. The
	// daemon asks its receiver (stream.Receiver.OpenPartial). Nil reads the
	// working area's file to its end: only for a working area that no
	// receiver writes.
	Partial func(ctx context.Context, server, name string) (PartialFile, int64, error)
}

// PartialFile is a .partial opened for reading (Options.Partial).
type PartialFile interface {
	io.ReaderAt
	io.Closer
}

// Server is the hub's HTTP server.
type Server struct {
	o       Options
	cfg     atomic.Pointer[config.Config]
	echo    *echo.Echo
	metrics *metrics
	// decoders serve zstd segments to clients that do not accept zstd.
	decoders *decoderPool
	limits   limits
}

// config is the configuration in force: Options.Config until SetConfig.
func (s *Server) config() *config.Config { return s.cfg.Load() }

// SetConfig puts a reloaded configuration in force for the requests that
// follow: tokens, max_peek, the servers known. The listen address and TLS
// files are read once, by Run.
func (s *Server) SetConfig(cfg *config.Config) { s.cfg.Store(cfg) }

// New builds the hub's routes. It does not listen: call Run, or use Handler.
func New(o Options) (*Server, error) {
	if o.Config == nil || o.Repo == nil {
		return nil, errors.New("hub: Config and Repo are required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, fmt.Errorf("hub: register metrics: %w", err)
	}
	s := &Server{o: o, echo: echo.New(), metrics: m, decoders: newDecoderPool(), limits: defaultLimits}
	s.cfg.Store(o.Config)
	s.echo.HideBanner = true
	s.echo.HidePort = true
	s.echo.HTTPErrorHandler = s.handleError
	s.echo.Use(s.observe, s.limitRequest)
	s.routes()
	if len(o.Config.Hub.ReadTokens) == 0 && len(o.Config.Hub.AdminTokens) == 0 {
		o.Log.Warn("hub: no read_tokens or admin_tokens configured: anyone who can reach the hub may read WAL and backups; admin routes are refused")
	}
	return s, nil
}

// routes declares every route. Read routes need a read (or admin) token,
// admin routes an admin token.
func (s *Server) routes() {
	s.echo.GET("/healthz", s.healthz)
	s.echo.GET("/livez", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	s.metricsRoute()
	s.pageRoutes()

	s.read(http.MethodGet, "/servers/:server/wal/:name", s.getWAL)
	s.read(http.MethodHead, "/servers/:server/wal/:name", s.getWAL)
	s.read(http.MethodGet, "/servers/:server/wal/:name/peek", s.peek)
	s.read(http.MethodGet, "/servers/:server/backups", s.listBackups)
	s.read(http.MethodGet, "/servers/:server/backups/:id", s.getBackup)
	s.read(http.MethodGet, "/servers/:server/backups/:id/files/:file", s.getBackupFile)
	s.read(http.MethodGet, "/servers/:server/status", s.status)
	s.read(http.MethodGet, "/servers/:server/choose-backup", s.chooseBackup)
	s.read(http.MethodGet, "/servers/:server/restore-points", s.restorePoints)
	s.admin(http.MethodPost, "/servers/:server/snapshot/start", s.snapshotStart)
	s.admin(http.MethodPost, "/servers/:server/snapshot/stop", s.snapshotStop)
}

// healthz is readiness: 200 "ok" while every receiver stores WAL, else 503
// with the reason. /livez only says the process answers.
func (s *Server) healthz(c echo.Context) error {
	if s.o.Ready != nil {
		if err := s.o.Ready(); err != nil {
			return errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "not storing WAL: %v", err)
		}
	}
	return c.String(http.StatusOK, "ok\n")
}

// read adds a versioned route that needs a read or an admin token.
func (s *Server) read(method, path string, h echo.HandlerFunc) {
	s.echo.Add(method, api.Version+path, h, s.requireToken(false))
}

// admin adds a versioned route that needs an admin token: a route that changes state.
func (s *Server) admin(method, path string, h echo.HandlerFunc) {
	s.echo.Add(method, api.Version+path, h, s.requireToken(true))
}

// Handler returns the hub as an http.Handler (for tests with httptest).
func (s *Server) Handler() http.Handler { return s.echo }

// Run listens on the configured address (TLS when a certificate is configured)
// until ctx is cancelled, then shuts down gracefully, letting requests in
// flight finish for up to 10 seconds. Every connection is bounded: headers,
// body, idle time, a stalled reader, and the connections of one client
// (hub.max_client_connections).
func (s *Server) Run(ctx context.Context) error {
	hc := s.config().Hub
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: s.limits.headerTimeout,
		IdleTimeout:       s.limits.idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.o.Log.Handler(), slog.LevelWarn),
	}
	tcp, err := net.Listen("tcp", hc.Listen)
	if err != nil {
		return fmt.Errorf("hub: listen on %s: %w", hc.Listen, err)
	}
	var ln net.Listener = newClientListener(tcp, hc.MaxClientConnections, s.o.Log)
	if hc.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(hc.TLSCert, hc.TLSKey)
		if err != nil {
			tcp.Close()
			return fmt.Errorf("hub: load hub.tls_cert and hub.tls_key: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	}
	ln = jsonErrorListener{ln}
	s.o.Log.Info("hub listening", "address", tcp.Addr().String(), "tls", hc.TLSCert != "", "max_client_connections", hc.MaxClientConnections)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("hub: serve on %s: %w", hc.Listen, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
		return fmt.Errorf("hub: shut down: %w", err)
	}
	<-done
	return nil
}

// apiError is an error with its HTTP status and API code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, code, format string, args ...any) error {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// handleError writes every error as a JSON api.ErrorBody.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		// The body was under way: the client sees a short body and must not trust it.
		s.o.Log.Error("hub: failed while sending a response", "path", c.Request().URL.Path, "err", err)
		return
	}
	status, body := http.StatusInternalServerError, api.ErrorBody{Code: api.CodeInternal, Error: "internal error; see the hub's log"}
	var ae *apiError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
		status, body = ae.status, api.ErrorBody{Code: ae.code, Error: ae.msg}
	case errors.As(err, &he):
		status = he.Code
		body.Error = fmt.Sprint(he.Message)
		switch he.Code {
		case http.StatusNotFound:
			body.Code = api.CodeNotFound
			body.Error = "no such route: " + c.Request().URL.Path
		case http.StatusUnauthorized:
			body.Code = api.CodeUnauthorized
		default:
			body.Code = api.CodeBadRequest
		}
	}
	if status >= 500 {
		s.o.Log.Error("hub: request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	}
	body.Error = withoutHostPaths(body.Error)
	if c.Request().Method == http.MethodHead {
		err = c.NoContent(status)
	} else {
		err = c.JSON(status, body)
	}
	if err != nil {
		s.o.Log.Debug("hub: write error response", "err", err)
	}
}

// requireToken checks the bearer token: any read or admin token for read
// routes, an admin token for admin routes. A hub with no token configured at
// all serves read routes to anyone and refuses every admin route.
func (s *Server) requireToken(admin bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			hc := s.config().Hub
			// Exactly "Bearer <token>": a bare token, another scheme or a
			// second Authorization header is no token at all.
			var token string
			if auth := c.Request().Header.Values(echo.HeaderAuthorization); len(auth) == 1 {
				if t, ok := strings.CutPrefix(auth[0], "Bearer "); ok {
					token = t
				}
			}
			switch {
			case admin && len(hc.AdminTokens) == 0:
				return errorf(http.StatusUnauthorized, api.CodeUnauthorized, "this hub has no admin_tokens configured: admin routes are disabled")
			case admin && !tokenIn(token, hc.AdminTokens):
				return errorf(http.StatusUnauthorized, api.CodeUnauthorized, "an admin token is required (Authorization: Bearer <token>)")
			case !admin && (len(hc.ReadTokens) > 0 || len(hc.AdminTokens) > 0) &&
				!tokenIn(token, hc.ReadTokens) && !tokenIn(token, hc.AdminTokens):
				return errorf(http.StatusUnauthorized, api.CodeUnauthorized, "a valid read token is required (Authorization: Bearer <token>)")
			}
			return next(c)
		}
	}
}

func tokenIn(token string, tokens []string) bool {
	if token == "" {
		return false
	}
	found := 0
	for _, t := range tokens {
		found |= subtle.ConstantTimeCompare([]byte(token), []byte(t))
	}
	return found == 1
}

var serverNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// lookupServer resolves the :server parameter to a catalog server.
func (s *Server) lookupServer(c echo.Context) (catalog.Server, error) {
	name := c.Param("server")
	if !serverNameRE.MatchString(name) {
		return catalog.Server{}, errorf(http.StatusNotFound, api.CodeUnknownServer, "unknown server %.80q", name)
	}
	srv, err := s.o.Repo.Catalog.ServerByName(c.Request().Context(), name)
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Server{}, errorf(http.StatusNotFound, api.CodeUnknownServer, "unknown server %q: the hub holds nothing from it", name)
	}
	if err != nil {
		return catalog.Server{}, err
	}
	return srv, nil
}

// param returns a path parameter, unescaped (echo leaves escapes in place
// when the request path had any).
func param(c echo.Context, name string) (string, error) {
	v, err := url.PathUnescape(c.Param(name))
	if err != nil {
		return "", errorf(http.StatusBadRequest, api.CodeBadRequest, "bad escape in %.80q", c.Param(name))
	}
	return v, nil
}
